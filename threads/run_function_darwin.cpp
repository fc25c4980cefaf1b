// Running a thread's function on Darwin (compiled only on Apple; not built on the Linux machine
// this project is tested on). Darwin's pthread_exit does not unwind C++ frames, so there is no
// forced unwind to let through; a thread function must return rather than call pthread_exit,
// or its TCR is never shut down.
#include "runtime/log.h"
#include "threads/manager_core.h"

namespace tcr {

void* ManagerCore::run_thread_function(Tcr* t) {
  try {
    return t->m_fn(*t);
  } catch (...) {
    t->m_exception = std::current_exception();
  }
  return nullptr;
}

void ManagerCore::run_exit_hook(const std::function<void(Tcr&)>& hook, Tcr& t) {
  try {
    hook(t);
  } catch (...) {
    log::error("exit hook of thread #{} '{}' threw {}; ignored", t.m_id, t.m_name,
               describe_current_exception());
  }
}

void ManagerCore::run_interrupt_closure(const InterruptFunction& fn, Tcr& t) {
  try {
    fn(t);
  } catch (...) {
    log::warn("thread #{} '{}': interrupt closure threw {}", t.m_id, t.m_name,
              describe_current_exception());
  }
}

}  // namespace tcr
