// The port rights of the Darwin exception listener, written once against PortSpace
// (runtime/mach_ports.h) so the accounting tested on MachModel is the code that runs on Darwin
// (listener_*_darwin.cpp, on XnuPortSpace): a thread's exception port (made, and later released
// right by right, without ever leaving a dead name), and the rights an exception message carries
// (seed 001's second leak), plus the mach_exc wire format, parsed by hand (no MIG) and portable so
// it is tested here too. Stateless functions, as thread-safe as the PortSpace they are given.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "runtime/error.h"
#include "runtime/mach_ports.h"

namespace tcr::mach {

// --- A thread's exception port: one name holding the receive right and one send uref ---

// mach_port_allocate(RECEIVE), then mach_port_insert_right(MAKE_SEND) on the same name (the send
// right is what thread_set_exception_ports copies into the kernel). Errors: Step::MachAllocate,
// Step::MachInsertRight, with the kern_return_t; nothing is left behind (a receive right already
// made is destroyed again).
Result<PortName> create_exception_port(PortSpace& space);

// Releases both rights create_exception_port made, each exactly once: the send uref first, then
// the receive right, which destroys the port (and any message still queued on it). Never a dead
// name on the way: destroying the receive right first would turn the name, which still holds the
// send uref, into a dead name until that uref is released. When a release fails the other is
// still made, so nothing of the port leaks; the first failure is returned (Step::MachDeallocate
// or Step::MachModRefs, with the kern_return_t and the port name).
Result<void> destroy_exception_port(PortSpace& space, PortName port);

// --- The rights an exception message carries ---

// exception_behavior_t values of <mach/exception_types.h>.
inline constexpr std::uint32_t kExceptionState = 2;                // EXCEPTION_STATE
inline constexpr std::uint32_t kExceptionStateIdentity = 3;        // EXCEPTION_STATE_IDENTITY
inline constexpr std::uint32_t kMachExceptionCodes = 0x80000000u;  // MACH_EXCEPTION_CODES

enum class ExceptionBehavior : std::uint8_t {
  // EXCEPTION_STATE | MACH_EXCEPTION_CODES: the thread's state and 64-bit codes, no port rights.
  // What the listener asks for: with a port per thread, the port a message arrives on already
  // names the thread, and a message without rights cannot leak any.
  State,
  // EXCEPTION_STATE_IDENTITY | MACH_EXCEPTION_CODES: a send right to the faulting thread's port
  // and one to the task's port besides, copied out into the receiver's space (one uref more on
  // each name), which owns them from then on.
  StateIdentity,
};

// The exception_behavior_t to pass to thread_set_exception_ports for `behavior`.
constexpr std::uint32_t behavior_value(ExceptionBehavior behavior) {
  return (behavior == ExceptionBehavior::State ? kExceptionState : kExceptionStateIdentity) |
         kMachExceptionCodes;
}

// What release_exception_rights does with the rights.
enum class RightsDisposal : std::uint8_t {
  Release,
  // Keeps them, as Clozure CL did before seed 001's fix. Exists only so that a test can show the
  // leak the release prevents, as ManagerOptions::normalize_kernel_handles does for thread ports.
  Keep,
};

// After a message of `behavior` has been handled: releases each right it carried exactly once
// (mach_port_deallocate; a name whose port died since is a dead name, and that drops its uref;
// kPortDead, a right that died in flight, needs nothing). A failed release does not stop the
// other, so a bad name loses nothing else; the first failure is returned (Step::MachDeallocate,
// with the kern_return_t and the name). A State message carries no rights, so rights given with
// State are a caller's mistake (releasing them would drop urefs someone else owns, e.g.
// libpthread's): Step::BadArgument, and nothing is released.
Result<void> release_exception_rights(PortSpace& space, ExceptionBehavior behavior,
                                      const ExceptionRights& rights,
                                      RightsDisposal disposal = RightsDisposal::Release);

// --- mach_exc on the wire: mach_exception_raise_state(_identity) requests and their replies ---
// The layout MIG generates from <mach/mach_exc.defs> (structures packed to 4 bytes): a 24-byte
// mach_msg_header_t, for the identity routine a body and two 12-byte port descriptors, the NDR
// record, then exception, codeCnt, code[codeCnt] (int64), flavor, old_stateCnt and
// old_state[old_stateCnt]. code[] is variable in MIG's eyes, so flavor's offset follows codeCnt.

inline constexpr std::int32_t kRaiseStateId = 2406;  // subsystem mach_exc is 2405
inline constexpr std::int32_t kRaiseStateIdentityId = 2407;
inline constexpr std::int32_t kReplyIdOffset = 100;  // MIG: reply id = request id + 100
inline constexpr std::int32_t kExcBadAccess = 1;     // EXC_BAD_ACCESS
// The most natural_t words any SDK's THREAD_STATE_MAX allows (224, then 614, now 1296).
inline constexpr std::uint32_t kThreadStateMax = 1296;
inline constexpr KernReturn kMigBadArguments = -304;  // MIG_BAD_ARGUMENTS

// Sizes without the receive trailer, which the receiver adds room for.
inline constexpr std::size_t kMaxRequestSize = 76 + 2 * 8 + 4 * kThreadStateMax;
inline constexpr std::size_t kMaxReplySize = 44 + 4 * kThreadStateMax;

struct ExceptionRequest {
  ExceptionBehavior behavior = ExceptionBehavior::State;
  std::int32_t id = 0;                // msgh_id
  std::uint32_t reply_type = 0;       // MACH_MSGH_BITS_REMOTE: how the reply right arrived
  PortName reply_port = kPortNull;    // msgh_remote_port: the kernel's send-once reply right, ours
  PortName port = kPortNull;          // msgh_local_port: the exception port it arrived on
  ExceptionRights rights;             // StateIdentity: ours to release after handling
  std::array<std::uint8_t, 8> ndr{};  // echoed in the reply, as MIG servers do
  std::int32_t exception = 0;
  std::uint32_t code_count = 0;
  std::array<std::int64_t, 2> code{};  // EXC_BAD_ACCESS: kern_return_t, then the address
  std::int32_t flavor = 0;
  std::vector<std::uint32_t> state;  // old_state, given back as new_state on success
};

// Parses a received message (its first msgh_size bytes; `message` may be the larger buffer).
// Checks what MIG's __MIG_check__Request__ functions check, and that the reply right is a
// send-once right. Errors: Step::BadArgument, code kMigBadArguments, detail says what is wrong;
// the caller then destroys the message (mach_msg_destroy), which releases what it carried.
Result<ExceptionRequest> parse_exception_request(std::span<const std::byte> message);

// Writes the reply to `request` into `out` (at least kMaxReplySize bytes, 4-byte aligned) and
// returns its size: with kSuccess, new_state = old_state (the thread retries the faulting
// instruction); otherwise the 36-byte mig_reply_error_t that makes the kernel pass the exception
// on (to the task's port, then the BSD signal). 0 when `out` is too small.
std::size_t encode_exception_reply(const ExceptionRequest& request, KernReturn result,
                                   std::span<std::byte> out);

}  // namespace tcr::mach
