// The memory map from /proc/thread-self/maps, one line per mapping:
//   start-end perms offset dev inode [path]
//   7f3a1c000000-7f3a1c021000 rwxp 00000000 00:00 0
// read through a stack buffer; of each line only its head is kept (the range and the perms; a
// path can be PATH_MAX long and is not needed). Lines are ascending by address, so the reading
// stops at the first mapping past the range.
#include <charconv>
#include <string_view>

#include "exceptions/region_mappings.h"
#include "runtime/os.h"

namespace tcr::detail {
namespace {

// false for a line that does not start as described above.
bool parse_line(std::string_view line, Mapping& out) {
  const std::size_t dash = line.find('-');
  const std::size_t space = line.find(' ');
  if (dash == std::string_view::npos || space == std::string_view::npos || dash > space ||
      line.size() < space + 4) {
    return false;
  }
  const char* const first = line.data();
  if (std::from_chars(first, first + dash, out.start, 16).ptr != first + dash ||
      std::from_chars(first + dash + 1, first + space, out.end, 16).ptr != first + space) {
    return false;
  }
  const std::string_view perms = line.substr(space + 1, 3);
  out.prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
             (perms[2] == 'x' ? PROT_EXEC : 0);
  return true;
}

}  // namespace

Result<void> visit_mappings(std::uintptr_t low, std::uintptr_t high, MappingVisitor& visitor) {
  Result<int> opened = os::open_proc_maps();
  if (!opened) return std::unexpected(opened.error());
  const os::ScopedFd fd(*opened);
  char buf[4096];
  char line[64];  // "start-end perms": 16 + 1 + 16 + 1 + 4 on 64-bit
  std::size_t line_length = 0;
  for (;;) {
    Result<std::size_t> got = os::read_proc_maps(fd.get(), buf, sizeof buf);
    if (!got) return std::unexpected(got.error());
    if (*got == 0) return {};
    for (std::size_t i = 0; i < *got; ++i) {
      if (buf[i] != '\n') {
        if (line_length < sizeof line) line[line_length++] = buf[i];
        continue;
      }
      Mapping m;
      const bool parsed = parse_line(std::string_view(line, line_length), m);
      line_length = 0;
      if (!parsed || m.end <= low) continue;
      if (m.start >= high || !visitor.visit(m)) return {};
    }
  }
}

}  // namespace tcr::detail
