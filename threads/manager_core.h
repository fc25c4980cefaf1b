// ManagerCore: the state behind a ThreadManager (registry, free list, zombie list), shared with the
// threads it runs. Internal to threads/: embedders use ThreadManager.
// Its state is private: ManagerCore's members and ThreadManager's are the only code that reads
// or writes it, each in the file of its subject (record_pool, spawn, adoption, shutdown,
// stop_world, interrupt, fork).
// Locking: `mutex` is the registry lock. It guards the fields marked TCR_GUARDED_BY(mutex) and
// every Tcr's state, id, detached/joining flags and list links. It is never held across a
// blocking wait, a pthread_join or a user callback (except for_each, which says so). The clang
// preset checks the marked fields and the TCR_REQUIRES(mutex) functions at every use.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "runtime/gc.h"
#include "runtime/mutex.h"
#include "runtime/os.h"
#include "threads/record.h"
#include "threads/thread_manager.h"

namespace tcr {
namespace detail {
struct ForkLeftovers;  // threads/fork.h
void fork_track(ManagerCore& core);
void fork_untrack(ManagerCore& core);
}

// The start handshake between spawn() and the new thread. It lives on the spawner's stack; the
// new thread fills it in, posts and never touches it again. A futex word (os::wait_on_address),
// not a POSIX sem_t, which Darwin does not have. The wake after the store may reach the address
// once the spawner has returned and its stack is in other use: a futex wake reads no memory, and
// whoever waits there then takes it as the spurious return every waiter re-checks for.
struct StartHandshake {
  std::atomic<std::uint32_t> started{0};
  bool failed = false;
  Error error{Step::BadArgument, 0, {}, nullptr};

  void post() {
    started.store(1, std::memory_order_release);
    os::wake_address(&started, false);
  }
  void wait() {
    while (started.load(std::memory_order_acquire) == 0) os::wait_on_address(&started, 0);
  }
};

class ManagerCore {
 public:
  ManagerCore(ManagerOptions options, HandleMode mode);
  ~ManagerCore();

  const ManagerOptions options;
  const HandleMode mode;
  // Unique in the process and never reused: ThreadRefs carry it, so a ref from another manager
  // is refused without touching its record.
  const std::uint64_t serial;
  // Takes a record from the free list (or allocates one), gives it a fresh id and marks it
  // Reserved; counts it as live so shutdown() waits for it. ManagerShutDown after shutdown().
  Result<ThreadRecord*> acquire_record(bool adopted) TCR_EXCLUDES(mutex);
  // Allocates a Free record and adds it to `records`; called without the registry lock.
  Result<ThreadRecord*> new_record() TCR_EXCLUDES(mutex, arena_mutex);
  // Gives back a record whose thread never ran (a failed spawn or adoption), and its stack.
  void abandon_record(ThreadRecord* t) TCR_EXCLUDES(mutex);
  // Under the lock: puts a record on the free list with its slots cleared, so a reaped thread's
  // GC objects are not kept alive by a record waiting for reuse.
  void free_record_locked(ThreadRecord* t) TCR_REQUIRES(mutex);
  // The thread is gone: releases its last kernel-handle reference and its stack, and returns the
  // record to the free list. The caller must have made sure nothing else can reach the record.
  void reap_record(ThreadRecord* t) TCR_EXCLUDES(mutex);

  // Whether the calling thread holds a stopped world (of its own manager: the only one it may
  // stop). Then it must not wait for any thread to finish: spawn, join, reap(wait), shutdown and
  // the manager's destructor refuse.
  static bool caller_holds_a_stop();
  // Waits until a Dead thread's OS thread is gone (pthread_join); false when the thread had
  // detached itself (pthread_detach), which is then waited out through its kernel handle.
  bool join_os_thread(ThreadRecord* t);
  // Without waiting (under the registry lock): whether the OS thread is gone, joined if it can be.
  bool try_join_os_thread(ThreadRecord* t) TCR_REQUIRES(mutex);
  static void mark_self_detached(ThreadRecord* t);
  static void wait_self_detached_gone(ThreadRecord* t);
  static bool os_thread_alive(const ThreadRecord* t);

  // Enter the registry as Running (taking the lock) / leave it as Dead (the caller holds `lock`
  // on mutex). Both wait at the gate while the world is stopped, so a StoppedWorld's list stays
  // exact.
  void enter_registry(ThreadRecord* t) TCR_EXCLUDES(mutex);
  void leave_registry(UniqueLock& lock, ThreadRecord* t) TCR_REQUIRES(mutex);
  void wait_for_world(UniqueLock& lock) TCR_REQUIRES(mutex);

  // The record a ThreadRef names, if it still does (caller holds the registry lock). BadArgument
  // for an empty ref or one from another manager (checked before the record is touched: it may
  // be freed); StaleThread once the record was reaped (and perhaps reused under another id).
  Result<ThreadRecord*> record_of(ThreadRef ref, const char* op) const TCR_REQUIRES(mutex);
  ThreadRef ref_to(ThreadRecord* t) const { return ThreadRef(t, t->run.id, serial); }

  // Whether a thread is to be registered with the GC; BadArgument when asked of a manager
  // created without the GC.
  Result<bool> gc_registration(GcRegistration choice, const char* op) const;

  // Under the lock: hands a Dead thread to the reaper.
  void push_zombie_locked(ThreadRecord* t) TCR_REQUIRES(mutex);

  // The start routine of every spawned thread, and its way of reporting a failed start.
  static void* thread_entry(void* arg);
  static void* report_start_failure(ThreadRecord* t, Error error);
  // What the new thread does before it may run its function: kernel handle, Mach port,
  // alternate stack and extensions, GC registration. On failure it has undone what only it can.
  Result<void> start_on_thread(ThreadRecord* t);
  // Runs the thread's function; an escaped exception is kept for the joiner.
  static void* run_thread_function(ThreadRecord* t);
  // run_thread_function behind the stack-overflow recovery point (OverflowGuard::env).
  static void* run_guarded(ThreadRecord* t);
  // Per-thread exception state, on the thread itself: its alternate signal stack and the thread
  // extensions (thread_extensions.h). Attach undoes itself on failure; detach runs at exit,
  // after the GC let go.
  static Result<void> attach_thread_state(ThreadRecord* t);
  static void detach_thread_state(ThreadRecord* t);
  static void restore_alt_stack(ThreadRecord* t);
  // Everything of shutdown_thread_tcr after run_last_safe_point (threads/shutdown.cpp).
  static void finish_shutdown(ThreadRecord& t, int cancel_state);
  // Runs one exit hook (run_last_safe_point); an exception is logged and ignored. A hook that exits
  // the thread (pthread_exit) would leave the teardown half done: that is fatal, and said so.
  static void run_exit_hook(const std::function<void(Tcr&)>& hook, ThreadRecord& t);
  // Runs one interrupt closure; whatever it throws is logged and ignored (nothing escapes into
  // the safe point that ran it). pthread_exit inside it unwinds on.
  static void run_interrupt_closure(const InterruptFunction& fn, ThreadRecord& t);
  // Where a forced unwind (pthread_exit, cancellation) landed on the thread's own stack: the
  // frames it removed, all below the caller's, are forgotten by the sanitizer (a no-op unless
  // built with ASan; threads/run_function_linux.cpp).
  static void forget_unwound_frames(const ThreadRecord& t);
  // Inside a catch block: "'what()'" for a std::exception, else "a non-standard exception".
  static std::string describe_current_exception();

  // Stop-the-world (threads/stop_world.cpp).
  // Under the lock: lets every thread of the current stop go, opens the gate.
  void resume_locked(std::uint64_t epoch, bool holds_gc_lock) TCR_REQUIRES(mutex);
  // A thread exiting while it holds the world stopped: resumes it, and says so.
  static void release_stop_at_exit(ThreadRecord& t);
  // The suspend signal's handler body (async-signal-safe): acknowledges and sleeps until resumed.
  static void suspend_self(ThreadRecord& t, void* ucontext);

  // fork() (threads/fork.h, threads/fork.cpp). The steps run on the forking thread: prepare
  // takes stop_mutex (unless the forking thread holds the stop) and then `mutex`; the parent
  // releases them; the child rebuilds the registry, lists and counts around the forking thread.
  void fork_prepare_stop();
  void fork_release_stop(bool child);
  void fork_prepare_registry() TCR_ACQUIRE(mutex);
  void fork_parent_registry() TCR_RELEASE(mutex);
  // Releases the registry lock by making a new one (the child's copy is held by no thread).
  void fork_child_registry(detail::ForkLeftovers& left) TCR_RELEASE(mutex);
  // Under the lock, at the outermost resume_all in a child forked by the thread holding the
  // stop: the records that the fork forgot, whose stacks the StoppedWorld listed, go free.
  void release_fork_orphans_locked() TCR_REQUIRES(mutex);
  // The next live manager after this one (threads/fork.cpp's list, under its lock).
  ManagerCore* fork_next_core() const { return fork_next; }

 private:
  friend class ThreadManager;  // its members are the manager's API over this state
  friend void detail::fork_track(ManagerCore& core);
  friend void detail::fork_untrack(ManagerCore& core);

  // shutdown_thread_tcr's steps that change the manager's lists and counts (threads/shutdown.cpp).
  static void normalize_kernel_handles(ThreadRecord& t);
  // Returns the core reference an adopted thread held (it may have been the core's last owner).
  static std::shared_ptr<ManagerCore> leave_registry_at_exit(ThreadRecord& t);

  // TCR slot blocks, under arena_mutex and never under the registry lock (acquire_record says why).
  Mutex arena_mutex;
  gc::RootArena slot_arena TCR_GUARDED_BY(arena_mutex);

  mutable Mutex mutex;
  // Notified when managed_live, detached_live or reapers_busy goes down.
  std::condition_variable all_exited;

  // Registry and lists (under mutex).
  std::vector<ThreadRecord*> registry TCR_GUARDED_BY(mutex);
  // Every record ever allocated; flat in steady state.
  std::vector<ThreadRecord*> records TCR_GUARDED_BY(mutex);
  ThreadRecord* free_list TCR_GUARDED_BY(mutex) = nullptr;
  std::size_t free_count TCR_GUARDED_BY(mutex) = 0;
  // Dead detached threads whose OS thread may still be running.
  ThreadRecord* zombies TCR_GUARDED_BY(mutex) = nullptr;
  std::size_t managed_live TCR_GUARDED_BY(mutex) = 0;   // spawned threads from Reserved until Dead
  std::size_t detached_live TCR_GUARDED_BY(mutex) = 0;  // of which detached; reap waits for them
  std::size_t adopted_live TCR_GUARDED_BY(mutex) = 0;
  std::size_t dead_unreaped TCR_GUARDED_BY(mutex) = 0;
  // Free records holding their last thread's stack. Only reap_record puts a stack back (an
  // abandoned record, and an adopted thread's, give theirs up), so this is exact.
  std::size_t cached_stacks TCR_GUARDED_BY(mutex) = 0;
  // reap() calls releasing records they took off the zombie list.
  std::size_t reapers_busy TCR_GUARDED_BY(mutex) = 0;
  bool shut_down TCR_GUARDED_BY(mutex) = false;
  ManagerStats stats TCR_GUARDED_BY(mutex);

  // Stop-the-world (threads/stop_world.cpp).
  // Held by the initiator from suspend_all to its last resume_all: a lock held across calls,
  // taken on success only, which the analysis cannot follow, so a plain std::mutex.
  std::mutex stop_mutex;
  std::atomic<ThreadRecord*> stop_owner{nullptr};
  unsigned stop_depth = 0;           // owner's nesting (owner thread only)
  bool stop_holds_gc_lock = false;   // owner thread only
  std::uint64_t stop_epoch TCR_GUARDED_BY(mutex) = 0;
  bool world_stopped TCR_GUARDED_BY(mutex) = false;  // the registry gate
  std::condition_variable world_resumed;
  std::atomic<std::uint32_t> resume_word{0};  // futex word suspended handlers sleep on
  std::vector<StoppedThread> stopped;    // the current stop's list (reserved before signalling)
  std::vector<ThreadRecord*> stop_waiting;        // targets whose acknowledgement is awaited
  // fork() (threads/fork.cpp).
  ManagerCore* fork_prev = nullptr;  // the live managers, under threads/fork.cpp's list lock
  ManagerCore* fork_next = nullptr;
  bool fork_stop_ours = false;       // prepare to parent/child: the forking thread holds the stop
  bool fork_gc_unlocked = false;     // ... and let Boehm's lock go for Boehm's own fork step
  ThreadRecord* fork_orphans TCR_GUARDED_BY(mutex) = nullptr;  // linked through next

  void keep_in_child(ThreadRecord* t, detail::ForkLeftovers& left) TCR_REQUIRES(mutex);
  void forget_in_child(ThreadRecord* t, detail::ForkLeftovers& left) TCR_REQUIRES(mutex);
  static void forget_mailbox(ThreadRecord* t, detail::ForkLeftovers& left, bool close);
  void free_in_child_locked(ThreadRecord* t) TCR_REQUIRES(mutex);
};


}  // namespace tcr
