// The OS shim's Darwin calls. Compiled only on Apple: this file is not built on the Linux machine
// the project is tested on. Darwin has no pidfds: pidfd calls answer ENOSYS, so
// detected_handle_mode() picks the thread-id mode, in which a thread's "tid" is its Mach thread
// port name (pthread_mach_thread_np, which adds no send-right reference) and a signal goes through
// pthread_kill on the pthread that port names, only under the registry lock (SignalPermit).
#include <errno.h>
#include <mach/mach.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "runtime/os.h"

// libc++'s std::atomic::wait is built on these; they are stable system calls, not in a header.
extern "C" int __ulock_wait(std::uint32_t operation, void* addr, std::uint64_t value,
                            std::uint32_t timeout_us);
extern "C" int __ulock_wake(std::uint32_t operation, void* addr, std::uint64_t wake_value);

namespace tcr::os {
namespace {
constexpr std::uint32_t kUlCompareAndWait = 1;
constexpr std::uint32_t kUlfWakeAll = 0x100;
constexpr std::uint32_t kUlfNoErrno = 0x01000000;
}  // namespace

Result<void*> mmap_anonymous(std::size_t length, int prot, bool /*stack*/, Step step) {
  if (int e = take_fault(Call::Mmap)) return fail(step, e);
  void* p = ::mmap(nullptr, length, prot, MAP_PRIVATE | MAP_ANON, -1, 0);
  if (p == MAP_FAILED) return fail(step, errno);
  return p;
}

Result<int> pidfd_open(pid_t, unsigned) {
  if (int e = take_fault(Call::PidfdOpen)) return fail(Step::PidfdOpen, e);
  return fail(Step::PidfdOpen, ENOSYS, "Darwin has no pidfds");
}

Result<void> pidfd_send_signal(int, int) {
  if (int e = take_fault(Call::PidfdSendSignal)) return fail(Step::PidfdSendSignal, e);
  return fail(Step::PidfdSendSignal, ENOSYS, "Darwin has no pidfds");
}

Result<void> tgkill(pid_t, pid_t tid, int sig) {
  if (int e = take_fault(Call::Tgkill)) return fail(Step::Tgkill, e);
  pthread_t thread = ::pthread_from_mach_thread_np(static_cast<mach_port_t>(tid));
  if (thread == nullptr) return fail(Step::ThreadExited, ESRCH);
  if (int e = ::pthread_kill(thread, sig)) {
    return fail(e == ESRCH ? Step::ThreadExited : Step::Tgkill, e);
  }
  return {};
}

// userfaultfd, PAGEMAP_SCAN and eventfd are Linux's: a ProtectedRegion on Darwin uses the Mach
// exception port (Listener) or the signal path, and these say so if asked.
Result<int> userfaultfd(int) { return fail(Step::Userfaultfd, ENOSYS); }
Result<int> open_pagemap() { return fail(Step::PagemapScan, ENOSYS, "no /proc/self/pagemap"); }
Result<long> pagemap_scan(int, void*) { return fail(Step::PagemapScan, ENOSYS); }
Result<int> eventfd() { return fail(Step::Eventfd, ENOSYS); }
Result<int> open_proc_maps() { return fail(Step::RegionMappings, ENOSYS, "no /proc"); }
Result<std::size_t> read_proc_maps(int, char*, std::size_t) {
  return fail(Step::RegionMappings, ENOSYS, "no /proc");
}

pid_t gettid() { return static_cast<pid_t>(::pthread_mach_thread_np(::pthread_self())); }

TryJoin try_join(pthread_t thread) {
  // No try-join on Darwin; see os.h.
  return ::pthread_join(thread, nullptr) == EINVAL ? TryJoin::NotJoinable : TryJoin::Joined;
}

void set_current_thread_name(const char* name) { ::pthread_setname_np(name); }

bool current_stack_bounds(void** low, void** high) {
  pthread_t self = ::pthread_self();
  char* top = static_cast<char*>(::pthread_get_stackaddr_np(self));
  *high = top;
  *low = top - ::pthread_get_stacksize_np(self);
  return true;
}

void wait_on_address(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                     std::int64_t timeout_ns) {
  const std::uint32_t timeout_us =
      timeout_ns < 0 ? 0 : static_cast<std::uint32_t>(timeout_ns / 1000 + 1);
  __ulock_wait(kUlCompareAndWait | kUlfNoErrno, word, expected, timeout_us);
}

void wake_address(std::atomic<std::uint32_t>* word, bool all) {
  __ulock_wake(kUlCompareAndWait | kUlfNoErrno | (all ? kUlfWakeAll : 0), word, 0);
}

std::vector<int> candidate_manager_signals() { return {SIGUSR2, SIGUSR1}; }

std::vector<int> collector_default_signals() { return {SIGXCPU}; }

}  // namespace tcr::os
