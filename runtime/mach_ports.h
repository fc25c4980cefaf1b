// Mach send-right accounting, written once against PortSpace so the same code runs on Darwin
// (XnuPortSpace, real Mach calls, Apple only) and here, in tests, on MachModel (a user-space model
// of one Mach IPC space; see testing/mach_model.h). This is the seeds' fix: a thread's kernel port
// must leave shutdown_thread_tcr with exactly one send-right user reference (the one libpthread
// drops at exit), or its name outlives the thread as a dead name and the IPC space grows forever.
// Types mirror <mach/*.h> without including them, so core code compiles on every platform.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/error.h"

namespace tcr::mach {

using PortName = std::uint32_t;   // mach_port_name_t
using Urefs = std::uint32_t;      // mach_port_urefs_t
using KernReturn = int;           // kern_return_t

// Values of <mach/kern_return.h>.
inline constexpr KernReturn kSuccess = 0;
inline constexpr KernReturn kNoSpace = 3;
inline constexpr KernReturn kInvalidArgument = 4;
inline constexpr KernReturn kFailure = 5;
inline constexpr KernReturn kResourceShortage = 6;
inline constexpr KernReturn kInvalidName = 15;
inline constexpr KernReturn kInvalidTask = 16;
inline constexpr KernReturn kInvalidRight = 17;
inline constexpr KernReturn kInvalidValue = 18;
inline constexpr KernReturn kUrefsOverflow = 19;
inline constexpr KernReturn kNotSupported = 46;

inline constexpr PortName kPortNull = 0;            // MACH_PORT_NULL
inline constexpr PortName kPortDead = ~PortName{0};  // MACH_PORT_DEAD

// MACH_PORT_UREFS_MAX (XNU's osfmk/ipc/ipc_port.h; the user headers do not export it). A count
// that reaches it is pegged there: XNU ignores every later change but "minus kUrefsMax".
inline constexpr Urefs kUrefsMax = 0xffff;

// MACH_PORT_RIGHT_* values from <mach/port.h>.
enum class Right : std::uint32_t { Send = 0, Receive = 1, SendOnce = 2, PortSet = 3, DeadName = 4 };

// The names an exception message's port rights were copied out to (kPortNull when it carried none,
// kPortDead when the port died while the message was in flight). The receiver owns one send uref
// on each and must release it (exceptions/mach_exception_rights.h).
struct ExceptionRights {
  PortName thread = kPortNull;
  PortName task = kPortNull;
};

// The few IPC-space operations tcr needs, with Mach's signatures and error codes.
class PortSpace {
 public:
  virtual ~PortSpace() = default;
  // mach_port_get_refs(mach_task_self(), name, right, &refs)
  virtual KernReturn get_refs(PortName name, Right right, Urefs* refs) = 0;
  // mach_port_mod_refs(mach_task_self(), name, right, delta)
  virtual KernReturn mod_refs(PortName name, Right right, int delta) = 0;
  // mach_port_deallocate(mach_task_self(), name): drops one send/send-once/dead-name uref
  virtual KernReturn deallocate(PortName name) = 0;
  // mach_port_names(mach_task_self(), ...): how many names the space holds
  virtual KernReturn names_count(std::size_t* count) = 0;
  // pthread_mach_thread_np(pthread_self()): the calling thread's port as libpthread caches it.
  // Adds no user reference (unlike mach_thread_self()).
  virtual PortName current_thread_port() = 0;

  // Making ports of our own (an exception port per thread). Not pure: a space that only counts
  // (a ledger's test double) has no use for them, and answers KERN_NOT_SUPPORTED.
  // mach_port_allocate(mach_task_self(), MACH_PORT_RIGHT_RECEIVE, name)
  virtual KernReturn allocate_receive(PortName* name) {
    (void)name;
    return kNotSupported;
  }
  // mach_port_insert_right(mach_task_self(), name, name, MACH_MSG_TYPE_MAKE_SEND): one more send
  // uref on the name that holds the receive right.
  virtual KernReturn insert_send_right(PortName name) {
    (void)name;
    return kNotSupported;
  }
};

// "port name 0x1a03": how an Error's detail names a port.
std::string port_detail(PortName name);

// The number of send-right user references the space holds for `name`; 0 (not an error) when
// the name holds no send right, as mach_port_get_refs answers for a dead name.
Result<Urefs> send_refs(PortSpace& space, PortName name);

// Brings the send-right urefs of `name` down to `target` (>= 1) with one mod_refs call when there
// are more, and answers how many there were before. Never raises the count: fewer than `target`
// is answered as is (the caller's bookkeeping is off, and adding rights would hide it); 0 means
// the name holds no send right, e.g. its port died and it is a dead name now. A count pegged at
// kUrefsMax cannot be brought down (its true value is lost): Step::MachModRefs, kUrefsOverflow.
Result<Urefs> normalize_send_refs(PortSpace& space, PortName name, Urefs target = 1);

}  // namespace tcr::mach
