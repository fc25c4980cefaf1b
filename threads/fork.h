// The ThreadManagers' part in fork() (runtime/fork.h). Internal to threads/.
// Prepare: every manager's stop lock (a fork waits for a stop-the-world in progress to end, as
// Boehm's fork handling waits for a collection), then every manager's registry lock, so that no
// record, list or count is half-changed when the process is copied.
// Child: the forking thread is the process's only thread. A manager keeps that thread's record if
// the thread is one of its own (spawned or adopted), with a kernel handle opened anew (the
// inherited pidfd names the parent's thread: a signal through it would reach the parent). Every
// other record is forgotten without touching the thread it named, which does not exist in the
// child: its kernel handles are closed, its stack and alternate stack go back to the free records
// (or are unmapped), its queued interrupts settle Undelivered, and nothing waits for it (threads
// that were starting, exiting or being joined included). No stop is in progress in the child,
// unless the forking thread held one: then it still does, and the StoppedWorld it holds stays
// readable (the stopped threads' stacks stay mapped) until its outermost resume_all().
#pragma once

#include <exception>
#include <memory>
#include <vector>

#include "threads/tcr.h"

namespace tcr {
class ManagerCore;
namespace detail {
struct InterruptState;  // threads/interrupt.h

// A manager takes part in every fork from its creation to its destruction.
void fork_track(ManagerCore& core);
void fork_untrack(ManagerCore& core);

// What the child takes from the threads it forgets, destroyed only once every lock is free
// again: closures, escaped exceptions and core references, whose destructors run user code.
struct ForkLeftovers {
  std::vector<ThreadFunction> functions;
  std::vector<std::shared_ptr<InterruptState>> interrupts;
  std::vector<std::exception_ptr> exceptions;
  std::vector<std::shared_ptr<ManagerCore>> cores;

  // Moves `value` in (or, if the vector cannot grow, destroys it at once).
  template <class T>
  static void keep(std::vector<T>& into, T&& value) {
    try {
      into.push_back(std::move(value));
    } catch (...) {
      T gone = std::move(value);
    }
  }
};

}  // namespace detail
}  // namespace tcr
