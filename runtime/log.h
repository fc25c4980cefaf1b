// tcr's one logger, "tcr" in spdlog's registry (stderr unless the embedding program registered its
// own "tcr" logger first). Its level comes from TCR_LOG_LEVEL (trace, debug, info, warn, error,
// critical, off; default warn). Calls below the level cost one load and compare: nothing is
// formatted. Never call these from a signal handler: spdlog allocates and locks.
#pragma once

#include <spdlog/spdlog.h>

#include <utility>

namespace tcr::log {

spdlog::logger& logger();

template <class... Args>
void at(spdlog::level::level_enum level, spdlog::format_string_t<Args...> fmt, Args&&... args) {
  spdlog::logger& l = logger();
  if (l.should_log(level)) l.log(level, fmt, std::forward<Args>(args)...);
}

template <class... Args>
void debug(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  at(spdlog::level::debug, fmt, std::forward<Args>(args)...);
}
template <class... Args>
void info(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  at(spdlog::level::info, fmt, std::forward<Args>(args)...);
}
template <class... Args>
void warn(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  at(spdlog::level::warn, fmt, std::forward<Args>(args)...);
}
template <class... Args>
void error(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  at(spdlog::level::err, fmt, std::forward<Args>(args)...);
}

}  // namespace tcr::log
