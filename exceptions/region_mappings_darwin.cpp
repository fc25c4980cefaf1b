// The memory map from mach_vm_region, one VM map entry at a time from the range's base: each call
// answers the entry at or above the address asked for. Compiled only on Apple (not built or
// tested on the Linux machine this project is developed on).
#include <errno.h>
#include <mach/mach.h>
#include <mach/mach_vm.h>

#include <cstdio>

#include "exceptions/region_mappings.h"
#include "runtime/os.h"

namespace tcr::detail {

Result<void> visit_mappings(std::uintptr_t low, std::uintptr_t high, MappingVisitor& visitor) {
  mach_vm_address_t at = low;
  while (at < high) {
    if (int e = os::take_fault(os::Call::ProcMaps)) {
      return fail_fixed(Step::RegionMappings, e, "mach_vm_region");
    }
    mach_vm_address_t start = at;
    mach_vm_size_t size = 0;
    vm_region_basic_info_data_64_t info{};
    mach_msg_type_number_t count = VM_REGION_BASIC_INFO_COUNT_64;
    mach_port_t object = MACH_PORT_NULL;
    const kern_return_t kr =
        mach_vm_region(mach_task_self(), &start, &size, VM_REGION_BASIC_INFO_64,
                       reinterpret_cast<vm_region_info_t>(&info), &count, &object);
    if (object != MACH_PORT_NULL) mach_port_deallocate(mach_task_self(), object);
    if (kr == KERN_INVALID_ADDRESS) return {};  // nothing mapped at or above `at`
    if (kr != KERN_SUCCESS) {
      char msg[64];
      std::snprintf(msg, sizeof msg, "mach_vm_region: kern_return_t %d", kr);
      return fail(Step::RegionMappings, EINVAL, msg);
    }
    if (start >= high) return {};
    Mapping m;
    m.start = start;
    m.end = start + size;
    // VM_PROT_READ, _WRITE, _EXECUTE are PROT_READ, _WRITE, _EXEC.
    m.prot = info.protection & (VM_PROT_READ | VM_PROT_WRITE | VM_PROT_EXECUTE);
    if (!visitor.visit(m)) return {};
    at = m.end;
  }
  return {};
}

}  // namespace tcr::detail
