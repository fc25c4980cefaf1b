// XnuPortSpace: the PortSpace of the calling task on Darwin, i.e. the real Mach calls on
// mach_task_self(). Stateless and thread-safe (the kernel serializes on the space lock). Built
// only on Apple (xnu_port_space_darwin.cpp); this header includes no Mach header so that core
// code which names the type compiles everywhere.
#pragma once

#include <cstddef>

#include "runtime/mach_ports.h"

namespace tcr::mach {

class XnuPortSpace final : public PortSpace {
 public:
  KernReturn get_refs(PortName name, Right right, Urefs* refs) override;
  KernReturn mod_refs(PortName name, Right right, int delta) override;
  KernReturn deallocate(PortName name) override;
  // mach_port_names, then vm_deallocate of the two arrays it returns out of line.
  KernReturn names_count(std::size_t* count) override;
  // pthread_mach_thread_np(pthread_self()): libpthread's cached name, no uref added.
  PortName current_thread_port() override;
  KernReturn allocate_receive(PortName* name) override;
  KernReturn insert_send_right(PortName name) override;
};

}  // namespace tcr::mach
