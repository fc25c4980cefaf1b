// shutdown_thread_tcr: the ordered teardown of a thread, run on the exiting thread itself (a
// spawned thread after its function returns; an adopted thread at release or from its pthread
// key destructor at exit). The order is the point of this file: each step says why it sits where
// it does.
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>

#include "runtime/gc.h"
#include "runtime/handle_table.h"
#include "runtime/log.h"
#include "runtime/mach_ports.h"
#include "threads/current.h"
#include "threads/internal.h"
#include "threads/manager_core.h"

namespace tcr {

namespace {

// Step 1 runs user code (interrupt closures, exit hooks) that may call pthread_exit: its forced
// unwind passes through here, and the teardown finishes on the way (a thread left Exiting in the
// registry would hang join and shutdown). The unwind then goes on to end the thread.
struct ExitUnwind {
  Tcr& t;
  int cancel_state;
  bool done = false;
  ~ExitUnwind() {
    if (!done) ManagerCore::finish_shutdown(t, cancel_state);
  }
};

}  // namespace

void shutdown_thread_tcr(Tcr& t, void* result) {
  // No cancellation inside the teardown (a log write is a cancellation point); an adopted thread
  // that releases itself early gets its own setting back at the end.
  int cancel_state = PTHREAD_CANCEL_DISABLE;
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_state);
  t.m_state.store(TcrState::Exiting, std::memory_order_release);
  // A thread that returns while holding the world stopped would wait at step 6 for itself, and
  // its closures and hooks would run holding Boehm's allocation lock.
  detail::StopWorldAccess::release_stop_at_exit(t);

  // 1. The thread's last safe point: interrupts queued before now run here, on this thread, and
  //    the mailbox closes, so a later interrupt() settles Undelivered(ThreadExited) at once
  //    instead of waiting for a thread that will never poll again (seed 000: the message in
  //    flight while its target exits is neither lost nor run elsewhere).
  //    The runtime's exit hooks run next, while the thread is still fully itself: registered
  //    with the GC (hooks may allocate), reachable by signals and still in the registry. Then the
  //    result is published into a GC-visible slot, so a GC pointer returned by the thread stays
  //    alive until join reads it.
  //    A closure or hook may itself stop the world and not resume it: that stop is released
  //    after them (step 3 would otherwise wait in Boehm for the lock this thread holds).
  ExitUnwind unwind{t, cancel_state};
  t.m_slots[Tcr::kResultSlot] = result;  // already, in case a closure or hook unwinds the thread
  detail::InterruptAccess::drain_at_exit(t);
  for (const std::function<void(Tcr&)>& hook : t.m_core->options.exit_hooks) {
    ManagerCore::run_exit_hook(hook, t);
  }
  unwind.done = true;
  ManagerCore::finish_shutdown(t, cancel_state);
}

// Steps 2 to 7, also run when step 1 is cut short by pthread_exit.
void ManagerCore::finish_shutdown(Tcr& t, int cancel_state) {
  ManagerCore& core = *t.m_core;
  detail::StopWorldAccess::release_stop_at_exit(t);

  // 2. From here on the thread must not take part in a handshake it cannot finish: the manager's
  //    suspend and interrupt signals are blocked, and a stop-the-world that asked for this
  //    thread (or asks later) gets its acknowledgement as Exiting: it has no stack left to scan
  //    (the result is in a GC-visible slot) and it waits at step 6 until the world resumes.
  //    Boehm's suspend signal stays deliverable until step 3, as Boehm requires.
  sigset_t old_mask;
  detail::block_manager_signals(&old_mask);
  detail::StopWorldAccess::acknowledge_exit(t);

  // 3. Unregister from the GC before the stack goes away: after this a collection neither scans
  //    this stack nor tries to suspend this thread. Only if we registered it (the main thread,
  //    registered by GC_init, is not ours to unregister).
  if (t.m_gc_registered) gc::unregister_current_thread();

  // 4. Per-thread exception state: the thread extensions detach (Darwin: the thread's Mach
  //    exception port is destroyed, every right released once), then the alternate signal stack
  //    installed at start gives way to the one it replaced. After step 3 no GC signal comes;
  //    the manager's are blocked since step 2; a fault from here on (there should be none) runs
  //    on the thread's own stack. An adopted thread's separate alternate stack is unmapped here;
  //    a spawned thread's lives in its stack mapping and goes with it when the thread is reaped.
  detach_thread_state(&t);

  // 5. Normalize the kernel handle to exactly one reference. Linux: the TCR's own pidfd stays
  //    open; any other pidfd opened for this thread (a runtime that asked for "its" handle again,
  //    as CCL called mach_thread_self()) is closed now, each once. Darwin (or a MachModel here):
  //    the thread port's send-right urefs go to exactly 1, the one libpthread drops when the
  //    thread terminates; the port then dies with no dead name left behind (seeds 002, 003).
  //    It runs on the exiting thread, whose port is alive, so the count is exact.
  //    Who releases the last reference: the reaper (join, reap(), or for adopted threads this
  //    function at step 6), once the thread can no longer be signalled through it.
  if (core.options.normalize_kernel_handles) {
    if (std::size_t extras = t.m_handle.close_extras(); extras > 0) {
      log::warn("thread #{} '{}' exited holding {} extra pidfd(s); closed", t.m_id, t.m_name,
                extras);
      MutexLock lock(core.mutex);
      core.stats.extra_handles_closed += extras;
    }
    if (core.options.mach_space != nullptr && t.m_mach_port != mach::kPortNull) {
      Result<mach::Urefs> before =
          mach::normalize_send_refs(*core.options.mach_space, t.m_mach_port, 1);
      if (!before) {
        log::error("thread #{} '{}': {}", t.m_id, t.m_name, before.error().message());
      } else if (*before > 1) {
        log::debug("thread #{}: thread port send refs {} -> 1", t.m_id, *before);
      }
    }
  }

  // 6. Leave the registry under its lock, in one step with becoming Dead, so whoever walks the
  //    registry (suspend_all, snapshot, signal) sees the thread either fully there or gone.
  //    A detached thread goes on the zombie list for the reaper; an adopted one, having no OS
  //    thread of ours to wait for, releases its handle and record right here.
  const bool adopted = t.m_adopted;
  log::debug("thread #{} '{}' exiting", t.m_id, t.m_name);  // last look at the record's name
  // Before the record can go back on the free list (adopted threads, below): from here on
  // nothing on this thread, a signal handler included, may take it for its own.
  detail::t_current = nullptr;
  std::shared_ptr<ManagerCore> keep_core;
  {
    UniqueLock lock(core.mutex);
    core.leave_registry(lock, &t);
    if (adopted) {
      --core.adopted_live;
      // Nobody can reach the record any more (it is out of the registry and adopted threads
      // cannot be joined), so its handle is released now, under the lock that signal() holds.
      t.m_handle.release();
      HandleTable::instance().detach_chain(t.m_handle_chain);
      keep_core = std::move(t.m_core_ref);
      core.free_record_locked(&t);
      ++core.stats.reaped;
    } else {
      ++core.dead_unreaped;
      if (t.m_detached) {
        core.push_zombie_locked(&t);
        if (--core.detached_live == 0) core.all_exited.notify_all();
      }
      if (--core.managed_live == 0) core.all_exited.notify_all();
    }
  }
  // An adopted record may already belong to another thread: no more touching it.

  // 7. Wake the joiner. The record stays ours until pthread_join (join or the reaper) sees this
  //    OS thread gone, so touching it here is safe; after this the thread only returns from its
  //    start routine (pthread_exit) and glibc frees nothing of ours.
  if (!adopted) t.m_exited.post();
  pthread_setcancelstate(cancel_state, nullptr);
  // An adopted thread released early lives on as a foreign thread: its signal mask comes back
  // (the manager's handlers ignore a thread without a Tcr).
  if (adopted) pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  // keep_core: an adopted thread may have been the last owner of the manager's core.
}

}  // namespace tcr
