// ThreadManager: creates threads (spawn, Lisp's process-run-function), joins and detaches them,
// adopts foreign threads, and keeps the registry of live TCRs that a stop-the-world walks.
// Contract:
//  - Every call returns Result<...>; nothing throws across the API or a thread boundary. An
//    exception that escapes a thread's function is handed to its joiner.
//  - Cost is flat over history: TCRs, their GC slot blocks, names and (a bounded number of) stacks
//    are recycled through a free list; exited threads' kernel handles are released when they are
//    reaped, and their stacks then too, or kept for reuse up to ManagerOptions::cached_stacks.
//  - Joinable threads are reaped by join(); detached ones by reap(), which spawn() also runs
//    without blocking, and shutdown() with blocking.
//  - Joinable threads are like pthreads: one whose ThreadRef is dropped without join or detach
//    keeps its record, stack and kernel handle until the manager is destroyed.
//  - Thread-safe: any thread may call any member. Destroying the manager shuts it down (waits
//    for spawned threads to return), joins whatever was never joined and frees the records.
//    Destroyed from one of its own spawned threads, or from a thread holding a world stopped, it
//    cannot wait: it logs an error and leaves its state alive and unowned instead (nothing is
//    freed under a running thread). exit() runs a static manager's destructor: from the main
//    thread it waits for the spawned threads; from a spawned thread it leaves them running until
//    the process ends. The logger outlives every manager.
//  - Several managers may live in one process; a ThreadRef is only good with its own manager.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/error.h"
#include "runtime/kernel_handle.h"
#include "runtime/mach_ports.h"
#include "threads/interrupt.h"
#include "threads/semaphore.h"
#include "threads/stop_world.h"
#include "threads/tcr.h"

namespace tcr {

enum class HandleModeChoice : std::uint8_t { Auto, Pidfd, Tgkill };

// Who configures and initializes Boehm GC (when ManagerOptions::gc is true).
enum class GcOwner : std::uint8_t {
  // tcr: create() runs GC_INIT (on the main thread) unless something already did.
  Tcr,
  // The runtime: it sets Boehm's configuration (all-interior-pointers and the like) and runs
  // GC_INIT itself, on its main thread, before or after the manager is created; tcr never
  // initializes or configures the collector. Threads are registered once GC_is_init_called();
  // a spawn or adoption before that answers Step::GcNotInitialized.
  Runtime,
};

// Runs on each spawned thread before its function, in order: 0 to go on, or an errno-like code
// that fails the thread (its function does not run; the exit hooks do; join answers
// Step::StartHook with that code). A runtime enters itself on the thread here.
using StartHook = std::function<int(Tcr& self)>;
// Rings the runtime's doorbell for a thread an interrupt was just queued for, on the
// interrupting thread, outside every tcr lock: the target's id and its notify context
// (Tcr::set_notify_context), e.g. the runtime's own thread object.
using InterruptNotify = std::function<void(std::uint64_t thread_id, void* notify_context)>;
// Runs each interrupt closure on its thread: must call run(closure) once, inside the runtime's
// own error handler; a trampoline that does not leaves the interrupt Undelivered.
using InterruptTrampoline = std::function<void(Tcr& self, void (*run)(void*), void* closure)>;

struct ManagerOptions {
  // Auto: what detected_handle_mode() found. Forcing Tgkill on a pidfd kernel tests the fallback.
  HandleModeChoice handle_mode = HandleModeChoice::Auto;
  // Use Boehm GC: register spawned threads with it by default, and scan the slot blocks.
  bool gc = true;
  GcOwner gc_owner = GcOwner::Tcr;
  // The stack size of a spawn that does not name one (SpawnOptions::stack_size 0), in
  // [64 KiB, 1 GiB]: runtimes that expect 8 MiB stacks set it once here.
  std::size_t stack_size = std::size_t{1} << 20;
  // Run on each spawned thread before its function (see StartHook). Not on adopted threads:
  // those already run the runtime's code.
  std::vector<StartHook> start_hooks;
  // Run on each exiting thread first thing in shutdown_thread_tcr (run_last_safe_point), in order.
  std::vector<std::function<void(Tcr&)>> exit_hooks;
  // Darwin: the task's IPC space (XnuPortSpace); elsewhere optional, e.g. a MachModel, so the same
  // send-right normalization runs here. When set, each thread caches its port at start
  // (pthread_mach_thread_np) and shutdown normalizes its send rights to exactly one.
  mach::PortSpace* mach_space = nullptr;
  // shutdown_thread_tcr's normalize_kernel_handles. Off only to show, in a test, the leak that
  // it prevents.
  bool normalize_kernel_handles = true;
  // How many reaped threads' stacks stay mapped on free records for the next spawn of the same
  // stack size (glibc keeps a stack cache for the same reason): a reused stack's pages are already
  // faulted in, and spawn skips mmap, mprotect and munmap. Bounded, so mappings stay flat however
  // many threads come and go; trim() gives them back. 0: a fresh mapping for every thread.
  std::size_t cached_stacks = 8;
  // How long suspend_all() waits for one thread's acknowledgement (a thread that blocks the
  // suspend signal acknowledges when it unblocks it) before it gives up, resumes the others and
  // answers StopTimeout. 0: no limit, as a collector that cannot proceed without every thread
  // wants.
  std::chrono::milliseconds stop_timeout{0};
  // Set: interrupt() sends no wake-up signal. A thread waiting inside tcr (join, Semaphore,
  // sleep_for, InterruptTicket::wait) is woken directly; for any other the notify hook rings the
  // runtime's own doorbell, and the runtime calls poll() where it runs its asyncs. So no
  // blocking call of the runtime's is ever cut short by tcr. Unset: the wake-up signal.
  InterruptNotify interrupt_notify;
  // Set: every interrupt closure runs through it (see InterruptTrampoline).
  InterruptTrampoline interrupt_trampoline;
};

enum class GcRegistration : std::uint8_t { Inherit, Register, DontRegister };

struct SpawnOptions {
  // The thread's stack, rounded up to pages; a guard page sits below it. 0: the manager's
  // ManagerOptions::stack_size.
  std::size_t stack_size = 0;
  bool detached = false;
  GcRegistration gc = GcRegistration::Inherit;
  // Kept in a GC-visible slot for the thread's life: Tcr::argument().
  void* argument = nullptr;
};

struct AdoptOptions {
  GcRegistration gc = GcRegistration::Inherit;
};

// A copy of one live TCR's public state, taken under the registry lock.
struct ThreadInfo {
  std::uint64_t id;
  std::string name;
  TcrState state;
  pid_t tid;
  int handle_fd;  // -1 in Tgkill mode
  bool detached;
  bool adopted;
  bool gc_registered;
};

struct ManagerStats {
  std::uint64_t spawned = 0;     // successful spawns
  std::uint64_t adopted = 0;
  std::uint64_t reaped = 0;      // records returned to the free list
  std::size_t live = 0;          // in the registry now
  std::size_t dead_unreaped = 0; // Dead, waiting for join or the reaper
  std::size_t records = 0;       // Tcr objects ever allocated (flat in steady state)
  std::size_t free_records = 0;
  std::size_t cached_stacks = 0;         // free records holding a stack for reuse
  std::size_t extra_handles_closed = 0;  // at thread exit (a runtime leaked them)
};

class ThreadManager {
 public:
  static Result<std::unique_ptr<ThreadManager>> create(ManagerOptions options = {});
  ~ThreadManager();
  ThreadManager(const ThreadManager&) = delete;
  ThreadManager& operator=(const ThreadManager&) = delete;

  // process-run-function. Returns once the thread is Running (its handle open, registered with
  // the GC) or with the Error of the step that failed; nothing is leaked on failure.
  Result<ThreadRef> spawn(std::string_view name, ThreadFunction fn, SpawnOptions options = {});

  // Waits for the thread and reaps it. The thread's result, or Step::ThreadThrew with the
  // exception in Error::exception. Errors: StaleThread, AlreadyJoined, ThreadDetached, JoinSelf.
  Result<void*> join(ThreadRef thread);
  // join, waiting at most `timeout`: Step::Timeout when the thread has not exited by then (it
  // stays joinable). A safe point while it waits.
  Result<void*> join_for(ThreadRef thread, std::chrono::nanoseconds timeout);
  // Whether the thread's function has returned (it may not be reaped yet). A stale ref's thread
  // has exited: true. BadArgument for another manager's ref.
  Result<bool> exited(ThreadRef thread) const;
  // The manager reaps it when it exits. Errors: StaleThread, AlreadyJoined, ThreadDetached.
  Result<void> detach(ThreadRef thread);

  // Sends sig through the thread's cached kernel handle. Step::ThreadExited once it has exited.
  Result<void> signal(ThreadRef thread, int sig);

  // Gives the calling foreign thread (one tcr did not create) a Tcr, as if spawned. Released
  // automatically when the thread exits, or earlier by release_current_thread().
  Result<Tcr*> adopt_current_thread(std::string_view name, AdoptOptions options = {});
  // A ThreadRef for the calling thread, spawned or adopted by this manager (an adopted thread has
  // no other way to be signalled or interrupted). BadArgument from any other thread.
  Result<ThreadRef> current_ref() const;
  Result<void> release_current_thread();

  // The live threads. Allocates (the list and the names): TcrAllocate when memory runs out, and
  // do not call it while the world is stopped if a stopped thread may hold malloc's lock.
  Result<std::vector<ThreadInfo>> snapshot() const;
  // Calls fn for each live Tcr under the registry lock: fn must not call back into the manager.
  void for_each(const std::function<void(const Tcr&)>& fn) const;

  // What reap() waits for.
  enum class Reap {
    Exited,          // nothing: the detached threads that have exited
    WaitForRunning,  // first every detached thread (but the caller) to finish, and its OS thread
  };
  // Reaps detached threads that have exited; with Reap::WaitForRunning, first waits until every
  // detached thread (but the caller) has finished its function, then for their OS threads to
  // end, so afterwards none holds a stack or a kernel handle. Returns how many it reaped.
  // Error BadArgument for a wait while the caller holds the world stopped (the threads cannot
  // finish); reap(Reap::Exited) never fails.
  Result<std::size_t> reap(Reap how = Reap::Exited);

  // Refuses new spawns and adoptions, waits for every spawned thread to end, reaps the detached
  // ones. Joinable threads stay joinable. Error AdoptedThreadsAlive if adopted threads remain
  // (they are released when they exit, even after the manager is destroyed).
  Result<void> shutdown();

  // Unmaps the stacks that free records keep for reuse (ManagerOptions::cached_stacks), and
  // answers how many. Afterwards the manager holds no thread stack that no thread is using.
  std::size_t trim();

  // ---- stop the world (threads/stop_world.h) ----
  // Stops every other thread in the registry and lists them for a conservative scan. Called from
  // a thread of this manager (spawned or adopted); nests on that thread; a second initiator waits
  // (suspended, if it is a target). Errors: BadArgument from a thread the manager does not know;
  // the signal step's error if a thread cannot be signalled; StopTimeout. On error every thread
  // runs again. While stopped, the caller must not spawn, join, or allocate from the GC heap.
  Result<StoppedWorld> suspend_all();
  // Ends one level of suspend_all() on the calling thread; the world runs again at the outermost.
  Result<void> resume_all();
  // Whether the calling thread holds this manager's world stopped.
  bool world_stopped_by_caller() const;

  // ---- process-interrupt (threads/interrupt.h) ----
  // Queues fn to run on the thread at its next safe point. The ticket settles Delivered, or
  // Undelivered when the thread exited first (also when it had already exited). Errors:
  // BadArgument; the signal step's error (then nothing was queued).
  Result<InterruptTicket> interrupt(ThreadRef thread, InterruptFunction fn);
  // A safe point: runs the calling thread's queued interrupts now; returns how many ran.
  static std::size_t poll();
  // Sleeps for `duration`, running interrupts that arrive meanwhile.
  static void sleep_for(std::chrono::nanoseconds duration);

  // The signals tcr installed for itself (the same for every manager in the process).
  static ManagerSignals signals();

  HandleMode handle_mode() const;
  ManagerStats stats() const;
  // The manager's serial (ThreadRef::manager_serial of its refs): unique in the process.
  std::uint64_t serial() const;

 private:
  explicit ThreadManager(std::shared_ptr<ManagerCore> core);
  std::shared_ptr<ManagerCore> m_core;
};

}  // namespace tcr
