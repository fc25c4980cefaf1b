// tcr.h's version and error reporting: each thread's last failure, kept in thread-local storage
// with a fixed-size message, so that reporting allocates nothing (an ENOMEM is reported too).
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "capi/internal.h"

namespace tcr::capi {
namespace {

struct LastError {
  tcr_status step = TCR_OK;
  int code = 0;
  char message[512] = {};
};
thread_local LastError t_last;

// Each step's C value is its C++ value + 1, from the one list: checked for every step.
#define TCR_CHECK_STEP_VALUE(name, category, text) \
  static_assert(TCR_STEP_##name == to_status(Step::name), "tcr.h and tcr::Step disagree: " #name);
TCR_STEPS(TCR_CHECK_STEP_VALUE)
#undef TCR_CHECK_STEP_VALUE

}  // namespace

tcr_status fail_with(const Error& error) {
  LastError& last = t_last;
  last.step = to_status(error.step);
  last.code = error.code;
  try {
    const std::string text = error.message();
    std::snprintf(last.message, sizeof last.message, "%s", text.c_str());
  } catch (const std::bad_alloc&) {
    // No memory for the full text: the step's name and the detail literal, if any.
    std::snprintf(last.message, sizeof last.message, "%s%s%s", to_string(error.step).data(),
                  error.fixed_detail != nullptr ? ": " : "",
                  error.fixed_detail != nullptr ? error.fixed_detail : "");
  }
  return last.step;
}

tcr_status bad_argument(const char* what) {
  return fail_with(Error{Step::BadArgument, 0, {}, nullptr, what});
}

}  // namespace tcr::capi

using tcr::capi::t_last;

extern "C" {

int tcr_version(void) { return TCR_VERSION; }

const char* tcr_version_string(void) {
#define TCR_STRINGIFY_(x) #x
#define TCR_STRINGIFY(x) TCR_STRINGIFY_(x)
  return TCR_STRINGIFY(TCR_VERSION_MAJOR) "." TCR_STRINGIFY(TCR_VERSION_MINOR) "." TCR_STRINGIFY(
      TCR_VERSION_PATCH);
#undef TCR_STRINGIFY
#undef TCR_STRINGIFY_
}

tcr_status tcr_error_step(void) { return t_last.step; }
int tcr_error_code(void) { return t_last.code; }
const char* tcr_error_message(void) { return t_last.message; }

const char* tcr_step_name(tcr_status step) {
  const int value = tcr::capi::enum_value(step);  // any int a caller passed
  if (value == TCR_OK) return "ok";
  if (value < TCR_OK || value >= TCR_STEP_COUNT_) return "unknown step";
  // The texts are string literals: their views are NUL-terminated.
  return tcr::to_string(static_cast<tcr::Step>(value - 1)).data();
}

}  // extern "C"
