// exceptions/fork_hooks.h: the listener's, the region table's and the Async tracker's fork steps.
#include "exceptions/fork_hooks.h"

#include <sys/mman.h>

#include "exceptions/async_tracker.h"
#include "exceptions/listener_internal.h"
#include "exceptions/region_table.h"
#include "runtime/fork.h"
#include "runtime/os.h"

namespace tcr::detail {
namespace {

// A region the child inherits, after the region table's own child step (its readers and lock are
// the child's again). `listener` and `async` point to what the listener's and the tracker's child
// steps forget.
void forget_kernel_side(RegionCore& r) {
  if (r.mode == TrapMode::Signal) {
    // Protection is inherited. A page Busy here was being resolved (or re-armed) by a thread of
    // the parent: writable now, and counted as written, whatever that thread had done to it.
    for (std::size_t i = 0; i < r.pages; ++i) {
      if (!is_busy(r.page(i).load(std::memory_order_acquire))) continue;
      char* const at = r.base + i * r.page_size;
      const int prot = r.layout.span_of(at).prot;  // its own protection, write included
      const bool writable = os::mprotect(at, r.page_size, prot, Step::RegionMprotect).has_value();
      r.page(i).store(writable ? kPageDirty : kPageArmed, std::memory_order_release);
    }
    return;
  }
  // Listener and Async: nothing traps in the child until the region is registered again, so
  // an armed region's pages all count as written (a write barrier may over-report, never miss).
  r.listener = nullptr;
  r.async = nullptr;
  r.lost_at_fork = true;
  if (r.mode == TrapMode::Listener) {
    for (std::size_t i = 0; i < r.pages; ++i) {
      r.page(i).store(r.armed ? kPageDirty : kPageOff, std::memory_order_release);
    }
  } else {
    r.all_written = r.armed;
  }
}

void prepare_regions(void*) { region_table_fork_prepare(); }
void parent_regions(void*) { region_table_fork_parent(); }
void child_regions(void*) {
  region_table_fork_child();
  for_each_region(forget_kernel_side);
}

}  // namespace

void fork_participate_exceptions() {
  fork_participate({"exception listener", ForkRank::Listener,
                    [](void*) { listener_fork_prepare(); }, [](void*) { listener_fork_parent(); },
                    [](void*) { listener_fork_child(); }});
  fork_participate(
      {"protected regions", ForkRank::Regions, prepare_regions, parent_regions, child_regions});
  fork_participate({"async tracker", ForkRank::Setup, [](void*) { AsyncTracker::fork_prepare(); },
                    [](void*) { AsyncTracker::fork_parent(); },
                    [](void*) { AsyncTracker::fork_child(); }});
}

}  // namespace tcr::detail
