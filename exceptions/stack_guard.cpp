#include "exceptions/stack_guard.h"

#include <cstdint>

#include "runtime/machine_context.h"
#include "threads/tcr.h"
#include "threads/thread_extensions.h"

namespace tcr::detail {
namespace {

// A frame larger than the guard page can skip it: a fault below the guard still counts when the
// thread's stack pointer is below its stack, up to this far.
constexpr std::uintptr_t kFarBelow = std::uintptr_t{1} << 20;

}  // namespace

void escape_if_stack_overflow(void* fault_address, void* ucontext) {
  Tcr* t = Tcr::current();
  if (t == nullptr || t->guard_low() == nullptr) return;  // adopted: the stack is not ours
  const auto guard = reinterpret_cast<std::uintptr_t>(t->guard_low());
  const auto low = reinterpret_cast<std::uintptr_t>(t->stack_low());
  const auto addr = reinterpret_cast<std::uintptr_t>(fault_address);
  bool overflow = addr >= guard && addr < low;
  if (!overflow) {
    RegisterSet regs;
    machine::capture_from_ucontext(ucontext, regs);
    overflow = regs.sp < low && regs.sp + kFarBelow >= low && addr < low && addr + kFarBelow >= low;
  }
  if (overflow) escape_stack_overflow(*t, fault_address);
}

}  // namespace tcr::detail
