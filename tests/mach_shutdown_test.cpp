// shutdown_thread_tcr's normalize_kernel_handles on real threads with a MachModel as the task's
// IPC space: the same normalize_send_refs path the Darwin build takes, driven by real spawns
// and real thread exits.
#include <gtest/gtest.h>

#include "testing/mach_model.h"
#include "tests/test_support.h"

namespace tcr {
namespace {

// A runtime thread body that, like CCL before the fix, calls mach_thread_self() k times and
// never deallocates.
ThreadFunction leaky_body(mach::MachModel& model, int k) {
  return [&model, k](Tcr& self) -> void* {
    EXPECT_EQ(self.mach_port(), model.current_thread_port());
    for (int i = 0; i < k; ++i) EXPECT_EQ(model.mach_thread_self_current(), self.mach_port());
    EXPECT_EQ(model.urefs(self.mach_port(), mach::Right::Send), 1u + static_cast<unsigned>(k));
    return nullptr;
  };
}

std::unique_ptr<ThreadManager> manager_on(mach::MachModel& model, bool normalize) {
  ManagerOptions options;
  options.mach_space = &model;
  options.normalize_kernel_handles = normalize;
  return test::make_manager(std::move(options));
}

TEST(MachShutdownOnRealThreads, RealThreadsLeaveThePortNameCountFlat) {
  mach::MachModel model;
  auto m = manager_on(model, true);
  const ResourceLedger ledger(&model);
  const ResourceCounts before = test::settled(ledger);
  ASSERT_TRUE(before.port_names.has_value());
  for (int i = 0; i < test::lifetimes(20000); ++i) {
    Result<ThreadRef> t = m->spawn("ccl-thread", leaky_body(model, 1 + i % 5));
    ASSERT_TRUE(t) << t.error().message();
    ASSERT_TRUE(m->join(*t));
  }
  const ResourceCounts after = test::settled(ledger);
  EXPECT_EQ(after.port_names, before.port_names);
  EXPECT_EQ(model.live_threads(), 0u);
  EXPECT_EQ(model.failed_exit_deallocations(), 0u);  // libpthread's reference was still there
}

TEST(MachShutdownOnRealThreads, WithoutNormalizationEveryThreadLeavesADeadName) {
  mach::MachModel model;
  auto m = manager_on(model, false);
  std::size_t before = 0;
  ASSERT_EQ(model.names_count(&before), mach::kSuccess);
  constexpr int kThreads = 500;
  for (int i = 0; i < kThreads; ++i) {
    Result<ThreadRef> t = m->spawn("ccl-thread", leaky_body(model, 2));
    ASSERT_TRUE(t);
    ASSERT_TRUE(m->join(*t));
  }
  std::size_t after = 0;
  ASSERT_EQ(model.names_count(&after), mach::kSuccess);
  EXPECT_EQ(after, before + kThreads);  // the seeds' leak: one dead name per thread
}

TEST(MachShutdownOnRealThreads, DetachedThreadsToo) {
  mach::MachModel model;
  auto m = manager_on(model, true);
  std::size_t before = 0;
  ASSERT_EQ(model.names_count(&before), mach::kSuccess);
  SpawnOptions detached;
  detached.detached = true;
  for (int i = 0; i < 2000; ++i) ASSERT_TRUE(m->spawn("detached", leaky_body(model, 3), detached));
  m->reap(ThreadManager::Reap::WaitForRunning);
  std::size_t after = 0;
  ASSERT_EQ(model.names_count(&after), mach::kSuccess);
  EXPECT_EQ(after, before);
}

}  // namespace
}  // namespace tcr
