#include "runtime/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <string>

namespace tcr::log {

spdlog::logger& logger() {
  // Built once and never destroyed: a ThreadManager with static storage duration (or a thread
  // that exits while the process exits) logs from destructors that run after every function-local
  // static built later than the manager, this one included. The shared_ptr, never released,
  // keeps the logger alive past spdlog's registry and spdlog::shutdown() too.
  static const std::shared_ptr<spdlog::logger>* const s_logger = new std::shared_ptr<spdlog::logger>([] {
    std::shared_ptr<spdlog::logger> l = spdlog::get("tcr");
    if (!l) l = spdlog::stderr_color_mt("tcr");
    spdlog::level::level_enum level = spdlog::level::warn;
    if (const char* env = std::getenv("TCR_LOG_LEVEL"); env != nullptr && *env != '\0') {
      const std::string name(env);
      level = spdlog::level::from_str(name);
      // from_str answers "off" for names it does not know; say so rather than go quiet.
      if (level == spdlog::level::off && name != "off") {
        level = spdlog::level::warn;
        l->warn("TCR_LOG_LEVEL={} is not a level (trace, debug, info, warn, error, critical, off)",
                name);
      }
    }
    l->set_level(level);
    return l;
  }());
  return **s_logger;
}

}  // namespace tcr::log
