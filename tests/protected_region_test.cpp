// ProtectedRegion: the same cases run against every mode (Signal, Listener, Async); a mode this
// kernel does not offer is skipped, saying why.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "exceptions/listener.h"
#include "exceptions/protected_region.h"
#include "runtime/os.h"
#include "region_support.h"
#include "tests/test_support.h"

namespace tcr {
namespace {

using test::collect;
using test::Mapping;
using test::page;

class RegionModes : public test::RegionModeTest {};

TEST_P(RegionModes, ReportsEachWrittenPageOnceAndReArmsIt) {
  Mapping m(16);
  MAKE_OR_SKIP(region, m.base, m.length);
  EXPECT_TRUE(collect(*region).empty());  // not armed yet: nothing tracked
  ASSERT_TRUE(region->protect());
  m.page_at(0)[0] = 1;
  m.page_at(3)[100] = 2;
  m.page_at(15)[page() - 1] = 3;
  m.page_at(3)[7] = 4;  // the same page again: no second trap
  EXPECT_EQ(collect(*region), (std::vector<std::size_t>{0, 3, 15}));
  EXPECT_TRUE(collect(*region).empty());
  if (traps_expected()) {
    EXPECT_EQ(region->traps(), 3u);
  }
  m.page_at(3)[8] = 5;  // re-armed by the collect
  EXPECT_EQ(collect(*region), (std::vector<std::size_t>{3}));
  if (traps_expected()) {
    EXPECT_EQ(region->traps(), 4u);
  }
  // Reads never trap, and the data is what was written.
  EXPECT_EQ(m.page_at(3)[100] + m.page_at(3)[7] + m.page_at(3)[8], 2 + 4 + 5);
  EXPECT_TRUE(collect(*region).empty());
  // unprotect: writable, untracked until the next protect.
  ASSERT_TRUE(region->unprotect());
  m.page_at(5)[0] = 1;
  EXPECT_TRUE(collect(*region).empty());
  ASSERT_TRUE(region->protect());
  m.page_at(6)[0] = 1;
  EXPECT_EQ(collect(*region), (std::vector<std::size_t>{6}));
}

// The property: while writers on several threads write random pages, every write is reported by
// the collect that follows it or a later one, and nothing unwritten is ever reported: no page that
// no one writes (one page in eight is never written), and no page twice for one write (a report
// needs a write that began after the page's previous report was re-armed, and before this one).
TEST_P(RegionModes, ConcurrentWritesAreNeverLostAcrossCollects) {
  constexpr std::size_t kPages = 256;
  constexpr int kWriters = 4;
  constexpr int kRounds = 200;
  constexpr std::size_t kWrites = 20000;
  Mapping m(kPages);
  MAKE_OR_SKIP(region, m.base, m.length);
  test::Watchdog watchdog("ConcurrentWritesAreNeverLostAcrossCollects", std::chrono::seconds(120));
  ASSERT_TRUE(region->protect());
  std::atomic<int> round{0};  // collects finished
  std::atomic<std::size_t> total{0};
  std::atomic<bool> stop{false};
  struct Write {
    std::size_t page;
    int round;  // collects finished before the write began
    int after;  // collects finished once it was done (a write that waits on a trap spans several)
  };
  std::vector<std::vector<Write>> writes(kWriters);
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      std::mt19937 rng(static_cast<unsigned>(w) * 7919u + 1);
      while (!stop.load(std::memory_order_relaxed)) {
        std::size_t p = rng() % kPages;
        if (p % 8 == 7) --p;  // never written: a report of one is a false dirty page
        const int before = round.load(std::memory_order_acquire);
        reinterpret_cast<volatile int*>(m.page_at(p))[w] = before;
        writes[w].push_back({p, before, round.load(std::memory_order_acquire)});
        // Spread the writes over the rounds, not millions in a few rounds.
        if (total.fetch_add(1, std::memory_order_relaxed) % 16 == 15) std::this_thread::yield();
      }
    });
  }
  // reported[p]: the rounds whose collect reported page p. At least kRounds collects and kWrites
  // writes (a writer waiting on the listener writes less per round).
  std::vector<std::vector<int>> reported(kPages);
  int r = 0;
  for (; r < kRounds || total.load(std::memory_order_relaxed) < kWrites; ++r) {
    for (std::size_t p : collect(*region)) reported[p].push_back(r);
    round.store(r + 1, std::memory_order_release);
    std::this_thread::yield();
  }
  stop = true;
  for (std::thread& t : writers) t.join();
  for (std::size_t p : collect(*region)) reported[p].push_back(r);

  std::size_t checked = 0;
  std::set<std::size_t> written;
  for (const std::vector<Write>& ws : writes) {
    for (const Write& w : ws) {
      written.insert(w.page);
      const std::vector<int>& rs = reported[w.page];
      ASSERT_TRUE(std::any_of(rs.begin(), rs.end(), [&](int at) { return at >= w.round; }))
          << "a write to page " << w.page << " after collect " << w.round << " was never reported";
      ++checked;
    }
  }
  std::vector<std::vector<const Write*>> written_to(kPages);
  for (const std::vector<Write>& ws : writes) {
    for (const Write& w : ws) written_to[w.page].push_back(&w);
  }
  std::size_t reports = 0;
  std::uint64_t late_messages = 0;
  for (std::size_t p = 0; p < kPages; ++p) {
    if (p % 8 == 7) {
      EXPECT_TRUE(reported[p].empty()) << "page " << p << " reported but never written";
      continue;
    }
    EXPECT_TRUE(written.count(p)) << "page " << p << " never written in " << checked << " writes";
    // A report at collect r of a page last reported at collect q needs a write in progress at
    // some time between q's re-arm and r's end: begun before r finished (round <= r), done after
    // q re-armed the page (after >= q); one write may be reported twice, when it faulted before
    // q and was retried after q's re-arm. Listener mode may report a page once more without such
    // a write: two writers fault on one page, the first fault's unprotect wakes both, and the
    // second fault's message, read after q re-armed the page, marks it again. Each such report
    // spends one trap, so there are at most as many as traps.
    int previous = 0;
    for (int at : reported[p]) {
      const std::vector<const Write*>& ws = written_to[p];
      const bool explained = std::any_of(ws.begin(), ws.end(), [&](const Write* w) {
        return w->round <= at && w->after >= previous;
      });
      if (!explained && GetParam() == TrapMode::Listener) {
        ++late_messages;
      } else {
        EXPECT_TRUE(explained) << "page " << p << " reported at collect " << at
                               << " with no write since collect " << previous;
      }
      previous = at;
      ++reports;
    }
  }
  EXPECT_LE(late_messages, region->traps());
  EXPECT_GE(checked, kWrites);
  RecordProperty("reports_checked", static_cast<int>(reports));
  RecordProperty("late_listener_reports", static_cast<int>(late_messages));
  RecordProperty("writes_checked", static_cast<int>(checked));
  RecordProperty("collects", r + 1);
}

TEST_P(RegionModes, UnprotectingOrDestroyingWhileThreadsWriteLetsThemAllFinish) {
  constexpr std::size_t kPages = 64;
  Mapping m(kPages);
  test::Watchdog watchdog("DestroyingARegionWhileThreadsWrite", std::chrono::seconds(60));
  for (int round = 0; round < 20; ++round) {
    MAKE_OR_SKIP(region, m.base, m.length);
    ASSERT_TRUE(region->protect());
    std::atomic<bool> stop{false};
    std::vector<std::thread> writers;
    for (int w = 0; w < 3; ++w) {
      writers.emplace_back([&, w] {
        for (std::size_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
          m.page_at((i * 7 + w) % kPages)[w] = 1;
          if (i % 64 == 0) std::this_thread::yield();
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (round % 2 == 1) {
      ASSERT_TRUE(region->unprotect());  // with faults in flight: they resolve as stale
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    region.reset();  // faults in flight on its pages are resolved or let go
    stop = true;
    for (std::thread& t : writers) t.join();
  }
}

TEST_P(RegionModes, OddSizesAndAlignmentsKeepToTheirPages) {
  Mapping m(32);
  // One page; three pages at an odd page offset; a region right next to another.
  MAKE_OR_SKIP(one, m.page_at(1), page());
  auto three = make(m.page_at(5), 3 * page());
  auto next = make(m.page_at(8), 5 * page());
  ASSERT_TRUE(three && next);
  for (ProtectedRegion* r : {one.get(), three.get(), next.get()}) ASSERT_TRUE(r->protect());
  m.page_at(0)[0] = 1;             // outside every region
  m.page_at(1)[page() - 1] = 1;    // last byte of `one`
  m.page_at(7)[page() - 1] = 1;    // last byte of `three`
  m.page_at(8)[0] = 1;             // first byte of `next`, adjacent to `three`
  m.page_at(12)[page() / 2] = 1;   // last page of `next`
  m.page_at(13)[0] = 1;            // just past `next`
  EXPECT_EQ(collect(*one), (std::vector<std::size_t>{0}));
  EXPECT_EQ(collect(*three), (std::vector<std::size_t>{2}));
  EXPECT_EQ(collect(*next), (std::vector<std::size_t>{0, 4}));
}

TEST_P(RegionModes, BadArgumentsGetClearErrorsAndLeakNothing) {
  Mapping m(8);
  MAKE_OR_SKIP(good, m.page_at(2), 2 * page());
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  RegionOptions options;
  options.mode = GetParam();
  options.fall_back = false;
  auto expect_bad = [&](void* base, std::size_t length, const char* says) {
    Result<std::unique_ptr<ProtectedRegion>> r = ProtectedRegion::create(base, length, options);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().step, Step::BadArgument) << r.error().message();
    EXPECT_NE(r.error().message().find(says), std::string::npos) << r.error().message();
  };
  expect_bad(m.base + 1, page(), "page-aligned");
  expect_bad(m.base, page() + 1, "page-aligned");
  expect_bad(m.base, 0, "empty");
  expect_bad(nullptr, page(), "empty");
  expect_bad(m.page_at(3), 2 * page(), "overlaps");
  expect_bad(m.page_at(0), 8 * page(), "overlaps");
  // Unmapped memory, in every mode (the userfaultfd modes used to answer UffdIoctl EINVAL).
  void* hole = mmap(nullptr, 4 * page(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  munmap(hole, 4 * page());
  expect_bad(hole, 4 * page(), "not mapped");
  test::expect_no_leak(before, test::settled(ledger));
  // The good region still works.
  ASSERT_TRUE(good->protect());
  m.page_at(3)[0] = 1;
  EXPECT_EQ(collect(*good), (std::vector<std::size_t>{1}));
}

// Each trap is counted on the Tcr of the thread that took it: by the fault handler (Signal) or,
// from the tid in the fault message, by the listener (Listener).
TEST_P(RegionModes, TrapsAreCountedOnTheFaultingThreadsTcr) {
  if (!traps_expected()) GTEST_SKIP() << "Async takes no trap";
  Mapping m(40);
  MAKE_OR_SKIP(region, m.base, m.length);
  auto manager = test::make_manager();
  ASSERT_TRUE(region->protect());
  std::vector<ThreadRef> refs;
  std::atomic<std::uint64_t> counted{0};
  for (int w = 0; w < 4; ++w) {
    Result<ThreadRef> ref = manager->spawn("writer", [&, w](Tcr& self) -> void* {
      for (int i = 0; i < 10; ++i) m.page_at(static_cast<std::size_t>(w * 10 + i))[0] = 1;
      EXPECT_EQ(self.traps(), 10u);
      counted += self.traps();
      return nullptr;
    });
    ASSERT_TRUE(ref);
    refs.push_back(*ref);
  }
  for (ThreadRef r : refs) ASSERT_TRUE(manager->join(r));
  EXPECT_EQ(counted.load(), 40u);
  EXPECT_EQ(region->traps(), 40u);
}

// Regions created and destroyed on one thread while others trap on another region: the fault
// path reads the region table while it changes (under ASan, a region freed under a reader shows).
TEST_P(RegionModes, RegionsComeAndGoWhileOthersTrap) {
  Mapping steady(32);
  Mapping churn(8);
  MAKE_OR_SKIP(region, steady.base, steady.length);
  test::Watchdog watchdog("RegionsComeAndGoWhileOthersTrap", std::chrono::seconds(120));
  std::atomic<bool> stop{false};
  std::thread collector([&] {
    while (!stop.load()) {
      ASSERT_TRUE(region->protect());
      (void)collect(*region);
    }
  });
  std::vector<std::thread> writers;
  for (int w = 0; w < 2; ++w) {
    writers.emplace_back([&, w] {
      for (std::size_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        steady.page_at((i + static_cast<std::size_t>(w) * 16) % 32)[w] = 1;
      }
    });
  }
  for (int i = 0; i < 300; ++i) {
    auto other = make(churn.base, churn.length);
    ASSERT_TRUE(other);
    ASSERT_TRUE(other->protect());
    churn.page_at(static_cast<std::size_t>(i) % 8)[0] = 1;
    EXPECT_EQ(collect(*other), std::vector<std::size_t>{static_cast<std::size_t>(i) % 8});
  }
  stop = true;
  collector.join();
  for (std::thread& t : writers) t.join();
}

// A stop-the-world while a thread protects and collects and two others trap: whoever holds pages
// Busy cannot be suspended (it blocks signals meanwhile), so no writer spins forever with its
// suspend signal blocked and every stop completes.
TEST_P(RegionModes, StopTheWorldWhileCollectingAndTrapping) {
  Mapping m(64);
  MAKE_OR_SKIP(region, m.base, m.length);
  test::Watchdog watchdog("StopTheWorldWhileCollectingAndTrapping", std::chrono::seconds(120));
  auto manager = test::make_manager();
  std::atomic<bool> stop{false};
  std::vector<ThreadRef> refs;
  refs.push_back(*manager->spawn("collector", [&](Tcr&) -> void* {
    while (!stop.load()) {
      EXPECT_TRUE(region->protect());
      for (int i = 0; i < 10; ++i) (void)collect(*region);
    }
    return nullptr;
  }));
  for (int w = 0; w < 2; ++w) {
    refs.push_back(*manager->spawn("writer", [&, w](Tcr&) -> void* {
      for (std::size_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        m.page_at((i * 3 + static_cast<std::size_t>(w)) % 64)[w] = 1;
      }
      return nullptr;
    }));
  }
  ASSERT_TRUE(manager->adopt_current_thread("initiator"));
  for (int i = 0; i < 300; ++i) {
    Result<StoppedWorld> world = manager->suspend_all();
    ASSERT_TRUE(world) << world.error().message();
    ASSERT_TRUE(manager->resume_all());
  }
  stop = true;
  for (ThreadRef r : refs) ASSERT_TRUE(manager->join(r));
  ASSERT_TRUE(manager->release_current_thread());
}

INSTANTIATE_TEST_SUITE_P(, RegionModes,
                         ::testing::Values(TrapMode::Signal, TrapMode::Listener, TrapMode::Async),
                         test::mode_name);

}  // namespace
}  // namespace tcr
