#include "exceptions/mach_exception_rights.h"

#include <cstring>
#include <string>
#include <utility>

// Sources: XNU (apple-oss-distributions/xnu) osfmk/kern/exception.c (exception_deliver: which
// behaviors put thread and task rights in the message; how a reply's RetCode and new_state are
// used), osfmk/mach/mach_exc.defs and the MIG output for it (the structures and the
// __MIG_check__Request__ checks mirrored below), osfmk/mach/message.h (header bits, descriptors).

namespace tcr::mach {

namespace {

// <mach/message.h>
constexpr std::uint32_t kMsghBitsComplex = 0x80000000u;     // MACH_MSGH_BITS_COMPLEX
constexpr std::uint32_t kMsghBitsRemoteMask = 0x0000001fu;  // MACH_MSGH_BITS_REMOTE_MASK
constexpr std::uint32_t kMsgTypePortSend = 17;              // MACH_MSG_TYPE_PORT_SEND
constexpr std::uint32_t kMsgTypePortSendOnce = 18;          // MACH_MSG_TYPE_PORT_SEND_ONCE
constexpr std::uint32_t kMsgPortDescriptor = 0;             // MACH_MSG_PORT_DESCRIPTOR

// mach_msg_header_t: bits, size, remote port, local port, voucher port, id.
constexpr std::size_t kHeaderSize = 24;
constexpr std::size_t kBitsAt = 0;
constexpr std::size_t kSizeAt = 4;
constexpr std::size_t kRemoteAt = 8;
constexpr std::size_t kLocalAt = 12;
constexpr std::size_t kVoucherAt = 16;
constexpr std::size_t kIdAt = 20;
// The identity request's body (descriptor count) and its two 12-byte mach_msg_port_descriptor_t:
// name, pad1, then a word holding pad2:16, disposition:8, type:8.
constexpr std::size_t kBodyAt = kHeaderSize;
constexpr std::size_t kThreadDescriptorAt = kBodyAt + 4;
constexpr std::size_t kTaskDescriptorAt = kThreadDescriptorAt + 12;
// Where the NDR record starts: right after the header, or after the identity's descriptors.
constexpr std::size_t kStateNdrAt = kHeaderSize;
constexpr std::size_t kIdentityNdrAt = kTaskDescriptorAt + 12;
constexpr std::size_t kNdrSize = 8;
// mig_reply_error_t (header, NDR, RetCode), and the full reply's fixed part (+ flavor, count).
constexpr std::size_t kReplyErrorSize = kHeaderSize + kNdrSize + 4;
constexpr std::size_t kReplyFixedSize = kReplyErrorSize + 8;

static_assert(kMaxReplySize == kReplyFixedSize + 4 * kThreadStateMax);
static_assert(kMaxRequestSize == kIdentityNdrAt + kNdrSize + 16 + 2 * 8 + 4 * kThreadStateMax);

std::uint32_t load32(std::span<const std::byte> m, std::size_t at) {
  std::uint32_t v;
  std::memcpy(&v, m.data() + at, sizeof v);
  return v;
}

std::int64_t load64(std::span<const std::byte> m, std::size_t at) {
  std::int64_t v;
  std::memcpy(&v, m.data() + at, sizeof v);
  return v;
}

void store32(std::span<std::byte> m, std::size_t at, std::uint32_t v) {
  std::memcpy(m.data() + at, &v, sizeof v);
}

Result<ExceptionRequest> bad(std::string what) {
  return fail(Step::BadArgument, kMigBadArguments, "mach_exc request: " + std::move(what));
}

// The identity request's port descriptor at `at`: the name, if it is a port descriptor carrying
// a send right, as the kernel sends them.
bool port_descriptor(std::span<const std::byte> m, std::size_t at, PortName* name) {
  const std::uint32_t word = load32(m, at + 8);
  const std::uint32_t disposition = (word >> 16) & 0xff;
  const std::uint32_t type = word >> 24;
  if (type != kMsgPortDescriptor || disposition != kMsgTypePortSend) return false;
  *name = load32(m, at);
  return true;
}

}  // namespace

// --- Exception ports ---

Result<PortName> create_exception_port(PortSpace& space) {
  PortName port = kPortNull;
  if (KernReturn kr = space.allocate_receive(&port); kr != kSuccess) {
    return fail(Step::MachAllocate, kr, "receive right for an exception port");
  }
  if (KernReturn kr = space.insert_send_right(port); kr != kSuccess) {
    // No send right exists yet, so destroying the receive right leaves no name at all.
    (void)space.mod_refs(port, Right::Receive, -1);
    return fail(Step::MachInsertRight, kr, "send right for exception " + port_detail(port));
  }
  return port;
}

Result<void> destroy_exception_port(PortSpace& space, PortName port) {
  Result<void> result;
  if (KernReturn kr = space.deallocate(port); kr != kSuccess) {
    result = fail(Step::MachDeallocate, kr, "send right of exception " + port_detail(port));
  }
  if (KernReturn kr = space.mod_refs(port, Right::Receive, -1); kr != kSuccess && result) {
    result = fail(Step::MachModRefs, kr, "receive right of exception " + port_detail(port));
  }
  return result;
}

// --- Rights carried by messages ---

Result<void> release_exception_rights(PortSpace& space, ExceptionBehavior behavior,
                                      const ExceptionRights& rights, RightsDisposal disposal) {
  if (behavior == ExceptionBehavior::State) {
    if (rights.thread != kPortNull || rights.task != kPortNull) {
      return fail(Step::BadArgument, 0,
                  "an EXCEPTION_STATE message carries no port rights; not releasing thread " +
                      port_detail(rights.thread) + ", task " + port_detail(rights.task));
    }
    return {};
  }
  if (disposal == RightsDisposal::Keep) return {};
  Result<void> result;
  const std::pair<PortName, const char*> carried[] = {{rights.thread, "thread"},
                                                      {rights.task, "task"}};
  for (const auto& [name, what] : carried) {
    if (KernReturn kr = space.deallocate(name); kr != kSuccess && result) {
      result = fail(Step::MachDeallocate, kr,
                    std::string(what) + " right of an exception message, " + port_detail(name));
    }
  }
  return result;
}

// --- The wire format ---

Result<ExceptionRequest> parse_exception_request(std::span<const std::byte> message) {
  if (message.size() < kHeaderSize) return bad("shorter than a message header");
  const std::uint32_t bits = load32(message, kBitsAt);
  const std::size_t size = load32(message, kSizeAt);
  if (size > message.size()) return bad("msgh_size past the received bytes");

  ExceptionRequest r;
  r.id = static_cast<std::int32_t>(load32(message, kIdAt));
  std::size_t ndr_at = 0;
  if (r.id == kRaiseStateId) {
    r.behavior = ExceptionBehavior::State;
    ndr_at = kStateNdrAt;
    if ((bits & kMsghBitsComplex) != 0) return bad("mach_exception_raise_state is not complex");
  } else if (r.id == kRaiseStateIdentityId) {
    r.behavior = ExceptionBehavior::StateIdentity;
    ndr_at = kIdentityNdrAt;
    if ((bits & kMsghBitsComplex) == 0) return bad("raise_state_identity must be complex");
  } else {
    return bad("msgh_id " + std::to_string(r.id) + " is no mach_exception_raise_state(_identity)");
  }
  // The fixed part (no codes, no state) must be there before any count can be read.
  const std::size_t fixed = ndr_at + kNdrSize + 16;
  if (size < fixed) return bad("shorter than its fixed part");
  if (size > kMaxRequestSize) return bad("longer than THREAD_STATE_MAX allows");

  r.reply_type = bits & kMsghBitsRemoteMask;
  if (r.reply_type != kMsgTypePortSendOnce) return bad("the reply right is not send-once");
  r.reply_port = load32(message, kRemoteAt);
  r.port = load32(message, kLocalAt);
  if (r.behavior == ExceptionBehavior::StateIdentity) {
    if (load32(message, kBodyAt) != 2) return bad("raise_state_identity carries two ports");
    if (!port_descriptor(message, kThreadDescriptorAt, &r.rights.thread) ||
        !port_descriptor(message, kTaskDescriptorAt, &r.rights.task)) {
      return bad("thread and task must be port descriptors with send rights");
    }
  }
  std::memcpy(r.ndr.data(), message.data() + ndr_at, kNdrSize);
  r.exception = static_cast<std::int32_t>(load32(message, ndr_at + 8));
  r.code_count = load32(message, ndr_at + 12);
  if (r.code_count > r.code.size()) return bad("codeCnt > 2");
  if (size < fixed + 8 * r.code_count) return bad("shorter than its codes");
  for (std::uint32_t i = 0; i < r.code_count; ++i) r.code[i] = load64(message, ndr_at + 16 + 8 * i);
  const std::size_t flavor_at = ndr_at + 16 + 8 * r.code_count;
  r.flavor = static_cast<std::int32_t>(load32(message, flavor_at));
  const std::uint32_t state_count = load32(message, flavor_at + 4);
  if (state_count > kThreadStateMax) return bad("old_stateCnt > THREAD_STATE_MAX");
  if (size != flavor_at + 8 + 4 * std::size_t{state_count}) {
    return bad("msgh_size does not match codeCnt and old_stateCnt");
  }
  r.state.resize(state_count);
  std::memcpy(r.state.data(), message.data() + flavor_at + 8, 4 * std::size_t{state_count});
  return r;
}

std::size_t encode_exception_reply(const ExceptionRequest& request, KernReturn result,
                                   std::span<std::byte> out) {
  const bool full = result == kSuccess;
  const std::size_t size = full ? kReplyFixedSize + 4 * request.state.size() : kReplyErrorSize;
  if (out.size() < size) return 0;
  // MACH_MSGH_BITS(MACH_MSGH_BITS_REMOTE(request bits), 0): the send-once right moves back.
  store32(out, kBitsAt, request.reply_type);
  store32(out, kSizeAt, static_cast<std::uint32_t>(size));
  store32(out, kRemoteAt, request.reply_port);
  store32(out, kLocalAt, kPortNull);
  store32(out, kVoucherAt, kPortNull);
  store32(out, kIdAt, static_cast<std::uint32_t>(request.id + kReplyIdOffset));
  std::memcpy(out.data() + kHeaderSize, request.ndr.data(), kNdrSize);
  store32(out, kHeaderSize + kNdrSize, static_cast<std::uint32_t>(result));
  if (full) {
    store32(out, kReplyErrorSize, static_cast<std::uint32_t>(request.flavor));
    store32(out, kReplyErrorSize + 4, static_cast<std::uint32_t>(request.state.size()));
    std::memcpy(out.data() + kReplyFixedSize, request.state.data(), 4 * request.state.size());
  }
  return size;
}

}  // namespace tcr::mach
