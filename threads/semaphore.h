// tcr::Semaphore: a counting semaphore whose waits are safe points. A tcr thread blocked in wait()
// runs the interrupts queued for it (ThreadManager::interrupt) and then goes on waiting, so
// process-interrupt reaches a thread that is waiting for something else. Other threads wait on it
// like any semaphore. join(), ThreadManager::sleep_for() and InterruptTicket::wait() are built on
// it, so they are safe points too.
// It sleeps on a sequence word (futex) that post() and the interrupt signal handler both bump, so
// an interrupt that arrives between the check and the sleep still wakes the waiter.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace tcr {

class Semaphore {
 public:
  explicit Semaphore(std::uint32_t initial = 0) : m_count(initial) {}
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  // Whether a wait on a tcr thread runs the thread's queued interrupts (a safe point). Hold is
  // for the manager's own waits that must not run user code (the stop-the-world handshake).
  enum class Interrupts : std::uint8_t { Run, Hold };

  // Async-signal-safe: atomics and one wake system call. Unlike sem_post, post() touches the
  // semaphore after the unit is visible, so the semaphore must outlive the post() call itself:
  // keep it in an object the poster also holds (a Tcr, a shared state), not on a waiter's stack
  // that the waiter unwinds as soon as its wait returns.
  void post();
  // Takes one unit, waiting as long as it takes.
  void wait(Interrupts interrupts = Interrupts::Run);
  // Takes one unit if there is one.
  bool try_wait();
  // Takes one unit, or answers false after `timeout`.
  bool wait_for(std::chrono::nanoseconds timeout, Interrupts interrupts = Interrupts::Run);

  std::uint32_t value() const { return m_count.load(std::memory_order_relaxed); }

  // In a forked child, where the threads that waited here are gone: posts stop waking them.
  void forget_waiters() { m_waiters.store(0, std::memory_order_relaxed); }

 private:
  bool wait_impl(std::int64_t timeout_ns, bool interruptible);
  std::atomic<std::uint32_t> m_count;
  std::atomic<std::uint32_t> m_seq{0};      // the futex word: bumped by post() and interrupts
  std::atomic<std::uint32_t> m_waiters{0};
};

}  // namespace tcr
