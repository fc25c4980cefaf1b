// Running a thread's function on glibc, where pthread_exit and cancellation unwind the stack with
// a "forced unwind" that C++ code must let through.
#include <cxxabi.h>

#include <exception>

#include "runtime/log.h"
#include "threads/internal.h"
#include "threads/manager_core.h"

namespace tcr {

// no_sanitize("null"): UBSan reports binding the catch reference to a forced unwind, which has
// no C++ object behind it; catching it by reference is what the GCC ABI documents.
__attribute__((no_sanitize("null"))) void* ManagerCore::run_thread_function(ThreadRecord* t) {
  try {
    // The start hooks first, inside the same guard: one that throws is the thread's exception.
    if (!detail::run_start_hooks(*t)) return nullptr;
    return t->run.fn(*t);
  } catch (abi::__forced_unwind&) {
    // pthread_exit or cancellation inside the function: shut down now, then let the unwind go
    // on (swallowing it aborts the process).
    t->run.fn = nullptr;
    shutdown_thread_tcr(*t, nullptr);
    throw;
  } catch (...) {
    t->run.exception = std::current_exception();
  }
  return nullptr;
}

__attribute__((no_sanitize("null"))) void ManagerCore::run_exit_hook(
    const std::function<void(Tcr&)>& hook, ThreadRecord& t) {
  try {
    hook(t);
  } catch (abi::__forced_unwind&) {
    // pthread_exit in an exit hook: the thread's teardown finishes as the unwind passes through
    // shutdown_thread_tcr (its ExitUnwind guard); the hooks after this one do not run.
    log::warn("exit hook of thread #{} '{}' called pthread_exit: the later hooks are skipped",
              t.run.id, t.run.name);
    throw;
  } catch (...) {
    log::error("exit hook of thread #{} '{}' threw {}; ignored", t.run.id, t.run.name,
               describe_current_exception());
  }
}

__attribute__((no_sanitize("null"))) void ManagerCore::run_interrupt_closure(
    const InterruptFunction& fn, ThreadRecord& t) {
  try {
    fn(t);
  } catch (abi::__forced_unwind&) {
    throw;  // pthread_exit or cancellation in the closure: swallowing it aborts the process
  } catch (...) {
    log::warn("thread #{} '{}': interrupt closure threw {}", t.run.id, t.run.name,
              describe_current_exception());
  }
}

}  // namespace tcr
