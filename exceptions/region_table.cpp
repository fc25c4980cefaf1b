#include "exceptions/region_table.h"

#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <new>
#include <utility>

#include "runtime/fork.h"
#include "runtime/machine_context.h"
#include "runtime/mutex.h"
#include "runtime/os.h"

namespace tcr::detail {
namespace {

// Add and remove take it; readers never do. It serializes the writers of g_slots and
// g_released, which are not TCR_GUARDED_BY it for that reason: the fault handler and the
// listener read them without a lock (async-signal-safe atomics). What needs it says so with
// TCR_REQUIRES.
Mutex g_change_mutex;

std::atomic<RegionCore*> g_slots[kMaxRegions];

// The ranges of the last regions removed, a ring written under g_change_mutex.
constexpr std::size_t kReleasedRing = 16;
struct ReleasedRange {
  std::atomic<std::uintptr_t> low{0};
  std::atomic<std::uintptr_t> high{0};
};
ReleasedRange g_released[kReleasedRing];
std::size_t g_released_next TCR_GUARDED_BY(g_change_mutex) = 0;

}  // namespace

// Readers count themselves in one of two counters, chosen by the epoch's parity, for as long as
// they may touch a region they found in the table. A reader that could have seen a slot counted
// itself before the slot was cleared (its count precedes its look), and stays counted until it is
// done. A remover clears the slot, then flips the epoch and waits for the old parity's counter to
// drain, twice: each counter reaches zero once after the clear, so that reader is done; new
// readers meanwhile count in the other parity and cannot drain the wait forever. Async-signal-safe
// on the reader's side: two atomic operations.
static std::atomic<std::uint32_t> g_epoch{0};
static std::atomic<std::uint32_t> g_readers[2];

ReadGuard::ReadGuard() : m_parity(g_epoch.load(std::memory_order_seq_cst) & 1u) {
  g_readers[m_parity].fetch_add(1, std::memory_order_seq_cst);
}

ReadGuard::~ReadGuard() { g_readers[m_parity].fetch_sub(1, std::memory_order_release); }

PinnedRegion::PinnedRegion(const void* address) {
  for (std::atomic<RegionCore*>& slot : g_slots) {
    RegionCore* r = slot.load(std::memory_order_seq_cst);
    if (r != nullptr && r->contains(address)) {
      m_region = r;
      return;
    }
  }
}

RegionCore* region_slot(std::size_t i) { return g_slots[i].load(std::memory_order_acquire); }

namespace {

// The free slot for [base, base + length), or BadArgument.
Result<std::atomic<RegionCore*>*> find_free_slot(const char* base, std::size_t length)
    TCR_REQUIRES(g_change_mutex) {
  std::atomic<RegionCore*>* free_slot = nullptr;
  for (std::atomic<RegionCore*>& slot : g_slots) {
    RegionCore* r = slot.load(std::memory_order_relaxed);
    if (r == nullptr) {
      if (free_slot == nullptr) free_slot = &slot;
      continue;
    }
    if (base < r->base + r->length && r->base < base + length) {
      char msg[160];
      std::snprintf(msg, sizeof msg,
                    "ProtectedRegion [%p, +%zu) overlaps the region [%p, +%zu) already protected",
                    static_cast<const void*>(base), length, static_cast<void*>(r->base),
                    r->length);
      return fail(Step::BadArgument, 0, msg);
    }
  }
  if (free_slot == nullptr) {
    return fail(Step::BadArgument, 0,
                "too many ProtectedRegions (at most " + std::to_string(kMaxRegions) + ")");
  }
  return free_slot;
}

}  // namespace

Result<void> check_room_for(const char* base, std::size_t length) {
  MutexLock lock(g_change_mutex);
  Result<std::atomic<RegionCore*>*> slot = find_free_slot(base, length);
  if (!slot) return std::unexpected(slot.error());
  return {};
}

Result<void> add_region(RegionCore* region) {
  MutexLock lock(g_change_mutex);
  Result<std::atomic<RegionCore*>*> slot = find_free_slot(region->base, region->length);
  if (!slot) return std::unexpected(slot.error());
  (*slot)->store(region, std::memory_order_seq_cst);
  return {};
}

void remove_region(RegionCore* region) {
  // Under the change mutex throughout, so one flip's readers drain before the next flip.
  MutexLock lock(g_change_mutex);
  for (std::atomic<RegionCore*>& slot : g_slots) {
    if (slot.load(std::memory_order_relaxed) == region) {
      slot.store(nullptr, std::memory_order_seq_cst);
      break;
    }
  }
  ReleasedRange& ring = g_released[g_released_next++ % kReleasedRing];
  ring.high.store(0, std::memory_order_release);  // empty while it changes
  ring.low.store(reinterpret_cast<std::uintptr_t>(region->base), std::memory_order_release);
  ring.high.store(reinterpret_cast<std::uintptr_t>(region->base) + region->length,
                  std::memory_order_release);
  // Both counters drain once after the clear, each while new readers go to the other: a reader
  // that read the epoch long ago (before an earlier removal's flip) may count in either.
  for (int flip = 0; flip < 2; ++flip) {
    const std::uint32_t old = g_epoch.fetch_add(1, std::memory_order_seq_cst) & 1u;
    // Readers hold their count for the few instructions of one fault's resolution.
    while (g_readers[old].load(std::memory_order_seq_cst) != 0) sched_yield();
  }
}

// Taken in prepare and let go in parent (or re-created in child), across the fork: the analysis
// follows no lock from one function into another.
void region_table_fork_prepare() TCR_NO_THREAD_SAFETY_ANALYSIS { g_change_mutex.lock(); }
void region_table_fork_parent() TCR_NO_THREAD_SAFETY_ANALYSIS { g_change_mutex.unlock(); }
void region_table_fork_child() {
  recreate_in_child(g_change_mutex);
  g_readers[0].store(0, std::memory_order_relaxed);
  g_readers[1].store(0, std::memory_order_relaxed);
}

bool recently_released(const void* address) {
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  for (const ReleasedRange& r : g_released) {
    const std::uintptr_t high = r.high.load(std::memory_order_acquire);
    if (a >= r.low.load(std::memory_order_acquire) && a < high) return true;
  }
  return false;
}

std::uint8_t claim_page(std::atomic<std::uint8_t>& page, std::uint8_t from) {
  for (;;) {
    std::uint8_t s = page.load(std::memory_order_acquire);
    if (is_busy(s)) {
      machine::cpu_relax();
      continue;
    }
    if (s != from) return s;
    if (page.compare_exchange_weak(s, static_cast<std::uint8_t>(kPageBusy | from),
                                   std::memory_order_acq_rel)) return from;
  }
}

void claim_all_pages(RegionCore& r) {
  for (std::size_t i = 0; i < r.pages; ++i) {
    std::atomic<std::uint8_t>& page = r.page(i);
    for (;;) {
      std::uint8_t cur = page.load(std::memory_order_acquire);
      if (is_busy(cur)) {
        machine::cpu_relax();
        continue;
      }
      if (page.compare_exchange_weak(cur, static_cast<std::uint8_t>(kPageBusy | cur),
                                     std::memory_order_acq_rel)) break;
    }
  }
}

Result<void> make_room(std::vector<std::size_t>& pages, std::size_t more) {
  if (pages.capacity() - pages.size() >= more) return {};
  if (more > pages.max_size() - pages.size()) {
    return fail(Step::RegionAllocate, ENOMEM, "collect_dirty: the page list");
  }
  const std::size_t need = pages.size() + more;
  try {
    pages.reserve(std::max(need, 2 * pages.capacity()));
  } catch (const std::bad_alloc&) {
    try {
      pages.reserve(need);  // the doubling may be what was too much
    } catch (const std::bad_alloc&) {
      return fail(Step::RegionAllocate, ENOMEM, "collect_dirty: the page list");
    }
  }
  return {};
}

Result<PageStates> PageStates::map(std::size_t pages) {
  static_assert(sizeof(std::atomic<std::uint8_t>) == 1);
  Result<void*> mapped = os::mmap_anonymous(pages, PROT_READ | PROT_WRITE, /*stack=*/false,
                                            Step::RegionAllocate);
  if (!mapped) {
    Error e = mapped.error();
    e.fixed_detail = "the page states (one byte per page)";
    return std::unexpected(std::move(e));
  }
  PageStates states;
  states.m_states = static_cast<std::atomic<std::uint8_t>*>(*mapped);
  states.m_bytes = pages;
  return states;
}

PageStates::PageStates(PageStates&& other) noexcept
    : m_states(std::exchange(other.m_states, nullptr)), m_bytes(std::exchange(other.m_bytes, 0)) {}

PageStates& PageStates::operator=(PageStates&& other) noexcept {
  if (this != &other) {
    if (m_states != nullptr) os::munmap(m_states, m_bytes);
    m_states = std::exchange(other.m_states, nullptr);
    m_bytes = std::exchange(other.m_bytes, 0);
  }
  return *this;
}

PageStates::~PageStates() {
  if (m_states != nullptr) os::munmap(m_states, m_bytes);
}

}  // namespace tcr::detail
