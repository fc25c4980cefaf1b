// ThreadRecord: what stands behind a Tcr, internal to threads/ (not installed). The state is
// split by how long it lives, because the next step (keeping an OS thread across several runs)
// keeps the first part and renews the second:
//   OsThread   as long as the OS thread: pthread, tid, stack mapping, alternate signal stack,
//              kernel handle and its chain, Mach port, signal state (the stop-the-world side);
//   ThreadRun  as long as one run of a thread function: id, name, state, join state, function,
//              result and exception, the interrupt mailbox, the overflow guard.
// Each subsystem's part is a small class here (StopState, InterruptMailbox, OverflowGuard) with
// the operations that only need that part; what needs the whole record takes a ThreadRecord&.
// Locking: `run.state`, `run.id`, `run.detached`, `run.joining` and the list links change under
// the owning manager's registry lock (threads/manager_core.h); the mailbox has a lock of its own.
#pragma once

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "runtime/handle_table.h"
#include "runtime/kernel_handle.h"
#include "runtime/mach_ports.h"
#include "runtime/machine_context.h"
#include "runtime/mutex.h"
#include "threads/semaphore.h"
#include "threads/stop_world.h"
#include "threads/tcr.h"
#include "threads/thread_stack.h"

namespace tcr {

class ManagerCore;
struct StartHandshake;  // threads/manager_core.h
namespace detail {
struct InterruptState;  // threads/interrupt.h
}

// ---- stop-the-world: the thread's side of the handshake (threads/stop_world.cpp) ---------------

// How a stop takes a target, decided under the registry lock.
enum class Claim : std::uint8_t {
  Signal,    // running: send the suspend signal, wait for the handler's acknowledgement
  Blocking,  // in a BlockingScope: claimed without a signal
  Exiting,   // past the exit acknowledgement: claimed without a signal
  AwaitAck,  // exiting and acknowledging this epoch itself: wait for its post
};

class StopState {
 public:
  // `state` values: the futex word a thread leaving a claimed BlockingScope sleeps on.
  static constexpr std::uint32_t kRunning = 0;
  static constexpr std::uint32_t kBlocking = 1;  // in a BlockingScope, not claimed
  static constexpr std::uint32_t kClaimed = 2;   // in a BlockingScope, held by a stopped world
  static constexpr std::uint32_t kExiting = 3;   // acknowledged its exit: never signalled again

  // Under the registry lock, by the initiator of stop `epoch`.
  Claim claim(std::uint64_t epoch);
  // The exiting thread, with the manager's signals blocked: from now on every stop takes this
  // thread as Exiting (the Dekker pair with claim()).
  void acknowledge_exit();
  // In the suspend handler (async-signal-safe): records the registers and acknowledges. Returns
  // the epoch to sleep for, or 0 when there is nothing to acknowledge (a resent signal).
  std::uint64_t acknowledge_suspend(void* ucontext);
  // When the record enters the registry (under the registry lock).
  void reset();

  std::atomic<std::uint32_t> state{kRunning};
  std::atomic<std::uint64_t> request{0};       // the stop asked of this thread
  std::atomic<std::uint64_t> ack{0};           // the stop it acknowledged
  Semaphore ack_sem;                           // posted by whoever acknowledges
  StopKind kind = StopKind::Suspended;         // written by whoever acknowledges, before the ack
  RegisterSet regs;                            // written by the suspend handler
  const RegisterSet* blocking_regs = nullptr;  // the outermost BlockingScope's capture
  unsigned blocking_depth = 0;                 // own thread only
};

// ---- process-interrupt: the mailbox (threads/interrupt.cpp) -------------------------------------

// Open from registry entry until the thread's exit drained it for the last time. Its lock is only
// ever held with the manager's signals blocked (MailboxLock), so a suspended thread never holds
// it: the thread holding the world stopped may still interrupt the threads it stopped.
class InterruptMailbox {
 public:
  // When the record enters the registry. `direct`: the manager has an interrupt notify hook, so
  // interrupters wake a manager wait themselves (wait_word under the lock) and send no signal.
  void open(bool direct);
  // The next closure, or nullptr when none is queued (then the mailbox closes if asked to).
  std::shared_ptr<detail::InterruptState> pop(bool close_when_empty);
  // The interrupt signal's handler body (async-signal-safe): wakes the thread's manager wait.
  void wake_from_handler();

  Mutex mutex;
  std::deque<std::shared_ptr<detail::InterruptState>> queue TCR_GUARDED_BY(mutex);
  bool is_open TCR_GUARDED_BY(mutex) = false;
  std::atomic<bool> pending{false};
  // An interrupt signal was sent and its handler has not run yet: a later interrupt() sends none,
  // so a thread that masks signals costs one queued real-time signal, not one per interrupt
  // (RLIMIT_SIGPENDING is per user: filling it would starve every stop-the-world of signals).
  std::atomic<bool> wake_signal_pending{false};
  // The futex word of the Semaphore this thread is blocked in, for its interrupt handler to bump.
  // Written by the thread, read by its own signal handler only; with direct_wake, written under
  // the lock and read there by interrupters, which bump it themselves.
  std::atomic<std::atomic<std::uint32_t>*> wait_word{nullptr};
  bool direct_wake = false;  // set at open()
  bool running = false;  // own thread only: closures do not nest
  // The interrupt whose closure runs now (own thread only): a fork child settles it for a thread
  // that does not exist there (threads/fork.h).
  detail::InterruptState* current = nullptr;
};

// The mailbox's lock, held with the manager's signals blocked.
class TCR_SCOPED_CAPABILITY MailboxLock {
 public:
  explicit MailboxLock(InterruptMailbox& box) TCR_ACQUIRE(box.mutex);
  ~MailboxLock() TCR_RELEASE();
  MailboxLock(const MailboxLock&) = delete;
  MailboxLock& operator=(const MailboxLock&) = delete;

 private:
  InterruptMailbox& m_box;
  sigset_t m_old_mask;
};

// ---- stack overflow (exceptions/stack_guard.cpp jumps, threads/thread_start.cpp lands) ---------

// While the thread's function runs, a fault in the guard page jumps from the handler, on the
// alternate stack, back to `env` in run_guarded, abandoning the function's frames.
class OverflowGuard {
 public:
  void arm() { armed.store(true, std::memory_order_release); }
  void disarm() { armed.store(false, std::memory_order_release); }
  // From the fault handler: jumps to `env` if armed; returns if the thread is not inside its
  // function (start-up, shutdown, an adopted thread).
  void escape(void* fault_address);
  // The fault address the handler left, taken (nullptr: no overflow).
  void* take_address() { return std::exchange(address, nullptr); }

  sigjmp_buf env;
  std::atomic<bool> armed{false};
  void* address = nullptr;  // written by the handler before it jumps
};

// ---- the two lifetimes -------------------------------------------------------------------------

struct OsThread {
  pthread_t pthread{};
  pid_t tid = 0;
  bool adopted = false;
  bool gc_registered = false;  // this manager registered it, so shutdown unregisters it
  // The thread called pthread_detach on itself: it cannot be pthread_joined, so its end is read
  // from its kernel handle before its stack is reused (ManagerCore::join_os_thread).
  bool self_detached = false;
  // Spawned threads: our mapping (threads/thread_stack.h), kept on a free record for the next
  // spawn of the same size. Adopted threads: empty.
  ThreadStack stack;
  // The thread's stack, whoever owns it: `stack`'s, or pthread's for an adopted thread.
  void* stack_low = nullptr;
  void* stack_high = nullptr;
  // The alternate signal stack installed at thread start (inside `stack`, or `own_alt` for an
  // adopted thread) and the one it replaced, put back at exit.
  AltStack alt;
  unsigned extensions = 0;  // bit i: thread extension i attached (threads/thread_extensions.h)
  KernelThreadHandle handle;
  HandleChain handle_chain;  // every handle opened with handle_tag(), `handle` first
  mach::PortName mach_port = mach::kPortNull;
  StopState stop;  // signal state: the stop-the-world handshake
};

struct ThreadRun {
  std::uint64_t id = 0;
  std::string name;
  std::atomic<TcrState> state{TcrState::Free};
  bool detached = false;
  bool joining = false;  // a join is under way or done
  ThreadFunction fn;
  // On the spawner's stack, not in the record: once the new thread has posted it, the record may
  // be reaped and reused (a quick detached thread) before the spawner wakes up to read it.
  StartHandshake* handshake = nullptr;
  Semaphore exited;  // posted at the end of the exit (threads/shutdown.cpp: wake_joiner)
  std::exception_ptr exception;
  // What a start hook answered when it failed the thread (join: Step::StartHook); 0 otherwise.
  int start_failure = 0;
  OverflowGuard overflow;
  InterruptMailbox mailbox;
  // This run's traps (Tcr::traps()): reset when the record is acquired for a new thread.
  std::atomic<std::uint64_t> traps{0};
};

class ThreadRecord final : public Tcr {
 public:
  explicit ThreadRecord(void** slots) : Tcr(slots) {}

  void** slots() const { return slot_block(); }
  void*& result_slot() { return slots()[kResultSlot]; }
  void*& argument_slot() { return slots()[kArgumentSlot]; }
  void*& notify_slot() { return slots()[kNotifySlot]; }
  static constexpr std::size_t kSlotWords = kFirstUserSlot + kSlots;

  // Gives back what the OS-thread part holds (a record whose thread never ran, or one whose
  // thread has gone): the stack, an adopted thread's alternate stack mapping, every kernel
  // handle. Each owner releases its own; this only names them.
  void release_os_resources() {
    os.stack.release();
    os.alt.unmap_own();
    os.handle.release();
    HandleTable::instance().detach_chain(os.handle_chain);
  }

  OsThread os;
  ThreadRun run;

  ManagerCore* core = nullptr;
  ThreadRecord* next = nullptr;  // free list / zombie list / fork orphans link
  std::size_t registry_index = 0;
  // Adopted threads keep the manager's core alive: they may outlive the ThreadManager object and
  // still need it when they exit.
  std::shared_ptr<ManagerCore> core_ref;
};

// Signed where the registry lock is held (or the thread is otherwise known to be registered).
class RegistryPermit : public SignalPermit {
 public:
  RegistryPermit() = default;
};

// Every Tcr is a ThreadRecord: the only one tcr makes.
inline ThreadRecord& record(Tcr& t) { return static_cast<ThreadRecord&>(t); }
inline const ThreadRecord& record(const Tcr& t) { return static_cast<const ThreadRecord&>(t); }
inline ThreadRecord* record(Tcr* t) { return static_cast<ThreadRecord*>(t); }

}  // namespace tcr
