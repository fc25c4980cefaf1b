// Invariant 6 for memory: "nothing throws across the API" when operator new fails. The calling
// thread's allocations are made to throw std::bad_alloc one at a time (the 1st, then the 2nd,
// ...) until the call gets through without meeting the failure; at each step the call must
// answer an Error or succeed, never let the exception out, and leave nothing behind (fds,
// pidfds, mappings and OS threads counted, and the manager usable after).
#include <execinfo.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "exceptions/protected_region.h"
#include "runtime/resources.h"
#include "threads/interrupt.h"
#include "threads/thread_manager.h"

namespace {

// Armed on one thread: its allocation number t_fail_at (1 = the next) throws, once.
thread_local long t_fail_at = 0;
thread_local long t_count = 0;

// TCR_BAD_ALLOC_TRACE=1: each injected failure prints where it was (to find an escape's site).
void trace_failure() {
  static const bool s_trace = std::getenv("TCR_BAD_ALLOC_TRACE") != nullptr;
  if (!s_trace) return;
  void* frames[16];
  const int n = backtrace(frames, 16);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  ssize_t unused = write(STDERR_FILENO, "----\n", 5);
  (void)unused;
}

void* allocate(std::size_t n) {
  if (t_fail_at > 0 && ++t_count == t_fail_at) {
    t_fail_at = 0;
    trace_failure();
    throw std::bad_alloc();
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}

void* allocate_aligned(std::size_t n, std::align_val_t a) {
  if (t_fail_at > 0 && ++t_count == t_fail_at) {
    t_fail_at = 0;
    trace_failure();
    throw std::bad_alloc();
  }
  const std::size_t align = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(align, (n + align - 1) / align * align)) return p;
  throw std::bad_alloc();
}

}  // namespace

void* operator new(std::size_t n) { return allocate(n); }
void* operator new[](std::size_t n) { return allocate(n); }
void* operator new(std::size_t n, std::align_val_t a) { return allocate_aligned(n, a); }
void* operator new[](std::size_t n, std::align_val_t a) { return allocate_aligned(n, a); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return allocate(n);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return allocate(n);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace tcr {
namespace {

// The lines of /proc/self/maps, to name the mappings a step added when the count grew.
std::vector<std::string> mapping_lines() {
  std::vector<std::string> lines;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) lines.push_back(line);
  return lines;
}

std::string added_lines(std::vector<std::string> before, std::vector<std::string> after) {
  std::sort(before.begin(), before.end());
  std::sort(after.begin(), after.end());
  std::vector<std::string> added;
  std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                      std::back_inserter(added));
  std::string out;
  for (const std::string& line : added) out += "\n  + " + line;
  return out;
}

// One run of `call` with the calling thread's nth allocation armed to fail.
struct Attempt {
  bool escaped = false;  // an exception got out (already reported)
  bool met = false;      // the armed allocation happened
  bool ok = false;       // the call succeeded
  ResourceCounts before, after;
  std::string added_maps;  // the mapping lines that appeared, when the count grew
};

Attempt attempt(const char* what, long n, const std::function<bool()>& call,
                const std::function<void()>& undo, const ResourceLedger& ledger) {
  Attempt a;
  const std::vector<std::string> lines_before = mapping_lines();
  a.before = ledger.snapshot();
  t_count = 0;
  t_fail_at = n;
  try {
    a.ok = call();
  } catch (const std::bad_alloc&) {
    t_fail_at = 0;
    ADD_FAILURE() << what << ": std::bad_alloc escaped at allocation " << n;
    a.escaped = true;
    return a;
  } catch (...) {
    t_fail_at = 0;
    ADD_FAILURE() << what << ": an exception escaped at allocation " << n;
    a.escaped = true;
    return a;
  }
  a.met = t_fail_at == 0;
  t_fail_at = 0;
  if (a.ok) undo();
  a.after = ledger.snapshot();
  if (a.after.maps > a.before.maps) a.added_maps = added_lines(lines_before, mapping_lines());
  return a;
}

// Runs `call` with the calling thread's nth allocation failing, for n = 1, 2, ... until a run
// meets no failure (the call made fewer than n allocations). Answers how many allocations the
// call makes, or -1 after a failure was reported through gtest.
// `call` answers whether it succeeded; `undo` releases what a success acquired.
// Mappings are counted process-wide, and other threads' first malloc (a glibc arena) or Boehm's
// heap growth can add one at any moment: a step whose mapping count grew is run once more with
// the same allocation failing, and only growth on both runs is a leak (a leak on the failure
// path repeats on it; a one-time event elsewhere in the process does not).
long sweep(const char* what, const std::function<bool()>& call, const std::function<void()>& undo,
           long limit = 400) {
  const ResourceLedger ledger;
  for (long n = 1; n <= limit; ++n) {
    Attempt a = attempt(what, n, call, undo, ledger);
    if (a.escaped) return -1;
    if (a.after.maps > a.before.maps) {
      const Attempt again = attempt(what, n, call, undo, ledger);
      if (again.escaped) return -1;
      if (again.after.maps > again.before.maps) {
        ADD_FAILURE() << what << ", allocation " << n << ": mappings " << a.before.maps << " -> "
                      << a.after.maps << a.added_maps << "\nand again " << again.before.maps
                      << " -> " << again.after.maps << again.added_maps;
      }
    }
    EXPECT_LE(a.after.fds, a.before.fds) << what << ", allocation " << n;
    EXPECT_LE(a.after.pidfds, a.before.pidfds) << what << ", allocation " << n;
    if (!a.met) return n - 1;
    if (a.ok) continue;  // the failure was absorbed (a cache, a retry): fine
  }
  ADD_FAILURE() << what << ": more than " << limit << " allocations";
  return -1;
}

TEST(BadAlloc, NoApiCallLetsItOutAndNothingLeaks) {
  ManagerOptions options;
  options.cached_stacks = 0;
  auto made = ThreadManager::create(std::move(options));
  ASSERT_TRUE(made);
  ThreadManager& m = **made;
  // Warm: the first spawn's one-time allocations (logger, tables) are not a call's own.
  ASSERT_TRUE(m.join(*m.spawn("warm", [](Tcr&) -> void* { return nullptr; })));
  m.trim();

  const long spawn_allocs = sweep(
      "spawn + join",
      [&] {
        // A name past the small-string buffer, as runtimes' thread names are.
        Result<ThreadRef> t = m.spawn("a swept thread with a long name",
                                      [](Tcr&) -> void* { return nullptr; });
        if (!t) return false;
        return m.join(*t).has_value();
      },
      [&] { m.trim(); });
  EXPECT_GT(spawn_allocs, 0);

  ThreadRef target{};
  std::atomic<bool> stop{false};
  {
    Result<ThreadRef> t = m.spawn("poller", [&](Tcr&) -> void* {
      while (!stop.load()) ThreadManager::poll();
      return nullptr;
    });
    ASSERT_TRUE(t);
    target = *t;
  }
  const long interrupt_allocs = sweep(
      "interrupt",
      [&] {
        Result<InterruptTicket> ticket = m.interrupt(target, [](Tcr&) {});
        return ticket && ticket->wait().has_value();
      },
      [] {});
  EXPECT_GT(interrupt_allocs, 0);

  // A thread with a name past the small-string buffer, so that each entry's copy allocates too.
  Result<ThreadRef> named = m.spawn("a second poller with a long name", [&](Tcr&) -> void* {
    while (!stop.load()) ThreadManager::poll();
    return nullptr;
  });
  ASSERT_TRUE(named);
  const long snapshot_allocs = sweep(
      "snapshot",
      [&] {
        Result<std::vector<ThreadInfo>> live = m.snapshot();
        if (!live) {
          EXPECT_EQ(live.error().step, Step::TcrAllocate) << live.error().message();
          return false;
        }
        EXPECT_EQ(live->size(), 2u);
        return true;
      },
      [] {});
  EXPECT_GE(snapshot_allocs, 2);  // the list, then the long name

  const long adopt_allocs = sweep(
      "adopt + release",
      [&] {
        if (!m.adopt_current_thread("an adopted thread with a long name")) return false;
        return m.release_current_thread().has_value();
      },
      [] {});
  EXPECT_GT(adopt_allocs, 0);

  ASSERT_TRUE(m.adopt_current_thread("stopper"));
  const long stop_allocs = sweep(
      "suspend_all + resume_all",
      [&] { return m.suspend_all().has_value() && m.resume_all().has_value(); }, [] {});
  EXPECT_GE(stop_allocs, 0);
  ASSERT_TRUE(m.release_current_thread());

  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  void* mem = mmap(nullptr, 16 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                   0);
  ASSERT_NE(mem, MAP_FAILED);
  for (TrapMode mode : {TrapMode::Signal, TrapMode::Listener, TrapMode::Async}) {
    // Each mode's kernel side opens once per process and stays (the listener and its thread,
    // the Async tracker): opened before the sweep, so the sweep counts only what a region holds.
    {
      Result<std::unique_ptr<ProtectedRegion>> warm =
          ProtectedRegion::create(mem, 16 * page, RegionOptions{mode, false});
      ASSERT_TRUE(warm) << warm.error().message();
      ASSERT_TRUE((*warm)->protect());
    }
    const std::string what = std::string("region create + protect + collect, ") + to_string(mode);
    const long region_allocs = sweep(
        what.c_str(),
        [&] {
          Result<std::unique_ptr<ProtectedRegion>> r =
              ProtectedRegion::create(mem, 16 * page, RegionOptions{mode, false});
          if (!r) return false;
          if (!(*r)->protect()) return false;
          static_cast<volatile char*>(mem)[3 * page] = 1;
          Result<std::vector<std::size_t>> dirty = (*r)->collect_dirty();
          return dirty.has_value();
        },
        [] {});
    EXPECT_GE(region_allocs, 0);
  }
  munmap(mem, 16 * page);

  stop = true;
  ASSERT_TRUE(m.join(target));
  ASSERT_TRUE(m.join(*named));
  // Still usable.
  Result<ThreadRef> after = m.spawn("after", [](Tcr&) -> void* { return nullptr; });
  ASSERT_TRUE(after);
  EXPECT_TRUE(m.join(*after));
  RecordProperty("spawn_allocations", static_cast<int>(spawn_allocs));
  RecordProperty("interrupt_allocations", static_cast<int>(interrupt_allocs));
  RecordProperty("adopt_allocations", static_cast<int>(adopt_allocs));
  RecordProperty("stop_allocations", static_cast<int>(stop_allocs));
}

}  // namespace
}  // namespace tcr
