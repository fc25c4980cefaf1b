// Spawning a thread (process-run-function) and what its caller may do with the ThreadRef it
// gets back: join, detach, signal.
#include <errno.h>
#include <pthread.h>

#include <cstdio>
#include <new>
#include <string>
#include <utility>

#include "runtime/log.h"
#include "runtime/os.h"
#include "runtime/scope_guard.h"
#include "threads/current.h"
#include "threads/internal.h"
#include "threads/manager_core.h"
#include "threads/thread_manager.h"

namespace tcr {
namespace {

constexpr std::size_t kMinStack = std::size_t{64} << 10;
constexpr std::size_t kMaxStack = std::size_t{1} << 30;

}  // namespace

Result<void> detail::check_stack_size(std::size_t bytes, const char* op) {
  if (bytes >= kMinStack && bytes <= kMaxStack) return {};
  return fail(Step::BadArgument, 0,
              std::string(op) + ": stack_size " + std::to_string(bytes) +
                  " is outside [64 KiB, 1 GiB]");
}

Result<ThreadRef> ThreadManager::spawn(std::string_view name, ThreadFunction fn,
                                       SpawnOptions options) {
  ManagerCore& core = *m_core;
  if (!fn) return fail(Step::BadArgument, 0, "spawn: empty thread function");
  if (ManagerCore::caller_holds_a_stop()) {
    return fail(Step::BadArgument, 0,
                "spawn while this thread holds the world stopped: the new thread would wait for "
                "resume_all");
  }
  if (options.stack_size == 0) options.stack_size = core.options.stack_size;
  if (Result<void> size = detail::check_stack_size(options.stack_size, "spawn"); !size) {
    return std::unexpected(size.error());
  }
  const Result<bool> gc_register = core.gc_registration(options.gc, "spawn");
  if (!gc_register) return std::unexpected(gc_register.error());
  (void)reap(Reap::Exited);  // detached threads that finished since the last spawn

  Result<ThreadRecord*> acquired = core.acquire_record(false);
  if (!acquired) return std::unexpected(acquired.error());
  ThreadRecord* t = *acquired;
  // Until the thread has started, the record is spawn's alone: any failure gives it back bare
  // (its stack, its handles: ThreadRecord::release_os_resources), on every path out.
  ScopeGuard give_back([&core, t] { core.abandon_record(t); });
  try {
    t->run.name.assign(name);  // reuses the record's capacity; allocates only for a longer name
  } catch (const std::bad_alloc&) {
    return fail(Step::TcrAllocate, ENOMEM, "thread name");
  }
  t->run.fn = std::move(fn);
  t->run.start_failure = 0;
  if (options.detached) {
    MutexLock lock(core.mutex);
    t->run.detached = true;
    ++core.detached_live;
  }
  t->os.gc_registered = *gc_register;
  t->argument_slot() = options.argument;

  // The stack (threads/thread_stack.h): the one the record kept from its last thread if the size
  // matches, else a fresh mapping.
  if (Result<void> stack = t->os.stack.prepare(options.stack_size); !stack) {
    return std::unexpected(stack.error());
  }
  t->os.stack_low = t->os.stack.low();
  t->os.stack_high = t->os.stack.high();

  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstack(&attr, t->os.stack_low, t->os.stack.size());
  // Read before the thread exists: a detached thread may finish, and a concurrent spawn may reap
  // and recycle its record, before the handshake below returns.
  const std::uint64_t id = t->run.id;
  StartHandshake handshake;
  t->run.handshake = &handshake;
  t->run.state.store(TcrState::Starting, std::memory_order_release);
  Result<pthread_t> thread = os::pthread_create(&attr, ManagerCore::thread_entry, t);
  pthread_attr_destroy(&attr);
  if (!thread) return std::unexpected(thread.error());
  // t->os.pthread is written by the thread itself (thread_entry), not here: a detached thread
  // can finish and be reaped by another spawner before pthread_create even returns to us.

  // The start handshake: the thread opens its kernel handle and registers with the GC before it
  // runs anything, and a failure there comes back to our caller, not as a half-started thread.
  // After a successful start the record may already be reaped and reused (a quick detached
  // thread), so from here on only the handshake is read, and the record only on failure, when
  // the thread never entered the registry and nobody else can reach it.
  handshake.wait();
  if (handshake.failed) {
    pthread_join(t->os.pthread, nullptr);
    log::warn("spawn '{}' failed: {}", name, handshake.error.message());
    return std::unexpected(std::move(handshake.error));
  }
  give_back.dismiss();  // the thread owns it now
  {
    MutexLock lock(core.mutex);
    ++core.stats.spawned;
  }
  return ThreadRef(t, id, core.serial);
}

Result<void*> ThreadManager::join(ThreadRef ref) { return join_for(ref, std::chrono::nanoseconds(-1)); }

Result<void*> ThreadManager::join_for(ThreadRef ref, std::chrono::nanoseconds timeout) {
  ManagerCore& core = *m_core;
  ThreadRecord* t = nullptr;
  {
    MutexLock lock(core.mutex);
    Result<ThreadRecord*> found = core.record_of(ref, "join");
    if (!found) return std::unexpected(found.error());
    t = *found;
    if (t == detail::t_current) return fail(Step::JoinSelf);
    if (ManagerCore::caller_holds_a_stop()) {
      return fail(Step::BadArgument, 0,
                  "join while this thread holds the world stopped: the thread cannot finish");
    }
    if (t->os.adopted) return fail(Step::BadArgument, 0, "join: adopted threads are not joinable");
    if (t->run.detached) return fail(Step::ThreadDetached);
    if (t->run.joining) return fail(Step::AlreadyJoined);
    t->run.joining = true;
  }
  // Posted by wake_joiner (threads/shutdown.cpp); a safe point for this thread's interrupts.
  // Negative: no limit (join).
  if (timeout.count() < 0) {
    t->run.exited.wait();
  } else if (!t->run.exited.wait_for(timeout)) {
    // Still joinable: the record cannot have been reaped (joining kept the reaper and other
    // joiners away); a post that comes after the timeout stays for the next join.
    MutexLock lock(core.mutex);
    t->run.joining = false;
    return fail(Step::Timeout, 0, "join: thread #" + std::to_string(ref.m_id) + " still running");
  }
  // The OS thread is past its last touch of the Tcr; wait until it is gone, so its stack and
  // pidfd can be released.
  const bool self_detached = !core.join_os_thread(t);
  void* result = t->result_slot();
  std::exception_ptr exception = t->run.exception;
  void* const overflow = t->run.overflow.take_address();
  const int start_failure = t->run.start_failure;
  const std::size_t stack_kib =
      (static_cast<char*>(t->os.stack_high) - static_cast<char*>(t->os.stack_low)) >> 10;
  core.reap_record(t);
  if (self_detached) {
    return fail(Step::ThreadDetached, 0,
                "thread #" + std::to_string(ref.m_id) +
                    " detached itself with pthread_detach(); its result is lost (a tcr thread "
                    "is detached with ThreadManager::detach)");
  }
  if (overflow != nullptr) {
    char where[32];
    std::snprintf(where, sizeof where, "%p", overflow);
    return fail(Step::StackOverflow, 0,
                "thread #" + std::to_string(ref.m_id) + " overflowed its " +
                    std::to_string(stack_kib) + " KiB stack (fault at " + where + ")");
  }
  if (start_failure != 0) {
    return fail(Step::StartHook, start_failure,
                "thread #" + std::to_string(ref.m_id) + ": its function did not run");
  }
  if (exception) {
    Error e{Step::ThreadThrew, 0, "thread #" + std::to_string(ref.m_id), exception};
    return std::unexpected(std::move(e));
  }
  return result;
}

Result<bool> ThreadManager::exited(ThreadRef ref) const {
  ManagerCore& core = *m_core;
  MutexLock lock(core.mutex);
  Result<ThreadRecord*> found = core.record_of(ref, "exited");
  if (!found) {
    if (found.error().step == Step::StaleThread) return true;  // reaped: long gone
    return std::unexpected(found.error());
  }
  const TcrState state = (*found)->state();
  return state == TcrState::Exiting || state == TcrState::Dead;
}

Result<void> ThreadManager::detach(ThreadRef ref) {
  ManagerCore& core = *m_core;
  MutexLock lock(core.mutex);
  Result<ThreadRecord*> found = core.record_of(ref, "detach");
  if (!found) return std::unexpected(found.error());
  ThreadRecord* t = *found;
  if (t->os.adopted) return fail(Step::BadArgument, 0, "detach: adopted threads are not joinable");
  if (t->run.detached) return fail(Step::ThreadDetached);
  if (t->run.joining) return fail(Step::AlreadyJoined);
  t->run.detached = true;
  if (t->state() == TcrState::Dead) {
    core.push_zombie_locked(t);  // it already left the registry as joinable
  } else {
    ++core.detached_live;
  }
  return {};
}

Result<void> ThreadManager::signal(ThreadRef ref, int sig) {
  ManagerCore& core = *m_core;
  MutexLock lock(core.mutex);
  Result<ThreadRecord*> found = core.record_of(ref, "signal");
  if (!found) return std::unexpected(found.error());
  ThreadRecord* t = *found;
  const TcrState state = t->state();
  if (state != TcrState::Running && state != TcrState::Exiting) {
    return fail(Step::ThreadExited, ESRCH,
                "thread #" + std::to_string(ref.m_id) + " is " + to_string(state));
  }
  return t->os.handle.signal(sig, RegistryPermit{});
}

}  // namespace tcr
