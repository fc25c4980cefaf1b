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

namespace detail {

MailboxLock::MailboxLock(Tcr& t) : m_tcr(t) {
  block_manager_signals(&m_old_mask);
  t.m_mailbox_mutex.lock();
}

MailboxLock::~MailboxLock() {
  m_tcr.m_mailbox_mutex.unlock();
  pthread_sigmask(SIG_SETMASK, &m_old_mask, nullptr);
}

// Runs one closure on its thread. It counts as delivered once it has run, also when it throws
// (logged, whatever it threw) or unwinds the thread (pthread_exit: the unwinding goes on after
// the outcome is set).
void InterruptAccess::run_one(Tcr& t, InterruptState& st) {
  struct Settle {
    Tcr& t;
    InterruptState& st;
    int cancel_state;
    ~Settle() {
      t.m_interrupt_running = nullptr;
      pthread_setcancelstate(cancel_state, nullptr);
      st.settle(InterruptOutcome::Delivered);
    }
  } settle{t, st, PTHREAD_CANCEL_DISABLE};
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &settle.cancel_state);
  t.m_interrupt_running = &st;
  ManagerCore::run_interrupt_closure(st.fn, t);
}

std::shared_ptr<InterruptState> InterruptAccess::pop(Tcr& t, bool close_when_empty) {
  MailboxLock lock(t);
  if (t.m_mailbox.empty()) {
    t.m_interrupt_pending.store(false, std::memory_order_relaxed);
    if (close_when_empty) t.m_mailbox_open = false;
    return nullptr;
  }
  std::shared_ptr<InterruptState> next = std::move(t.m_mailbox.front());
  t.m_mailbox.pop_front();
  return next;
}

void InterruptAccess::wake_from_handler(Tcr& t) {
  // First: an interrupt() from now on sends a signal of its own (this one is spent). Before the
  // wait word is read, so a wait that begins after this load is woken by that next signal, or
  // sees m_interrupt_pending itself before it sleeps.
  t.m_wake_signal_pending.store(false, std::memory_order_seq_cst);
  if (std::atomic<std::uint32_t>* word = t.m_wait_word.load(std::memory_order_seq_cst)) {
    word->fetch_add(1, std::memory_order_seq_cst);
    os::wake_address(word, true);
  }
}

bool InterruptAccess::can_run(const Tcr& t) {
  // Not inside a closure (they do not nest: FIFO order means one finishes before the next
  // starts), and not inside a BlockingScope (the thread must not touch the heap there; the
  // scope's end runs them).
  return !t.m_running_interrupts && t.m_blocking_depth == 0;
}

namespace {
// Marks the thread as running its closures for as long as the scope lasts, also when a closure
// unwinds the thread (pthread_exit), so the mark never outlives the closures.
struct RunningInterrupts {
  Tcr& t;
  explicit RunningInterrupts(Tcr& tcr) : t(tcr) { InterruptAccess::set_running(t, true); }
  ~RunningInterrupts() { InterruptAccess::set_running(t, false); }
};
}  // namespace

void InterruptAccess::set_running(Tcr& t, bool running) { t.m_running_interrupts = running; }

std::size_t InterruptAccess::run_pending(Tcr& t) {
  if (!t.m_interrupt_pending.load(std::memory_order_acquire) || !can_run(t)) return 0;
  RunningInterrupts running(t);
  std::size_t ran = 0;
  while (std::shared_ptr<InterruptState> next = pop(t, false)) {
    run_one(t, *next);
    ++ran;
  }
  return ran;
}

void InterruptAccess::drain_at_exit(Tcr& t) {
  RunningInterrupts running(t);
  while (std::shared_ptr<InterruptState> next = pop(t, true)) run_one(t, *next);
}

void InterruptAccess::open(Tcr& t) {
  MailboxLock lock(t);
  t.m_mailbox.clear();
  t.m_mailbox_open = true;
  t.m_interrupt_pending.store(false, std::memory_order_relaxed);
  t.m_wake_signal_pending.store(false, std::memory_order_relaxed);
  t.m_running_interrupts = false;
  t.m_wait_word.store(nullptr, std::memory_order_relaxed);
}

}  // namespace detail

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
  MutexLock lock(core.mutex);
  // The manager is checked before the record is touched (another manager's may be freed); a
  // stale ref is no error here: its thread exited (ids are never reused), so Undelivered.
  Result<Tcr*> found = core.record_of(ref, "interrupt");
  if (!found && found.error().step != Step::StaleThread) return std::unexpected(found.error());
  Tcr* t = ref.m_tcr;
  const TcrState state = found ? t->state() : TcrState::Dead;
  if (state != TcrState::Running && state != TcrState::Exiting) {
    st->settle(InterruptOutcome::Undelivered);
    return ticket;
  }
  {
    detail::MailboxLock mailbox(*t);
    if (!t->m_mailbox_open) {
      st->settle(InterruptOutcome::Undelivered);  // past its last safe point
      return ticket;
    }
    try {
      t->m_mailbox.push_back(st);
    } catch (const std::bad_alloc&) {
      return fail(Step::TcrAllocate, ENOMEM, "interrupt mailbox");
    }
    t->m_interrupt_pending.store(true, std::memory_order_seq_cst);
  }
  // One wake-up signal at a time: while one is on its way (its handler has not run), it will
  // wake whatever wait the thread is in, and that wait sees the closure queued above.
  if (t->m_wake_signal_pending.exchange(true, std::memory_order_seq_cst)) return ticket;
  Result<void> sent = t->m_handle.signal(detail::manager_signals().interrupt, SignalPermit{});
  if (!sent) {
    t->m_wake_signal_pending.store(false, std::memory_order_seq_cst);
    // Not woken, so not queued either: take the closure back unless the thread already has it.
    detail::MailboxLock mailbox(*t);
    for (auto it = t->m_mailbox.begin(); it != t->m_mailbox.end(); ++it) {
      if (*it == st) {
        t->m_mailbox.erase(it);
        Error e = sent.error();
        e.detail = "interrupting thread #" + std::to_string(ref.m_id);
        return std::unexpected(std::move(e));
      }
    }
  }
  return ticket;
}

std::size_t ThreadManager::poll() {
  Tcr* t = detail::t_current;
  return t == nullptr ? 0 : detail::InterruptAccess::run_pending(*t);
}

void ThreadManager::sleep_for(std::chrono::nanoseconds duration) {
  Semaphore never;
  never.wait_for(duration);
}

}  // namespace tcr
