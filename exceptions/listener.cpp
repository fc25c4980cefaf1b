// The ExceptionListener's thread and control; the kernel side is the platform's ListenerBackend.
#include "exceptions/listener.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <new>
#include <shared_mutex>

#include "exceptions/fork_hooks.h"
#include "exceptions/listener_internal.h"
#include "exceptions/region_table.h"
#include "runtime/fork.h"
#include "runtime/log.h"
#include "runtime/mutex.h"
#include "runtime/os.h"
#include "threads/thread_extensions.h"

namespace tcr {
namespace {

struct ListenerState {
  Mutex mutex;
  // Shared: a session arming pages; exclusive: stop(). Not a tcr::Mutex, and not checked by the
  // analysis: it guards no field (it keeps stop() out while sessions arm pages), and a session's
  // shared lock is handed to the caller (listener_session) and held across its calls.
  std::shared_mutex control;
  std::condition_variable changed;  // paused or stop_requested changed
  // Set once (open_backend) and kept until a forked child forgets it. The listener thread is
  // handed its pointer at start, and stop() and set_paused() read it under the lock.
  std::unique_ptr<detail::ListenerBackend> backend TCR_GUARDED_BY(mutex);
  pthread_t thread TCR_GUARDED_BY(mutex) = {};
  std::atomic<bool> running{false};  // written under mutex; read without it
  bool paused TCR_GUARDED_BY(mutex) = false;
  bool stop_requested TCR_GUARDED_BY(mutex) = false;

  std::atomic<std::uint64_t> batches{0};
  std::atomic<std::uint64_t> messages{0};
  std::atomic<std::uint64_t> resolved{0};
  std::atomic<std::uint64_t> stale{0};
  std::atomic<std::uint64_t> foreign{0};
  std::atomic<std::uint64_t> attributed{0};
};

// Built in static storage on first use, never destroyed (the listener thread may outlive static
// destructors): no allocation, so the first region's create() cannot throw std::bad_alloc here.
ListenerState& state() {
  alignas(ListenerState) static unsigned char s_storage[sizeof(ListenerState)];
  static ListenerState* const s = new (s_storage) ListenerState;
  return *s;
}

// Counts the trap (delta +1, or -1 to take it back) on the faulting thread's Tcr. Answers whether
// it found one.
bool attribute(const detail::FaultMessage& m, int delta) {
  if (m.tcr != nullptr) {
    count_trap(*m.tcr, delta);
    return true;
  }
  return m.tid != 0 && with_thread_of_tid(
                           m.tid,
                           [](Tcr& t, void* d) {
                             count_trap(t, *static_cast<int*>(d));
                           },
                           &delta);
}

void handle(detail::ListenerBackend& backend, const detail::FaultMessage& m) {
  ListenerState& s = state();
  detail::PinnedRegion region(m.address);
  if (!region || region->mode != TrapMode::Listener) {
    // Unregistered while the message was in flight: the thread is let go, and meets the page's
    // real protection (writable now).
    s.foreign.fetch_add(1, std::memory_order_relaxed);
    backend.resume(m, detail::FaultOutcome::Foreign);
    return;
  }
  // The trap is counted on the thread's Tcr before the page is claimed, because the lookup takes
  // the tid index's lock: nothing that takes a lock runs while a page is Busy (a collector
  // holding the world stopped may be waiting for the page, and the lock's owner may be stopped).
  // It must be counted before the unprotect, which wakes the writer; taken back if the fault
  // turns out stale.
  const bool found_tcr = attribute(m, +1);
  Result<void> unprotected;
  bool counted = false;
  const bool writable = detail::resolve_write_fault(
      *region.get(), region->page_of(m.address),
      [&](void* page, std::size_t size) {
        unprotected = backend.write_protect(page, size, false);
        return unprotected.has_value();
      },
      [](int) {}, &counted);
  if (counted) {
    s.resolved.fetch_add(1, std::memory_order_relaxed);
    if (found_tcr) s.attributed.fetch_add(1, std::memory_order_relaxed);
    backend.resume(m, detail::FaultOutcome::Resolved);
    return;
  }
  if (found_tcr) attribute(m, -1);
  s.stale.fetch_add(1, std::memory_order_relaxed);
  // Not writable means unprotecting failed: the thread retries and faults again.
  if (!unprotected) log::error("exception listener: {}", unprotected.error().message());
  backend.resume(m, writable ? detail::FaultOutcome::Stale : detail::FaultOutcome::Foreign);
}

// `arg` is the backend: kept until a forked child forgets it, and the thread is not in the child.
void* listener_main(void* arg) {
  os::set_current_thread_name("tcr-listener");
  ListenerState& s = state();
  detail::ListenerBackend& backend = *static_cast<detail::ListenerBackend*>(arg);
  detail::FaultMessage batch[64];
  for (;;) {
    {
      UniqueLock lock(s.mutex);
      lock.wait(s.changed, [&]() TCR_REQUIRES(s.mutex) { return !s.paused || s.stop_requested; });
      if (s.stop_requested) break;
    }
    bool woken = false;
    Result<std::size_t> n = backend.receive(batch, 64, &woken);
    if (!n) {
      // The fd itself failed: nothing can be received any more. stop() still works.
      log::error("exception listener stops receiving: {}", n.error().message());
      UniqueLock lock(s.mutex);
      lock.wait(s.changed, [&]() TCR_REQUIRES(s.mutex) { return s.stop_requested; });
      break;
    }
    if (woken) continue;  // control: re-read the flags
    s.batches.fetch_add(1, std::memory_order_relaxed);
    s.messages.fetch_add(*n, std::memory_order_relaxed);
    for (std::size_t i = 0; i < *n; ++i) handle(backend, batch[i]);
  }
  return nullptr;
}

Result<void> open_backend(ListenerState& s) TCR_REQUIRES(s.mutex) {
  if (s.backend) return {};
  Result<std::unique_ptr<detail::ListenerBackend>> backend = detail::ListenerBackend::open();
  if (!backend) return std::unexpected(backend.error());
  s.backend = std::move(*backend);
  return {};
}

Result<void> start_thread(ListenerState& s) TCR_REQUIRES(s.mutex) {
  if (s.running) return {};
  if (Result<void> r = open_backend(s); !r) return r;
  s.stop_requested = false;
  // Every signal blocked, inherited by the thread: no stop-the-world or interrupt ever stops it
  // (threads blocked on a fault wait for it), and no runtime handler runs on it.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  Result<pthread_t> thread = os::pthread_create(nullptr, listener_main, s.backend.get());
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (!thread) return std::unexpected(thread.error());
  s.thread = *thread;
  s.running = true;
  return {};
}

}  // namespace

namespace detail {

Result<ListenerBackend*> listener_backend() {
  ListenerState& s = state();
  SignalsBlocked blocked;
  MutexLock lock(s.mutex);
  if (Result<void> r = open_backend(s); !r) return std::unexpected(r.error());
  return s.backend.get();
}

// The caller blocks signals first (SignalsBlocked), as everyone who takes `control` or `mutex`
// does: a thread holding either must not be stopped by a stop-the-world, since the collector
// holding the world stopped takes them here.
Result<std::shared_lock<std::shared_mutex>> listener_session() {
  ListenerState& s = state();
  std::shared_lock session(s.control);
  if (s.running.load(std::memory_order_acquire)) return session;
  MutexLock lock(s.mutex);
  if (Result<void> r = start_thread(s); !r) return std::unexpected(r.error());
  return session;
}

// Prepare takes both locks and parent (or child) lets them go: across the fork, from one function
// into another, which the analysis cannot follow.
void listener_fork_prepare() TCR_NO_THREAD_SAFETY_ANALYSIS {
  ListenerState& s = state();
  s.control.lock();  // no session arming pages, no stop() under way
  s.mutex.lock();
}

void listener_fork_parent() TCR_NO_THREAD_SAFETY_ANALYSIS {
  ListenerState& s = state();
  s.mutex.unlock();
  s.control.unlock();
}

// The child's only thread, its locks just re-created (the parent's threads held them): the fields
// are its own without taking them.
void listener_fork_child() TCR_NO_THREAD_SAFETY_ANALYSIS {
  ListenerState& s = state();
  // A shared_mutex locked in the parent is not unlocked in the child: glibc's rwlock knows its
  // writer by thread id, which the child's thread does not have.
  recreate_in_child(s.control);
  recreate_in_child(s.mutex);
  recreate_in_child(s.changed);
  s.running.store(false, std::memory_order_release);
  s.thread = pthread_t{};
  s.stop_requested = false;
  s.paused = false;  // the parent's listener was paused, not the child's
  if (s.backend) {
    s.backend->abandon_in_child();
    s.backend.reset();  // closes the child's copies of its fds
  }
}

}  // namespace detail

ExceptionListener& ExceptionListener::instance() {
  static ExceptionListener s_listener;
  return s_listener;
}

Result<void> ExceptionListener::start() {
  detail::fork_participate_exceptions();
  ListenerState& s = state();
  detail::SignalsBlocked blocked;
  MutexLock lock(s.mutex);
  return start_thread(s);
}

void ExceptionListener::stop() {
  ListenerState& s = state();
  detail::SignalsBlocked blocked;
  std::unique_lock control(s.control);  // no region is arming pages now
  // Both stay as they are until this stop() is done: a start() meanwhile finds it running.
  detail::ListenerBackend* backend = nullptr;
  pthread_t thread{};
  {
    MutexLock lock(s.mutex);
    if (!s.running) return;
    s.stop_requested = true;
    backend = s.backend.get();
    thread = s.thread;
  }
  s.changed.notify_all();
  backend->request_stop();
  pthread_join(thread, nullptr);
  {
    MutexLock lock(s.mutex);
    s.running = false;
    s.stop_requested = false;
  }
  // Nobody resolves faults now: unarm every Listener region. Unprotecting wakes the threads
  // blocked on its pages (their messages, unread, die with nobody to answer them: the kernel
  // lets a woken thread retry its write). What was armed counts as written, since later writes
  // go unseen until the next protect() or collect_dirty().
  // Nothing allocates while the pages are claimed; the error, if any, is logged after.
  detail::for_each_region([&](detail::RegionCore& r) {
    if (r.mode != TrapMode::Listener) return;
    detail::claim_all_pages(r);
    Result<void> off = backend->write_protect(r.base, r.length, false);
    detail::settle_all_pages(r, [](std::uint8_t was) {
      return was == detail::kPageOff ? detail::kPageOff : detail::kPageDirty;
    });
    if (!off) log::error("exception listener stop: {}", off.error().message());
  });
}

bool ExceptionListener::running() const {
  return state().running.load(std::memory_order_acquire);
}

ListenerStats ExceptionListener::stats() const {
  ListenerState& s = state();
  ListenerStats out;
  out.batches = s.batches.load(std::memory_order_relaxed);
  out.messages = s.messages.load(std::memory_order_relaxed);
  out.resolved = s.resolved.load(std::memory_order_relaxed);
  out.stale = s.stale.load(std::memory_order_relaxed);
  out.foreign = s.foreign.load(std::memory_order_relaxed);
  out.attributed = s.attributed.load(std::memory_order_relaxed);
  return out;
}

void ExceptionListener::set_paused(bool paused) {
  ListenerState& s = state();
  detail::SignalsBlocked blocked;
  detail::ListenerBackend* backend = nullptr;
  {
    MutexLock lock(s.mutex);
    s.paused = paused;
    if (!s.running) return;
    backend = s.backend.get();
  }
  s.changed.notify_all();
  backend->request_stop();  // a receive() under way returns and re-reads the flag
}

}  // namespace tcr
