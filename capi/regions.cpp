// tcr.h's GC traps: protected regions (dirty-page tracking) and the fault handlers.
#include "capi/handles.h"
#include "exceptions/fault_signals.h"
#include "exceptions/listener.h"

namespace tcr::capi {
namespace {

static_assert(TCR_TRAP_SIGNAL == static_cast<int>(TrapMode::Signal) &&
                  TCR_TRAP_LISTENER == static_cast<int>(TrapMode::Listener) &&
                  TCR_TRAP_ASYNC == static_cast<int>(TrapMode::Async),
              "tcr_trap_mode and tcr::TrapMode disagree");

#define TCR_NEED_REGION(r, op) \
  if ((r) == nullptr || !(r)->region) return bad_argument(op ": NULL tcr_region")

}  // namespace
}  // namespace tcr::capi

using namespace tcr;
using namespace tcr::capi;

extern "C" {

tcr_trap_mode tcr_best_trap_mode(void) { return static_cast<tcr_trap_mode>(best_trap_mode()); }

tcr_status tcr_region_create(void* base, size_t length, tcr_trap_mode mode, int fall_back,
                             tcr_region** out) {
  if (out == nullptr) return bad_argument("tcr_region_create: NULL out");
  RegionOptions options;
  switch (enum_value(mode)) {
    case TCR_TRAP_BEST: break;
    case TCR_TRAP_SIGNAL: options.mode = TrapMode::Signal; break;
    case TCR_TRAP_LISTENER: options.mode = TrapMode::Listener; break;
    case TCR_TRAP_ASYNC: options.mode = TrapMode::Async; break;
    default: return bad_argument("tcr_region_create: unknown tcr_trap_mode");
  }
  options.fall_back = fall_back != 0;
  return guarded("tcr_region_create", [&] {
    std::unique_ptr<tcr_region> box(new tcr_region);
    Result<std::unique_ptr<ProtectedRegion>> r = ProtectedRegion::create(base, length, options);
    if (!r) return fail_with(r.error());
    box->region = std::move(*r);
    *out = box.release();
    return TCR_OK;
  });
}

void tcr_region_destroy(tcr_region* region) { delete region; }

tcr_status tcr_region_protect(tcr_region* region) {
  TCR_NEED_REGION(region, "tcr_region_protect");
  return guarded("tcr_region_protect", [&] { return status_of(region->region->protect()); });
}

tcr_status tcr_region_unprotect(tcr_region* region) {
  TCR_NEED_REGION(region, "tcr_region_unprotect");
  return guarded("tcr_region_unprotect", [&] { return status_of(region->region->unprotect()); });
}

tcr_status tcr_region_collect_dirty(tcr_region* region, const size_t** pages, size_t* count) {
  TCR_NEED_REGION(region, "tcr_region_collect_dirty");
  if (pages == nullptr || count == nullptr) {
    return bad_argument("tcr_region_collect_dirty: NULL pages or count");
  }
  return guarded("tcr_region_collect_dirty", [&] {
    region->dirty.clear();  // keeps its capacity: a steady collector allocates nothing
    const Result<void> r = region->region->collect_dirty(region->dirty);
    // What was collected before an error is answered too (the rest comes next time).
    *pages = region->dirty.data();
    *count = region->dirty.size();
    return status_of(r);
  });
}

tcr_trap_mode tcr_region_mode(const tcr_region* region) {
  return region != nullptr && region->region ? static_cast<tcr_trap_mode>(region->region->mode())
                                             : TCR_TRAP_BEST;
}

size_t tcr_region_pages(const tcr_region* region) {
  return region != nullptr && region->region ? region->region->pages() : 0;
}

size_t tcr_region_page_size(const tcr_region* region) {
  return region != nullptr && region->region ? region->region->page_size() : 0;
}

uint64_t tcr_region_traps(const tcr_region* region) {
  return region != nullptr && region->region ? region->region->traps() : 0;
}

tcr_status tcr_install_fault_handlers(void) {
  return guarded("tcr_install_fault_handlers", [] { return status_of(install_fault_handlers()); });
}

int tcr_fault_handlers_installed(void) { return fault_handlers_installed() ? 1 : 0; }

tcr_status tcr_listener_stats_read(tcr_listener_stats* stats) {
  if (!output_fits(stats, sizeof(tcr_listener_stats))) {
    return bad_argument("tcr_listener_stats_read: NULL stats, or stats.size too small");
  }
  const ListenerStats s = ExceptionListener::instance().stats();
  tcr_listener_stats full{};
  full.size = sizeof full;
  full.batches = s.batches;
  full.messages = s.messages;
  full.resolved = s.resolved;
  full.stale = s.stale;
  full.foreign = s.foreign;
  full.attributed = s.attributed;
  write_versioned(stats, full);
  return TCR_OK;
}

int tcr_listener_running(void) { return ExceptionListener::instance().running() ? 1 : 0; }

}  // extern "C"
