// process-interrupt: the mailbox on each Tcr, the safe points that run it, and
// ThreadManager::interrupt (see threads/interrupt.h).
#include "threads/interrupt.h"

#include <pthread.h>

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

// Runs one closure on its thread. It counts as delivered once it has run, also when it throws
// (logged) or unwinds the thread (pthread_exit: the unwinding goes on after the outcome is set).
void InterruptAccess::run_one(Tcr& t, InterruptState& st) {
  struct Settle {
    InterruptState& st;
    ~Settle() { st.settle(InterruptOutcome::Delivered); }
  } settle{st};
  int cancel_state = PTHREAD_CANCEL_DISABLE;
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_state);
  try {
    st.fn(t);
  } catch (const std::exception& e) {
    log::warn("thread #{} '{}': interrupt closure threw: {}", t.id(), t.name(), e.what());
  }
  pthread_setcancelstate(cancel_state, nullptr);
}

std::shared_ptr<InterruptState> InterruptAccess::pop(Tcr& t, bool close_when_empty) {
  std::lock_guard lock(t.m_mailbox_mutex);
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
  if (std::atomic<std::uint32_t>* word = t.m_wait_word.load(std::memory_order_relaxed)) {
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

std::size_t InterruptAccess::run_pending(Tcr& t) {
  if (!t.m_interrupt_pending.load(std::memory_order_acquire) || !can_run(t)) return 0;
  t.m_running_interrupts = true;
  std::size_t ran = 0;
  while (std::shared_ptr<InterruptState> next = pop(t, false)) {
    run_one(t, *next);
    ++ran;
  }
  t.m_running_interrupts = false;
  return ran;
}

void InterruptAccess::drain_at_exit(Tcr& t) {
  t.m_running_interrupts = true;
  while (std::shared_ptr<InterruptState> next = pop(t, true)) run_one(t, *next);
  t.m_running_interrupts = false;
}

void InterruptAccess::open(Tcr& t) {
  std::lock_guard lock(t.m_mailbox_mutex);
  t.m_mailbox.clear();
  t.m_mailbox_open = true;
  t.m_interrupt_pending.store(false, std::memory_order_relaxed);
  t.m_running_interrupts = false;
  t.m_wait_word.store(nullptr, std::memory_order_relaxed);
}

}  // namespace detail

// ---- ThreadManager -----------------------------------------------------------------------------

Result<InterruptTicket> ThreadManager::interrupt(ThreadRef ref, InterruptFunction fn) {
  ManagerCore& core = *m_core;
  if (!fn) return fail(Step::BadArgument, 0, "interrupt: empty closure");
  if (!ref.valid()) return fail(Step::BadArgument, 0, "interrupt: empty ThreadRef");
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
  std::lock_guard lock(core.mutex);
  Tcr* t = ref.m_tcr;
  const TcrState state = t->state();
  if (t->m_id != ref.m_id || (state != TcrState::Running && state != TcrState::Exiting)) {
    st->settle(InterruptOutcome::Undelivered);  // it exited (ids are never reused)
    return ticket;
  }
  {
    std::lock_guard mailbox(t->m_mailbox_mutex);
    if (!t->m_mailbox_open) {
      st->settle(InterruptOutcome::Undelivered);  // past its last safe point
      return ticket;
    }
    try {
      t->m_mailbox.push_back(st);
    } catch (const std::bad_alloc&) {
      return fail(Step::TcrAllocate, ENOMEM, "interrupt mailbox");
    }
    t->m_interrupt_pending.store(true, std::memory_order_release);
  }
  Result<void> sent = t->m_handle.signal(detail::manager_signals().interrupt, SignalPermit{});
  if (!sent) {
    // Not woken, so not queued either: take the closure back unless the thread already has it.
    std::lock_guard mailbox(t->m_mailbox_mutex);
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
