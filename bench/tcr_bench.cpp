// tcr-bench: benchmarks of tcr, one subcommand per question (spawn, handles, stop-world, traps). Each subcommand is a file of its own that registers its options through
// add_*_command (bench/bench.h); this file only parses and dispatches.
#include <CLI/CLI.hpp>
#include <vector>

#include "bench/bench.h"

int main(int argc, char** argv) {
  CLI::App app{
      "tcr-bench: what tcr's operations cost, beside the alternatives. Timings are "
      "medians over interleaved rounds; the machine may be shared and noisy."};
  app.require_subcommand(1);
  std::vector<tcr::bench::Subcommand> commands{tcr::bench::add_spawn_command(app),
                                               tcr::bench::add_handles_command(app),
                                               tcr::bench::add_stop_world_command(app),
                                               tcr::bench::add_traps_command(app)};
  CLI11_PARSE(app, argc, argv);
  for (const tcr::bench::Subcommand& command : commands) {
    if (command.app->parsed()) return command.run();
  }
  return 1;  // unreachable: require_subcommand(1) made the parser fail first
}
