// The OS shim's fault hook, and the calls that POSIX spells the same everywhere; the others live
// in os_<platform>.cpp.
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

// Set once, in a binary that links tcr_testing, by a static initializer: on the main thread before
// main, so before any other thread exists. Hence relaxed, load and store.
std::atomic<FaultHook> g_fault_hook{nullptr};

}  // namespace

const char* to_string(Call call) {
  switch (call) {
#define TCR_OS_CALL_TEXT(name, text) case Call::name: return text;
    TCR_OS_CALLS(TCR_OS_CALL_TEXT)
#undef TCR_OS_CALL_TEXT
    case Call::kCount: break;
  }
  return "?";
}

int take_fault(Call call) {
  const FaultHook hook = g_fault_hook.load(std::memory_order_relaxed);
  return hook == nullptr ? 0 : hook(call);
}

void set_fault_hook(FaultHook hook) { g_fault_hook.store(hook, std::memory_order_relaxed); }

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
