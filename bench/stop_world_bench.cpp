// `tcr-bench stop-world`: the latency of stopping and restarting the world, tcr's suspend_all +
// resume_all beside Boehm GC's GC_stop_world_external + GC_start_world_external over the very
// same threads (tcr spawns them registered with Boehm, so both stop all of them), for several
// thread counts. The two are interleaved stop by stop, with a pause after each so every thread is
// back in its wait before the next one; the report is each variant's median and their ratio.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include <fmt/format.h>

#define GC_THREADS 1
#define GC_NO_THREAD_REDIRECTS 1
#include <gc/gc.h>

#include "bench/bench.h"
#include "threads/thread_manager.h"

namespace tcr::bench {
namespace {

struct StopWorldBenchOptions {
  std::vector<int> threads{1, 4, 16, 64, 256};
  int stops = 400;        // per variant and thread count
  int settle_us = 300;    // pause after each stop, so threads are back in their wait
  bool busy = false;      // mutators spin instead of waiting
  bool json = false;
};

struct Row {
  int threads;
  double tcr_us;
  double boehm_us;
};

int run_stop_world(const StopWorldBenchOptions& o) {
  auto manager = ThreadManager::create();
  if (!manager) {
    std::fprintf(stderr, "tcr-bench stop-world: %s\n", manager.error().message().c_str());
    return 2;
  }
  ThreadManager& m = **manager;
  if (Result<Tcr*> self = m.adopt_current_thread("bench"); !self) {
    std::fprintf(stderr, "tcr-bench stop-world: %s\n", self.error().message().c_str());
    return 2;
  }
  std::vector<Row> rows;
  for (int n : o.threads) {
    std::atomic<bool> stop{false};
    Semaphore park;
    std::vector<ThreadRef> refs;
    for (int i = 0; i < n; ++i) {
      Result<ThreadRef> r = m.spawn("mutator", [&](Tcr&) -> void* {
        if (o.busy) {
          while (!stop.load(std::memory_order_relaxed)) {
          }
        } else {
          park.wait();
        }
        return nullptr;
      }, SpawnOptions{.stack_size = 256 << 10});
      if (!r) {
        std::fprintf(stderr, "tcr-bench stop-world: spawn: %s\n", r.error().message().c_str());
        return 2;
      }
      refs.push_back(*r);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // all in their wait
    std::vector<double> ours, boehms;
    for (int i = 0; i < o.stops; ++i) {
      // Alternate which goes first, so neither always follows the other.
      for (int k = 0; k < 2; ++k) {
        const bool tcr_turn = (k == 0) == (i % 2 == 0);
        const Clock::time_point t0 = Clock::now();
        if (tcr_turn) {
          Result<StoppedWorld> w = m.suspend_all();
          if (!w || w->threads().size() != static_cast<std::size_t>(n) || !m.resume_all()) {
            std::fprintf(stderr, "tcr-bench stop-world: suspend_all failed\n");
            return 2;
          }
          ours.push_back(micros_since(t0));
        } else {
          GC_stop_world_external();
          GC_start_world_external();
          boehms.push_back(micros_since(t0));
        }
        std::this_thread::sleep_for(std::chrono::microseconds(o.settle_us));
      }
    }
    stop = true;
    for (int i = 0; i < n; ++i) park.post();
    for (ThreadRef r : refs) (void)m.join(r);
    rows.push_back(Row{n, median(std::move(ours)), median(std::move(boehms))});
    if (!o.json) {
      const Row& r = rows.back();
      fmt::print("{:>8} {:>12.1f} {:>12.1f} {:>8.2f}\n", r.threads, r.tcr_us, r.boehm_us,
                 r.tcr_us / r.boehm_us);
    }
  }
  if (o.json) {
    std::string out = fmt::format(R"({{"bench":"stop-world","mutators":"{}","stops":{},"rows":[)",
                                  o.busy ? "busy" : "waiting", o.stops);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      out += fmt::format(R"({}{{"threads":{},"tcr_us":{},"boehm_us":{},"ratio":{}}})",
                         i ? "," : "", r.threads, json_number(r.tcr_us),
                         json_number(r.boehm_us), json_number(r.tcr_us / r.boehm_us));
    }
    out += "]}";
    fmt::print("{}\n", out);
  }
  (void)m.release_current_thread();
  return 0;
}

}  // namespace

Subcommand add_stop_world_command(CLI::App& parent) {
  auto o = std::make_shared<StopWorldBenchOptions>();
  CLI::App* app = parent.add_subcommand(
      "stop-world",
      "suspend_all + resume_all vs Boehm's GC_stop_world_external + GC_start_world_external, "
      "median microseconds per stop-and-restart at each thread count (the header line is "
      "printed first in text mode)");
  app->add_option("--threads", o->threads, "Thread counts to measure")->capture_default_str();
  app->add_option("--stops", o->stops, "Stops per variant and thread count")
      ->capture_default_str();
  app->add_option("--settle-us", o->settle_us, "Pause after each stop (microseconds)")
      ->capture_default_str();
  app->add_flag("--busy", o->busy, "Mutators spin instead of waiting in a futex");
  app->add_flag("--json", o->json, "Print one JSON object");
  app->callback([o] {
    if (!o->json) fmt::print("{:>8} {:>12} {:>12} {:>8}\n", "threads", "tcr_us", "boehm_us", "ratio");
  });
  return {app, [o] { return run_stop_world(*o); }};
}

}  // namespace tcr::bench
