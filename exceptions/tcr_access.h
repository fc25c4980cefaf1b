// The GC-trap layer's view of a Tcr (Tcr declares this struct its friend): counting a thread's
// traps and leaving its function on a stack overflow. Internal to exceptions/.
#pragma once

#include <setjmp.h>

#include <atomic>

#include "threads/tcr.h"

namespace tcr::detail {

struct ExceptionsAccess {
  // Async-signal-safe.
  static void count_trap(Tcr& t, int delta = 1) {
    t.m_traps.fetch_add(static_cast<std::uint64_t>(static_cast<std::int64_t>(delta)),
                        std::memory_order_relaxed);
  }

  // From the fault handler, on the alternate stack: abandons the thread's function and jumps
  // back to ManagerCore::run_guarded, which answers join with Step::StackOverflow. Returns only
  // if the thread is not inside its function (start-up, shutdown, an adopted thread): the fault
  // then goes on to the handler installed before ours.
  static void escape_overflow(Tcr& t, void* address) {
    bool armed = true;
    if (!t.m_overflow_armed.compare_exchange_strong(armed, false, std::memory_order_acq_rel)) {
      return;
    }
    t.m_overflow_address = address;
    siglongjmp(t.m_overflow_env, 1);
  }
};

}  // namespace tcr::detail
