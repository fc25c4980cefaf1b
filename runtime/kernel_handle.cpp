// KernelThreadHandle: a pidfd naming one thread (PIDFD_THREAD, Linux >= 6.9), or the bare thread
// id signalled under the registry lock where thread pidfds are not available (older Linux: tid and
// tgkill; Darwin: the Mach thread port name and pthread_kill, see os_darwin.cpp). Portable: the
// platform differences live in the os shim.
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <utility>

#include "runtime/kernel_handle.h"
#include "runtime/log.h"
#include "runtime/os.h"

namespace tcr {

const char* to_string(HandleMode mode) {
  return mode == HandleMode::Pidfd ? "pidfd (PIDFD_THREAD)"
                                   : "tgkill (thread id, signalled under the registry lock)";
}

HandleMode detected_handle_mode() {
  static const HandleMode s_mode = [] {
    // Probe on the calling thread. EINVAL: the kernel predates PIDFD_THREAD (6.9) and rejects the
    // flag; ENOSYS: no pidfd_open at all (or a seccomp filter says so). Any other failure (EMFILE
    // right now, say) says nothing about the kernel, so thread pidfds stay the choice and the
    // per-thread open reports its own error.
    HandleMode mode = HandleMode::Pidfd;
    Result<int> fd = os::pidfd_open(os::gettid(), os::kPidfdThread);
    if (fd) {
      os::close(*fd);
    } else if (fd.error().code == EINVAL || fd.error().code == ENOSYS) {
      mode = HandleMode::Tgkill;
    }
    log::info("kernel thread handles: {}{}", to_string(mode),
              fd ? "" : (" (probe: " + fd.error().message() + ")"));
    return mode;
  }();
  return s_mode;
}

KernelThreadHandle::KernelThreadHandle(KernelThreadHandle&& other) noexcept
    : m_mode(other.m_mode),
      m_fd(std::exchange(other.m_fd, -1)),
      m_tid(std::exchange(other.m_tid, 0)),
      m_serial(std::exchange(other.m_serial, 0)),
      m_owner(std::exchange(other.m_owner, 0)),
      m_chain(std::exchange(other.m_chain, nullptr)) {}

KernelThreadHandle& KernelThreadHandle::operator=(KernelThreadHandle&& other) noexcept {
  if (this != &other) {
    release();
    m_mode = other.m_mode;
    m_fd = std::exchange(other.m_fd, -1);
    m_tid = std::exchange(other.m_tid, 0);
    m_serial = std::exchange(other.m_serial, 0);
    m_owner = std::exchange(other.m_owner, 0);
    m_chain = std::exchange(other.m_chain, nullptr);
  }
  return *this;
}

Result<KernelThreadHandle> KernelThreadHandle::open_current(HandleMode mode,
                                                            const HandleTag& owner) {
  KernelThreadHandle h;
  h.m_mode = mode;
  h.m_tid = os::gettid();
  h.m_owner = owner.tcr_id;
  h.m_chain = owner.chain;
  if (mode == HandleMode::Pidfd) {
    Result<HandleTable::Opened> opened = HandleTable::instance().open(
        HandleKind::Pidfd, owner, h.m_tid,
        [](void* tid) { return os::pidfd_open(*static_cast<pid_t*>(tid), os::kPidfdThread); },
        &h.m_tid);
    if (!opened) {
      h.m_tid = 0;
      return std::unexpected(opened.error());
    }
    h.m_fd = opened->fd;
    h.m_serial = opened->serial;
  }
  return h;
}

Result<void> KernelThreadHandle::signal(int sig, const SignalPermit&) const {
  if (!valid()) return fail(Step::ThreadExited, ESRCH, "empty kernel handle");
  if (m_mode == HandleMode::Pidfd) return os::pidfd_send_signal(m_fd, sig);
  // Safe only because the permit proves the thread is still registered, so its tid is still its.
  return os::tgkill(getpid(), m_tid, sig);
}

Result<bool> KernelThreadHandle::alive(const SignalPermit& permit) const {
  if (!valid()) return false;
  if (m_mode == HandleMode::Pidfd) {
    Result<bool> exited = os::poll_readable(m_fd, 0);
    if (!exited) return std::unexpected(exited.error());
    return !*exited;
  }
  Result<void> r = signal(0, permit);
  if (r) return true;
  if (r.error().step == Step::ThreadExited) return false;
  return std::unexpected(r.error());
}

Result<bool> KernelThreadHandle::wait_exit(int timeout_ms) const {
  if (m_mode != HandleMode::Pidfd || !valid()) {
    return fail(Step::BadArgument, 0, "wait_exit needs a pidfd handle");
  }
  return os::poll_readable(m_fd, timeout_ms);
}

std::size_t KernelThreadHandle::close_extras() const {
  if (m_mode != HandleMode::Pidfd || !valid() || m_chain == nullptr) return 0;
  return HandleTable::instance().close_others(*m_chain, HandleKind::Pidfd, m_fd);
}

void KernelThreadHandle::release() {
  if (m_fd >= 0) HandleTable::instance().close(m_fd, m_serial);
  m_fd = -1;
  m_tid = 0;
  m_serial = 0;
}

}  // namespace tcr
