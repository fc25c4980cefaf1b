// suspend_all / resume_all and BlockingScope: the stop-the-world handshake described in
// threads/stop_world.h. Locking order: stop_mutex (initiators), then Boehm's allocation lock, then
// the registry lock. While the world is stopped only stop_mutex and Boehm's lock stay held, and
// the holder may still take any manager's registry lock, so nothing waits for Boehm's lock while
// it holds a registry lock.
#include <errno.h>

#include <algorithm>
#include <chrono>
#include <new>
#include <optional>

#include "runtime/gc.h"
#include "runtime/log.h"
#include "runtime/os.h"
#include "threads/current.h"
#include "threads/internal.h"
#include "threads/manager_core.h"

namespace tcr {

const char* to_string(StopKind kind) {
  switch (kind) {
    case StopKind::Suspended: return "suspended";
    case StopKind::Blocking: return "blocking";
    case StopKind::Exiting: return "exiting";
  }
  return "?";
}

// ---- StopState: the thread's side ------------------------------------------------------------

Claim StopState::claim(std::uint64_t epoch) {
  std::uint32_t now = state.load(std::memory_order_seq_cst);
  for (;;) {
    if (now == kBlocking) {
      if (state.compare_exchange_weak(now, kClaimed, std::memory_order_seq_cst)) {
        return Claim::Blocking;
      }
      continue;  // it left the scope (or began its exit) meanwhile: look again
    }
    if (now == kExiting) {
      std::uint64_t acked = ack.load(std::memory_order_acquire);
      if (acked != epoch && ack.compare_exchange_strong(acked, epoch, std::memory_order_acq_rel)) {
        return Claim::Exiting;
      }
      return Claim::AwaitAck;
    }
    return Claim::Signal;
  }
}

std::uint64_t StopState::acknowledge_suspend(void* ucontext) {
  const std::uint64_t epoch = request.load(std::memory_order_acquire);
  std::uint64_t acked = ack.load(std::memory_order_relaxed);
  if (epoch == acked) return 0;  // a resent signal for a stop already acknowledged
  machine::capture_from_ucontext(ucontext, regs);
  kind = StopKind::Suspended;
  if (!ack.compare_exchange_strong(acked, epoch, std::memory_order_acq_rel)) return 0;
  ack_sem.post();
  return epoch;
}

void StopState::acknowledge_exit() {
  // Dekker with claim(): this thread publishes Exiting and then reads the request; the initiator
  // publishes the request and then reads the state. At least one of them sees the other, so the
  // stop either claims this thread or gets its acknowledgement here; never neither.
  state.store(kExiting, std::memory_order_seq_cst);
  const std::uint64_t epoch = request.load(std::memory_order_seq_cst);
  std::uint64_t acked = ack.load(std::memory_order_acquire);
  if (epoch == acked) return;
  kind = StopKind::Exiting;
  if (ack.compare_exchange_strong(acked, epoch, std::memory_order_acq_rel)) ack_sem.post();
}

void StopState::reset() {
  state.store(kRunning, std::memory_order_relaxed);
  request.store(0, std::memory_order_relaxed);
  ack.store(0, std::memory_order_relaxed);
  // Posts a late handler left behind after a stop that gave up on this record's last thread.
  while (ack_sem.try_wait()) {
  }
  blocking_depth = 0;
  blocking_regs = nullptr;
}

void ManagerCore::suspend_self(ThreadRecord& t, void* ucontext) {
  const std::uint64_t epoch = t.os.stop.acknowledge_suspend(ucontext);
  if (epoch == 0) return;
  // Sleep until resume_all publishes this epoch (or a later one: a stop abandoned on an error
  // resumes before a late handler gets here, and then this returns at once).
  ManagerCore& core = *t.core;
  const auto mine = static_cast<std::uint32_t>(epoch);
  for (;;) {
    const std::uint32_t resumed = core.resume_word.load(std::memory_order_acquire);
    if (static_cast<std::int32_t>(resumed - mine) >= 0) break;
    os::wait_on_address(&core.resume_word, resumed);
  }
}

namespace {

// The entry a conservative scan reads for a thread that acknowledged (or was claimed) as kind.
void fill_entry(StoppedThread& e, const ThreadRecord& t, StopKind kind) {
  e.tcr = &t;
  e.id = t.id();
  e.tid = t.tid();
  e.kind = kind;
  const auto low = reinterpret_cast<std::uintptr_t>(t.stack_low());
  const auto high = reinterpret_cast<std::uintptr_t>(t.stack_high());
  std::uintptr_t from = high;
  if (kind == StopKind::Suspended) {
    e.registers = t.os.stop.regs;
    from = e.registers.sp - machine::kRedZoneBytes;
  } else if (kind == StopKind::Blocking) {
    e.registers = *t.os.stop.blocking_regs;
    from = e.registers.sp;
  } else {
    e.registers = RegisterSet{};
  }
  // A stack pointer outside the thread's own stack (a handler running on an alternate signal
  // stack, say) says nothing about how much of the stack is live: scan all of it.
  if (kind != StopKind::Exiting && (from < low || from > high)) from = low;
  from = std::max(from, low) & ~(sizeof(std::uintptr_t) - 1);
  e.stack_low = reinterpret_cast<const void*>(from);
  e.stack_high = reinterpret_cast<const void*>(high);
}

}  // namespace

// ---- the manager's side ------------------------------------------------------------------------

void ManagerCore::resume_locked(std::uint64_t epoch, bool holds_gc_lock) {
  for (const StoppedThread& e : stopped) {
    if (e.kind != StopKind::Blocking) continue;
    ThreadRecord& t = const_cast<ThreadRecord&>(record(*e.tcr));
    t.os.stop.state.store(StopState::kBlocking, std::memory_order_release);
    os::wake_address(&t.os.stop.state, true);
  }
  resume_word.store(static_cast<std::uint32_t>(epoch), std::memory_order_release);
  os::wake_address(&resume_word, true);
  if (holds_gc_lock) gc::unlock_allocator();
  world_stopped = false;
  release_fork_orphans_locked();  // a stop held through a fork (threads/fork.h)
  world_resumed.notify_all();
}

void ManagerCore::release_stop_at_exit(ThreadRecord& t) {
  ManagerCore& core = *t.core;
  if (core.stop_owner.load(std::memory_order_acquire) != &t) return;
  {
    MutexLock lock(core.mutex);
    core.resume_locked(core.stop_epoch, core.stop_holds_gc_lock);
    core.stop_owner.store(nullptr, std::memory_order_release);
    core.stop_depth = 0;
  }
  core.stop_mutex.unlock();
  // Said only now: a stopped thread may hold the logger's lock.
  log::error("thread #{} '{}' exited holding the world stopped; resumed it", t.id(), t.name());
}

// ---- BlockingScope -----------------------------------------------------------------------------

Tcr* BlockingScope::enter(const RegisterSet* regs) {
  ThreadRecord* t = detail::t_current;
  if (t == nullptr) return nullptr;
  if (t->os.stop.blocking_depth++ > 0) return t;  // nested: the outermost scope's capture stands
  t->os.stop.blocking_regs = regs;
  // Release: a stop that claims this thread reads the registers written above.
  std::uint32_t expected = StopState::kRunning;
  t->os.stop.state.compare_exchange_strong(expected, StopState::kBlocking,
                                         std::memory_order_seq_cst);
  return t;
}

void BlockingScope::leave(Tcr* tcr) {
  if (tcr == nullptr) return;  // what enter answered on a thread tcr does not know
  ThreadRecord* t = record(tcr);
  if (--t->os.stop.blocking_depth > 0) return;
  for (;;) {
    std::uint32_t expected = StopState::kBlocking;
    if (t->os.stop.state.compare_exchange_strong(expected, StopState::kRunning,
                                               std::memory_order_seq_cst)) {
      break;
    }
    if (expected != StopState::kClaimed) break;  // not in the Blocking state at all
    // A stopped world holds this thread: it may not touch the heap until resume_all().
    os::wait_on_address(&t->os.stop.state, StopState::kClaimed);
  }
  t->os.stop.blocking_regs = nullptr;
  detail::run_pending_interrupts(*t);  // the scope's end is a safe point
}

// ---- suspend_all / resume_all ------------------------------------------------------------------

Result<StoppedWorld> ThreadManager::suspend_all() {
  ManagerCore& core = *m_core;
  ThreadRecord* self = detail::t_current;
  if (self == nullptr || self->core != &core) {
    return fail(Step::BadArgument, 0,
                "suspend_all: call it from a thread this manager spawned or adopted");
  }
  if (core.stop_owner.load(std::memory_order_acquire) == self) {
    ++core.stop_depth;  // nested: the world is already stopped, by this thread
    MutexLock lock(core.mutex);  // free while the world is stopped: the gate holds the registry
    return StoppedWorld(core.stopped, core.stop_epoch, core.stop_depth);
  }
  const ManagerSignals signals = detail::manager_signals();
  const RegistryPermit permit{};  // the registry lock is held wherever a signal is sent below
  // Another initiator stopping the world suspends this thread while it waits here.
  core.stop_mutex.lock();
  // Boehm's lock before the registry lock: waiting for it (another manager's stop holds it) with
  // this registry lock held would deadlock that stop's holder as soon as it called this manager.
  const bool gc_lock = gc::initialized();
  if (gc_lock) gc::lock_allocator();
  UniqueLock lock(core.mutex);
  // Allocate before the first signal: a stopped thread may hold malloc's lock.
  try {
    core.stopped.clear();
    core.stopped.reserve(core.registry.size());
    core.stop_waiting.clear();
    core.stop_waiting.reserve(core.registry.size());
  } catch (const std::bad_alloc&) {
    lock.unlock();
    if (gc_lock) gc::unlock_allocator();
    core.stop_mutex.unlock();
    return fail(Step::TcrAllocate, ENOMEM, "suspend_all: thread list");
  }
  const std::uint64_t epoch = ++core.stop_epoch;
  core.world_stopped = true;  // the gate: no thread enters or leaves the registry until resume

  // One signal to a target: true when it is queued for the thread. EAGAIN (the real-time signal
  // queue is full: RLIMIT_SIGPENDING counts every pending signal of the user) is not an error
  // yet: the wait below sends again. Any other error names the thread it was for.
  // The refused send's error is kept: the stop answers it if the queue stays full.
  std::optional<Error> refused;
  const auto send_suspend = [&](ThreadRecord* t, bool* queued) -> std::optional<Error> {
    Result<void> sent = t->os.handle.signal(signals.suspend, permit);
    *queued = sent.has_value();
    if (sent) return std::nullopt;
    Error e = sent.error();
    e.detail = "suspending thread #" + std::to_string(t->run.id);
    if (e.code != EAGAIN) return e;
    refused = std::move(e);
    return std::nullopt;
  };

  std::optional<Error> failure;
  std::size_t unsent = 0;  // stop_waiting[unsent..] got their signal; the first ones wait for one
  for (ThreadRecord* t : core.registry) {
    if (t == self) continue;
    t->os.stop.request.store(epoch, std::memory_order_seq_cst);
    const Claim how = t->os.stop.claim(epoch);
    if (how == Claim::Blocking || how == Claim::Exiting) {
      fill_entry(
          core.stopped.emplace_back(), *t,
          how == Claim::Blocking ? StopKind::Blocking : StopKind::Exiting);
      continue;
    }
    bool queued = true;
    if (how == Claim::Signal) {
      failure = send_suspend(t, &queued);
      if (failure) break;
    }
    core.stop_waiting.push_back(t);
    if (!queued) std::swap(core.stop_waiting[unsent++], core.stop_waiting.back());
  }

  // Collect the acknowledgements. Each thread posts its own semaphore, so a slow one delays only
  // its own entry. A queued real-time signal is not lost (a thread that blocks it gets it when
  // it unblocks, or acknowledges as Exiting), so it is never sent twice: resends would only
  // fill the queue. Only a signal the full queue refused is sent again, with backoff, for at
  // most kQueueFullLimit; then the stop says it could not signal the thread.
  constexpr auto kQueueFullLimit = std::chrono::seconds(2);
  const auto timeout = core.options.stop_timeout;
  for (std::size_t i = 0; i < core.stop_waiting.size() && !failure; ++i) {
    ThreadRecord* t = core.stop_waiting[i];
    const auto started = std::chrono::steady_clock::now();
    auto retry = std::chrono::milliseconds(1);
    bool queued = i >= unsent;
    bool acked = false;
    while (!acked) {
      if (t->os.stop.ack_sem.wait_for(retry, Semaphore::Interrupts::Hold)) {
        acked = t->os.stop.ack.load(std::memory_order_acquire) == epoch;
        continue;  // false: a post left behind by an earlier stop that gave up
      }
      const auto waited = std::chrono::steady_clock::now() - started;
      if (timeout.count() > 0 && waited >= timeout) {
        failure = Error{Step::StopTimeout, 0,
                        "thread #" + std::to_string(t->run.id) + " (tid " +
                            std::to_string(t->os.tid) + ") did not acknowledge",
                        nullptr};
        break;
      }
      if (!queued) {
        if (waited >= kQueueFullLimit) {
          failure = std::move(refused);
          failure->detail += ": the real-time signal queue stayed full (RLIMIT_SIGPENDING)";
          break;
        }
        failure = send_suspend(t, &queued);
        if (failure) break;
      }
      retry = std::min(retry * 2, std::chrono::milliseconds(100));
    }
    if (acked) {
      fill_entry(core.stopped.emplace_back(), *t, t->os.stop.kind);
    }
  }

  if (failure) {
    core.resume_locked(epoch, gc_lock);
    lock.unlock();
    core.stop_mutex.unlock();
    return std::unexpected(std::move(*failure));
  }
  core.stop_holds_gc_lock = gc_lock;
  core.stop_depth = 1;
  core.stop_owner.store(self, std::memory_order_release);
  // The registry lock is released: the gate, not the lock, keeps the registry as it is, so the
  // caller may still call snapshot() and the like while the world is stopped.
  return StoppedWorld(core.stopped, epoch, 1);
}

Result<void> ThreadManager::resume_all() {
  ManagerCore& core = *m_core;
  ThreadRecord* self = detail::t_current;
  if (self == nullptr || core.stop_owner.load(std::memory_order_acquire) != self) {
    return fail(Step::BadArgument, 0, "resume_all: this thread has not stopped the world");
  }
  if (--core.stop_depth > 0) return {};
  {
    MutexLock lock(core.mutex);
    core.resume_locked(core.stop_epoch, core.stop_holds_gc_lock);
    core.stop_owner.store(nullptr, std::memory_order_release);
  }
  core.stop_mutex.unlock();
  return {};
}

bool ThreadManager::world_stopped_by_caller() const {
  const ThreadRecord* self = detail::t_current;
  return self != nullptr && m_core->stop_owner.load(std::memory_order_acquire) == self;
}

}  // namespace tcr
