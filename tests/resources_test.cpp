// ResourceLedger: each count moves by exactly what the test acquired and returns when it is
// released, the ledger's own reading leaves nothing behind, and diff/dump say it in words.
#include <fcntl.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "runtime/handle_table.h"
#include "runtime/resources.h"
#include "tests/test_support.h"

namespace tcr {
namespace {

// gmock is not linked (CMake links GTest::gtest only), so substring checks are spelled out.
::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << part << "' not found in:\n" << text;
}
::testing::AssertionResult Lacks(const std::string& text, const std::string& part) {
  if (text.find(part) == std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << part << "' unexpectedly found in:\n" << text;
}

int open_pidfd() { return static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0)); }
int current_tid() { return static_cast<int>(::syscall(SYS_gettid)); }

std::size_t kind_count(const ResourceCounts& c, const std::string& kind) {
  const auto it = c.fds_by_kind.find(kind);
  return it == c.fds_by_kind.end() ? 0 : it->second;
}

// Open fds counted without opening anything: the ledger must agree, its own listing fd excluded.
std::size_t probe_open_fds() {
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  const int limit = static_cast<int>(std::min<rlim_t>(lim.rlim_cur, 1 << 16));
  std::size_t open = 0;
  for (int fd = 0; fd < limit; ++fd) open += ::fcntl(fd, F_GETFD) != -1;
  return open;
}

class FakePortSpace : public mach::PortSpace {
 public:
  explicit FakePortSpace(std::size_t names, mach::KernReturn kr = mach::kSuccess)
      : m_names(names), m_kr(kr) {}
  mach::KernReturn get_refs(mach::PortName, mach::Right, mach::Urefs*) override {
    return mach::kInvalidName;
  }
  mach::KernReturn mod_refs(mach::PortName, mach::Right, int) override {
    return mach::kInvalidName;
  }
  mach::KernReturn deallocate(mach::PortName) override { return mach::kInvalidName; }
  mach::KernReturn names_count(std::size_t* count) override {
    if (m_kr == mach::kSuccess) *count = m_names;
    return m_kr;
  }
  mach::PortName current_thread_port() override { return mach::kPortNull; }

 private:
  std::size_t m_names;
  mach::KernReturn m_kr;
};

TEST(ResourceLedger, CountsAPidfdApart) {
  ResourceLedger ledger;
  const ResourceCounts before = ledger.snapshot();
  const int fd = open_pidfd();
  ASSERT_GE(fd, 0) << std::strerror(errno);
  const ResourceCounts open = ledger.snapshot();
  EXPECT_EQ(open.fds, before.fds + 1);
  EXPECT_EQ(open.pidfds, before.pidfds + 1);
  EXPECT_EQ(kind_count(open, "pidfd"), kind_count(before, "pidfd") + 1);
  EXPECT_TRUE(Contains(ResourceLedger::diff(before, open), "pidfds: "));
  ::close(fd);
  const ResourceCounts after = ledger.snapshot();
  EXPECT_EQ(after.fds, before.fds);
  EXPECT_EQ(after.pidfds, before.pidfds);
}

TEST(ResourceLedger, CountsEventfdsAndPipesByKind) {
  ResourceLedger ledger;
  const ResourceCounts before = ledger.snapshot();
  const int efd = ::eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  const ResourceCounts open = ledger.snapshot();
  EXPECT_EQ(open.fds, before.fds + 3);
  EXPECT_EQ(open.pidfds, before.pidfds);
  EXPECT_EQ(kind_count(open, "eventfd"), kind_count(before, "eventfd") + 1);
  EXPECT_EQ(kind_count(open, "pipe"), kind_count(before, "pipe") + 2);
  const std::string diff = ResourceLedger::diff(before, open);
  EXPECT_TRUE(Contains(diff, "fds[eventfd]: "));
  EXPECT_TRUE(Contains(diff, "(+2)"));
  ::close(efd);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  EXPECT_EQ(ResourceLedger::diff(before, ledger.snapshot(), ~std::size_t{0}), "");
}

TEST(ResourceLedger, KindsAddUpToTheFdCount) {
  const ResourceCounts c = ResourceLedger().snapshot();
  std::size_t sum = 0;
  for (const auto& [kind, n] : c.fds_by_kind) sum += n;
  EXPECT_EQ(sum, c.fds);
}

TEST(ResourceLedger, CountsEveryOpenFdButItsOwn) {
  ResourceLedger ledger;
  EXPECT_EQ(ledger.snapshot().fds, probe_open_fds());
}

TEST(ResourceLedger, SnapshotLeavesNoFdOpen) {
  ResourceLedger ledger;
  const std::size_t before = probe_open_fds();
  const ResourceCounts first = ledger.snapshot();
  for (int i = 0; i < 100; ++i) (void)ledger.snapshot();
  (void)ledger.dump();
  EXPECT_EQ(probe_open_fds(), before);
  EXPECT_EQ(ledger.snapshot().fds, first.fds);
}

TEST(ResourceLedger, CountsAMappingAndItsRemoval) {
  ResourceLedger ledger;
  (void)ledger.snapshot();  // let the allocator settle the heap the snapshot itself uses
  const ResourceCounts before = ledger.snapshot();
  // Shared anonymous memory is backed by a file of its own, so the kernel cannot merge it into
  // a neighbouring anonymous mapping: it is exactly one new line in /proc/self/maps.
  const std::size_t length = 4 * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  const ResourceCounts mapped = ledger.snapshot();
  EXPECT_EQ(mapped.maps, before.maps + 1);
  EXPECT_TRUE(Contains(ResourceLedger::diff(before, mapped, ~std::size_t{0}), "maps: "));
  ::munmap(p, length);
  EXPECT_EQ(ledger.snapshot().maps, before.maps);
}

TEST(ResourceLedger, CountsABlockedThread) {
  ResourceLedger ledger;
  const ResourceCounts before = ledger.snapshot();
  std::promise<void> release;
  std::thread blocked([f = release.get_future()] { f.wait(); });
  const ResourceCounts running = ledger.snapshot();
  EXPECT_EQ(running.threads, before.threads + 1);
  EXPECT_TRUE(Contains(ResourceLedger::diff(before, running, ~std::size_t{0}),
                       "threads: " + std::to_string(before.threads) + " -> " +
                           std::to_string(before.threads + 1) + " (+1)"));
  release.set_value();
  blocked.join();
  EXPECT_EQ(test::settled_threads(ledger, before.threads), before.threads);
}

TEST(ResourceLedger, ReportsRssGrowthBeyondTheSlackOnly) {
  ResourceLedger ledger;
  const ResourceCounts before = ledger.snapshot();
  constexpr std::size_t kBytes = 64u << 20;
  void* p = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  std::memset(p, 1, kBytes);
  const ResourceCounts touched = ledger.snapshot();
  EXPECT_GE(touched.rss_kb, before.rss_kb + 60 * 1024);
  EXPECT_TRUE(Contains(ResourceLedger::diff(before, touched), "rss_kb: "));
  EXPECT_TRUE(Lacks(ResourceLedger::diff(before, touched, 128 * 1024), "rss_kb"));
  ::munmap(p, kBytes);
}

TEST(ResourceLedger, DiffOfIdenticalSnapshotsIsEmpty) {
  const ResourceCounts c = ResourceLedger(nullptr).snapshot();
  EXPECT_EQ(ResourceLedger::diff(c, c), "");
  FakePortSpace ports(7);
  const ResourceCounts p = ResourceLedger(&ports).snapshot();
  EXPECT_EQ(ResourceLedger::diff(p, p), "");
}

TEST(ResourceLedger, DiffSaysEachChangeOnALine) {
  ResourceCounts before;
  before.fds = 10;
  before.pidfds = 3;
  before.fds_by_kind = {{"pidfd", 3}, {"file", 7}};
  before.maps = 40;
  before.threads = 4;
  before.rss_kb = 1000;
  before.port_names = 20;
  ResourceCounts after = before;
  after.fds = 11;
  after.pidfds = 5;
  after.fds_by_kind = {{"pidfd", 5}, {"file", 5}, {"socket", 1}};
  after.maps = 38;
  after.rss_kb = 1100;
  after.port_names = 21;
  EXPECT_EQ(ResourceLedger::diff(before, after, 100),
            "fds: 10 -> 11 (+1)\n"
            "pidfds: 3 -> 5 (+2)\n"
            "fds[file]: 7 -> 5 (-2)\n"
            "fds[pidfd]: 3 -> 5 (+2)\n"
            "fds[socket]: 0 -> 1 (+1)\n"
            "maps: 40 -> 38 (-2)\n"
            "port_names: 20 -> 21 (+1)\n");
  EXPECT_TRUE(Contains(ResourceLedger::diff(before, after, 99), "rss_kb: 1000 -> 1100 (+100)\n"));
  after.port_names.reset();
  EXPECT_TRUE(Contains(ResourceLedger::diff(before, after), "port_names: 20 -> unknown\n"));
}

TEST(ResourceLedger, DumpShowsTheOwnerOfATaggedFd) {
  ResourceLedger ledger;
  const ResourceCounts before = ledger.snapshot();
  const int fd = open_pidfd();
  ASSERT_GE(fd, 0) << std::strerror(errno);
  const int tid = current_tid();
  const std::uint64_t serial =
      HandleTable::instance().add(fd, HandleKind::Pidfd, HandleTag{12, "worker"}, tid);
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);

  const std::string dump = ledger.dump();
  EXPECT_TRUE(Contains(dump, "fd " + std::to_string(fd) + " pidfd tcr#12 'worker' tid " +
                                 std::to_string(tid) + "\n"));
  EXPECT_TRUE(Contains(dump, "fd " + std::to_string(pipe_fds[0]) + " pipe pipe:["));
  EXPECT_TRUE(Lacks(dump, "/proc/"));  // the listing's own fd is not in the dump

  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  EXPECT_TRUE(HandleTable::instance().close(fd, serial));
  EXPECT_EQ(ledger.snapshot().fds, before.fds);
  EXPECT_TRUE(Lacks(ledger.dump(), "tcr#12"));
}

TEST(ResourceLedger, PortNamesComeFromThePortSpace) {
  EXPECT_FALSE(ResourceLedger().snapshot().port_names.has_value());
  FakePortSpace ports(42);
  const ResourceCounts c = ResourceLedger(&ports).snapshot();
  ASSERT_TRUE(c.port_names.has_value());
  EXPECT_EQ(*c.port_names, 42u);
  FakePortSpace more(45);
  EXPECT_TRUE(Contains(ResourceLedger::diff(c, ResourceLedger(&more).snapshot(), ~std::size_t{0}),
                       "port_names: 42 -> 45 (+3)\n"));
}

TEST(ResourceLedger, AFailedPortCountIsUnknownNotZero) {
  FakePortSpace broken(42, mach::kInvalidTask);
  EXPECT_FALSE(ResourceLedger(&broken).snapshot().port_names.has_value());
}

// Once the main thread has called pthread_exit, /proc/self/{fd,maps,statm} read empty: counts
// read there would make every later leak check pass vacuously.
TEST(ResourceLedger, StillCountsAfterTheMainThreadExits) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child's only thread is its group leader; it exits and leaves a second thread counting.
    static ResourceCounts before;
    before = ResourceLedger().snapshot();
    pthread_t t;
    auto survivor = [](void*) -> void* {
      char path[64];
      std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", static_cast<int>(::getpid()));
      for (int i = 0; i < 5000; ++i) {  // wait until the leader is a zombie
        char stat[256] = {};
        const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
        const ssize_t n = fd >= 0 ? ::read(fd, stat, sizeof stat - 1) : -1;
        if (fd >= 0) ::close(fd);
        const char* paren = n > 0 ? std::strrchr(stat, ')') : nullptr;
        if (paren == nullptr || paren[2] == 'Z') break;
        ::usleep(1000);
      }
      const ResourceCounts after = ResourceLedger().snapshot();
      const bool ok =
          after.fds == before.fds && after.maps > 0 && after.rss_kb > 0 && after.threads >= 1;
      ::_exit(ok ? 0 : 1);
    };
    if (::pthread_create(&t, nullptr, survivor, nullptr) != 0) ::_exit(2);
    // What pthread_exit does to the kernel, without its forced unwind, which gtest's catch-all
    // would swallow (and then abort): SYS_exit ends the calling thread only.
    ::syscall(SYS_exit, 0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace tcr
