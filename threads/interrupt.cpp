// process-interrupt: the mailbox on each Tcr, the safe points that run it, and
// ThreadManager::interrupt (see threads/interrupt.h).
#include "threads/interrupt.h"

#include <pthread.h>
#include <signal.h>

#include <exception>
#include <new>
#include <utility>

#include "runtime/log.h"
#include "runtime/os.h"
#include "threads/current.h"
#include "threads/internal.h"
#include "threads/manager_core.h"

namespace tcr {

const char* to_string(InterruptOutcome outcome) {
  switch (outcome) {
    case InterruptOutcome::Pending: return "pending";
    case InterruptOutcome::Delivered: return "delivered";
    case InterruptOutcome::Undelivered: return "undelivered";
  }
  return "?";
}

void detail::InterruptState::settle(InterruptOutcome result) {
  fn = nullptr;  // the closure's captures go now, on the thread that ran it (or refused it)
  outcome.store(result, std::memory_order_release);
  settled.post();
}

void detail::InterruptState::abandon() {
  InterruptOutcome pending = InterruptOutcome::Pending;
  if (outcome.compare_exchange_strong(pending, InterruptOutcome::Undelivered,
                                      std::memory_order_acq_rel)) {
    settled.post();
  }
}

Result<void> InterruptTicket::wait() const {
  if (outcome() == InterruptOutcome::Pending) {
    m_state->settled.wait();
    m_state->settled.post();  // pass it on to anyone else waiting on this ticket
  }
  if (outcome() == InterruptOutcome::Delivered) return {};
  return fail(Step::ThreadExited, ESRCH,
              "interrupt to thread #" + std::to_string(m_state->target) + " undelivered");
}

// ---- the mailbox ------------------------------------------------------------------------------

MailboxLock::MailboxLock(InterruptMailbox& box) : m_box(box) {
  detail::block_manager_signals(&m_old_mask);
  box.mutex.lock();
}

MailboxLock::~MailboxLock() {
  m_box.mutex.unlock();
  pthread_sigmask(SIG_SETMASK, &m_old_mask, nullptr);
}

std::shared_ptr<detail::InterruptState> InterruptMailbox::pop(bool close_when_empty) {
  MailboxLock lock(*this);
  if (queue.empty()) {
    pending.store(false, std::memory_order_relaxed);
    if (close_when_empty) is_open = false;
    return nullptr;
  }
  std::shared_ptr<detail::InterruptState> next = std::move(queue.front());
  queue.pop_front();
  return next;
}

void InterruptMailbox::wake_from_handler() {
  // First: an interrupt() from now on sends a signal of its own (this one is spent). Before the
  // wait word is read, so a wait that begins after this load is woken by that next signal, or
  // sees `pending` itself before it sleeps.
  wake_signal_pending.store(false, std::memory_order_seq_cst);
  if (std::atomic<std::uint32_t>* word = wait_word.load(std::memory_order_seq_cst)) {
    word->fetch_add(1, std::memory_order_seq_cst);
    os::wake_address(word, true);
  }
}

void InterruptMailbox::open(bool direct) {
  MailboxLock lock(*this);
  direct_wake = direct;
  queue.clear();
  is_open = true;
  pending.store(false, std::memory_order_relaxed);
  wake_signal_pending.store(false, std::memory_order_relaxed);
  running = false;
  wait_word.store(nullptr, std::memory_order_relaxed);
}

// ---- the safe points ---------------------------------------------------------------------------

namespace {

// What a trampoline's `run` is handed: the closure runs on the first call, never again.
struct TrampolineCall {
  ThreadRecord& t;
  detail::InterruptState& st;
  bool& ran;
  static void run_once(void* p) {
    TrampolineCall& c = *static_cast<TrampolineCall*>(p);
    if (c.ran) return;
    c.ran = true;
    ManagerCore::run_interrupt_closure(c.st.fn, c.t);
  }
};

// Runs one closure on its thread. It counts as delivered once it has run, also when it throws
// (logged, whatever it threw) or unwinds the thread (pthread_exit: the unwinding goes on after
// the outcome is set).
void run_one(ThreadRecord& t, detail::InterruptState& st) {
  struct Settle {
    ThreadRecord& t;
    detail::InterruptState& st;
    int cancel_state;
    bool ran = true;
    ~Settle() {
      t.run.mailbox.current = nullptr;
      pthread_setcancelstate(cancel_state, nullptr);
      st.settle(ran ? InterruptOutcome::Delivered : InterruptOutcome::Undelivered);
    }
  } settle{t, st, PTHREAD_CANCEL_DISABLE};
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &settle.cancel_state);
  t.run.mailbox.current = &st;
  const InterruptTrampoline& trampoline = t.core->options.interrupt_trampoline;
  if (!trampoline) {
    ManagerCore::run_interrupt_closure(st.fn, t);
    return;
  }
  // Through the runtime's trampoline, which calls `run` inside its own error handler; a
  // closure that throws is caught inside `run`, so nothing C++ unwinds through the runtime's
  // frames. The trampoline itself is run as a closure is (what it throws is logged).
  TrampolineCall call{t, st, settle.ran};
  settle.ran = false;
  // Two references: std::function keeps them in place, allocating nothing.
  ManagerCore::run_interrupt_closure(
      [&trampoline, &call](Tcr& self) { trampoline(self, &TrampolineCall::run_once, &call); }, t);
}

// Marks the thread as running its closures for as long as the scope lasts, also when a closure
// unwinds the thread (pthread_exit), so the mark never outlives the closures.
struct RunningInterrupts {
  InterruptMailbox& box;
  explicit RunningInterrupts(InterruptMailbox& b) : box(b) { box.running = true; }
  ~RunningInterrupts() { box.running = false; }
};

}  // namespace

bool detail::can_run_interrupts(const ThreadRecord& t) {
  // Not inside a closure (they do not nest: FIFO order means one finishes before the next
  // starts), and not inside a BlockingScope (the thread must not touch the heap there; the
  // scope's end runs them).
  return !t.run.mailbox.running && t.os.stop.blocking_depth == 0;
}

std::size_t detail::run_pending_interrupts(ThreadRecord& t) {
  if (!t.run.mailbox.pending.load(std::memory_order_acquire) || !can_run_interrupts(t)) return 0;
  RunningInterrupts running(t.run.mailbox);
  std::size_t ran = 0;
  while (std::shared_ptr<detail::InterruptState> next = t.run.mailbox.pop(false)) {
    run_one(t, *next);
    ++ran;
  }
  return ran;
}

void detail::drain_interrupts_at_exit(ThreadRecord& t) {
  RunningInterrupts running(t.run.mailbox);
  while (std::shared_ptr<detail::InterruptState> next = t.run.mailbox.pop(true)) run_one(t, *next);
}

void detail::settle_interrupts_left_at_exit(ThreadRecord& t) {
  // One at a time, allocating nothing (an exiting thread's malloc may map an arena); each is
  // settled outside the lock, since settling destroys the closure, whose captures may be the
  // caller's. The mailbox closes once it is empty.
  while (std::shared_ptr<detail::InterruptState> next = t.run.mailbox.pop(true)) {
    next->settle(InterruptOutcome::Undelivered);
  }
}

// ---- ThreadManager -----------------------------------------------------------------------------

Result<InterruptTicket> ThreadManager::interrupt(ThreadRef ref, InterruptFunction fn) {
  ManagerCore& core = *m_core;
  if (!fn) return fail(Step::BadArgument, 0, "interrupt: empty closure");
  std::shared_ptr<detail::InterruptState> st;
  try {
    st = std::make_shared<detail::InterruptState>();
    st->fn = std::move(fn);
  } catch (const std::bad_alloc&) {
    return fail(Step::TcrAllocate, ENOMEM, "interrupt");
  }
  st->target = ref.m_id;
  InterruptTicket ticket(st);
  // Under the registry lock: the record cannot be reaped and reused while it is checked and
  // signalled, and (tgkill mode) the tid is still this thread's.
  UniqueLock lock(core.mutex);
  // The manager is checked before the record is touched (another manager's may be freed); a
  // stale ref is no error here: its thread exited (ids are never reused), so Undelivered.
  Result<ThreadRecord*> found = core.record_of(ref, "interrupt");
  if (!found && found.error().step != Step::StaleThread) return std::unexpected(found.error());
  ThreadRecord* t = record(ref.m_tcr);
  const TcrState state = found ? t->state() : TcrState::Dead;
  // Closed: not running, or past its last safe point (its mailbox closed).
  bool closed = state != TcrState::Running && state != TcrState::Exiting;
  void* notify_context = nullptr;
  if (!closed) {
    MailboxLock mailbox(t->run.mailbox);
    closed = !t->run.mailbox.is_open;
    if (!closed) {
      try {
        t->run.mailbox.queue.push_back(st);
      } catch (const std::bad_alloc&) {
        return fail(Step::TcrAllocate, ENOMEM, "interrupt mailbox");
      }
      t->run.mailbox.pending.store(true, std::memory_order_seq_cst);
      if (t->run.mailbox.direct_wake) {
        // No signal: a manager wait is woken here (its word is published under this lock, so
        // it is alive), any other state is the notify hook's to end, below.
        if (std::atomic<std::uint32_t>* word =
                t->run.mailbox.wait_word.load(std::memory_order_seq_cst)) {
          word->fetch_add(1, std::memory_order_seq_cst);
          os::wake_address(word, true);
        }
        notify_context = t->notify_slot();
      }
    }
  }
  if (closed) {
    // Settled, and so destroyed, outside every lock: the closure's captures may be the caller's
    // (the C API's release callback), which must not run under tcr's locks.
    lock.unlock();
    st->settle(InterruptOutcome::Undelivered);
    return ticket;
  }
  if (t->run.mailbox.direct_wake) {
    // The runtime's doorbell, outside every lock: the hook may allocate from the GC heap (which
    // waits for a collection) or call back into the manager. The record may be reaped from here
    // on; the hook gets only the id and the context, copied under the lock.
    lock.unlock();
    core.options.interrupt_notify(ref.m_id, notify_context);
    return ticket;
  }
  // One wake-up signal at a time: while one is on its way (its handler has not run), it will
  // wake whatever wait the thread is in, and that wait sees the closure queued above.
  if (t->run.mailbox.wake_signal_pending.exchange(true, std::memory_order_seq_cst)) return ticket;
  Result<void> sent = t->os.handle.signal(detail::manager_signals().interrupt, RegistryPermit{});
  if (!sent) {
    t->run.mailbox.wake_signal_pending.store(false, std::memory_order_seq_cst);
    // Not woken, so not queued either: take the closure back unless the thread already has it.
    MailboxLock mailbox(t->run.mailbox);
    for (auto it = t->run.mailbox.queue.begin(); it != t->run.mailbox.queue.end(); ++it) {
      if (*it == st) {
        t->run.mailbox.queue.erase(it);
        Error e = sent.error();
        e.detail = "interrupting thread #" + std::to_string(ref.m_id);
        return std::unexpected(std::move(e));
      }
    }
  }
  return ticket;
}

std::size_t ThreadManager::poll() {
  ThreadRecord* t = detail::t_current;
  return t == nullptr ? 0 : detail::run_pending_interrupts(*t);
}

void ThreadManager::sleep_for(std::chrono::nanoseconds duration) {
  Semaphore never;
  never.wait_for(duration);
}

}  // namespace tcr
