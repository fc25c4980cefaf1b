// process-interrupt: ThreadManager::interrupt(thread, closure) queues the closure on the thread,
// and the thread runs its queue in FIFO order at its next safe point: ThreadManager::poll(), or
// any blocking wait inside the manager (join, tcr::Semaphore, sleep_for, InterruptTicket::wait).
// The interrupt signal's handler only wakes such a wait; closures never run in a handler.
// Every interrupt ends Delivered (the closure ran on that thread) or Undelivered (the thread had
// exited first): none is dropped silently, and none runs on another thread, because the mailbox
// belongs to the TCR and the signal goes through the thread's own kernel handle. A thread's exit
// is its last safe point: closures queued before it began to exit run then, and later ones are
// Undelivered(ThreadExited).
// A closure may throw anything (logged and ignored: nothing escapes into the safe point that ran
// it) or call pthread_exit, which ends the thread with its teardown done, at a poll() and at exit
// alike (Linux; on Darwin pthread_exit does not unwind, so a closure must return). The wake-up
// signal is sent only when none is on its way to the thread already: a thread that masks signals
// holds at most one, however many interrupts wait for it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "runtime/error.h"
#include "threads/semaphore.h"

namespace tcr {

class Tcr;
using InterruptFunction = std::function<void(Tcr& self)>;

enum class InterruptOutcome : std::uint8_t { Pending, Delivered, Undelivered };
const char* to_string(InterruptOutcome outcome);

namespace detail {
struct InterruptState {
  InterruptFunction fn;
  std::uint64_t target = 0;
  std::atomic<InterruptOutcome> outcome{InterruptOutcome::Pending};
  Semaphore settled;  // posted once when the outcome is known; waiters pass it on
  void settle(InterruptOutcome result);
  // In a forked child, for a thread that does not exist there: Undelivered unless settled
  // already, the closure left as it is (it may be half-run, on that thread's stack).
  void abandon();
};
}  // namespace detail

class InterruptTicket {
 public:
  InterruptOutcome outcome() const { return m_state->outcome.load(std::memory_order_acquire); }
  std::uint64_t target_id() const { return m_state->target; }
  // Waits until the outcome is known (a safe point on a tcr thread). {} when Delivered;
  // Step::ThreadExited when Undelivered.
  Result<void> wait() const;

 private:
  friend class ThreadManager;
  explicit InterruptTicket(std::shared_ptr<detail::InterruptState> state)
      : m_state(std::move(state)) {}
  std::shared_ptr<detail::InterruptState> m_state;
};

}  // namespace tcr
