// ResourceLedger's portable half: diff(). snapshot() and dump() live in resources_<platform>.cpp.
#include "runtime/resources.h"

#include <cstdio>
#include <string_view>

namespace tcr {

namespace {

// "name: before -> after (+delta)\n". Deltas are computed in long long so that a shrinking count
// prints as "-n" instead of wrapping around in size_t.
void append_change(std::string& out, std::string_view name, std::size_t before, std::size_t after) {
  const long long delta = static_cast<long long>(after) - static_cast<long long>(before);
  char numbers[96];
  std::snprintf(numbers, sizeof numbers, ": %zu -> %zu (%+lld)\n", before, after, delta);
  out.append(name);
  out.append(numbers);
}

void append_if_changed(std::string& out, std::string_view name, std::size_t before,
                       std::size_t after) {
  if (before != after) append_change(out, name, before, after);
}

// Per-kind differences: a kind present on one side only counts as 0 on the other. Both maps are
// sorted by kind, so one merge pass keeps the lines in a stable, readable order.
void append_kinds(std::string& out, const std::map<std::string, std::size_t>& before,
                  const std::map<std::string, std::size_t>& after) {
  auto b = before.begin();
  auto a = after.begin();
  std::string name;
  while (b != before.end() || a != after.end()) {
    const std::string* kind;
    std::size_t was = 0;
    std::size_t now = 0;
    if (a == after.end() || (b != before.end() && b->first < a->first)) {
      kind = &b->first;
      was = (b++)->second;
    } else if (b == before.end() || a->first < b->first) {
      kind = &a->first;
      now = (a++)->second;
    } else {
      kind = &b->first;
      was = (b++)->second;
      now = (a++)->second;
    }
    if (was == now) continue;
    name.assign("fds[").append(*kind).append("]");
    append_change(out, name, was, now);
  }
}

}  // namespace

std::string ResourceLedger::diff(const ResourceCounts& before, const ResourceCounts& after,
                                 std::size_t rss_slack_kb) {
  std::string out;
  append_if_changed(out, "fds", before.fds, after.fds);
  append_if_changed(out, "pidfds", before.pidfds, after.pidfds);
  append_kinds(out, before.fds_by_kind, after.fds_by_kind);
  append_if_changed(out, "maps", before.maps, after.maps);
  append_if_changed(out, "threads", before.threads, after.threads);
  // RSS moves with the allocator and the page cache; only a move beyond the caller's noise
  // budget is news.
  const std::size_t rss_moved =
      before.rss_kb > after.rss_kb ? before.rss_kb - after.rss_kb : after.rss_kb - before.rss_kb;
  if (rss_moved > rss_slack_kb) append_change(out, "rss_kb", before.rss_kb, after.rss_kb);
  if (before.port_names && after.port_names) {
    append_if_changed(out, "port_names", *before.port_names, *after.port_names);
  } else if (before.port_names.has_value() != after.port_names.has_value()) {
    // One side could not count (names_count failed, or the ledgers differ): saying nothing would
    // let a leak check pass without having checked.
    char line[96];
    if (before.port_names) {
      std::snprintf(line, sizeof line, "port_names: %zu -> unknown\n", *before.port_names);
    } else {
      std::snprintf(line, sizeof line, "port_names: unknown -> %zu\n", *after.port_names);
    }
    out.append(line);
  }
  return out;
}

std::optional<std::size_t> ResourceLedger::port_names() const {
  std::size_t names = 0;
  if (m_ports == nullptr || m_ports->names_count(&names) != mach::kSuccess) return std::nullopt;
  return names;
}

}  // namespace tcr
