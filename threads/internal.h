// What threads/*.cpp share about stop-the-world and interrupts; not part of the API.
#pragma once

#include <signal.h>

#include <cstdint>
#include <memory>

#include "runtime/error.h"
#include "threads/manager_core.h"
#include "threads/stop_world.h"

namespace tcr {
class Tcr;
class ManagerCore;
namespace detail {

// The thread's side of the stop-the-world handshake (Tcr::m_stw_state).
inline constexpr std::uint32_t kStwRunning = 0;
inline constexpr std::uint32_t kStwBlocking = 1;  // in a BlockingScope, not claimed
inline constexpr std::uint32_t kStwClaimed = 2;   // in a BlockingScope, held by a stopped world
inline constexpr std::uint32_t kStwExiting = 3;   // past shutdown step 2: never signalled again

// threads/signals.cpp: chosen and installed once per process; the first call logs the choice.
Result<ManagerSignals> install_manager_signals();
ManagerSignals manager_signals();  // zeros before install
void unblock_manager_signals();
void block_manager_signals(sigset_t* old);

struct InterruptState;

// threads/thread_extensions.cpp: attaches every registered extension to the calling thread
// (bit i of *attached set for each that did; on failure the ones attached are detached again),
// and detaches those in `attached`, last first.
Result<void> attach_extensions(Tcr& t, unsigned* attached);
void detach_extensions(Tcr& t, unsigned attached);

// How a stop takes each target, decided under the registry lock.
enum class Claim : std::uint8_t {
  Signal,    // running: send the suspend signal, wait for the handler's acknowledgement
  Blocking,  // in a BlockingScope: claimed without a signal
  Exiting,   // past step 2: claimed without a signal
  AwaitAck,  // past step 2 and acknowledging this epoch itself: wait for its post
};

struct StopWorldAccess {
  static Claim claim(Tcr& t, std::uint64_t epoch);
  // The entry a conservative scan reads for a thread that acknowledged (or was claimed) as kind.
  static void fill_entry(StoppedThread& e, const Tcr& t, StopKind kind);
  // Under the registry lock: lets every thread of the current stop go, opens the gate.
  static void resume_locked(ManagerCore& core, std::uint64_t epoch, bool holds_gc_lock)
      TCR_REQUIRES(core.mutex);
  // The suspend signal's handler body (async-signal-safe).
  static void suspend_self(Tcr& t, void* ucontext);
  // Shutdown step 2, with the manager's signals already blocked.
  static void acknowledge_exit(Tcr& t);
  // Resets a record's handshake state when it enters the registry (under the registry lock).
  static void reset(Tcr& t);
  // Called when a thread exits while holding the world stopped: resumes it, and says so.
  static void release_stop_at_exit(Tcr& t);
};

// The lock of a thread's interrupt mailbox, held with the manager's signals blocked: a thread is
// never suspended (or interrupted) while it holds it, so the thread holding the world stopped
// can queue work for the threads it stopped.
class MailboxLock {
 public:
  explicit MailboxLock(Tcr& t);
  ~MailboxLock();
  MailboxLock(const MailboxLock&) = delete;
  MailboxLock& operator=(const MailboxLock&) = delete;

 private:
  Tcr& m_tcr;
  sigset_t m_old_mask;
};

struct InterruptAccess {
  static void set_running(Tcr& t, bool running);
  static std::shared_ptr<InterruptState> pop(Tcr& t, bool close_when_empty);
  static void run_one(Tcr& t, InterruptState& st);
  // The interrupt signal's handler body (async-signal-safe): wakes the thread's manager wait.
  static void wake_from_handler(Tcr& t);
  // Runs the queued closures if the thread is at a safe point for them; returns how many ran.
  static std::size_t run_pending(Tcr& t);
  // Whether run_pending would run them now.
  static bool can_run(const Tcr& t);
  // Shutdown: the last safe point. Runs what is queued, then closes the mailbox.
  static void drain_at_exit(Tcr& t);
  // Opens the mailbox when the thread enters the registry.
  static void open(Tcr& t);
};

}  // namespace detail
}  // namespace tcr
