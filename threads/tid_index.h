// The process-wide map from a kernel thread id to the Tcr of the tcr thread that has that id
// now, for code that learns of a thread only by its tid: the userfaultfd listener, whose fault
// messages name the faulting thread's tid. Publishing and withdrawing are one atomic store each
// (spawn and exit pay nothing more); lookups run under a mutex that ManagerCore's destructor also
// takes before it frees records, so a looked-up Tcr stays valid while the callback runs.
// The table is one lazily-touched mapping indexed by tid (pid_max entries); if it cannot be
// mapped, lookups find nothing and the listener reports faults without their Tcr.
#pragma once

#include <sys/types.h>

#include "runtime/error.h"
#include "runtime/mutex.h"

namespace tcr {
class ThreadRecord;
namespace detail {

// Maps the table once per process (at the first ThreadManager::create); the error is returned
// once and logged by the caller; later calls answer {}.
Result<void> tid_index_init();
// The thread enters / leaves the registry (its tid is set).
void tid_index_publish(ThreadRecord* t);
void tid_index_withdraw(ThreadRecord* t);
// Calls fn(tcr) for the live Tcr whose thread has `tid`, under the lookup mutex; false if none.
template <class F>
bool with_tcr_of_tid(pid_t tid, F&& fn);
// Held while a looked-up record is used, and while records are freed (~ManagerCore). Takes part
// in fork() from tid_index_init on: a fork during a lookup would leave the child's locked.
inline Mutex tid_lookup_mutex;
ThreadRecord* tid_index_find_locked(pid_t tid) TCR_REQUIRES(tid_lookup_mutex);

template <class F>
bool with_tcr_of_tid(pid_t tid, F&& fn) {
  MutexLock lock(tid_lookup_mutex);
  ThreadRecord* t = tid_index_find_locked(tid);
  if (t == nullptr) return false;
  fn(*t);
  return true;
}

}  // namespace detail
}  // namespace tcr
