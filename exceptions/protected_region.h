// ProtectedRegion: page-granular dirty tracking over a range of a runtime's heap, the write
// barrier of a generational or incremental GC. protect() arms every page; the runtime's threads
// write as they please; collect_dirty() answers the pages written since the last collect (or
// protect) and re-arms them. A write that races a collect is reported by that collect or the
// next one, never lost; it may be reported by both (and, in Listener mode, once more when two
// threads faulted on its page: the second fault's message arrives after the re-arm). A page no
// one wrote since it was armed is never reported. Three modes, one semantics:
//  - Signal:   mprotect without PROT_WRITE (every other bit kept: code in an RWX heap runs while
//              armed); the first write to a page faults, the SIGSEGV handler (fault_signals.h,
//              on the thread's alternate stack) marks it and gives it its protection back. A
//              fault in the region that is not a write goes to the handler installed before ours.
//  - Listener: userfaultfd write-protect; the faulting thread sleeps in the kernel while the
//              ExceptionListener thread marks the page and unprotects it (listener.h).
//  - Async:    userfaultfd WP_ASYNC; the kernel resolves write faults itself and collect_dirty()
//              reads-and-re-protects the written pages with one PAGEMAP_SCAN: no trap at all.
// The default is the best the kernel allows (Async, then Listener, then Signal); when
// userfaultfd is refused (EPERM, ENOSYS, seccomp) the region falls back and says so once in the
// log. Thread-safety: writes from any thread; protect/unprotect/collect_dirty from one thread
// at a time per region. The memory stays the runtime's: the region never maps or unmaps it, and
// the runtime must not mprotect it itself or unmap it while the region exists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "runtime/error.h"

namespace tcr {

enum class TrapMode : std::uint8_t { Signal, Listener, Async };
const char* to_string(TrapMode mode);

// The best mode this process can use, probed once (opening a userfaultfd, asking for its
// features). Logged the first time.
TrapMode best_trap_mode();

struct RegionOptions {
  // Unset: best_trap_mode().
  std::optional<TrapMode> mode;
  // When the mode asked for is unavailable: fall back to the next best (true; logged once per
  // process) or fail with Step::ModeUnavailable (false: a benchmark that must run what it names).
  bool fall_back = true;
};

namespace detail {
struct RegionCore;
}

class ProtectedRegion {
 public:
  // [base, base + length) must be page-aligned, non-empty, mapped throughout and writable
  // (PROT_WRITE, with or without PROT_READ and PROT_EXEC; each part keeps its own protection),
  // and overlap no other region. BadArgument says which rule broke and where, before anything is
  // allocated (a huge length is refused as cheaply as a small one). RegionMappings: the memory
  // map could not be read; RegionAllocate: no memory for the region's page states (one byte per
  // page). The userfaultfd modes also need memory the kernel write-protects (private anonymous
  // memory always; shmem, and in the Async mode file mappings, on recent kernels): it answers
  // UffdIoctl EINVAL for any other.
  // The pages are not armed yet: call protect().
  static Result<std::unique_ptr<ProtectedRegion>> create(void* base, std::size_t length,
                                                          RegionOptions options = {});
  // Unarms and unregisters; threads blocked on a fault in the region resume (their fault
  // messages may still be in flight: the listener lets them go).
  ~ProtectedRegion();
  ProtectedRegion(const ProtectedRegion&) = delete;
  ProtectedRegion& operator=(const ProtectedRegion&) = delete;

  TrapMode mode() const;
  void* base() const;
  std::size_t length() const;
  std::size_t pages() const;
  std::size_t page_size() const;

  // Arms every page and forgets what was written before. On error the region is left unarmed
  // (writable, untracked), as before the call.
  Result<void> protect();
  // Stops tracking: pages are writable without traps (Signal: with the protection they had at
  // create()), and collect_dirty() reports nothing until the next protect(). Collect first to keep
  // what was written since the last collect. Allocates nothing.
  Result<void> unprotect();
  // Appends to `pages` the indexes (ascending, from 0 at base()) of the pages written since the
  // last collect or protect, and re-arms them. On error the pages not yet re-armed are reported
  // again next time. Allocates only by growing `pages`, as far as the pages it reports need
  // (RegionAllocate if it cannot: the pages it could not report are reported next time).
  Result<void> collect_dirty(std::vector<std::size_t>& pages);
  Result<std::vector<std::size_t>> collect_dirty();

  // Write faults taken in this region (Signal and Listener; always 0 for Async).
  std::uint64_t traps() const;

 private:
  explicit ProtectedRegion(std::unique_ptr<detail::RegionCore> core);
  std::unique_ptr<detail::RegionCore> m_core;
};

}  // namespace tcr
