// tcr::Semaphore over a futex-style sequence word (see threads/semaphore.h).
#include "threads/semaphore.h"

#include <time.h>

#include <algorithm>
#include <limits>

#include "runtime/os.h"
#include "threads/current.h"
#include "threads/record.h"
#include "threads/internal.h"
#include "threads/tcr.h"

namespace tcr {
namespace {

std::int64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Publishes the word this thread sleeps on (nullptr: none) and answers the one before. Read by
// the thread's own interrupt handler (relaxed: same thread) or, when the manager wakes waits
// directly (an interrupt notify hook), by interrupters under the mailbox lock: then the word is
// only ever bumped while its wait is still on (a waiter's semaphore may live on its stack).
std::atomic<std::uint32_t>* publish_wait_word(ThreadRecord& self,
                                              std::atomic<std::uint32_t>* word) {
  InterruptMailbox& box = self.run.mailbox;
  if (!box.direct_wake) return box.wait_word.exchange(word, std::memory_order_relaxed);
  MailboxLock lock(box);
  return box.wait_word.exchange(word, std::memory_order_seq_cst);
}

}  // namespace

void Semaphore::post() {
  m_count.fetch_add(1, std::memory_order_seq_cst);
  m_seq.fetch_add(1, std::memory_order_seq_cst);
  if (m_waiters.load(std::memory_order_seq_cst) > 0) os::wake_address(&m_seq, false);
}

bool Semaphore::try_wait() {
  std::uint32_t c = m_count.load(std::memory_order_relaxed);
  while (c > 0) {
    if (m_count.compare_exchange_weak(c, c - 1, std::memory_order_acquire)) return true;
  }
  return false;
}

void Semaphore::wait(Interrupts interrupts) { wait_impl(-1, interrupts == Interrupts::Run); }

bool Semaphore::wait_for(std::chrono::nanoseconds timeout, Interrupts interrupts) {
  return wait_impl(std::max<std::int64_t>(0, timeout.count()), interrupts == Interrupts::Run);
}

bool Semaphore::wait_impl(std::int64_t timeout_ns, bool interruptible) {
  ThreadRecord* self = interruptible ? detail::t_current : nullptr;
  if (self != nullptr) detail::run_pending_interrupts(*self);
  if (try_wait()) return true;
  // Saturated: a timeout of nanoseconds::max() (a C caller's UINT64_MAX) must not overflow.
  std::int64_t deadline = -1;
  if (timeout_ns >= 0) {
    const std::int64_t now = monotonic_ns();
    deadline = timeout_ns > std::numeric_limits<std::int64_t>::max() - now
                   ? std::numeric_limits<std::int64_t>::max()
                   : now + timeout_ns;
  }
  m_waiters.fetch_add(1, std::memory_order_seq_cst);
  // Published for this thread's interrupt handler, which bumps m_seq so the sleep below ends
  // even when the interrupt lands between the check and the system call.
  std::atomic<std::uint32_t>* outer = nullptr;
  if (self != nullptr) outer = publish_wait_word(*self, &m_seq);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  bool got = false;
  for (;;) {
    const std::uint32_t seq = m_seq.load(std::memory_order_seq_cst);
    if (self != nullptr && self->run.mailbox.pending.load(std::memory_order_acquire) &&
        detail::can_run_interrupts(*self)) {
      publish_wait_word(*self, outer);
      detail::run_pending_interrupts(*self);
      publish_wait_word(*self, &m_seq);
      continue;
    }
    if (try_wait()) {
      got = true;
      break;
    }
    std::int64_t remaining = -1;
    if (deadline >= 0) {
      remaining = deadline - monotonic_ns();
      if (remaining <= 0) break;
    }
    os::wait_on_address(&m_seq, seq, remaining);
  }
  if (self != nullptr) publish_wait_word(*self, outer);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  m_waiters.fetch_sub(1, std::memory_order_seq_cst);
  // A post's single wake may have landed on this waiter as it timed out: pass it on.
  if (!got && m_count.load(std::memory_order_seq_cst) > 0 &&
      m_waiters.load(std::memory_order_seq_cst) > 0) {
    os::wake_address(&m_seq, false);
  }
  return got;
}

}  // namespace tcr
