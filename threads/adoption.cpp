// Adoption: a thread tcr did not create (the main thread, a thread of the embedding program)
// takes a Tcr of its own, and gives it back at release or at its exit.
#include <errno.h>
#include <pthread.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "runtime/gc.h"
#include "runtime/log.h"
#include "runtime/os.h"
#include "runtime/scope_guard.h"
#include "threads/current.h"
#include "threads/internal.h"
#include "threads/manager_core.h"
#include "threads/thread_manager.h"

namespace tcr {
namespace {

// The pthread key whose destructor releases an adopted thread's Tcr when that thread exits.
pthread_key_t adopted_key() {
  static const pthread_key_t s_key = [] {
    pthread_key_t key;
    const int rc = pthread_key_create(&key, [](void* p) {
      // Runs on the exiting foreign thread, after its C++ thread_local destructors.
      shutdown_thread_tcr(*static_cast<ThreadRecord*>(p), nullptr);
    });
    if (rc != 0) {
      log::error("pthread_key_create for adopted threads failed: {}", std::strerror(rc));
      std::abort();  // only at first adoption, and only when the process is out of keys
    }
    return key;
  }();
  return s_key;
}

}  // namespace

Result<Tcr*> ThreadManager::adopt_current_thread(std::string_view name, AdoptOptions options) {
  ManagerCore& core = *m_core;
  if (detail::t_current != nullptr) return fail(Step::AlreadyAdopted);
  const Result<bool> gc_register = core.gc_registration(options.gc, "adopt");
  if (!gc_register) return std::unexpected(gc_register.error());
  Result<ThreadRecord*> acquired = core.acquire_record(true);
  if (!acquired) return std::unexpected(acquired.error());
  ThreadRecord* t = *acquired;
  // One owner per acquisition below: a failure at any step releases what the steps before it
  // took, last first, and gives the record back bare (its handle, its alternate stack mapping).
  ScopeGuard give_back([&core, t] { core.abandon_record(t); });
  // An adopted thread runs on its own stack: a cached one on this record goes, so only reaped
  // records ever put a stack back into the cache.
  t->os.stack.release();
  try {
    t->run.name.assign(name);
  } catch (const std::bad_alloc&) {
    return fail(Step::TcrAllocate, ENOMEM, "thread name");
  }
  t->os.pthread = pthread_self();
  t->os.tid = os::gettid();
  os::current_stack_bounds(&t->os.stack_low, &t->os.stack_high);
  Result<KernelThreadHandle> handle = KernelThreadHandle::open_current(core.mode, t->handle_tag());
  if (!handle) return std::unexpected(handle.error());
  t->os.handle = std::move(*handle);
  // Its own alternate signal stack, with a guard page below it, released at exit.
  if (Result<void> alt = t->os.alt.map_own(); !alt) return std::unexpected(alt.error());
  if (Result<void> state = ManagerCore::attach_thread_state(t); !state) {
    return std::unexpected(state.error());
  }
  ScopeGuard detach_state([t] { ManagerCore::detach_thread_state(t); });
  if (*gc_register) {
    Result<void*> base = gc::current_stack_base();
    Result<bool> registered =
        base ? gc::register_current_thread(*base) : Result<bool>(std::unexpected(base.error()));
    if (!registered) return std::unexpected(registered.error());
    // false: the GC already knew this thread (the main thread): not ours to unregister.
    t->os.gc_registered = *registered;
  }
  ScopeGuard unregister([t] {
    if (t->os.gc_registered) gc::unregister_current_thread();
  });
  if (core.options.mach_space != nullptr) {
    t->os.mach_port = core.options.mach_space->current_thread_port();
  }
  t->core_ref = m_core;
  ScopeGuard drop_core([t] { t->core_ref.reset(); });
  if (int rc = pthread_setspecific(adopted_key(), t); rc != 0) {
    return fail(Step::TcrAllocate, rc, "pthread_setspecific");
  }
  drop_core.dismiss();
  unregister.dismiss();
  detach_state.dismiss();
  give_back.dismiss();
  detail::unblock_manager_signals();
  core.enter_registry(t);
  detail::t_current = t;
  {
    MutexLock lock(core.mutex);
    ++core.stats.adopted;
  }
  log::debug("thread #{} '{}' adopted, tid {}", t->run.id, t->run.name, t->os.tid);
  return t;
}

Result<void> ThreadManager::release_current_thread() {
  ThreadRecord* t = detail::t_current;
  if (t == nullptr || !t->os.adopted || t->core != m_core.get()) return fail(Step::NotAdopted);
  if (t->state() != TcrState::Running) {
    return fail(Step::BadArgument, 0, "release_current_thread from the thread's own exit hooks");
  }
  if (t->os.stop.blocking_depth > 0) {
    return fail(Step::BadArgument, 0, "release_current_thread inside a BlockingScope");
  }
  // An interrupt closure (or the trampoline around it) runs on the record: the safe point that
  // called it goes on using it after the closure returns, and the release's own last safe point
  // would run the rest of the queue nested inside it.
  if (t->run.mailbox.running) {
    return fail(Step::BadArgument, 0, "release_current_thread inside an interrupt closure");
  }
  pthread_setspecific(adopted_key(), nullptr);
  shutdown_thread_tcr(*t, nullptr);
  return {};
}

}  // namespace tcr
