#include "exceptions/uffd_linux.h"

#include <errno.h>
#include <sys/ioctl.h>

#include <atomic>
#include <string>

#include "runtime/log.h"
#include "runtime/os.h"

namespace tcr::detail {
namespace {

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return buf;
}

Result<int> open_fd(bool* user_mode_only) {
  *user_mode_only = false;
  Result<int> fd = os::userfaultfd(0);
  if (!fd && fd.error().code == EPERM) {
    fd = os::userfaultfd(UFFD_USER_MODE_ONLY);
    if (fd) *user_mode_only = true;
  }
  return fd;
}

}  // namespace

Result<Uffd> open_uffd(std::uint64_t required, std::uint64_t wanted, const char* purpose) {
  // The features the kernel offers: UFFDIO_API may be called once per fd, so ask on a probe fd.
  bool user_mode_only = false;
  Result<int> probe = open_fd(&user_mode_only);
  if (!probe) return std::unexpected(probe.error());
  uffdio_api api{};
  api.api = UFFD_API;
  Result<void> asked = os::uffd_ioctl(*probe, UFFDIO_API, &api, "UFFDIO_API");
  os::close(*probe);
  if (!asked) return std::unexpected(asked.error());
  const std::uint64_t offered = api.features;
  if ((offered & required) != required) {
    return fail(Step::ModeUnavailable, 0,
                std::string(purpose) + ": the kernel's userfaultfd lacks features " +
                    hex(required & ~offered));
  }
  Result<int> fd = open_fd(&user_mode_only);
  if (!fd) return std::unexpected(fd.error());
  api = uffdio_api{};
  api.api = UFFD_API;
  api.features = required | (wanted & offered);
  if (Result<void> r = os::uffd_ioctl(*fd, UFFDIO_API, &api, "UFFDIO_API"); !r) {
    os::close(*fd);
    return std::unexpected(r.error());
  }
  static std::atomic<bool> s_said_user_mode{false};
  if (user_mode_only && !s_said_user_mode.exchange(true)) {
    log::info("userfaultfd opened with UFFD_USER_MODE_ONLY (unprivileged): a system call that "
              "writes into a protected page fails with EFAULT instead of trapping");
  }
  return Uffd{*fd, required | (wanted & offered), user_mode_only};
}

Result<void> uffd_register_wp(int fd, void* base, std::size_t length) {
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<std::uint64_t>(base);
  reg.range.len = length;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (Result<void> r = os::uffd_ioctl(fd, UFFDIO_REGISTER, &reg, "UFFDIO_REGISTER"); !r) {
    if (r.error().code == EINVAL) {
      // create() has checked that the range is mapped and writable: what is left is the kind
      // of memory, which the kernel decides (by version and configuration).
      Error e = r.error();
      e.detail = "the kernel does not write-protect this kind of memory (private anonymous "
                 "memory it always does; shmem, and file mappings with WP_ASYNC, on recent kernels)";
      return std::unexpected(std::move(e));
    }
    return r;
  }
  if ((reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT)) == 0) {
    uffd_unregister(fd, base, length);
    return fail(Step::ModeUnavailable, 0, "UFFDIO_WRITEPROTECT is not offered for this memory");
  }
  return {};
}

Result<void> uffd_write_protect(int fd, void* base, std::size_t length, bool on) {
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<std::uint64_t>(base);
  wp.range.len = length;
  wp.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  return os::uffd_ioctl(fd, UFFDIO_WRITEPROTECT, &wp, on ? "UFFDIO_WRITEPROTECT" : "UFFDIO_WRITEPROTECT (off)");
}

void uffd_wake(int fd, void* base, std::size_t length) {
  uffdio_range range{reinterpret_cast<std::uint64_t>(base), length};
  ::ioctl(fd, UFFDIO_WAKE, &range);
}

void uffd_unregister(int fd, void* base, std::size_t length) {
  // Write-protect-only registrations are not woken by UFFDIO_UNREGISTER (the kernel wakes only
  // missing-mode waiters there), so: unprotect (wakes the blocked), unregister, and wake whoever
  // queued a fault in between.
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<std::uint64_t>(base);
  wp.range.len = length;
  wp.mode = 0;
  ::ioctl(fd, UFFDIO_WRITEPROTECT, &wp);
  uffdio_range range{reinterpret_cast<std::uint64_t>(base), length};
  ::ioctl(fd, UFFDIO_UNREGISTER, &range);
  uffd_wake(fd, base, length);
}

}  // namespace tcr::detail
