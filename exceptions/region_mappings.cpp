#include "exceptions/region_mappings.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <new>

#include "runtime/os.h"

namespace tcr::detail {
namespace {

void describe_prot(int prot, char out[4]) {
  out[0] = (prot & PROT_READ) != 0 ? 'r' : '-';
  out[1] = (prot & PROT_WRITE) != 0 ? 'w' : '-';
  out[2] = (prot & PROT_EXEC) != 0 ? 'x' : '-';
  out[3] = '\0';
}

// Walks the mappings under the range from its base, and stops at the first thing wrong with it:
// a hole, a part that is not writable, or no memory for one more span.
class LayoutBuilder final : public MappingVisitor {
 public:
  enum class Problem : std::uint8_t { None, Hole, NotWritable, NoMemory };

  LayoutBuilder(char* base, std::size_t length)
      : m_low(reinterpret_cast<std::uintptr_t>(base)), m_high(m_low + length), m_cursor(m_low) {}

  bool visit(const Mapping& m) override {
    const std::uintptr_t start = m.start < m_low ? m_low : m.start;
    const std::uintptr_t end = m.end > m_high ? m_high : m.end;
    if (end <= m_cursor) return true;
    if (start > m_cursor) return stop(Problem::Hole, m_cursor, start, 0);
    if ((m.prot & PROT_WRITE) == 0) return stop(Problem::NotWritable, start, end, m.prot);
    std::vector<ProtectionSpan>& spans = m_layout.spans;
    if (!spans.empty() && spans.back().prot == m.prot) {
      spans.back().length += end - start;
    } else {
      try {
        spans.push_back({reinterpret_cast<char*>(start), end - start, m.prot});
      } catch (const std::bad_alloc&) {
        return stop(Problem::NoMemory, start, end, m.prot);
      }
    }
    m_cursor = end;
    return m_cursor < m_high;
  }

  // After the walk: what is wrong, as an Error, or the layout.
  Result<RangeLayout> finish() {
    if (m_problem == Problem::None && m_cursor < m_high) {
      stop(Problem::Hole, m_cursor, m_high, 0);
    }
    char prot[4];
    describe_prot(m_prot, prot);
    char msg[224];
    void* const at = reinterpret_cast<void*>(m_from);
    const std::size_t bytes = m_to - m_from;
    switch (m_problem) {
      case Problem::None:
        return std::move(m_layout);
      case Problem::Hole:
        std::snprintf(msg, sizeof msg,
                      "ProtectedRegion: [%p, +%zu) of the range is not mapped: the whole range "
                      "must be mapped",
                      at, bytes);
        return fail(Step::BadArgument, 0, msg);
      case Problem::NotWritable:
        std::snprintf(msg, sizeof msg,
                      "ProtectedRegion: [%p, +%zu) of the range is mapped %s, not writable: a "
                      "write barrier needs memory mapped with PROT_WRITE",
                      at, bytes, prot);
        return fail(Step::BadArgument, 0, msg);
      case Problem::NoMemory:
        return fail(Step::RegionAllocate, ENOMEM, "the protection of each part of the range");
    }
    return fail(Step::BadArgument, 0, "ProtectedRegion: the range's memory map");
  }

 private:
  bool stop(Problem problem, std::uintptr_t from, std::uintptr_t to, int prot) {
    m_problem = problem;
    m_from = from;
    m_to = to;
    m_prot = prot;
    return false;
  }

  const std::uintptr_t m_low;
  const std::uintptr_t m_high;
  std::uintptr_t m_cursor;  // everything below it is mapped, writable and in m_layout
  RangeLayout m_layout;
  Problem m_problem = Problem::None;
  std::uintptr_t m_from = 0;
  std::uintptr_t m_to = 0;
  int m_prot = 0;
};

}  // namespace

std::size_t RangeLayout::span_index(const void* address) const {
  const char* a = static_cast<const char*>(address);
  std::size_t low = 0;
  std::size_t high = spans.size();  // the span is in [low, high)
  while (high - low > 1) {
    const std::size_t mid = low + (high - low) / 2;
    if (a < spans[mid].start) {
      high = mid;
    } else {
      low = mid;
    }
  }
  return low;
}

Result<void> mprotect_spans(const RangeLayout& layout, char* first, std::size_t bytes, bool armed) {
  char* const last = first + bytes;
  const std::vector<ProtectionSpan>& spans = layout.spans;
  for (std::size_t i = layout.span_index(first); i < spans.size() && spans[i].start < last; ++i) {
    char* const from = std::max(spans[i].start, first);
    char* const to = std::min(spans[i].start + spans[i].length, last);
    const int prot = armed ? armed_protection(spans[i].prot) : spans[i].prot;
    if (Result<void> r = os::mprotect(from, static_cast<std::size_t>(to - from), prot,
                                      Step::RegionMprotect);
        !r) {
      return r;
    }
  }
  return {};
}

Result<RangeLayout> read_layout(char* base, std::size_t length) {
  LayoutBuilder builder(base, length);
  const auto low = reinterpret_cast<std::uintptr_t>(base);
  if (Result<void> read = visit_mappings(low, low + length, builder); !read) {
    return std::unexpected(read.error());
  }
  return builder.finish();
}

}  // namespace tcr::detail
