// userfaultfd plumbing shared by the Listener backend (listener_linux.cpp) and the Async tracker
// (async_linux.cpp), plus the constants Debian 12's kernel headers (6.1) predate. Linux only.
#pragma once

#include <linux/userfaultfd.h>

#include <cstdint>

#include "runtime/error.h"

namespace tcr::detail {

// Linux 6.4 and 6.7 (include/uapi/linux/userfaultfd.h).
inline constexpr std::uint64_t kUffdFeatureWpUnpopulated = 1ull << 13;
inline constexpr std::uint64_t kUffdFeatureWpAsync = 1ull << 15;

struct Uffd {
  int fd = -1;
  std::uint64_t features = 0;  // the features enabled on fd
  bool user_mode_only = false;
};

// Opens a userfaultfd with every feature in `required` and those of `wanted` the kernel has.
// Tries a full one first and, on EPERM (an unprivileged process, vm.unprivileged_userfaultfd=0),
// one with UFFD_USER_MODE_ONLY (faults raised by the kernel itself, a read(2) into a protected
// page, are then not ours: that call fails with EFAULT). Step::ModeUnavailable when the kernel
// lacks a required feature. The fd is O_CLOEXEC | O_NONBLOCK and owned by the caller.
Result<Uffd> open_uffd(std::uint64_t required, std::uint64_t wanted, const char* purpose);

// UFFDIO_REGISTER in write-protect mode; checks that UFFDIO_WRITEPROTECT is offered for it.
Result<void> uffd_register_wp(int fd, void* base, std::size_t length);
// UFFDIO_WRITEPROTECT: on, or off (which wakes threads blocked on those pages).
Result<void> uffd_write_protect(int fd, void* base, std::size_t length, bool on);
// Releases: unprotect, unregister, wake what is still blocked. Errors are ignored (nothing to do
// about them, and the range stops being ours either way).
void uffd_unregister(int fd, void* base, std::size_t length);
void uffd_wake(int fd, void* base, std::size_t length);

}  // namespace tcr::detail
