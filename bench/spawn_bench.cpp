// `tcr-bench spawn`: what one thread's life (create, exit, reap) costs through tcr, next to what
// it costs bare and through Boehm GC, and whether that cost stays flat over history (invariant 2;
// the seeds' CCL went from ~0.3 ms to ~10 ms per thread after 150,000 of them).
//
// Variants, each a loop of --threads cycles:
//   pthread         pthread_create + pthread_join: the floor any thread manager builds on
//   pthread_detach  pthread_create detached, the thread signals a semaphore: the foo loop's floor
//   gc_pthread      GC_pthread_create + GC_pthread_join: what a Boehm-based runtime pays today
//   tcr_join        ThreadManager::spawn + join (pidfd, own stack + guard page, GC registration)
//   tcr_detach      spawn detached, the thread signals a semaphore, reap at the end: CCL's foo
//                   loop
// Each variant's ratio_to_baseline compares it with its like: a detached loop, whose exits
// overlap the next create on the second core, with pthread_detach; the others with pthread.
// All use the same stack size. glibc caches the stacks of joined pthreads, so the first two
// variants reuse one stack while tcr maps its own: that difference is part of what is measured.
// The machine is shared and noisy: every round runs every variant once, in an order that rotates
// from round to round, so drift and order effects spread over all of them; medians are reported.
#define GC_THREADS
// Call GC_pthread_create by name: without this, gc.h would turn the bare variant's
// pthread_create into GC_pthread_create too.
#define GC_NO_THREAD_REDIRECTS
#include <gc/gc.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <semaphore>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "bench/bench.h"
#include "runtime/error.h"
#include "threads/thread_manager.h"

namespace tcr::bench {
namespace {

struct SpawnBenchOptions {
  std::uint64_t threads = 2000;  // cycles per variant per round
  std::uint64_t rounds = 9;
  std::size_t stack_size = SpawnOptions{}.stack_size;
  std::string handle_mode = "auto";  // auto, pidfd or tgkill
  std::uint64_t history_window = 10000;
  std::uint64_t history_after = 200000;
  std::uint64_t fd_high_water = 16000;
  bool json = false;
};

void* return_null(void*) { return nullptr; }

// One bare thread life, through pthread_create or GC_pthread_create (same signatures).
template <class Create, class Join>
Result<void> pthread_cycles(std::uint64_t n, std::size_t stack_size, Create create, Join join,
                            const char* who) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, stack_size);
  for (std::uint64_t i = 0; i < n; ++i) {
    pthread_t thread;
    if (int rc = create(&thread, &attr, return_null, nullptr); rc != 0) {
      pthread_attr_destroy(&attr);
      return fail(Step::PthreadCreate, rc, who);
    }
    if (int rc = join(thread, nullptr); rc != 0) {
      pthread_attr_destroy(&attr);
      return fail(Step::PthreadJoin, rc, who);
    }
  }
  pthread_attr_destroy(&attr);
  return {};
}

// The foo loop bare: each thread is created detached and signals the semaphore as its last act;
// the loop waits for the signal, not for the exit, as tcr_detach does.
void* post_and_return(void* done) {
  static_cast<std::counting_semaphore<>*>(done)->release();
  return nullptr;
}

Result<void> pthread_detached_cycles(std::uint64_t n, std::size_t stack_size,
                                     std::counting_semaphore<>& done) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, stack_size);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  for (std::uint64_t i = 0; i < n; ++i) {
    pthread_t thread;
    if (int rc = ::pthread_create(&thread, &attr, post_and_return, &done); rc != 0) {
      pthread_attr_destroy(&attr);
      return fail(Step::PthreadCreate, rc, "pthread_detach");
    }
    done.acquire();
  }
  pthread_attr_destroy(&attr);
  return {};
}

class SpawnBench {
 public:
  SpawnBench(const SpawnBenchOptions& o, ThreadManager& manager)
      : m_o(o),
        m_manager(manager),
        m_joinable{.stack_size = o.stack_size},
        m_detached{.stack_size = o.stack_size, .detached = true} {}

  Result<void> tcr_join(std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) {
      auto thread = m_manager.spawn("bench", m_do_nothing, m_joinable);
      if (!thread) return std::unexpected(thread.error());
      if (auto joined = m_manager.join(*thread); !joined) return std::unexpected(joined.error());
    }
    return {};
  }

  // The foo loop. The last threads' reaping is part of their cost, so it is inside the timing.
  Result<void> tcr_detach(std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) {
      auto thread = m_manager.spawn("bench", m_signal_done, m_detached);
      if (!thread) return std::unexpected(thread.error());
      m_done.acquire();
    }
    m_manager.reap(ThreadManager::Reap::WaitForRunning);
    return {};
  }

  Result<void> pthread(std::uint64_t n) {
    return pthread_cycles(n, m_o.stack_size, ::pthread_create, ::pthread_join, "pthread");
  }
  Result<void> pthread_detach(std::uint64_t n) {
    return pthread_detached_cycles(n, m_o.stack_size, m_bare_done);
  }
  Result<void> gc_pthread(std::uint64_t n) {
    return pthread_cycles(n, m_o.stack_size, GC_pthread_create, GC_pthread_join, "gc_pthread");
  }

 private:
  const SpawnBenchOptions& m_o;
  ThreadManager& m_manager;
  const SpawnOptions m_joinable;
  const SpawnOptions m_detached;
  std::counting_semaphore<> m_done{0};
  std::counting_semaphore<> m_bare_done{0};
  const ThreadFunction m_do_nothing = [](Tcr&) -> void* { return nullptr; };
  const ThreadFunction m_signal_done = [this](Tcr&) -> void* {
    m_done.release();
    return nullptr;
  };
};

struct Variant {
  const char* key;
  const char* label;
  Result<void> (SpawnBench::*run)(std::uint64_t);
  const char* baseline;  // the key of the variant it is compared with (ratio_to_baseline)
  std::vector<double> us_per_thread;      // wall clock, one per round
  std::vector<double> cpu_us_per_thread;  // process CPU, one per round
};

struct History {
  double us_first = 0;  // median over chunks of the manager's first window of spawns
  double us_after = 0;  // the same window, after `after` more spawns
  double ratio = 0;
};

// µs per thread over `window` cycles of `variant`, as the median of `chunks` timed chunks: one
// burst of noise from a neighbour moves a chunk, not the median.
Result<double> timed_window(SpawnBench& bench, Result<void> (SpawnBench::*variant)(std::uint64_t),
                            std::uint64_t window, std::uint64_t chunks) {
  const std::uint64_t chunk = std::max<std::uint64_t>(1, window / chunks);
  std::vector<double> samples;
  for (std::uint64_t done = 0; done < window; done += chunk) {
    const std::uint64_t n = std::min(chunk, window - done);
    const Clock::time_point t0 = Clock::now();
    if (auto r = (bench.*variant)(n); !r) return std::unexpected(r.error());
    samples.push_back(micros_since(t0) / static_cast<double>(n));
  }
  return median(std::move(samples));
}

Result<double> history_window(SpawnBench& bench, std::uint64_t window) {
  return timed_window(bench, &SpawnBench::tcr_detach, window, 10);
}

Result<History> measure_history(SpawnBench& bench, const SpawnBenchOptions& o) {
  History h;
  auto first = history_window(bench, o.history_window);
  if (!first) return std::unexpected(first.error());
  if (auto r = bench.tcr_detach(o.history_after); !r) return std::unexpected(r.error());
  auto after = history_window(bench, o.history_window);
  if (!after) return std::unexpected(after.error());
  h.us_first = *first;
  h.us_after = *after;
  h.ratio = h.us_first > 0 ? h.us_after / h.us_first : NAN;
  return h;
}

// Cost flat against the process's fd high-water mark: a long-running server may once have had
// tens of thousands of sockets open. While they are open, tcr's pidfds get high fd numbers (the
// kernel hands out the lowest free one) and tcr's handle table grows to match; it never shrinks.
// Thread exit must cost what the thread holds, not what the table ever held.
struct FdHighWater {
  std::size_t fds = 0;  // how many extra fds were open in the middle phase
  double us_before = 0, us_with = 0, us_after = 0;
  double ratio_with = 0, ratio_after = 0;
};

Result<double> join_window(SpawnBench& bench, std::uint64_t window) {
  return timed_window(bench, &SpawnBench::tcr_join, window, 5);
}

Result<FdHighWater> measure_fd_high_water(SpawnBench& bench, const SpawnBenchOptions& o) {
  FdHighWater h;
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  const rlim_t want = static_cast<rlim_t>(o.fd_high_water) + 512;
  if (limit.rlim_cur < want) {
    limit.rlim_cur = std::min(want, limit.rlim_max);
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  const std::size_t room = limit.rlim_cur > 512 ? static_cast<std::size_t>(limit.rlim_cur) - 512 : 0;
  h.fds = std::min<std::size_t>(o.fd_high_water, room);
  const std::uint64_t window = std::max<std::uint64_t>(5, o.threads);
  auto before = join_window(bench, window);
  if (!before) return std::unexpected(before.error());
  std::vector<int> held;
  held.reserve(h.fds);
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  for (std::size_t i = 0; i < h.fds && devnull >= 0; ++i) {
    const int fd = ::fcntl(devnull, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) break;
    held.push_back(fd);
  }
  h.fds = held.size();
  auto with = join_window(bench, window);
  for (int fd : held) ::close(fd);
  if (devnull >= 0) ::close(devnull);
  if (!with) return std::unexpected(with.error());
  auto after = join_window(bench, window);
  if (!after) return std::unexpected(after.error());
  h.us_before = *before;
  h.us_with = *with;
  h.us_after = *after;
  h.ratio_with = h.us_with / h.us_before;
  h.ratio_after = h.us_after / h.us_before;
  return h;
}

// The median µs of the variant named `key`.
double median_of(const std::vector<Variant>& variants, std::string_view key) {
  for (const Variant& v : variants) {
    if (key == v.key) return median(v.us_per_thread);
  }
  return NAN;
}

void print_text(const SpawnBenchOptions& o, const char* mode, const std::vector<Variant>& variants,
                double pthread_us, const History* history, const FdHighWater* fds,
                double seconds) {
  fmt::print(
      "tcr-bench spawn: {} threads x {} rounds per variant, stack {} KiB, handle mode {}; "
      "medians over rounds\n",
      o.threads, o.rounds, o.stack_size / 1024, mode);
  fmt::print("  {:<40}{:>10}{:>8}{:>8}{:>11}{:>20}{:>9}\n", "variant", "us/thread", "min", "max",
             "x pthread", "x like (baseline)", "cpu us");
  for (const Variant& v : variants) {
    const double med = median(v.us_per_thread);
    fmt::print("  {:<40}{:>10.1f}{:>8.1f}{:>8.1f}{:>11.2f}{:>6.2f} {:>13}{:>9.1f}\n", v.label, med,
               *std::min_element(v.us_per_thread.begin(), v.us_per_thread.end()),
               *std::max_element(v.us_per_thread.begin(), v.us_per_thread.end()), med / pthread_us,
               med / median_of(variants, v.baseline), fmt::format("({})", v.baseline),
               median(v.cpu_us_per_thread));
  }
  if (history) {
    fmt::print(
        "  history (detached + semaphore): first {} spawns {:.1f} us, after {} more "
        "{:.1f} us, ratio {:.2f}\n",
        o.history_window, history->us_first, o.history_after, history->us_after, history->ratio);
  }
  if (fds) {
    fmt::print(
        "  fd high-water (spawn + join): {:.1f} us; with {} more fds open {:.1f} us (x{:.2f}); "
        "after closing them {:.1f} us (x{:.2f})\n",
        fds->us_before, fds->fds, fds->us_with, fds->ratio_with, fds->us_after, fds->ratio_after);
  }
  fmt::print("  total {:.1f} s\n", seconds);
}

void print_json(const SpawnBenchOptions& o, const char* mode, const std::vector<Variant>& variants,
                double pthread_us, const History* history, const FdHighWater* fds,
                double seconds) {
  std::string out = fmt::format(
      R"({{"bench":"spawn","threads":{},"rounds":{},"stack_size":{},"handle_mode":{},"variants":{{)",
      o.threads, o.rounds, o.stack_size, json_string(mode));
  bool first = true;
  for (const Variant& v : variants) {
    std::string rounds;
    for (double us : v.us_per_thread) rounds += (rounds.empty() ? "" : ",") + json_number(us);
    const double med = median(v.us_per_thread);
    out += fmt::format(
        R"({}{}:{{"label":{},"us_per_thread":{},"min":{},"max":{},"ratio_to_pthread":{},)"
        R"("baseline":{},"ratio_to_baseline":{},"cpu_us_per_thread":{},"rounds":[{}]}})",
        first ? "" : ",", json_string(v.key), json_string(v.label), json_number(med),
        json_number(*std::min_element(v.us_per_thread.begin(), v.us_per_thread.end())),
        json_number(*std::max_element(v.us_per_thread.begin(), v.us_per_thread.end())),
        json_number(med / pthread_us), json_string(v.baseline),
        json_number(med / median_of(variants, v.baseline)), json_number(median(v.cpu_us_per_thread)),
        rounds);
    first = false;
  }
  out += "},\"history\":";
  out += history
             ? fmt::format(R"({{"window":{},"after":{},"us_first":{},"us_after":{},"ratio":{}}})",
                           o.history_window, o.history_after, json_number(history->us_first),
                           json_number(history->us_after), json_number(history->ratio))
             : "null";
  out += ",\"fd_high_water\":";
  out += fds ? fmt::format(R"({{"fds":{},"us_before":{},"us_with":{},"us_after":{},)"
                           R"("ratio_with":{},"ratio_after":{}}})",
                           fds->fds, json_number(fds->us_before), json_number(fds->us_with),
                           json_number(fds->us_after), json_number(fds->ratio_with),
                           json_number(fds->ratio_after))
             : "null";
  out += fmt::format(",\"seconds\":{}}}\n", json_number(seconds));
  std::fputs(out.c_str(), stdout);
}

int run_spawn(const SpawnBenchOptions& o) {
  auto fail_with = [](const Error& e, std::string_view what) {
    std::fprintf(stderr, "tcr-bench spawn: %.*s: %s\n", static_cast<int>(what.size()), what.data(),
                 e.message().c_str());
    return 2;
  };
  const Clock::time_point start = Clock::now();
  // The manager initializes Boehm GC (from this, the main thread), which the gc_pthread variant
  // needs too: so it comes first.
  ManagerOptions manager_options;
  manager_options.handle_mode = handle_mode_choice(o.handle_mode);
  auto created = ThreadManager::create(std::move(manager_options));
  if (!created) return fail_with(created.error(), "creating the thread manager");
  SpawnBench bench(o, **created);
  const char* mode = handle_mode_word((*created)->handle_mode());

  // History first, so that its first window is early in the manager's life. Both windows follow
  // at least a window of untimed spawns: after one warm-up spawn the first window would still pay
  // cold-start costs (the handle-mode probe, the logger, caches filling) that the second, after
  // hundreds of thousands, does not, and a ratio below 1 from that could mask growth.
  std::optional<History> history;
  if (o.history_after > 0 && o.history_window > 0) {
    if (auto r = bench.tcr_detach(o.history_window); !r) return fail_with(r.error(), "warm-up");
    auto h = measure_history(bench, o);
    if (!h) return fail_with(h.error(), "history");
    history = *h;
  }

  std::vector<Variant> variants{
      {"pthread", "pthread_create + join", &SpawnBench::pthread, "pthread", {}, {}},
      {"pthread_detach", "pthread_create detached + semaphore", &SpawnBench::pthread_detach,
       "pthread_detach", {}, {}},
      {"gc_pthread", "GC_pthread_create + join", &SpawnBench::gc_pthread, "pthread", {}, {}},
      {"tcr_join", "tcr spawn + join", &SpawnBench::tcr_join, "pthread", {}, {}},
      {"tcr_detach", "tcr spawn detached + semaphore + reap", &SpawnBench::tcr_detach,
       "pthread_detach", {}, {}},
  };
  // One untimed round at a tenth of the size: first-touch costs (stack caches, GC thread tables,
  // the HandleTable growing) belong to no variant.
  for (Variant& v : variants) {
    if (auto r = (bench.*v.run)(std::max<std::uint64_t>(1, o.threads / 10)); !r) {
      return fail_with(r.error(), v.key);
    }
  }
  for (std::uint64_t round = 0; round < o.rounds; ++round) {
    for (std::size_t j = 0; j < variants.size(); ++j) {
      Variant& v = variants[(round + j) % variants.size()];
      const Clock::time_point t0 = Clock::now();
      const double cpu0 = process_cpu_us();
      if (auto r = (bench.*v.run)(o.threads); !r) return fail_with(r.error(), v.key);
      v.us_per_thread.push_back(micros_since(t0) / static_cast<double>(o.threads));
      v.cpu_us_per_thread.push_back((process_cpu_us() - cpu0) / static_cast<double>(o.threads));
    }
  }

  std::optional<FdHighWater> fds;
  if (o.fd_high_water > 0) {
    auto h = measure_fd_high_water(bench, o);
    if (!h) return fail_with(h.error(), "fd high-water");
    fds = *h;
  }

  const double pthread_us = median(variants[0].us_per_thread);
  const double seconds = micros_since(start) / 1e6;
  if (o.json) {
    print_json(o, mode, variants, pthread_us, history ? &*history : nullptr,
               fds ? &*fds : nullptr, seconds);
  } else {
    print_text(o, mode, variants, pthread_us, history ? &*history : nullptr,
               fds ? &*fds : nullptr, seconds);
  }
  return 0;
}

}  // namespace

Subcommand add_spawn_command(CLI::App& parent) {
  auto o = std::make_shared<SpawnBenchOptions>();
  CLI::App* app = parent.add_subcommand(
      "spawn",
      "Cost of a thread's create + exit + reap: tcr next to pthread and Boehm GC, "
      "interleaved in rounds (medians), and over a long history");
  app->add_option("-n,--threads", o->threads, "Cycles per variant per round")
      ->check(CLI::Range(1, 100000000))
      ->capture_default_str();
  app->add_option("-r,--rounds", o->rounds, "Rounds; each runs every variant once")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app->add_option("--stack-size", o->stack_size, "Every variant's thread stack, e.g. 256K or 1M")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  app->add_option("--handle-mode", o->handle_mode, "tcr's kernel handle: auto, pidfd or tgkill")
      ->transform(CLI::IsMember({"auto", "pidfd", "tgkill"}, CLI::ignore_case))
      ->capture_default_str();
  app->add_option("--history-window", o->history_window,
                  "Spawns timed at the start and again after --history-after more")
      ->capture_default_str();
  app->add_option("--history-after", o->history_after,
                  "Spawns between the two history windows (0: skip the history)")
      ->capture_default_str();
  app->add_option("--fd-high-water", o->fd_high_water,
                  "Extra fds held open in the middle of the fd high-water measurement (0: skip)")
      ->capture_default_str();
  app->add_flag("--json", o->json, "Print one JSON object");
  return {app, [o] { return run_spawn(*o); }};
}

}  // namespace tcr::bench
