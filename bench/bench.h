// tcr-bench's shared pieces: how a subcommand plugs into the CLI, and the statistics and JSON
// helpers every measurement uses. Each subcommand (spawn, handles, stop-world, traps) lives in
// a file of its own, adds its options with add_*_command and runs only if the user chose it.
// The machine is shared and noisy: measurements are repeated in rounds, interleaved across the
// variants they compare, and reported as medians; nothing here asserts a timing.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "tools/tool_support.h"

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
// `tcr-bench handles`: normalize_kernel_handles' cost, flat against the process's fd
// high-water mark.
Subcommand add_handles_command(CLI::App& parent);
// `tcr-bench stop-world`: suspend_all + resume_all beside Boehm's external stop/start.
Subcommand add_stop_world_command(CLI::App& parent);
// `tcr-bench traps`: a write barrier's cost per ProtectedRegion mode (first write, collect).
Subcommand add_traps_command(CLI::App& parent);

using Clock = std::chrono::steady_clock;

inline double micros_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// The tools' shared helpers (tools/tool_support.h), by their short names.
using tools::handle_mode_choice;
using tools::handle_mode_word;
using tools::json_number;
using tools::json_string;
using tools::median;
using tools::process_cpu_us;

}  // namespace tcr::bench
