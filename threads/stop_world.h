// Stop the world for a conservative collector: ThreadManager::suspend_all() stops every other
// thread in the manager's registry and hands back a StoppedWorld that lists each one with its
// registers and the stack range to scan; ThreadManager::resume_all() lets them go.
// The handshake (threads/stop_world.cpp): the initiator bumps an epoch, asks each thread for it
// and signals it through the thread's cached kernel handle; the thread's handler copies its
// registers from the signal's ucontext, posts the thread's own acknowledgement semaphore and
// sleeps on the manager's resume word until resume_all() publishes that epoch. A queued real-time
// signal is never lost, so it is sent once; only one the full queue refused (EAGAIN,
// RLIMIT_SIGPENDING) is sent again after timed waits on that semaphore, for at most 2 s, and then
// the stop fails with that error rather than wait for a signal that cannot be sent.
// While the world is stopped the caller holds Boehm GC's allocation lock (when the manager uses
// the GC): it must not allocate from the GC heap, nor call malloc-heavy code a stopped thread
// might hold a lock in. The registry lock is free; spawns and exits wait at a gate until resume.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "runtime/machine_context.h"

namespace tcr {

class Tcr;
class ManagerCore;

// The signals tcr took for itself, chosen once per process at the first manager's creation so
// that they collide neither with Boehm GC's suspend/restart signals nor with any handler the
// application installed before; the choice is logged at info.
struct ManagerSignals {
  int suspend = 0;
  int interrupt = 0;
};

enum class StopKind : std::uint8_t {
  // Stopped in the suspend handler: registers from its ucontext, stack from sp (less the red zone).
  Suspended,
  // Inside a BlockingScope: not signalled. Registers are the callee-saved ones at scope entry,
  // the stack starts at the scope's entry sp; it cannot leave the scope until resume_all().
  Blocking,
  // Acknowledged from shutdown_thread_tcr (block_handshakes): its function has returned and its
  // result sits in a GC-visible slot, so it has no stack or registers to scan. It leaves the
  // registry after resume.
  Exiting,
};
const char* to_string(StopKind kind);

struct StoppedThread {
  const Tcr* tcr = nullptr;
  std::uint64_t id = 0;
  pid_t tid = 0;
  StopKind kind = StopKind::Suspended;
  RegisterSet registers;
  // [stack_low, stack_high): what a conservative scan reads. Empty for Exiting threads.
  const void* stack_low = nullptr;
  const void* stack_high = nullptr;

  std::span<const std::uintptr_t> stack_words() const {
    return {static_cast<const std::uintptr_t*>(stack_low),
            static_cast<const std::uintptr_t*>(stack_high)};
  }
};

// A view of the stopped world, valid until the matching resume_all().
class StoppedWorld {
 public:
  std::span<const StoppedThread> threads() const { return m_threads; }
  std::uint64_t epoch() const { return m_epoch; }
  unsigned depth() const { return m_depth; }  // nesting level this suspend_all() reached

 private:
  friend class ThreadManager;
  StoppedWorld(std::span<const StoppedThread> threads, std::uint64_t epoch, unsigned depth)
      : m_threads(threads), m_epoch(epoch), m_depth(depth) {}
  std::span<const StoppedThread> m_threads;
  std::uint64_t m_epoch;
  unsigned m_depth;
};

// A region in which the calling thread does not touch the GC heap (the runtime's foreign call or
// blocking system call). A stop-the-world does not signal a thread in one: it reports the
// registers and stack pointer saved at entry instead, and the thread waits at the scope's end
// until the world resumes. Scopes nest; on a thread tcr does not know it does nothing.
// Interrupts queued meanwhile run when the outermost scope ends (a safe point), not inside it.
class BlockingScope {
 public:
  // Always inlined, so the registers captured are the caller's own: its callee-saved registers
  // keep these values across the blocking call, and everything else it holds is in its frame,
  // above the captured stack pointer.
  [[gnu::always_inline]] BlockingScope() {
    machine::capture_callee_saved(m_regs);
    m_tcr = enter(&m_regs);
  }
  ~BlockingScope() {
    if (m_tcr != nullptr) leave(m_tcr);
  }
  BlockingScope(const BlockingScope&) = delete;
  BlockingScope& operator=(const BlockingScope&) = delete;

  // The scope's two halves, for a binding that cannot hold a C++ object across the region (C's
  // TCR_BLOCKING_BEGIN/END): enter with registers captured in (or spilled to) the caller's frame,
  // kept alive until the matching leave, on the same thread; leave what enter answered (nullptr
  // is a no-op).
  static Tcr* enter(const RegisterSet* regs);
  static void leave(Tcr* t);

 private:
  RegisterSet m_regs;
  Tcr* m_tcr;
};

}  // namespace tcr
