#include "runtime/log.h"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

#include "runtime/fork.h"

namespace tcr::log {
namespace {

// stderr, colored on a terminal, behind a lock of our own: spdlog's console sinks share one lock
// that tcr cannot reach, and a fork while another thread logs would leave it held in the child.
// This one is a fork participant (runtime/fork.h).
class StderrSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::mutex& lock() { return mutex_; }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override { m_out.log(msg); }
  void flush_() override { m_out.flush(); }
  void set_pattern_(const std::string& pattern) override { m_out.set_pattern(pattern); }
  void set_formatter_(std::unique_ptr<spdlog::formatter> formatter) override {
    m_out.set_formatter(std::move(formatter));
  }

 private:
  spdlog::sinks::stderr_color_sink_st m_out;  // unlocked: the base's lock covers it
};

std::shared_ptr<spdlog::logger> make_logger() {
  std::shared_ptr<spdlog::logger> l = spdlog::get("tcr");
  if (l) return l;  // the embedding program's own: its sinks' locks are its business at fork
  auto sink = std::make_shared<StderrSink>();
  fork_participate(fork_guard("logger", ForkRank::Logger, sink->lock()));
  l = std::make_shared<spdlog::logger>("tcr", sink);
  try {
    spdlog::initialize_logger(l);
  } catch (const spdlog::spdlog_ex&) {
    // Registered by the program meanwhile: use that one, as if it had been first.
    if (std::shared_ptr<spdlog::logger> theirs = spdlog::get("tcr")) return theirs;
  }
  return l;
}

}  // namespace

spdlog::logger& logger() {
  // Built once and never destroyed: a ThreadManager with static storage duration (or a thread
  // that exits while the process exits) logs from destructors that run after every function-local
  // static built later than the manager, this one included. The shared_ptr, never released,
  // keeps the logger alive past spdlog's registry and spdlog::shutdown() too.
  static const std::shared_ptr<spdlog::logger>* const s_logger = new std::shared_ptr<spdlog::logger>([] {
    std::shared_ptr<spdlog::logger> l = make_logger();
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
