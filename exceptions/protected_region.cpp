// ProtectedRegion: mode choice and fall-back, and the per-page state machine (region_table.h)
// that the Signal and Listener modes share; Async defers to the kernel (async_tracker.h).
#include "exceptions/protected_region.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <new>

#include "exceptions/async_tracker.h"
#include "exceptions/fault_signals.h"
#include "exceptions/fork_hooks.h"
#include "exceptions/listener_internal.h"
#include "exceptions/region_table.h"
#include "runtime/log.h"
#include "runtime/os.h"

namespace tcr {
namespace {

std::size_t system_page_size() {
  static const std::size_t s_page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return s_page;
}

// Opens the mode's kernel side (once per process; later calls find it open) and, given a core,
// points it there. The error says why the mode is not available.
Result<void> open_mode(TrapMode mode, detail::RegionCore* core = nullptr) {
  detail::fork_participate_exceptions();  // before any kernel side is opened
  switch (mode) {
    case TrapMode::Signal: return {};
    case TrapMode::Listener: {
      Result<detail::ListenerBackend*> b = detail::listener_backend();
      if (!b) return std::unexpected(b.error());
      if (core != nullptr) core->listener = *b;
      return {};
    }
    case TrapMode::Async: {
      Result<detail::AsyncTracker*> a = detail::AsyncTracker::instance();
      if (!a) return std::unexpected(a.error());
      if (core != nullptr) core->async = *a;
      return {};
    }
  }
  return {};
}

TrapMode next_best(TrapMode mode) {
  return mode == TrapMode::Async ? TrapMode::Listener : TrapMode::Signal;
}

// Said once per process for each mode that had to give way.
void say_fallback_once(TrapMode from, TrapMode to, const Error& why) {
  static std::atomic<bool> s_said[3];
  if (s_said[static_cast<int>(from)].exchange(true)) return;
  log::warn("ProtectedRegion: {} mode unavailable ({}); falling back to {}", to_string(from),
            why.message(), to_string(to));
}

void release_all(detail::RegionCore& r, std::uint8_t to) {
  for (std::size_t i = 0; i < r.pages; ++i) r.page(i).store(to, std::memory_order_release);
}

// A region a forked child inherited in the Listener or Async mode has no kernel side there
// (exceptions/fork_hooks.h): it is registered again, with the child's own userfaultfd, before
// anything arms its pages.
Result<void> reattach_after_fork(detail::RegionCore& r) {
  if (!r.lost_at_fork) return {};
  if (Result<void> opened = open_mode(r.mode, &r); !opened) return opened;
  Result<void> registered = r.mode == TrapMode::Listener
                                ? r.listener->register_range(r.base, r.length)
                                : r.async->register_range(r.base, r.length);
  if (!registered) return registered;
  r.lost_at_fork = false;
  return {};
}

// Unarmed, as after unprotect(): writable and untracked.
void unarm(detail::RegionCore& r) {
  if (r.state) release_all(r, detail::kPageOff);
  r.armed = false;
  r.all_written = false;
}

// Async, in a forked child: every page counts as written since the fork (the child's writes
// were tracked by nobody); reported once, and armed again.
Result<void> collect_all_written(detail::RegionCore& r, std::vector<std::size_t>& pages) {
  if (Result<void> armed = r.async->write_protect(r.base, r.length, true); !armed) return armed;
  for (std::size_t i = 0; i < r.pages; ++i) pages.push_back(i);
  r.all_written = false;
  return {};
}

// What arming a region's pages needs held: for a Listener region, the listener running (and kept
// from stopping) until the pages are armed; nothing for the other modes.
Result<std::shared_lock<std::shared_mutex>> arming_session(const detail::RegionCore& r) {
  if (r.mode != TrapMode::Listener) return std::shared_lock<std::shared_mutex>{};
  return detail::listener_session();
}

// The protection change of the Signal and Listener modes.
Result<void> set_protection(detail::RegionCore& r, char* base, std::size_t length, bool on) {
  if (r.mode == TrapMode::Listener) return r.listener->write_protect(base, length, on);
  return os::mprotect(base, length, on ? PROT_READ : PROT_READ | PROT_WRITE, Step::RegionMprotect);
}

}  // namespace

const char* to_string(TrapMode mode) {
  switch (mode) {
    case TrapMode::Signal: return "Signal";
    case TrapMode::Listener: return "Listener";
    case TrapMode::Async: return "Async";
  }
  return "?";
}

TrapMode best_trap_mode() {
  TrapMode mode = TrapMode::Async;
  while (mode != TrapMode::Signal && !open_mode(mode)) mode = next_best(mode);
  static std::once_flag s_once;
  std::call_once(s_once, [&] { log::info("ProtectedRegion: best mode here is {}", to_string(mode)); });
  return mode;
}

Result<std::unique_ptr<ProtectedRegion>> ProtectedRegion::create(void* base, std::size_t length,
                                                                 RegionOptions options) {
  const std::size_t page = system_page_size();
  const auto addr = reinterpret_cast<std::uintptr_t>(base);
  if (base == nullptr || length == 0) {
    return fail(Step::BadArgument, 0, "ProtectedRegion: empty range (null base or zero length)");
  }
  if (addr % page != 0 || length % page != 0) {
    char msg[160];
    std::snprintf(msg, sizeof msg,
                  "ProtectedRegion: [%p, +%zu) is not page-aligned (page size %zu): both the base "
                  "and the length must be multiples of it",
                  base, length, page);
    return fail(Step::BadArgument, 0, msg);
  }
  if (addr + length < addr) return fail(Step::BadArgument, 0, "ProtectedRegion: range wraps");

  // Not value_or: that would probe every mode (opening userfaultfds) even when one is named.
  TrapMode mode = options.mode ? *options.mode : best_trap_mode();
  auto core = std::make_unique<detail::RegionCore>();
  for (;;) {
    Result<void> ok = open_mode(mode, core.get());
    if (ok) break;
    if (!options.fall_back) {
      Error e = ok.error();
      e.detail = std::string(to_string(mode)) + " mode: " + e.message();
      e.step = Step::ModeUnavailable;
      e.code = 0;
      return std::unexpected(std::move(e));
    }
    say_fallback_once(mode, next_best(mode), ok.error());
    mode = next_best(mode);
  }

  core->base = static_cast<char*>(base);
  core->length = length;
  core->page_size = page;
  core->pages = length / page;
  core->mode = mode;
  if (mode != TrapMode::Async) {
    core->state = std::make_unique<std::atomic<std::uint8_t>[]>(core->pages);
    release_all(*core, detail::kPageOff);
  }
  if (mode == TrapMode::Signal) {
    if (Result<void> r = install_fault_handlers(); !r) return std::unexpected(r.error());
    // Unmapped memory would only show at protect(): say it now, as the other modes do.
    if (msync(base, length, MS_ASYNC) != 0) {
      return fail(Step::BadArgument, errno, "ProtectedRegion: the range is not entirely mapped");
    }
  }
  // The table first: a fault that comes the moment the range is registered finds its region.
  if (Result<void> r = detail::add_region(core.get()); !r) return std::unexpected(r.error());
  Result<void> registered;
  if (mode == TrapMode::Listener) {
    registered = core->listener->register_range(base, length);
  } else if (mode == TrapMode::Async) {
    registered = core->async->register_range(base, length);
  }
  if (!registered) {
    detail::remove_region(core.get());
    return std::unexpected(registered.error());
  }
  return std::unique_ptr<ProtectedRegion>(new ProtectedRegion(std::move(core)));
}

ProtectedRegion::ProtectedRegion(std::unique_ptr<detail::RegionCore> core)
    : m_core(std::move(core)) {}

ProtectedRegion::~ProtectedRegion() {
  detail::RegionCore& r = *m_core;
  // Unprotected first, while the region is still in the table: a write racing the destruction
  // faults, finds its region, waits for the page and retries on a writable page. Then out of the
  // table (waiting out any handler or listener that holds it), then the kernel side lets go of
  // the range: a fault message still in flight finds no region, and the listener wakes its
  // thread, which meets a writable page (seed 000's race, here).
  (void)unprotect();
  detail::remove_region(&r);
  if (r.lost_at_fork) return;  // a forked child's: the registration is the parent's
  switch (r.mode) {
    case TrapMode::Signal:
      break;
    case TrapMode::Listener:
      r.listener->unregister_range(r.base, r.length);
      break;
    case TrapMode::Async:
      r.async->unregister_range(r.base, r.length);
      break;
  }
}

TrapMode ProtectedRegion::mode() const { return m_core->mode; }
void* ProtectedRegion::base() const { return m_core->base; }
std::size_t ProtectedRegion::length() const { return m_core->length; }
std::size_t ProtectedRegion::pages() const { return m_core->pages; }
std::size_t ProtectedRegion::page_size() const { return m_core->page_size; }
std::uint64_t ProtectedRegion::traps() const {
  return m_core->traps.load(std::memory_order_relaxed);
}

Result<void> ProtectedRegion::protect() {
  detail::RegionCore& r = *m_core;
  if (Result<void> attached = reattach_after_fork(r); !attached) {
    unarm(r);
    return attached;
  }
  if (r.mode == TrapMode::Async) {
    // Re-protecting also clears the written bits of what was written before.
    Result<void> armed = r.async->write_protect(r.base, r.length, true);
    r.armed = armed.has_value();
    r.all_written = false;
    return armed;
  }
  detail::SignalsBlocked blocked;  // before the session: see listener_session()
  Result<std::shared_lock<std::shared_mutex>> session = arming_session(r);
  if (!session) return std::unexpected(session.error());
  detail::claim_all_pages(r, nullptr);
  if (Result<void> armed = set_protection(r, r.base, r.length, true); !armed) {
    // Part of the range may be protected now: make it all writable again, and count every page
    // as written, so nothing written meanwhile is lost.
    (void)set_protection(r, r.base, r.length, false);
    release_all(r, detail::kPageOff);
    r.armed = false;
    return armed;
  }
  release_all(r, detail::kPageArmed);
  r.armed = true;
  return {};
}

Result<void> ProtectedRegion::unprotect() {
  detail::RegionCore& r = *m_core;
  if (r.lost_at_fork) {  // writable already: nothing traps in this forked child
    unarm(r);
    return {};
  }
  if (r.mode == TrapMode::Async) {
    Result<void> off = r.async->write_protect(r.base, r.length, false);
    if (off) r.armed = false;
    return off;
  }
  std::vector<std::uint8_t> was;
  was.reserve(r.pages);  // before any page is Busy: allocation may fail
  detail::SignalsBlocked blocked;
  detail::claim_all_pages(r, &was);
  if (Result<void> off = set_protection(r, r.base, r.length, false); !off) {
    for (std::size_t i = 0; i < r.pages; ++i) r.page(i).store(was[i], std::memory_order_release);
    return off;
  }
  release_all(r, detail::kPageOff);
  r.armed = false;
  return {};
}

Result<void> ProtectedRegion::collect_dirty(std::vector<std::size_t>& pages) {
  detail::RegionCore& r = *m_core;
  if (!r.armed) return {};  // nothing is tracked between unprotect() and protect()
  // Room for every page first: once pages are re-protected (Async: once the scan ran), failing to
  // report them would lose their writes.
  try {
    pages.reserve(pages.size() + r.pages);
  } catch (const std::bad_alloc&) {
    return fail(Step::TcrAllocate, ENOMEM, "collect_dirty: the page list");
  }
  // A forked child's inherited region: every page counts as written (Listener: they are Dirty;
  // Async: all_written), and arming them again needs a userfaultfd of the child's.
  if (Result<void> attached = reattach_after_fork(r); !attached) return attached;
  if (r.mode == TrapMode::Async) {
    if (r.all_written) return collect_all_written(r, pages);
    return r.async->collect(r.base, r.length, r.page_size, pages);
  }
  detail::SignalsBlocked blocked;  // before the session: see listener_session()
  Result<std::shared_lock<std::shared_mutex>> session = arming_session(r);
  if (!session) return std::unexpected(session.error());
  // Runs of Dirty pages are claimed (Dirty -> Busy), re-protected with one call per run and
  // reported. A write to a claimed page waits in its resolver until the run is Armed again,
  // then faults it Dirty for the next collect.
  // A Busy page is waited for: its fault may be resolved already and the writer running on (the
  // listener wakes the thread when it unprotects, before it marks the page Dirty).
  std::size_t i = 0;
  while (i < r.pages) {
    std::uint8_t now = r.page(i).load(std::memory_order_acquire);
    while (now == detail::kPageBusy) now = r.page(i).load(std::memory_order_acquire);
    if (now != detail::kPageDirty) {
      ++i;
      continue;
    }
    const std::size_t run_start = i;
    while (i < r.pages && detail::claim_page(r.page(i), detail::kPageDirty) == detail::kPageDirty) {
      ++i;
    }
    if (i == run_start) {  // lost the page to a racing change: look at it again
      continue;
    }
    char* first = r.base + run_start * r.page_size;
    const std::size_t bytes = (i - run_start) * r.page_size;
    if (Result<void> armed = set_protection(r, first, bytes, true); !armed) {
      // Part of the run may be protected now: Dirty must mean writable, or a write would fault
      // on a page its resolver takes for already writable.
      (void)set_protection(r, first, bytes, false);
      for (std::size_t j = run_start; j < i; ++j) {
        r.page(j).store(detail::kPageDirty, std::memory_order_release);
      }
      return armed;
    }
    for (std::size_t j = run_start; j < i; ++j) {
      pages.push_back(j);
      r.page(j).store(detail::kPageArmed, std::memory_order_release);
    }
  }
  return {};
}

Result<std::vector<std::size_t>> ProtectedRegion::collect_dirty() {
  std::vector<std::size_t> pages;
  if (Result<void> r = collect_dirty(pages); !r) return std::unexpected(r.error());
  return pages;
}

}  // namespace tcr
