// The plan behind fail_nth: a call counter and an armed range per os::Call, consulted by the OS
// shim through its fault hook. Each call pays one counter increment and, while nothing is armed,
// one acquire load; the shim's calls may run in a signal handler (sigaltstack), so the hook only
// touches lock-free atomics.
#include "testing/fault_injection.h"

#include <atomic>
#include <cstddef>

namespace tcr::os {
namespace {

struct Plan {
  std::atomic<std::uint64_t> calls{0};
  // Calls numbered [first, first + times) fail; 0 means disarmed.
  std::atomic<std::uint64_t> first{0};
  std::atomic<std::uint64_t> times{0};
  std::atomic<int> err{0};
};

Plan g_plans[static_cast<std::size_t>(Call::kCount)];
std::atomic<bool> g_any_armed{false};

Plan& plan(Call call) { return g_plans[static_cast<std::size_t>(call)]; }

// The hook: counts the call, then fails it if it is one the plan chose.
int count_and_plan(Call call) {
  Plan& p = plan(call);
  const std::uint64_t number = p.calls.fetch_add(1, std::memory_order_relaxed) + 1;
  if (!g_any_armed.load(std::memory_order_acquire)) return 0;
  const std::uint64_t first = p.first.load(std::memory_order_acquire);
  if (first == 0 || number < first || number >= first + p.times.load(std::memory_order_relaxed)) {
    return 0;
  }
  return p.err.load(std::memory_order_relaxed);
}

// Before main: the counts start with the process. (The plans above are constant-initialized, so
// no call can reach them before they exist.)
[[maybe_unused]] const bool g_hooked = (set_fault_hook(&count_and_plan), true);

}  // namespace

void fail_nth(Call call, std::uint64_t nth, int err, std::uint64_t times) {
  Plan& p = plan(call);
  p.first.store(0, std::memory_order_relaxed);  // disarm while rewriting
  p.err.store(err, std::memory_order_relaxed);
  p.times.store(times, std::memory_order_relaxed);
  // The call counter is global; "the nth from now" is relative to the count at arming time.
  p.first.store(p.calls.load(std::memory_order_relaxed) + nth, std::memory_order_release);
  g_any_armed.store(true, std::memory_order_release);
}

void clear_faults() {
  g_any_armed.store(false, std::memory_order_release);
  for (Plan& p : g_plans) p.first.store(0, std::memory_order_release);
}

std::uint64_t call_count(Call call) { return plan(call).calls.load(std::memory_order_relaxed); }

}  // namespace tcr::os
