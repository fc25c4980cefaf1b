// The Darwin listener's messages (listener_darwin.h): receiving exception messages on the port
// set, admitting a bad access on a thread of ours, answering each one (the reply lets the faulting
// thread go), and the registered ranges, whose blocked threads are answered as soon as their pages
// are writable. Compiled only on Apple, and written where it could not be compiled (Linux): the
// message layout it relies on lives in mach_exception_rights.{h,cpp}, which are portable and
// tested on MachModel (tests/mach_exception_test.cpp); the static_asserts below tie that code's
// numbers to the SDK's. Mach calls used, as <mach/*.h> declares them:
//   mach_msg(header, options, send_size, rcv_size, rcv_name, timeout, notify),
//   mach_msg_destroy(header).
#include <mach/mach.h>
#include <mach/mig_errors.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "exceptions/listener_backend.h"
#include "exceptions/listener_darwin.h"
#include "exceptions/mach_exception_rights.h"
#include "exceptions/region_mappings.h"
#include "runtime/error.h"
#include "runtime/mutex.h"
#include "threads/tcr.h"

namespace tcr::detail::darwin_listener {
namespace {

// request_stop's message to the wake port; any id outside mach_exc's range would do.
constexpr mach_msg_id_t kWakeId = 0x74637200;  // 'tcr\0'

// The layout MIG generates from <mach/mach_exc.defs> (the SDK ships the .defs, not the header),
// mirrored to check mach_exception_rights.cpp's offsets against the SDK's types.
#pragma pack(push, 4)
struct RaiseStateRequest {
  mach_msg_header_t Head;
  NDR_record_t NDR;
  exception_type_t exception;
  mach_msg_type_number_t codeCnt;
  int64_t code[2];
  int flavor;
  mach_msg_type_number_t old_stateCnt;
  natural_t old_state[THREAD_STATE_MAX];
};
struct RaiseStateIdentityRequest {
  mach_msg_header_t Head;
  mach_msg_body_t msgh_body;
  mach_msg_port_descriptor_t thread;
  mach_msg_port_descriptor_t task;
  NDR_record_t NDR;
  exception_type_t exception;
  mach_msg_type_number_t codeCnt;
  int64_t code[2];
  int flavor;
  mach_msg_type_number_t old_stateCnt;
  natural_t old_state[THREAD_STATE_MAX];
};
struct RaiseStateReply {
  mach_msg_header_t Head;
  NDR_record_t NDR;
  kern_return_t RetCode;
  int flavor;
  mach_msg_type_number_t new_stateCnt;
  natural_t new_state[THREAD_STATE_MAX];
};
#pragma pack(pop)

static_assert(sizeof(mach_msg_header_t) == 24);
static_assert(sizeof(NDR_record_t) == 8);
static_assert(sizeof(mach_msg_port_descriptor_t) == 12);
static_assert(sizeof(mig_reply_error_t) == 36);
static_assert(offsetof(RaiseStateRequest, NDR) == 24);
static_assert(offsetof(RaiseStateRequest, code) == 40);
static_assert(offsetof(RaiseStateRequest, flavor) == 56);
static_assert(offsetof(RaiseStateRequest, old_state) == 64);
static_assert(offsetof(RaiseStateIdentityRequest, thread) == 28);
static_assert(offsetof(RaiseStateIdentityRequest, task) == 40);
static_assert(offsetof(RaiseStateIdentityRequest, NDR) == 52);
static_assert(offsetof(RaiseStateIdentityRequest, code) == 68);
static_assert(offsetof(RaiseStateIdentityRequest, flavor) == 84);
static_assert(offsetof(RaiseStateIdentityRequest, old_state) == 92);
static_assert(offsetof(RaiseStateReply, RetCode) == 32);
static_assert(offsetof(RaiseStateReply, new_state) == 44);
static_assert(THREAD_STATE_MAX <= mach::kThreadStateMax);
static_assert(sizeof(RaiseStateIdentityRequest) <= mach::kMaxRequestSize);
static_assert(sizeof(RaiseStateReply) <= mach::kMaxReplySize);
static_assert(mach::kExceptionState == EXCEPTION_STATE);
static_assert(mach::kExceptionStateIdentity == EXCEPTION_STATE_IDENTITY);
static_assert(mach::kMachExceptionCodes == MACH_EXCEPTION_CODES);
static_assert(mach::kExcBadAccess == EXC_BAD_ACCESS);
static_assert(mach::kMigBadArguments == MIG_BAD_ARGUMENTS);
static_assert(mach::kFailure == KERN_FAILURE);
static_assert(MACH_MSG_TYPE_PORT_SEND_ONCE == 18 && MACH_MSG_TYPE_PORT_SEND == 17);

Range range_of(void* base, std::size_t length) {
  const auto low = reinterpret_cast<std::uintptr_t>(base);
  return {low, low + length};
}

}  // namespace

// --- Ranges ---

Result<void> DarwinListener::register_range(void* base, std::size_t length,
                                            const RangeLayout& layout) {
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  Range r = range_of(base, length);
  if (length == 0 || r.low % page != 0 || length % page != 0) {
    return fail(Step::BadArgument, 0, "register_range: the range must be whole pages");
  }
  r.layout = &layout;
  MutexLock lock(m_mutex);
  m_ranges.push_back(r);
  return {};
}

// The layout of the registered range holding [base, base + length), or null.
const RangeLayout* DarwinListener::layout_of(const Range& r) {
  MutexLock lock(m_mutex);
  for (const Range& outer : m_ranges) {
    if (r.within(outer)) return outer.layout;
  }
  return nullptr;
}

// Writable first, then out of the table: a message received in between still finds its range
// (a Stale fault for the listener); one received after is Foreign, and its KERN_FAILURE reply
// sends it to the signal path, which finds the page writable and lets the thread retry.
void DarwinListener::unregister_range(void* base, std::size_t length) {
  const Range r = range_of(base, length);
  if (const RangeLayout* layout = layout_of(r)) {
    if (Result<void> made = mprotect_spans(*layout, static_cast<char*>(base), length, false);
        !made) {
      log_error(made.error());
    }
  }
  {
    MutexLock lock(m_mutex);
    std::erase_if(m_ranges, [&](const Range& registered) { return registered.within(r); });
  }
  release_blocked_in(r);
}

Result<void> DarwinListener::write_protect(void* base, std::size_t length, bool on) {
  const Range r = range_of(base, length);
  const RangeLayout* layout = layout_of(r);
  if (layout == nullptr) {
    return fail_fixed(Step::BadArgument, 0, "write_protect: the range is not registered");
  }
  // Each part keeps its protection but PROT_WRITE (an RWX heap stays executable while armed).
  if (Result<void> made = mprotect_spans(*layout, static_cast<char*>(base), length, on); !made) {
    return made;
  }
  if (!on) release_blocked_in(r);
  return {};
}

// Once the range's pages are writable, every thread blocked on one of them goes: those whose
// message the listener holds, and those whose message is still queued, which on Darwin would
// otherwise wait for a listener that may be stopped (on Linux unprotecting wakes them by
// itself). Draining the queues takes other threads' messages too: they wait in m_pending for
// receive(), which is woken to report them.
void DarwinListener::release_blocked_in(const Range& range) {
  const bool wake_receiver = drain_queued();
  for (Pending& p : take_pending(range)) reply(p.request, KERN_SUCCESS);
  if (wake_receiver) send_wake();
}

std::vector<Pending> DarwinListener::take_pending(const Range& range) {
  std::vector<Pending> taken;
  MutexLock lock(m_mutex);
  for (auto it = m_pending.begin(); it != m_pending.end();) {
    if (range.contains(reinterpret_cast<std::uintptr_t>(it->second.fault.address))) {
      taken.push_back(std::move(it->second));
      it = m_pending.erase(it);
    } else {
      ++it;
    }
  }
  return taken;
}

// --- Messages ---

Result<std::size_t> DarwinListener::receive(FaultMessage* out, std::size_t max, bool* stopped) {
  *stopped = false;
  auto* header = reinterpret_cast<mach_msg_header_t*>(m_buffer);
  std::size_t n = 0;
  for (;;) {
    n += report(out + n, max - n);
    if (n == max) return n;
    // A stop is taken once, so the same backend serves the listener when it starts again;
    // messages already taken are returned first (their replies are owed), the stop next time.
    if (m_stop.load(std::memory_order_acquire)) {
      if (n > 0) return n;
      m_stop.store(false, std::memory_order_relaxed);
      *stopped = true;
      return 0;
    }
    // Block for the first message only; then take what is already queued.
    const bool block = n == 0;
    const mach_msg_return_t mr =
        mach_msg(header, MACH_RCV_MSG | (block ? 0 : MACH_RCV_TIMEOUT), 0, kBufferSize, m_port_set,
                 block ? MACH_MSG_TIMEOUT_NONE : 0, MACH_PORT_NULL);
    if (mr == MACH_RCV_TIMED_OUT) return n;
    // Too large: without MACH_RCV_LARGE the kernel has destroyed it (no exception message is).
    if (mr == MACH_RCV_INTERRUPTED || mr == MACH_RCV_TOO_LARGE) continue;
    if (mr != MACH_MSG_SUCCESS) {
      if (n > 0) return n;
      return fail(Step::MachMsg, mr, "receiving on the exception listener's port set");
    }
    if (header->msgh_local_port == m_wake) {
      // No rights in it. The loop's top sees a stop, or messages another thread drained; a wake
      // left over from a stop already taken finds neither, and receiving goes on.
      mach_msg_destroy(header);
      continue;
    }
    (void)admit(m_buffer);
  }
}

// Hands out messages admitted but not reported yet, oldest first.
std::size_t DarwinListener::report(FaultMessage* out, std::size_t room) {
  MutexLock lock(m_mutex);
  std::size_t k = 0;
  while (k < room && !m_unreported.empty()) {
    const std::uint64_t token = m_unreported.front();
    m_unreported.pop_front();
    auto it = m_pending.find(token);
    if (it == m_pending.end()) continue;  // answered meanwhile (its range became writable)
    out[k++] = it->second.fault;
  }
  return k;
}

// Any thread: takes every message queued on the port set now, without blocking, into m_pending.
// Answers true when receive() has something to see: messages for it, or a wake taken from it.
bool DarwinListener::drain_queued() {
  alignas(8) std::byte buffer[kBufferSize];
  auto* header = reinterpret_cast<mach_msg_header_t*>(buffer);
  bool wake_receiver = false;
  for (;;) {
    const mach_msg_return_t mr = mach_msg(header, MACH_RCV_MSG | MACH_RCV_TIMEOUT, 0, kBufferSize,
                                          m_port_set, 0, MACH_PORT_NULL);
    if (mr == MACH_RCV_INTERRUPTED || mr == MACH_RCV_TOO_LARGE) continue;
    if (mr != MACH_MSG_SUCCESS) return wake_receiver;  // MACH_RCV_TIMED_OUT: queues empty
    if (header->msgh_local_port == m_wake) {
      mach_msg_destroy(header);
      wake_receiver = true;  // it was meant for receive(): send_wake() puts one back
      continue;
    }
    if (admit(buffer)) wake_receiver = true;
  }
}

// A received message joins m_pending (receive() reports it; the listener owes it a resume) when
// it is a bad access on a thread of ours; anything else is answered here and now.
bool DarwinListener::admit(std::span<std::byte> message) {
  Result<mach::ExceptionRequest> request = mach::parse_exception_request(message);
  if (!request) {
    log_error(request.error());
    // Releases its reply right and any port it carried.
    mach_msg_destroy(reinterpret_cast<mach_msg_header_t*>(message.data()));
    return false;
  }
  UniqueLock lock(m_mutex);
  auto it = m_by_port.find(request->port);
  if (it == m_by_port.end() || request->exception != EXC_BAD_ACCESS || request->code_count != 2) {
    lock.unlock();
    reply(*request, KERN_FAILURE);
    return false;
  }
  Tcr* tcr = it->second;
  Pending p;
  p.fault.address = reinterpret_cast<void*>(static_cast<std::uintptr_t>(request->code[1]));
  p.fault.tid = tcr->tid();
  p.fault.tcr = tcr;
  p.fault.token = ++m_next_token;
  p.request = std::move(*request);
  m_unreported.push_back(p.fault.token);
  m_pending.emplace(p.fault.token, std::move(p));
  return true;
}

// Resolved and Stale: the page is writable, the thread retries its write. Foreign: not ours, the
// kernel passes the exception on.
void DarwinListener::resume(const FaultMessage& message, FaultOutcome outcome) {
  std::optional<Pending> p;
  {
    MutexLock lock(m_mutex);
    auto it = m_pending.find(message.token);
    if (it == m_pending.end()) return;  // answered already: its range became writable
    p = std::move(it->second);
    m_pending.erase(it);
  }
  reply(p->request, outcome == FaultOutcome::Foreign ? KERN_FAILURE : KERN_SUCCESS);
}

// Sends the reply, which moves the kernel's send-once reply right back, and then, the message
// being handled, releases the rights it carried (none for EXCEPTION_STATE).
void DarwinListener::reply(mach::ExceptionRequest& request, kern_return_t result) {
  alignas(8) std::byte buffer[mach::kMaxReplySize];
  const std::size_t size = mach::encode_exception_reply(request, result, buffer);
  auto* header = reinterpret_cast<mach_msg_header_t*>(buffer);
  const mach_msg_return_t mr = mach_msg(header, MACH_SEND_MSG, static_cast<mach_msg_size_t>(size),
                                        0, MACH_PORT_NULL, MACH_MSG_TIMEOUT_NONE, MACH_PORT_NULL);
  if (mr != MACH_MSG_SUCCESS) {
    log_kr("replying to an exception message", mr);
    // A send that fails at its destination leaves the reply right with us: when the faulting
    // thread was terminated meanwhile, it is a dead name now. Release it then, and only then (a
    // live right under that name would be someone else's).
    mach::Urefs dead = 0;
    if (m_space.get_refs(request.reply_port, mach::Right::DeadName, &dead) == KERN_SUCCESS &&
        dead > 0) {
      (void)m_space.deallocate(request.reply_port);
    }
  }
  if (Result<void> r = mach::release_exception_rights(m_space, request.behavior, request.rights);
      !r) {
    log_error(r.error());
  }
  request.rights = {};
}

void DarwinListener::request_stop() {
  m_stop.store(true, std::memory_order_release);
  send_wake();
}

void DarwinListener::send_wake() {
  mach_msg_header_t wake{};
  wake.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, 0);  // our send uref stays
  wake.msgh_size = sizeof wake;
  wake.msgh_remote_port = m_wake;
  wake.msgh_local_port = MACH_PORT_NULL;
  wake.msgh_id = kWakeId;
  // Never blocks: with the queue full, a wake is already waiting for receive().
  const mach_msg_return_t mr = mach_msg(&wake, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof wake, 0,
                                        MACH_PORT_NULL, 0, MACH_PORT_NULL);
  if (mr != MACH_MSG_SUCCESS && mr != MACH_SEND_TIMED_OUT) log_kr("waking the listener", mr);
}

}  // namespace tcr::detail::darwin_listener
