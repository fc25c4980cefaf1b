// The GC-trap layer beyond one region's semantics: the stack guard, the alternate stacks and
// their release, chaining to the handlers installed before ours (in a fresh process each: the
// handlers are process-wide), Boehm GC's incremental mode alongside our regions, the listener with
// blocked threads, and every OS call of the layer made to fail.
// Tests that need the layer's process-wide state fresh (an unopened userfaultfd) rely on ctest
// running each test in a process of its own, as tests/CMakeLists.txt sets up.
#include <gc.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "exceptions/fault_signals.h"
#include "exceptions/listener.h"
#include "exceptions/protected_region.h"
#include "testing/fault_injection.h"
#include "tests/test_support.h"

namespace tcr {
namespace {

std::size_t page() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }

char* map_pages(std::size_t n) {
  void* p = mmap(nullptr, n * page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EXPECT_NE(p, MAP_FAILED);
  return static_cast<char*>(p);
}

std::unique_ptr<ProtectedRegion> region_in(TrapMode mode, char* base, std::size_t pages,
                                           bool fall_back = false) {
  RegionOptions options;
  options.mode = mode;
  options.fall_back = fall_back;
  Result<std::unique_ptr<ProtectedRegion>> r = ProtectedRegion::create(base, pages * page(), options);
  EXPECT_TRUE(r) << (r ? "" : r.error().message());
  return r ? std::move(*r) : nullptr;
}

// ---- stack guard --------------------------------------------------------------------------------

using test::recurse;

// TSan's runtime takes ~900 KiB of a thread's stack for itself (pthread_create refuses less).
#if defined(__SANITIZE_THREAD__)
constexpr std::size_t kSmallStack = std::size_t{2} << 20;
#else
constexpr std::size_t kSmallStack = std::size_t{256} << 10;
#endif

TEST(StackGuard, OverflowBecomesAnErrorOnJoinAndTheNextSpawnWorks) {
  ASSERT_TRUE(install_fault_handlers());
  auto m = test::make_manager();
  SpawnOptions small;
  small.stack_size = kSmallStack;
  for (int i = 0; i < 5; ++i) {  // the cached stack comes back each time, guard intact
    Result<ThreadRef> deep = m->spawn("deep", [](Tcr&) -> void* {
      return reinterpret_cast<void*>(recurse(0));
    }, small);
    ASSERT_TRUE(deep);
    Result<void*> joined = m->join(*deep);
    ASSERT_FALSE(joined);
    EXPECT_EQ(joined.error().step, Step::StackOverflow) << joined.error().message();
    EXPECT_NE(joined.error().message().find(std::to_string(kSmallStack >> 10) + " KiB"),
              std::string::npos)
        << joined.error().message();
    Result<ThreadRef> next = m->spawn("next", [](Tcr&) -> void* { return reinterpret_cast<void*>(7); });
    ASSERT_TRUE(next);
    Result<void*> seven = m->join(*next);
    ASSERT_TRUE(seven);
    EXPECT_EQ(*seven, reinterpret_cast<void*>(7));
  }
  // A detached thread's overflow is reaped like any exit.
  small.detached = true;
  ASSERT_TRUE(m->spawn("deep-detached", [](Tcr&) -> void* {
    return reinterpret_cast<void*>(recurse(0));
  }, small));
  EXPECT_TRUE(test::eventually([&] { m->reap(); return m->stats().live == 0; }));
}

TEST(StackGuard, OverflowInsideABlockingScopeLeavesTheScope) {
  ASSERT_TRUE(install_fault_handlers());
  auto m = test::make_manager();
  Result<ThreadRef> deep = m->spawn("deep-blocking", [](Tcr&) -> void* {
    BlockingScope scope;
    return reinterpret_cast<void*>(recurse(0));
  });
  ASSERT_TRUE(deep);
  EXPECT_EQ(m->join(*deep).error().step, Step::StackOverflow);
  // The world can still stop: no thread is left claiming to be blocking.
  ASSERT_TRUE(m->adopt_current_thread("main"));
  Result<StoppedWorld> world = m->suspend_all();
  ASSERT_TRUE(world);
  ASSERT_TRUE(m->resume_all());
  ASSERT_TRUE(m->release_current_thread());
}

// ---- alternate stacks ---------------------------------------------------------------------------

TEST(AltStack, EachThreadRunsOnItsOwnAndGivesItBackAtExit) {
  auto m = test::make_manager();
  Result<ThreadRef> t = m->spawn("alt", [](Tcr& self) -> void* {
    stack_t now{};
    sigaltstack(nullptr, &now);
    EXPECT_EQ(now.ss_sp, self.alt_stack());
    EXPECT_EQ(now.ss_size, self.alt_stack_size());
    EXPECT_GE(self.alt_stack_size(), std::size_t{64} << 10);
    // Above the stack, past a guard page: an overflow never reaches it.
    EXPECT_GT(static_cast<char*>(self.alt_stack()), static_cast<char*>(self.stack_high()));
    return nullptr;
  });
  ASSERT_TRUE(t);
  ASSERT_TRUE(m->join(*t));
  // An adopted thread gets one of its own and, at release, the one it had before.
  stack_t before{};
  sigaltstack(nullptr, &before);
  std::thread foreign([&] {
    stack_t mine{};
    sigaltstack(nullptr, &mine);
    Result<Tcr*> self = m->adopt_current_thread("adopted");
    ASSERT_TRUE(self);
    stack_t now{};
    sigaltstack(nullptr, &now);
    EXPECT_EQ(now.ss_sp, (*self)->alt_stack());
    ASSERT_TRUE(m->release_current_thread());
    sigaltstack(nullptr, &now);
    EXPECT_EQ(now.ss_sp, mine.ss_sp);
    EXPECT_EQ(now.ss_flags & SS_DISABLE, mine.ss_flags & SS_DISABLE);
  });
  foreign.join();
}

TEST(AltStack, NothingLeaksAfterManyThreads) {
  const int kThreads = test::lifetimes(100000);
  test::Watchdog watchdog("AltStack.NothingLeaksAfterManyThreads", std::chrono::seconds(240));
  auto m = test::make_manager();
  auto churn = [&](int n) {
    for (int i = 0; i < n; ++i) {
      Result<ThreadRef> t = m->spawn("churn", [](Tcr& self) -> void* { return self.alt_stack(); });
      ASSERT_TRUE(t);
      Result<void*> alt = m->join(*t);
      ASSERT_TRUE(alt && *alt != nullptr);
    }
  };
  churn(200);  // warm-up: the stack cache and allocator arenas fill before the baseline
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  churn(kThreads);
  RecordProperty("threads", kThreads);
  test::expect_no_leak(before, test::settled(ledger));
}

// ---- chaining (each in a fresh process: the handlers are per process) ---------------------------

class Chaining : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

std::atomic<int> g_prev_calls{0};
char* g_foreign_page = nullptr;

void previous_siginfo_handler(int, siginfo_t* info, void*) {
  if (static_cast<char*>(info->si_addr) >= g_foreign_page &&
      static_cast<char*>(info->si_addr) < g_foreign_page + page()) {
    g_prev_calls.fetch_add(1);
    mprotect(g_foreign_page, page(), PROT_READ | PROT_WRITE);
  }
}

void previous_plain_handler(int) {
  g_prev_calls.fetch_add(1);
  mprotect(g_foreign_page, page(), PROT_READ | PROT_WRITE);
}

// A child's body: a previous handler is installed, then ours (by a Signal region); a fault outside
// the region goes to the previous one, a fault inside is ours alone.
int chain_child(bool siginfo) {
  struct sigaction prev{};
  if (siginfo) {
    prev.sa_sigaction = previous_siginfo_handler;
    prev.sa_flags = SA_SIGINFO;
  } else {
    prev.sa_handler = previous_plain_handler;
  }
  sigaction(SIGSEGV, &prev, nullptr);
  char* mem = map_pages(4);
  g_foreign_page = mem + 3 * page();
  auto region = region_in(TrapMode::Signal, mem, 2);
  if (!region || !region->protect()) return 10;
  mprotect(g_foreign_page, page(), PROT_READ);
  g_foreign_page[0] = 1;  // not ours: the previous handler fixes it
  mem[0] = 1;             // ours
  if (g_prev_calls.load() != 1) return 11;
  if (region->traps() != 1) return 12;
  if (*region->collect_dirty() != std::vector<std::size_t>{0}) return 13;
  return 0;
}

TEST_F(Chaining, FaultsOutsideOurRegionsReachTheSaSiginfoHandlerBeforeUs) {
  EXPECT_EXIT(std::_Exit(chain_child(true)), ::testing::ExitedWithCode(0), "");
}

TEST_F(Chaining, FaultsOutsideOurRegionsReachAPlainHandlerBeforeUs) {
  EXPECT_EXIT(std::_Exit(chain_child(false)), ::testing::ExitedWithCode(0), "");
}

// With SIG_DFL before us a foreign fault still kills, and it is tcr's handler that passes it on:
// the observer writes its line from inside the handler (write(2) is async-signal-safe). Without
// our handler the process would die the same way, silently.
void say_passed_on(int sig, bool to_default) {
  const char* line = sig == SIGSEGV ? (to_default ? "tcr passed SIGSEGV on to SIG_DFL\n"
                                                  : "tcr passed SIGSEGV on to a handler\n")
                                    : (to_default ? "tcr passed SIGBUS on to SIG_DFL\n"
                                                  : "tcr passed SIGBUS on to a handler\n");
  ssize_t unused = write(STDERR_FILENO, line, strlen(line));
  (void)unused;
}

TEST_F(Chaining, WithNoHandlerBeforeUsAForeignFaultKillsWithSigsegv) {
  EXPECT_EXIT(
      {
        signal(SIGSEGV, SIG_DFL);
        if (!install_fault_handlers()) std::_Exit(10);
        detail::set_chain_observer(say_passed_on);
        char* mem = map_pages(1);
        mprotect(mem, page(), PROT_READ);
        static_cast<volatile char*>(mem)[0] = 1;
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGSEGV), "tcr passed SIGSEGV on to SIG_DFL");
}

TEST_F(Chaining, ASentSigbusWithNoHandlerBeforeUsStillKills) {
  EXPECT_EXIT(
      {
        signal(SIGBUS, SIG_DFL);
        if (!install_fault_handlers()) std::_Exit(10);
        detail::set_chain_observer(say_passed_on);
        raise(SIGBUS);
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGBUS), "tcr passed SIGBUS on to SIG_DFL");
}

// A write fault raised while a region was armed can reach the handler only after the region was
// unprotected and removed (the thread was preempted in between; seen under TSan's load). It is
// retried, not passed on: with SIG_DFL before us, passing it on would have reset SIGSEGV to the
// default and the next trap anywhere would kill the process. The late delivery is made here with
// rt_tgsigqueueinfo, which lets a process send itself a SIGSEGV that looks like a fault.
TEST_F(Chaining, AFaultThatArrivesAfterItsRegionIsGoneIsRetriedNotPassedOn) {
  EXPECT_EXIT(
      {
        signal(SIGSEGV, SIG_DFL);
        char* mem = map_pages(4);
        {
          auto gone = region_in(TrapMode::Signal, mem, 2);
          if (!gone || !gone->protect()) std::_Exit(10);
        }
        siginfo_t info{};
        info.si_signo = SIGSEGV;
        info.si_code = SEGV_ACCERR;
        info.si_addr = mem;
        if (syscall(SYS_rt_tgsigqueueinfo, getpid(), static_cast<pid_t>(syscall(SYS_gettid)),
                    SIGSEGV, &info) != 0) {
          std::_Exit(11);
        }
        // Still ours: a new region traps and resolves.
        auto next = region_in(TrapMode::Signal, mem + 2 * page(), 2);
        if (!next || !next->protect()) std::_Exit(12);
        mem[3 * page()] = 1;
        if (*next->collect_dirty() != std::vector<std::size_t>{1}) std::_Exit(13);
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

// Boehm GC in incremental mode keeps collecting (its own write barrier, if it uses mprotect,
// chains through ours) while a Signal region of ours traps on other threads.
TEST_F(Chaining, BoehmIncrementalCollectsWhileOurRegionsTrap) {
  EXPECT_EXIT(
      {
        auto m = test::make_manager();
        GC_enable_incremental();
        char* mem = map_pages(64);
        auto region = region_in(TrapMode::Signal, mem, 64);
        if (!region || !region->protect()) std::_Exit(10);
        // Boehm's incremental mode here is mprotect-based: its SIGSEGV handler was installed
        // first, so its write-barrier faults reach it through ours.
        const struct sigaction boehm = previous_fault_action(SIGSEGV);
        if ((GC_incremental_protection_needs() & GC_PROTECTS_POINTER_HEAP) != 0 &&
            (boehm.sa_flags & SA_SIGINFO) == 0 && boehm.sa_handler == SIG_DFL) {
          std::_Exit(9);
        }
        std::atomic<bool> stop{false};
        std::vector<ThreadRef> refs;
        for (int w = 0; w < 2; ++w) {
          refs.push_back(*m->spawn("gc-mutator", [&](Tcr&) -> void* {
            void** list = nullptr;
            for (int i = 0; i < 20000; ++i) {
              auto** cell = static_cast<void**>(GC_MALLOC(4 * sizeof(void*)));
              cell[0] = list;  // an old object's field gets a young pointer: Boehm's barrier
              list = cell;
            }
            std::size_t n = 0;
            for (void** c = list; c != nullptr; c = static_cast<void**>(c[0])) ++n;
            return reinterpret_cast<void*>(n);
          }));
          refs.push_back(*m->spawn("region-writer", [&, w](Tcr&) -> void* {
            for (std::size_t i = 0; !stop.load(); ++i) mem[((i * 5 + w) % 64) * page()] = 1;
            return nullptr;
          }));
        }
        std::size_t dirty = 0;
        for (int round = 0; round < 50; ++round) {
          GC_gcollect();
          dirty += region->collect_dirty()->size();
        }
        for (std::size_t i = 0; i < refs.size(); i += 2) {
          if (*m->join(refs[i]) != reinterpret_cast<void*>(20000)) std::_Exit(11);
        }
        stop = true;
        for (std::size_t i = 1; i < refs.size(); i += 2) (void)m->join(refs[i]);
        if (dirty == 0 || region->traps() == 0) std::_Exit(12);
        std::fprintf(stderr, "boehm protection needs %d\n", GC_incremental_protection_needs());
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "boehm protection needs");
}

// ---- the listener with threads blocked on a fault ------------------------------------------------

struct BlockedWriters {
  explicit BlockedWriters(char* mem, int n) {
    for (int w = 0; w < n; ++w) {
      threads.emplace_back([this, mem, w] {
        started.fetch_add(1);
        mem[static_cast<std::size_t>(w) * page()] = static_cast<char>(w + 1);
        finished.fetch_add(1);
      });
    }
  }
  void join() {
    for (std::thread& t : threads) t.join();
  }
  std::vector<std::thread> threads;
  std::atomic<int> started{0};
  std::atomic<int> finished{0};
};

TEST(ListenerBlocked, DestroyingTheRegionLetsBlockedWritersGo) {
  test::Watchdog watchdog("ListenerBlocked.DestroyingTheRegion", std::chrono::seconds(60));
  char* mem = map_pages(8);
  auto region = region_in(TrapMode::Listener, mem, 8, /*fall_back=*/true);
  ASSERT_TRUE(region);
  if (region->mode() != TrapMode::Listener) GTEST_SKIP() << "no userfaultfd here";
  ASSERT_TRUE(region->protect());
  ExceptionListener::instance().set_paused(true);  // messages stay unread: writers block
  BlockedWriters writers(mem, 4);
  ASSERT_TRUE(test::eventually([&] { return writers.started.load() == 4; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(writers.finished.load(), 0);  // nobody resolves while paused
  region.reset();  // their messages are in flight: unprotecting and unregistering let them go
  writers.join();
  EXPECT_EQ(writers.finished.load(), 4);
  for (int w = 0; w < 4; ++w) EXPECT_EQ(mem[static_cast<std::size_t>(w) * page()], w + 1);
  ExceptionListener::instance().set_paused(false);  // stale messages: woken, counted foreign
  ExceptionListener::instance().stop();
}

TEST(ListenerBlocked, StoppingTheListenerWakesEveryBlockedThreadAndLosesNoWrite) {
  test::Watchdog watchdog("ListenerBlocked.Stopping", std::chrono::seconds(60));
  char* mem = map_pages(8);
  auto region = region_in(TrapMode::Listener, mem, 8, /*fall_back=*/true);
  ASSERT_TRUE(region);
  if (region->mode() != TrapMode::Listener) GTEST_SKIP() << "no userfaultfd here";
  ASSERT_TRUE(region->protect());
  EXPECT_TRUE(ExceptionListener::instance().running());
  ExceptionListener::instance().set_paused(true);
  BlockedWriters writers(mem, 6);
  ASSERT_TRUE(test::eventually([&] { return writers.started.load() == 6; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(writers.finished.load(), 0);
  ExceptionListener::instance().stop();
  writers.join();
  EXPECT_FALSE(ExceptionListener::instance().running());
  ExceptionListener::instance().set_paused(false);
  // Stopped, the listener counted every armed page as written: all 8 come back, and the next
  // collect re-arms them with the listener started again.
  Result<std::vector<std::size_t>> all = region->collect_dirty();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 8u);
  EXPECT_TRUE(ExceptionListener::instance().running());
  mem[0] = 9;
  EXPECT_EQ(*region->collect_dirty(), std::vector<std::size_t>{0});
  region.reset();
  ExceptionListener::instance().stop();
}

// listener.h's promise: the listener thread blocks every signal and never touches the GC heap.
// Read from the kernel: its SigBlk in /proc holds every signal but the two that cannot be blocked,
// and Boehm collections while it waits finish (were it registered with the GC, a stop-the-world
// would signal it, and, every signal blocked, wait for it forever).
TEST(ListenerBlocked, TheListenerThreadBlocksEverySignalAndStaysOutOfTheGc) {
  test::Watchdog watchdog("ListenerBlocked.BlocksEverySignal", std::chrono::seconds(60));
  char* mem = map_pages(8);
  auto region = region_in(TrapMode::Listener, mem, 8, /*fall_back=*/true);
  ASSERT_TRUE(region);
  if (region->mode() != TrapMode::Listener) GTEST_SKIP() << "no userfaultfd here";
  ASSERT_TRUE(region->protect());
  ASSERT_TRUE(ExceptionListener::instance().running());
  std::string blocked;
  int listeners = 0;
  auto find_listener = [&] {  // it names itself as it starts, which may be a moment from now
    listeners = 0;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream comm(task.path() / "comm");
      std::string name;
      std::getline(comm, name);
      if (name != "tcr-listener") continue;
      ++listeners;
      std::ifstream status(task.path() / "status");
      for (std::string line; std::getline(status, line);) {
        if (line.rfind("SigBlk:", 0) == 0) blocked = line.substr(7);
      }
    }
    return listeners > 0;
  };
  ASSERT_TRUE(test::eventually(find_listener));
  ASSERT_EQ(listeners, 1);
  const unsigned long long mask = std::stoull(blocked, nullptr, 16);
  for (int sig = 1; sig <= SIGRTMAX; ++sig) {
    const bool is_blocked = (mask >> (sig - 1)) & 1u;
    if (sig == SIGKILL || sig == SIGSTOP) continue;  // the kernel never blocks these
    // glibc keeps two real-time signals for itself (SIGRTMIN - 2 and - 1) that user code cannot
    // name; pthread_sigmask leaves them out of any mask.
    if (sig >= SIGRTMIN - 2 && sig < SIGRTMIN) continue;
    EXPECT_TRUE(is_blocked) << "signal " << sig << " is not blocked on the listener thread";
  }
  for (int i = 0; i < 5; ++i) GC_gcollect();
  mem[0] = 1;  // and the listener still resolves
  EXPECT_EQ(*region->collect_dirty(), std::vector<std::size_t>{0});
  region.reset();
  ExceptionListener::instance().stop();
}

// ---- every OS call of the layer, made to fail ---------------------------------------------------

TEST(ExceptionsFaults, SigaltstackFailureFailsTheSpawnAndLeaksNothing) {
  auto m = test::make_manager();
  ASSERT_TRUE(m->join(*m->spawn("warm", [](Tcr&) -> void* { return nullptr; })));
  m->trim();
  std::thread([] {}).join();  // glibc keeps a joined thread's stack cached: warm that up too
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  {
    os::ScopedFault fault(os::Call::Sigaltstack, 1, ENOMEM);
    Result<ThreadRef> t = m->spawn("no-alt", [](Tcr&) -> void* { return nullptr; });
    ASSERT_FALSE(t);
    EXPECT_EQ(t.error().step, Step::Sigaltstack);
    std::thread foreign([&] {
      os::ScopedFault again(os::Call::Sigaltstack, 1, ENOMEM);
      Result<Tcr*> adopted = m->adopt_current_thread("no-alt-adopted");
      ASSERT_FALSE(adopted);
      EXPECT_EQ(adopted.error().step, Step::Sigaltstack);
    });
    foreign.join();
  }
  m->trim();
  ASSERT_TRUE(m->join(*m->spawn("after", [](Tcr&) -> void* { return nullptr; })));
  m->trim();
  test::expect_no_leak(before, test::settled(ledger));
}

TEST(ExceptionsFaults, AnAdoptedThreadsAlternateStackMapFailingLeaksNothing) {
  auto m = test::make_manager();
  std::thread([] {}).join();
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  for (os::Call call : {os::Call::Mmap, os::Call::Mprotect}) {
    std::thread foreign([&] {
      os::ScopedFault fault(call, 1, ENOMEM);
      Result<Tcr*> adopted = m->adopt_current_thread("no-alt-map");
      ASSERT_FALSE(adopted);
      EXPECT_EQ(adopted.error().step,
                call == os::Call::Mmap ? Step::AltStackMmap : Step::AltStackGuardMprotect);
    });
    foreign.join();
  }
  test::expect_no_leak(before, test::settled(ledger));
}

// The tid index is mapped at the process's first ThreadManager::create: in a fresh process, a
// failed mmap there leaves the manager working and the listener's faults without their Tcr.
TEST(ExceptionsFaults, AFailedTidIndexLeavesListenerFaultsUnattributed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        std::unique_ptr<ThreadManager> m;
        {
          os::ScopedFault fault(os::Call::Mmap, 1, ENOMEM);
          m = test::make_manager();
        }
        if (!m) std::_Exit(10);
        char* mem = map_pages(4);
        auto region = region_in(TrapMode::Listener, mem, 4, /*fall_back=*/true);
        if (!region) std::_Exit(11);
        if (region->mode() != TrapMode::Listener) std::_Exit(0);  // nothing to attribute here
        if (!region->protect()) std::_Exit(12);
        Result<ThreadRef> t = m->spawn("writer", [mem](Tcr& self) -> void* {
          mem[0] = 1;
          return reinterpret_cast<void*>(self.traps());
        });
        if (!t) std::_Exit(13);
        Result<void*> traps = m->join(*t);
        if (!traps || *traps != nullptr) std::_Exit(14);  // not attributed
        if (region->traps() != 1) std::_Exit(15);        // but resolved
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "no tid index");
}

TEST(ExceptionsFaults, RefusedUserfaultfdFallsBackToSignalOrFailsWhenStrict) {
  char* mem = map_pages(4);
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  {
    os::ScopedFault fault(os::Call::Userfaultfd, 1, EPERM, 100);
    auto strict = ProtectedRegion::create(mem, 4 * page(), {TrapMode::Listener, false});
    ASSERT_FALSE(strict);
    EXPECT_EQ(strict.error().step, Step::ModeUnavailable) << strict.error().message();
    EXPECT_NE(strict.error().message().find("EPERM"), std::string::npos);
    auto lenient = region_in(TrapMode::Async, mem, 4, /*fall_back=*/true);
    ASSERT_TRUE(lenient);
    EXPECT_EQ(lenient->mode(), TrapMode::Signal);
    ASSERT_TRUE(lenient->protect());
    mem[page()] = 1;
    EXPECT_EQ(*lenient->collect_dirty(), std::vector<std::size_t>{1});
  }
  test::expect_no_leak(before, test::settled(ledger));
}

TEST(ExceptionsFaults, EpermOnTheFullUserfaultfdRetriesUserModeOnly) {
  char* mem = map_pages(4);
  os::ScopedFault fault(os::Call::Userfaultfd, 1, EPERM, 1);  // the first open only
  auto region = region_in(TrapMode::Listener, mem, 4);
  if (!region) GTEST_SKIP() << "userfaultfd refused here";
  EXPECT_EQ(region->mode(), TrapMode::Listener);
  ASSERT_TRUE(region->protect());
  mem[2 * page()] = 1;
  EXPECT_EQ(*region->collect_dirty(), std::vector<std::size_t>{2});
}

TEST(ExceptionsFaults, EachUserfaultfdStepThatFailsIsNamedAndLeaksNothing) {
  char* mem = map_pages(4);
  struct Case {
    os::Call call;
    std::uint64_t nth;
    TrapMode mode;
    Step step;
  };
  // UFFDIO_API on the probe, UFFDIO_API on the real fd, UFFDIO_REGISTER; eventfd; pagemap.
  const Case cases[] = {
      {os::Call::UffdIoctl, 1, TrapMode::Listener, Step::UffdIoctl},
      {os::Call::UffdIoctl, 2, TrapMode::Listener, Step::UffdIoctl},
      {os::Call::Eventfd, 1, TrapMode::Listener, Step::Eventfd},
      {os::Call::UffdIoctl, 1, TrapMode::Async, Step::UffdIoctl},
      {os::Call::PagemapScan, 1, TrapMode::Async, Step::PagemapScan},
  };
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  for (const Case& c : cases) {
    os::ScopedFault fault(c.call, c.nth, EIO);
    auto r = ProtectedRegion::create(mem, 4 * page(), {c.mode, false});
    ASSERT_FALSE(r) << os::to_string(c.call) << " #" << c.nth;
    EXPECT_EQ(r.error().step, Step::ModeUnavailable);
    EXPECT_NE(r.error().message().find(std::string(to_string(c.step))), std::string::npos)
        << r.error().message();
  }
  test::expect_no_leak(before, test::settled(ledger));
  // Opened for good now; the register step of a region fails on its own.
  for (TrapMode mode : {TrapMode::Listener, TrapMode::Async}) {
    auto warm = region_in(mode, mem, 4);
    ASSERT_TRUE(warm);
    warm.reset();
    const ResourceCounts opened = test::settled(ledger);
    {
      os::ScopedFault fault(os::Call::UffdIoctl, 1, ENOMEM);
      auto r = ProtectedRegion::create(mem, 4 * page(), {mode, false});
      ASSERT_FALSE(r);
      EXPECT_EQ(r.error().step, Step::UffdIoctl) << r.error().message();
    }
    auto again = region_in(mode, mem, 4);  // the failed one left no table entry behind
    ASSERT_TRUE(again);
    again.reset();  // registered, the range is a mapping of its own (its flags differ)
    test::expect_no_leak(opened, test::settled(ledger));
  }
}

TEST(ExceptionsFaults, FailedProtectAndCollectLoseNoWrite) {
  char* mem = map_pages(8);
  for (TrapMode mode : {TrapMode::Signal, TrapMode::Listener, TrapMode::Async}) {
    auto region = region_in(mode, mem, 8, /*fall_back=*/true);
    ASSERT_TRUE(region);
    const os::Call call = mode == TrapMode::Signal  ? os::Call::Mprotect
                          : mode == TrapMode::Async ? os::Call::PagemapScan
                                                    : os::Call::UffdIoctl;
    {
      os::ScopedFault fault(mode == TrapMode::Async ? os::Call::UffdIoctl : call, 1, ENOMEM);
      Result<void> armed = region->protect();
      ASSERT_FALSE(armed) << to_string(mode);
    }
    mem[0] = 1;  // unarmed: no trap, not tracked
    ASSERT_TRUE(region->protect());
    mem[3 * page()] = 1;
    mem[5 * page()] = 1;
    {
      os::ScopedFault fault(call, 1, ENOMEM);
      std::vector<std::size_t> pages;
      Result<void> collected = region->collect_dirty(pages);
      ASSERT_FALSE(collected) << to_string(mode);
    }
    EXPECT_EQ(*region->collect_dirty(), (std::vector<std::size_t>{3, 5})) << to_string(mode);
  }
}

TEST(ExceptionsFaults, AListenerThatCannotStartFailsProtectAndArmsNothing) {
  char* mem = map_pages(4);
  auto region = region_in(TrapMode::Listener, mem, 4, /*fall_back=*/true);
  ASSERT_TRUE(region);
  if (region->mode() != TrapMode::Listener) GTEST_SKIP() << "no userfaultfd here";
  ExceptionListener::instance().stop();
  {
    os::ScopedFault fault(os::Call::PthreadCreate, 1, EAGAIN);
    Result<void> armed = region->protect();
    ASSERT_FALSE(armed);
    EXPECT_EQ(armed.error().step, Step::PthreadCreate);
  }
  mem[0] = 1;  // not armed: no thread blocks
  ASSERT_TRUE(region->protect());
  mem[page()] = 1;
  EXPECT_EQ(*region->collect_dirty(), std::vector<std::size_t>{1});
}

}  // namespace
}  // namespace tcr
