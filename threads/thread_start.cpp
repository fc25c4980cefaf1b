// A spawned thread's first and last frames: thread_entry takes the thread from pthread_create to
// its function (kernel handle, alternate stack, thread extensions, GC registration, registry),
// and run_guarded is the landing point a stack overflow jumps back to. Also the per-thread
// exception state an adopted thread attaches the same way (threads/adoption.cpp).
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>

#include <atomic>
#include <string>
#include <utility>

#include "runtime/gc.h"
#include "runtime/log.h"
#include "runtime/os.h"
#include "runtime/scope_guard.h"
#include "threads/current.h"
#include "threads/internal.h"
#include "threads/manager_core.h"

namespace tcr {

Result<void> ManagerCore::attach_thread_state(ThreadRecord* t) {
  // The alternate signal stack first: from here on a fault handler has room even when the
  // thread's own stack is exhausted. A spawned thread's is in its stack mapping, an adopted
  // one's in a mapping of its own. The one it replaces comes back at exit.
  if (Result<void> alt = t->os.alt.install(t->os.stack.alt(), alt_stack_bytes()); !alt) return alt;
  ScopeGuard restore([t] { restore_alt_stack(t); });
  if (Result<void> r = detail::attach_extensions(*t, &t->os.extensions); !r) return r;
  restore.dismiss();
  return {};
}

void ManagerCore::detach_thread_state(ThreadRecord* t) {
  detail::detach_extensions(*t, std::exchange(t->os.extensions, 0u));
  restore_alt_stack(t);
}

void ManagerCore::restore_alt_stack(ThreadRecord* t) {
  // A thread that exits from inside a signal handler (pthread_exit in a handler chained from
  // ours) runs on the alternate stack (AltStack::restore says why it then stays). A spawned
  // thread's goes with its stack mapping at reaping anyway; an adopted thread's separate
  // mapping is left, and that is said once.
  const bool own = t->os.alt.owns_mapping();
  if (t->os.alt.restore() || !own) return;
  static std::atomic<bool> s_said{false};
  if (!s_said.exchange(true)) {
    log::warn("thread #{} '{}' exited on its alternate signal stack: that stack stays mapped",
              t->run.id, t->run.name);
  }
}

void* ManagerCore::report_start_failure(ThreadRecord* t, Error error) {
  StartHandshake* hs = std::exchange(t->run.handshake, nullptr);
  hs->error = std::move(error);
  hs->failed = true;
  detail::t_current = nullptr;
  hs->post();  // spawn() joins this thread and gives the record back bare
  return nullptr;
}

Result<void> ManagerCore::start_on_thread(ThreadRecord* t) {
  // The kernel handle is opened once, here, on the thread it names, and cached in the Tcr for
  // the thread's whole life (the seeds' fix: never ask the kernel for it again). On a failed
  // start spawn releases it with the record (ThreadRecord::release_os_resources).
  Result<KernelThreadHandle> handle = KernelThreadHandle::open_current(mode, t->handle_tag());
  if (!handle) return std::unexpected(handle.error());
  t->os.handle = std::move(*handle);
  if (options.mach_space != nullptr) t->os.mach_port = options.mach_space->current_thread_port();
  // What only this thread can undo, it undoes itself before it reports the failure.
  if (Result<void> state = attach_thread_state(t); !state) return state;
  ScopeGuard detach_state([t] { detach_thread_state(t); });
  if (t->os.gc_registered) {
    Result<bool> registered = gc::register_current_thread(t->os.stack_high);
    if (!registered) {
      t->os.gc_registered = false;
      return std::unexpected(registered.error());
    }
  }
  detach_state.dismiss();
  return {};
}

void* ManagerCore::thread_entry(void* arg) {
  ThreadRecord* t = static_cast<ThreadRecord*>(arg);
  ManagerCore* core = t->core;
  // Cancellation is allowed only while the thread's function runs: a cancel acted on at a
  // cancellation point inside the start-up or shutdown code (a log write, an exit hook) would
  // unwind out of it half done and leave the record in the registry.
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, nullptr);
  // The spawner's mask is inherited; the manager's own signals must reach every thread it runs.
  detail::unblock_manager_signals();
  // Every reader of os.pthread (spawn on a failed start, join, the reaper) reads it after a
  // handshake, semaphore or lock that this thread passes later.
  t->os.pthread = pthread_self();
  detail::t_current = t;
  t->os.tid = os::gettid();
  if (!t->run.name.empty()) os::set_current_thread_name(t->run.name.c_str());
  if (Result<void> started = core->start_on_thread(t); !started) {
    return report_start_failure(t, started.error());
  }
  log::debug("thread #{} '{}' started, tid {}", t->run.id, t->run.name, t->os.tid);
  StartHandshake* hs = std::exchange(t->run.handshake, nullptr);
  core->enter_registry(t);
  hs->post();  // the last touch of the spawner's handshake

  pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, nullptr);
  void* result = run_guarded(t);
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, nullptr);
  // The closure's captures are destroyed here, on the thread, before shutdown.
  t->run.fn = nullptr;
  shutdown_thread_tcr(*t, result);
  return nullptr;
}

bool detail::run_start_hooks(ThreadRecord& t) {
  for (const StartHook& hook : t.core->options.start_hooks) {
    if (const int code = hook(t); code != 0) {
      t.run.start_failure = code;
      return false;
    }
  }
  return true;
}

std::string ManagerCore::describe_current_exception() {
  try {
    throw;
  } catch (const std::exception& e) {
    return std::string("'") + e.what() + "'";
  } catch (...) {
    return "a non-standard exception";
  }
}

// The stack-overflow recovery point, in a frame that outlives the thread's function. When the
// function writes into its guard page, the fault handler (exceptions/stack_guard.cpp), on the
// alternate stack, jumps back here (OverflowGuard::escape); the frames in between are abandoned
// without running their destructors (a C++ unwind from an arbitrary faulting instruction is not
// possible without -fnon-call-exceptions: GCC's personality routine terminates the process when
// the faulting pc is outside a call site). savemask 1: the jump also restores this signal mask,
// undoing the handler's.
void* ManagerCore::run_guarded(ThreadRecord* t) {
  if (sigsetjmp(t->run.overflow.env, 1) != 0) {
    // What the abandoned frames left in the record: a BlockingScope never left (a stop may hold
    // it claimed: leave() waits for the resume, as a scope's end does), an interrupt closure or
    // a manager wait cut short.
    if (t->os.stop.blocking_depth > 0) {
      t->os.stop.blocking_depth = 1;
      BlockingScope::leave(t);
    }
    t->run.mailbox.running = false;
    t->run.mailbox.wait_word.store(nullptr, std::memory_order_relaxed);
    // Not logged here: the overflow may have hit inside the logger, holding its lock. join
    // reports it (Step::StackOverflow, with the fault address).
    return nullptr;
  }
  t->run.overflow.arm();
  void* result = run_thread_function(t);
  t->run.overflow.disarm();
  return result;
}

void OverflowGuard::escape(void* fault_address) {
  bool was_armed = true;
  if (!armed.compare_exchange_strong(was_armed, false, std::memory_order_acq_rel)) return;
  address = fault_address;
  siglongjmp(env, 1);
}

}  // namespace tcr
