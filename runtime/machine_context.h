// The register state of a stopped thread, for a conservative scan. A suspended thread's registers
// come from the ucontext its suspend signal handler received; a thread inside a BlockingScope
// reports the callee-saved registers it had when it entered the scope (every other register is
// dead across the call it is blocked in). One backend file per OS and architecture.
#pragma once

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

// The calling thread's callee-saved registers as its caller has them, and a stack pointer at or
// below the caller's frame. Not inlined, so the values are the caller's.
void capture_callee_saved(RegisterSet& out);

// One spin-wait hint to the CPU (x86: pause; arm64: yield), for busy-wait loops. Async-signal-safe.
void cpu_relax();

}  // namespace machine
}  // namespace tcr
