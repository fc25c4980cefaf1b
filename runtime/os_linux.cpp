// The OS shim's Linux calls. Every acquisition consults take_fault() first.
#include <errno.h>
#include <linux/futex.h>
#include <time.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "runtime/os.h"

namespace tcr::os {

Result<void*> mmap_anonymous(std::size_t length, int prot, bool stack, Step step) {
  if (int e = take_fault(Call::Mmap)) return fail(step, e);
  const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (stack ? MAP_STACK : 0);
  void* p = ::mmap(nullptr, length, prot, flags, -1, 0);
  if (p == MAP_FAILED) return fail(step, errno);
  return p;
}

Result<int> pidfd_open(pid_t tid, unsigned flags) {
  if (int e = take_fault(Call::PidfdOpen)) return fail(Step::PidfdOpen, e);
  const long fd = ::syscall(SYS_pidfd_open, tid, flags);
  if (fd < 0) return fail(Step::PidfdOpen, errno);
  return static_cast<int>(fd);
}

Result<void> pidfd_send_signal(int pidfd, int sig) {
  if (int e = take_fault(Call::PidfdSendSignal)) return fail(Step::PidfdSendSignal, e);
  if (::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) != 0) {
    return fail(errno == ESRCH ? Step::ThreadExited : Step::PidfdSendSignal, errno);
  }
  return {};
}

Result<void> tgkill(pid_t tgid, pid_t tid, int sig) {
  if (int e = take_fault(Call::Tgkill)) return fail(Step::Tgkill, e);
  if (::syscall(SYS_tgkill, tgid, tid, sig) != 0) {
    return fail(errno == ESRCH ? Step::ThreadExited : Step::Tgkill, errno);
  }
  return {};
}

Result<int> userfaultfd(int flags) {
  if (int e = take_fault(Call::Userfaultfd)) return fail(Step::Userfaultfd, e);
  const long fd = ::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | flags);
  if (fd < 0) return fail(Step::Userfaultfd, errno);
  return static_cast<int>(fd);
}

Result<int> open_pagemap() {
  if (int e = take_fault(Call::PagemapScan)) return fail(Step::PagemapScan, e, "open");
  const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(Step::PagemapScan, errno, "open /proc/self/pagemap");
  return fd;
}

Result<long> pagemap_scan(int fd, void* arg) {
  // PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg) (Linux 6.7); the struct is 12 u64s.
  constexpr unsigned long kPagemapScan = _IOWR('f', 16, std::uint64_t[12]);
  if (int e = take_fault(Call::PagemapScan)) return fail(Step::PagemapScan, e);
  for (;;) {
    const long n = ::ioctl(fd, kPagemapScan, arg);
    if (n >= 0) return n;
    if (errno != EINTR) return fail(Step::PagemapScan, errno);
  }
}

Result<int> open_proc_maps() {
  if (int e = take_fault(Call::ProcMaps)) {
    return fail_fixed(Step::RegionMappings, e, "open /proc/thread-self/maps");
  }
  int fd = ::open("/proc/thread-self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);  // < 3.17
  if (fd < 0) return fail_fixed(Step::RegionMappings, errno, "open /proc/thread-self/maps");
  return fd;
}

Result<std::size_t> read_proc_maps(int fd, char* buf, std::size_t size) {
  if (int e = take_fault(Call::ProcMaps)) return fail_fixed(Step::RegionMappings, e, "read");
  for (;;) {
    const ssize_t n = ::read(fd, buf, size);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EINTR) return fail_fixed(Step::RegionMappings, errno, "read");
  }
}

Result<int> eventfd() {
  if (int e = take_fault(Call::Eventfd)) return fail(Step::Eventfd, e);
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return fail(Step::Eventfd, errno);
  return fd;
}

pid_t gettid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

TryJoin try_join(pthread_t thread) {
  const int rc = ::pthread_tryjoin_np(thread, nullptr);
  if (rc == EBUSY) return TryJoin::Running;
  if (rc == EINVAL) return TryJoin::NotJoinable;
  return TryJoin::Joined;  // 0, or ESRCH: nothing left to join
}

void set_current_thread_name(const char* name) {
  char buf[16];  // the kernel's limit, with the NUL
  std::strncpy(buf, name, sizeof buf - 1);
  buf[sizeof buf - 1] = '\0';
  ::pthread_setname_np(::pthread_self(), buf);
}

bool current_stack_bounds(void** low, void** high) {
  pthread_attr_t attr;
  if (::pthread_getattr_np(::pthread_self(), &attr) != 0) return false;
  std::size_t size = 0;
  const bool ok = ::pthread_attr_getstack(&attr, low, &size) == 0;
  ::pthread_attr_destroy(&attr);
  if (ok) *high = static_cast<char*>(*low) + size;
  return ok;
}

void wait_on_address(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                     std::int64_t timeout_ns) {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  timespec ts{};
  if (timeout_ns >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout_ns / 1000000000);
    ts.tv_nsec = static_cast<long>(timeout_ns % 1000000000);
  }
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected,
            timeout_ns >= 0 ? &ts : nullptr, nullptr, 0);
}

void wake_address(std::atomic<std::uint32_t>* word, bool all) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE_PRIVATE,
            all ? INT32_MAX : 1, nullptr, nullptr, 0);
}

std::vector<int> candidate_manager_signals() {
  std::vector<int> out;
  for (int sig = SIGRTMAX; sig >= SIGRTMIN; --sig) out.push_back(sig);
  return out;
}

std::vector<int> collector_default_signals() { return {SIGPWR, SIGXCPU}; }

}  // namespace tcr::os
