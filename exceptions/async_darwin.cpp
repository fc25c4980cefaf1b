// Darwin has no userfaultfd and no PAGEMAP_SCAN: the Async mode is unavailable, and a region
// asking for it falls back to the Mach-exception Listener or to Signal.
#include "exceptions/async_tracker.h"

namespace tcr::detail {

void AsyncTracker::fork_prepare() {}
void AsyncTracker::fork_parent() {}
void AsyncTracker::fork_child() {}

Result<AsyncTracker*> AsyncTracker::instance() {
  return fail(Step::ModeUnavailable, 0, "Darwin has no userfaultfd WP_ASYNC / PAGEMAP_SCAN");
}

}  // namespace tcr::detail
