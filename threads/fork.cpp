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
  for (ManagerCore* c = g_cores; c != nullptr; c = c->fork_next_core()) fn(*c);
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
  const ThreadRecord* self = detail::t_current;
  fork_stop_ours = self != nullptr && self->core == this &&
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
  ThreadRecord* self = detail::t_current;
  ThreadRecord* survivor = self != nullptr && self->core == this ? self : nullptr;
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
  for (ThreadRecord* t : records) {
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
      t->next = fork_orphans;
      fork_orphans = t;
    } else {
      free_in_child_locked(t);
    }
  }
  if (std::exchange(fork_gc_unlocked, false)) gc::lock_allocator();  // after Boehm's child step
  recreate_in_child(mutex);
}

void ManagerCore::keep_in_child(ThreadRecord* t, detail::ForkLeftovers& left) {
  // The inherited handle names the parent's thread (a pidfd; in tgkill mode, its tid): a signal
  // through it would reach the parent. The child's thread gets one of its own.
  detail::tid_index_withdraw(t);
  t->os.handle.release();
  t->os.tid = os::gettid();
  Result<KernelThreadHandle> handle = KernelThreadHandle::open_current(mode, t->handle_tag());
  if (!handle) {
    log::warn("fork: thread #{} '{}' gets no pidfd in the child ({}); it is signalled by its "
              "thread id instead",
              t->run.id, t->run.name, handle.error().message());
    handle = KernelThreadHandle::open_current(HandleMode::Tgkill, t->handle_tag());
  }
  t->os.handle = std::move(*handle);
  if (options.mach_space != nullptr) t->os.mach_port = options.mach_space->current_thread_port();
  detail::tid_index_publish(t);
  t->registry_index = 0;
  registry.push_back(t);  // capacity kept by clear(): no allocation
  if (t->os.adopted) {
    adopted_live = 1;
  } else {
    managed_live = 1;
    detached_live = t->run.detached ? 1 : 0;
  }
  t->run.joining = false;  // a joiner it had is a thread of the parent
  // Interrupts queued for it are not inherited, as pending signals are not: they run in the
  // parent, and settle Undelivered here. The closure it may be running itself goes on.
  forget_mailbox(t, left, /*close=*/false);
  t->run.exited.forget_waiters();
  t->os.stop.ack_sem.forget_waiters();
}

void ManagerCore::forget_in_child(ThreadRecord* t, detail::ForkLeftovers& left) {
  // Its kernel handles name a thread of the parent: the child's copies are closed, every one in
  // its chain (its own, which a thread starting up may not have stored in the record yet, and
  // the extras a runtime opened for it: its exit, which would have closed them, never comes).
  HandleTable::instance().close_chain(t->os.handle_chain);
  t->os.handle.release();  // already closed: forgets the fd
  detail::tid_index_withdraw(t);
  // An adopted thread's alternate stack is our mapping; a spawned thread's is in its stack.
  t->os.alt.forget();
  t->os.extensions = 0;
  t->os.gc_registered = false;  // Boehm's child step kept only the forking thread
  t->run.handshake = nullptr;    // on a spawner's stack, in the parent
  detail::ForkLeftovers::keep(left.functions, std::move(t->run.fn));
  t->run.fn = nullptr;
  detail::ForkLeftovers::keep(left.exceptions, std::move(t->run.exception));
  detail::ForkLeftovers::keep(left.cores, std::move(t->core_ref));
  // A thread of the parent may have held its mailbox lock; its closure in progress, if any,
  // never ends here.
  recreate_in_child(t->run.mailbox.mutex);
  if (detail::InterruptState* running = std::exchange(t->run.mailbox.current, nullptr)) {
    running->abandon();
  }
  forget_mailbox(t, left, /*close=*/true);
  t->run.mailbox.running = false;
  t->run.mailbox.wait_word.store(nullptr, std::memory_order_relaxed);
  t->run.exited.forget_waiters();
  t->os.stop.ack_sem.forget_waiters();
  t->run.id = 0;  // ThreadRefs to it answer StaleThread from now on
  t->run.state.store(TcrState::Free, std::memory_order_release);  // nothing waits for it
}

void ManagerCore::forget_mailbox(ThreadRecord* t, detail::ForkLeftovers& left, bool close) {
  // Free here: the survivor's is taken by others only under the registry lock (held through
  // the fork), and a forgotten thread's was made anew.
  MailboxLock lock(t->run.mailbox);
  if (close) t->run.mailbox.is_open = false;
  for (std::shared_ptr<detail::InterruptState>& st : t->run.mailbox.queue) {
    st->abandon();
    detail::ForkLeftovers::keep(left.interrupts, std::move(st));
  }
  t->run.mailbox.queue.clear();
  t->run.mailbox.pending.store(false, std::memory_order_relaxed);
  // A wake-up signal on its way went to the parent's thread; the child's has none pending.
  t->run.mailbox.wake_signal_pending.store(false, std::memory_order_relaxed);
}

void ManagerCore::free_in_child_locked(ThreadRecord* t) {
  // As reap_record: the stack stays for reuse while the cache has room. No thread runs on it:
  // glibc forgets, in the child, the threads that ran on stacks it did not allocate.
  if (t->os.stack.mapped()) {
    if (cached_stacks < options.cached_stacks) {
      ++cached_stacks;
    } else {
      t->os.stack.release();
    }
  }
  free_record_locked(t);
}

void ManagerCore::release_fork_orphans_locked() {
  while (ThreadRecord* t = fork_orphans) {
    fork_orphans = t->next;
    free_in_child_locked(t);
  }
}

}  // namespace tcr
