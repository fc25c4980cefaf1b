// What threads/*.cpp share about the thread lifecycle, stop-the-world and interrupts; not part of
// the API (not installed).
#pragma once

#include <signal.h>

#include <cstddef>

#include "runtime/error.h"
#include "threads/manager_core.h"
#include "threads/record.h"
#include "threads/stop_world.h"

namespace tcr {

// The ordered teardown of a thread, on the thread itself (threads/shutdown.cpp).
void shutdown_thread_tcr(ThreadRecord& t, void* result);

namespace detail {

// threads/signals.cpp: chosen and installed once per process; the first call logs the choice.
Result<ManagerSignals> install_manager_signals();
ManagerSignals manager_signals();  // zeros before install
void unblock_manager_signals();
void block_manager_signals(sigset_t* old);

// threads/thread_extensions.cpp: attaches every registered extension to the calling thread
// (bit i of *attached set for each that did; on failure the ones attached are detached again),
// and detaches those in `attached`, last first.
Result<void> attach_extensions(ThreadRecord& t, unsigned* attached);
void detach_extensions(ThreadRecord& t, unsigned attached);

// threads/interrupt.cpp. Runs the queued closures if the thread is at a safe point for them
// (can_run_interrupts); returns how many ran.
std::size_t run_pending_interrupts(ThreadRecord& t);
bool can_run_interrupts(const ThreadRecord& t);
// The thread's exit: its last safe point. Runs what is queued, then closes the mailbox.
void drain_interrupts_at_exit(ThreadRecord& t);
// After it (also when a closure it ran ended the thread with pthread_exit, leaving the rest
// queued): closes the mailbox and settles whatever is still queued Undelivered.
void settle_interrupts_left_at_exit(ThreadRecord& t);

// threads/spawn.cpp: BadArgument unless a stack of `bytes` is in [64 KiB, 1 GiB].
Result<void> check_stack_size(std::size_t bytes, const char* op);
// threads/thread_start.cpp: runs the manager's start hooks on the thread; false (and the code in
// run.start_failure) when one failed the thread.
bool run_start_hooks(ThreadRecord& t);

}  // namespace detail
}  // namespace tcr
