// The process-wide table of thread extensions: append-only, so a thread reads it without a lock
// (an entry is complete before the count that covers it is published).
#include "threads/thread_extensions.h"

#include <atomic>
#include <mutex>

#include "runtime/fork.h"
#include "runtime/log.h"
#include "threads/internal.h"
#include "threads/tcr.h"

namespace tcr {
namespace {

ThreadExtension g_extensions[kMaxThreadExtensions];
std::atomic<std::size_t> g_count{0};
std::mutex g_register_mutex;

}  // namespace

Result<void> register_thread_extension(const ThreadExtension& extension) {
  if (extension.attach == nullptr || extension.detach == nullptr) {
    return fail(Step::BadArgument, 0, "register_thread_extension: attach and detach are required");
  }
  fork_participate(fork_guard("thread extensions", ForkRank::Setup, g_register_mutex));
  std::lock_guard lock(g_register_mutex);
  const std::size_t n = g_count.load(std::memory_order_relaxed);
  if (n == kMaxThreadExtensions) {
    return fail(Step::BadArgument, 0, "register_thread_extension: the table is full");
  }
  g_extensions[n] = extension;
  g_count.store(n + 1, std::memory_order_release);
  log::info("thread extension '{}' registered", extension.name ? extension.name : "?");
  return {};
}

namespace detail {

Result<void> attach_extensions(ThreadRecord& t, unsigned* attached) {
  *attached = 0;
  const std::size_t n = g_count.load(std::memory_order_acquire);
  for (std::size_t i = 0; i < n; ++i) {
    if (Result<void> r = g_extensions[i].attach(t); !r) {
      detach_extensions(t, *attached);
      *attached = 0;
      return r;
    }
    *attached |= 1u << i;
  }
  return {};
}

void detach_extensions(ThreadRecord& t, unsigned attached) {
  for (std::size_t i = kMaxThreadExtensions; i-- > 0;) {
    if ((attached & (1u << i)) != 0) g_extensions[i].detach(t);
  }
}

}  // namespace detail
}  // namespace tcr
