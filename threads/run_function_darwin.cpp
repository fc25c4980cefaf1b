// Running a thread's function on Darwin (compiled only on Apple; not built on the Linux machine
// this project is tested on). Darwin's pthread_exit does not unwind C++ frames, so there is no
// forced unwind to let through; a thread function must return rather than call pthread_exit,
// or its TCR is never shut down.
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

}  // namespace tcr
