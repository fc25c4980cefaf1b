// Several spawners at once share the free list, the zombie list and the reaper: records are
// recycled across threads while detached threads exit and joiners reap. Counts must come back
// exactly, and no reference may reach a recycled record.
#include <gtest/gtest.h>
#include <malloc.h>
#include <semaphore.h>

#include <utility>

#include <atomic>
#include <thread>
#include <vector>

#include "tests/test_support.h"

namespace tcr {
namespace {

// kSpawners threads each spawn kPerSpawner threads, joining half and detaching half, reaping as
// they go. Returns how many thread functions ran and how many calls failed.
std::pair<long, int> run_spawners(ThreadManager& m, int spawners, int per_spawner) {
  std::atomic<long> ran{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int s = 0; s < spawners; ++s) {
    threads.emplace_back([&, s] {
      SpawnOptions detached;
      detached.detached = true;
      for (int i = 0; i < per_spawner; ++i) {
        const bool join = (i + s) % 2 == 0;
        const std::uintptr_t tag = static_cast<std::uintptr_t>(s * per_spawner + i + 1);
        Result<ThreadRef> t = m.spawn("stress", [&ran, tag](Tcr&) {
          ran.fetch_add(1, std::memory_order_relaxed);
          return test::as_ptr(tag);
        }, join ? SpawnOptions{} : detached);
        if (!t) {
          ++errors;
          continue;
        }
        if (join) {
          Result<void*> v = m.join(*t);
          if (!v || test::as_int(*v) != tag) ++errors;  // never another thread's value
        }
        if (i % 64 == 0) m.reap(ThreadManager::Reap::Exited);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  m.reap(ThreadManager::Reap::WaitForRunning);
  return {ran.load(), errors.load()};
}

TEST(Stress, ConcurrentSpawnersJoinersAndReapersLeaveNothingBehind) {
  // glibc gives threads that malloc concurrently arenas of their own and never unmaps them, and
  // caches the stacks of the test's own std::threads. Both are one-time costs of the harness, not
  // growth with history: a warm-up run at the same concurrency pays them before the baseline, and
  // a small arena cap makes that peak the same from run to run.
  mallopt(M_ARENA_MAX, 2);
  constexpr int kSpawners = 4;
  constexpr int kPerSpawner = 2500;
  auto m = test::make_manager();
  run_spawners(*m, kSpawners, 200);
  m->trim();  // records vary with overlap, and so would their cached stacks
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  const auto [ran, errors] = run_spawners(*m, kSpawners, kPerSpawner);
  EXPECT_EQ(errors, 0);
  EXPECT_EQ(ran, kSpawners * kPerSpawner);
  const ManagerStats s = m->stats();
  EXPECT_EQ(s.live, 0u);
  EXPECT_EQ(s.dead_unreaped, 0u);
  EXPECT_EQ(s.free_records, s.records);
  EXPECT_LE(s.cached_stacks, ManagerOptions{}.cached_stacks);
  m->trim();
  test::expect_no_leak(before, test::settled(ledger));
}

TEST(Stress, SignalsRacingExitEitherArriveOrSayTheThreadExited) {
  auto m = test::make_manager();
  for (int round = 0; round < 2000; ++round) {
    Result<ThreadRef> t = m->spawn("short", [](Tcr&) { return nullptr; });
    ASSERT_TRUE(t);
    // Signal 0 probes without delivering: the answer is success while the thread is registered,
    // ThreadExited after, and never a crash or a signal to a stranger.
    for (int k = 0; k < 3; ++k) {
      Result<void> r = m->signal(*t, 0);
      if (!r) {
        EXPECT_EQ(r.error().step, Step::ThreadExited) << r.error().message();
      }
    }
    ASSERT_TRUE(m->join(*t));
    Result<void> after = m->signal(*t, 0);
    ASSERT_FALSE(after);
    EXPECT_EQ(after.error().step, Step::StaleThread);
  }
}

}  // namespace
}  // namespace tcr
