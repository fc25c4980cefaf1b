// What tcr.h's opaque handles are, and how a tcr_thread carries a ThreadRef. Internal to capi/.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <vector>

#include "capi/internal.h"
#include "exceptions/protected_region.h"
#include "threads/interrupt.h"
#include "threads/semaphore.h"
#include "threads/thread_manager.h"

struct tcr_manager {
  std::unique_ptr<tcr::ThreadManager> manager;
};

struct tcr_ticket {
  std::optional<tcr::InterruptTicket> ticket;  // set once tcr_interrupt queued the closure
};

struct tcr_semaphore {
  tcr::Semaphore semaphore;
  explicit tcr_semaphore(std::uint32_t initial) : semaphore(initial) {}
};

struct tcr_region {
  std::unique_ptr<tcr::ProtectedRegion> region;
  std::vector<std::size_t> dirty;  // what the last tcr_region_collect_dirty answered
};

namespace tcr::capi {

static_assert(sizeof(std::uintptr_t) == sizeof(std::uint64_t),
              "tcr_thread keeps a 64-bit manager serial in a uintptr_t");

// tcr_self is tcr::Tcr under another name: a C caller never sees inside either.
inline tcr_self* to_self(Tcr* t) { return reinterpret_cast<tcr_self*>(t); }
inline tcr_self* to_self(Tcr& t) { return reinterpret_cast<tcr_self*>(&t); }
inline const tcr_self* to_self(const Tcr& t) { return reinterpret_cast<const tcr_self*>(&t); }
inline Tcr* from_self(tcr_self* s) { return reinterpret_cast<Tcr*>(s); }
inline const Tcr* from_self(const tcr_self* s) { return reinterpret_cast<const Tcr*>(s); }

// opaque_[0] is the record, opaque_[1] the manager's serial mixed with a checksum of the record
// and the id: a tcr_thread that no call handed out (zeroed, or made up) decodes to a serial no
// manager has, which the manager refuses (BadArgument) before it touches the record.
inline std::uint64_t thread_check(std::uintptr_t record, std::uint64_t id) {
  std::uint64_t x = (static_cast<std::uint64_t>(record) ^ (id * 0x9E3779B97F4A7C15ull)) + 1;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

inline tcr_thread to_thread(const ThreadRef& ref) {
  const auto record = reinterpret_cast<std::uintptr_t>(ref.tcr_unchecked());
  tcr_thread out{};
  out.id = ref.id();
  out.opaque_[0] = record;
  out.opaque_[1] = static_cast<std::uintptr_t>(ref.manager_serial() ^ thread_check(record, ref.id()));
  return out;
}

inline ThreadRef from_thread(const tcr_thread& thread) {
  const std::uintptr_t record = thread.opaque_[0];
  const std::uint64_t serial = thread.opaque_[1] ^ thread_check(record, thread.id);
  return ThreadRef::from_parts(reinterpret_cast<Tcr*>(record), thread.id, serial);
}

// The manager a call names, or BadArgument.
#define TCR_NEED_MANAGER(m, op) \
  if ((m) == nullptr || !(m)->manager) return bad_argument(op ": NULL tcr_manager")

// A C timeout (nanoseconds, unsigned) as a C++ duration, saturated at the largest one.
inline std::chrono::nanoseconds nanoseconds_of(std::uint64_t ns) {
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  return std::chrono::nanoseconds(static_cast<std::int64_t>(ns > kMax ? kMax : ns));
}

// Output structs are versioned like option structs: the caller's .size says how much it has room
// for, at least min_size (the first version's); the library writes that much of its own, and
// never more. Checked first (output_fits), before any work is done for the caller.
template <class T>
bool output_fits(const T* given, std::size_t min_size) {
  return given != nullptr && given->size >= min_size;
}
template <class T>
void write_versioned(T* given, const T& full) {
  const std::size_t size = given->size < sizeof(T) ? given->size : sizeof(T);
  std::memcpy(static_cast<void*>(given), &full, size);
  given->size = size;
}

// Runs an entry point's body: C++ exceptions never cross into C. bad_alloc is TcrAllocate ENOMEM
// (the C++ API reports most allocation failures itself; this catches the rest, such as copying
// a hook into a std::function).
template <class Body>
tcr_status guarded(const char* op, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail_with(Error{Step::TcrAllocate, ENOMEM, {}, nullptr, op});
  } catch (...) {
    return fail_with(Error{Step::ThreadThrew, 0, {}, nullptr, op});
  }
}

}  // namespace tcr::capi
