// tcr::Error: what every fallible call in tcr returns instead of throwing.
// An Error names the step that failed (an OS call, or a rule of the API) and carries the OS's own
// code (errno, or a kern_return_t for Mach steps), so a caller can both print it and act on it.
// Results are std::expected<T, Error>; nothing in tcr throws across a thread or API boundary.
#pragma once

#include <cstdint>
#include <exception>
#include <expected>
#include <string>
#include <string_view>

namespace tcr {

enum class Step : std::uint8_t {
  // OS calls: code is errno.
  PthreadCreate,
  PthreadJoin,
  StackMmap,
  StackGuardMprotect,
  AltStackMmap,           // an adopted thread's alternate signal stack
  AltStackGuardMprotect,  // ... and the guard page below it
  TidIndexMmap,           // the process's tid -> Tcr index (threads/tid_index.h)
  PidfdOpen,
  PidfdSendSignal,
  PidfdPoll,
  Tgkill,
  TcrAllocate,  // allocating a TCR or its GC slot block; code ENOMEM
  GcRegister,   // GC_register_my_thread; code is errno-like (ENOMEM, ENOSYS for GC_NO_THREADS)
  Sigaltstack,  // installing a thread's alternate signal stack
  RegionMprotect,  // mprotect of a ProtectedRegion's pages (Signal mode)
  Userfaultfd,  // opening a userfaultfd; EPERM/ENOSYS when the process may not
  UffdIoctl,    // a userfaultfd ioctl (API, REGISTER, WRITEPROTECT); the detail names which
  PagemapScan,  // the PAGEMAP_SCAN ioctl on /proc/self/pagemap, or opening that file
  Eventfd,      // the ExceptionListener's control eventfd
  RegionMappings,  // reading the memory map under a ProtectedRegion (/proc/thread-self/maps)
  RegionAllocate,  // a ProtectedRegion's bookkeeping (page states, protections, a page list)
  Sigaction,    // installing the manager's signal handlers; EBUSY when no signal is free
  // Mach steps: code is a kern_return_t.
  MachGetRefs,
  MachModRefs,
  MachDeallocate,
  MachAllocate,        // mach_port_allocate: a receive right or a port set
  MachInsertRight,     // mach_port_insert_right (MAKE_SEND)
  MachMoveMember,      // mach_port_move_member: a thread's exception port into the listener's set
  MachExceptionPorts,  // thread_swap_exception_ports / thread_set_exception_ports
  MachMsg,             // mach_msg: the listener's receive, or a reply to an exception message
  MachPortNames,
  // Rules of the API: code is 0 unless stated.
  BadArgument,       // a caller passed something unusable; the message says what
  ManagerShutDown,   // spawn or adopt after ThreadManager::shutdown()
  NotOnMainThread,   // Boehm GC must be initialized from the process's main thread
  StaleThread,       // the ThreadRef's record was reaped and reused: that thread is gone
  AlreadyJoined,     // second join of the same thread
  ThreadDetached,    // join of a detached thread
  JoinSelf,          // a thread joining itself would wait forever
  ThreadExited,      // a message to a thread that has exited (code: ESRCH when the kernel said so)
  ThreadThrew,       // join: the thread's function ended with an exception (see Error::exception)
  AlreadyAdopted,    // adopt_current_thread on a thread that already has a TCR
  NotAdopted,        // release_current_thread on a thread tcr did not adopt
  AdoptedThreadsAlive,  // ThreadManager::shutdown while adopted foreign threads still run
  StopTimeout,       // a thread did not acknowledge a stop within ManagerOptions::stop_timeout
  StackOverflow,     // join: the thread ran into its stack's guard page (the detail says where)
  ModeUnavailable,   // a ProtectedRegion mode this kernel or platform does not offer
};

std::string_view to_string(Step step);

struct Error {
  Step step;
  int code = 0;                  // errno, kern_return_t, or 0 (see Step)
  std::string detail = {};       // what the caller passed or which thread, when that helps
  std::exception_ptr exception;  // Step::ThreadThrew only
  // A string literal, for an error made where allocating is not allowed (while a region's pages
  // are claimed, a writer may be spinning on them): printed before `detail`.
  const char* fixed_detail = nullptr;

  // "pidfd_open: Too many open files (EMFILE)" and the like.
  std::string message() const;
};

template <class T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(Step step, int code = 0, std::string detail = {}) {
  return std::unexpected(Error{step, code, std::move(detail), nullptr});
}

// The same, allocating nothing: `literal` must outlive the error (a string literal).
inline std::unexpected<Error> fail_fixed(Step step, int code, const char* literal) {
  return std::unexpected(Error{step, code, {}, nullptr, literal});
}

}  // namespace tcr
