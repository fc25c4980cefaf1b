// Running a thread's function on glibc, where pthread_exit and cancellation unwind the stack with
// a "forced unwind" that C++ code must let through.
#include <cxxabi.h>

#include <exception>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include "runtime/log.h"
#include "threads/internal.h"
#include "threads/manager_core.h"

namespace tcr {

// ASan sees a C++ throw (it intercepts __cxa_throw) but not glibc's forced unwind: the frames a
// pthread_exit or a cancellation removed keep their redzones poisoned, and the teardown's own
// calls then land on them (a false report inside pthread_sigmask's interceptor, with ASan's own
// CHECK failing on the stale frame, seen at -O1). Everything below this frame is dead by now.
__attribute__((noinline)) void ManagerCore::forget_unwound_frames(const ThreadRecord& t) {
#if defined(__SANITIZE_ADDRESS__)
  char here = 0;
  char* const low = static_cast<char*>(t.stack_low());
  char* const top = &here;
  if (low != nullptr && low < top) ASAN_UNPOISON_MEMORY_REGION(low, static_cast<size_t>(top - low));
#else
  (void)t;
#endif
}

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
    forget_unwound_frames(*t);
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
