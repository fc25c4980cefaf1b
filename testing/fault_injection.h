// Fault injection for tests (part of tcr_testing, which is not installed): makes the Nth call of
// a given kind (os::Call) fail with a chosen errno, to prove that each error path names its step
// and leaks nothing. Process-wide and thread-safe. This file's plan is the OS shim's fault hook
// (runtime/os.h, set_fault_hook): a binary that calls anything declared here has it installed
// during static initialization, so call_count counts every call since the process started.
#pragma once

#include <cstdint>

#include "runtime/os.h"

namespace tcr::os {

// Arms `call`: of the calls made from now on, number `nth` (1 = the next one) fails with `err`,
// and so do the `times - 1` calls after it. Re-arming replaces the previous plan for that call.
void fail_nth(Call call, std::uint64_t nth, int err, std::uint64_t times = 1);
// Disarms every call.
void clear_faults();
// How many times `call` has been made (including failed ones) since the process started.
std::uint64_t call_count(Call call);

// RAII: arms on construction, disarms everything on destruction.
class ScopedFault {
 public:
  ScopedFault(Call call, std::uint64_t nth, int err, std::uint64_t times = 1) {
    fail_nth(call, nth, err, times);
  }
  ~ScopedFault() { clear_faults(); }
  ScopedFault(const ScopedFault&) = delete;
  ScopedFault& operator=(const ScopedFault&) = delete;
};

}  // namespace tcr::os
