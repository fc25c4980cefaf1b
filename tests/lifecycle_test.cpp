// The TCR lifecycle through ThreadManager: spawn, join, detach, adoption, errors. Every test runs
// in both kernel-handle modes (pidfd and the tgkill fallback).
#include <gtest/gtest.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>

#include <atomic>
#include <stdexcept>
#include <thread>

#include "runtime/os.h"
#include "tests/test_support.h"
#include "threads/thread_manager.h"

namespace tcr {
namespace {

using test::as_int;
using test::as_ptr;

class Lifecycle : public ::testing::TestWithParam<HandleModeChoice> {
 protected:
  void SetUp() override {
    ManagerOptions options;
    options.handle_mode = GetParam();
    manager = test::make_manager(std::move(options));
    ASSERT_NE(manager, nullptr);
  }
  std::unique_ptr<ThreadManager> manager;
};

TEST_P(Lifecycle, JoinReturnsTheThreadsValue) {
  Result<ThreadRef> t = manager->spawn("answer", [](Tcr&) { return as_ptr(42); });
  ASSERT_TRUE(t) << t.error().message();
  Result<void*> v = manager->join(*t);
  ASSERT_TRUE(v) << v.error().message();
  EXPECT_EQ(as_int(*v), 42u);
}

TEST_P(Lifecycle, TheThreadSeesItsOwnTcr) {
  std::atomic<Tcr*> seen{nullptr};
  std::atomic<pid_t> tid{0};
  Result<ThreadRef> t = manager->spawn("self", [&](Tcr& self) {
    seen = Tcr::current();
    tid = os::gettid();
    EXPECT_EQ(&self, Tcr::current());
    EXPECT_EQ(self.name(), "self");
    EXPECT_EQ(self.state(), TcrState::Running);
    EXPECT_TRUE(self.handle().valid());
    return nullptr;
  });
  ASSERT_TRUE(t);
  ASSERT_TRUE(manager->join(*t));
  EXPECT_EQ(seen.load(), t->tcr_unchecked());
  EXPECT_NE(tid.load(), 0);
  EXPECT_EQ(Tcr::current(), nullptr);  // the test's thread was never adopted
}

TEST_P(Lifecycle, AnEscapedExceptionReachesTheJoiner) {
  Result<ThreadRef> t = manager->spawn("thrower", [](Tcr&) -> void* {
    throw std::runtime_error("no more conses");
  });
  ASSERT_TRUE(t);
  Result<void*> v = manager->join(*t);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().step, Step::ThreadThrew);
  ASSERT_TRUE(v.error().exception);
  EXPECT_THROW(std::rethrow_exception(v.error().exception), std::runtime_error);
  EXPECT_NE(v.error().message().find("no more conses"), std::string::npos);
  // The manager is still usable.
  Result<ThreadRef> again = manager->spawn("after", [](Tcr&) { return as_ptr(1); });
  ASSERT_TRUE(again);
  EXPECT_TRUE(manager->join(*again));
}

TEST_P(Lifecycle, PthreadExitInsideTheFunctionStillShutsDown) {
  Result<ThreadRef> t = manager->spawn("exiter", [](Tcr&) -> void* { pthread_exit(nullptr); });
  ASSERT_TRUE(t);
  Result<void*> v = manager->join(*t);
  ASSERT_TRUE(v) << v.error().message();
  EXPECT_EQ(*v, nullptr);
  EXPECT_EQ(manager->stats().live, 0u);
}

TEST_P(Lifecycle, DetachedThreadsAreReaped) {
  sem_t done;
  sem_init(&done, 0, 0);
  for (int i = 0; i < 50; ++i) {
    SpawnOptions o;
    o.detached = true;
    Result<ThreadRef> t = manager->spawn("detached", [&](Tcr&) {
      sem_post(&done);
      return nullptr;
    }, o);
    ASSERT_TRUE(t) << t.error().message();
    sem_wait(&done);
  }
  manager->reap(ThreadManager::Reap::WaitForRunning);
  const ManagerStats s = manager->stats();
  EXPECT_EQ(s.live, 0u);
  EXPECT_EQ(s.dead_unreaped, 0u);
  EXPECT_EQ(s.reaped, 50u);
  // Recycled, not one per thread: only as many as exits overlapped the next spawn (a few; more
  // under sanitizers, where exits are slow).
  EXPECT_LT(s.records, 25u);
  sem_destroy(&done);
}

TEST_P(Lifecycle, DetachAfterExitHandsTheThreadToTheReaper) {
  Result<ThreadRef> t = manager->spawn("quick", [](Tcr&) { return nullptr; });
  ASSERT_TRUE(t);
  ASSERT_TRUE(test::eventually([&] { return manager->stats().live == 0; }));
  ASSERT_TRUE(manager->detach(*t));
  EXPECT_EQ(manager->reap(ThreadManager::Reap::WaitForRunning), 1u);
  EXPECT_EQ(manager->stats().dead_unreaped, 0u);
}

TEST_P(Lifecycle, DoubleJoinIsAClearError) {
  Result<ThreadRef> t = manager->spawn("once", [](Tcr&) { return nullptr; });
  ASSERT_TRUE(t);
  ASSERT_TRUE(manager->join(*t));
  Result<void*> again = manager->join(*t);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().step, Step::StaleThread);
  EXPECT_NE(again.error().message().find("already joined"), std::string::npos);
}

TEST_P(Lifecycle, ConcurrentSecondJoinIsAlreadyJoined) {
  sem_t go;
  sem_init(&go, 0, 0);
  Result<ThreadRef> t = manager->spawn("slow", [&](Tcr&) {
    sem_wait(&go);
    return as_ptr(7);
  });
  ASSERT_TRUE(t);
  // Two joiners race; whichever comes second is refused at once, the first waits for the value.
  std::atomic<int> refused{0}, got_value{0};
  auto joiner = [&] {
    Result<void*> r = manager->join(*t);
    if (r && as_int(*r) == 7) ++got_value;
    if (!r && r.error().step == Step::AlreadyJoined) ++refused;
  };
  std::thread a(joiner), b(joiner);
  ASSERT_TRUE(test::eventually([&] { return refused.load() == 1; }));
  sem_post(&go);
  a.join();
  b.join();
  EXPECT_EQ(got_value.load(), 1);
  EXPECT_EQ(refused.load(), 1);
  sem_destroy(&go);
}

TEST_P(Lifecycle, JoinAfterDetachIsAClearError) {
  sem_t go;
  sem_init(&go, 0, 0);
  Result<ThreadRef> t = manager->spawn("detach-me", [&](Tcr&) {
    sem_wait(&go);
    return nullptr;
  });
  ASSERT_TRUE(t);
  ASSERT_TRUE(manager->detach(*t));
  Result<void*> v = manager->join(*t);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().step, Step::ThreadDetached);
  Result<void> d = manager->detach(*t);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().step, Step::ThreadDetached);
  sem_post(&go);
  manager->reap(ThreadManager::Reap::WaitForRunning);
  sem_destroy(&go);
}

TEST_P(Lifecycle, AThreadCannotJoinItself) {
  std::atomic<int> step{-1};
  ThreadRef self_ref;
  sem_t ready;
  sem_init(&ready, 0, 0);
  Result<ThreadRef> t = manager->spawn("narcissus", [&](Tcr&) {
    sem_wait(&ready);
    Result<void*> r = manager->join(self_ref);
    step = r ? -2 : static_cast<int>(r.error().step);
    return nullptr;
  });
  ASSERT_TRUE(t);
  self_ref = *t;
  sem_post(&ready);
  ASSERT_TRUE(manager->join(*t));
  EXPECT_EQ(step.load(), static_cast<int>(Step::JoinSelf));
  sem_destroy(&ready);
}

TEST_P(Lifecycle, BadArgumentsAreRefusedAndLeakNothing) {
  Result<ThreadRef> empty = manager->spawn("empty", ThreadFunction{});
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().step, Step::BadArgument);
  SpawnOptions tiny;
  tiny.stack_size = 4096;
  Result<ThreadRef> small = manager->spawn("tiny", [](Tcr&) { return nullptr; }, tiny);
  ASSERT_FALSE(small);
  EXPECT_EQ(small.error().step, Step::BadArgument);
  EXPECT_NE(small.error().message().find("stack_size"), std::string::npos);
  EXPECT_FALSE(manager->join(ThreadRef{}));
  EXPECT_EQ(manager->stats().records, 0u);
}

TEST_P(Lifecycle, SpawnAfterShutdownFails) {
  ASSERT_TRUE(manager->shutdown());
  Result<ThreadRef> t = manager->spawn("late", [](Tcr&) { return nullptr; });
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().step, Step::ManagerShutDown);
  Result<Tcr*> a = manager->adopt_current_thread("late");
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().step, Step::ManagerShutDown);
}

TEST_P(Lifecycle, ShutdownWaitsForRunningThreadsAndKeepsJoinableOnesJoinable) {
  std::atomic<bool> finished{false};
  Result<ThreadRef> t = manager->spawn("worker", [&](Tcr&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    finished = true;
    return as_ptr(5);
  });
  ASSERT_TRUE(t);
  ASSERT_TRUE(manager->shutdown());
  EXPECT_TRUE(finished.load());
  Result<void*> v = manager->join(*t);
  ASSERT_TRUE(v);
  EXPECT_EQ(as_int(*v), 5u);
}

TEST_P(Lifecycle, DestroyingTheManagerJoinsWhatWasNeverJoined) {
  const ResourceCounts before = test::settled(ResourceLedger());
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(manager->spawn("orphan", [](Tcr&) { return nullptr; }));
  }
  manager.reset();
  ResourceCounts after = test::settled(ResourceLedger());
  EXPECT_EQ(after.threads, before.threads);
  EXPECT_EQ(after.pidfds, before.pidfds);
}

TEST_P(Lifecycle, SnapshotListsLiveThreads) {
  sem_t go;
  sem_init(&go, 0, 0);
  std::vector<ThreadRef> refs;
  for (int i = 0; i < 3; ++i) {
    Result<ThreadRef> t = manager->spawn("listed-" + std::to_string(i), [&](Tcr&) {
      sem_wait(&go);
      return nullptr;
    });
    ASSERT_TRUE(t);
    refs.push_back(*t);
  }
  std::vector<ThreadInfo> live = manager->snapshot().value();
  ASSERT_EQ(live.size(), 3u);
  for (const ThreadInfo& info : live) {
    EXPECT_EQ(info.state, TcrState::Running);
    EXPECT_EQ(info.name.rfind("listed-", 0), 0u);
    EXPECT_NE(info.tid, 0);
    EXPECT_EQ(info.handle_fd >= 0, manager->handle_mode() == HandleMode::Pidfd);
  }
  int visited = 0;
  manager->for_each([&](const Tcr&) { ++visited; });
  EXPECT_EQ(visited, 3);
  for (int i = 0; i < 3; ++i) sem_post(&go);
  for (ThreadRef r : refs) ASSERT_TRUE(manager->join(r));
  EXPECT_TRUE(manager->snapshot().value().empty());
  sem_destroy(&go);
}

TEST_P(Lifecycle, ExitHooksRunOnTheExitingThreadFirst) {
  std::atomic<int> calls{0};
  std::atomic<bool> was_running{false};
  manager.reset();
  ManagerOptions options;
  options.handle_mode = GetParam();
  options.exit_hooks.push_back([&](Tcr& t) {
    ++calls;
    was_running = (Tcr::current() == &t) && t.handle().valid();
  });
  manager = test::make_manager(std::move(options));
  Result<ThreadRef> t = manager->spawn("hooked", [](Tcr&) { return nullptr; });
  ASSERT_TRUE(t);
  ASSERT_TRUE(manager->join(*t));
  EXPECT_EQ(calls.load(), 1);
  EXPECT_TRUE(was_running.load());
}

std::atomic<int> g_signalled{0};
void count_signal(int) { g_signalled.fetch_add(1, std::memory_order_relaxed); }

TEST_P(Lifecycle, SignalReachesALiveThreadAndFailsClearlyOnAnExitedOne) {
  struct sigaction sa {};
  sa.sa_handler = count_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old {};
  ASSERT_EQ(sigaction(SIGUSR2, &sa, &old), 0);
  g_signalled = 0;
  std::atomic<bool> stop{false};
  Result<ThreadRef> t = manager->spawn("target", [&](Tcr&) {
    while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return nullptr;
  });
  ASSERT_TRUE(t);
  Result<void> s = manager->signal(*t, SIGUSR2);
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_TRUE(test::eventually([] { return g_signalled.load() == 1; }));
  stop = true;
  ASSERT_TRUE(test::eventually([&] { return manager->stats().live == 0; }));
  Result<void> late = manager->signal(*t, SIGUSR2);  // Dead, not yet joined
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().step, Step::ThreadExited);
  ASSERT_TRUE(manager->join(*t));
  Result<void> stale = manager->signal(*t, SIGUSR2);  // reaped
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().step, Step::StaleThread);
  EXPECT_EQ(g_signalled.load(), 1);
  sigaction(SIGUSR2, &old, nullptr);
}

TEST_P(Lifecycle, AStaleRefNeverReachesTheRecordsNextThread) {
  Result<ThreadRef> first = manager->spawn("first", [](Tcr&) { return nullptr; });
  ASSERT_TRUE(first);
  ASSERT_TRUE(manager->join(*first));
  sem_t go;
  sem_init(&go, 0, 0);
  Result<ThreadRef> second = manager->spawn("second", [&](Tcr&) {
    sem_wait(&go);
    return nullptr;
  });
  ASSERT_TRUE(second);
  EXPECT_EQ(second->tcr_unchecked(), first->tcr_unchecked());  // the record was recycled
  EXPECT_NE(second->id(), first->id());
  Result<void> d = manager->detach(*first);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().step, Step::StaleThread);
  sem_post(&go);
  ASSERT_TRUE(manager->join(*second));  // the stale detach did not touch it
  sem_destroy(&go);
}

TEST_P(Lifecycle, AdoptedForeignThreadIsReleasedAtItsExit) {
  const ResourceCounts before = test::settled(ResourceLedger());
  std::atomic<bool> adopted_ok{false};
  std::atomic<std::uint64_t> id{0};
  std::thread foreign([&] {
    Result<Tcr*> t = manager->adopt_current_thread("callback");
    adopted_ok = t.has_value();
    if (!t) return;
    id = (*t)->id();
    EXPECT_EQ(Tcr::current(), *t);
    EXPECT_TRUE((*t)->adopted());
    EXPECT_TRUE((*t)->gc_registered());
    EXPECT_EQ(manager->snapshot().value().size(), 1u);
    Result<Tcr*> twice = manager->adopt_current_thread("again");
    ASSERT_FALSE(twice);
    EXPECT_EQ(twice.error().step, Step::AlreadyAdopted);
  });
  foreign.join();
  ASSERT_TRUE(adopted_ok.load());
  EXPECT_TRUE(manager->snapshot().value().empty());
  const ManagerStats s = manager->stats();
  EXPECT_EQ(s.adopted, 1u);
  EXPECT_EQ(s.free_records, s.records);
  const ResourceCounts after = test::settled(ResourceLedger());
  EXPECT_EQ(after.pidfds, before.pidfds);
  EXPECT_EQ(after.threads, before.threads);
}

TEST_P(Lifecycle, AdoptedThreadCanReleaseItselfEarly) {
  std::thread foreign([&] {
    ASSERT_TRUE(manager->adopt_current_thread("early"));
    ASSERT_TRUE(manager->release_current_thread());
    EXPECT_EQ(Tcr::current(), nullptr);
    Result<void> again = manager->release_current_thread();
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().step, Step::NotAdopted);
    // And it can be adopted again.
    ASSERT_TRUE(manager->adopt_current_thread("again"));
  });
  foreign.join();
  EXPECT_TRUE(manager->snapshot().value().empty());
}

TEST_P(Lifecycle, AdoptedThreadsOutliveTheManagerSafely) {
  sem_t adopted, go;
  sem_init(&adopted, 0, 0);
  sem_init(&go, 0, 0);
  std::thread foreign([&] {
    ASSERT_TRUE(manager->adopt_current_thread("outliver"));
    sem_post(&adopted);
    sem_wait(&go);
  });
  sem_wait(&adopted);
  Result<void> r = manager->shutdown();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().step, Step::AdoptedThreadsAlive);
  manager.reset();  // the adopted thread keeps the core alive
  sem_post(&go);
  foreign.join();  // its exit releases its Tcr on a destroyed manager's core: no crash
  sem_destroy(&adopted);
  sem_destroy(&go);
}

TEST_P(Lifecycle, TheMainThreadCanBeAdoptedAndReleased) {
  Result<Tcr*> t = manager->adopt_current_thread("main");
  ASSERT_TRUE(t) << t.error().message();
  // Boehm registered the main thread in GC_init: not ours to unregister.
  EXPECT_FALSE((*t)->gc_registered());
  ASSERT_TRUE(manager->release_current_thread());
  EXPECT_EQ(Tcr::current(), nullptr);
}

INSTANTIATE_TEST_SUITE_P(HandleModes, Lifecycle,
                         ::testing::Values(HandleModeChoice::Pidfd, HandleModeChoice::Tgkill),
                         [](const ::testing::TestParamInfo<HandleModeChoice>& p) {
                           return p.param == HandleModeChoice::Pidfd ? "Pidfd" : "Tgkill";
                         });

}  // namespace
}  // namespace tcr
