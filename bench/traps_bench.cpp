// `tcr-bench traps`: what a GC write barrier costs in each ProtectedRegion mode, in one run: the
// cost of the first write to a protected page (trap, resolution and the write; Async takes no
// trap: the kernel marks the page) and the cost of collect_dirty() per 1,000 dirtied pages
// (which re-arms them). Modes are interleaved round by round over regions of the same size, the
// order rotating each round (no mode always runs first, or right after another's collect), and
// an unprotected region gives the floor (a plain write to a resident page; it has nothing to
// collect, so its collect figure is null, as is every vs_signal when Signal is unavailable). A mode this kernel
// lacks is reported as unavailable, never replaced by another (RegionOptions::fall_back off).
#include <CLI/CLI.hpp>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "bench/bench.h"
#include "exceptions/protected_region.h"

namespace tcr::bench {
namespace {

struct TrapsBenchOptions {
  std::size_t pages = 4096;  // 16 MiB of 4 KiB pages
  int rounds = 15;
  bool json = false;
};

struct ModeRun {
  std::string name;
  std::unique_ptr<ProtectedRegion> region;  // null for the floor
  char* mem = nullptr;
  std::string unavailable;
  std::vector<double> write_ns;    // per first write, one median input per round
  std::vector<double> collect_us;  // per 1,000 pages
};

int run_traps(const TrapsBenchOptions& o) {
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  const std::size_t bytes = o.pages * page;
  std::vector<ModeRun> runs;
  for (const char* name : {"plain", "Signal", "Listener", "Async"}) {
    ModeRun run;
    run.name = name;
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
      fmt::print(stderr, "mmap: {}\n", std::strerror(errno));
      return 2;
    }
    run.mem = static_cast<char*>(mem);
    for (std::size_t i = 0; i < o.pages; ++i) run.mem[i * page] = 1;  // resident before timing
    if (run.name != "plain") {
      RegionOptions options;
      options.mode = run.name == "Signal"     ? TrapMode::Signal
                     : run.name == "Listener" ? TrapMode::Listener
                                              : TrapMode::Async;
      options.fall_back = false;
      Result<std::unique_ptr<ProtectedRegion>> r = ProtectedRegion::create(mem, bytes, options);
      if (!r) {
        run.unavailable = r.error().message();
      } else {
        run.region = std::move(*r);
        if (Result<void> armed = run.region->protect(); !armed) {
          fmt::print(stderr, "{}: {}\n", run.name, armed.error().message());
          return 2;
        }
      }
    }
    runs.push_back(std::move(run));
  }
  std::vector<std::size_t> dirty;
  dirty.reserve(o.pages);
  for (int round = 0; round < o.rounds; ++round) {
    for (std::size_t k = 0; k < runs.size(); ++k) {
      ModeRun& run = runs[(k + static_cast<std::size_t>(round)) % runs.size()];
      if (!run.unavailable.empty()) continue;
      volatile char* mem = run.mem;
      const Clock::time_point t0 = Clock::now();
      for (std::size_t i = 0; i < o.pages; ++i) mem[i * page] = static_cast<char>(round);
      run.write_ns.push_back(micros_since(t0) * 1000.0 / static_cast<double>(o.pages));
      if (!run.region) continue;
      dirty.clear();
      const Clock::time_point t1 = Clock::now();
      if (Result<void> c = run.region->collect_dirty(dirty); !c) {
        fmt::print(stderr, "{}: {}\n", run.name, c.error().message());
        return 2;
      }
      run.collect_us.push_back(micros_since(t1) * 1000.0 / static_cast<double>(o.pages));
      if (dirty.size() != o.pages) {
        fmt::print(stderr, "{}: collected {} pages of {} written\n", run.name, dirty.size(),
                   o.pages);
        return 2;
      }
    }
  }
  double signal_ns = 0;
  for (const ModeRun& run : runs) {
    if (run.name == "Signal" && !run.write_ns.empty()) signal_ns = median(run.write_ns);
  }
  std::string json = fmt::format(R"({{"bench":"traps","pages":{},"page_size":{},"rounds":{},"modes":[)",
                                 o.pages, page, o.rounds);
  if (!o.json) {
    fmt::print("{:>9} {:>16} {:>22} {:>14}\n", "mode", "first_write_ns", "collect_us_per_1000",
               "vs_Signal");
  }
  for (std::size_t i = 0; i < runs.size(); ++i) {
    ModeRun& run = runs[i];
    if (!run.unavailable.empty()) {
      if (!o.json) fmt::print("{:>9} unavailable: {}\n", run.name, run.unavailable);
      json += fmt::format(R"({}{{"mode":"{}","unavailable":{}}})", i ? "," : "", run.name,
                          json_string(run.unavailable));
      continue;
    }
    // Not measured is NaN, which the JSON prints as null and the table as "-".
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double w = median(run.write_ns);
    const double c = run.collect_us.empty() ? nan : median(run.collect_us);
    const double ratio = signal_ns > 0 ? w / signal_ns : nan;
    const std::uint64_t traps = run.region ? run.region->traps() : 0;
    if (!o.json) {
      auto cell = [](double v, int width, int precision) {
        return std::isfinite(v) ? fmt::format("{:>{}.{}f}", v, width, precision)
                                : fmt::format("{:>{}}", "-", width);
      };
      fmt::print("{:>9} {:>16.1f} {} {}\n", run.name, w, cell(c, 22, 1), cell(ratio, 14, 3));
    }
    json += fmt::format(
        R"({}{{"mode":"{}","first_write_ns":{},"collect_us_per_1000_pages":{},"vs_signal":{},"traps":{}}})",
        i ? "," : "", run.name, json_number(w), json_number(c), json_number(ratio), traps);
  }
  json += "]}";
  if (o.json) fmt::print("{}\n", json);
  for (ModeRun& run : runs) {
    run.region.reset();
    munmap(run.mem, bytes);
  }
  return 0;
}

}  // namespace

Subcommand add_traps_command(CLI::App& parent) {
  auto o = std::make_shared<TrapsBenchOptions>();
  CLI::App* app = parent.add_subcommand(
      "traps",
      "ProtectedRegion modes side by side: median ns per first write to a protected page, and "
      "collect_dirty() microseconds per 1,000 dirtied pages; 'plain' is an unprotected region");
  app->add_option("--pages", o->pages, "Pages per region (each round dirties all of them)")
      ->capture_default_str();
  app->add_option("--rounds", o->rounds, "Rounds (write every page, then collect)")
      ->capture_default_str();
  app->add_flag("--json", o->json, "Print one JSON object");
  return {app, [o] { return run_traps(*o); }};
}

}  // namespace tcr::bench
