// fork() safety: tcr's one pthread_atfork registration. A module whose process-wide state a fork
// could catch half-changed (a lock held by a thread that the child will not have) takes part with
// a ForkParticipant: `prepare` takes its locks in the forking thread, `parent` releases them, and
// `child` makes the state whole for a process whose only thread is the forking one (it releases or
// re-creates the locks and forgets what belonged to the threads left behind).
// Order: prepare runs the participants by rank, lowest first (the outermost lock), and parent and
// child run them in the reverse order, so every lock is taken after the locks that are held while
// it is taken elsewhere, and a child step may use every participant ranked above its own (their
// locks are free again by then). Boehm GC's own fork handling runs at the innermost rank.
// Registration is idempotent and thread-safe; it never waits for a fork in progress (a registration
// that races a fork takes part in the next one). Handlers run with every participant's locks held:
// they must not log (but for child steps, after the logger's), allocate under a lock, or register.
#pragma once

#include <concepts>
#include <cstdint>
#include <new>

#include "runtime/thread_annotations.h"

namespace tcr {

// The lock order across tcr, outermost first. Each rank names what its participants hold.
enum class ForkRank : std::uint8_t {
  ManagerStops = 10,  // threads/: every manager's stop lock (a fork waits for a stop to end)
  Managers = 20,      // threads/: every manager's registry lock
  Listener = 30,      // exceptions/: the ExceptionListener's control and state locks
  Regions = 40,       // exceptions/: the ProtectedRegion table's change lock
  TidIndex = 50,      // threads/: the tid index's lookup lock
  HandleTable = 60,   // runtime/: the handle table
  Setup = 70,         // one-time set-up locks (GC init, signals, extensions, fault handlers, ...)
  Logger = 80,        // runtime/: the sink of tcr's logger
  Collector = 90,     // runtime/: Boehm GC (GC_atfork_prepare / parent / child)
};

struct ForkParticipant {
  const char* name;  // for the code reader and a debugger; never logged from a handler
  ForkRank rank;
  void (*prepare)(void* context);
  void (*parent)(void* context);
  void (*child)(void* context);
  void* context = nullptr;
};

// Takes part in every later fork. A second registration of the same (prepare, context) is a
// no-op. The table is small and fixed (tcr's own modules): overflowing it is a bug, and aborts.
void fork_participate(const ForkParticipant& participant);

// Re-creates `object` in place, without destroying it: for locks and condition variables in a
// forked child, where a thread that no longer exists may hold or wait on them (destroying a
// condition variable would wait for those waiters; unlocking a lock the forking thread never
// took is undefined).
template <class T>
void recreate_in_child(T& object) {
  new (&object) T();
}

// A plain lock a fork guard can hold: std::mutex, tcr::Mutex.
template <class L>
concept ForkLockable = std::default_initializable<L> && requires(L& lock) {
  lock.lock();
  lock.unlock();
};

// The participant for one plain lock: prepare locks it, the parent unlocks it, the child
// re-creates it unlocked. The lock is taken in one callback and let go in another: the
// thread-safety analysis cannot follow it across them.
template <ForkLockable L>
ForkParticipant fork_guard(const char* name, ForkRank rank, L& lock) {
  return ForkParticipant{
      name, rank, [](void* l) TCR_NO_THREAD_SAFETY_ANALYSIS { static_cast<L*>(l)->lock(); },
      [](void* l) TCR_NO_THREAD_SAFETY_ANALYSIS { static_cast<L*>(l)->unlock(); },
      [](void* l) { recreate_in_child(*static_cast<L*>(l)); }, &lock};
}

}  // namespace tcr
