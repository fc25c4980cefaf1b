// Register capture and fault-access decoding on Linux, x86-64 and arm64. Another architecture
// fails to compile here, on purpose: a conservative scan that silently misses registers would
// free live objects.
#include <ucontext.h>
#if defined(__aarch64__)
#include <asm/sigcontext.h>  // _aarch64_ctx, esr_context, ESR_MAGIC
#endif

#include <cstring>

#include "runtime/machine_context.h"

namespace tcr::machine {

#if defined(__x86_64__)

const std::size_t kRedZoneBytes = 128;

void cpu_relax() { __builtin_ia32_pause(); }

void capture_from_ucontext(const void* ucontext, RegisterSet& out) {
  const auto* uc = static_cast<const ucontext_t*>(ucontext);
  static_assert(NGREG <= RegisterSet::kMaxWords);
  for (int i = 0; i < NGREG; ++i) out.words[i] = static_cast<std::uintptr_t>(uc->uc_mcontext.gregs[i]);
  out.count = NGREG;
  out.sp = static_cast<std::uintptr_t>(uc->uc_mcontext.gregs[REG_RSP]);
  out.pc = static_cast<std::uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
}

FaultAccess fault_access(const void* ucontext, const siginfo_t* info) {
  if (ucontext == nullptr || info == nullptr || info->si_code <= 0) return FaultAccess::Unknown;
  const auto* uc = static_cast<const ucontext_t*>(ucontext);
  return access_from_x86_page_fault(static_cast<std::uint64_t>(uc->uc_mcontext.gregs[REG_TRAPNO]),
                                    static_cast<std::uint64_t>(uc->uc_mcontext.gregs[REG_ERR]));
}

__attribute__((noinline)) void capture_callee_saved(RegisterSet& out) {
  // The pointer is pinned to rdi, an argument register, so no callee-saved register is used (and
  // overwritten) to hold it before it is read.
  register std::uintptr_t* words asm("rdi") = out.words;
  asm volatile(
      "movq %%rbx, 0(%0)\n\t"
      "movq %%rbp, 8(%0)\n\t"
      "movq %%r12, 16(%0)\n\t"
      "movq %%r13, 24(%0)\n\t"
      "movq %%r14, 32(%0)\n\t"
      "movq %%r15, 40(%0)\n\t"
      "movq %%rsp, 48(%0)\n\t"
      :
      : "r"(words)
      : "memory");
  out.count = 6;
  out.sp = out.words[6];  // the return address's slot: the caller's frame is above it
  out.words[6] = 0;
  out.pc = 0;
}

#elif defined(__aarch64__)

void cpu_relax() { asm volatile("yield"); }

const std::size_t kRedZoneBytes = 0;

void capture_from_ucontext(const void* ucontext, RegisterSet& out) {
  const auto* uc = static_cast<const ucontext_t*>(ucontext);
  for (int i = 0; i < 31; ++i) out.words[i] = static_cast<std::uintptr_t>(uc->uc_mcontext.regs[i]);
  out.words[31] = static_cast<std::uintptr_t>(uc->uc_mcontext.sp);
  out.count = 32;
  out.sp = static_cast<std::uintptr_t>(uc->uc_mcontext.sp);
  out.pc = static_cast<std::uintptr_t>(uc->uc_mcontext.pc);
}

// The kernel adds the fault's ESR (ESR_EL1 as it saw it) as an esr_context record among the
// records in uc_mcontext.__reserved, each headed by {magic, size}; a zero magic ends them.
FaultAccess fault_access(const void* ucontext, const siginfo_t* info) {
  if (ucontext == nullptr || info == nullptr || info->si_code <= 0) return FaultAccess::Unknown;
  const auto* uc = static_cast<const ucontext_t*>(ucontext);
  const unsigned char* at = uc->uc_mcontext.__reserved;
  const unsigned char* const end = at + sizeof uc->uc_mcontext.__reserved;
  while (at + sizeof(_aarch64_ctx) <= end) {
    _aarch64_ctx head;
    std::memcpy(&head, at, sizeof head);
    if (head.magic == 0 || head.size < sizeof head || head.size > static_cast<std::size_t>(end - at)) {
      break;
    }
    if (head.magic == ESR_MAGIC && head.size >= sizeof(esr_context)) {
      esr_context esr;
      std::memcpy(&esr, at, sizeof esr);
      return access_from_arm64_esr(esr.esr);
    }
    at += head.size;
  }
  return FaultAccess::Unknown;
}

__attribute__((noinline)) void capture_callee_saved(RegisterSet& out) {
  register std::uintptr_t* words asm("x0") = out.words;
  asm volatile(
      "stp x19, x20, [%0, #0]\n\t"
      "stp x21, x22, [%0, #16]\n\t"
      "stp x23, x24, [%0, #32]\n\t"
      "stp x25, x26, [%0, #48]\n\t"
      "stp x27, x28, [%0, #64]\n\t"
      "str x29, [%0, #80]\n\t"
      "mov x9, sp\n\t"
      "str x9, [%0, #88]\n\t"
      :
      : "r"(words)
      : "x9", "memory");
  out.count = 11;
  out.sp = out.words[11];  // no frame of our own: the caller's frame is at and above it
  out.words[11] = 0;
  out.pc = 0;
}

#else
#error "tcr: add this architecture's registers to runtime/machine_context_linux.cpp"
#endif

}  // namespace tcr::machine
