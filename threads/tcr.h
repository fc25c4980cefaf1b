// Tcr: the thread control record, one per thread tcr manages or adopted. It caches the thread's
// kernel handle once (the seeds' fix: never ask the kernel for the thread's port again), holds
// the slots a runtime keeps per thread (scanned by Boehm GC), and publishes the thread's result
// for join. Records are recycled: when a thread is reaped its Tcr returns to the manager's free
// list with a new id on next use, so a stale ThreadRef is detected rather than misdirected.
// Thread-safety: state changes happen under the manager's registry lock; slots belong to the
// thread itself (and to a stopped world's GC). The accessors read; only threads/ writes.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

#include "runtime/error.h"
#include "runtime/kernel_handle.h"
#include "runtime/mach_ports.h"

namespace tcr {

class Tcr;
class ManagerCore;

// What a spawned thread runs. Its result is kept in a GC-visible slot until join.
// Captures of the std::function are NOT scanned by the GC: pass GC objects in
// SpawnOptions::argument.
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
  // until it leaves the registry (leave_registry in threads/shutdown.cpp).
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

  std::uint64_t id() const;
  std::string_view name() const;
  TcrState state() const;
  pid_t tid() const;
  bool adopted() const;
  bool detached() const;
  bool gc_registered() const;
  const KernelThreadHandle& handle() const;
  // The tag for opening another kernel handle to this thread (the runtime's form of calling
  // mach_thread_self() again): such handles join this thread's chain, and the thread's exit
  // (normalize_kernel_handle in threads/shutdown.cpp) closes any that are still open.
  HandleTag handle_tag();
  mach::PortName mach_port() const;
  // [stack_low, stack_high): the thread's stack (its own mapping, or pthread's for adopted ones).
  void* stack_low() const;
  void* stack_high() const;

  // The guard below the stack, [guard_low, stack_low): a write there is a stack overflow, which
  // becomes Step::StackOverflow on join once the fault handlers are installed
  // (exceptions/fault_signals.h). Empty for adopted threads (their stack is not ours).
  void* guard_low() const;
  // The thread's alternate signal stack [low, low + size), or nullptr while none of ours is
  // installed. SIGSEGV and SIGBUS handlers run there, so a fault handler works after overflow.
  void* alt_stack() const;
  std::size_t alt_stack_size() const;
  // GC traps (write-barrier faults on a ProtectedRegion) this thread has taken, counted by the
  // fault handler (Signal mode) or by the ExceptionListener (Listener mode).
  std::uint64_t traps() const;

  // Per-thread slots a runtime may fill with GC pointers: the collector scans them. Cleared when
  // the thread exits (after the exit hooks), so what a thread kept there does not outlive it.
  void*& slot(std::size_t i) { return m_slots[kFirstUserSlot + i]; }
  // SpawnOptions::argument, kept GC-visible until the thread exits or clears it.
  void* argument() const { return m_slots[kArgumentSlot]; }
  // Replaces (nullptr: clears) the argument, so it stops keeping its object alive. Own thread.
  void set_argument(void* argument) { m_slots[kArgumentSlot] = argument; }
  // What ManagerOptions::interrupt_notify is handed for this thread, kept GC-visible: the
  // runtime's own thread object, say. Set on the thread itself (a start hook); cleared at exit.
  void set_notify_context(void* context);
  void* notify_context() const;

  Tcr(const Tcr&) = delete;
  Tcr& operator=(const Tcr&) = delete;

 protected:
  // The record behind a Tcr is threads/record.h's ThreadRecord, internal to threads/: what it
  // holds (the OS thread's resources, one run's identity, the stop-the-world and interrupt
  // state) is no embedder's business, and its headers stay out of theirs.
  static constexpr std::size_t kArgumentSlot = 0;
  static constexpr std::size_t kResultSlot = 1;
  static constexpr std::size_t kNotifySlot = 2;
  static constexpr std::size_t kFirstUserSlot = 3;
  // `slots`: a GC_MALLOC_UNCOLLECTABLE-like block of kFirstUserSlot + kSlots words.
  explicit Tcr(void** slots) : m_slots(slots) {}
  ~Tcr() = default;
  void** slot_block() const { return m_slots; }

 private:
  void** m_slots;
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
  std::uint64_t manager_serial() const { return m_manager; }
  // For a binding that keeps a ref as its parts (the C API's tcr_thread): gives back the ref
  // those parts came from. The manager checks the serial and the id before it trusts the
  // record, so a stale ref is refused; parts that did not come from a ref are not allowed.
  static ThreadRef from_parts(Tcr* tcr, std::uint64_t id, std::uint64_t manager_serial) {
    return ThreadRef(tcr, id, manager_serial);
  }

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
