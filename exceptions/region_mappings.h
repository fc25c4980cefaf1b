// What ProtectedRegion::create learns from the process's memory map before it allocates anything:
// that every byte of the range is mapped and writable, and the protection of each part, which the
// Signal mode keeps: arming takes PROT_WRITE away and disarming gives it back, nothing else changes, so code
// in an RWX heap runs while the region is armed. The platform reads the map (Linux:
// /proc/thread-self/maps, region_mappings_linux.cpp; Darwin: mach_vm_region); the checks are
// here. Internal to exceptions/. Not async-signal-safe; the handler reads only a RangeLayout.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/error.h"

namespace tcr::detail {

// One mapping of the process, as the platform reports it.
struct Mapping {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
  int prot = 0;  // PROT_READ | PROT_WRITE | PROT_EXEC
};

class MappingVisitor {
 public:
  // Each mapping that overlaps the range asked for, in address order. False: stop reading.
  virtual bool visit(const Mapping& mapping) = 0;

 protected:
  ~MappingVisitor() = default;
};

// The platform's reader: visits every mapping that overlaps [low, high), in address order, and
// nothing else. Step::RegionMappings when the map cannot be read. Allocates nothing; the fd it
// reads through (Linux) is closed before it returns, on every path.
Result<void> visit_mappings(std::uintptr_t low, std::uintptr_t high, MappingVisitor& visitor);

// A part of a region and its protection when the region was created.
struct ProtectionSpan {
  char* start = nullptr;
  std::size_t length = 0;
  int prot = 0;
};

struct RangeLayout {
  // Ascending, covering the range exactly; neighbours differ in protection. Most ranges are one.
  std::vector<ProtectionSpan> spans;

  // The span holding `address`, which must lie in the range, and its index. Async-signal-safe: a
  // binary search.
  std::size_t span_index(const void* address) const;
  const ProtectionSpan& span_of(const void* address) const { return spans[span_index(address)]; }
};

// The layout of [base, base + length). BadArgument when a part of it is not mapped or not
// writable (the message says which part, and how it is mapped); RegionMappings when the map cannot
// be read; RegionAllocate when the spans cannot be stored.
Result<RangeLayout> read_layout(char* base, std::size_t length);

// mprotects each part of [first, first + bytes), which must lie in the layout's range, with its
// own protection (armed: armed_protection of it). Stops at the first failure
// (Step::RegionMprotect); parts before it are changed. The Signal mode's arming, and Darwin's
// Listener, which arms with mprotect too.
Result<void> mprotect_spans(const RangeLayout& layout, char* first, std::size_t bytes, bool armed);

// What the Signal mode maps an armed page with: its protection without PROT_WRITE. Read stays:
// PROT_WRITE implies it on every MMU tcr runs on, and a write-only page must not turn
// inaccessible while armed.
inline int armed_protection(int prot) { return (prot | PROT_READ) & ~PROT_WRITE; }

}  // namespace tcr::detail
