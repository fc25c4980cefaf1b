// Races around reaping, the GC and cancellation: each test pins a path that once hung, aborted,
// leaked or kept garbage alive (found in the concurrency review).
#include <gtest/gtest.h>
#include <pthread.h>
#include <semaphore.h>

#define GC_THREADS 1
#define GC_NO_THREAD_REDIRECTS 1
#include <gc/gc.h>

#include <atomic>
#include <thread>
#include <vector>

#include "tests/test_support.h"

namespace tcr {
namespace {

TEST(LifecycleRaces, DetachedThreadsCallingReapWaitDoNotWaitForEachOther) {
  auto m = test::make_manager();
  SpawnOptions detached;
  detached.detached = true;
  std::atomic<int> returned{0};
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(m->spawn("reaper", [&](Tcr&) {
      m->reap(ThreadManager::Reap::WaitForRunning);  // once waited for detached_live == 1 each: forever
      ++returned;
      return nullptr;
    }, detached));
  }
  ASSERT_TRUE(test::eventually([&] { return returned.load() == 2; }));
  m->reap(ThreadManager::Reap::WaitForRunning);
  EXPECT_EQ(m->stats().dead_unreaped, 0u);
}

TEST(LifecycleRaces, ShutdownReapsEveryZombieEvenWithConcurrentNonBlockingReaps) {
  for (int round = 0; round < 50; ++round) {
    auto m = test::make_manager();
    SpawnOptions detached;
    detached.detached = true;
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(m->spawn("z", [](Tcr&) { return nullptr; }, detached));
    std::thread nibbler([&] {
      for (int i = 0; i < 50; ++i) m->reap(ThreadManager::Reap::Exited);
    });
    ASSERT_TRUE(m->shutdown());
    EXPECT_EQ(m->stats().dead_unreaped, 0u) << "round " << round;
    nibbler.join();
  }
}

// A thread the GC does not know allocating records must never start a collection: Boehm aborts
// the process ("Collecting from unknown thread").
TEST(LifecycleRaces, UnregisteredThreadsSpawnAndAdoptWhileTheGcIsBusy) {
  auto m = test::make_manager();
  std::atomic<bool> stop{false};
  Result<ThreadRef> garbage = m->spawn("garbage", [&](Tcr&) {
    while (!stop.load()) (void)GC_MALLOC(256);
    return nullptr;
  });
  ASSERT_TRUE(garbage);
  std::vector<std::thread> foreign;
  for (int f = 0; f < 4; ++f) {
    foreign.emplace_back([&] {
      std::vector<ThreadRef> refs;
      for (int i = 0; i < 50; ++i) {  // new records, allocated on this unregistered thread
        Result<ThreadRef> t = m->spawn("from-foreign", [](Tcr&) {
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
          return nullptr;
        });
        ASSERT_TRUE(t);
        refs.push_back(*t);
      }
      for (ThreadRef r : refs) ASSERT_TRUE(m->join(r));
      ASSERT_TRUE(m->adopt_current_thread("adopted"));
      ASSERT_TRUE(m->release_current_thread());
    });
  }
  for (std::thread& t : foreign) t.join();
  stop = true;
  ASSERT_TRUE(m->join(*garbage));
}

std::atomic<long> g_collected{0};
void count(void*, void*) { g_collected.fetch_add(1); }

TEST(LifecycleRaces, AReapedThreadsSlotsNoLongerKeepItsObjectsAlive) {
  auto m = test::make_manager();
  g_collected = 0;
  constexpr int kThreads = 32;
  sem_t go;
  sem_init(&go, 0, 0);
  std::vector<ThreadRef> refs;
  for (int i = 0; i < kThreads; ++i) {  // all alive at once: 32 records, each left with a slot
    Result<ThreadRef> t = m->spawn("slots", [&go](Tcr& self) -> void* {
      void* p = GC_MALLOC(64);
      GC_REGISTER_FINALIZER_NO_ORDER(p, count, nullptr, nullptr, nullptr);
      self.slot(0) = p;  // left behind when the thread ends
      sem_wait(&go);
      return nullptr;
    });
    ASSERT_TRUE(t);
    refs.push_back(*t);
  }
  for (int i = 0; i < kThreads; ++i) sem_post(&go);
  for (ThreadRef r : refs) ASSERT_TRUE(m->join(r));
  for (int i = 0; i < 4; ++i) {
    GC_gcollect();
    GC_invoke_finalizers();
  }
  // 32 free records wait for reuse; had they kept their slots, none of these would be collected.
  // (Conservative scanning may keep a stray one alive.)
  EXPECT_GE(g_collected.load(), kThreads - 2);
  sem_destroy(&go);
}

TEST(LifecycleRaces, CancellingAThreadLeavesTheRegistryClean) {
  auto m = test::make_manager();
  for (int i = 0; i < 20; ++i) {
    std::atomic<bool> started{false};
    std::atomic<pthread_t> self{};
    Result<ThreadRef> t = m->spawn("cancelled", [&](Tcr&) -> void* {
      self = pthread_self();
      started = true;
      for (;;) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a cancellation point
    });
    ASSERT_TRUE(t);
    ASSERT_TRUE(test::eventually([&] { return started.load(); }));
    ASSERT_EQ(pthread_cancel(self.load()), 0);
    Result<void*> v = m->join(*t);
    ASSERT_TRUE(v) << v.error().message();
    EXPECT_EQ(m->stats().live, 0u);
  }
}

TEST(LifecycleRaces, ACancelLeftPendingWhenTheFunctionReturnsDoesNotStrikeInsideShutdown) {
  ManagerOptions options;
  std::atomic<int> hooks{0};
  options.exit_hooks.push_back([&](Tcr&) {
    std::this_thread::sleep_for(std::chrono::microseconds(10));  // a cancellation point
    ++hooks;
  });
  auto m = test::make_manager(std::move(options));
  for (int i = 0; i < 20; ++i) {
    Result<ThreadRef> t = m->spawn("pending", [](Tcr&) -> void* {
      // Deferred and enabled: the cancel stays pending until the next cancellation point, which
      // is no longer in this function but ahead, in shutdown (the hook's sleep).
      pthread_cancel(pthread_self());
      return nullptr;
    });
    ASSERT_TRUE(t);
    ASSERT_TRUE(m->join(*t));
    EXPECT_EQ(m->stats().live, 0u);
  }
  EXPECT_EQ(hooks.load(), 20);
}

}  // namespace
}  // namespace tcr
