// The stack cache: free records keep their last thread's stack for the next spawn of the same
// size, up to ManagerOptions::cached_stacks; trim() gives them back. Mappings stay bounded however
// many threads come and go.
#include <gtest/gtest.h>
#include <semaphore.h>

#include <errno.h>

#include <thread>
#include <vector>

#include "testing/fault_injection.h"
#include "tests/test_support.h"

namespace tcr {
namespace {

void* stack_of(Tcr& self) { return self.stack_low(); }

TEST(StackCache, TheNextThreadReusesTheLastThreadsStack) {
  auto m = test::make_manager();
  void* first = *m->join(*m->spawn("a", stack_of));
  EXPECT_EQ(m->stats().cached_stacks, 1u);
  void* second = *m->join(*m->spawn("b", stack_of));
  EXPECT_EQ(second, first);
  SpawnOptions bigger;
  bigger.stack_size = 4u << 20;  // another size: a fresh mapping, the old one unmapped
  void* third = *m->join(*m->spawn("c", stack_of, bigger));
  EXPECT_NE(third, first);
  EXPECT_EQ(m->stats().cached_stacks, 1u);
}

// Twelve threads alive at once, then joined.
void run_wide(ThreadManager& m) {
  sem_t go;
  sem_init(&go, 0, 0);
  std::vector<ThreadRef> refs;
  for (int i = 0; i < 12; ++i) {
    Result<ThreadRef> t = m.spawn("wide", [&](Tcr&) {
      sem_wait(&go);
      return nullptr;
    });
    ASSERT_TRUE(t);
    refs.push_back(*t);
  }
  for (int i = 0; i < 12; ++i) sem_post(&go);
  for (ThreadRef r : refs) ASSERT_TRUE(m.join(r));
  sem_destroy(&go);
}

TEST(StackCache, IsBoundedAndTrimGivesTheStacksBack) {
  ManagerOptions options;
  options.cached_stacks = 4;
  auto m = test::make_manager(std::move(options));
  // One-time costs of twelve concurrent threads (allocator arenas, Boehm's per-thread scratch
  // memory) are paid before the baseline by the same shape of run.
  run_wide(*m);
  m->trim();
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  run_wide(*m);  // twelve stacks mapped at once
  EXPECT_EQ(m->stats().cached_stacks, 4u);  // eight were unmapped at reap
  if (test::kMemoryCountsExact) {
    // Each cached stack is four mappings: guard page, stack, guard page, alternate signal stack.
    EXPECT_EQ(test::settled(ledger).maps, before.maps + 4 * 4);
  }
  EXPECT_EQ(m->trim(), 4u);
  EXPECT_EQ(m->stats().cached_stacks, 0u);
  test::expect_no_leak(before, test::settled(ledger));
}

// Only reaped records put a stack back: an adoption or a failed spawn that took a record holding
// a cached stack gives it up, so the count always matches what trim() finds on the free list.
TEST(StackCache, TheCountMatchesTheFreeListAfterAdoptionsAndFailedSpawns) {
  auto m = test::make_manager();
  ASSERT_TRUE(m->join(*m->spawn("cache-one", stack_of)));
  ASSERT_EQ(m->stats().cached_stacks, 1u);
  std::thread foreign([&] {  // takes the record that holds the cached stack
    ASSERT_TRUE(m->adopt_current_thread("adopted"));
    ASSERT_TRUE(m->release_current_thread());
  });
  foreign.join();
  EXPECT_EQ(m->stats().cached_stacks, 0u);
  EXPECT_EQ(m->trim(), 0u);
  ASSERT_TRUE(m->join(*m->spawn("cache-again", stack_of)));
  ASSERT_EQ(m->stats().cached_stacks, 1u);
  {
    os::ScopedFault fault(os::Call::PthreadCreate, 1, EAGAIN);  // takes the cached record, fails
    ASSERT_FALSE(m->spawn("doomed", stack_of));
  }
  EXPECT_EQ(m->stats().cached_stacks, 0u);
  EXPECT_EQ(m->trim(), 0u);
}

TEST(StackCache, ZeroMapsAFreshStackForEveryThread) {
  ManagerOptions options;
  options.cached_stacks = 0;
  auto m = test::make_manager(std::move(options));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(m->join(*m->spawn("warm-up", stack_of)));
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(m->join(*m->spawn("fresh", stack_of)));
  EXPECT_EQ(m->stats().cached_stacks, 0u);
  test::expect_no_leak(before, test::settled(ledger));
}

}  // namespace
}  // namespace tcr
