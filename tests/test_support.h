// Helpers shared by the tests: a manager per test, resource baselines, and waiting with a bound.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <memory>
#include <string>
#include <thread>

#include "runtime/resources.h"
#include "threads/thread_manager.h"

namespace tcr {

// Tests may sign permits: they play the registry's part and keep the thread alive themselves, or
// show what a signal through a handle does once it is not.
class SignalPermitForTesting : public SignalPermit {
 public:
  SignalPermitForTesting() = default;
  static SignalPermitForTesting make() { return SignalPermitForTesting(); }
};

}  // namespace tcr

namespace tcr::test {

inline std::unique_ptr<ThreadManager> make_manager(ManagerOptions options = {}) {
  Result<std::unique_ptr<ThreadManager>> m = ThreadManager::create(std::move(options));
  EXPECT_TRUE(m.has_value()) << (m ? "" : m.error().message());
  return m ? std::move(*m) : nullptr;
}

inline std::string describe(const Error& e) { return e.message(); }

// Spawns a thread that calls poll() until `stop`; an empty ref (and a failed expectation) if the
// spawn failed.
inline ThreadRef spawn_poller(ThreadManager& m, std::atomic<bool>& stop) {
  Result<ThreadRef> r = m.spawn("poller", [&stop](Tcr&) -> void* {
    while (!stop.load()) ThreadManager::poll();
    return nullptr;
  });
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message());
  return r ? *r : ThreadRef{};
}

// Polls `done` until it holds or `limit` passes; a bound, not a timing assertion.
inline bool eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Sanitizer builds: ASan's quarantine and shadow memory grow mappings and RSS by design (every
// fresh thread stack touches new shadow pages), so there only the kernel-handle counts are exact;
// the plain build, which CI runs first, checks mappings and RSS too.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kMemoryCountsExact = false;
#else
inline constexpr bool kMemoryCountsExact = true;
#endif

// How many thread lifetimes a churn or leak test runs, given the plain build's count: all of them
// there, a quarter under ASan and a twentieth under TSan (a lifetime costs about 4 and 10 times
// as much). Every record, stack and handle still goes through reuse thousands of times; the
// plain build, which CI runs first, is the one that shows the full count stays flat.
constexpr int lifetimes(int plain) {
#if defined(__SANITIZE_THREAD__)
  return plain / 20;
#elif defined(__SANITIZE_ADDRESS__)
  return plain / 4;
#else
  return plain;
#endif
}

// A snapshot whose thread count has held still. pthread_join returns when the kernel clears the
// thread's tid (in exit_mm), but the thread stays listed in /proc/self/task until it is released
// at the very end of its exit (release_task), and on a loaded machine it can be preempted in
// between (seen under ASan: a baseline with one thread more than the final count). So a leak
// test's counts are read once three reads 2 ms apart agree on the threads (for at most 2 s).
inline ResourceCounts settled(const ResourceLedger& ledger) {
  ResourceCounts last = ledger.snapshot();
  int agreeing = 1;
  for (int i = 0; i < 1000 && agreeing < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ResourceCounts next = ledger.snapshot();
    agreeing = next.threads == last.threads ? agreeing + 1 : 1;
    last = next;
  }
  return last;
}

// The thread count once it is `expected` (the same lag as above), or what it is after 1 s.
inline std::size_t settled_threads(const ResourceLedger& ledger, std::size_t expected) {
  std::size_t threads = ledger.snapshot().threads;
  for (int i = 0; i < 1000 && threads != expected; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    threads = ledger.snapshot().threads;
  }
  return threads;
}

// Expects every counted resource back at its baseline (RSS within slack).
inline void expect_no_leak(const ResourceCounts& before, const ResourceCounts& after,
                           std::size_t rss_slack_kb = 4096) {
  EXPECT_EQ(after.fds, before.fds);
  EXPECT_EQ(after.pidfds, before.pidfds);
  EXPECT_EQ(after.threads, before.threads);
  EXPECT_EQ(after.port_names, before.port_names);
  if (!kMemoryCountsExact) return;
  EXPECT_EQ(after.maps, before.maps);
  EXPECT_LE(after.rss_kb, before.rss_kb + rss_slack_kb);
  EXPECT_EQ(ResourceLedger::diff(before, after, rss_slack_kb), "")
      << ResourceLedger().dump();
}

// Fails the test process if it is still alive after `limit`: a hang becomes a failure with a name
// instead of CI's timeout.
class Watchdog {
 public:
  Watchdog(std::string what, std::chrono::seconds limit)
      : m_thread([this, what = std::move(what), limit] {
          std::unique_lock lock(m_mutex);
          if (!m_cv.wait_for(lock, limit, [&] { return m_done; })) {
            std::fprintf(stderr, "watchdog: '%s' still running after %llds: hung\n", what.c_str(),
                         static_cast<long long>(limit.count()));
            std::fflush(stderr);
            std::abort();
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(m_mutex);
      m_done = true;
    }
    m_cv.notify_all();
    m_thread.join();
  }

 private:
  std::mutex m_mutex;
  std::condition_variable m_cv;
  bool m_done = false;
  std::thread m_thread;
};

// The calling thread adopted by `m` for the object's life (suspend_all and current_ref need a Tcr).
struct Adopted {
  explicit Adopted(ThreadManager& m, const char* name = "adopted") : manager(m) {
    Result<Tcr*> r = m.adopt_current_thread(name);
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message());
  }
  ~Adopted() { (void)manager.release_current_thread(); }
  Adopted(const Adopted&) = delete;
  Adopted& operator=(const Adopted&) = delete;
  ThreadManager& manager;
};

// A thread that spins (no safe point) until `stop`.
inline Result<ThreadRef> spawn_spinner(ThreadManager& m, std::atomic<bool>& stop,
                                       SpawnOptions o = {}) {
  return m.spawn("spin", [&stop](Tcr&) -> void* {
    while (!stop.load()) {
    }
    return nullptr;
  }, o);
}

inline void* as_ptr(std::uintptr_t v) { return reinterpret_cast<void*>(v); }
inline std::uintptr_t as_int(void* p) { return reinterpret_cast<std::uintptr_t>(p); }

// Recurses until the thread's stack overflows: each frame keeps a KiB live across the call, so it
// is no tail call. The limit (a million KiB frames past any stack) only tells the compiler that
// the recursion ends.
inline std::atomic<std::size_t> g_depth_limit{std::size_t{1} << 30};
__attribute__((noinline)) inline std::size_t recurse(std::size_t depth) {
  volatile char frame[1024];
  frame[0] = static_cast<char>(depth);
  asm volatile("" : : "r"(frame) : "memory");
  if (depth >= g_depth_limit.load(std::memory_order_relaxed)) return frame[0];
  return recurse(depth + 1) + frame[0];
}

}  // namespace tcr::test
