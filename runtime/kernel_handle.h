// KernelThreadHandle: the per-thread kernel handle, opened once, on the thread it names, and cached
// in its TCR. Linux >= 6.9: a pidfd from pidfd_open(gettid(), PIDFD_THREAD), which names that one
// thread for as long as it is open: signals through it reach that thread or fail with ESRCH, never
// a stranger that reused the tid; poll() on it says the thread has exited. Older kernels: the tid,
// signalled with tgkill only while the thread is known to be registered (SignalPermit). The mode
// is probed once per process (detected_handle_mode) and logged.
// Ownership: the handle is move-only and closes its fd exactly once (HandleTable serials make a
// second close a no-op, even after the fd number is reused).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string_view>

#include "runtime/error.h"
#include "runtime/handle_table.h"

namespace tcr {

enum class HandleMode : std::uint8_t {
  Pidfd,   // pidfd_open(tid, PIDFD_THREAD); pidfd_send_signal; poll for exit
  Tgkill,  // tid + tgkill, valid only while the thread is registered
};
const char* to_string(HandleMode mode);

// Probed on first use: Pidfd when pidfd_open(gettid(), PIDFD_THREAD) works, Tgkill when it fails
// with EINVAL or ENOSYS (kernels before 6.9, or a seccomp filter). Logged once at info.
HandleMode detected_handle_mode();

// Proof that the caller may signal the thread: it holds the lock that keeps the thread registered
// (the ThreadManager's registry lock). Only that layer makes one, by deriving (threads/record.h:
// RegistryPermit); runtime/ names no class of the layers above it.
class SignalPermit {
 protected:
  SignalPermit() = default;
};

class KernelThreadHandle {
 public:
  KernelThreadHandle() = default;
  KernelThreadHandle(KernelThreadHandle&& other) noexcept;
  KernelThreadHandle& operator=(KernelThreadHandle&& other) noexcept;
  KernelThreadHandle(const KernelThreadHandle&) = delete;
  KernelThreadHandle& operator=(const KernelThreadHandle&) = delete;
  ~KernelThreadHandle() { release(); }

  // Opens a handle on the calling thread, tagged with its owner in the HandleTable.
  // Each call opens a new pidfd (like mach_thread_self(), each call is one more reference).
  static Result<KernelThreadHandle> open_current(HandleMode mode, const HandleTag& owner);

  // Sends sig to the thread. Error Step::ThreadExited (ESRCH) once the thread has exited.
  Result<void> signal(int sig, const SignalPermit& permit) const;
  // Pidfd: false once the thread has exited (poll, no wait). Tgkill: whether the tid still exists.
  Result<bool> alive(const SignalPermit& permit) const;
  // Pidfd: waits up to timeout_ms for the thread to exit; true when it has. Tgkill: BadArgument.
  Result<bool> wait_exit(int timeout_ms) const;

  // At the thread's exit, on Linux (threads/shutdown.cpp normalizes the count to one): closes
  // every other pidfd in this handle's owner chain (opened with
  // the same HandleTag::chain), so the thread leaves with exactly one. Returns how many it closed.
  std::size_t close_extras() const;

  // Closes the fd (pidfd mode) exactly once; afterwards the handle is empty.
  void release();

  bool valid() const { return m_tid != 0; }
  HandleMode mode() const { return m_mode; }
  int fd() const { return m_fd; }
  pid_t tid() const { return m_tid; }
  std::uint64_t owner() const { return m_owner; }

 private:
  HandleMode m_mode = HandleMode::Tgkill;
  int m_fd = -1;
  pid_t m_tid = 0;
  std::uint64_t m_serial = 0;  // HandleTable serial of m_fd
  std::uint64_t m_owner = 0;   // tcr id
  HandleChain* m_chain = nullptr;  // the owner's handles (HandleTag::chain)
};

}  // namespace tcr
