// The ThreadManagers' fork steps (threads/fork.h): the list of live managers, what prepare holds,
// and what the child keeps of each manager.
#include "threads/fork.h"

#include <mutex>
#include <utility>

#include "runtime/fork.h"
#include "runtime/gc.h"
#include "runtime/handle_table.h"
#include "runtime/log.h"
#include "runtime/os.h"
#include "threads/current.h"
#include "threads/interrupt.h"
#include "threads/manager_core.h"
#include "threads/tid_index.h"

namespace tcr {
namespace detail {
namespace {

// Every live manager, oldest first, linked through ManagerCore::fork_prev/fork_next. Held from
// the first prepare step to the last parent or child step, so no manager comes or goes meanwhile.
std::mutex g_cores_mutex;
ManagerCore* g_cores = nullptr;
ManagerCore* g_cores_last = nullptr;

// What the child's managers took from the threads they forgot; destroyed at the last child step.
ForkLeftovers& leftovers() {
  static ForkLeftovers* const s_leftovers = new ForkLeftovers;
  return *s_leftovers;
}

template <class F>
void each_core(F&& fn) {
  for (ManagerCore* c = g_cores; c != nullptr; c = c->fork_next) fn(*c);
}

void prepare_stops(void*) {
  g_cores_mutex.lock();
  each_core([](ManagerCore& c) { c.fork_prepare_stop(); });
}
void parent_stops(void*) {
  each_core([](ManagerCore& c) { c.fork_release_stop(false); });
  g_cores_mutex.unlock();
}
void child_stops(void*) {
  each_core([](ManagerCore& c) { c.fork_release_stop(true); });
  recreate_in_child(g_cores_mutex);
  // Every lock is free again: the closures and exceptions of the forgotten threads may run their
  // destructors now, on the child's only thread.
  ForkLeftovers gone = std::move(leftovers());
}

// Each registry lock is taken in the prepare step and let go in the parent or child step: across
// functions, where the analysis cannot follow it.
void prepare_registries(void*) TCR_NO_THREAD_SAFETY_ANALYSIS {
  each_core([](ManagerCore& c) TCR_NO_THREAD_SAFETY_ANALYSIS { c.fork_prepare_registry(); });
}
void parent_registries(void*) TCR_NO_THREAD_SAFETY_ANALYSIS {
  each_core([](ManagerCore& c) TCR_NO_THREAD_SAFETY_ANALYSIS { c.fork_parent_registry(); });
}
void child_registries(void*) TCR_NO_THREAD_SAFETY_ANALYSIS {
  each_core([](ManagerCore& c) TCR_NO_THREAD_SAFETY_ANALYSIS {
    c.fork_child_registry(leftovers());
  });
}

}  // namespace

void fork_track(ManagerCore& core) {
  fork_participate({"manager stops", ForkRank::ManagerStops, prepare_stops, parent_stops,
                    child_stops});
  fork_participate({"manager registries", ForkRank::Managers, prepare_registries,
                    parent_registries, child_registries});
  std::lock_guard lock(g_cores_mutex);
  core.fork_prev = g_cores_last;
  if (g_cores_last != nullptr) {
    g_cores_last->fork_next = &core;
  } else {
    g_cores = &core;
  }
  g_cores_last = &core;
}

void fork_untrack(ManagerCore& core) {
  std::lock_guard lock(g_cores_mutex);
  (core.fork_prev != nullptr ? core.fork_prev->fork_next : g_cores) = core.fork_next;
  (core.fork_next != nullptr ? core.fork_next->fork_prev : g_cores_last) = core.fork_prev;
  core.fork_prev = core.fork_next = nullptr;
}

}  // namespace detail

// ---- ManagerCore's fork steps -----------------------------------------------------------------

void ManagerCore::fork_prepare_stop() {
  // The forking thread's own stop is held already, and stays held in both processes.
  const Tcr* self = Tcr::current();
  fork_stop_ours = self != nullptr && self->m_core == this &&
                   stop_owner.load(std::memory_order_acquire) == self;
  if (!fork_stop_ours) stop_mutex.lock();
}

void ManagerCore::fork_release_stop(bool child) {
  if (std::exchange(fork_stop_ours, false)) return;
  if (child) {
    recreate_in_child(stop_mutex);
  } else {
    stop_mutex.unlock();
  }
}

void ManagerCore::fork_prepare_registry() {
  mutex.lock();
  // The forking thread holds the stop, and with it Boehm's allocation lock, which Boehm's fork
  // step (innermost) takes itself: it is let go for the fork and taken again after it.
  fork_gc_unlocked = fork_stop_ours && stop_holds_gc_lock;
  if (fork_gc_unlocked) gc::unlock_allocator();
}

void ManagerCore::fork_parent_registry() {
  if (std::exchange(fork_gc_unlocked, false)) gc::lock_allocator();
  mutex.unlock();
}

// The lock is "released" by recreating it (the analysis sees it still held).
void ManagerCore::fork_child_registry(detail::ForkLeftovers& left) TCR_NO_THREAD_SAFETY_ANALYSIS {
  Tcr* self = Tcr::current();
  Tcr* survivor = self != nullptr && self->m_core == this ? self : nullptr;
  const bool stop_kept = fork_stop_ours;
  // Lists and counts are rebuilt from `records`, which holds every record the manager has: a
  // record in flight in a thread of the parent (a reaper's, a spawner's) is on no list.
  registry.clear();
  free_list = nullptr;
  free_count = 0;
  zombies = nullptr;
  cached_stacks = 0;
  managed_live = detached_live = adopted_live = dead_unreaped = reapers_busy = 0;
  stop_waiting.clear();
  recreate_in_child(all_exited);
  recreate_in_child(world_resumed);
  if (!stop_kept) {
    stop_owner.store(nullptr, std::memory_order_release);
    stop_depth = 0;
    stop_holds_gc_lock = false;
    world_stopped = false;
    stopped.clear();
  }
  for (Tcr* t : records) {
    if (t == survivor) {
      keep_in_child(t, left);
      continue;
    }
    if (t->state() == TcrState::Free) {
      free_in_child_locked(t);
      continue;
    }
    forget_in_child(t, left);
    if (stop_kept) {
      // The StoppedWorld the forking thread holds lists these threads' stacks: they stay mapped
      // until its outermost resume_all (release_fork_orphans_locked).
      t->m_next = fork_orphans;
      fork_orphans = t;
    } else {
      free_in_child_locked(t);
    }
  }
  if (std::exchange(fork_gc_unlocked, false)) gc::lock_allocator();  // after Boehm's child step
  recreate_in_child(mutex);
}

void ManagerCore::keep_in_child(Tcr* t, detail::ForkLeftovers& left) {
  // The inherited handle names the parent's thread (a pidfd; in tgkill mode, its tid): a signal
  // through it would reach the parent. The child's thread gets one of its own.
  detail::tid_index_withdraw(t);
  t->m_handle.release();
  t->m_tid = os::gettid();
  Result<KernelThreadHandle> handle = KernelThreadHandle::open_current(mode, t->handle_tag());
  if (!handle) {
    log::warn("fork: thread #{} '{}' gets no pidfd in the child ({}); it is signalled by its "
              "thread id instead",
              t->m_id, t->m_name, handle.error().message());
    handle = KernelThreadHandle::open_current(HandleMode::Tgkill, t->handle_tag());
  }
  t->m_handle = std::move(*handle);
  if (options.mach_space != nullptr) t->m_mach_port = options.mach_space->current_thread_port();
  detail::tid_index_publish(t);
  t->m_registry_index = 0;
  registry.push_back(t);  // capacity kept by clear(): no allocation
  if (t->m_adopted) {
    adopted_live = 1;
  } else {
    managed_live = 1;
    detached_live = t->m_detached ? 1 : 0;
  }
  t->m_joining = false;  // a joiner it had is a thread of the parent
  // Interrupts queued for it are not inherited, as pending signals are not: they run in the
  // parent, and settle Undelivered here. The closure it may be running itself goes on.
  forget_mailbox(t, left);
  t->m_exited.forget_waiters();
  t->m_stop_ack_sem.forget_waiters();
}

void ManagerCore::forget_in_child(Tcr* t, detail::ForkLeftovers& left) {
  // Its kernel handles name a thread of the parent: the child's copies are closed, every one in
  // its chain (its own, which a thread starting up may not have stored in the record yet, and
  // the extras a runtime opened for it: its exit, which would have closed them, never comes).
  HandleTable::instance().close_chain(t->m_handle_chain);
  t->m_handle.release();  // already closed: forgets the fd
  detail::tid_index_withdraw(t);
  // An adopted thread's alternate stack is our mapping; a spawned thread's is in its stack.
  unmap_alt_stack(t);
  t->m_alt_stack = nullptr;
  t->m_alt_stack_size = 0;
  t->m_extensions = 0;
  t->m_gc_registered = false;  // Boehm's child step kept only the forking thread
  t->m_handshake = nullptr;    // on a spawner's stack, in the parent
  detail::ForkLeftovers::keep(left.functions, std::move(t->m_fn));
  t->m_fn = nullptr;
  detail::ForkLeftovers::keep(left.exceptions, std::move(t->m_exception));
  detail::ForkLeftovers::keep(left.cores, std::move(t->m_core_ref));
  // A thread of the parent may have held its mailbox lock; its closure in progress, if any,
  // never ends here.
  recreate_in_child(t->m_mailbox_mutex);
  if (detail::InterruptState* running = std::exchange(t->m_interrupt_running, nullptr)) {
    running->abandon();
  }
  forget_mailbox(t, left);
  t->m_mailbox_open = false;
  t->m_running_interrupts = false;
  t->m_wait_word.store(nullptr, std::memory_order_relaxed);
  t->m_exited.forget_waiters();
  t->m_stop_ack_sem.forget_waiters();
  t->m_id = 0;  // ThreadRefs to it answer StaleThread from now on
  t->m_state.store(TcrState::Free, std::memory_order_release);  // nothing waits for it
}

void ManagerCore::forget_mailbox(Tcr* t, detail::ForkLeftovers& left) {
  for (std::shared_ptr<detail::InterruptState>& st : t->m_mailbox) {
    st->abandon();
    detail::ForkLeftovers::keep(left.interrupts, std::move(st));
  }
  t->m_mailbox.clear();
  t->m_interrupt_pending.store(false, std::memory_order_relaxed);
  // A wake-up signal on its way went to the parent's thread; the child's has none pending.
  t->m_wake_signal_pending.store(false, std::memory_order_relaxed);
}

void ManagerCore::free_in_child_locked(Tcr* t) {
  // As reap_record: the stack stays for reuse while the cache has room. No thread runs on it:
  // glibc forgets, in the child, the threads that ran on stacks it did not allocate.
  if (t->m_stack_map != nullptr) {
    if (cached_stacks < options.cached_stacks) {
      ++cached_stacks;
    } else {
      unmap_stack(t);
    }
  }
  free_record_locked(t);
}

void ManagerCore::release_fork_orphans_locked() {
  while (Tcr* t = fork_orphans) {
    fork_orphans = t->m_next;
    free_in_child_locked(t);
  }
}

}  // namespace tcr
