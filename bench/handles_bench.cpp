// `tcr-bench handles`: what normalize_kernel_handles (closing a thread's extra kernel handles)
// costs, with a small handle table and after the process once had many fds open. While a server
// holds tens of thousands of sockets, tcr's pidfds get high fd numbers and its fd-indexed handle
// table grows to match; it never shrinks. It walks the exiting thread's own chain of handles, so
// it must cost the same before and after (invariant 2); a scan of the table would grow with the
// high-water mark.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "bench/bench.h"
#include "runtime/handle_table.h"
#include "runtime/kernel_handle.h"

namespace tcr::bench {
namespace {

struct HandlesBenchOptions {
  std::size_t fds = 16000;
  std::uint64_t calls = 20000;
  std::uint64_t rounds = 7;
  bool json = false;
};

// Median ns per close_extras() call over rounds.
double time_close_extras(const KernelThreadHandle& handle, const HandlesBenchOptions& o) {
  std::vector<double> samples;
  for (std::uint64_t r = 0; r < o.rounds; ++r) {
    const Clock::time_point t0 = Clock::now();
    for (std::uint64_t i = 0; i < o.calls; ++i) (void)handle.close_extras();
    samples.push_back(micros_since(t0) * 1000.0 / static_cast<double>(o.calls));
  }
  return median(std::move(samples));
}

int run_handles(const HandlesBenchOptions& o) {
  if (detected_handle_mode() != HandleMode::Pidfd) {
    std::fprintf(stderr, "tcr-bench handles: needs thread pidfds (Linux >= 6.9)\n");
    return 2;
  }
  HandleChain chain;
  auto handle = KernelThreadHandle::open_current(HandleMode::Pidfd, HandleTag{1, "bench", &chain});
  if (!handle) {
    std::fprintf(stderr, "tcr-bench handles: %s\n", handle.error().message().c_str());
    return 2;
  }
  const double small_ns = time_close_extras(*handle, o);

  // Raise the fd limit if we may, hold o.fds fds, tag one handle above them (the table grows to
  // its number), then close everything again: only the high-water mark remains.
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, static_cast<rlim_t>(o.fds) + 512);
  setrlimit(RLIMIT_NOFILE, &limit);
  std::vector<int> held;
  held.reserve(o.fds);
  for (std::size_t i = 0; i < o.fds; ++i) {
    const int fd = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) break;
    held.push_back(fd);
  }
  HandleChain other_chain;
  {
    auto top =
        KernelThreadHandle::open_current(HandleMode::Pidfd, HandleTag{2, "top", &other_chain});
  }
  for (int fd : held) ::close(fd);
  const double grown_ns = time_close_extras(*handle, o);

  if (o.json) {
    fmt::print(R"({{"bench":"handles","high_water_fds":{},"ns_small_table":{},)"
               R"("ns_after_high_water":{},"ratio":{}}})"
               "\n",
               held.size(), json_number(small_ns), json_number(grown_ns),
               json_number(grown_ns / small_ns));
  } else {
    fmt::print(
        "tcr-bench handles: normalize_kernel_handles (close_extras) per thread exit, median of {} "
        "rounds\n"
        "  small table {:.0f} ns; after a {}-fd high-water mark {:.0f} ns; ratio {:.2f}\n",
        o.rounds, small_ns, held.size(), grown_ns, grown_ns / small_ns);
  }
  return 0;
}

}  // namespace

Subcommand add_handles_command(CLI::App& parent) {
  auto o = std::make_shared<HandlesBenchOptions>();
  CLI::App* app = parent.add_subcommand(
      "handles",
      "Cost of normalize_kernel_handles (closing a thread's extra handles) before and after the "
      "process "
      "had many fds open");
  app->add_option("--fds", o->fds, "fds held open once, to raise the high-water mark")
      ->capture_default_str();
  app->add_option("--calls", o->calls, "close_extras() calls per round")->capture_default_str();
  app->add_option("-r,--rounds", o->rounds, "Rounds")->capture_default_str();
  app->add_flag("--json", o->json, "Print one JSON object");
  return {app, [o] { return run_handles(*o); }};
}

}  // namespace tcr::bench
