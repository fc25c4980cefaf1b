// ResourceLedger: counts of the process's kernel resources, to prove by counting that nothing
// leaks (invariant 1). A snapshot reads open fds by kind (pidfds apart), memory mappings, OS
// threads, RSS and, when given a PortSpace, Mach port names; diff() says what grew or shrank; dump()
// lists every open fd with its owner from the HandleTable ("fd 7 pidfd tcr#12 'worker' tid 4711").
// Reading /proc costs a few hundred microseconds: for tests, tools and benchmarks, not hot paths.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>

#include "runtime/mach_ports.h"

namespace tcr {

struct ResourceCounts {
  std::size_t fds = 0;      // every open fd, the snapshot's own excluded
  std::size_t pidfds = 0;   // of which pidfds
  std::size_t maps = 0;     // memory mappings
  std::size_t threads = 0;  // OS threads in the process
  std::size_t rss_kb = 0;
  std::optional<std::size_t> port_names;       // when the ledger has a PortSpace
  std::map<std::string, std::size_t> fds_by_kind;  // "pidfd", "eventfd", "socket", "pipe", "file", ...
};

class ResourceLedger {
 public:
  explicit ResourceLedger(mach::PortSpace* ports = nullptr) : m_ports(ports) {}

  ResourceCounts snapshot() const;
  // One line per count that differs, "pidfds: 3 -> 5 (+2)"; empty when nothing but RSS moved
  // by less than rss_slack_kb.
  static std::string diff(const ResourceCounts& before, const ResourceCounts& after,
                          std::size_t rss_slack_kb = 0);
  // Every open fd, one line each, annotated with its HandleTable owner when tcr opened it.
  std::string dump() const;

 private:
  // The port-name count, when the ledger has a PortSpace and it answers; read last in a
  // snapshot, so a right leaked by anything above shows in the same snapshot.
  std::optional<std::size_t> port_names() const;

  mach::PortSpace* m_ports;
};

}  // namespace tcr
