// ExceptionListener: the one thread that resolves Listener-mode GC traps, as Clozure CL's
// exception thread did with Mach messages (seeds 001, 002). On Linux the faulting thread sleeps in
// the kernel (userfaultfd write-protect) while the listener reads the fault messages in batches,
// maps each faulting tid to its Tcr (counting the trap there), marks the page dirty, unprotects
// it and so wakes the thread. Process-wide; started lazily by the first Listener-mode region;
// controlled through an eventfd. Its thread is a plain OS thread with every signal blocked: it is
// never stopped by a stop-the-world (faulting threads would wait for it), never registered with
// the GC, and never touches the GC heap. Thread-safe.
#pragma once

#include <cstdint>

#include "runtime/error.h"

namespace tcr {

struct ListenerStats {
  std::uint64_t batches = 0;    // reads that returned messages
  std::uint64_t messages = 0;   // fault messages received
  std::uint64_t resolved = 0;   // faults that dirtied an armed page
  std::uint64_t stale = 0;      // faults on pages already writable (a racing fault got there first)
  std::uint64_t foreign = 0;    // faults in no region (unregistered while in flight): woken
  std::uint64_t attributed = 0;  // messages whose tid mapped to a Tcr
};

class ExceptionListener {
 public:
  static ExceptionListener& instance();

  // Opens the kernel side and starts the thread, if not yet (idempotent). Errors: the refused
  // step (Step::Userfaultfd EPERM/ENOSYS, UffdIoctl), or PthreadCreate.
  Result<void> start();
  // Stops and joins the thread. Listener-mode regions are unarmed first: their pages are made
  // writable, every thread blocked on one of them resumes, and every page counts as written
  // (the next collect reports them all); protect() or collect_dirty() starts the listener again.
  void stop();
  bool running() const;
  ListenerStats stats() const;

  // Tests: while paused the listener reads no message, so faulting threads stay blocked in the
  // kernel, and a test can check what unregistering or stopping does to them.
  void set_paused(bool paused);

 private:
  ExceptionListener() = default;
};

}  // namespace tcr
