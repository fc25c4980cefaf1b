// tcr::Error: what every fallible call in tcr returns instead of throwing.
// An Error names the step that failed (an OS call, or a rule of the API) and carries the OS's own
// code (errno, or a kern_return_t for Mach steps), so a caller can both print it and act on it.
// Results are std::expected<T, Error>; nothing in tcr throws across a thread or API boundary.
#pragma once

#include <cstdint>
#include <exception>
#include <expected>
#include <string>
#include <string_view>

#include "runtime/steps.h"

namespace tcr {

// What Error::code holds for a step.
enum class StepCategory : std::uint8_t {
  Errno,       // an OS call's errno (or errno-like: GcRegister), or a rule the kernel reported
  KernReturn,  // a Mach call's kern_return_t
  Rule,        // a rule of the API: code is 0 unless stated, and never printed
};

// The steps: runtime/steps.h (C-compatible, so the C API numbers them from the same list).
enum class Step : std::uint8_t {
#define TCR_STEP_ENUMERATOR(name, category, text) name,
  TCR_STEPS(TCR_STEP_ENUMERATOR)
#undef TCR_STEP_ENUMERATOR
};

// The step's text in a message; "unknown step" for a value outside the list.
std::string_view to_string(Step step);
// What the step's Error::code holds; Rule for a value outside the list.
StepCategory category(Step step);

struct Error {
  Step step;
  int code = 0;                  // errno, kern_return_t, or 0 (see Step)
  std::string detail = {};       // what the caller passed or which thread, when that helps
  std::exception_ptr exception;  // Step::ThreadThrew only
  // A string literal, for an error made where allocating is not allowed (while a region's pages
  // are claimed, a writer may be spinning on them): printed before `detail`.
  const char* fixed_detail = nullptr;

  // "pidfd_open: Too many open files (EMFILE)" and the like.
  std::string message() const;
};

template <class T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(Step step, int code = 0, std::string detail = {}) {
  return std::unexpected(Error{step, code, std::move(detail), nullptr});
}

// The same, allocating nothing: `literal` must outlive the error (a string literal).
inline std::unexpected<Error> fail_fixed(Step step, int code, const char* literal) {
  return std::unexpected(Error{step, code, {}, nullptr, literal});
}

}  // namespace tcr
