// The record pool and the registry: records are made once, handed out with a fresh id, given
// back when their thread is reaped (or never ran), and kept flat in number; a Running thread is
// in the registry, where stops, snapshots and signals find it. All under the registry lock.
#include <errno.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <new>
#include <utility>

#include "runtime/handle_table.h"
#include "runtime/log.h"
#include "runtime/os.h"
#include "threads/current.h"
#include "threads/fork.h"
#include "threads/internal.h"
#include "threads/manager_core.h"
#include "threads/tid_index.h"

namespace tcr {
namespace {

// TCR ids are unique in the process, not per manager: they tag kernel handles in the one
// process-wide HandleTable, whose dump must say unambiguously whose each fd is.
std::atomic<std::uint64_t> g_next_id{1};
std::atomic<std::uint64_t> g_next_manager{1};

}  // namespace

ManagerCore::ManagerCore(ManagerOptions opts, HandleMode handle_mode)
    : options(std::move(opts)),
      mode(handle_mode),
      serial(g_next_manager.fetch_add(1, std::memory_order_relaxed)),
      slot_arena(ThreadRecord::kSlotWords, options.gc) {}

ManagerCore::~ManagerCore() {
  // First: a fork from now on leaves this manager alone.
  detail::fork_untrack(*this);
  // A listener looking a tid up (threads/tid_index.h) may be holding one of these records.
  MutexLock index_guard(detail::tid_lookup_mutex);
  for (ThreadRecord* t : records) delete t;  // its stack and handles go with it
}

Result<bool> ManagerCore::gc_registration(GcRegistration choice, const char* op) const {
  const bool wanted = choice == GcRegistration::Register ||
                      (choice == GcRegistration::Inherit && options.gc);
  if (wanted && !options.gc) {
    return fail(Step::BadArgument, 0,
                std::string(op) + ": GC registration asked of a manager without GC");
  }
  // The runtime owns Boehm: nothing of tcr's may touch it before the runtime initialized it (a
  // slot block's GC_add_roots would run GC_init itself, in Boehm's default configuration).
  if (options.gc && options.gc_owner == GcOwner::Runtime && !gc::adopt_runtime_collector()) {
    return fail(Step::GcNotInitialized, 0,
                std::string(op) + ": the runtime has not run GC_INIT yet");
  }
  return wanted;
}

void ManagerCore::push_zombie_locked(ThreadRecord* t) {
  t->next = zombies;
  zombies = t;
}

Result<ThreadRecord*> ManagerCore::acquire_record(bool adopted) {
  UniqueLock lock(mutex);
  if (shut_down) return fail(Step::ManagerShutDown);
  ThreadRecord* t = free_list;
  if (t != nullptr) {
    free_list = t->next;
    --free_count;
  } else {
    // A new record: the only allocation on the spawn path, and only until the free list holds
    // as many records as threads ever overlapped. Its slot block comes from the root arena
    // (never from the GC heap: the caller may be a thread the GC does not know), made without
    // the registry lock: a new arena chunk is registered with GC_add_roots, which waits for
    // Boehm's allocation lock, and a thread holding a world stopped keeps that lock while it
    // takes registry locks (resume_all does).
    lock.unlock();
    Result<ThreadRecord*> fresh = new_record();
    lock.lock();
    if (!fresh) return fresh;
    t = *fresh;
    if (shut_down) {  // shut down meanwhile: the record waits on the free list
      t->next = free_list;
      free_list = t;
      ++free_count;
      return fail(Step::ManagerShutDown);
    }
  }
  t->run.id = g_next_id.fetch_add(1, std::memory_order_relaxed);
  t->next = nullptr;
  // A thread that was detached after it exited posted run.exited with no joiner to take it.
  while (t->run.exited.try_wait()) {
  }
  t->os.adopted = adopted;
  t->run.detached = false;
  t->run.joining = false;
  t->os.self_detached = false;
  t->os.gc_registered = false;
  t->run.handshake = nullptr;
  t->run.exception = nullptr;
  t->run.traps.store(0, std::memory_order_relaxed);  // Tcr::traps() counts this thread's own
  t->os.tid = 0;
  t->os.mach_port = mach::kPortNull;
  // A stack kept on a free record (the stack cache) leaves the cache with the record; spawn
  // reuses it when the size matches.
  if (t->os.stack.mapped()) --cached_stacks;
  t->os.stack_low = t->os.stack_high = nullptr;
  t->run.state.store(TcrState::Reserved, std::memory_order_release);
  if (adopted) {
    ++adopted_live;
  } else {
    ++managed_live;
  }
  return t;
}

Result<ThreadRecord*> ManagerCore::new_record() {
  void** slots = nullptr;
  {
    MutexLock arena(arena_mutex);
    slots = slot_arena.allocate();
  }
  if (slots == nullptr) return fail(Step::TcrAllocate, ENOMEM);
  // Not new (std::nothrow): that guards the record's own storage, not what its members'
  // constructors allocate (the interrupt mailbox's deque allocates its map).
  ThreadRecord* t = nullptr;
  try {
    t = new ThreadRecord(slots);
  } catch (const std::bad_alloc&) {
    return fail(Step::TcrAllocate, ENOMEM);  // the slot block stays in the arena
  }
  t->core = this;
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

void ManagerCore::free_record_locked(ThreadRecord* t) {
  std::memset(t->slots(), 0, ThreadRecord::kSlotWords * sizeof(void*));
  t->run.id = 0;
  t->run.state.store(TcrState::Free, std::memory_order_release);
  t->next = free_list;
  free_list = t;
  ++free_count;
}

void ManagerCore::abandon_record(ThreadRecord* t) {
  t->release_os_resources();
  t->run.fn = nullptr;
  MutexLock lock(mutex);
  free_record_locked(t);
  if (t->os.adopted) {
    --adopted_live;
    return;
  }
  if (t->run.detached && --detached_live == 0) all_exited.notify_all();
  if (--managed_live == 0) all_exited.notify_all();
}

void ManagerCore::reap_record(ThreadRecord* t) {
  {
    // Invalidate ThreadRefs first: from here on join/detach/signal answer StaleThread.
    MutexLock lock(mutex);
    t->run.id = 0;
    --dead_unreaped;
  }
  // The last kernel-handle reference is released here, by the reaper, after the OS thread is
  // gone (pthread_join returned, or the adopted thread released itself): until then a signal to
  // the thread could still have been sent through it. Each handle is closed once (HandleTable).
  t->os.handle.release();
  // Normally empty now (normalize_kernel_handles closed the extras); with normalization off,
  // extras outlive the thread unclosed, as the test of that leak wants, but not linked to a
  // record that is reused.
  HandleTable::instance().detach_chain(t->os.handle_chain);
  t->run.exception = nullptr;
  UniqueLock lock(mutex);
  // The stack stays on the record for the next spawn while the cache has room: its pages are
  // already faulted in, and spawn skips mmap, mprotect and (here) munmap. Bounded by
  // ManagerOptions::cached_stacks, so mappings stay flat however many threads come and go.
  if (t->os.stack.mapped() && cached_stacks < options.cached_stacks) {
    ++cached_stacks;
  } else if (t->os.stack.mapped()) {
    lock.unlock();
    t->os.stack.release();
    lock.lock();
  }
  free_record_locked(t);
  ++stats.reaped;
}

bool ManagerCore::caller_holds_a_stop() {
  // A thread belongs to one manager, and may stop only that manager's world.
  const ThreadRecord* self = detail::t_current;
  return self != nullptr && self->core->stop_owner.load(std::memory_order_acquire) == self;
}

// A thread that detached itself (pthread_detach(pthread_self())) cannot be joined: pthread_join
// answers EINVAL while it may still be running its last instructions on the stack we own. It is
// gone once its kernel handle says so: a pidfd polls readable after the thread has left user
// space for good; a tid that tgkill no longer finds has been released by the kernel.
void ManagerCore::mark_self_detached(ThreadRecord* t) {
  if (t->os.self_detached) return;
  t->os.self_detached = true;
  log::error("thread #{} '{}' detached itself with pthread_detach(): tcr threads are detached "
             "with ThreadManager::detach; its stack is reused only once it has ended",
             t->run.id, t->run.name);
}

void ManagerCore::wait_self_detached_gone(ThreadRecord* t) {
  mark_self_detached(t);
  while (os_thread_alive(t)) {
    if (t->os.handle.mode() == HandleMode::Pidfd) {
      (void)t->os.handle.wait_exit(100);
    } else {
      ::usleep(200);
    }
  }
}

bool ManagerCore::os_thread_alive(const ThreadRecord* t) {
  Result<bool> alive = t->os.handle.alive(RegistryPermit{});
  return alive && *alive;
}

bool ManagerCore::join_os_thread(ThreadRecord* t) {
  if (!t->os.self_detached) {
    const int rc = pthread_join(t->os.pthread, nullptr);
    if (rc == 0) return true;
    if (rc != EINVAL) {
      log::error("pthread_join of thread #{} failed: {}", t->run.id, std::strerror(rc));
      return true;
    }
  }
  wait_self_detached_gone(t);
  return false;
}

bool ManagerCore::try_join_os_thread(ThreadRecord* t) {
  if (!t->os.self_detached) {
    switch (os::try_join(t->os.pthread)) {
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

void ManagerCore::enter_registry(ThreadRecord* t) {
  UniqueLock lock(mutex);
  // A thread that starts while the world is stopped waits here, before it runs any user code.
  wait_for_world(lock);
  t->os.stop.reset();
  t->run.mailbox.open(static_cast<bool>(options.interrupt_notify));
  detail::tid_index_publish(t);
  t->registry_index = registry.size();
  registry.push_back(t);  // room reserved by acquire_record: cannot throw
  t->run.state.store(TcrState::Running, std::memory_order_release);
}

void ManagerCore::leave_registry(UniqueLock& lock, ThreadRecord* t) {
  wait_for_world(lock);
  // Swap-remove: O(1), so exits cost the same with ten threads or ten thousand.
  const std::size_t i = t->registry_index;
  ThreadRecord* last = registry.back();
  registry[i] = last;
  last->registry_index = i;
  registry.pop_back();
  detail::tid_index_withdraw(t);
  t->run.state.store(TcrState::Dead, std::memory_order_release);
}

Result<ThreadRecord*> ManagerCore::record_of(ThreadRef ref, const char* op) const {
  ThreadRecord* t = record(ref.m_tcr);
  if (t == nullptr) return fail(Step::BadArgument, 0, std::string(op) + ": empty ThreadRef");
  if (ref.m_manager != serial) {
    return fail(Step::BadArgument, 0,
                std::string(op) + ": thread #" + std::to_string(ref.m_id) +
                    " belongs to another ThreadManager");
  }
  if (t->run.id != ref.m_id) {
    return fail(Step::StaleThread, 0,
                "thread #" + std::to_string(ref.m_id) + " was already joined or reaped");
  }
  return t;
}

}  // namespace tcr
