// tcr::os: the thin shim every resource-acquiring OS call in tcr goes through.
// Each call returns Result<T> whose Error names the call and carries errno. Each acquisition asks
// take_fault() first, so that tests (tcr_testing's testing/fault_injection.h, not installed) can
// make the Nth call of a given kind fail with a chosen errno and prove each error path is clear and
// leaks nothing; in the library alone that question costs one relaxed atomic load. Releasing calls
// (close, munmap) are not injectable: a release must not fail.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <pthread.h>
#include <vector>

#include "runtime/error.h"

namespace tcr::os {

// Each acquisition point tcr has, once: X(Name, "what to_string prints"). The enum and
// to_string(Call) are made from it.
#define TCR_OS_CALLS(X)                                                                          \
  X(PthreadCreate, "pthread_create")                                                             \
  X(Mmap, "mmap")                                                                                \
  X(Mprotect, "mprotect")                                                                        \
  X(PidfdOpen, "pidfd_open")                                                                     \
  X(PidfdSendSignal, "pidfd_send_signal")                                                        \
  X(Tgkill, "tgkill")                                                                            \
  X(Poll, "poll")                                                                                \
  X(GcRegister, "GC_register_my_thread")                                                         \
  X(Sigaltstack, "sigaltstack")                                                                  \
  X(Userfaultfd, "userfaultfd")                                                                  \
  X(UffdIoctl, "ioctl (userfaultfd)")                                                            \
  X(PagemapScan, "PAGEMAP_SCAN")                                                                 \
  X(Eventfd, "eventfd")                                                                          \
  /* reading the process's memory map: the open, then each read (Darwin: each region) */         \
  X(ProcMaps, "reading /proc/thread-self/maps")

enum class Call : std::uint8_t {
#define TCR_OS_CALL_ENUMERATOR(name, text) name,
  TCR_OS_CALLS(TCR_OS_CALL_ENUMERATOR)
#undef TCR_OS_CALL_ENUMERATOR
  kCount  // how many; not a call
};

// The call's name; "?" for kCount or a value outside the list.
const char* to_string(Call call);

// ---- the fault hook (for tcr_testing only) ------------------------------------------------------

// Every injectable call, in the shim and in glue that wraps a library call (Boehm's registration),
// asks this first: 0 lets the call go on, an errno makes it fail with that errno. It asks the hook
// if one is set, else answers 0 after one relaxed atomic load.
int take_fault(Call call);

// The one hook, null in the library. tcr_testing sets it during static initialization, so in a
// test binary it sees (and counts) every call since the process started. Nothing else sets it.
using FaultHook = int (*)(Call call);
void set_fault_hook(FaultHook hook);

// ---- the calls --------------------------------------------------------------------------------

Result<pthread_t> pthread_create(const pthread_attr_t* attr, void* (*start)(void*), void* arg);
// A private anonymous mapping; `stack` adds MAP_STACK (no huge pages for thread stacks). `step`
// names what the memory was for in an Error: the caller's to say, runtime/ knows no uses.
Result<void*> mmap_anonymous(std::size_t length, int prot, bool stack, Step step);
void munmap(void* addr, std::size_t length);
// `step` names what the protection was for in an Error (a thread's guard page, a region's pages).
Result<void> mprotect(void* addr, std::size_t length, int prot, Step step);

// A pidfd naming one thread (flags: PIDFD_THREAD) or process. Linux only.
Result<int> pidfd_open(pid_t tid, unsigned flags);
Result<void> pidfd_send_signal(int pidfd, int sig);
Result<void> tgkill(pid_t tgid, pid_t tid, int sig);
// poll() on one fd for POLLIN with a timeout in ms (0: don't wait). true when readable.
Result<bool> poll_readable(int fd, int timeout_ms);
void close(int fd);

// Owns an fd and closes it (close above) when it goes out of scope, early returns included.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : m_fd(fd) {}
  ~ScopedFd() {
    if (m_fd >= 0) close(m_fd);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return m_fd; }
  bool ok() const { return m_fd >= 0; }

 private:
  int m_fd;
};

// Installs `stack` as the calling thread's alternate signal stack and returns the one it
// replaces. Async-signal-safe, like the call itself.
Result<stack_t> sigaltstack(const stack_t& stack);

// Linux: userfaultfd(2) with O_CLOEXEC | O_NONBLOCK and `flags` (UFFD_USER_MODE_ONLY);
// Darwin: ENOSYS. The ioctls on it go through uffd_ioctl, whose error names the request (`what`,
// a string literal: the error allocates nothing, since callers hold a region's pages claimed).
Result<int> userfaultfd(int flags);
Result<void> uffd_ioctl(int fd, unsigned long request, void* arg, const char* what);
// /proc/self/pagemap for PAGEMAP_SCAN (Linux; Darwin: ENOSYS), and the scan itself. Returns the
// ioctl's non-negative answer (how many page_region entries it filled).
Result<int> open_pagemap();
Result<long> pagemap_scan(int fd, void* arg);
// Linux: eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); Darwin: ENOSYS.
Result<int> eventfd();
// The calling thread's view of the process's memory map, /proc/thread-self/maps (see
// resources_linux.cpp for why not /proc/self), and reads from it: how many bytes (0 at the end).
// Both count as Call::ProcMaps and fail with Step::RegionMappings. Darwin has no such file
// (ENOSYS): its memory map is read with mach_vm_region (region_mappings_darwin.cpp).
Result<int> open_proc_maps();
Result<std::size_t> read_proc_maps(int fd, char* buf, std::size_t size);

pid_t gettid();

// ---- thread plumbing whose spelling differs per platform (not fault-injected: no acquisition) --

// Joins `thread` if it has ended. NotJoinable: the thread detached itself (EINVAL), so its end
// must be learnt another way. Linux: pthread_tryjoin_np. Darwin has no try-join; it joins, which is
// brief for the only callers: threads that are past shutdown_thread_tcr and only returning from
// their start routine.
enum class TryJoin : std::uint8_t { Joined, Running, NotJoinable };
TryJoin try_join(pthread_t thread);
// The calling thread's name as the debugger and /proc show it (truncated to the OS's limit).
void set_current_thread_name(const char* name);
// The calling thread's stack [low, high), or false if the OS cannot tell.
bool current_stack_bounds(void** low, void** high);

// ---- waiting on a word (futex on Linux, __ulock on Darwin): no fault injection, no allocation --
// Both are one system call and async-signal-safe: the stop-the-world handler waits with the first
// and the interrupt handler wakes with the second.

// Sleeps while *word == expected, until a wake, a signal, or timeout_ns (< 0: no timeout).
// Returns at once if *word != expected. Spurious returns happen: callers re-check their condition.
void wait_on_address(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                     std::int64_t timeout_ns = -1);
// Wakes one (all = false) or every thread waiting on word.
void wake_address(std::atomic<std::uint32_t>* word, bool all);

// The signals the manager may take for itself, in order of preference (Linux: the real-time
// signals from SIGRTMAX down; Darwin has none, so SIGUSR2 and SIGUSR1).
std::vector<int> candidate_manager_signals();
// The signals Boehm GC may use for its own stop-the-world before it is initialized, when it cannot
// yet be asked (Linux: SIGPWR and SIGXCPU; Darwin has no SIGPWR, so SIGXCPU).
std::vector<int> collector_default_signals();

// PIDFD_THREAD (Linux 6.9) is O_EXCL; Debian 12's headers predate it.
inline constexpr unsigned kPidfdThread = 0200;

}  // namespace tcr::os
