// Uses an installed tcr: creates a manager, spawns a thread that computes a value, joins it and
// checks the value. Exit status 0 only if all of that worked.
#include <threads/thread_manager.h>

#include <cstdint>
#include <cstdio>

namespace {

int fail(const char* what, const tcr::Error& error) {
  std::fprintf(stderr, "install consumer: %s: %s\n", what, error.message().c_str());
  return 1;
}

}  // namespace

int main() {
  auto manager = tcr::ThreadManager::create();
  if (!manager) return fail("create", manager.error());

  tcr::SpawnOptions options;
  options.argument = reinterpret_cast<void*>(std::uintptr_t{20});
  auto thread = (*manager)->spawn(
      "consumer",
      [](tcr::Tcr& self) -> void* {
        auto n = reinterpret_cast<std::uintptr_t>(self.argument());
        return reinterpret_cast<void*>(2 * n + 2);
      },
      options);
  if (!thread) return fail("spawn", thread.error());

  auto result = (*manager)->join(*thread);
  if (!result) return fail("join", result.error());
  auto value = reinterpret_cast<std::uintptr_t>(*result);
  if (value != 42) {
    std::fprintf(stderr, "install consumer: thread returned %ju, expected 42\n", std::uintmax_t{value});
    return 1;
  }

  if (auto down = (*manager)->shutdown(); !down) return fail("shutdown", down.error());
  std::puts("install consumer: spawned, joined, got 42");
  return 0;
}
