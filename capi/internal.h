// What the C API's files share: turning a tcr::Error into the calling thread's last error and a
// tcr_status, and the checks every entry point makes on its arguments. Internal to capi/.
#pragma once

#include <cstddef>
#include <cstring>

#include "runtime/error.h"
#include "tcr.h"

namespace tcr::capi {

// Records `error` as the calling thread's last error and answers its status. Allocates nothing
// (the message goes into a fixed thread-local buffer, truncated), so it may report an ENOMEM.
tcr_status fail_with(const Error& error);
// A rule of the API the caller broke: BadArgument with `what` as the detail.
tcr_status bad_argument(const char* what);

template <class T>
tcr_status status_of(const Result<T>& r) {
  return r ? TCR_OK : fail_with(r.error());
}

// The value a caller stored in one of tcr.h's enums, as an int, read without the enum's type:
// a C caller may store any int there (7 in a tcr_trap_mode), and loading that as the C++ enum
// is undefined (UBSan's -fsanitize=enum stops on it). The switch on the int then refuses it.
template <class E>
int enum_value(const E& e) {
  static_assert(sizeof(E) == sizeof(int), "tcr.h's enums are int-sized, as C makes them");
  int v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

constexpr tcr_status to_status(Step step) {
  return static_cast<tcr_status>(static_cast<int>(step) + 1);
}

// Versioned option structs: copies what the caller's struct of `size` bytes holds over
// `defaults`; BadArgument (false) for a size below `min_size` (the first version's) or for
// bytes past what this library knows that are not zero.
// A size more than this past what the library knows is refused without reading the bytes:
// an uninitialized .size (a struct not set up with its *_init function) must not make the check
// read far past the caller's struct.
inline constexpr std::size_t kMaxUnknownBytes = 4096;

template <class T>
bool read_versioned(const T* given, std::size_t min_size, T* out) {
  if (given == nullptr) return true;
  const std::size_t size = given->size;
  if (size < min_size || size > sizeof(T) + kMaxUnknownBytes) return false;
  if (size > sizeof(T)) {
    const unsigned char* extra = reinterpret_cast<const unsigned char*>(given) + sizeof(T);
    for (std::size_t i = 0; i < size - sizeof(T); ++i) {
      if (extra[i] != 0) return false;
    }
  }
  std::memcpy(static_cast<void*>(out), given, size < sizeof(T) ? size : sizeof(T));
  out->size = sizeof(T);
  return true;
}

}  // namespace tcr::capi
