// Invariant 2's memory side: once warmed up, spawn does not grow the heap. Thread records, their
// GC slot blocks, names and registry capacity are reused, so after thousands more thread lives the
// bytes malloc has handed out, and Boehm's heap, are what they were.
#include <gtest/gtest.h>
#include <malloc.h>
#include <semaphore.h>

#include <cstdio>

#define GC_THREADS 1
#define GC_NO_THREAD_REDIRECTS 1
#include <gc/gc.h>

#include "tests/test_support.h"

namespace tcr {
namespace {

std::size_t malloc_in_use() { return mallinfo2().uordblks; }

TEST(SteadyState, SpawnAndJoinDoNotGrowTheHeap) {
  if (!test::kMemoryCountsExact) GTEST_SKIP() << "sanitizer allocators keep their own books";
  auto m = test::make_manager();
  auto one = [&] {
    Result<ThreadRef> t = m->spawn("steady", [](Tcr&) { return nullptr; });
    ASSERT_TRUE(t);
    ASSERT_TRUE(m->join(*t));
  };
  for (int i = 0; i < 200; ++i) one();
  const std::size_t heap = malloc_in_use();
  const std::size_t gc_heap = GC_get_heap_size();
  const std::size_t records = m->stats().records;
  for (int i = 0; i < 10000; ++i) one();
  EXPECT_EQ(malloc_in_use(), heap);
  EXPECT_EQ(GC_get_heap_size(), gc_heap);
  EXPECT_EQ(m->stats().records, records);
}

TEST(SteadyState, DetachedSpawnsDoNotGrowTheHeap) {
  if (!test::kMemoryCountsExact) GTEST_SKIP() << "sanitizer allocators keep their own books";
  auto m = test::make_manager();
  sem_t done;
  sem_init(&done, 0, 0);
  SpawnOptions detached;
  detached.detached = true;
  auto burst = [&](int n) {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(m->spawn("steady", [&](Tcr&) {
        sem_post(&done);
        return nullptr;
      }, detached));
      sem_wait(&done);
    }
    m->reap(ThreadManager::Reap::WaitForRunning);
  };
  burst(500);
  const std::size_t heap = malloc_in_use();
  const std::size_t gc_heap = GC_get_heap_size();
  const std::size_t records = m->stats().records;
  burst(10000);
  // How many records overlapping exits need can differ between bursts (a scheduling accident);
  // what must not happen is growth that the record count does not explain. A new record is its
  // Tcr (a few hundred bytes; 2 KiB is generous); the registry and records vectors double up to
  // twice the record count, a peak the first burst may not have reached even with no new record.
  // A leak per thread would be 10,000 times anything here.
  const std::size_t new_records = m->stats().records - records;
  const std::size_t vectors = 2 * 2 * m->stats().records * sizeof(void*);
  std::printf("heap %zu -> %zu, records +%zu\n", heap, malloc_in_use(), new_records);
  EXPECT_LE(malloc_in_use(), heap + new_records * 2048 + vectors);
  EXPECT_LE(new_records, 64u);  // overlap of exits, not history (10,000 threads)
  EXPECT_LE(GC_get_heap_size(), gc_heap + new_records * 4096);
  sem_destroy(&done);
}

}  // namespace
}  // namespace tcr
