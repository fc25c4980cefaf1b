#include "exceptions/region_table.h"

#include <sched.h>

#include <mutex>

namespace tcr::detail {
namespace {

std::atomic<RegionCore*> g_slots[kMaxRegions];
std::mutex g_change_mutex;  // add and remove; readers never take it

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace

PinnedRegion::PinnedRegion(const void* address) {
  for (std::atomic<RegionCore*>& slot : g_slots) {
    RegionCore* r = slot.load(std::memory_order_acquire);
    if (r == nullptr || !r->contains(address)) continue;
    r->users.fetch_add(1, std::memory_order_seq_cst);
    // Removal clears the slot before it waits for users to drain: if the slot still holds r
    // now, the remover has not finished waiting and will see our pin.
    if (slot.load(std::memory_order_seq_cst) == r) {
      m_region = r;
      return;
    }
    r->users.fetch_sub(1, std::memory_order_release);
  }
}

PinnedRegion::~PinnedRegion() {
  if (m_region != nullptr) m_region->users.fetch_sub(1, std::memory_order_release);
}

RegionCore* region_slot(std::size_t i) { return g_slots[i].load(std::memory_order_acquire); }

Result<void> add_region(RegionCore* region) {
  std::lock_guard lock(g_change_mutex);
  std::atomic<RegionCore*>* free_slot = nullptr;
  for (std::atomic<RegionCore*>& slot : g_slots) {
    RegionCore* r = slot.load(std::memory_order_relaxed);
    if (r == nullptr) {
      if (free_slot == nullptr) free_slot = &slot;
      continue;
    }
    if (region->base < r->base + r->length && r->base < region->base + region->length) {
      char msg[160];
      std::snprintf(msg, sizeof msg,
                    "ProtectedRegion [%p, +%zu) overlaps the region [%p, +%zu) already protected",
                    static_cast<void*>(region->base), region->length, static_cast<void*>(r->base),
                    r->length);
      return fail(Step::BadArgument, 0, msg);
    }
  }
  if (free_slot == nullptr) {
    return fail(Step::BadArgument, 0,
                "too many ProtectedRegions (at most " + std::to_string(kMaxRegions) + ")");
  }
  free_slot->store(region, std::memory_order_seq_cst);
  return {};
}

void remove_region(RegionCore* region) {
  {
    std::lock_guard lock(g_change_mutex);
    for (std::atomic<RegionCore*>& slot : g_slots) {
      if (slot.load(std::memory_order_relaxed) == region) {
        slot.store(nullptr, std::memory_order_seq_cst);
        break;
      }
    }
  }
  // Readers hold a pin for the few instructions of one fault's resolution.
  while (region->users.load(std::memory_order_acquire) != 0) sched_yield();
}

std::uint8_t claim_page(std::atomic<std::uint8_t>& page, std::uint8_t from) {
  for (;;) {
    std::uint8_t s = page.load(std::memory_order_acquire);
    if (s == kPageBusy) {
      cpu_relax();
      continue;
    }
    if (s != from) return s;
    if (page.compare_exchange_weak(s, kPageBusy, std::memory_order_acq_rel)) return from;
  }
}

void claim_all_pages(RegionCore& r, std::vector<std::uint8_t>* was) {
  if (was != nullptr) was->assign(r.pages, kPageOff);
  for (std::size_t i = 0; i < r.pages; ++i) {
    std::atomic<std::uint8_t>& page = r.page(i);
    for (;;) {
      std::uint8_t cur = page.load(std::memory_order_acquire);
      if (cur == kPageBusy) {
        cpu_relax();
        continue;
      }
      if (page.compare_exchange_weak(cur, kPageBusy, std::memory_order_acq_rel)) {
        if (was != nullptr) (*was)[i] = cur;
        break;
      }
    }
  }
}

}  // namespace tcr::detail
