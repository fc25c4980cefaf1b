// Running a thread's function on Darwin (compiled only on Apple; not built on the Linux machine
// this project is tested on). Darwin's pthread_exit does not unwind C++ frames, so there is no
// forced unwind to let through; a thread function must return rather than call pthread_exit,
// or its TCR is never shut down.
#include "runtime/log.h"
#include "threads/internal.h"
#include "threads/manager_core.h"

namespace tcr {

void* ManagerCore::run_thread_function(ThreadRecord* t) {
  try {
    // The start hooks first, inside the same guard: one that throws is the thread's exception.
    if (!detail::run_start_hooks(*t)) return nullptr;
    return t->run.fn(*t);
  } catch (...) {
    t->run.exception = std::current_exception();
  }
  return nullptr;
}

void ManagerCore::run_exit_hook(const std::function<void(Tcr&)>& hook, ThreadRecord& t) {
  try {
    hook(t);
  } catch (...) {
    log::error("exit hook of thread #{} '{}' threw {}; ignored", t.run.id, t.run.name,
               describe_current_exception());
  }
}

// No forced unwind on Darwin (see the top), so no unwound frames for a sanitizer to forget.
void ManagerCore::forget_unwound_frames(const ThreadRecord&) {}

void ManagerCore::run_interrupt_closure(const InterruptFunction& fn, ThreadRecord& t) {
  try {
    fn(t);
  } catch (...) {
    log::warn("thread #{} '{}': interrupt closure threw {}", t.run.id, t.run.name,
              describe_current_exception());
  }
}

}  // namespace tcr
