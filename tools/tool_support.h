// What tcr-soak and tcr-bench share: JSON output helpers, CPU time, medians, and the CLI's words
// for a kernel-handle mode. Small, for the tools only (not part of the library).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "runtime/kernel_handle.h"
#include "threads/thread_manager.h"

namespace tcr::tools {

// User + system CPU time of every thread the process has had, exited ones included. Next to wall
// time it shows what an operation costs rather than how long a busy machine made it wait.
double process_cpu_us();

// Median of the samples (the mean of the middle two for an even count); NaN when empty.
double median(std::vector<double> samples);

// A JSON string literal, quotes included.
std::string json_string(std::string_view s);
// A JSON number with 3 decimals, or null for NaN and infinity, which JSON cannot carry.
std::string json_number(double v);

// --handle-mode's words (auto, pidfd, tgkill) and the short word for the mode in force, which a
// script reading the JSON can compare (to_string(HandleMode) is meant for people).
HandleModeChoice handle_mode_choice(const std::string& word);
const char* handle_mode_word(HandleMode mode);

}  // namespace tcr::tools
