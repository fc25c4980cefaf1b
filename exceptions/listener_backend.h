// The platform side of ExceptionListener (exceptions/listener.h): how a write fault on a
// Listener-mode region reaches the listener thread, and how the listener lets the faulting thread
// go. Linux: one userfaultfd in write-protect mode plus an eventfd for control
// (listener_linux.cpp). Darwin: a Mach exception port per thread, gathered in a port set
// (listener_darwin.h: listener_ports_darwin.cpp and listener_messages_darwin.cpp, compiled only on
// Apple). Internal to exceptions/.
// Thread-safety: receive() and resume() are called by the listener thread only; the other calls
// from any thread, concurrently with receive().
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "exceptions/region_mappings.h"
#include "runtime/error.h"

namespace tcr {
class Tcr;
namespace detail {

// One write fault, as the listener receives it.
struct FaultMessage {
  void* address = nullptr;  // the faulting address (Linux: page-aligned unless the kernel is exact)
  pid_t tid = 0;            // the faulting thread, 0 when the platform cannot say
  Tcr* tcr = nullptr;       // its Tcr when the backend knows it directly (Darwin: by its port)
  std::uint64_t token = 0;  // backend-private: which reply resume() owes (Darwin)
};

enum class FaultOutcome : std::uint8_t { Resolved, Stale, Foreign };

class ListenerBackend {
 public:
  // Opens the kernel side. Errors name the refused step (Linux: Userfaultfd with EPERM/ENOSYS
  // when userfaultfd is not allowed, UffdIoctl when write-protect is not supported).
  static Result<std::unique_ptr<ListenerBackend>> open();
  virtual ~ListenerBackend() = default;

  // From now on the range's pages can be write-protected and their write faults come to
  // receive(). The range must be page-aligned, mapped and anonymous (Linux). `layout` is the
  // protection of each part, which a backend that arms with mprotect (Darwin) keeps but for
  // PROT_WRITE; it lives until unregister_range.
  virtual Result<void> register_range(void* base, std::size_t length,
                                       const RangeLayout& layout) = 0;
  // The range stops trapping: its pages are made writable and every thread blocked on one of
  // them resumes, including threads whose fault message is still in flight (not yet received,
  // or received and not yet resolved). Releases only; cannot fail.
  virtual void unregister_range(void* base, std::size_t length) = 0;
  // Write-protects (on) or unprotects the pages. Unprotecting resumes the threads blocked on them.
  virtual Result<void> write_protect(void* base, std::size_t length, bool on) = 0;

  // Blocks until fault messages arrive or request_stop() is called. Fills up to `max` messages
  // and returns how many; returns 0 with *stopped = true when asked to stop.
  virtual Result<std::size_t> receive(FaultMessage* out, std::size_t max, bool* stopped) = 0;
  // Lets the faulting thread go, after the listener dealt with its fault:
  //  - Resolved: the listener made the page writable just now (Linux: that already woke the
  //    thread; Darwin: the reply is KERN_SUCCESS and the thread retries its write);
  //  - Stale: the page was already writable (a racing fault resolved it): the thread retries;
  //  - Foreign: the address is in no Listener region (it was unregistered while the message was
  //    in flight, or was never ours). Linux: the thread is woken and retries against the page's
  //    real protection; Darwin: the reply is KERN_FAILURE and the kernel passes the exception
  //    on, to the BSD signal and the fault handlers (fault_signals.h).
  virtual void resume(const FaultMessage& message, FaultOutcome outcome) = 0;
  // Any thread: makes receive() return with *stopped = true.
  virtual void request_stop() = 0;
  // In a forked child, before the backend is destroyed there: its kernel objects are the
  // parent's (Linux: a userfaultfd bound to the parent's memory, whose copy the destructor only
  // closes) or were not inherited (Darwin: Mach ports), and must not be acted on.
  virtual void abandon_in_child() {}
};

}  // namespace detail
}  // namespace tcr
