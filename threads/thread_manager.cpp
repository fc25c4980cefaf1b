// ThreadManager: the manager's life (create, shutdown, destruction), reaping, and what it tells
// about its threads. Spawning is in threads/spawn.cpp, adoption in threads/adoption.cpp, the
// record pool and registry in threads/record_pool.cpp.
#include "threads/thread_manager.h"

#include <errno.h>

#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "runtime/fork.h"
#include "runtime/gc.h"
#include "runtime/log.h"
#include "threads/current.h"
#include "threads/fork.h"
#include "threads/internal.h"
#include "threads/manager_core.h"
#include "threads/tid_index.h"

namespace tcr {
namespace {

// Cores whose manager was destroyed where it could not wait (~ThreadManager): kept alive, and
// reachable (so a leak checker sees them held, not lost), for as long as the process lives.
std::mutex& kept_mutex() {
  static std::mutex* const s_mutex = new std::mutex;
  return *s_mutex;
}

void keep_forever(std::shared_ptr<ManagerCore> core) {
  static auto* const s_kept = new std::vector<std::shared_ptr<ManagerCore>>;
  std::lock_guard lock(kept_mutex());
  try {
    s_kept->push_back(std::move(core));
  } catch (const std::bad_alloc&) {
    // Kept, unreachable; freeing it would be a use-after-free for the threads still on it.
    if (new (std::nothrow) std::shared_ptr<ManagerCore>(std::move(core)) == nullptr) std::abort();
  }
}

}  // namespace

Result<std::unique_ptr<ThreadManager>> ThreadManager::create(ManagerOptions options) {
  if (Result<void> size = detail::check_stack_size(options.stack_size, "create"); !size) {
    return std::unexpected(size.error());
  }
  if (options.gc && options.gc_owner == GcOwner::Tcr) {
    if (Result<void> r = gc::initialize(); !r) return std::unexpected(r.error());
  } else if (options.gc) {
    (void)gc::adopt_runtime_collector();  // if the runtime initialized it already
  }
  // After Boehm's start-up, so its signals are known and avoided.
  if (Result<ManagerSignals> r = detail::install_manager_signals(); !r) {
    return std::unexpected(r.error());
  }
  HandleMode mode = detected_handle_mode();
  if (options.handle_mode == HandleModeChoice::Tgkill) mode = HandleMode::Tgkill;
  if (options.handle_mode == HandleModeChoice::Pidfd && mode != HandleMode::Pidfd) {
    return fail(Step::PidfdOpen, EINVAL, "this kernel has no thread pidfds (PIDFD_THREAD)");
  }
  if (Result<void> index = detail::tid_index_init(); !index) {
    log::warn("no tid index ({}): the exception listener will report faults without their TCR",
              index.error().message());
  }
  fork_participate(fork_guard("abandoned managers", ForkRank::Setup, kept_mutex()));
  auto core = std::make_shared<ManagerCore>(std::move(options), mode);
  detail::fork_track(*core);
  return std::unique_ptr<ThreadManager>(new ThreadManager(std::move(core)));
}

ThreadManager::ThreadManager(std::shared_ptr<ManagerCore> core) : m_core(std::move(core)) {}

ThreadManager::~ThreadManager() {
  const ThreadRecord* self = detail::t_current;
  const bool own_thread = self != nullptr && self->core == m_core.get() && !self->os.adopted;
  // Waiting here for the manager's threads would never end when the caller is one of them (it
  // waits for itself: exit() called from a spawned thread runs a static manager's destructor
  // there), or holds some manager's world stopped (the threads it waits for cannot finish).
  // A destructor cannot answer an error, and freeing the records would pull them from under the
  // threads running on them: the manager's state is left alive instead, unowned, for the process
  // to end (or for its threads to finish on), and that is said.
  if (own_thread || ManagerCore::caller_holds_a_stop()) {
    log::error("ThreadManager destroyed from {} thread #{} '{}': its threads are left running "
               "and its records are not freed; destroy it from a thread it did not spawn, "
               "with no world stopped",
               own_thread ? "its own" : "a world-stopping", self->run.id, self->run.name);
    keep_forever(std::move(m_core));
    return;
  }
  // A thread that adopted itself (often the main thread) and now destroys the manager is done
  // with it: release it here rather than at its exit, which may never come.
  if (self != nullptr && self->core == m_core.get()) (void)release_current_thread();
  Result<void> r = shutdown();
  if (!r) log::warn("thread manager destroyed: {}", r.error().message());
  // Join what was never joined, so no OS thread or stack outlives the manager.
  std::vector<ThreadRecord*> unjoined;
  {
    MutexLock lock(m_core->mutex);
    for (ThreadRecord* t : m_core->records) {
      if (t->state() == TcrState::Dead && !t->os.adopted && !t->run.detached && !t->run.joining) {
        t->run.joining = true;
        unjoined.push_back(t);
      }
    }
  }
  for (ThreadRecord* t : unjoined) {
    t->run.exited.wait(Semaphore::Interrupts::Hold);
    m_core->join_os_thread(t);
    m_core->reap_record(t);
  }
  // Adopted threads still alive hold m_core; the last of them frees it when it exits.
}

std::uint64_t ThreadManager::serial() const { return m_core->serial; }

Result<ThreadRef> ThreadManager::current_ref() const {
  ThreadRecord* t = detail::t_current;
  if (t == nullptr || t->core != m_core.get()) {
    return fail(Step::BadArgument, 0,
                "current_ref: the calling thread was neither spawned nor adopted by this manager");
  }
  MutexLock lock(m_core->mutex);
  return m_core->ref_to(t);
}

Result<std::vector<ThreadInfo>> ThreadManager::snapshot() const {
  std::vector<ThreadInfo> out;
  MutexLock lock(m_core->mutex);
  try {
    out.reserve(m_core->registry.size());
    for (const ThreadRecord* t : m_core->registry) {
      out.push_back(ThreadInfo{t->run.id, t->run.name, t->state(), t->os.tid, t->os.handle.fd(),
                               t->run.detached, t->os.adopted, t->os.gc_registered});
    }
  } catch (const std::bad_alloc&) {
    return fail(Step::TcrAllocate, ENOMEM, "snapshot: thread list");
  }
  return out;
}

void ThreadManager::for_each(const std::function<void(const Tcr&)>& fn) const {
  MutexLock lock(m_core->mutex);
  for (const ThreadRecord* t : m_core->registry) fn(*t);
}

Result<std::size_t> ThreadManager::reap(Reap how) {
  const bool wait = how == Reap::WaitForRunning;
  ManagerCore& core = *m_core;
  if (wait && ManagerCore::caller_holds_a_stop()) {
    return fail(Step::BadArgument, 0,
                "reap(WaitForRunning) while this thread holds the world stopped: the threads it "
                "would wait for cannot finish");
  }
  // One of the manager's own threads cannot wait for detached threads to finish: it may be one,
  // and two of them waiting for each other would never wake. It reaps what has exited.
  const ThreadRecord* self = detail::t_current;
  const bool own_thread = self != nullptr && self->core == &core && !self->os.adopted;
  const bool wait_for_running = wait && !own_thread;
  std::size_t reaped = 0;
  for (;;) {
    ThreadRecord* done = nullptr;
    {
      UniqueLock lock(core.mutex);
      if (wait_for_running) lock.wait(core.all_exited, [&]() TCR_REQUIRES(core.mutex) {
        return core.detached_live == 0;
      });
      // Take only what this call will release. Not waiting: the zombies whose OS thread has
      // ended (a try-join, under the lock, so a concurrent reap(WaitForRunning) never finds the
      // list empty while records are in flight elsewhere). Waiting: all of them; each has left
      // the registry
      // and only returning from its start routine, so the pthread_join below is brief.
      ThreadRecord** link = &core.zombies;
      while (*link != nullptr) {
        ThreadRecord* t = *link;
        if (wait || core.try_join_os_thread(t)) {
          *link = t->next;
          t->next = done;
          done = t;
        } else {
          link = &t->next;
        }
      }
      ++core.reapers_busy;
    }
    while (done != nullptr) {
      ThreadRecord* t = done;
      done = t->next;
      if (wait) core.join_os_thread(t);
      core.reap_record(t);
      ++reaped;
    }
    UniqueLock lock(core.mutex);
    --core.reapers_busy;
    core.all_exited.notify_all();
    if (!wait) return reaped;
    // Afterwards no reaped thread may still hold its stack or handle in another reaper's hands.
    lock.wait(core.all_exited, [&]() TCR_REQUIRES(core.mutex) { return core.reapers_busy == 0; });
    if (core.zombies == nullptr) return reaped;
  }
}

Result<void> ThreadManager::shutdown() {
  ManagerCore& core = *m_core;
  if (const ThreadRecord* self = detail::t_current;
      self != nullptr && self->core == &core && !self->os.adopted) {
    return fail(Step::BadArgument, 0, "shutdown from one of the manager's own threads would wait "
                                      "for itself");
  }
  if (ManagerCore::caller_holds_a_stop()) {
    return fail(Step::BadArgument, 0,
                "shutdown while this thread holds the world stopped: the threads it would wait "
                "for cannot finish");
  }
  std::size_t adopted;
  {
    UniqueLock lock(core.mutex);
    core.shut_down = true;
    lock.wait(core.all_exited, [&]() TCR_REQUIRES(core.mutex) { return core.managed_live == 0; });
    adopted = core.adopted_live;
  }
  (void)reap(Reap::WaitForRunning);  // cannot fail: the caller holds no stop (checked above)
  if (adopted > 0 && !(adopted == 1 && detail::t_current != nullptr &&
                       detail::t_current->core == m_core.get())) {
    return fail(Step::AdoptedThreadsAlive, 0,
                std::to_string(adopted) + " adopted thread(s) will release themselves at exit");
  }
  return {};
}

std::size_t ThreadManager::trim() {
  ManagerCore& core = *m_core;
  // Under the lock: a spawner must not take a record whose stack is being unmapped.
  MutexLock lock(core.mutex);
  std::size_t released = 0;
  for (ThreadRecord* t = core.free_list; t != nullptr; t = t->next) {
    if (!t->os.stack.mapped()) continue;
    t->os.stack.release();
    ++released;
  }
  core.cached_stacks = 0;
  return released;
}

HandleMode ThreadManager::handle_mode() const { return m_core->mode; }

ManagerSignals ThreadManager::signals() { return detail::manager_signals(); }

ManagerStats ThreadManager::stats() const {
  MutexLock lock(m_core->mutex);
  ManagerStats s = m_core->stats;
  s.live = m_core->registry.size();
  s.dead_unreaped = m_core->dead_unreaped;
  s.records = m_core->records.size();
  s.free_records = m_core->free_count;
  s.cached_stacks = m_core->cached_stacks;
  return s;
}

}  // namespace tcr
