// What tcr-soak shows: progress while it runs (a bar redrawn in place on a terminal, one plain line
// per interval otherwise, so logs and CI read well) and the summary at the end, as text or as one
// JSON object. Only formatting lives here; the soak loop and its pass/fail rule are in
// tcr_soak.cpp. Not thread-safe: the spawning thread alone calls it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "runtime/resources.h"

namespace tcr::soak {

// One interval of the foo loop: how fast it went and what the process held at its end.
struct IntervalSample {
  std::uint64_t index = 0;         // 1-based
  std::uint64_t threads_done = 0;  // cumulative, warm-up excluded
  std::uint64_t threads = 0;       // in this interval
  double us_per_thread = 0;        // wall clock: what a runtime's user waits
  double cpu_us_per_thread = 0;    // user + system CPU of the whole process: what the work costs,
                                   // far less swayed than wall time when the machine is busy
  ResourceCounts counts;
};

class Progress {
 public:
  enum class Style { Bar, Lines, None };
  // Bar when `out` is a terminal, plain lines otherwise; None when quiet.
  Progress(std::FILE* out, bool quiet, std::uint64_t total, std::uint64_t intervals);

  // Called after every spawn; redraws the bar now and then (never on the Lines style).
  void tick(std::uint64_t threads_done);
  void interval_done(const IntervalSample& sample);
  // Ends the bar's line so what follows starts on a fresh one.
  void finish();

 private:
  void draw_bar(std::uint64_t threads_done);

  std::FILE* m_out;
  Style m_style;
  std::uint64_t m_total;
  std::uint64_t m_intervals;
  std::uint64_t m_redraw_every;
  bool m_have_sample = false;
  IntervalSample m_last;  // the latest interval, whose numbers the bar shows until the next one
};

struct Summary {
  std::uint64_t threads = 0;
  std::uint64_t interval = 0;
  // What the threads were, counted by each thread from its own Tcr (warm-up included): the JSON's
  // mode and gc say what ran, not what was asked for.
  std::uint64_t runs = 0;
  std::uint64_t runs_detached = 0;
  std::uint64_t runs_gc_registered = 0;
  const char* handle_mode = "";  // the manager's, as it chose
  std::size_t stack_size = 0;
  std::size_t warmup = 0;
  double us_per_thread_first = 0;
  double us_per_thread_last = 0;
  double seconds = 0;
  std::uint64_t records = 0;  // Tcr objects ever allocated: flat when recycling works
  std::uint64_t reaped = 0;
  std::size_t rss_slack_kb = 0;
  bool memory_checked = true;  // maps and RSS were part of the verdict
  ResourceCounts baseline;
  ResourceCounts final_counts;
  std::vector<IntervalSample> intervals;
  std::vector<std::string> grew;  // names of the counts that ended above baseline (or past slack)

  // "detached" or "joinable" when every run was; "mixed" otherwise.
  const char* mode() const;
  bool gc() const { return runs > 0 && runs_gc_registered == runs; }
};

// The summary's trend figures read from its intervals: single intervals are noisy on a shared
// machine, so beside first/last it compares the medians of the first and last quarter of them.
struct Trend {
  double first_quarter_us = 0;
  double last_quarter_us = 0;
  double cpu_first_us = 0;
  double cpu_last_us = 0;
};
Trend trend(const Summary& summary);

void print_text(std::FILE* out, const Summary& summary);
void print_json(std::FILE* out, const Summary& summary);

}  // namespace tcr::soak
