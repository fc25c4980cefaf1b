// Fault injection for the OS shim, and the calls that POSIX spells the same everywhere; the
// others live in os_<platform>.cpp.
#include <errno.h>
#include <signal.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>

#include "runtime/os.h"

namespace tcr::os {
namespace {

struct Plan {
  std::atomic<std::uint64_t> calls{0};
  // Calls numbered [first, first + times) fail; 0 means disarmed.
  std::atomic<std::uint64_t> first{0};
  std::atomic<std::uint64_t> times{0};
  std::atomic<int> err{0};
};

Plan g_plans[static_cast<std::size_t>(Call::kCount)];
std::atomic<bool> g_any_armed{false};

Plan& plan(Call call) { return g_plans[static_cast<std::size_t>(call)]; }

}  // namespace

const char* to_string(Call call) {
  switch (call) {
    case Call::PthreadCreate: return "pthread_create";
    case Call::Mmap: return "mmap";
    case Call::Mprotect: return "mprotect";
    case Call::PidfdOpen: return "pidfd_open";
    case Call::PidfdSendSignal: return "pidfd_send_signal";
    case Call::Tgkill: return "tgkill";
    case Call::Poll: return "poll";
    case Call::GcRegister: return "GC_register_my_thread";
    case Call::Sigaltstack: return "sigaltstack";
    case Call::Userfaultfd: return "userfaultfd";
    case Call::UffdIoctl: return "ioctl (userfaultfd)";
    case Call::PagemapScan: return "PAGEMAP_SCAN";
    case Call::Eventfd: return "eventfd";
    case Call::ProcMaps: return "reading /proc/thread-self/maps";
    case Call::kCount: break;
  }
  return "?";
}

void fail_nth(Call call, std::uint64_t nth, int err, std::uint64_t times) {
  Plan& p = plan(call);
  p.first.store(0, std::memory_order_relaxed);  // disarm while rewriting
  p.err.store(err, std::memory_order_relaxed);
  p.times.store(times, std::memory_order_relaxed);
  // The call counter is global; "the nth from now" is relative to the count at arming time.
  p.first.store(p.calls.load(std::memory_order_relaxed) + nth, std::memory_order_release);
  g_any_armed.store(true, std::memory_order_release);
}

void clear_faults() {
  g_any_armed.store(false, std::memory_order_release);
  for (Plan& p : g_plans) p.first.store(0, std::memory_order_release);
}

std::uint64_t call_count(Call call) { return plan(call).calls.load(std::memory_order_relaxed); }

int take_fault(Call call) {
  Plan& p = plan(call);
  const std::uint64_t number = p.calls.fetch_add(1, std::memory_order_relaxed) + 1;
  if (!g_any_armed.load(std::memory_order_acquire)) return 0;
  const std::uint64_t first = p.first.load(std::memory_order_acquire);
  if (first == 0 || number < first || number >= first + p.times.load(std::memory_order_relaxed)) {
    return 0;
  }
  return p.err.load(std::memory_order_relaxed);
}

// ---- POSIX calls --------------------------------------------------------------------------------

Result<pthread_t> pthread_create(const pthread_attr_t* attr, void* (*start)(void*), void* arg) {
  if (int e = take_fault(Call::PthreadCreate)) return fail(Step::PthreadCreate, e);
  pthread_t thread;
  if (int e = ::pthread_create(&thread, attr, start, arg)) return fail(Step::PthreadCreate, e);
  return thread;
}

void munmap(void* addr, std::size_t length) { ::munmap(addr, length); }

Result<void> mprotect(void* addr, std::size_t length, int prot, Step step) {
  if (int e = take_fault(Call::Mprotect)) return fail(step, e);
  if (::mprotect(addr, length, prot) != 0) return fail(step, errno);
  return {};
}

Result<bool> poll_readable(int fd, int timeout_ms) {
  if (int e = take_fault(Call::Poll)) return fail(Step::PidfdPoll, e);
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    const int n = ::poll(&p, 1, timeout_ms);
    if (n >= 0) return n > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
    if (errno != EINTR) return fail(Step::PidfdPoll, errno);
  }
}

Result<stack_t> sigaltstack(const stack_t& stack) {
  if (int e = take_fault(Call::Sigaltstack)) return fail(Step::Sigaltstack, e);
  stack_t old{};
  if (::sigaltstack(&stack, &old) != 0) return fail(Step::Sigaltstack, errno);
  return old;
}

Result<void> uffd_ioctl(int fd, unsigned long request, void* arg, const char* what) {
  if (int e = take_fault(Call::UffdIoctl)) return fail_fixed(Step::UffdIoctl, e, what);
  for (;;) {
    if (::ioctl(fd, request, arg) == 0) return {};
    if (errno != EINTR) return fail_fixed(Step::UffdIoctl, errno, what);
  }
}

// Not retried on EINTR: Linux has released the fd by then, and the number may already be reused.
void close(int fd) { ::close(fd); }

}  // namespace tcr::os
