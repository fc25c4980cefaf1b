// Invariants 1 and 2 by counting: after 100,000 thread lifetimes the process holds exactly the
// fds, pidfds, mappings and OS threads it held before, RSS within a few MiB, and the manager's
// records did not grow. And the test that shows the leak normalize_kernel_handles
// (threads/shutdown.cpp) prevents.
#include <gtest/gtest.h>
#include <semaphore.h>

#include <mutex>
#include <vector>

#include "runtime/kernel_handle.h"
#include "tests/test_support.h"

namespace tcr {
namespace {

constexpr int kLifetimes = test::lifetimes(100000);  // fewer under the sanitizers

class Leak : public ::testing::TestWithParam<HandleModeChoice> {
 protected:
  std::unique_ptr<ThreadManager> make() {
    ManagerOptions options;
    options.handle_mode = GetParam();
    return test::make_manager(std::move(options));
  }
};

// Joinable threads are held kBatch at a time, so several records cycle: a record that kept its
// pidfd past reap would leave one per record, where a single record's new handle could hide it.
constexpr int kBatch = 4;

// One-time costs (the GC heap, glibc's arena for the first thread, the logger) are paid by a
// warm-up before the baseline, so the baseline counts what a steady state holds.
void warm_up(ThreadManager& m) {
  for (int i = 0; i < 100; i += kBatch) {
    ThreadRef refs[kBatch];
    for (ThreadRef& ref : refs) {
      Result<ThreadRef> t = m.spawn("warm-up", [](Tcr&) { return nullptr; });
      ASSERT_TRUE(t);
      ref = *t;
    }
    for (ThreadRef& ref : refs) ASSERT_TRUE(m.join(ref));
  }
}

TEST_P(Leak, JoinedThreadsLeaveEveryCountAtItsBaseline) {
  const ResourceLedger ledger;
  // Before any thread: a reaped record holds no kernel handle, so this is the count to return to
  // exactly, warm-up or not.
  const std::size_t pidfds_before_any = ledger.snapshot().pidfds;
  auto m = make();
  warm_up(*m);
  const ResourceCounts before = test::settled(ledger);
  const std::size_t records = m->stats().records;
  for (int i = 0; i < kLifetimes; i += kBatch) {
    ThreadRef refs[kBatch];
    for (ThreadRef& ref : refs) {
      Result<ThreadRef> t = m->spawn("leak-check", [](Tcr&) { return nullptr; });
      ASSERT_TRUE(t) << t.error().message();
      ref = *t;
    }
    for (ThreadRef& ref : refs) ASSERT_TRUE(m->join(ref));
  }
  const ResourceCounts after = test::settled(ledger);
  test::expect_no_leak(before, after);
  EXPECT_EQ(after.pidfds, pidfds_before_any);
  EXPECT_EQ(m->stats().records, records);
}

TEST_P(Leak, DetachedThreadsLeaveEveryCountAtItsBaselineOnceReaped) {
  auto m = make();
  warm_up(*m);
  sem_t done;
  sem_init(&done, 0, 0);
  // How many records (and so cached stacks) overlapping exits need varies from run to run; the
  // stack cache is bounded and tested on its own (stack_cache_test.cpp), so compare without it.
  m->trim();
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  SpawnOptions detached;
  detached.detached = true;
  for (int i = 0; i < kLifetimes; ++i) {  // the seeds' process-run-function loop
    Result<ThreadRef> t = m->spawn("ccl-foo", [&](Tcr&) {
      sem_post(&done);
      return nullptr;
    }, detached);
    ASSERT_TRUE(t) << t.error().message();
    sem_wait(&done);
  }
  m->reap(ThreadManager::Reap::WaitForRunning);
  m->trim();
  test::expect_no_leak(before, test::settled(ledger));
  // Bounded by how many exiting threads overlap the spawner (a few; dozens under sanitizers,
  // where exits are slow), not by history: a record per thread would be 100,000.
  EXPECT_LT(m->stats().records, 1000u);
  sem_destroy(&done);
}

// A runtime that asks for its thread's handle again and never gives it back (CCL's extra
// mach_thread_self()): normalize_kernel_handles closes the extras, each once. The handle
// objects are kept (so the heap checker sees no leak) but never released by their owner before
// the thread exits.
std::mutex g_forgotten_mutex;
std::vector<KernelThreadHandle> g_forgotten;

void* open_extra_handles(Tcr& self, int n) {
  for (int i = 0; i < n; ++i) {
    Result<KernelThreadHandle> h =
        KernelThreadHandle::open_current(HandleMode::Pidfd, self.handle_tag());
    EXPECT_TRUE(h);
    std::lock_guard lock(g_forgotten_mutex);
    g_forgotten.push_back(std::move(*h));
  }
  return nullptr;
}

TEST(LeakShutdown, LeavesExactlyOnePidfdPerThread) {
  if (detected_handle_mode() != HandleMode::Pidfd) GTEST_SKIP() << "needs thread pidfds";
  auto m = test::make_manager();
  warm_up(*m);
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  for (int i = 0; i < 200; ++i) {
    Result<ThreadRef> t = m->spawn("leaky-runtime", [](Tcr& self) {
      return open_extra_handles(self, 5);
    });
    ASSERT_TRUE(t);
    ASSERT_TRUE(m->join(*t));
  }
  test::expect_no_leak(before, test::settled(ledger));
  EXPECT_EQ(m->stats().extra_handles_closed, 200u * 5u);
}

TEST(LeakShutdown, WithoutNormalizationTheExtrasLeak) {
  if (detected_handle_mode() != HandleMode::Pidfd) GTEST_SKIP() << "needs thread pidfds";
  ManagerOptions options;
  options.normalize_kernel_handles = false;
  auto m = test::make_manager(std::move(options));
  warm_up(*m);
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  for (int i = 0; i < 20; ++i) {
    Result<ThreadRef> t = m->spawn("leaky-runtime", [](Tcr& self) {
      return open_extra_handles(self, 3);
    });
    ASSERT_TRUE(t);
    ASSERT_TRUE(m->join(*t));
  }
  // The seeds' failure mode, in pidfds: one leak per extra reference, forever.
  EXPECT_EQ(ledger.snapshot().pidfds, before.pidfds + 20u * 3u);
}

INSTANTIATE_TEST_SUITE_P(HandleModes, Leak,
                         ::testing::Values(HandleModeChoice::Pidfd, HandleModeChoice::Tgkill),
                         [](const ::testing::TestParamInfo<HandleModeChoice>& p) {
                           return p.param == HandleModeChoice::Pidfd ? "Pidfd" : "Tgkill";
                         });

}  // namespace
}  // namespace tcr
