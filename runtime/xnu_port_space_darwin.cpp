// The real Mach calls behind XnuPortSpace. Compiled only on Apple; it could not be compiled where
// it was written (Linux), so it was written against the Darwin SDK's declarations:
//   <mach/mach_port.h>  mach_port_get_refs(ipc_space_t, mach_port_name_t, mach_port_right_t,
//                                          mach_port_urefs_t*)
//                       mach_port_mod_refs(ipc_space_t, mach_port_name_t, mach_port_right_t,
//                                          mach_port_delta_t)
//                       mach_port_deallocate(ipc_space_t, mach_port_name_t)
//                       mach_port_names(ipc_space_t, mach_port_name_array_t*,
//                                       mach_msg_type_number_t*, mach_port_type_array_t*,
//                                       mach_msg_type_number_t*)
//                       mach_port_allocate(ipc_space_t, mach_port_right_t, mach_port_name_t*)
//                       mach_port_insert_right(ipc_space_t, mach_port_name_t, mach_port_t,
//                                              mach_msg_type_name_t)
//   <mach/vm_map.h>     vm_deallocate(vm_map_t, vm_address_t, vm_size_t)
//   <pthread.h>         mach_port_t pthread_mach_thread_np(pthread_t)
// The static_asserts below check that mach_ports.h's mirror of the constants still matches.
#include "runtime/xnu_port_space.h"

#include <mach/mach.h>
#include <pthread.h>

namespace tcr::mach {

static_assert(sizeof(PortName) == sizeof(mach_port_name_t));
static_assert(sizeof(Urefs) == sizeof(mach_port_urefs_t));
static_assert(sizeof(KernReturn) == sizeof(kern_return_t));
static_assert(sizeof(int) == sizeof(mach_port_delta_t));
static_assert(kSuccess == KERN_SUCCESS);
static_assert(kNoSpace == KERN_NO_SPACE);
static_assert(kInvalidArgument == KERN_INVALID_ARGUMENT);
static_assert(kFailure == KERN_FAILURE);
static_assert(kResourceShortage == KERN_RESOURCE_SHORTAGE);
static_assert(kInvalidName == KERN_INVALID_NAME);
static_assert(kInvalidTask == KERN_INVALID_TASK);
static_assert(kInvalidRight == KERN_INVALID_RIGHT);
static_assert(kInvalidValue == KERN_INVALID_VALUE);
static_assert(kUrefsOverflow == KERN_UREFS_OVERFLOW);
static_assert(kNotSupported == KERN_NOT_SUPPORTED);
static_assert(kPortNull == MACH_PORT_NULL);
static_assert(kPortDead == MACH_PORT_DEAD);
static_assert(static_cast<mach_port_right_t>(Right::Send) == MACH_PORT_RIGHT_SEND);
static_assert(static_cast<mach_port_right_t>(Right::Receive) == MACH_PORT_RIGHT_RECEIVE);
static_assert(static_cast<mach_port_right_t>(Right::SendOnce) == MACH_PORT_RIGHT_SEND_ONCE);
static_assert(static_cast<mach_port_right_t>(Right::PortSet) == MACH_PORT_RIGHT_PORT_SET);
static_assert(static_cast<mach_port_right_t>(Right::DeadName) == MACH_PORT_RIGHT_DEAD_NAME);

KernReturn XnuPortSpace::get_refs(PortName name, Right right, Urefs* refs) {
  mach_port_urefs_t urefs = 0;
  const kern_return_t kr =
      mach_port_get_refs(mach_task_self(), name, static_cast<mach_port_right_t>(right), &urefs);
  if (kr == KERN_SUCCESS) *refs = urefs;
  return kr;
}

KernReturn XnuPortSpace::mod_refs(PortName name, Right right, int delta) {
  return mach_port_mod_refs(mach_task_self(), name, static_cast<mach_port_right_t>(right),
                            static_cast<mach_port_delta_t>(delta));
}

KernReturn XnuPortSpace::deallocate(PortName name) {
  return mach_port_deallocate(mach_task_self(), name);
}

KernReturn XnuPortSpace::names_count(std::size_t* count) {
  mach_port_name_array_t names = nullptr;
  mach_msg_type_number_t names_cnt = 0;
  mach_port_type_array_t types = nullptr;
  mach_msg_type_number_t types_cnt = 0;
  const kern_return_t kr =
      mach_port_names(mach_task_self(), &names, &names_cnt, &types, &types_cnt);
  if (kr != KERN_SUCCESS) return kr;
  // The arrays arrive out of line in our address space: counting must not leak them (a counter
  // that leaked memory per call would make the resource ledger itself a leak).
  if (names != nullptr) {
    (void)vm_deallocate(mach_task_self(), reinterpret_cast<vm_address_t>(names),
                        names_cnt * sizeof(*names));
  }
  if (types != nullptr) {
    (void)vm_deallocate(mach_task_self(), reinterpret_cast<vm_address_t>(types),
                        types_cnt * sizeof(*types));
  }
  *count = names_cnt;
  return KERN_SUCCESS;
}

PortName XnuPortSpace::current_thread_port() { return pthread_mach_thread_np(pthread_self()); }

KernReturn XnuPortSpace::allocate_receive(PortName* name) {
  mach_port_name_t allocated = MACH_PORT_NULL;
  const kern_return_t kr =
      mach_port_allocate(mach_task_self(), MACH_PORT_RIGHT_RECEIVE, &allocated);
  if (kr == KERN_SUCCESS) *name = allocated;
  return kr;
}

// The send right is made from our own receive right (MAKE_SEND), so it lands on the same name:
// mach_port_insert_right requires the name it is given to be that receive right's name.
KernReturn XnuPortSpace::insert_send_right(PortName name) {
  return mach_port_insert_right(mach_task_self(), name, name, MACH_MSG_TYPE_MAKE_SEND);
}

}  // namespace tcr::mach
