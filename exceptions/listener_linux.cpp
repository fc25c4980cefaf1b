// ExceptionListener's Linux backend: one userfaultfd in synchronous write-protect mode (the
// faulting thread sleeps in the kernel until we unprotect or wake) and an eventfd that wakes the
// listener for control. Fault messages carry the faulting tid (UFFD_FEATURE_THREAD_ID).
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include <memory>
#include <new>

#include "exceptions/listener_backend.h"
#include "exceptions/uffd_linux.h"
#include "runtime/os.h"

namespace tcr::detail {
namespace {

class UffdListenerBackend final : public ListenerBackend {
 public:
  UffdListenerBackend(Uffd uffd, int event_fd) : m_uffd(uffd), m_event_fd(event_fd) {}
  ~UffdListenerBackend() override {
    os::close(m_uffd.fd);
    os::close(m_event_fd);
  }

  // userfaultfd write-protection leaves the protection alone: the layout is not needed.
  Result<void> register_range(void* base, std::size_t length, const RangeLayout&) override {
    return uffd_register_wp(m_uffd.fd, base, length);
  }

  void unregister_range(void* base, std::size_t length) override {
    uffd_unregister(m_uffd.fd, base, length);
  }

  Result<void> write_protect(void* base, std::size_t length, bool on) override {
    if (on && (m_uffd.features & kUffdFeatureWpUnpopulated) == 0) {
      // Without WP_UNPOPULATED a page never touched has no page-table entry to mark, and its
      // first write would not trap: map the zero page under each by reading it.
      const char* p = static_cast<const char*>(base);
      const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
      for (std::size_t off = 0; off < length; off += page) {
        (void)*static_cast<const volatile char*>(p + off);
      }
    }
    return uffd_write_protect(m_uffd.fd, base, length, on);
  }

  Result<std::size_t> receive(FaultMessage* out, std::size_t max, bool* stopped) override {
    *stopped = false;
    uffd_msg msgs[64];
    if (max > 64) max = 64;
    for (int spin = 0;; ++spin) {
      // A short spin on the non-blocking fd before sleeping in poll: a GC's barrier faults come
      // in bursts, and a listener already awake saves the faulting thread one wake-up latency.
      if (spin < kSpinReads) {
        const ssize_t got = ::read(m_uffd.fd, msgs, max * sizeof(uffd_msg));
        if (got > 0) {
          if (std::size_t n = convert(msgs, static_cast<std::size_t>(got), out)) return n;
          continue;
        }
        if (got < 0 && errno != EAGAIN && errno != EINTR) return fail(Step::UffdIoctl, errno, "read");
        continue;
      }
      pollfd fds[2] = {{m_uffd.fd, POLLIN, 0}, {m_event_fd, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return fail(Step::UffdIoctl, errno, "poll");
      }
      if ((fds[1].revents & POLLIN) != 0) {
        std::uint64_t value;
        (void)::read(m_event_fd, &value, sizeof value);
        *stopped = true;
        return std::size_t{0};
      }
      if ((fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) {
        return fail(Step::UffdIoctl, EIO, "poll: the userfaultfd reported an error");
      }
      const ssize_t got = ::read(m_uffd.fd, msgs, max * sizeof(uffd_msg));
      if (got < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        return fail(Step::UffdIoctl, errno, "read");
      }
      if (std::size_t n = convert(msgs, static_cast<std::size_t>(got), out)) return n;
      spin = 0;  // awake again: spin before the next sleep
    }
  }

  void resume(const FaultMessage& message, FaultOutcome outcome) override {
    // Resolved: unprotecting the page woke every thread blocked on it.
    if (outcome == FaultOutcome::Resolved) return;
    const std::uintptr_t page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
    const std::uintptr_t addr = reinterpret_cast<std::uintptr_t>(message.address) & ~(page - 1);
    uffd_wake(m_uffd.fd, reinterpret_cast<void*>(addr), page);
  }

  void request_stop() override {
    const std::uint64_t one = 1;
    (void)::write(m_event_fd, &one, sizeof one);
  }

 private:
  static constexpr int kSpinReads = 200;

  static std::size_t convert(const uffd_msg* msgs, std::size_t bytes, FaultMessage* out) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < bytes / sizeof(uffd_msg); ++i) {
      if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
      out[n].address = reinterpret_cast<void*>(msgs[i].arg.pagefault.address);
      out[n].tid = static_cast<pid_t>(msgs[i].arg.pagefault.feat.ptid);
      out[n].tcr = nullptr;
      out[n].token = 0;  // no reply to owe: unprotecting or UFFDIO_WAKE lets the thread go
      ++n;
    }
    return n;
  }

  Uffd m_uffd;
  int m_event_fd;
};

}  // namespace

Result<std::unique_ptr<ListenerBackend>> ListenerBackend::open() {
  Result<Uffd> uffd = open_uffd(UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_PAGEFAULT_FLAG_WP,
                                kUffdFeatureWpUnpopulated, "the exception listener");
  if (!uffd) return std::unexpected(uffd.error());
  Result<int> event_fd = os::eventfd();
  if (!event_fd) {
    os::close(uffd->fd);
    return std::unexpected(event_fd.error());
  }
  try {
    return std::make_unique<UffdListenerBackend>(*uffd, *event_fd);
  } catch (const std::bad_alloc&) {
    os::close(*event_fd);
    os::close(uffd->fd);
    return fail(Step::RegionAllocate, ENOMEM, "the exception listener");
  }
}

}  // namespace tcr::detail
