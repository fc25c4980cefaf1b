// ThreadStack and AltStack: the memory a thread runs on, owned by its record (threads/record.h).
//
// A spawned thread's stack is one mapping of ours; from low to high:
//   guard page | stack | guard page | alternate signal stack
// The lower guard catches an overflow (a write there becomes Step::StackOverflow on join); the
// alternate stack, where the SIGSEGV/SIGBUS handlers run, sits above the stack so an overflow
// never runs into it, and its own overflow hits the guard below it. One mapping, so a thread
// costs no extra mmap for its alternate stack, and the stack cache (a free record keeping its
// last thread's ThreadStack, bounded by ManagerOptions::cached_stacks) keeps both.
// An adopted thread runs on pthread's stack; it gets an alternate stack of its own (AltStack
// maps one, with a guard page below it).
#pragma once

#include <signal.h>

#include <cstddef>

#include "runtime/error.h"

namespace tcr {

std::size_t page_size();
// The alternate signal stack: room for a fault handler that chains to another runtime's (Boehm's,
// a JVM's) and for the kernel's signal frame with the full vector state (AVX-512: ~3 KiB).
std::size_t alt_stack_bytes();

class ThreadStack {
 public:
  ThreadStack() = default;
  ~ThreadStack() { release(); }
  ThreadStack(const ThreadStack&) = delete;
  ThreadStack& operator=(const ThreadStack&) = delete;

  // Holds a mapping for a stack of `stack_size` bytes (rounded up to pages): the one it holds if
  // its size matches (a cached stack: no mmap, no mprotect), else a fresh one with its guard
  // pages. On failure it holds none (Step::StackMmap or Step::StackGuardMprotect).
  Result<void> prepare(std::size_t stack_size);
  // Unmaps it, if it holds one.
  void release();

  bool mapped() const { return m_map != nullptr; }
  void* guard_low() const { return m_map; }
  void* low() const;
  void* high() const;
  std::size_t size() const { return m_stack; }
  void* alt() const;

 private:
  void* m_map = nullptr;
  std::size_t m_map_size = 0;
  std::size_t m_stack = 0;
};

// The alternate signal stack a thread has installed, the one it replaced, and, for an adopted
// thread, the mapping it lives in.
class AltStack {
 public:
  AltStack() = default;
  ~AltStack() { unmap_own(); }
  AltStack(const AltStack&) = delete;
  AltStack& operator=(const AltStack&) = delete;

  // An adopted thread's own: guard page and stack (Step::AltStackMmap, AltStackGuardMprotect).
  // On failure nothing is left mapped.
  Result<void> map_own();
  // Installs [sp, sp + size) (or the own mapping's, when sp is nullptr) on the calling thread,
  // keeping the one it replaces.
  Result<void> install(void* sp, std::size_t size);
  // Puts the replaced stack back (or disables ours) and unmaps the own mapping. false when the
  // thread is running on the alternate stack now (it exits from inside a signal handler): the
  // kernel refuses to change it then (EPERM), and unmapping it would pull the stack from under
  // the thread, so an own mapping is left mapped for good (the caller says so).
  bool restore();
  // Unmaps the own mapping if it holds one (a failed adoption; the destructor).
  void unmap_own();
  // Unmaps the own mapping and forgets what was installed, without a sigaltstack call: for a
  // thread that does not exist (a fork child's record of a parent's thread).
  void forget();

  void* stack() const { return m_stack; }
  std::size_t size() const { return m_size; }
  bool owns_mapping() const { return m_own != nullptr; }

 private:
  void* m_stack = nullptr;  // installed; nullptr while none of ours is
  std::size_t m_size = 0;
  stack_t m_prev{};
  void* m_own = nullptr;
  std::size_t m_own_size = 0;
};

}  // namespace tcr
