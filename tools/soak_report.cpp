#include "tools/soak_report.h"
#include "tools/tool_support.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <string_view>

namespace tcr::soak {
namespace {

constexpr int kBarWidth = 30;

using tools::json_number;
using tools::json_string;
using tools::median;

std::string json_counts(const ResourceCounts& c) {
  std::string out = fmt::format(R"({{"fds":{},"pidfds":{},"maps":{},"threads":{},"rss_kb":{})",
                                c.fds, c.pidfds, c.maps, c.threads, c.rss_kb);
  if (c.port_names) out += fmt::format(",\"port_names\":{}", *c.port_names);
  out += ",\"fds_by_kind\":{";
  bool first = true;
  for (const auto& [kind, n] : c.fds_by_kind) {
    out += fmt::format("{}{}:{}", first ? "" : ",", json_string(kind), n);
    first = false;
  }
  return out + "}}";
}

double ratio(double last, double first) { return first > 0 ? last / first : NAN; }

}  // namespace

Trend trend(const Summary& s) {
  Trend t;
  if (s.intervals.empty()) return t;
  const std::size_t quarter = std::max<std::size_t>(1, s.intervals.size() / 4);
  std::vector<double> first, last;
  for (std::size_t i = 0; i < quarter; ++i) {
    first.push_back(s.intervals[i].us_per_thread);
    last.push_back(s.intervals[s.intervals.size() - 1 - i].us_per_thread);
  }
  t.first_quarter_us = median(std::move(first));
  t.last_quarter_us = median(std::move(last));
  t.cpu_first_us = s.intervals.front().cpu_us_per_thread;
  t.cpu_last_us = s.intervals.back().cpu_us_per_thread;
  return t;
}

Progress::Progress(std::FILE* out, bool quiet, std::uint64_t total, std::uint64_t intervals)
    : m_out(out),
      m_style(quiet                 ? Style::None
              : isatty(fileno(out)) ? Style::Bar
                                    : Style::Lines),
      m_total(total),
      m_intervals(intervals),
      // ~200 redraws per run: smooth to the eye, and a write() every few hundred spawns costs
      // nothing next to the spawns themselves.
      m_redraw_every(std::max<std::uint64_t>(1, total / 200)) {}

void Progress::tick(std::uint64_t threads_done) {
  if (m_style == Style::Bar && threads_done % m_redraw_every == 0) draw_bar(threads_done);
}

void Progress::interval_done(const IntervalSample& s) {
  m_last = s;
  m_have_sample = true;
  if (m_style == Style::Bar) {
    draw_bar(s.threads_done);
  } else if (m_style == Style::Lines) {
    fmt::print(m_out,
               "interval {}/{}: threads {} us/thread {:.1f} fds {} pidfds {} maps {} threads {} "
               "rss_kb {} cpu_us/thread {:.1f}\n",
               s.index, m_intervals, s.threads_done, s.us_per_thread, s.counts.fds, s.counts.pidfds,
               s.counts.maps, s.counts.threads, s.counts.rss_kb, s.cpu_us_per_thread);
    std::fflush(m_out);
  }
}

void Progress::draw_bar(std::uint64_t threads_done) {
  double fraction = m_total ? static_cast<double>(threads_done) / static_cast<double>(m_total) : 1;
  int filled = static_cast<int>(fraction * kBarWidth);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.resize(kBarWidth, '.');
  std::string numbers = "us/thread -";
  if (m_have_sample) {
    const ResourceCounts& c = m_last.counts;
    numbers = fmt::format("us/thread {:.1f}  fds {} pidfds {} maps {} threads {}",
                          m_last.us_per_thread, c.fds, c.pidfds, c.maps, c.threads);
  }
  // \r returns to the line's start and ESC[K clears what a longer previous line left behind.
  fmt::print(m_out, "\r[{}] {:5.1f}%  {}\x1b[K", bar, fraction * 100, numbers);
  std::fflush(m_out);
}

void Progress::finish() {
  if (m_style == Style::Bar) {
    fmt::print(m_out, "\n");
    std::fflush(m_out);
  }
}

void print_text(std::FILE* out, const Summary& s) {
  fmt::print(out, "tcr-soak: {} threads ({}, handle mode {}, stack {} KiB, gc {}) in {:.2f} s\n",
             s.threads, s.runs_detached == 0 ? "spawn + join" : "detached + semaphore",
             s.handle_mode, s.stack_size / 1024, s.gc() ? "on" : "off", s.seconds);
  const Trend t = trend(s);
  fmt::print(out, "  us/thread: first interval {:.1f}, last interval {:.1f}, ratio {:.2f}\n",
             s.us_per_thread_first, s.us_per_thread_last,
             ratio(s.us_per_thread_last, s.us_per_thread_first));
  fmt::print(out, "  us/thread, median of first and last quarter: {:.1f}, {:.1f}, ratio {:.2f}\n",
             t.first_quarter_us, t.last_quarter_us, ratio(t.last_quarter_us, t.first_quarter_us));
  fmt::print(out, "  cpu us/thread: first interval {:.1f}, last interval {:.1f}, ratio {:.2f}\n",
             t.cpu_first_us, t.cpu_last_us, ratio(t.cpu_last_us, t.cpu_first_us));
  fmt::print(out, "  {:<10}{:>8}{:>8}{:>8}{:>9}{:>10}\n", "", "fds", "pidfds", "maps", "threads",
             "rss_kb");
  for (const auto& [label, c] : {std::pair{"baseline", &s.baseline}, {"final", &s.final_counts}}) {
    fmt::print(out, "  {:<10}{:>8}{:>8}{:>8}{:>9}{:>10}\n", label, c->fds, c->pidfds, c->maps,
               c->threads, c->rss_kb);
  }
  fmt::print(out, "  manager: {} records allocated, {} threads reaped\n", s.records, s.reaped);
  if (s.grew.empty()) {
    if (s.memory_checked) {
      fmt::print(out, "  ok: every count back to baseline (rss within {} KiB)\n", s.rss_slack_kb);
    } else {
      fmt::print(out,
                 "  ok: fds, pidfds and threads back to baseline (maps and rss not checked)\n");
    }
  } else {
    fmt::print(out, "  LEAK: {}\n", fmt::join(s.grew, ", "));
  }
}

void print_json(std::FILE* out, const Summary& s) {
  const Trend t = trend(s);
  std::string intervals;
  for (const IntervalSample& i : s.intervals) {
    if (!intervals.empty()) intervals += ',';
    intervals += fmt::format(
        R"({{"index":{},"threads_done":{},"us_per_thread":{},"cpu_us_per_thread":{},"counts":{}}})",
        i.index, i.threads_done, json_number(i.us_per_thread), json_number(i.cpu_us_per_thread),
        json_counts(i.counts));
  }
  std::string grew;
  for (const std::string& g : s.grew) grew += (grew.empty() ? "" : ",") + json_string(g);
  fmt::print(out,
             R"({{"threads":{},"interval":{},"mode":"{}","handle_mode":{},"stack_size":{},)"
             R"("gc":{},"runs":{},"runs_detached":{},"runs_gc_registered":{},)"
             R"("warmup":{},"us_per_thread_first":{},"us_per_thread_last":{},)"
             R"("ratio":{},"us_per_thread_first_quarter":{},"us_per_thread_last_quarter":{},)"
             R"("ratio_quarters":{},"cpu_us_per_thread_first":{},"cpu_us_per_thread_last":{},)"
             R"("cpu_ratio":{},"seconds":{},"records":{},"reaped":{},"rss_slack_kb":{},)"
             R"("memory_checked":{},)"
             R"("baseline":{},"final":{},"ok":{},"grew":[{}],"intervals":[{}]}})"
             "\n",
             s.threads, s.interval, s.mode(), json_string(s.handle_mode), s.stack_size, s.gc(),
             s.runs, s.runs_detached, s.runs_gc_registered, s.warmup,
             json_number(s.us_per_thread_first), json_number(s.us_per_thread_last),
             json_number(ratio(s.us_per_thread_last, s.us_per_thread_first)),
             json_number(t.first_quarter_us), json_number(t.last_quarter_us),
             json_number(ratio(t.last_quarter_us, t.first_quarter_us)), json_number(t.cpu_first_us),
             json_number(t.cpu_last_us), json_number(ratio(t.cpu_last_us, t.cpu_first_us)),
             json_number(s.seconds), s.records, s.reaped, s.rss_slack_kb, s.memory_checked,
             json_counts(s.baseline), json_counts(s.final_counts), s.grew.empty(), grew, intervals);
}

const char* Summary::mode() const {
  if (runs_detached == runs) return "detached";
  return runs_detached == 0 ? "joinable" : "mixed";
}

}  // namespace tcr::soak
