// shutdown_thread_tcr: the ordered teardown of a thread, run on the exiting thread itself (a
// spawned thread after its function returns; an adopted thread at release or from its pthread
// key destructor at exit). The order is the point of this file: each step is a function named
// for what it does, in the order it runs, and says why it sits where it does. Elsewhere a step
// is referred to by its name.
#include <pthread.h>
#include <signal.h>

#include <memory>

#include "runtime/gc.h"
#include "runtime/handle_table.h"
#include "runtime/log.h"
#include "runtime/mach_ports.h"
#include "threads/current.h"
#include "threads/internal.h"
#include "threads/manager_core.h"

namespace tcr {

namespace {

// The slots the thread kept (its argument, its notify context, the runtime's), released at its
// exit rather than when it is reaped: a thread nobody joins for a while must not keep the
// objects it pointed to alive. The result slot stays, GC-visible, until join hands it over.
void clear_slots(ThreadRecord& t) {
  t.argument_slot() = nullptr;
  {
    MailboxLock lock(t.run.mailbox);  // interrupters read the notify context under it
    t.notify_slot() = nullptr;
  }
  for (std::size_t i = 0; i < Tcr::kSlots; ++i) t.slot(i) = nullptr;
}

// The thread's last safe point: interrupts queued before now run here, on this thread, and the
// mailbox closes, so a later interrupt() settles Undelivered(ThreadExited) at once instead of
// waiting for a thread that will never poll again (seed 000: the message in flight while its
// target exits is neither lost nor run elsewhere). The runtime's exit hooks run next, while the
// thread is still fully itself: registered with the GC (hooks may allocate), reachable by
// signals and still in the registry. The result is published first, into a GC-visible slot, so
// a GC pointer returned by the thread stays alive until join reads it, even if a closure or hook
// unwinds the thread. A closure or hook may itself stop the world and not resume it: that stop
// is released after them (unregister_from_gc would otherwise wait in Boehm for the lock this
// thread holds). Then the slots are cleared (clear_slots).
void run_last_safe_point(ThreadRecord& t, void* result) {
  t.result_slot() = result;
  detail::drain_interrupts_at_exit(t);
  for (const std::function<void(Tcr&)>& hook : t.core->options.exit_hooks) {
    ManagerCore::run_exit_hook(hook, t);
  }
  clear_slots(t);
}

// From here on the thread must not take part in a handshake it cannot finish: the manager's
// suspend and interrupt signals are blocked, and a stop-the-world that asked for this thread (or
// asks later) gets its acknowledgement as Exiting: it has no stack left to scan (the result is
// in a GC-visible slot) and it waits in leave_registry_at_exit until the world resumes. Boehm's
// suspend signal stays deliverable until unregister_from_gc, as Boehm requires.
void block_handshakes(ThreadRecord& t, sigset_t* old_mask) {
  detail::block_manager_signals(old_mask);
  t.os.stop.acknowledge_exit();
}

// Before the stack goes away: after this a collection neither scans this stack nor tries to
// suspend this thread. Only if we registered it (the main thread, registered by GC_init, is not
// ours to unregister).
void unregister_from_gc(ThreadRecord& t) {
  if (t.os.gc_registered) gc::unregister_current_thread();
}

// (ManagerCore::detach_thread_state comes next: the thread extensions detach (Darwin: the
// thread's Mach exception port is destroyed, every right released once), then the alternate
// signal stack installed at start gives way to the one it replaced. No GC signal comes any more
// and the manager's are blocked; a fault from here on (there should be none) runs on the
// thread's own stack. An adopted thread's separate alternate stack is unmapped then; a spawned
// thread's lives in its stack mapping and goes with it when the thread is reaped.)

// The kernel handle, normalized to exactly one reference. Linux: the TCR's own pidfd stays open;
// any other pidfd opened for this thread (a runtime that asked for "its" handle again, as CCL
// called mach_thread_self()) is closed now, each once. Darwin (or a MachModel here): the thread
// port's send-right urefs go to exactly 1, the one libpthread drops when the thread terminates;
// the port then dies with no dead name left behind (seeds 002, 003). It runs on the exiting
// thread, whose port is alive, so the count is exact. Who releases the last reference: the
// reaper (join, reap(), or for adopted threads leave_registry_at_exit), once the thread can no
// longer be signalled through it.
}  // namespace

void ManagerCore::normalize_kernel_handles(ThreadRecord& t) {
  ManagerCore& core = *t.core;
  if (!core.options.normalize_kernel_handles) return;
  if (std::size_t extras = t.os.handle.close_extras(); extras > 0) {
    log::warn("thread #{} '{}' exited holding {} extra pidfd(s); closed", t.run.id, t.run.name,
              extras);
    MutexLock lock(core.mutex);
    core.stats.extra_handles_closed += extras;
  }
  if (core.options.mach_space != nullptr && t.os.mach_port != mach::kPortNull) {
    Result<mach::Urefs> before =
        mach::normalize_send_refs(*core.options.mach_space, t.os.mach_port, 1);
    if (!before) {
      log::error("thread #{} '{}': {}", t.run.id, t.run.name, before.error().message());
    } else if (*before > 1) {
      log::debug("thread #{}: thread port send refs {} -> 1", t.run.id, *before);
    }
  }
}

// Leaves the registry under its lock, in one step with becoming Dead, so whoever walks the
// registry (suspend_all, snapshot, signal) sees the thread either fully there or gone. A
// detached thread goes on the zombie list for the reaper; an adopted one, having no OS thread of
// ours to wait for, releases its handle and record right here. Returns the core reference an
// adopted thread held (it may have been the core's last owner): the caller lets it go last.
std::shared_ptr<ManagerCore> ManagerCore::leave_registry_at_exit(ThreadRecord& t) {
  ManagerCore& core = *t.core;
  log::debug("thread #{} '{}' exiting", t.run.id, t.run.name);  // last look at the name
  // Before the record can go back on the free list (adopted threads, below): from here on
  // nothing on this thread, a signal handler included, may take it for its own.
  detail::t_current = nullptr;
  std::shared_ptr<ManagerCore> keep_core;
  UniqueLock lock(core.mutex);
  core.leave_registry(lock, &t);
  if (t.os.adopted) {
    --core.adopted_live;
    // Nobody can reach the record any more (it is out of the registry and adopted threads
    // cannot be joined), so its handle is released now, under the lock that signal() holds.
    t.os.handle.release();
    HandleTable::instance().detach_chain(t.os.handle_chain);
    keep_core = std::move(t.core_ref);
    core.free_record_locked(&t);
    ++core.stats.reaped;
  } else {
    ++core.dead_unreaped;
    if (t.run.detached) {
      core.push_zombie_locked(&t);
      if (--core.detached_live == 0) core.all_exited.notify_all();
    }
    if (--core.managed_live == 0) core.all_exited.notify_all();
  }
  return keep_core;
}

namespace {

// Wakes the joiner of a spawned thread. The record stays ours until pthread_join (join or the
// reaper) sees this OS thread gone, so touching it here is safe; after this the thread only
// returns from its start routine (pthread_exit) and glibc frees nothing of ours.
void wake_joiner(ThreadRecord& t) { t.run.exited.post(); }

// A pthread_exit from a closure or hook (run_last_safe_point) unwinds through here, and the
// teardown finishes on the way (a thread left Exiting in the registry would hang join and
// shutdown). The unwind then goes on to end the thread.
struct ExitUnwind {
  ThreadRecord& t;
  int cancel_state;
  bool done = false;
  ~ExitUnwind() {
    if (done) return;
    ManagerCore::forget_unwound_frames(t);
    ManagerCore::finish_shutdown(t, cancel_state);
  }
};

}  // namespace

void shutdown_thread_tcr(ThreadRecord& t, void* result) {
  // No cancellation inside the teardown (a log write is a cancellation point); an adopted thread
  // that releases itself early gets its own setting back at the end.
  int cancel_state = PTHREAD_CANCEL_DISABLE;
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_state);
  t.run.state.store(TcrState::Exiting, std::memory_order_release);
  // A thread that returns while holding the world stopped would wait in leave_registry_at_exit
  // for itself, and its closures and hooks would run holding Boehm's allocation lock.
  ManagerCore::release_stop_at_exit(t);
  ExitUnwind unwind{t, cancel_state};
  run_last_safe_point(t, result);
  unwind.done = true;
  ManagerCore::finish_shutdown(t, cancel_state);
}

// Everything after run_last_safe_point, also run when that is cut short by pthread_exit.
void ManagerCore::finish_shutdown(ThreadRecord& t, int cancel_state) {
  release_stop_at_exit(t);  // one a closure or hook left
  // A closure drained at exit that called pthread_exit left the ones behind it queued, in a
  // mailbox still open: they are settled Undelivered (each ticket answers, each capture goes).
  detail::settle_interrupts_left_at_exit(t);
  sigset_t old_mask;
  block_handshakes(t, &old_mask);
  unregister_from_gc(t);
  detach_thread_state(&t);
  normalize_kernel_handles(t);
  const bool adopted = t.os.adopted;
  std::shared_ptr<ManagerCore> keep_core = leave_registry_at_exit(t);
  // An adopted record may already belong to another thread: no more touching it.
  if (!adopted) wake_joiner(t);
  pthread_setcancelstate(cancel_state, nullptr);
  // An adopted thread released early lives on as a foreign thread: its signal mask comes back
  // (the manager's handlers ignore a thread without a Tcr).
  if (adopted) pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  // keep_core goes last: an adopted thread may have been the last owner of the manager's core.
}

}  // namespace tcr
