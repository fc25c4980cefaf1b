#include "runtime/error.h"

#include <cstring>

namespace tcr {

std::string_view to_string(Step step) {
  switch (step) {
#define TCR_STEP_TEXT(name, category, text) case Step::name: return text;
    TCR_STEPS(TCR_STEP_TEXT)
#undef TCR_STEP_TEXT
  }
  return "unknown step";
}

StepCategory category(Step step) {
  switch (step) {
#define TCR_STEP_CATEGORY(name, category, text) case Step::name: return StepCategory::category;
    TCR_STEPS(TCR_STEP_CATEGORY)
#undef TCR_STEP_CATEGORY
  }
  return StepCategory::Rule;
}

std::string Error::message() const {
  std::string out(to_string(step));
  if (code != 0 && category(step) == StepCategory::Errno) {
    out += ": ";
    out += std::strerror(code);
    if (const char* name = strerrorname_np(code)) {
      out += " (";
      out += name;
      out += ")";
    }
  } else if (code != 0 && category(step) == StepCategory::KernReturn) {
    out += ": kern_return_t " + std::to_string(code);
  }
  if (fixed_detail != nullptr) {
    out += ": ";
    out += fixed_detail;
  }
  if (!detail.empty()) {
    out += ": ";
    out += detail;
  }
  if (exception) {
    try {
      std::rethrow_exception(exception);
    } catch (const std::exception& e) {
      out += ": ";
      out += e.what();
    } catch (...) {
      out += ": (non-standard exception)";
    }
  }
  return out;
}

}  // namespace tcr
