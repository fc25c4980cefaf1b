// Issue 9: ways a runtime author broke tcr through its public API, each pinned by the rule it
// broke. Every test here failed (or hung, or crashed) on the code before its fix.
#include <gtest/gtest.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "testing/fault_injection.h"
#include "tests/test_support.h"

namespace tcr {
namespace {

using namespace std::chrono_literals;
using test::Adopted;
using test::eventually;
using test::make_manager;
using test::spawn_spinner;
using test::Watchdog;

// A thread that waits on a gate (a safe point) and returns `result` when it opens.
ThreadRef spawn_gated(ThreadManager& m, Semaphore& gate, void* result, SpawnOptions o = {}) {
  Result<ThreadRef> r = m.spawn("gated", [&gate, result](Tcr&) -> void* {
    gate.wait();
    return result;
  }, o);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message());
  return r ? *r : ThreadRef{};
}

// ---- 1. a ThreadRef belongs to one manager ---------------------------------------------------

TEST(Hardening, ARefFromAnotherManagerIsRefusedAndTouchesNothing) {
  Watchdog dog("cross-manager refs", 60s);
  auto a = make_manager();
  auto b = make_manager();
  Semaphore gate;
  static int answer = 42;
  ThreadRef ref = spawn_gated(*a, gate, &answer);
  const ManagerStats b_before = b->stats();

  Result<void*> joined = b->join(ref);
  ASSERT_FALSE(joined.has_value());
  EXPECT_EQ(joined.error().step, Step::BadArgument) << joined.error().message();
  EXPECT_NE(joined.error().message().find("another ThreadManager"), std::string::npos);
  Result<void> detached = b->detach(ref);
  ASSERT_FALSE(detached.has_value());
  EXPECT_EQ(detached.error().step, Step::BadArgument);
  Result<void> signalled = b->signal(ref, 0);
  ASSERT_FALSE(signalled.has_value());
  EXPECT_EQ(signalled.error().step, Step::BadArgument);
  std::atomic<bool> ran{false};
  Result<InterruptTicket> ticket = b->interrupt(ref, [&](Tcr&) { ran = true; });
  ASSERT_FALSE(ticket.has_value());
  EXPECT_EQ(ticket.error().step, Step::BadArgument);

  const ManagerStats b_after = b->stats();
  EXPECT_EQ(b_after.dead_unreaped, 0u);
  EXPECT_EQ(b_after.free_records, b_before.free_records);
  EXPECT_EQ(b_after.reaped, b_before.reaped);
  EXPECT_EQ(b_after.live, 0u);

  // A's thread is A's as before: it joins with its own result, and B's next thread is B's.
  gate.post();
  Result<void*> mine = a->join(ref);
  ASSERT_TRUE(mine.has_value()) << mine.error().message();
  EXPECT_EQ(*mine, &answer);
  EXPECT_FALSE(ran.load());
  Semaphore gate_b;
  ThreadRef in_b = spawn_gated(*b, gate_b, nullptr);
  EXPECT_EQ(a->snapshot().value().size(), 0u);
  EXPECT_EQ(b->snapshot().value().size(), 1u);
  gate_b.post();
  EXPECT_TRUE(b->join(in_b).has_value());
  EXPECT_TRUE(a->shutdown().has_value());
  EXPECT_TRUE(b->shutdown().has_value());
}

// The ref's manager is checked before its record is read: the record of a destroyed manager is
// freed memory (ASan reports the read).
TEST(Hardening, ARefFromADestroyedManagerIsRefusedWithoutReadingItsRecord) {
  ThreadRef stale;
  {
    auto a = make_manager();
    Semaphore gate;
    gate.post();
    stale = spawn_gated(*a, gate, nullptr, {.detached = true});
  }
  auto b = make_manager();
  Result<void*> joined = b->join(stale);
  ASSERT_FALSE(joined.has_value());
  EXPECT_EQ(joined.error().step, Step::BadArgument);
  EXPECT_FALSE(b->interrupt(stale, [](Tcr&) {}).has_value());
}

// ---- 3. exit() with a manager in a static -------------------------------------------------------

// Constructed before main, so before tcr's logger: destroyed after it at exit.
std::unique_ptr<ThreadManager> g_static_manager;

TEST(HardeningExit, ExitFromMainWithAnAdoptedThreadAliveEndsTheProcessCleanly) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        g_static_manager = std::move(*ThreadManager::create());
        std::atomic<bool> adopted{false};
        std::thread([&] {
          (void)g_static_manager->adopt_current_thread("lingering");
          adopted = true;
          for (;;) pause();
        }).detach();
        while (!adopted.load()) std::this_thread::sleep_for(1ms);
        std::exit(7);  // ~ThreadManager warns about the adopted thread
      },
      ::testing::ExitedWithCode(7), "adopted thread");
}

TEST(HardeningExit, ExitFromASpawnedThreadLeavesTheManagerAndEndsTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        g_static_manager = std::move(*ThreadManager::create());
        Semaphore forever;
        (void)g_static_manager->spawn("sibling", [&](Tcr&) -> void* {
          forever.wait();
          return nullptr;
        });
        (void)g_static_manager->spawn("quitter", [](Tcr&) -> void* { std::exit(3); });
        for (;;) pause();
      },
      ::testing::ExitedWithCode(3), "destroyed from its own thread");
}

TEST(HardeningExit, ExitFromMainWaitsForTheSpawnedThreadsToReturn) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        g_static_manager = std::move(*ThreadManager::create());
        (void)g_static_manager->spawn("slow", [](Tcr&) -> void* {
          std::this_thread::sleep_for(50ms);
          std::fputs("slow thread returned\n", stderr);  // only if exit() waited for it
          return nullptr;
        });
        std::exit(5);
      },
      ::testing::ExitedWithCode(5), "slow thread returned");
}

// ---- 4. interrupts queued by the thread that holds the world stopped ---------------------------

TEST(Hardening, TheStopperInterruptsTheThreadsItStoppedWithoutDeadlock) {
  Watchdog dog("interrupt while stopped", 120s);
  auto m = make_manager();
  Adopted self(*m, "collector");
  std::atomic<bool> stop{false};
  std::vector<ThreadRef> targets;
  for (int i = 0; i < 2; ++i) {
    Result<ThreadRef> r = m->spawn("poller", [&](Tcr&) -> void* {
      while (!stop.load(std::memory_order_relaxed)) ThreadManager::poll();
      return nullptr;
    });
    ASSERT_TRUE(r.has_value());
    targets.push_back(*r);
  }
  // Flooders keep the targets' mailboxes busy (their lock taken by the targets' poll() and by the
  // flooders' own interrupt()), so the stop often catches a thread inside one.
  std::vector<ThreadRef> flooders;
  for (int i = 0; i < 2; ++i) {
    Result<ThreadRef> r = m->spawn("flooder", [&, i](Tcr&) -> void* {
      while (!stop.load(std::memory_order_relaxed)) {
        Result<InterruptTicket> t = m->interrupt(targets[static_cast<std::size_t>(i)], [](Tcr&) {});
        if (t) (void)t->wait();
      }
      return nullptr;
    });
    ASSERT_TRUE(r.has_value());
    flooders.push_back(*r);
  }
  std::atomic<int> ran{0};
  for (int round = 0; round < 300; ++round) {
    Result<StoppedWorld> w = m->suspend_all();
    ASSERT_TRUE(w.has_value()) << w.error().message();
    std::vector<InterruptTicket> tickets;
    for (ThreadRef t : targets) {
      Result<InterruptTicket> k = m->interrupt(t, [&](Tcr&) { ++ran; });
      ASSERT_TRUE(k.has_value()) << k.error().message();
      tickets.push_back(*k);
    }
    ASSERT_TRUE(m->resume_all().has_value());
    for (const InterruptTicket& k : tickets) EXPECT_TRUE(k.wait().has_value());
  }
  EXPECT_EQ(ran.load(), 600);
  stop = true;
  for (ThreadRef r : flooders) EXPECT_TRUE(m->join(r).has_value());
  for (ThreadRef r : targets) EXPECT_TRUE(m->join(r).has_value());
}

// ---- 5. interrupt closures that misbehave --------------------------------------------------------

TEST(Hardening, AClosureThatThrowsANonStandardExceptionIsContainedAtPoll) {
  auto m = make_manager();
  std::atomic<bool> stop{false};
  std::atomic<int> escaped{0};
  std::atomic<int> later{0};
  Result<ThreadRef> t = m->spawn("poller", [&](Tcr&) -> void* {
    while (!stop.load()) {
      try {
        ThreadManager::poll();
      } catch (...) {
        ++escaped;
      }
    }
    return nullptr;
  });
  ASSERT_TRUE(t.has_value());
  Result<InterruptTicket> bad = m->interrupt(*t, [](Tcr&) { throw 42; });
  ASSERT_TRUE(bad.has_value());
  EXPECT_TRUE(bad->wait().has_value());  // it ran: Delivered
  // The thread still runs its interrupts afterwards.
  Result<InterruptTicket> good = m->interrupt(*t, [&](Tcr&) { ++later; });
  ASSERT_TRUE(good.has_value());
  EXPECT_TRUE(good->wait().has_value());
  EXPECT_EQ(later.load(), 1);
  stop = true;
  EXPECT_TRUE(m->join(*t).has_value());
  EXPECT_EQ(escaped.load(), 0);
}

// Queues `fn` on a thread that is spinning (no safe point) and then returns: the closure runs at
// its exit, its last safe point.
Result<void*> run_at_exit(ThreadManager& m, InterruptFunction fn,
                          std::optional<InterruptTicket>* out) {
  std::atomic<bool> go{false};
  std::atomic<bool> started{false};
  Result<ThreadRef> t = m.spawn("exiting", [&](Tcr&) -> void* {
    started = true;
    while (!go.load()) {
    }
    return reinterpret_cast<void*>(std::uintptr_t{77});
  });
  EXPECT_TRUE(t.has_value());
  if (!t) return std::unexpected(t.error());
  EXPECT_TRUE(eventually([&] { return started.load(); }));
  Result<InterruptTicket> k = m.interrupt(*t, std::move(fn));
  EXPECT_TRUE(k.has_value());
  if (k) *out = *k;
  go = true;
  return m.join(*t);
}

TEST(Hardening, AClosureThatThrowsAnythingAtExitDoesNotTerminate) {
  auto m = make_manager();
  std::optional<InterruptTicket> ticket;
  Result<void*> r = run_at_exit(*m, [](Tcr&) { throw 42; }, &ticket);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(*r, reinterpret_cast<void*>(std::uintptr_t{77}));
  ASSERT_TRUE(ticket.has_value());
  EXPECT_EQ(ticket->outcome(), InterruptOutcome::Delivered);
}

TEST(Hardening, PthreadExitInAClosureDrainedAtExitFinishesTheTeardown) {
  Watchdog dog("pthread_exit at exit", 60s);
  auto m = make_manager();
  std::optional<InterruptTicket> ticket;
  Result<void*> r = run_at_exit(*m, [](Tcr&) { pthread_exit(nullptr); }, &ticket);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  ASSERT_TRUE(ticket.has_value());
  EXPECT_EQ(ticket->outcome(), InterruptOutcome::Delivered);
  EXPECT_EQ(m->stats().live, 0u);
  EXPECT_TRUE(m->shutdown().has_value());
}

TEST(Hardening, PthreadExitInAClosureAtPollEndsTheThreadCleanly) {
  Watchdog dog("pthread_exit at poll", 60s);
  auto m = make_manager();
  std::atomic<bool> after{false};
  Result<ThreadRef> t = m->spawn("poller", [&](Tcr&) -> void* {
    for (;;) ThreadManager::poll();
    after = true;
    return nullptr;
  });
  ASSERT_TRUE(t.has_value());
  Result<InterruptTicket> k = m->interrupt(*t, [](Tcr&) { pthread_exit(nullptr); });
  ASSERT_TRUE(k.has_value());
  EXPECT_TRUE(k->wait().has_value());
  Result<void*> joined = m->join(*t);
  ASSERT_TRUE(joined.has_value()) << joined.error().message();
  EXPECT_EQ(*joined, nullptr);
  EXPECT_FALSE(after.load());
}

TEST(Hardening, PthreadExitInAnExitHookFinishesTheTeardownAndSkipsTheLaterHooks) {
  Watchdog dog("pthread_exit in a hook", 60s);
  std::atomic<int> second{0};
  ManagerOptions o;
  o.exit_hooks.push_back([](Tcr&) { pthread_exit(nullptr); });
  o.exit_hooks.push_back([&](Tcr&) { ++second; });
  auto m = make_manager(std::move(o));
  for (int i = 0; i < 3; ++i) {
    Result<ThreadRef> t = m->spawn("hooked", [](Tcr&) -> void* { return nullptr; });
    ASSERT_TRUE(t.has_value());
    EXPECT_TRUE(m->join(*t).has_value());
  }
  EXPECT_EQ(second.load(), 0);
  EXPECT_TRUE(m->shutdown().has_value());
  EXPECT_EQ(m->stats().live, 0u);
}

// ---- 6. one wake-up signal in flight per thread -------------------------------------------------

// "SigQ: queued/limit" of this process's user, from /proc/self/status.
long queued_signals() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("SigQ:", 0) == 0) return std::stol(line.substr(5));
  }
  return -1;
}

// Lowers RLIMIT_SIGPENDING to what is queued now plus `room`, and restores it.
class SigpendingLimit {
 public:
  explicit SigpendingLimit(long room) {
    getrlimit(RLIMIT_SIGPENDING, &m_old);
    rlimit low = m_old;
    low.rlim_cur = static_cast<rlim_t>(queued_signals() + room);
    EXPECT_EQ(setrlimit(RLIMIT_SIGPENDING, &low), 0);
  }
  ~SigpendingLimit() { setrlimit(RLIMIT_SIGPENDING, &m_old); }

 private:
  rlimit m_old{};
};

// A thread that blocks every signal and spins until `go`, then polls once and returns.
ThreadRef spawn_masked(ThreadManager& m, std::atomic<bool>& masked, std::atomic<bool>& go) {
  Result<ThreadRef> r = m.spawn("masked", [&](Tcr&) -> void* {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    masked = true;
    while (!go.load()) {
    }
    ThreadManager::poll();
    pthread_sigmask(SIG_UNBLOCK, &all, nullptr);
    return nullptr;
  });
  EXPECT_TRUE(r.has_value());
  return r ? *r : ThreadRef{};
}

TEST(Hardening, InterruptsToAThreadThatMasksSignalsQueueOneSignalNotOneEach) {
  ASSERT_GE(queued_signals(), 0);
  auto m = make_manager();
  std::atomic<bool> masked{false};
  std::atomic<bool> go{false};
  ThreadRef t = spawn_masked(*m, masked, go);
  ASSERT_TRUE(eventually([&] { return masked.load(); }));
  std::atomic<int> ran{0};
  {
    SigpendingLimit limit(256);  // room for other processes of this user, not for one per call
    for (int i = 0; i < 2000; ++i) {
      Result<InterruptTicket> k = m->interrupt(t, [&](Tcr&) { ++ran; });
      ASSERT_TRUE(k.has_value()) << "interrupt " << i << ": " << k.error().message();
    }
    // Another manager's stop over healthy threads still gets its signals.
    auto other = make_manager();
    Adopted self(*other);
    std::atomic<bool> stop{false};
    Result<ThreadRef> spinner = spawn_spinner(*other, stop);
    ASSERT_TRUE(spinner.has_value());
    for (int i = 0; i < 20; ++i) {
      Result<StoppedWorld> w = other->suspend_all();
      ASSERT_TRUE(w.has_value()) << w.error().message();
      ASSERT_TRUE(other->resume_all().has_value());
    }
    stop = true;
    EXPECT_TRUE(other->join(*spinner).has_value());
  }
  go = true;
  EXPECT_TRUE(m->join(t).has_value());
  EXPECT_EQ(ran.load(), 2000);
}

// With the queue full (every send refused with EAGAIN: injected, since the real queue is shared
// by every process of the user), a stop says it could not signal the thread instead of waiting
// forever (the manager has no stop_timeout).
TEST(Hardening, AStopThatCannotQueueItsSignalFailsClearly) {
  Watchdog dog("stop with a full signal queue", 60s);
  auto m = make_manager();
  Adopted self(*m);
  std::atomic<bool> stop{false};
  Result<ThreadRef> t = spawn_spinner(*m, stop);
  ASSERT_TRUE(t.has_value());
  const os::Call call =
      m->handle_mode() == HandleMode::Pidfd ? os::Call::PidfdSendSignal : os::Call::Tgkill;
  {
    os::ScopedFault full(call, 1, EAGAIN, 1u << 30);
    Result<StoppedWorld> w = m->suspend_all();
    ASSERT_FALSE(w.has_value());
    EXPECT_EQ(w.error().code, EAGAIN) << w.error().message();
    EXPECT_NE(w.error().message().find("#" + std::to_string(t->id())), std::string::npos);
    EXPECT_NE(w.error().message().find("RLIMIT_SIGPENDING"), std::string::npos);
    EXPECT_FALSE(m->world_stopped_by_caller());
    EXPECT_GT(os::call_count(call), 2u);  // sent again while the queue was full
  }
  Result<StoppedWorld> again = m->suspend_all();  // and the next stop works
  ASSERT_TRUE(again.has_value()) << again.error().message();
  EXPECT_EQ(again->threads().size(), 1u);
  ASSERT_TRUE(m->resume_all().has_value());
  stop = true;
  EXPECT_TRUE(m->join(*t).has_value());
}

// ---- 7. a world left stopped at exit ------------------------------------------------------------

TEST(Hardening, AStopLeftByAnExitHookIsReleasedBeforeTheGcUnregisters) {
  Watchdog dog("stop left by an exit hook", 60s);
  ManagerOptions o;
  std::atomic<ThreadManager*> manager{nullptr};
  o.exit_hooks.push_back([&](Tcr& self) {
    if (self.name() == "stopper") (void)manager.load()->suspend_all();  // never resumed
  });
  auto m = make_manager(std::move(o));
  manager = m.get();
  std::atomic<bool> stop{false};
  Result<ThreadRef> spinner = spawn_spinner(*m, stop);
  ASSERT_TRUE(spinner.has_value());
  Result<ThreadRef> stopper = m->spawn("stopper", [](Tcr&) -> void* { return nullptr; });
  ASSERT_TRUE(stopper.has_value());
  EXPECT_TRUE(m->join(*stopper).has_value());
  stop = true;
  EXPECT_TRUE(m->join(*spinner).has_value());
}

TEST(Hardening, AStopLeftByAClosureDrainedAtExitIsReleased) {
  Watchdog dog("stop left by a closure", 60s);
  auto m = make_manager();
  ThreadManager* raw = m.get();
  std::optional<InterruptTicket> ticket;
  Result<void*> r = run_at_exit(*m, [raw](Tcr&) { (void)raw->suspend_all(); }, &ticket);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  // The world runs: a new thread starts and ends.
  Result<ThreadRef> next = m->spawn("next", [](Tcr&) -> void* { return nullptr; });
  ASSERT_TRUE(next.has_value());
  EXPECT_TRUE(m->join(*next).has_value());
}

// ---- 8. no waiting for threads while holding them stopped ---------------------------------------

TEST(Hardening, ReapAndShutdownRefuseToWaitWhileTheCallerHoldsTheWorldStopped) {
  Watchdog dog("reap(ThreadManager::Reap::WaitForRunning) while stopped", 60s);
  auto m = make_manager();
  auto other = make_manager();
  Adopted self(*m);
  std::atomic<bool> stop{false};
  SpawnOptions detached;
  detached.detached = true;
  ASSERT_TRUE(spawn_spinner(*m, stop, detached));
  Semaphore gate;
  ThreadRef elsewhere = spawn_gated(*other, gate, nullptr);
  ASSERT_TRUE(m->suspend_all().has_value());
  Result<std::size_t> reaped = m->reap(ThreadManager::Reap::WaitForRunning);
  ASSERT_FALSE(reaped.has_value());
  EXPECT_EQ(reaped.error().step, Step::BadArgument);
  EXPECT_TRUE(m->reap(ThreadManager::Reap::Exited).has_value());  // not waiting is fine
  Result<void> down = m->shutdown();
  ASSERT_FALSE(down.has_value());
  EXPECT_EQ(down.error().step, Step::BadArgument);
  // Nor on another manager: its threads need Boehm's lock, which this thread holds.
  Result<void*> joined = other->join(elsewhere);
  ASSERT_FALSE(joined.has_value());
  EXPECT_EQ(joined.error().step, Step::BadArgument);
  ASSERT_TRUE(m->resume_all().has_value());
  stop = true;
  gate.post();
  EXPECT_TRUE(other->join(elsewhere).has_value());
  EXPECT_TRUE(m->reap(ThreadManager::Reap::WaitForRunning).has_value());
}

// ---- 10. a thread that detaches itself ----------------------------------------------------------

TEST(Hardening, AThreadThatDetachesItselfFailsJoinClearlyAndItsStackWaitsForItsEnd) {
  // glibc makes a malloc arena (two mappings, never unmapped) the first time threads contend for
  // malloc, which a dying self-detached thread and the next spawn sometimes do: one arena keeps
  // the mapping count tcr's own.
  mallopt(M_ARENA_MAX, 1);
  auto m = make_manager();
  ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  for (int i = 0; i < 20; ++i) {
    Result<ThreadRef> t = m->spawn("self-detaching", [](Tcr&) -> void* {
      pthread_detach(pthread_self());
      return nullptr;
    });
    ASSERT_TRUE(t.has_value());
    Result<void*> joined = m->join(*t);
    ASSERT_FALSE(joined.has_value());
    EXPECT_EQ(joined.error().step, Step::ThreadDetached) << joined.error().message();
    EXPECT_NE(joined.error().message().find("pthread_detach"), std::string::npos);
    // The stack it ran on is reused by the next thread, which runs on it fine.
    Result<ThreadRef> next = m->spawn("next", [](Tcr&) -> void* { return nullptr; });
    ASSERT_TRUE(next.has_value());
    EXPECT_TRUE(m->join(*next).has_value());
  }
  // Detached by tcr as well: the reaper waits for its end too.
  SpawnOptions detached;
  detached.detached = true;
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(m->spawn("both", [](Tcr&) -> void* {
      pthread_detach(pthread_self());
      return nullptr;
    }, detached));
  }
  ASSERT_TRUE(m->reap(ThreadManager::Reap::WaitForRunning).has_value());
  EXPECT_EQ(m->stats().dead_unreaped, 0u);
  (void)m->trim();
  test::expect_no_leak(before, test::settled(ledger));
}

// ---- an adopted thread can be named --------------------------------------------------------------

TEST(Hardening, AnAdoptedThreadGetsARefThatSignalsAndInterruptsIt) {
  auto m = make_manager();
  EXPECT_FALSE(m->current_ref().has_value());  // the test's thread is not the manager's
  std::atomic<bool> stop{false};
  std::atomic<bool> ready{false};
  ThreadRef ref;
  std::atomic<int> ran{0};
  std::thread foreign([&] {
    ASSERT_TRUE(m->adopt_current_thread("foreign").has_value());
    Result<ThreadRef> r = m->current_ref();
    ASSERT_TRUE(r.has_value());
    ref = *r;
    ready = true;
    while (!stop.load()) ThreadManager::poll();
    ASSERT_TRUE(m->release_current_thread().has_value());
  });
  ASSERT_TRUE(eventually([&] { return ready.load(); }));
  EXPECT_TRUE(m->signal(ref, 0).has_value());
  Result<InterruptTicket> k = m->interrupt(ref, [&](Tcr& self) {
    if (self.adopted()) ++ran;
  });
  ASSERT_TRUE(k.has_value());
  EXPECT_TRUE(k->wait().has_value());
  EXPECT_EQ(ran.load(), 1);
  auto other = make_manager();
  EXPECT_FALSE(other->signal(ref, 0).has_value());
  stop = true;
  foreign.join();
  EXPECT_FALSE(m->signal(ref, 0).has_value());  // released: stale
}

}  // namespace
}  // namespace tcr
