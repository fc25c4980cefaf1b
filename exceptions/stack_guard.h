// Stack overflow of a tcr thread into the guard page below its stack, turned into an error on
// that thread: the fault handler (fault_signals.cpp), on the thread's alternate stack, jumps back
// to the frame that called the thread's function (ManagerCore::run_guarded); join answers
// Step::StackOverflow; the process and the manager go on. The frames of the abandoned function do
// not unwind (no destructors run): C++ cannot unwind from an arbitrary faulting instruction.
// Internal to exceptions/.
#pragma once

namespace tcr::detail {

// From the fault handler. Returns only when the fault is not the calling thread's stack overflow
// (or the thread is not inside its function).
void escape_if_stack_overflow(void* fault_address, void* ucontext);

}  // namespace tcr::detail
