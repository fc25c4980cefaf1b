// The SIGSEGV and SIGBUS handlers of the GC-trap layer. Installed once per process, with
// SA_ONSTACK, so they run on the alternate stack every tcr thread gets at start (Tcr::alt_stack)
// and still work when a thread has exhausted its own stack. They resolve:
//  1. a write to an armed page of a Signal-mode ProtectedRegion (marked dirty, given back its
//     protection); only a write: what the CPU says the access was (machine::fault_access)
//     decides, and a read or an instruction fetch faulting in a region goes on to 3;
//  2. a tcr thread's write into the guard below its stack: the thread's function is abandoned
//     and join answers Step::StackOverflow (stack_guard.h);
//  3. anything else goes to the handler installed before ours (Boehm GC's incremental mode, a
//     JVM's): SA_SIGINFO or plain, as it asked; SIG_DFL re-raises with the default action.
// Async-signal-safe: a lock-free lookup of regions, atomics and mprotect; no allocation, no
// lock, no logging.
#pragma once

#include <signal.h>

#include "runtime/error.h"

namespace tcr {

// Installs the handlers (once per process; later calls answer the first call's result). A
// Signal-mode ProtectedRegion installs them; call it at start-up to have stack overflows of tcr
// threads recovered even without one. Step::Sigaction on failure.
Result<void> install_fault_handlers();
bool fault_handlers_installed();

// The action each signal had before ours, which faults that are not ours go to.
struct sigaction previous_fault_action(int sig);

namespace detail {
// A test's window on rule 3: called from the handler each time a fault or a sent SIGSEGV/SIGBUS
// is passed on, with the signal and whether it goes to the default action (SIG_DFL, or SIG_IGN for
// a fault), just before it does. It runs in the signal handler, so it must be async-signal-safe.
// Null by default (one relaxed load per passed-on fault).
using ChainObserver = void (*)(int sig, bool to_default);
void set_chain_observer(ChainObserver observer);
}  // namespace detail

}  // namespace tcr
