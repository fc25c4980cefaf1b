// MachModel's IPC space: the entry table, names and their generations, rights and user
// references with XNU's saturation, port death, and the PortSpace calls (mach_port_get_refs,
// mach_port_mod_refs, mach_port_deallocate, mach_port_names), ports of our own, inspection.
// Threads, the task port and exception messages are in mach_model_threads.cpp.
#include "testing/mach_model.h"

#include <cstdint>
#include <utility>

// Sources of the rules (apple-oss-distributions/xnu unless said otherwise; "XNU" is the current
// sources, "old XNU" the xnu-1xxx generation of the seeds' time, 2010-2011):
//   osfmk/ipc/ipc_right.c     ipc_right_check, ipc_right_dealloc, ipc_right_delta, ipc_right_info,
//                             ipc_right_copyout
//   osfmk/ipc/mach_port.c     mach_port_get_refs, mach_port_mod_refs, mach_port_deallocate,
//                             mach_port_names (+ mach_port_names_helper)
//   osfmk/ipc/ipc_object.c    ipc_object_copyout (reuses a name via ipc_right_reverse)
//   osfmk/ipc/ipc_port.h      MACH_PORT_UREFS_MAX, MACH_PORT_UREFS_OVERFLOW / _UNDERFLOW
// (mach_model_threads.cpp cites the thread and exception sources.)

namespace tcr::mach {

namespace {

// MACH_PORT_RIGHT_NUMBER is 6: MACH_PORT_RIGHT_LABELH (5) is a legal value that no entry holds.
constexpr std::uint32_t kRightNumber = 6;

// A name is MACH_PORT_MAKE(index, gen): the entry's index in the space's table, and a generation
// that changes each time the index is reused, so a stale name stops matching (osfmk/mach/port.h:
// MACH_PORT_INDEX, MACH_PORT_GEN). The largest index stays below the one that would spell
// MACH_PORT_DEAD.
constexpr std::uint32_t kIndexShift = 8;
constexpr std::uint32_t kMaxIndex = (kPortDead >> kIndexShift) - 1;

// MACH_PORT_VALID: neither MACH_PORT_NULL nor MACH_PORT_DEAD.
bool valid_name(PortName name) { return name != kPortNull && name != kPortDead; }
std::uint32_t index_of(PortName name) { return name >> kIndexShift; }
std::uint8_t gen_of(PortName name) { return static_cast<std::uint8_t>(name & 0xff); }
PortName make_name(std::uint32_t index, std::uint8_t gen) { return index << kIndexShift | gen; }

// The new uref count after `delta`, with XNU's saturation, shared by send and dead-name rights
// (ipc_right_delta, cases MACH_PORT_RIGHT_SEND and MACH_PORT_RIGHT_DEAD_NAME):
//  * |delta| > MACH_PORT_UREFS_MAX: KERN_INVALID_VALUE;
//  * a count at MACH_PORT_UREFS_MAX is pegged: "only a delta removing all refs at once can change
//    it", any other delta is silently ignored (success, no change);
//  * below zero: KERN_INVALID_VALUE (MACH_PORT_UREFS_UNDERFLOW);
//  * reaching or passing MACH_PORT_UREFS_MAX pegs it there (MACH_PORT_UREFS_OVERFLOW is
//    "urefs + delta >= MACH_PORT_UREFS_MAX"), success.
// Old XNU answered an overflow with KERN_UREFS_OVERFLOW instead (its send case tested
// MACH_PORT_UREFS_OVERFLOW(urefs+1, delta), and copyout pegged send urefs at MAX-1); pegging
// replaced that, so today mach_port_mod_refs never returns KERN_UREFS_OVERFLOW, although
// mach_port.c's comment still lists it.
KernReturn saturating_delta(Urefs urefs, int delta, Urefs* result) {
  const std::int64_t max = kUrefsMax;
  std::int64_t d = delta;
  if (d > max || d < -max) return kInvalidValue;
  if (urefs == kUrefsMax) {
    if (d != -max) d = 0;
  } else {
    if (d < 0 && -d > static_cast<std::int64_t>(urefs)) return kInvalidValue;
    if (d > 0 && urefs + d >= max) d = max - urefs;
  }
  *result = static_cast<Urefs>(urefs + d);
  return kSuccess;
}

}  // namespace

// --- The table ---

MachModel::Entry* MachModel::lookup(PortName name) {
  return const_cast<Entry*>(std::as_const(*this).lookup(name));
}

const MachModel::Entry* MachModel::lookup(PortName name) const {
  if (!valid_name(name)) return nullptr;
  const std::uint32_t index = index_of(name);
  if (index == 0 || index >= m_table.size()) return nullptr;
  const Entry& entry = m_table[index];
  if (entry.type == Type::None || entry.gen != gen_of(name)) return nullptr;
  return &entry;
}

PortName MachModel::allocate_entry(Type type, Urefs urefs, PortId port) {
  std::uint32_t index = m_free_head;
  if (index != 0) {
    m_free_head = m_table[index].next_free;
    m_table[index].gen = static_cast<std::uint8_t>(m_table[index].gen + 1);
  } else {
    if (m_table.size() > kMaxIndex) return kPortNull;  // XNU: KERN_NO_SPACE
    index = static_cast<std::uint32_t>(m_table.size());
    m_table.emplace_back();
  }
  Entry& entry = m_table[index];
  entry.type = type;
  entry.urefs = urefs;
  entry.port = port;
  entry.next_free = 0;
  ++m_names;
  return make_name(index, entry.gen);
}

void MachModel::free_entry(PortName name) {
  const std::uint32_t index = index_of(name);
  Entry& entry = m_table[index];
  entry.type = Type::None;
  entry.urefs = 0;
  entry.port = 0;
  entry.next_free = m_free_head;
  m_free_head = index;
  --m_names;
}

MachModel::PortId MachModel::new_port() {
  const PortId id = m_next_port++;
  m_ports.emplace(id, Port{});
  return id;
}

// ipc_object_copyout + ipc_right_copyout(MACH_MSG_TYPE_PORT_SEND): a send right to a port the
// space already names goes to that name (ipc_right_reverse finds it), one more uref, or, at
// MACH_PORT_UREFS_MAX, "leave urefs pegged to maximum, consume send right": in XNU a copyout
// never fails on overflow (old XNU's ipc_right_copyout returned KERN_UREFS_OVERFLOW unless its
// caller passed overflow=TRUE). A name that holds only the receive right gains send+receive.
// Otherwise a fresh name with one uref.
PortName MachModel::copyout_send(PortId port_id) {
  Port& port = m_ports.at(port_id);
  if (port.name != kPortNull) {
    Entry& entry = *lookup(port.name);
    if (holds_send(entry.type)) {
      if (entry.urefs < kUrefsMax) ++entry.urefs;
    } else {
      entry.type = Type::SendReceive;
      entry.urefs = 1;
    }
    return port.name;
  }
  port.name = allocate_entry(Type::Send, 1, port_id);
  return port.name;
}

// ipc_port_destroy, as the space sees it. XNU marks the port dead and converts each name lazily,
// in ipc_right_check, the next time anything touches it; since every call modeled here
// (mach_port_get_refs via ipc_right_info, mod_refs via ipc_right_delta, deallocate via
// ipc_right_dealloc, and mach_port_names_helper, which "pretends we found a dead name entry")
// converts or reports it first, converting at once is indistinguishable. ipc_right_check turns a
// send right into a dead name that keeps its urefs, and a send-once right into a dead name with
// one. A receive right held here goes with the port (ipc_right_delta, MACH_PORT_RIGHT_RECEIVE:
// "the remaining send right turns into a dead name").
void MachModel::destroy_port(PortId port_id) {
  auto it = m_ports.find(port_id);
  if (it == m_ports.end()) return;
  Port& port = it->second;
  if (port.name != kPortNull) {
    Entry& entry = *lookup(port.name);
    if (holds_send(entry.type)) {
      entry.type = Type::DeadName;
      entry.port = 0;
    } else {
      free_entry(port.name);
    }
  }
  for (PortName name : port.send_once_names) {
    Entry& entry = *lookup(name);
    entry.type = Type::DeadName;
    entry.urefs = 1;
    entry.port = 0;
  }
  m_ports.erase(it);
}

// --- PortSpace ---

// mach_port_get_refs answers from ipc_right_info, which runs ipc_right_check first; so a send
// right whose port died is already a dead name and SEND is answered 0 ("Returns zero if the name
// denotes a right, but not the queried right"), with KERN_SUCCESS; DEAD_NAME answers its urefs.
// Receive, send-once and port-set rights always count one.
Urefs MachModel::refs_of(const Entry& entry, Right right) {
  switch (right) {
    case Right::Send:
      return holds_send(entry.type) ? entry.urefs : 0;
    case Right::Receive:
      return holds_receive(entry.type) ? 1 : 0;
    case Right::SendOnce:
      return entry.type == Type::SendOnce ? 1 : 0;
    case Right::PortSet:
      return 0;  // the model has no port sets
    case Right::DeadName:
      return entry.type == Type::DeadName ? entry.urefs : 0;
  }
  return 0;  // MACH_PORT_RIGHT_LABELH: no entry holds it
}

KernReturn MachModel::get_refs(PortName name, Right right, Urefs* refs) {
  if (static_cast<std::uint32_t>(right) >= kRightNumber) return kInvalidValue;
  // mach_port_get_refs: MACH_PORT_NULL and MACH_PORT_DEAD stand for one send(-once) right.
  if (!valid_name(name)) {
    if (right != Right::Send && right != Right::SendOnce) return kInvalidName;
    *refs = 1;
    return kSuccess;
  }
  std::lock_guard lock(m_mutex);
  const Entry* entry = lookup(name);
  if (entry == nullptr) return kInvalidName;
  *refs = refs_of(*entry, right);
  return kSuccess;
}

KernReturn MachModel::mod_refs(PortName name, Right right, int delta) {
  if (static_cast<std::uint32_t>(right) >= kRightNumber) return kInvalidValue;
  // mach_port_mod_refs: a no-op on MACH_PORT_NULL / MACH_PORT_DEAD for send(-once) rights.
  if (!valid_name(name)) {
    return right == Right::Send || right == Right::SendOnce ? kSuccess : kInvalidName;
  }
  std::lock_guard lock(m_mutex);
  Entry* entry = lookup(name);
  if (entry == nullptr) return kInvalidName;
  switch (right) {
    case Right::Send:
      return delta_send(name, *entry, delta);
    case Right::DeadName:
      return delta_dead_name(name, *entry, delta);
    case Right::Receive:
      return delta_receive(name, *entry, delta);
    case Right::SendOnce:
      return delta_send_once(name, *entry, delta);
    case Right::PortSet:
      return kInvalidRight;  // no port sets: the name cannot be one
  }
  return kInvalidRight;  // MACH_PORT_RIGHT_LABELH
}

// ipc_right_delta, MACH_PORT_RIGHT_SEND. A name whose port died fails here with
// KERN_INVALID_RIGHT: XNU's ipc_right_check converts it to a dead name first, and the dead
// name's urefs must be released with MACH_PORT_RIGHT_DEAD_NAME (or mach_port_deallocate).
// Delta 0 is a successful no-op. Urefs reaching 0 remove the send right, and the name with it
// unless the name also holds the receive right.
KernReturn MachModel::delta_send(PortName name, Entry& entry, int delta) {
  if (!holds_send(entry.type)) return kInvalidRight;
  Urefs after = 0;
  if (KernReturn kr = saturating_delta(entry.urefs, delta, &after); kr != kSuccess) return kr;
  if (after != 0) {
    entry.urefs = after;
  } else if (entry.type == Type::SendReceive) {
    entry.type = Type::Receive;
    entry.urefs = 0;
  } else {
    m_ports.at(entry.port).name = kPortNull;
    free_entry(name);
  }
  return kSuccess;
}

// ipc_right_delta, MACH_PORT_RIGHT_DEAD_NAME: on a live send or send-once right it is
// KERN_INVALID_RIGHT (ipc_right_check finds the port alive); otherwise the dead name's urefs,
// with the same saturation as send rights; 0 frees the name.
KernReturn MachModel::delta_dead_name(PortName name, Entry& entry, int delta) {
  if (entry.type != Type::DeadName) return kInvalidRight;
  Urefs after = 0;
  if (KernReturn kr = saturating_delta(entry.urefs, delta, &after); kr != kSuccess) return kr;
  if (after == 0) {
    free_entry(name);
  } else {
    entry.urefs = after;
  }
  return kSuccess;
}

// ipc_right_delta, MACH_PORT_RIGHT_RECEIVE: delta 0 or -1 only; -1 destroys the port.
KernReturn MachModel::delta_receive(PortName, Entry& entry, int delta) {
  if (!holds_receive(entry.type)) return kInvalidRight;
  if (delta == 0) return kSuccess;
  if (delta != -1) return kInvalidValue;
  destroy_port(entry.port);
  return kSuccess;
}

// ipc_right_delta, MACH_PORT_RIGHT_SEND_ONCE: delta 0 or -1 only.
KernReturn MachModel::delta_send_once(PortName name, Entry& entry, int delta) {
  if (entry.type != Type::SendOnce) return kInvalidRight;
  if (delta > 0 || delta < -1) return kInvalidValue;
  if (delta == 0) return kSuccess;
  std::erase(m_ports.at(entry.port).send_once_names, name);
  free_entry(name);
  return kSuccess;
}

// ipc_right_dealloc: like a delta of -1 on whichever right the name holds. Pegged urefs stay
// pegged ("if urefs are pegged due to overflow, leave them pegged"). A receive right alone is
// KERN_INVALID_RIGHT.
KernReturn MachModel::deallocate_locked(PortName name) {
  Entry* entry = lookup(name);
  if (entry == nullptr) return kInvalidName;
  switch (entry->type) {
    case Type::DeadName:
    case Type::Send:
      if (entry->urefs > 1) {
        if (entry->urefs < kUrefsMax) --entry->urefs;
      } else {
        if (entry->type == Type::Send) m_ports.at(entry->port).name = kPortNull;
        free_entry(name);
      }
      return kSuccess;
    case Type::SendReceive:
      if (entry->urefs > 1) {
        if (entry->urefs < kUrefsMax) --entry->urefs;
      } else {
        entry->type = Type::Receive;
        entry->urefs = 0;
      }
      return kSuccess;
    case Type::SendOnce:
      std::erase(m_ports.at(entry->port).send_once_names, name);
      free_entry(name);
      return kSuccess;
    case Type::Receive:
    case Type::None:
      break;
  }
  return kInvalidRight;
}

// mach_port_deallocate: MACH_PORT_NULL and MACH_PORT_DEAD are accepted and ignored.
KernReturn MachModel::deallocate(PortName name) {
  if (!valid_name(name)) return kSuccess;
  std::lock_guard lock(m_mutex);
  return deallocate_locked(name);
}

// mach_port_names counts every entry whose type is not NONE, dead names included.
KernReturn MachModel::names_count(std::size_t* count) {
  std::lock_guard lock(m_mutex);
  *count = m_names;
  return kSuccess;
}

// --- Ports of our own ---

PortName MachModel::allocate_receive() {
  std::lock_guard lock(m_mutex);
  const PortId port = new_port();
  const PortName name = allocate_entry(Type::Receive, 0, port);
  if (name == kPortNull) {
    m_ports.erase(port);  // no name, so no right: the port would be unreachable
    return kPortNull;
  }
  m_ports.at(port).name = name;
  return name;
}

// mach_port_allocate -> ipc_port_alloc -> ipc_entry_alloc, which answers KERN_NO_SPACE when the
// space's table cannot grow.
KernReturn MachModel::allocate_receive(PortName* name) {
  const PortName allocated = allocate_receive();
  if (allocated == kPortNull) return kNoSpace;
  *name = allocated;
  return kSuccess;
}

// ipc_right_copyin(MACH_MSG_TYPE_MAKE_SEND) needs the receive right (else KERN_INVALID_RIGHT);
// the copyout then lands on the receive right's own name.
KernReturn MachModel::insert_send_right(PortName receive_name) {
  std::lock_guard lock(m_mutex);
  const Entry* entry = lookup(receive_name);
  if (entry == nullptr) return kInvalidName;
  if (!holds_receive(entry->type)) return kInvalidRight;
  copyout_send(entry->port);
  return kSuccess;
}

// ipc_right_copyout(MACH_MSG_TYPE_PORT_SEND_ONCE) always takes a fresh entry: send-once rights
// are never merged (ipc_object_copyout skips ipc_right_reverse for them).
PortName MachModel::make_send_once(PortName receive_name) {
  std::lock_guard lock(m_mutex);
  const Entry* entry = lookup(receive_name);
  if (entry == nullptr || !holds_receive(entry->type)) return kPortNull;
  const PortId port = entry->port;
  const PortName name = allocate_entry(Type::SendOnce, 1, port);
  if (name != kPortNull) m_ports.at(port).send_once_names.push_back(name);
  return name;
}

// --- Inspection ---

Urefs MachModel::urefs(PortName name, Right right) const {
  std::lock_guard lock(m_mutex);
  const Entry* entry = lookup(name);
  return entry == nullptr ? 0 : refs_of(*entry, right);
}

bool MachModel::has_name(PortName name) const {
  std::lock_guard lock(m_mutex);
  return lookup(name) != nullptr;
}

bool MachModel::is_dead_name(PortName name) const {
  std::lock_guard lock(m_mutex);
  const Entry* entry = lookup(name);
  return entry != nullptr && entry->type == Type::DeadName;
}

std::size_t MachModel::names() const {
  std::lock_guard lock(m_mutex);
  return m_names;
}

std::size_t MachModel::live_threads() const {
  std::lock_guard lock(m_mutex);
  return m_threads.size();
}

std::size_t MachModel::failed_exit_deallocations() const {
  std::lock_guard lock(m_mutex);
  return m_failed_exit_deallocations;
}

}  // namespace tcr::mach
