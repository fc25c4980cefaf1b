// The process-wide table of ProtectedRegions, read by the SIGSEGV handler (Signal mode) and the
// ExceptionListener (Listener mode) without a lock: a fixed array of atomic pointers, scanned.
// Readers count themselves (ReadGuard) before they look, and a removal waits until every reader
// that could have seen the region is done, so a region is never freed under a reader.
// Also the per-page state machine that keeps a write racing collect_dirty() from being lost.
// Internal to exceptions/.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "exceptions/protected_region.h"
#include "exceptions/region_mappings.h"
#include "runtime/error.h"

namespace tcr::detail {

class ListenerBackend;
class AsyncTracker;

// Per-page state (Signal and Listener modes). Every change of a page's protection happens while
// its state is Busy, owned by whoever CASed it there (a fault resolver, collect, protect,
// unprotect), so protection and state never disagree once Busy is released:
//   Armed --fault: unprotect--> Dirty --collect: re-protect--> Armed
//   any --protect()--> Armed, any --unprotect()--> Off.
// Off is 0, so fresh zero-filled states are all Off.
inline constexpr std::uint8_t kPageOff = 0;    // not tracked: writable (before protect())
inline constexpr std::uint8_t kPageArmed = 1;  // write-protected, not written since armed
inline constexpr std::uint8_t kPageDirty = 2;  // written since armed: writable, reported next
// Its protection is changing. The state it was claimed from stays in the low bits
// (kPageBusy | state), so whoever claimed a whole region can settle each page from what it was
// without a copy of the states on the side (claim_all_pages, settle_all_pages).
inline constexpr std::uint8_t kPageBusy = 0x80;
inline constexpr bool is_busy(std::uint8_t state) { return (state & kPageBusy) != 0; }

// One state byte per page, in a mapping of its own: zero-filled by the kernel (every page Off)
// and backed only where it is touched. Its failure is an Error (Step::RegionAllocate, through
// os::mmap_anonymous and its fault injection), never an exception.
class PageStates {
 public:
  static Result<PageStates> map(std::size_t pages);
  PageStates() = default;
  PageStates(PageStates&& other) noexcept;
  PageStates& operator=(PageStates&& other) noexcept;
  ~PageStates();
  std::atomic<std::uint8_t>& operator[](std::size_t i) const { return m_states[i]; }

 private:
  std::atomic<std::uint8_t>* m_states = nullptr;
  std::size_t m_bytes = 0;
};

struct RegionCore {
  char* base = nullptr;
  std::size_t length = 0;
  std::size_t pages = 0;
  std::size_t page_size = 0;
  TrapMode mode = TrapMode::Signal;
  PageStates state;    // Signal and Listener modes
  RangeLayout layout;  // the protection of each part at create(): Signal mode restores it
  std::atomic<std::uint64_t> traps{0};
  bool armed = false;  // between protect() and unprotect(); the region's owner reads and writes it
  ListenerBackend* listener = nullptr;   // Listener mode
  AsyncTracker* async = nullptr;         // Async mode
  // Inherited by a forked child (exceptions/fork_hooks.h), Listener and Async modes: registered
  // with no userfaultfd of this process until protect() or collect_dirty() registers it again.
  bool lost_at_fork = false;
  bool all_written = false;  // Async: every page counts as written at the next collect

  bool contains(const void* address) const {
    const char* a = static_cast<const char*>(address);
    return a >= base && a < base + length;
  }
  std::size_t page_of(const void* address) const {
    return static_cast<std::size_t>(static_cast<const char*>(address) - base) / page_size;
  }
  std::atomic<std::uint8_t>& page(std::size_t i) { return state[i]; }
};

// While one lives, no region this thread finds in the table is freed (remove_region waits for
// it). Async-signal-safe: two atomic operations. Hold it only for a fault's resolution.
class ReadGuard {
 public:
  ReadGuard();
  ~ReadGuard();
  ReadGuard(const ReadGuard&) = delete;
  ReadGuard& operator=(const ReadGuard&) = delete;

 private:
  std::uint32_t m_parity;
};

// The region containing `address`, kept alive for the object's life. Async-signal-safe.
class PinnedRegion {
 public:
  explicit PinnedRegion(const void* address);
  PinnedRegion(const PinnedRegion&) = delete;
  PinnedRegion& operator=(const PinnedRegion&) = delete;
  RegionCore* operator->() const { return m_region; }
  explicit operator bool() const { return m_region != nullptr; }
  RegionCore* get() const { return m_region; }

 private:
  ReadGuard m_guard;  // first: counted before the table is read
  RegionCore* m_region = nullptr;
};

inline constexpr std::size_t kMaxRegions = 256;

// BadArgument if [base, base + length) overlaps a registered region or the table is full: the
// check add_region makes, for create() to make before it allocates anything.
Result<void> check_room_for(const char* base, std::size_t length);
// The same check and the insertion, atomically.
Result<void> add_region(RegionCore* region);
// Removes it and waits until no reader that could have found it is still at work. Its range is
// remembered among the recently released ones (below).
void remove_region(RegionCore* region);

// Whether `address` lies in one of the last 16 regions removed. A write fault
// raised while such a region was still armed can reach the handler after the region is gone
// (the kernel delivered the signal, the thread was preempted before the handler looked): the page
// is writable by then, and the fault must be retried, not passed to the previous handler (which,
// were it SIG_DFL, would take the process down). Async-signal-safe; a torn read only costs one
// retry.
bool recently_released(const void* address);
// Fork (exceptions/fork_hooks.cpp): the change lock across a fork; in the child, the readers
// counted by threads of the parent (which will never leave) are forgotten.
void region_table_fork_prepare();
void region_table_fork_parent();
void region_table_fork_child();

// Calls fn(region) for each registered region, under a ReadGuard (not from a signal handler).
template <class F>
void for_each_region(F&& fn);
RegionCore* region_slot(std::size_t i);

template <class F>
void for_each_region(F&& fn) {
  ReadGuard guard;
  for (std::size_t i = 0; i < kMaxRegions; ++i) {
    if (RegionCore* r = region_slot(i)) fn(*r);
  }
}

// Every signal blocked for the object's life. Held by whoever holds pages Busy outside a fault
// handler (protect, unprotect, collect, the listener's stop): a stop-the-world must not suspend
// a thread that holds pages Busy, or a writer faulting on one of them would spin with its own
// suspend signal blocked and the stop would wait for it forever. The signal then waits a moment.
class SignalsBlocked {
 public:
  SignalsBlocked() {
    sigset_t all;
    sigfillset(&all);
    // Not the synchronous ones: a fault while they are blocked kills the process.
    for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP}) sigdelset(&all, sig);
    pthread_sigmask(SIG_BLOCK, &all, &m_old);
  }
  ~SignalsBlocked() { pthread_sigmask(SIG_SETMASK, &m_old, nullptr); }
  SignalsBlocked(const SignalsBlocked&) = delete;
  SignalsBlocked& operator=(const SignalsBlocked&) = delete;

 private:
  sigset_t m_old;
};

// Spins while a page is Busy; CASes it from `from` to Busy. Returns the state it found when that
// was not `from` (no change made), or `from` when it now owns the page.
std::uint8_t claim_page(std::atomic<std::uint8_t>& page, std::uint8_t from);

// Sets every page of the region Busy, waiting out resolvers, each keeping what it was. The caller
// changes the protection and then settles every page.
void claim_all_pages(RegionCore& r);
// Ends claim_all_pages: each page's state becomes settle(what it was before the claim).
template <class Settle>
void settle_all_pages(RegionCore& r, Settle&& settle) {
  for (std::size_t i = 0; i < r.pages; ++i) {
    std::atomic<std::uint8_t>& page = r.page(i);
    const auto was = static_cast<std::uint8_t>(page.load(std::memory_order_relaxed) & ~kPageBusy);
    page.store(settle(was), std::memory_order_release);
  }
}

// Room in `pages` for `more` entries (grown geometrically), or RegionAllocate with ENOMEM instead
// of std::bad_alloc. collect_dirty makes room before it claims pages (Signal, Listener) or the
// kernel re-protects them (Async), so that failing to allocate loses no write.
Result<void> make_room(std::vector<std::size_t>& pages, std::size_t more);

// The fault resolution both trapping modes share: an Armed page becomes Dirty after `unprotect`
// made it writable. The trap is counted (on the region, and by `count(+1)` on the thread) before
// the page is unprotected, because unprotecting lets the writer go on (Listener: it wakes it),
// and a writer must find its own trap counted. Returns true when the page is writable now (this
// call or a racing one made it so, or it is not tracked); false only if unprotect failed (the
// page stays Armed and the counts are taken back).
template <class Unprotect, class Count>
bool resolve_write_fault(RegionCore& r, std::size_t index, Unprotect&& unprotect, Count&& count,
                         bool* counted) {
  *counted = false;
  std::atomic<std::uint8_t>& page = r.page(index);
  const std::uint8_t found = claim_page(page, kPageArmed);
  if (found != kPageArmed) return true;  // Dirty or Off: already writable (a stale fault)
  r.traps.fetch_add(1, std::memory_order_relaxed);
  count(1);
  if (!unprotect(r.base + index * r.page_size, r.page_size)) {
    r.traps.fetch_sub(1, std::memory_order_relaxed);
    count(-1);
    page.store(kPageArmed, std::memory_order_release);
    return false;
  }
  *counted = true;
  page.store(kPageDirty, std::memory_order_release);
  return true;
}

}  // namespace tcr::detail
