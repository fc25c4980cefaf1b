// ProtectedRegion: mode choice and fall-back, and the per-page state machine (region_table.h)
// that the Signal and Listener modes share; Async defers to the kernel (async_tracker.h).
#include "exceptions/protected_region.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
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

// The kernel side of a mode, once open.
struct ModeBackend {
  detail::ListenerBackend* listener = nullptr;  // Listener mode
  detail::AsyncTracker* async = nullptr;        // Async mode
};

// Opens the mode's kernel side (once per process; later calls find it open) and, given `out`,
// says where it is. The error says why the mode is not available.
Result<void> open_mode(TrapMode mode, ModeBackend* out = nullptr) {
  detail::fork_participate_exceptions();  // before any kernel side is opened
  switch (mode) {
    case TrapMode::Signal: return {};
    case TrapMode::Listener: {
      Result<detail::ListenerBackend*> b = detail::listener_backend();
      if (!b) return std::unexpected(b.error());
      if (out != nullptr) out->listener = *b;
      return {};
    }
    case TrapMode::Async: {
      Result<detail::AsyncTracker*> a = detail::AsyncTracker::instance();
      if (!a) return std::unexpected(a.error());
      if (out != nullptr) out->async = *a;
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

// The caller's part of create(): the range, before anything is opened or allocated. A huge
// length costs no more than a small one to refuse: the memory map is read as a stream.
Result<detail::RangeLayout> check_range(void* base, std::size_t length, std::size_t page) {
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
  if (Result<void> room = detail::check_room_for(static_cast<char*>(base), length); !room) {
    return std::unexpected(room.error());
  }
  return detail::read_layout(static_cast<char*>(base), length);
}

// The mode asked for, or the best one available when falling back.
Result<TrapMode> choose_mode(const RegionOptions& options, ModeBackend& backend) {
  // Not value_or: that would probe every mode (opening userfaultfds) even when one is named.
  TrapMode mode = options.mode ? *options.mode : best_trap_mode();
  for (;;) {
    Result<void> ok = open_mode(mode, &backend);
    if (ok) return mode;
    if (!options.fall_back) {
      return fail(Step::ModeUnavailable, 0,
                  std::string(to_string(mode)) + " mode: " + ok.error().message());
    }
    say_fallback_once(mode, next_best(mode), ok.error());
    mode = next_best(mode);
  }
}

// A region a forked child inherited in the Listener or Async mode has no kernel side there
// (exceptions/fork_hooks.h): it is registered again, with the child's own userfaultfd, before
// anything arms its pages.
Result<void> reattach_after_fork(detail::RegionCore& r) {
  if (!r.lost_at_fork) return {};
  ModeBackend backend;
  if (Result<void> opened = open_mode(r.mode, &backend); !opened) return opened;
  r.listener = backend.listener;
  r.async = backend.async;
  Result<void> registered = r.mode == TrapMode::Listener
                                ? r.listener->register_range(r.base, r.length, r.layout)
                                : r.async->register_range(r.base, r.length);
  if (!registered) return registered;
  r.lost_at_fork = false;
  return {};
}

// Unarmed, as after unprotect(): writable and untracked.
void unarm(detail::RegionCore& r) {
  if (r.mode != TrapMode::Async) {
    for (std::size_t i = 0; i < r.pages; ++i) {
      r.page(i).store(detail::kPageOff, std::memory_order_release);
    }
  }
  r.armed = false;
  r.all_written = false;
}

// Async, in a forked child: every page counts as written since the fork (the child's writes
// were tracked by nobody); reported once, and armed again.
Result<void> collect_all_written(detail::RegionCore& r, std::vector<std::size_t>& pages) {
  try {
    pages.reserve(pages.size() + r.pages);  // before re-arming: the writes cannot be lost then
  } catch (const std::bad_alloc&) {
    return fail(Step::RegionAllocate, ENOMEM, "collect_dirty: the page list");
  }
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
  // Each part keeps its protection but PROT_WRITE: an RWX heap stays executable while armed.
  return detail::mprotect_spans(r.layout, base, length, on);
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
  // Every check of the caller's input comes first; what a region costs (one state byte per page)
  // is spent only on a range that passed them.
  Result<detail::RangeLayout> layout = check_range(base, length, page);
  if (!layout) return std::unexpected(layout.error());
  ModeBackend backend;
  Result<TrapMode> chosen = choose_mode(options, backend);
  if (!chosen) return std::unexpected(chosen.error());
  const TrapMode mode = *chosen;

  // The owner first, so that whatever follows is released with it on any failure: a region
  // without a core is destroyed as nothing.
  std::unique_ptr<ProtectedRegion> region(new (std::nothrow) ProtectedRegion(nullptr));
  std::unique_ptr<detail::RegionCore> core(new (std::nothrow) detail::RegionCore);
  if (!region || !core) return fail(Step::RegionAllocate, ENOMEM, "the region");
  core->base = static_cast<char*>(base);
  core->length = length;
  core->page_size = page;
  core->pages = length / page;
  core->mode = mode;
  core->layout = std::move(*layout);
  core->listener = backend.listener;
  core->async = backend.async;
  if (mode != TrapMode::Async) {
    Result<detail::PageStates> states = detail::PageStates::map(core->pages);  // all Off
    if (!states) return std::unexpected(states.error());
    core->state = std::move(*states);
  }
  if (mode == TrapMode::Signal) {
    if (Result<void> r = install_fault_handlers(); !r) return std::unexpected(r.error());
  }
  // The table first: a fault that comes the moment the range is registered finds its region.
  if (Result<void> r = detail::add_region(core.get()); !r) return std::unexpected(r.error());
  Result<void> registered;
  if (mode == TrapMode::Listener) {
    registered = core->listener->register_range(base, length, core->layout);
  } else if (mode == TrapMode::Async) {
    registered = core->async->register_range(base, length);
  }
  if (!registered) {
    detail::remove_region(core.get());
    return std::unexpected(registered.error());
  }
  region->m_core = std::move(core);
  return region;
}

ProtectedRegion::ProtectedRegion(std::unique_ptr<detail::RegionCore> core)
    : m_core(std::move(core)) {}

ProtectedRegion::~ProtectedRegion() {
  if (!m_core) return;  // create() failed before the region was whole
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
  detail::claim_all_pages(r);
  if (Result<void> armed = set_protection(r, r.base, r.length, true); !armed) {
    // Part of the range may be protected now: make it all writable again, untracked.
    (void)set_protection(r, r.base, r.length, false);
    detail::settle_all_pages(r, [](std::uint8_t) { return detail::kPageOff; });
    r.armed = false;
    return armed;
  }
  detail::settle_all_pages(r, [](std::uint8_t) { return detail::kPageArmed; });
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
  detail::SignalsBlocked blocked;
  detail::claim_all_pages(r);
  if (Result<void> off = set_protection(r, r.base, r.length, false); !off) {
    detail::settle_all_pages(r, [](std::uint8_t was) { return was; });
    return off;
  }
  detail::settle_all_pages(r, [](std::uint8_t) { return detail::kPageOff; });
  r.armed = false;
  return {};
}

Result<void> ProtectedRegion::collect_dirty(std::vector<std::size_t>& pages) {
  detail::RegionCore& r = *m_core;
  if (!r.armed) return {};  // nothing is tracked between unprotect() and protect()
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
  // Room in `pages` for a run is made before the run is claimed: a failure to allocate then
  // leaves its pages Dirty, reported next time, and nothing allocates while pages are Busy.
  std::size_t i = 0;
  while (i < r.pages) {
    std::uint8_t now = r.page(i).load(std::memory_order_acquire);
    while (detail::is_busy(now)) now = r.page(i).load(std::memory_order_acquire);
    if (now != detail::kPageDirty) {
      ++i;
      continue;
    }
    std::size_t run_end = i + 1;
    while (run_end < r.pages &&
           r.page(run_end).load(std::memory_order_acquire) == detail::kPageDirty) {
      ++run_end;
    }
    if (Result<void> room = detail::make_room(pages, run_end - i); !room) return room;
    const std::size_t run_start = i;
    while (i < run_end && detail::claim_page(r.page(i), detail::kPageDirty) == detail::kPageDirty) {
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
