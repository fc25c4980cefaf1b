// Register capture and fault-access decoding on Darwin, x86-64 and arm64. Compiled only on Apple
// (not built or tested on the Linux machine this project is developed on).
#include <sys/ucontext.h>

#include "runtime/machine_context.h"

namespace tcr::machine {

const std::size_t kRedZoneBytes = 128;  // both x86-64 and arm64 on Darwin

void cpu_relax() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#else
  asm volatile("yield");
#endif
}

// The thread's exception state in the signal's mcontext: x86-64's trap number and error code,
// arm64's ESR.
FaultAccess fault_access(const void* ucontext, const siginfo_t* info) {
  if (ucontext == nullptr || info == nullptr || info->si_code <= 0) return FaultAccess::Unknown;
  const auto* uc = static_cast<const ucontext_t*>(ucontext);
  if (uc->uc_mcontext == nullptr) return FaultAccess::Unknown;
  const auto& es = uc->uc_mcontext->__es;
#if defined(__x86_64__)
  return access_from_x86_page_fault(es.__trapno, es.__err);
#else
  return access_from_arm64_esr(es.__esr);
#endif
}

void capture_from_ucontext(const void* ucontext, RegisterSet& out) {
  const auto* uc = static_cast<const ucontext_t*>(ucontext);
  const auto& ss = uc->uc_mcontext->__ss;
  static_assert(sizeof(ss) / sizeof(std::uint64_t) <= RegisterSet::kMaxWords);
  const auto* words = reinterpret_cast<const std::uint64_t*>(&ss);
  out.count = sizeof(ss) / sizeof(std::uint64_t);
  for (std::size_t i = 0; i < out.count; ++i) out.words[i] = words[i];
#if defined(__x86_64__)
  out.sp = ss.__rsp;
  out.pc = ss.__rip;
#else
  out.sp = ss.__sp;
  out.pc = ss.__pc;
#endif
}

__attribute__((noinline)) void capture_callee_saved(RegisterSet& out) {
#if defined(__x86_64__)
  register std::uintptr_t* words asm("rdi") = out.words;
  asm volatile(
      "movq %%rbx, 0(%0)\n\tmovq %%rbp, 8(%0)\n\tmovq %%r12, 16(%0)\n\t"
      "movq %%r13, 24(%0)\n\tmovq %%r14, 32(%0)\n\tmovq %%r15, 40(%0)\n\t"
      "movq %%rsp, 48(%0)\n\t"
      :
      : "r"(words)
      : "memory");
  out.count = 6;
  out.sp = out.words[6];
  out.words[6] = 0;
#else
  register std::uintptr_t* words asm("x0") = out.words;
  asm volatile(
      "stp x19, x20, [%0, #0]\n\tstp x21, x22, [%0, #16]\n\tstp x23, x24, [%0, #32]\n\t"
      "stp x25, x26, [%0, #48]\n\tstp x27, x28, [%0, #64]\n\tstr x29, [%0, #80]\n\t"
      "mov x9, sp\n\tstr x9, [%0, #88]\n\t"
      :
      : "r"(words)
      : "x9", "memory");
  out.count = 11;
  out.sp = out.words[11];
  out.words[11] = 0;
#endif
  out.pc = 0;
}

}  // namespace tcr::machine
