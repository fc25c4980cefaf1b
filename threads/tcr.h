// Tcr: the thread control record, one per thread tcr manages or adopted. It caches the thread's
// kernel handle once (the seeds' fix: never ask the kernel for the thread's port again), holds
// the slots a runtime keeps per thread (scanned by Boehm GC), and publishes the thread's result
// for join. Records are recycled: when a thread is reaped its Tcr returns to the manager's free
// list with a new id on next use, so a stale ThreadRef is detected rather than misdirected.
// Thread-safety: state changes happen under the manager's registry lock; slots belong to the
// thread itself (and to a stopped world's GC).
#pragma once

#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "runtime/error.h"
#include "runtime/kernel_handle.h"
#include "runtime/machine_context.h"
#include "runtime/mach_ports.h"
#include "threads/semaphore.h"
#include "threads/stop_world.h"

namespace tcr {

class Tcr;
class ManagerCore;
struct StartHandshake;  // threads/manager_core.h
namespace detail {
struct InterruptState;  // threads/interrupt.h
struct StopWorldAccess;  // threads/stop_world.cpp
struct InterruptAccess;  // threads/interrupt.cpp
class MailboxLock;       // threads/internal.h
struct ExceptionsAccess;  // exceptions/tcr_access.h: the GC-trap layer's view of a Tcr
}  // namespace detail
void shutdown_thread_tcr(Tcr& t, void* result);  // threads/shutdown.cpp

// What a spawned thread runs. Its result is kept in a GC-visible slot until join.
// Captures of the std::function are NOT scanned by the GC: pass GC objects in SpawnOptions::argument.
using ThreadFunction = std::function<void*(Tcr& self)>;

enum class TcrState : std::uint8_t {
  // On the free list: no thread, no handle, no stack. Exists so records (and their GC slot
  // blocks) are reused and the heap stays flat in steady state.
  Free,
  // spawn() owns it and is mapping the stack and creating the OS thread; nobody else can see it.
  Reserved,
  // The OS thread runs but is still opening its kernel handle and registering with the GC; spawn
  // waits on the start handshake, so a failure here comes back to spawn's caller as an Error.
  Starting,
  // In the registry, running its function: visible to for_each, snapshot, signal and the GC.
  Running,
  // In shutdown_thread_tcr; still in the registry (a stop-the-world must still account for it)
  // until step 6 removes it.
  Exiting,
  // Out of the registry with its result published. It still owns its kernel handle and stack,
  // because its OS thread may still be running its last instructions; reaping (join, or the
  // reaper for detached threads) releases them once the OS thread is gone.
  Dead,
};
const char* to_string(TcrState state);

class Tcr {
 public:
  static constexpr std::size_t kSlots = 16;

  // The calling thread's Tcr, or nullptr if tcr neither created nor adopted it.
  static Tcr* current();

  std::uint64_t id() const { return m_id; }
  std::string_view name() const { return m_name; }
  TcrState state() const { return m_state.load(std::memory_order_acquire); }
  pid_t tid() const { return m_tid; }
  bool adopted() const { return m_adopted; }
  bool detached() const { return m_detached; }
  bool gc_registered() const { return m_gc_registered; }
  const KernelThreadHandle& handle() const { return m_handle; }
  // The tag for opening another kernel handle to this thread (the runtime's form of calling
  // mach_thread_self() again): such handles join this thread's chain, and shutdown step 5
  // closes any that are still open when the thread exits.
  HandleTag handle_tag() { return HandleTag{m_id, m_name, &m_handle_chain}; }
  mach::PortName mach_port() const { return m_mach_port; }
  // [stack_low, stack_high): the thread's stack (its own mapping, or pthread's for adopted ones).
  void* stack_low() const { return m_stack_low; }
  void* stack_high() const { return m_stack_high; }

  // The guard below the stack, [guard_low, stack_low): a write there is a stack overflow, which
  // becomes Step::StackOverflow on join once the fault handlers are installed
  // (exceptions/fault_signals.h). Empty for adopted threads (their stack is not ours).
  void* guard_low() const { return m_stack_map; }
  // The thread's alternate signal stack [low, low + size), or nullptr while none of ours is
  // installed. SIGSEGV and SIGBUS handlers run there, so a fault handler works after overflow.
  void* alt_stack() const { return m_alt_stack; }
  std::size_t alt_stack_size() const { return m_alt_stack_size; }
  // GC traps (write-barrier faults on a ProtectedRegion) this thread has taken, counted by the
  // fault handler (Signal mode) or by the ExceptionListener (Listener mode).
  std::uint64_t traps() const { return m_traps.load(std::memory_order_relaxed); }

  // Per-thread slots a runtime may fill with GC pointers: the collector scans them.
  void*& slot(std::size_t i) { return m_slots[kFirstUserSlot + i]; }
  // SpawnOptions::argument, kept GC-visible for the thread's life.
  void* argument() const { return m_slots[kArgumentSlot]; }

 private:
  friend class ManagerCore;
  friend class ThreadManager;
  friend class BlockingScope;
  friend class Semaphore;
  friend struct detail::StopWorldAccess;
  friend struct detail::InterruptAccess;
  friend class detail::MailboxLock;
  friend struct detail::ExceptionsAccess;
  friend void shutdown_thread_tcr(Tcr& t, void* result);
  static constexpr std::size_t kArgumentSlot = 0;
  static constexpr std::size_t kResultSlot = 1;
  static constexpr std::size_t kFirstUserSlot = 2;

  explicit Tcr(void** slots) : m_slots(slots) {}

  // Identity (reset on reuse).
  std::uint64_t m_id = 0;
  std::string m_name;
  std::atomic<TcrState> m_state{TcrState::Free};
  ManagerCore* m_core = nullptr;

  // The OS thread.
  pthread_t m_pthread{};
  pid_t m_tid = 0;
  bool m_adopted = false;
  bool m_detached = false;
  bool m_gc_registered = false;   // this manager registered it, so shutdown unregisters it
  bool m_joining = false;         // a join is under way or done
  // The thread called pthread_detach on itself: it cannot be pthread_joined, so its end is read
  // from its kernel handle before its stack is reused (ManagerCore::join_os_thread).
  bool m_self_detached = false;
  // Our mapping: guard page, stack, guard page, alternate signal stack (low to high); nullptr
  // for adopted threads.
  void* m_stack_map = nullptr;
  std::size_t m_stack_map_size = 0;
  void* m_stack_low = nullptr;
  void* m_stack_high = nullptr;
  // The alternate signal stack installed at thread start and the one it replaced, put back at
  // shutdown step 4 (under ASan, the sanitizer's own, which it unmaps itself at thread exit).
  // Spawned threads: inside m_stack_map; adopted ones: m_alt_map, mapped at adoption.
  void* m_alt_stack = nullptr;
  std::size_t m_alt_stack_size = 0;
  void* m_alt_map = nullptr;
  std::size_t m_alt_map_size = 0;
  stack_t m_prev_alt_stack{};
  unsigned m_extensions = 0;  // bit i: thread extension i attached (threads/thread_extensions.h)
  KernelThreadHandle m_handle;
  HandleChain m_handle_chain;  // every handle opened with handle_tag(), m_handle first
  mach::PortName m_mach_port = mach::kPortNull;

  // Start handshake and exit publication.
  ThreadFunction m_fn;
  // On the spawner's stack, not in the record: once the new thread has posted it, the record may
  // be reaped and reused (a quick detached thread) before the spawner wakes up to read it.
  StartHandshake* m_handshake = nullptr;
  Semaphore m_exited;         // posted by shutdown_thread_tcr step 7
  std::exception_ptr m_exception;

  // Stack overflow (exceptions/stack_guard.cpp): while the thread's function runs, a fault in
  // the guard jumps from the handler, on the alternate stack, back to m_overflow_env in
  // ManagerCore::run_guarded, abandoning the function's frames.
  sigjmp_buf m_overflow_env;
  std::atomic<bool> m_overflow_armed{false};
  void* m_overflow_address = nullptr;  // written by the handler before it jumps; 0: no overflow
  std::atomic<std::uint64_t> m_traps{0};

  // Stop-the-world (threads/stop_world.cpp). m_stw_state is the thread's side of the handshake
  // and the futex word a thread leaving a claimed BlockingScope sleeps on; the epochs say which
  // stop was asked of it and which one it acknowledged; the handler or step 2 posts m_stop_ack_sem.
  std::atomic<std::uint32_t> m_stw_state{0};
  std::atomic<std::uint64_t> m_stop_request{0};
  std::atomic<std::uint64_t> m_stop_ack{0};
  Semaphore m_stop_ack_sem;
  StopKind m_stop_kind = StopKind::Suspended;  // written by whoever acknowledges, before the ack
  RegisterSet m_stop_regs;                     // written by the suspend handler
  const RegisterSet* m_blocking_regs = nullptr;  // the outermost BlockingScope's capture
  unsigned m_blocking_depth = 0;               // own thread only

  // process-interrupt (threads/interrupt.cpp). The mailbox is open from registry entry until
  // the thread's exit drained it for the last time. Its lock is only ever held with the
  // manager's signals blocked (detail::MailboxLock), so a suspended thread never holds it: the
  // thread holding the world stopped may still interrupt the threads it stopped.
  std::mutex m_mailbox_mutex;
  std::deque<std::shared_ptr<detail::InterruptState>> m_mailbox;
  bool m_mailbox_open = false;
  std::atomic<bool> m_interrupt_pending{false};
  // An interrupt signal was sent and its handler has not run yet: a later interrupt() sends none,
  // so a thread that masks signals costs one queued real-time signal, not one per interrupt
  // (RLIMIT_SIGPENDING is per user: filling it would starve every stop-the-world of signals).
  std::atomic<bool> m_wake_signal_pending{false};
  // The futex word of the Semaphore this thread is blocked in, for its interrupt handler to bump.
  // Written by the thread, read by its own signal handler only.
  std::atomic<std::atomic<std::uint32_t>*> m_wait_word{nullptr};
  bool m_running_interrupts = false;  // own thread only: closures do not nest
  // The interrupt whose closure runs now (own thread only): a fork child settles it for a thread
  // that does not exist there (threads/fork.h).
  detail::InterruptState* m_interrupt_running = nullptr;

  void** m_slots;             // GC_MALLOC_UNCOLLECTABLE block of kFirstUserSlot + kSlots words
  Tcr* m_next = nullptr;      // free list / zombie list link
  std::size_t m_registry_index = 0;
  // Adopted threads keep the manager's core alive: they may outlive the ThreadManager object and
  // still need it when they exit.
  std::shared_ptr<ManagerCore> m_core_ref;
};

// A reference to a thread that survives the thread: it names the Tcr, the id it had *and* the
// manager it belongs to, so a join or signal after the record was reaped and reused fails with
// StaleThread, and a ref handed to another manager fails with BadArgument before that manager
// looks at the record (which may belong to a manager already destroyed).
class ThreadRef {
 public:
  ThreadRef() = default;
  std::uint64_t id() const { return m_id; }
  bool valid() const { return m_tcr != nullptr; }
  Tcr* tcr_unchecked() const { return m_tcr; }

 private:
  friend class ThreadManager;
  friend class ManagerCore;
  ThreadRef(Tcr* tcr, std::uint64_t id, std::uint64_t manager)
      : m_tcr(tcr), m_id(id), m_manager(manager) {}
  Tcr* m_tcr = nullptr;
  std::uint64_t m_id = 0;
  // ManagerCore::serial of the owner: unique in the process, never reused (an address could be).
  std::uint64_t m_manager = 0;
};

}  // namespace tcr
