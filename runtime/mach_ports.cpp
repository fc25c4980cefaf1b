#include "runtime/mach_ports.h"

#include <charconv>
#include <string>

namespace tcr::mach {

std::string port_detail(PortName name) {
  char hex[16];
  auto [end, ec] = std::to_chars(hex, hex + sizeof hex, name, 16);
  (void)ec;  // 16 chars hold any 32-bit value
  return "port name 0x" + std::string(hex, end);
}

Result<Urefs> send_refs(PortSpace& space, PortName name) {
  Urefs refs = 0;
  if (KernReturn kr = space.get_refs(name, Right::Send, &refs); kr != kSuccess) {
    return fail(Step::MachGetRefs, kr, port_detail(name));
  }
  return refs;
}

Result<Urefs> normalize_send_refs(PortSpace& space, PortName name, Urefs target) {
  if (target < 1) {
    return fail(Step::BadArgument, 0,
                "normalize_send_refs: target must be >= 1 (libpthread drops the last reference "
                "itself at thread exit), " +
                    port_detail(name));
  }
  Result<Urefs> before = send_refs(space, name);
  if (!before || *before <= target) return before;
  // XNU pegs a uref count that reaches MACH_PORT_UREFS_MAX (ipc_right_delta, ipc_right_copyout)
  // and then ignores every mod_refs but "minus MACH_PORT_UREFS_MAX", which would remove the right
  // libpthread still owns. The true count is lost, so say so instead of pretending to normalize:
  // the name will outlive the thread as one dead name.
  if (*before == kUrefsMax) {
    return fail(Step::MachModRefs, kUrefsOverflow,
                "send urefs pegged at MACH_PORT_UREFS_MAX, cannot normalize; " + port_detail(name));
  }
  const int delta = -static_cast<int>(*before - target);
  if (KernReturn kr = space.mod_refs(name, Right::Send, delta); kr != kSuccess) {
    return fail(Step::MachModRefs, kr, port_detail(name));
  }
  return before;
}

}  // namespace tcr::mach
