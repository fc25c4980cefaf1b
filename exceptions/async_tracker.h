// The Async mode's kernel side: a userfaultfd with UFFD_FEATURE_WP_ASYNC, so write faults on
// registered ranges are resolved by the kernel (it clears the page's write-protect bit and marks
// it written) with no thread of ours involved, and PAGEMAP_SCAN on /proc/self/pagemap, which
// reports the written pages of a range and write-protects them again in one call, under the page
// table lock: a write is reported by this scan or the next, never lost. Process-wide (one fd of
// each), opened at first use. Linux 6.7 and later; Darwin has none (async_darwin.cpp says so).
// Internal to exceptions/. Thread-safe.
#pragma once

#include <cstddef>
#include <vector>

#include "runtime/error.h"

namespace tcr::detail {

class AsyncTracker {
 public:
  // The tracker, opened now if not yet. Errors (not cached, so a later call may succeed):
  // Step::Userfaultfd, UffdIoctl, ModeUnavailable (no WP_ASYNC), PagemapScan.
  static Result<AsyncTracker*> instance();

  // Fork (exceptions/fork_hooks.h): the lock behind instance() across a fork; in the child the
  // tracker is forgotten (its userfaultfd and pagemap fd are the parent's, and are closed), so
  // that instance() opens one for the child.
  static void fork_prepare();
  static void fork_parent();
  static void fork_child();

  virtual ~AsyncTracker() = default;
  virtual Result<void> register_range(void* base, std::size_t length) = 0;
  virtual void unregister_range(void* base, std::size_t length) = 0;
  virtual Result<void> write_protect(void* base, std::size_t length, bool on) = 0;
  // Appends the indexes of the pages of [base, base + length) written since they were last
  // protected, and write-protects them again.
  virtual Result<void> collect(void* base, std::size_t length, std::size_t page_size,
                               std::vector<std::size_t>& pages) = 0;
};

}  // namespace tcr::detail
