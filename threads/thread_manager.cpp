// ThreadManager: spawn (process-run-function), join, detach, adoption and reaping.
#include "threads/thread_manager.h"

#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "runtime/fork.h"
#include "runtime/gc.h"
#include "runtime/log.h"
#include "runtime/os.h"
#include "threads/current.h"
#include "threads/fork.h"
#include "threads/internal.h"
#include "threads/manager_core.h"
#include "threads/tid_index.h"

namespace tcr {
namespace {

constexpr std::size_t kMinStack = std::size_t{64} << 10;
constexpr std::size_t kMaxStack = std::size_t{1} << 30;
constexpr std::size_t kSlotWords = 2 + Tcr::kSlots;  // argument, result, user slots

// TCR ids are unique in the process, not per manager: they tag kernel handles in the one
// process-wide HandleTable, whose dump must say unambiguously whose each fd is.
std::atomic<std::uint64_t> g_next_id{1};
std::atomic<std::uint64_t> g_next_manager{1};

std::size_t page_size() {
  static const std::size_t s_page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return s_page;
}

// The alternate signal stack: room for a fault handler that chains to another runtime's (Boehm's,
// a JVM's) and for the kernel's signal frame with the full vector state (AVX-512: ~3 KiB).
std::size_t alt_stack_size() {
  static const std::size_t s_size = [] {
    std::size_t want = std::size_t{64} << 10;
    const long sig = sysconf(_SC_SIGSTKSZ);
    if (sig > 0 && static_cast<std::size_t>(sig) * 4 > want) want = static_cast<std::size_t>(sig) * 4;
    return (want + page_size() - 1) & ~(page_size() - 1);
  }();
  return s_size;
}

// The pthread key whose destructor releases an adopted thread's Tcr when that thread exits.
pthread_key_t adopted_key() {
  static const pthread_key_t s_key = [] {
    pthread_key_t key;
    const int rc = pthread_key_create(&key, [](void* p) {
      // Runs on the exiting foreign thread, after its C++ thread_local destructors.
      shutdown_thread_tcr(*static_cast<Tcr*>(p), nullptr);
    });
    if (rc != 0) {
      log::error("pthread_key_create for adopted threads failed: {}", std::strerror(rc));
      std::abort();  // only at first adoption, and only when the process is out of keys
    }
    return key;
  }();
  return s_key;
}

// Cores whose manager was destroyed where it could not wait (~ThreadManager): kept alive, and
// reachable (so a leak checker sees them held, not lost), for as long as the process lives.
std::mutex& kept_mutex() {
  static std::mutex* const s_mutex = new std::mutex;
  return *s_mutex;
}

void keep_forever(std::shared_ptr<ManagerCore> core) {
  static auto* const s_kept = new std::vector<std::shared_ptr<ManagerCore>>;
  std::lock_guard lock(kept_mutex());
  try {
    s_kept->push_back(std::move(core));
  } catch (const std::bad_alloc&) {
    // Kept, unreachable; freeing it would be a use-after-free for the threads still on it.
    if (new (std::nothrow) std::shared_ptr<ManagerCore>(std::move(core)) == nullptr) std::abort();
  }
}

}  // namespace

// ---- ManagerCore --------------------------------------------------------------------------------

ManagerCore::ManagerCore(ManagerOptions opts, HandleMode handle_mode)
    : options(std::move(opts)),
      mode(handle_mode),
      serial(g_next_manager.fetch_add(1, std::memory_order_relaxed)),
      slot_arena(kSlotWords, options.gc) {}

ManagerCore::~ManagerCore() {
  // First: a fork from now on leaves this manager alone.
  detail::fork_untrack(*this);
  // A listener looking a tid up (threads/tid_index.h) may be holding one of these records.
  std::unique_lock index_guard = detail::tid_index_guard();
  for (Tcr* t : records) {
    unmap_stack(t);
    delete t;
  }
}

Result<bool> ManagerCore::gc_registration(GcRegistration choice, const char* op) const {
  const bool wanted = choice == GcRegistration::Register ||
                      (choice == GcRegistration::Inherit && options.gc);
  if (wanted && !options.gc) {
    return fail(Step::BadArgument, 0,
                std::string(op) + ": GC registration asked of a manager without GC");
  }
  return wanted;
}

void ManagerCore::unmap_stack(Tcr* t) {
  if (t->m_stack_map == nullptr) return;
  os::munmap(t->m_stack_map, t->m_stack_map_size);
  t->m_stack_map = nullptr;
}

void ManagerCore::unmap_alt_stack(Tcr* t) {
  if (t->m_alt_map == nullptr) return;
  os::munmap(t->m_alt_map, t->m_alt_map_size);
  t->m_alt_map = nullptr;
}

Result<void> ManagerCore::attach_thread_state(Tcr* t) {
  // The alternate signal stack first: from here on a fault handler has room even when the
  // thread's own stack is exhausted. The one it replaces comes back at step 4.
  stack_t alt{};
  alt.ss_sp = t->m_alt_stack;
  alt.ss_size = t->m_alt_stack_size;
  Result<stack_t> prev = os::sigaltstack(alt);
  if (!prev) return std::unexpected(prev.error());
  t->m_prev_alt_stack = *prev;
  if (Result<void> r = detail::attach_extensions(*t, &t->m_extensions); !r) {
    restore_alt_stack(t);
    return r;
  }
  return {};
}

void ManagerCore::detach_thread_state(Tcr* t) {
  detail::detach_extensions(*t, std::exchange(t->m_extensions, 0u));
  restore_alt_stack(t);
}

void ManagerCore::restore_alt_stack(Tcr* t) {
  // A thread that exits from inside a signal handler (pthread_exit in a handler chained from
  // ours) runs this on the alternate stack: the kernel refuses to change it then (EPERM), and
  // unmapping it would pull the stack from under us. It stays; a spawned thread's goes with its
  // stack mapping at reaping anyway, an adopted thread's separate mapping is left (said once).
  stack_t now{};
  if (::sigaltstack(nullptr, &now) == 0 && (now.ss_flags & SS_ONSTACK) != 0) {
    static std::atomic<bool> s_said{false};
    if (t->m_alt_map != nullptr && !s_said.exchange(true)) {
      log::warn("thread #{} '{}' exited on its alternate signal stack: that stack stays mapped",
                t->m_id, t->m_name);
    }
    t->m_alt_map = nullptr;
    t->m_alt_stack = nullptr;
    t->m_alt_stack_size = 0;
    return;
  }
  // Otherwise releasing, with the raw call (a release is not fault-injected): the previous stack
  // was valid when it was installed, so putting it back (or disabling ours, if there was none)
  // does not fail.
  stack_t back = t->m_prev_alt_stack;
  if ((back.ss_flags & SS_DISABLE) != 0 || back.ss_sp == nullptr) {
    back = stack_t{};
    back.ss_flags = SS_DISABLE;
  }
  ::sigaltstack(&back, nullptr);
  t->m_prev_alt_stack = stack_t{};
  unmap_alt_stack(t);
  t->m_alt_stack = nullptr;
  t->m_alt_stack_size = 0;
}

void ManagerCore::push_zombie_locked(Tcr* t) {
  t->m_next = zombies;
  zombies = t;
}

Result<Tcr*> ManagerCore::acquire_record(bool adopted) {
  UniqueLock lock(mutex);
  if (shut_down) return fail(Step::ManagerShutDown);
  Tcr* t = free_list;
  if (t != nullptr) {
    free_list = t->m_next;
    --free_count;
  } else {
    // A new record: the only allocation on the spawn path, and only until the free list holds
    // as many records as threads ever overlapped. Its slot block comes from the root arena
    // (never from the GC heap: the caller may be a thread the GC does not know), made without
    // the registry lock: a new arena chunk is registered with GC_add_roots, which waits for
    // Boehm's allocation lock, and a thread holding a world stopped keeps that lock while it
    // takes registry locks (resume_all does).
    lock.unlock();
    Result<Tcr*> fresh = new_record();
    lock.lock();
    if (!fresh) return fresh;
    t = *fresh;
    if (shut_down) {  // shut down meanwhile: the record waits on the free list
      t->m_next = free_list;
      free_list = t;
      ++free_count;
      return fail(Step::ManagerShutDown);
    }
  }
  t->m_id = g_next_id.fetch_add(1, std::memory_order_relaxed);
  t->m_next = nullptr;
  // A thread that was detached after it exited posted m_exited with no joiner to take it.
  while (t->m_exited.try_wait()) {
  }
  t->m_adopted = adopted;
  t->m_detached = false;
  t->m_joining = false;
  t->m_self_detached = false;
  t->m_gc_registered = false;
  t->m_handshake = nullptr;
  t->m_exception = nullptr;
  t->m_tid = 0;
  t->m_mach_port = mach::kPortNull;
  // A stack kept on a free record (the stack cache) leaves the cache with the record; spawn
  // reuses it when the size matches.
  if (t->m_stack_map != nullptr) --cached_stacks;
  t->m_stack_low = t->m_stack_high = nullptr;
  t->m_state.store(TcrState::Reserved, std::memory_order_release);
  if (adopted) {
    ++adopted_live;
  } else {
    ++managed_live;
  }
  return t;
}

Result<Tcr*> ManagerCore::new_record() {
  void** slots = nullptr;
  {
    MutexLock arena(arena_mutex);
    slots = slot_arena.allocate();
  }
  if (slots == nullptr) return fail(Step::TcrAllocate, ENOMEM);
  // Not new (std::nothrow): that guards the record's own storage, not what its members'
  // constructors allocate (the interrupt mailbox's deque allocates its map).
  Tcr* t = nullptr;
  try {
    t = new Tcr(slots);
  } catch (const std::bad_alloc&) {
    return fail(Step::TcrAllocate, ENOMEM);  // the slot block stays in the arena
  }
  t->m_core = this;
  MutexLock lock(mutex);
  if (records.size() == records.capacity()) {
    try {
      records.reserve(records.size() * 2 + 16);
      // The registry never holds more than every record: with room for each, enter_registry's
      // push_back cannot throw (on a new thread it would terminate the process).
      registry.reserve(records.capacity());
    } catch (const std::bad_alloc&) {
      delete t;
      return fail(Step::TcrAllocate, ENOMEM);
    }
  }
  records.push_back(t);  // capacity reserved above: cannot throw
  return t;
}

void ManagerCore::free_record_locked(Tcr* t) {
  std::memset(t->m_slots, 0, kSlotWords * sizeof(void*));
  t->m_id = 0;
  t->m_state.store(TcrState::Free, std::memory_order_release);
  t->m_next = free_list;
  free_list = t;
  ++free_count;
}

void ManagerCore::abandon_record(Tcr* t) {
  unmap_stack(t);
  unmap_alt_stack(t);  // an adoption that failed after mapping its alternate stack
  t->m_handle.release();
  HandleTable::instance().detach_chain(t->m_handle_chain);
  t->m_fn = nullptr;
  MutexLock lock(mutex);
  free_record_locked(t);
  if (t->m_adopted) {
    --adopted_live;
    return;
  }
  if (t->m_detached && --detached_live == 0) all_exited.notify_all();
  if (--managed_live == 0) all_exited.notify_all();
}

void ManagerCore::reap_record(Tcr* t) {
  {
    // Invalidate ThreadRefs first: from here on join/detach/signal answer StaleThread.
    MutexLock lock(mutex);
    t->m_id = 0;
    --dead_unreaped;
  }
  // The last kernel-handle reference is released here, by the reaper, after the OS thread is
  // gone (pthread_join returned, or the adopted thread released itself): until then a signal to
  // the thread could still have been sent through it. Each handle is closed once (HandleTable).
  t->m_handle.release();
  // Normally empty now (step 5 closed the extras); with normalization off, extras outlive the
  // thread unclosed, as the test of that leak wants, but not linked to a record that is reused.
  HandleTable::instance().detach_chain(t->m_handle_chain);
  t->m_exception = nullptr;
  UniqueLock lock(mutex);
  // The stack stays on the record for the next spawn while the cache has room: its pages are
  // already faulted in, and spawn skips mmap, mprotect and (here) munmap. Bounded by
  // ManagerOptions::cached_stacks, so mappings stay flat however many threads come and go.
  if (t->m_stack_map != nullptr && cached_stacks < options.cached_stacks) {
    ++cached_stacks;
  } else if (t->m_stack_map != nullptr) {
    lock.unlock();
    unmap_stack(t);
    lock.lock();
  }
  free_record_locked(t);
  ++stats.reaped;
}

bool ManagerCore::caller_holds_a_stop() {
  // A thread belongs to one manager, and may stop only that manager's world.
  const Tcr* self = Tcr::current();
  return self != nullptr && self->m_core->stop_owner.load(std::memory_order_acquire) == self;
}

// A thread that detached itself (pthread_detach(pthread_self())) cannot be joined: pthread_join
// answers EINVAL while it may still be running its last instructions on the stack we own. It is
// gone once its kernel handle says so: a pidfd polls readable after the thread has left user
// space for good; a tid that tgkill no longer finds has been released by the kernel.
void ManagerCore::mark_self_detached(Tcr* t) {
  if (t->m_self_detached) return;
  t->m_self_detached = true;
  log::error("thread #{} '{}' detached itself with pthread_detach(): tcr threads are detached "
             "with ThreadManager::detach; its stack is reused only once it has ended",
             t->m_id, t->m_name);
}

void ManagerCore::wait_self_detached_gone(Tcr* t) {
  mark_self_detached(t);
  while (os_thread_alive(t)) {
    if (t->m_handle.mode() == HandleMode::Pidfd) {
      (void)t->m_handle.wait_exit(100);
    } else {
      ::usleep(200);
    }
  }
}

bool ManagerCore::os_thread_alive(const Tcr* t) {
  Result<bool> alive = t->m_handle.alive(SignalPermit{});
  return alive && *alive;
}

bool ManagerCore::join_os_thread(Tcr* t) {
  if (!t->m_self_detached) {
    const int rc = pthread_join(t->m_pthread, nullptr);
    if (rc == 0) return true;
    if (rc != EINVAL) {
      log::error("pthread_join of thread #{} failed: {}", t->m_id, std::strerror(rc));
      return true;
    }
  }
  wait_self_detached_gone(t);
  return false;
}

bool ManagerCore::try_join_os_thread(Tcr* t) {
  if (!t->m_self_detached) {
    switch (os::try_join(t->m_pthread)) {
      case os::TryJoin::Joined: return true;
      case os::TryJoin::Running: return false;
      case os::TryJoin::NotJoinable: mark_self_detached(t); break;
    }
  }
  return !os_thread_alive(t);  // no waiting: the caller holds the registry lock
}

void ManagerCore::wait_for_world(UniqueLock& lock) {
  lock.wait(world_resumed, [&]() TCR_REQUIRES(mutex) { return !world_stopped; });
}

void ManagerCore::enter_registry(Tcr* t) {
  UniqueLock lock(mutex);
  // A thread that starts while the world is stopped waits here, before it runs any user code.
  wait_for_world(lock);
  detail::StopWorldAccess::reset(*t);
  detail::InterruptAccess::open(*t);
  detail::tid_index_publish(t);
  t->m_registry_index = registry.size();
  registry.push_back(t);  // room reserved by acquire_record: cannot throw
  t->m_state.store(TcrState::Running, std::memory_order_release);
}

void ManagerCore::leave_registry(UniqueLock& lock, Tcr* t) {
  wait_for_world(lock);
  // Swap-remove: O(1), so exits cost the same with ten threads or ten thousand.
  const std::size_t i = t->m_registry_index;
  Tcr* last = registry.back();
  registry[i] = last;
  last->m_registry_index = i;
  registry.pop_back();
  detail::tid_index_withdraw(t);
  t->m_state.store(TcrState::Dead, std::memory_order_release);
}

// ---- the new thread ----------------------------------------------------------------------------

void* ManagerCore::report_start_failure(Tcr* t, Error error) {
  StartHandshake* hs = std::exchange(t->m_handshake, nullptr);
  hs->error = std::move(error);
  hs->failed = true;
  detail::t_current = nullptr;
  hs->post();  // spawn() joins this thread and releases everything it acquired
  return nullptr;
}

void* ManagerCore::thread_entry(void* arg) {
  Tcr* t = static_cast<Tcr*>(arg);
  ManagerCore* core = t->m_core;
  // Cancellation is allowed only while the thread's function runs: a cancel acted on at a
  // cancellation point inside the start-up or shutdown code (a log write, an exit hook) would
  // unwind out of it half done and leave the record in the registry.
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, nullptr);
  // The spawner's mask is inherited; the manager's own signals must reach every thread it runs.
  detail::unblock_manager_signals();
  // Every reader of m_pthread (spawn on a failed start, join, the reaper) reads it after a
  // handshake, semaphore or lock that this thread passes later.
  t->m_pthread = pthread_self();
  detail::t_current = t;
  t->m_tid = os::gettid();
  if (!t->m_name.empty()) os::set_current_thread_name(t->m_name.c_str());

  // The kernel handle is opened once, here, on the thread it names, and cached in the Tcr for
  // the thread's whole life (the seeds' fix: never ask the kernel for it again).
  Result<KernelThreadHandle> handle =
      KernelThreadHandle::open_current(core->mode, t->handle_tag());
  if (!handle) return report_start_failure(t, handle.error());
  t->m_handle = std::move(*handle);
  if (core->options.mach_space != nullptr) {
    t->m_mach_port = core->options.mach_space->current_thread_port();
  }
  if (Result<void> state = attach_thread_state(t); !state) {
    t->m_handle.release();
    return report_start_failure(t, state.error());
  }
  if (t->m_gc_registered) {
    Result<bool> registered = gc::register_current_thread(t->m_stack_high);
    if (!registered) {
      detach_thread_state(t);
      t->m_handle.release();
      t->m_gc_registered = false;
      return report_start_failure(t, registered.error());
    }
  }
  log::debug("thread #{} '{}' started, tid {}", t->m_id, t->m_name, t->m_tid);
  StartHandshake* hs = std::exchange(t->m_handshake, nullptr);
  core->enter_registry(t);
  hs->post();  // the last touch of the spawner's handshake

  pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, nullptr);
  void* result = run_guarded(t);
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, nullptr);
  // The closure's captures are destroyed here, on the thread, before shutdown.
  t->m_fn = nullptr;
  shutdown_thread_tcr(*t, result);
  return nullptr;
}

std::string ManagerCore::describe_current_exception() {
  try {
    throw;
  } catch (const std::exception& e) {
    return std::string("'") + e.what() + "'";
  } catch (...) {
    return "a non-standard exception";
  }
}

// The stack-overflow recovery point, in a frame that outlives the thread's function. When the
// function writes into its guard page, the fault handler (exceptions/stack_guard.cpp), on the
// alternate stack, jumps back here; the frames in between are abandoned without running their
// destructors (a C++ unwind from an arbitrary faulting instruction is not possible without
// -fnon-call-exceptions: GCC's personality routine terminates the process when the faulting pc
// is outside a call site). savemask 1: the jump also restores this signal mask, undoing the
// handler's.
void* ManagerCore::run_guarded(Tcr* t) {
  if (sigsetjmp(t->m_overflow_env, 1) != 0) {
    // What the abandoned frames left in the Tcr: a BlockingScope never left (a stop may hold it
    // claimed: leave() waits for the resume, as a scope's end does), an interrupt closure or a
    // manager wait cut short.
    if (t->m_blocking_depth > 0) {
      t->m_blocking_depth = 1;
      BlockingScope::leave(t);
    }
    t->m_running_interrupts = false;
    t->m_wait_word.store(nullptr, std::memory_order_relaxed);
    // Not logged here: the overflow may have hit inside the logger, holding its lock. join
    // reports it (Step::StackOverflow, with the fault address).
    return nullptr;
  }
  t->m_overflow_armed.store(true, std::memory_order_release);
  void* result = run_thread_function(t);
  t->m_overflow_armed.store(false, std::memory_order_release);
  return result;
}

// ---- ThreadManager -----------------------------------------------------------------------------

Result<std::unique_ptr<ThreadManager>> ThreadManager::create(ManagerOptions options) {
  if (options.gc) {
    if (Result<void> r = gc::initialize(); !r) return std::unexpected(r.error());
  }
  // After Boehm's start-up, so its signals are known and avoided.
  if (Result<ManagerSignals> r = detail::install_manager_signals(); !r) {
    return std::unexpected(r.error());
  }
  HandleMode mode = detected_handle_mode();
  if (options.handle_mode == HandleModeChoice::Tgkill) mode = HandleMode::Tgkill;
  if (options.handle_mode == HandleModeChoice::Pidfd && mode != HandleMode::Pidfd) {
    return fail(Step::PidfdOpen, EINVAL, "this kernel has no thread pidfds (PIDFD_THREAD)");
  }
  if (Result<void> index = detail::tid_index_init(); !index) {
    log::warn("no tid index ({}): the exception listener will report faults without their TCR",
              index.error().message());
  }
  fork_participate(fork_guard("abandoned managers", ForkRank::Setup, kept_mutex()));
  auto core = std::make_shared<ManagerCore>(std::move(options), mode);
  detail::fork_track(*core);
  return std::unique_ptr<ThreadManager>(new ThreadManager(std::move(core)));
}

ThreadManager::ThreadManager(std::shared_ptr<ManagerCore> core) : m_core(std::move(core)) {}

ThreadManager::~ThreadManager() {
  const Tcr* self = Tcr::current();
  const bool own_thread = self != nullptr && self->m_core == m_core.get() && !self->m_adopted;
  // Waiting here for the manager's threads would never end when the caller is one of them (it
  // waits for itself: exit() called from a spawned thread runs a static manager's destructor
  // there), or holds some manager's world stopped (the threads it waits for cannot finish).
  // A destructor cannot answer an error, and freeing the records would pull them from under the
  // threads running on them: the manager's state is left alive instead, unowned, for the process
  // to end (or for its threads to finish on), and that is said.
  if (own_thread || ManagerCore::caller_holds_a_stop()) {
    log::error("ThreadManager destroyed from {} thread #{} '{}': its threads are left running "
               "and its records are not freed; destroy it from a thread it did not spawn, "
               "with no world stopped",
               own_thread ? "its own" : "a world-stopping", self->m_id, self->m_name);
    keep_forever(std::move(m_core));
    return;
  }
  // A thread that adopted itself (often the main thread) and now destroys the manager is done
  // with it: release it here rather than at its exit, which may never come.
  if (self != nullptr && self->m_core == m_core.get()) (void)release_current_thread();
  Result<void> r = shutdown();
  if (!r) log::warn("thread manager destroyed: {}", r.error().message());
  // Join what was never joined, so no OS thread or stack outlives the manager.
  std::vector<Tcr*> unjoined;
  {
    MutexLock lock(m_core->mutex);
    for (Tcr* t : m_core->records) {
      if (t->state() == TcrState::Dead && !t->m_adopted && !t->m_detached && !t->m_joining) {
        t->m_joining = true;
        unjoined.push_back(t);
      }
    }
  }
  for (Tcr* t : unjoined) {
    t->m_exited.wait(Semaphore::Interrupts::Hold);
    m_core->join_os_thread(t);
    m_core->reap_record(t);
  }
  // Adopted threads still alive hold m_core; the last of them frees it when it exits.
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
  if (options.stack_size < kMinStack || options.stack_size > kMaxStack) {
    return fail(Step::BadArgument, 0,
                "spawn: stack_size " + std::to_string(options.stack_size) +
                    " is outside [64 KiB, 1 GiB]");
  }
  const Result<bool> gc_register = core.gc_registration(options.gc, "spawn");
  if (!gc_register) return std::unexpected(gc_register.error());
  (void)reap(ThreadManager::Reap::Exited);  // detached threads that finished since the last spawn

  Result<Tcr*> acquired = core.acquire_record(false);
  if (!acquired) return std::unexpected(acquired.error());
  Tcr* t = *acquired;
  try {
    t->m_name.assign(name);  // reuses the record's capacity; allocates only for a longer name
  } catch (const std::bad_alloc&) {
    core.abandon_record(t);
    return fail(Step::TcrAllocate, ENOMEM, "thread name");
  }
  t->m_fn = std::move(fn);
  if (options.detached) {
    MutexLock lock(core.mutex);
    t->m_detached = true;
    ++core.detached_live;
  }
  t->m_gc_registered = *gc_register;
  t->m_slots[Tcr::kArgumentSlot] = options.argument;

  // The stack: our own mapping, owned by the record. From low to high: a guard page (overflow
  // lands there), the stack, a guard page, and the alternate signal stack the fault handlers run
  // on (above the stack, so an overflow never runs into it; its own overflow hits the guard
  // below it). One mapping, so a thread costs no extra mmap for its alternate stack, and the
  // stack cache keeps both. It is either the one the record kept from its last thread (same
  // size) or a fresh one; it goes back to the stack cache or is unmapped when the thread is
  // reaped.
  const std::size_t page = page_size();
  const std::size_t stack = (options.stack_size + page - 1) & ~(page - 1);
  const std::size_t total = page + stack + page + alt_stack_size();
  if (t->m_stack_map_size != total) ManagerCore::unmap_stack(t);
  if (t->m_stack_map == nullptr) {
    Result<void*> map = os::mmap_anonymous(total, PROT_READ | PROT_WRITE, /*stack=*/true,
                                               Step::StackMmap);
    if (!map) {
      core.abandon_record(t);
      return std::unexpected(map.error());
    }
    t->m_stack_map = *map;
    t->m_stack_map_size = total;
    char* base = static_cast<char*>(*map);
    for (char* guard_page : {base, base + page + stack}) {
      if (Result<void> guard = os::mprotect(guard_page, page, PROT_NONE, Step::StackGuardMprotect);
          !guard) {
        core.abandon_record(t);  // unmaps the stack: a failed spawn returns its record bare
        return std::unexpected(guard.error());
      }
    }
  }
  t->m_stack_low = static_cast<char*>(t->m_stack_map) + page;
  t->m_stack_high = static_cast<char*>(t->m_stack_low) + stack;
  t->m_alt_stack = static_cast<char*>(t->m_stack_high) + page;
  t->m_alt_stack_size = alt_stack_size();

  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstack(&attr, t->m_stack_low, stack);
  // Read before the thread exists: a detached thread may finish, and a concurrent spawn may reap
  // and recycle its record, before the handshake below returns.
  const std::uint64_t id = t->m_id;
  StartHandshake handshake;
  t->m_handshake = &handshake;
  t->m_state.store(TcrState::Starting, std::memory_order_release);
  Result<pthread_t> thread = os::pthread_create(&attr, ManagerCore::thread_entry, t);
  pthread_attr_destroy(&attr);
  if (!thread) {
    core.abandon_record(t);
    return std::unexpected(thread.error());
  }
  // t->m_pthread is written by the thread itself (thread_entry), not here: a detached thread can
  // finish and be reaped by another spawner before pthread_create even returns to us.

  // The start handshake: the thread opens its kernel handle and registers with the GC before it
  // runs anything, and a failure there comes back to our caller, not as a half-started thread.
  // After a successful start the record may already be reaped and reused (a quick detached
  // thread), so from here on only the handshake is read, and the record only on failure, when
  // the thread never entered the registry and nobody else can reach it.
  handshake.wait();
  if (handshake.failed) {
    pthread_join(t->m_pthread, nullptr);
    Error error = std::move(handshake.error);
    core.abandon_record(t);
    log::warn("spawn '{}' failed: {}", name, error.message());
    return std::unexpected(std::move(error));
  }
  {
    MutexLock lock(core.mutex);
    ++core.stats.spawned;
  }
  return ThreadRef(t, id, core.serial);
}

Result<Tcr*> ManagerCore::record_of(ThreadRef ref, const char* op) const {
  Tcr* t = ref.m_tcr;
  if (t == nullptr) return fail(Step::BadArgument, 0, std::string(op) + ": empty ThreadRef");
  if (ref.m_manager != serial) {
    return fail(Step::BadArgument, 0,
                std::string(op) + ": thread #" + std::to_string(ref.m_id) +
                    " belongs to another ThreadManager");
  }
  if (t->m_id != ref.m_id) {
    return fail(Step::StaleThread, 0,
                "thread #" + std::to_string(ref.m_id) + " was already joined or reaped");
  }
  return t;
}

Result<void*> ThreadManager::join(ThreadRef ref) {
  ManagerCore& core = *m_core;
  Tcr* t = nullptr;
  {
    MutexLock lock(core.mutex);
    Result<Tcr*> found = core.record_of(ref, "join");
    if (!found) return std::unexpected(found.error());
    t = *found;
    if (t == Tcr::current()) return fail(Step::JoinSelf);
    if (ManagerCore::caller_holds_a_stop()) {
      return fail(Step::BadArgument, 0,
                  "join while this thread holds the world stopped: the thread cannot finish");
    }
    if (t->m_adopted) return fail(Step::BadArgument, 0, "join: adopted threads are not joinable");
    if (t->m_detached) return fail(Step::ThreadDetached);
    if (t->m_joining) return fail(Step::AlreadyJoined);
    t->m_joining = true;
  }
  t->m_exited.wait();  // shutdown_thread_tcr step 7; a safe point for this thread's interrupts
  // The OS thread is past its last touch of the Tcr; wait until it is gone, so its stack and
  // pidfd can be released.
  const bool self_detached = !core.join_os_thread(t);
  void* result = t->m_slots[Tcr::kResultSlot];
  std::exception_ptr exception = t->m_exception;
  void* const overflow = std::exchange(t->m_overflow_address, nullptr);
  const std::size_t stack_kib =
      (static_cast<char*>(t->m_stack_high) - static_cast<char*>(t->m_stack_low)) >> 10;
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
  if (exception) {
    Error e{Step::ThreadThrew, 0, "thread #" + std::to_string(ref.m_id), exception};
    return std::unexpected(std::move(e));
  }
  return result;
}

Result<void> ThreadManager::detach(ThreadRef ref) {
  ManagerCore& core = *m_core;
  MutexLock lock(core.mutex);
  Result<Tcr*> found = core.record_of(ref, "detach");
  if (!found) return std::unexpected(found.error());
  Tcr* t = *found;
  if (t->m_adopted) return fail(Step::BadArgument, 0, "detach: adopted threads are not joinable");
  if (t->m_detached) return fail(Step::ThreadDetached);
  if (t->m_joining) return fail(Step::AlreadyJoined);
  t->m_detached = true;
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
  Result<Tcr*> found = core.record_of(ref, "signal");
  if (!found) return std::unexpected(found.error());
  Tcr* t = *found;
  const TcrState state = t->state();
  if (state != TcrState::Running && state != TcrState::Exiting) {
    return fail(Step::ThreadExited, ESRCH,
                "thread #" + std::to_string(ref.m_id) + " is " + to_string(state));
  }
  return t->m_handle.signal(sig, SignalPermit{});
}

Result<Tcr*> ThreadManager::adopt_current_thread(std::string_view name, AdoptOptions options) {
  ManagerCore& core = *m_core;
  if (Tcr::current() != nullptr) return fail(Step::AlreadyAdopted);
  const Result<bool> gc_register = core.gc_registration(options.gc, "adopt");
  if (!gc_register) return std::unexpected(gc_register.error());
  Result<Tcr*> acquired = core.acquire_record(true);
  if (!acquired) return std::unexpected(acquired.error());
  Tcr* t = *acquired;
  // An adopted thread runs on its own stack: a cached one on this record goes, so only reaped
  // records ever put a stack back into the cache.
  ManagerCore::unmap_stack(t);
  try {
    t->m_name.assign(name);
  } catch (const std::bad_alloc&) {
    core.abandon_record(t);
    return fail(Step::TcrAllocate, ENOMEM, "thread name");
  }
  t->m_pthread = pthread_self();
  t->m_tid = os::gettid();
  os::current_stack_bounds(&t->m_stack_low, &t->m_stack_high);
  Result<KernelThreadHandle> handle =
      KernelThreadHandle::open_current(core.mode, t->handle_tag());
  if (!handle) {
    core.abandon_record(t);
    return std::unexpected(handle.error());
  }
  t->m_handle = std::move(*handle);
  // Its own alternate signal stack, with a guard page below it, released at step 4.
  const std::size_t alt_map_size = page_size() + alt_stack_size();
  Result<void*> alt_map =
      os::mmap_anonymous(alt_map_size, PROT_READ | PROT_WRITE, false, Step::AltStackMmap);
  if (!alt_map) {
    core.abandon_record(t);
    return std::unexpected(alt_map.error());
  }
  t->m_alt_map = *alt_map;
  t->m_alt_map_size = alt_map_size;
  if (Result<void> guard = os::mprotect(*alt_map, page_size(), PROT_NONE, Step::AltStackGuardMprotect);
      !guard) {
    core.abandon_record(t);
    return std::unexpected(guard.error());
  }
  t->m_alt_stack = static_cast<char*>(*alt_map) + page_size();
  t->m_alt_stack_size = alt_stack_size();
  if (Result<void> state = ManagerCore::attach_thread_state(t); !state) {
    core.abandon_record(t);
    return std::unexpected(state.error());
  }
  if (*gc_register) {
    Result<void*> base = gc::current_stack_base();
    Result<bool> registered =
        base ? gc::register_current_thread(*base) : Result<bool>(std::unexpected(base.error()));
    if (!registered) {
      ManagerCore::detach_thread_state(t);
      core.abandon_record(t);
      return std::unexpected(registered.error());
    }
    // false: the GC already knew this thread (the main thread): not ours to unregister.
    t->m_gc_registered = *registered;
  }
  if (core.options.mach_space != nullptr) {
    t->m_mach_port = core.options.mach_space->current_thread_port();
  }
  t->m_core_ref = m_core;
  if (int rc = pthread_setspecific(adopted_key(), t); rc != 0) {
    if (t->m_gc_registered) gc::unregister_current_thread();
    ManagerCore::detach_thread_state(t);
    t->m_core_ref.reset();
    core.abandon_record(t);
    return fail(Step::TcrAllocate, rc, "pthread_setspecific");
  }
  detail::unblock_manager_signals();
  core.enter_registry(t);
  detail::t_current = t;
  {
    MutexLock lock(core.mutex);
    ++core.stats.adopted;
  }
  log::debug("thread #{} '{}' adopted, tid {}", t->m_id, t->m_name, t->m_tid);
  return t;
}

Result<void> ThreadManager::release_current_thread() {
  Tcr* t = Tcr::current();
  if (t == nullptr || !t->m_adopted || t->m_core != m_core.get()) return fail(Step::NotAdopted);
  if (t->state() != TcrState::Running) {
    return fail(Step::BadArgument, 0, "release_current_thread from the thread's own exit hooks");
  }
  if (t->m_blocking_depth > 0) {
    return fail(Step::BadArgument, 0, "release_current_thread inside a BlockingScope");
  }
  pthread_setspecific(adopted_key(), nullptr);
  shutdown_thread_tcr(*t, nullptr);
  return {};
}

Result<ThreadRef> ThreadManager::current_ref() const {
  Tcr* t = Tcr::current();
  if (t == nullptr || t->m_core != m_core.get()) {
    return fail(Step::BadArgument, 0,
                "current_ref: the calling thread was neither spawned nor adopted by this manager");
  }
  MutexLock lock(m_core->mutex);
  return m_core->ref_to(t);
}

Result<std::vector<ThreadInfo>> ThreadManager::snapshot() const {
  std::vector<ThreadInfo> out;
  MutexLock lock(m_core->mutex);
  try {
    out.reserve(m_core->registry.size());
    for (const Tcr* t : m_core->registry) {
      out.push_back(ThreadInfo{t->m_id, t->m_name, t->state(), t->m_tid, t->m_handle.fd(),
                               t->m_detached, t->m_adopted, t->m_gc_registered});
    }
  } catch (const std::bad_alloc&) {
    return fail(Step::TcrAllocate, ENOMEM, "snapshot: thread list");
  }
  return out;
}

void ThreadManager::for_each(const std::function<void(const Tcr&)>& fn) const {
  MutexLock lock(m_core->mutex);
  for (const Tcr* t : m_core->registry) fn(*t);
}

Result<std::size_t> ThreadManager::reap(Reap how) {
  const bool wait = how == Reap::WaitForRunning;
  ManagerCore& core = *m_core;
  if (wait && ManagerCore::caller_holds_a_stop()) {
    return fail(Step::BadArgument, 0,
                "reap(WaitForRunning) while this thread holds the world stopped: the threads it would wait "
                "for cannot finish");
  }
  // One of the manager's own threads cannot wait for detached threads to finish: it may be one,
  // and two of them waiting for each other would never wake. It reaps what has exited.
  const Tcr* self = Tcr::current();
  const bool own_thread = self != nullptr && self->m_core == &core && !self->m_adopted;
  const bool wait_for_running = wait && !own_thread;
  std::size_t reaped = 0;
  for (;;) {
    Tcr* done = nullptr;
    {
      UniqueLock lock(core.mutex);
      if (wait_for_running) lock.wait(core.all_exited, [&]() TCR_REQUIRES(core.mutex) {
        return core.detached_live == 0;
      });
      // Take only what this call will release. Not waiting: the zombies whose OS thread has
      // ended (a try-join, under the lock, so a concurrent reap(ThreadManager::Reap::WaitForRunning) never finds the list
      // empty while records are in flight elsewhere). Waiting: all of them; each is past step 6
      // and only returning from its start routine, so the pthread_join below is brief.
      Tcr** link = &core.zombies;
      while (*link != nullptr) {
        Tcr* t = *link;
        if (wait || core.try_join_os_thread(t)) {
          *link = t->m_next;
          t->m_next = done;
          done = t;
        } else {
          link = &t->m_next;
        }
      }
      ++core.reapers_busy;
    }
    while (done != nullptr) {
      Tcr* t = done;
      done = t->m_next;
      if (wait) core.join_os_thread(t);
      core.reap_record(t);
      ++reaped;
    }
    UniqueLock lock(core.mutex);
    --core.reapers_busy;
    core.all_exited.notify_all();
    if (!wait) return reaped;
    // Afterwards no reaped thread may still hold its stack or handle in another reaper's hands.
    lock.wait(core.all_exited, [&]() TCR_REQUIRES(core.mutex) { return core.reapers_busy == 0; });
    if (core.zombies == nullptr) return reaped;
  }
}

Result<void> ThreadManager::shutdown() {
  ManagerCore& core = *m_core;
  if (const Tcr* self = Tcr::current();
      self != nullptr && self->m_core == &core && !self->m_adopted) {
    return fail(Step::BadArgument, 0, "shutdown from one of the manager's own threads would wait "
                                      "for itself");
  }
  if (ManagerCore::caller_holds_a_stop()) {
    return fail(Step::BadArgument, 0,
                "shutdown while this thread holds the world stopped: the threads it would wait "
                "for cannot finish");
  }
  std::size_t adopted;
  {
    UniqueLock lock(core.mutex);
    core.shut_down = true;
    lock.wait(core.all_exited, [&]() TCR_REQUIRES(core.mutex) { return core.managed_live == 0; });
    adopted = core.adopted_live;
  }
  (void)reap(ThreadManager::Reap::WaitForRunning);  // cannot fail: the caller holds no stop (checked above)
  if (adopted > 0 && !(adopted == 1 && Tcr::current() != nullptr &&
                       Tcr::current()->m_core == m_core.get())) {
    return fail(Step::AdoptedThreadsAlive, 0,
                std::to_string(adopted) + " adopted thread(s) will release themselves at exit");
  }
  return {};
}

std::size_t ThreadManager::trim() {
  ManagerCore& core = *m_core;
  // Under the lock: a spawner must not take a record whose stack is being unmapped.
  MutexLock lock(core.mutex);
  std::size_t released = 0;
  for (Tcr* t = core.free_list; t != nullptr; t = t->m_next) {
    if (t->m_stack_map == nullptr) continue;
    ManagerCore::unmap_stack(t);
    ++released;
  }
  core.cached_stacks = 0;
  return released;
}

HandleMode ThreadManager::handle_mode() const { return m_core->mode; }

ManagerSignals ThreadManager::signals() { return detail::manager_signals(); }

ManagerStats ThreadManager::stats() const {
  MutexLock lock(m_core->mutex);
  ManagerStats s = m_core->stats;
  s.live = m_core->registry.size();
  s.dead_unreaped = m_core->dead_unreaped;
  s.records = m_core->records.size();
  s.free_records = m_core->free_count;
  s.cached_stacks = m_core->cached_stacks;
  return s;
}

}  // namespace tcr
