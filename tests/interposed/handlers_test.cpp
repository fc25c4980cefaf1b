// Invariant 4, checked by running the handlers: tcr's signal handlers (GC-trap and stack-overflow
// faults, the stop-the-world suspend handler, the interrupt wake-up) never allocate, never take a
// mutex and never log. All of them run on the thread's alternate signal stack (SA_ONSTACK), so
// this binary watches, while overflows, traps, stops and interrupts run, every malloc-family
// call, every pthread_mutex_lock and every log message for whether it is made on the alternate
// stack (sigaltstack's SS_ONSTACK). A control test shows that the watch sees a handler that does
// allocate, lock and log.
//
// A binary of its own, because it interposes malloc and pthread_mutex_lock for the whole process;
// built only without sanitizers (which interpose them themselves).
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/sinks/base_sink.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "exceptions/fault_signals.h"
#include "exceptions/protected_region.h"
#include "runtime/log.h"
#include "tests/test_support.h"
#include "threads/thread_manager.h"

// ---- the watch ------------------------------------------------------------------------------------

namespace {

std::atomic<bool> g_watching{false};
std::atomic<long> g_alt_allocs{0};
std::atomic<long> g_alt_locks{0};
std::atomic<long> g_alt_logs{0};

// One system call; made only while watching.
bool on_alternate_stack() {
  stack_t now{};
  return ::sigaltstack(nullptr, &now) == 0 && (now.ss_flags & SS_ONSTACK) != 0;
}

void note_alloc() {
  if (g_watching.load(std::memory_order_relaxed) && on_alternate_stack()) {
    g_alt_allocs.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace

// glibc's own entry points, which the interposed ones forward to.
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
void __libc_free(void*);

void* malloc(size_t n) {
  note_alloc();
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t size) {
  note_alloc();
  return __libc_calloc(n, size);
}
void* realloc(void* p, size_t n) {
  note_alloc();
  return __libc_realloc(p, n);
}
void* aligned_alloc(size_t alignment, size_t n) {
  note_alloc();
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, size_t alignment, size_t n) {
  note_alloc();
  void* p = __libc_memalign(alignment, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
void free(void* p) {
  note_alloc();
  __libc_free(p);
}

using MutexLock = int (*)(pthread_mutex_t*);
MutexLock real_mutex_lock() {
  static const MutexLock s_real =
      reinterpret_cast<MutexLock>(dlsym(RTLD_NEXT, "pthread_mutex_lock"));
  return s_real;
}
int pthread_mutex_lock(pthread_mutex_t* m) {
  if (g_watching.load(std::memory_order_relaxed) && on_alternate_stack()) {
    g_alt_locks.fetch_add(1, std::memory_order_relaxed);
  }
  return real_mutex_lock()(m);
}
}

namespace tcr {
namespace {

// Counts tcr's log messages made on the alternate stack. It takes spdlog's own mutex (a
// base_sink), so such a message would also count as a lock: the two counts point at one culprit.
class AltStackSink : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg&) override {
    if (g_watching.load(std::memory_order_relaxed) && on_alternate_stack()) {
      g_alt_logs.fetch_add(1, std::memory_order_relaxed);
    }
  }
  void flush_() override {}
};

struct Watch {
  Watch() {
    g_alt_allocs = 0;
    g_alt_locks = 0;
    g_alt_logs = 0;
    g_watching = true;
  }
  ~Watch() { g_watching = false; }
};

class SignalSafety : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(real_mutex_lock() != nullptr);
    spdlog::logger& l = log::logger();
    l.sinks().push_back(std::make_shared<AltStackSink>());
    l.set_level(spdlog::level::trace);  // every message tcr has, so none can hide
  }
};

using test::recurse;

TEST_F(SignalSafety, OverflowsTrapsStopsAndInterruptsNeitherAllocateLockNorLogOnTheAltStack) {
  ASSERT_TRUE(install_fault_handlers());
  auto made = ThreadManager::create();
  ASSERT_TRUE(made);
  ThreadManager& m = **made;
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  constexpr std::size_t kPages = 64;
  void* mem = mmap(nullptr, kPages * page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto region = ProtectedRegion::create(mem, kPages * page, {.mode = TrapMode::Signal});
  ASSERT_TRUE(region) << region.error().message();
  // Writers trap on the region's pages round after round; pollers take interrupts; both are
  // stopped and restarted.
  std::atomic<bool> stop{false};
  std::vector<ThreadRef> workers;
  for (int w = 0; w < 3; ++w) {
    Result<ThreadRef> t = m.spawn("writer", [&, w](Tcr&) -> void* {
      for (std::size_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        static_cast<volatile char*>(mem)[((i * 7 + static_cast<std::size_t>(w)) % kPages) * page] = 1;
      }
      return nullptr;
    });
    ASSERT_TRUE(t);
    workers.push_back(*t);
  }
  for (int p = 0; p < 2; ++p) {
    Result<ThreadRef> t = m.spawn("poller", [&](Tcr&) -> void* {
      while (!stop.load(std::memory_order_relaxed)) ThreadManager::poll();
      return nullptr;
    });
    ASSERT_TRUE(t);
    workers.push_back(*t);
  }
  ASSERT_TRUE(m.adopt_current_thread("watcher"));
  long traps_seen = 0, stops = 0, interrupts = 0, overflows = 0;
  {
    const Watch watch;
    for (int round = 0; round < 50; ++round) {
      ASSERT_TRUE((*region)->protect());
      Result<StoppedWorld> world = m.suspend_all();
      ASSERT_TRUE(world) << world.error().message();
      ASSERT_TRUE(m.resume_all());
      ++stops;
      for (std::size_t i = 3; i < workers.size(); ++i) {
        Result<InterruptTicket> ticket = m.interrupt(workers[i], [](Tcr&) {});
        ASSERT_TRUE(ticket);
        ASSERT_TRUE(ticket->wait());
        ++interrupts;
      }
      if (round % 10 == 0) {
        SpawnOptions small;
        small.stack_size = std::size_t{256} << 10;
        Result<ThreadRef> deep = m.spawn("deep", [](Tcr&) -> void* {
          return reinterpret_cast<void*>(recurse(0));
        }, small);
        ASSERT_TRUE(deep);
        Result<void*> joined = m.join(*deep);
        ASSERT_FALSE(joined);
        ASSERT_EQ(joined.error().step, Step::StackOverflow);
        ++overflows;
      }
      Result<std::vector<std::size_t>> dirty = (*region)->collect_dirty();
      ASSERT_TRUE(dirty);
    }
    traps_seen = static_cast<long>((*region)->traps());
  }
  stop = true;
  for (ThreadRef t : workers) ASSERT_TRUE(m.join(t));
  ASSERT_TRUE(m.release_current_thread());
  region->reset();
  munmap(mem, kPages * page);
  EXPECT_GT(traps_seen, 0);
  EXPECT_EQ(g_alt_allocs.load(), 0) << "allocations on the alternate stack";
  EXPECT_EQ(g_alt_locks.load(), 0) << "mutexes taken on the alternate stack";
  EXPECT_EQ(g_alt_logs.load(), 0) << "log messages on the alternate stack";
  RecordProperty("traps", static_cast<int>(traps_seen));
  RecordProperty("stops", static_cast<int>(stops));
  RecordProperty("interrupts", static_cast<int>(interrupts));
  RecordProperty("overflows", static_cast<int>(overflows));
}

// The watch can fail: a handler on the alternate stack that allocates, locks and logs is seen.
TEST_F(SignalSafety, TheWatchSeesAHandlerThatAllocatesLocksAndLogs) {
  std::vector<char> alt(64 * 1024);
  stack_t ss{};
  ss.ss_sp = alt.data();
  ss.ss_size = alt.size();
  ASSERT_EQ(::sigaltstack(&ss, nullptr), 0);
  struct sigaction sa {}, old{};
  sa.sa_handler = [](int) {
    static std::mutex mutex;
    std::lock_guard lock(mutex);
    void* volatile p = std::malloc(16);
    std::free(p);
    log::info("a handler that logs");
  };
  sa.sa_flags = SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR2, &sa, &old), 0);
  {
    const Watch watch;
    raise(SIGUSR2);
    EXPECT_GE(g_alt_allocs.load(), 2);
    EXPECT_GE(g_alt_locks.load(), 1);
    EXPECT_EQ(g_alt_logs.load(), 1);
  }
  sigaction(SIGUSR2, &old, nullptr);
  stack_t off{};
  off.ss_flags = SS_DISABLE;
  ::sigaltstack(&off, nullptr);
}

}  // namespace
}  // namespace tcr
