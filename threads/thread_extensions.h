// Per-thread state that a layer above threads/ keeps for every tcr thread: exceptions/ uses it
// for what the kernel holds per thread (Darwin: each thread's Mach exception port). threads/
// calls `attach` on each thread it starts or adopts, on that thread, before the thread enters
// the registry (a failure fails the spawn or the adoption, with nothing left behind), and
// `detach` when the thread exits (after it has left the GC), on the thread, for every extension
// that attached.
// Registration is process-wide and permanent (at most kMaxThreadExtensions); a thread already
// running when an extension is registered is not attached to it. Thread-safe.
#pragma once

#include <sys/types.h>

#include <cstddef>

#include "runtime/error.h"

namespace tcr {
class Tcr;

struct ThreadExtension {
  const char* name;                 // for logs
  Result<void> (*attach)(Tcr& self);  // runs on the thread itself
  void (*detach)(Tcr& self);          // runs on the thread itself; must not fail
};

inline constexpr std::size_t kMaxThreadExtensions = 4;

// BadArgument when the table is full or an entry lacks a function.
Result<void> register_thread_extension(const ThreadExtension& extension);

// For a layer that learns of a thread only by its kernel tid (the userfaultfd listener: a fault
// message names the faulting thread's tid): calls fn(tcr, context) for the live Tcr whose thread
// has `tid`, while that Tcr cannot be freed (fn must not call into a manager); false if no tcr
// thread has that tid, or the tid index could not be mapped (threads/tid_index.h).
bool with_thread_of_tid(pid_t tid, void (*fn)(Tcr&, void*), void* context);

// For the GC-trap layer. Async-signal-safe, both.
// Counts `delta` write-barrier traps taken by the thread (Tcr::traps()).
void count_trap(Tcr& t, int delta = 1);
// From the fault handler, on the alternate stack, for a fault in the thread's stack guard:
// abandons the thread's function and jumps back to where threads/ runs it, which answers join
// with Step::StackOverflow. Returns only if the thread is not inside its function (start-up,
// exit, an adopted thread): the fault then goes on to the handler installed before ours.
void escape_stack_overflow(Tcr& t, void* fault_address);

}  // namespace tcr
