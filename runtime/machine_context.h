// The register state of a stopped thread, for a conservative scan. A suspended thread's registers
// come from the ucontext its suspend signal handler received; a thread inside a BlockingScope
// reports the callee-saved registers it had when it entered the scope (every other register is
// dead across the call it is blocked in). Also what access a memory fault was. One backend file
// per OS and architecture.
#pragma once

#include <signal.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace tcr {

struct RegisterSet {
  static constexpr std::size_t kMaxWords = 40;
  std::uintptr_t words[kMaxWords] = {};
  std::size_t count = 0;   // how many of words[] hold registers
  std::uintptr_t sp = 0;   // the stack pointer (also among words[] for signal captures)
  std::uintptr_t pc = 0;   // 0 for a BlockingScope capture

  std::span<const std::uintptr_t> view() const { return {words, count}; }
};

namespace machine {

// Bytes below the stack pointer that a leaf function may use without moving it (x86-64 SysV: 128;
// Darwin arm64: 128; Linux arm64: 0). The kernel leaves them intact when it delivers a signal, so
// a scan of a suspended thread's stack starts that far below its sp.
extern const std::size_t kRedZoneBytes;

// Copies every general-purpose register, sp and pc from a signal handler's ucontext.
// Async-signal-safe: plain loads and stores.
void capture_from_ucontext(const void* ucontext, RegisterSet& out);

// What the faulting instruction tried to do to the memory at info->si_addr, as the CPU reported
// it in the fault's context (x86-64: the page-fault error code; arm64: the ESR's abort class and
// WnR bit). Unknown when the context does not say: a signal sent by kill() or sigqueue(), a fault
// that was not a page fault (a general-protection fault has no error code), an architecture
// without a reader. Async-signal-safe: plain loads.
enum class FaultAccess : std::uint8_t { Read, Write, Execute, Unknown };
FaultAccess fault_access(const void* ucontext, const siginfo_t* info);

// The decoding both OSes share, per architecture.
// x86-64: the trap number and the page-fault error code (bit 1: a write; bit 4: an instruction
// fetch). Another trap (13, a general-protection fault) has no such code.
inline FaultAccess access_from_x86_page_fault(std::uint64_t trapno, std::uint64_t err) {
  if (trapno != 14) return FaultAccess::Unknown;
  if ((err & 0x2) != 0) return FaultAccess::Write;
  if ((err & 0x10) != 0) return FaultAccess::Execute;
  return FaultAccess::Read;
}
// arm64: the ESR's exception class (instruction or data abort, from a lower or the same EL) and,
// for a data abort, WnR (bit 6).
inline FaultAccess access_from_arm64_esr(std::uint64_t esr) {
  const std::uint64_t ec = (esr >> 26) & 0x3f;
  if (ec == 0x20 || ec == 0x21) return FaultAccess::Execute;
  if (ec == 0x24 || ec == 0x25) return (esr & (1u << 6)) != 0 ? FaultAccess::Write : FaultAccess::Read;
  return FaultAccess::Unknown;
}

inline const char* to_string(FaultAccess access) {
  switch (access) {
    case FaultAccess::Read: return "read";
    case FaultAccess::Write: return "write";
    case FaultAccess::Execute: return "execute";
    case FaultAccess::Unknown: return "unknown";
  }
  return "?";
}

// The calling thread's callee-saved registers as its caller has them, and a stack pointer at or
// below the caller's frame. Not inlined, so the values are the caller's.
void capture_callee_saved(RegisterSet& out);

// One spin-wait hint to the CPU (x86: pause; arm64: yield), for busy-wait loops. Async-signal-safe.
void cpu_relax();

}  // namespace machine
}  // namespace tcr
