// tcr-bench's shared pieces: how a subcommand plugs into the CLI, and the statistics and JSON
// helpers every measurement uses. Each subcommand (spawn now; stop-world and traps later) lives in
// a file of its own, adds its options with add_*_command and runs only if the user chose it.
// The machine is shared and noisy: measurements are repeated in rounds, interleaved across the
// variants they compare, and reported as medians; nothing here asserts a timing.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace CLI {
class App;
}

namespace tcr::bench {

struct Subcommand {
  CLI::App* app;             // parsed() says whether the user chose it
  std::function<int()> run;  // its exit status: 0, or 2 when tcr or the OS returned an error
};

// `tcr-bench spawn`: the cost of one thread's create + exit + reap, tcr beside pthread and Boehm.
Subcommand add_spawn_command(CLI::App& parent);
// `tcr-bench handles`: shutdown step 5's cost, flat against the process's fd high-water mark.
Subcommand add_handles_command(CLI::App& parent);

using Clock = std::chrono::steady_clock;

inline double micros_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// User + system CPU time of every thread the process has had, exited ones included. Next to wall
// time it shows what an operation costs rather than how long a busy machine made it wait.
double process_cpu_us();

// Median of the samples (the mean of the middle two for an even count); NaN when empty.
double median(std::vector<double> samples);

// A JSON string literal, quotes included.
std::string json_string(std::string_view s);
// A JSON number with 3 decimals, or null for NaN and infinity, which JSON cannot carry.
std::string json_number(double v);

}  // namespace tcr::bench
