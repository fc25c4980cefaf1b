#include <algorithm>
#include <new>
#include <utility>

#include "exceptions/async_tracker.h"
#include "exceptions/region_table.h"
#include "exceptions/uffd_linux.h"
#include "runtime/fork.h"
#include "runtime/mutex.h"
#include "runtime/os.h"

namespace tcr::detail {
namespace {

// include/uapi/linux/fs.h (Linux 6.7), which Debian 12's headers predate.
struct PageRegion {
  std::uint64_t start;
  std::uint64_t end;
  std::uint64_t categories;
};
struct PmScanArg {
  std::uint64_t size;
  std::uint64_t flags;
  std::uint64_t start;
  std::uint64_t end;
  std::uint64_t walk_end;
  std::uint64_t vec;
  std::uint64_t vec_len;
  std::uint64_t max_pages;
  std::uint64_t category_inverted;
  std::uint64_t category_mask;
  std::uint64_t category_anyof_mask;
  std::uint64_t return_mask;
};
static_assert(sizeof(PmScanArg) == 96);
constexpr std::uint64_t kScanWpMatching = 1 << 0;
constexpr std::uint64_t kScanCheckWpAsync = 1 << 1;
constexpr std::uint64_t kPageIsWritten = 1 << 1;
// At most this many pages per scan: the room collect() makes in the caller's list before each.
constexpr std::uint64_t kPagesPerScan = 4096;

class LinuxAsyncTracker final : public AsyncTracker {
 public:
  LinuxAsyncTracker(Uffd uffd, int pagemap) : m_uffd(uffd), m_pagemap(pagemap) {}
  ~LinuxAsyncTracker() override {
    os::close(m_uffd.fd);
    os::close(m_pagemap);
  }

  Result<void> register_range(void* base, std::size_t length) override {
    return uffd_register_wp(m_uffd.fd, base, length);
  }
  void unregister_range(void* base, std::size_t length) override {
    uffd_unregister(m_uffd.fd, base, length);
  }
  Result<void> write_protect(void* base, std::size_t length, bool on) override {
    return uffd_write_protect(m_uffd.fd, base, length, on);
  }

  Result<void> collect(void* base, std::size_t length, std::size_t page_size,
                       std::vector<std::size_t>& pages) override {
    // Written pages come back as runs; 256 runs per call, and the scan resumes at walk_end
    // until the range is covered. Room for what a scan may report is made before it runs (it
    // re-protects what it reports: failing to store those pages then would lose their writes),
    // and max_pages holds the scan to that room.
    PageRegion runs[256];
    const auto start = reinterpret_cast<std::uint64_t>(base);
    const std::uint64_t end = start + length;
    std::uint64_t at = start;
    while (at < end) {
      const std::size_t room = std::min<std::uint64_t>((end - at) / page_size, kPagesPerScan);
      if (Result<void> made = make_room(pages, room); !made) return made;
      PmScanArg arg{};
      arg.size = sizeof arg;
      arg.flags = kScanWpMatching | kScanCheckWpAsync;
      arg.start = at;
      arg.end = end;
      arg.vec = reinterpret_cast<std::uint64_t>(runs);
      arg.vec_len = sizeof runs / sizeof runs[0];
      arg.max_pages = room;
      arg.category_mask = kPageIsWritten;
      arg.return_mask = kPageIsWritten;
      Result<long> n = os::pagemap_scan(m_pagemap, &arg);
      if (!n) return std::unexpected(n.error());
      for (long i = 0; i < *n; ++i) {
        for (std::uint64_t p = runs[i].start; p < runs[i].end; p += page_size) {
          pages.push_back(static_cast<std::size_t>((p - start) / page_size));
        }
      }
      if (arg.walk_end <= at) break;  // no progress: nothing more to walk
      at = arg.walk_end;
    }
    return {};
  }

 private:
  Uffd m_uffd;
  int m_pagemap;
};

Mutex g_mutex;
// Kept for the process's life once opened.
AsyncTracker* g_tracker TCR_GUARDED_BY(g_mutex) = nullptr;

}  // namespace

// The lock is taken in prepare and let go in parent, across the fork; the child, the only thread
// left, re-creates it and then owns g_tracker without it. The analysis follows neither.
void AsyncTracker::fork_prepare() TCR_NO_THREAD_SAFETY_ANALYSIS { g_mutex.lock(); }
void AsyncTracker::fork_parent() TCR_NO_THREAD_SAFETY_ANALYSIS { g_mutex.unlock(); }
void AsyncTracker::fork_child() TCR_NO_THREAD_SAFETY_ANALYSIS {
  recreate_in_child(g_mutex);
  delete std::exchange(g_tracker, nullptr);
}

Result<AsyncTracker*> AsyncTracker::instance() {
  MutexLock lock(g_mutex);
  if (g_tracker != nullptr) return g_tracker;
  Result<Uffd> uffd = open_uffd(UFFD_FEATURE_PAGEFAULT_FLAG_WP | kUffdFeatureWpAsync |
                                    kUffdFeatureWpUnpopulated,
                                0, "the Async mode");
  if (!uffd) return std::unexpected(uffd.error());
  Result<int> pagemap = os::open_pagemap();
  if (!pagemap) {
    os::close(uffd->fd);
    return std::unexpected(pagemap.error());
  }
  try {
    g_tracker = new LinuxAsyncTracker(*uffd, *pagemap);
  } catch (const std::bad_alloc&) {
    os::close(*pagemap);
    os::close(uffd->fd);
    return fail(Step::RegionAllocate, ENOMEM, "the Async mode's tracker");
  }
  return g_tracker;
}

}  // namespace tcr::detail
