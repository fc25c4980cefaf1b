#include "runtime/error.h"

#include <cstring>

namespace tcr {

std::string_view to_string(Step step) {
  switch (step) {
    case Step::PthreadCreate: return "pthread_create";
    case Step::PthreadJoin: return "pthread_join";
    case Step::StackMmap: return "mmap (thread stack)";
    case Step::StackGuardMprotect: return "mprotect (stack guard page)";
    case Step::AltStackMmap: return "mmap (alternate signal stack)";
    case Step::AltStackGuardMprotect: return "mprotect (alternate signal stack guard page)";
    case Step::TidIndexMmap: return "mmap (tid index)";
    case Step::PidfdOpen: return "pidfd_open";
    case Step::PidfdSendSignal: return "pidfd_send_signal";
    case Step::PidfdPoll: return "poll (pidfd)";
    case Step::Tgkill: return "tgkill";
    case Step::TcrAllocate: return "allocating a thread control record";
    case Step::GcRegister: return "GC_register_my_thread";
    case Step::Sigaltstack: return "sigaltstack";
    case Step::RegionMprotect: return "mprotect (protected region)";
    case Step::Userfaultfd: return "userfaultfd";
    case Step::UffdIoctl: return "ioctl (userfaultfd)";
    case Step::PagemapScan: return "PAGEMAP_SCAN (/proc/self/pagemap)";
    case Step::Eventfd: return "eventfd";
    case Step::RegionMappings: return "reading the memory map (protected region)";
    case Step::RegionAllocate: return "allocating a protected region's bookkeeping";
    case Step::Sigaction: return "sigaction (manager signals)";
    case Step::MachGetRefs: return "mach_port_get_refs";
    case Step::MachModRefs: return "mach_port_mod_refs";
    case Step::MachDeallocate: return "mach_port_deallocate";
    case Step::MachAllocate: return "mach_port_allocate";
    case Step::MachInsertRight: return "mach_port_insert_right";
    case Step::MachMoveMember: return "mach_port_move_member";
    case Step::MachExceptionPorts: return "thread_swap_exception_ports";
    case Step::MachMsg: return "mach_msg";
    case Step::MachPortNames: return "mach_port_names";
    case Step::BadArgument: return "bad argument";
    case Step::ManagerShutDown: return "thread manager is shut down";
    case Step::NotOnMainThread: return "not on the main thread";
    case Step::StaleThread: return "stale thread reference";
    case Step::AlreadyJoined: return "thread already joined";
    case Step::ThreadDetached: return "thread is detached";
    case Step::JoinSelf: return "thread cannot join itself";
    case Step::ThreadExited: return "thread has exited";
    case Step::ThreadThrew: return "thread ended with an exception";
    case Step::AlreadyAdopted: return "thread already has a TCR";
    case Step::NotAdopted: return "thread was not adopted";
    case Step::AdoptedThreadsAlive: return "adopted threads still alive";
    case Step::StopTimeout: return "stop-the-world timed out";
    case Step::StackOverflow: return "thread overflowed its stack";
    case Step::ModeUnavailable: return "protected-region mode unavailable";
  }
  return "unknown step";
}

namespace {

bool is_os_step(Step step) { return step <= Step::Sigaction || step == Step::ThreadExited; }
bool is_mach_step(Step step) { return step >= Step::MachGetRefs && step <= Step::MachPortNames; }

}  // namespace

std::string Error::message() const {
  std::string out(to_string(step));
  if (code != 0 && is_os_step(step)) {
    out += ": ";
    out += std::strerror(code);
    if (const char* name = strerrorname_np(code)) {
      out += " (";
      out += name;
      out += ")";
    }
  } else if (code != 0 && is_mach_step(step)) {
    out += ": kern_return_t " + std::to_string(code);
  }
  if (fixed_detail != nullptr) {
    out += ": ";
    out += fixed_detail;
  }
  if (!detail.empty()) {
    out += ": ";
    out += detail;
  }
  if (exception) {
    try {
      std::rethrow_exception(exception);
    } catch (const std::exception& e) {
      out += ": ";
      out += e.what();
    } catch (...) {
      out += ": (non-standard exception)";
    }
  }
  return out;
}

}  // namespace tcr
