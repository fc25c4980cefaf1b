#include "threads/tid_index.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdio>

#include "runtime/fork.h"
#include "runtime/os.h"
#include "threads/record.h"
#include "threads/thread_extensions.h"

namespace tcr::detail {
namespace {

std::atomic<std::atomic<ThreadRecord*>*> g_table{nullptr};
std::size_t g_entries = 0;  // written once before g_table is published
std::once_flag g_once;

std::size_t pid_max() {
  std::size_t value = 4194304;  // PID_MAX_LIMIT on 64-bit Linux
  if (FILE* f = std::fopen("/proc/sys/kernel/pid_max", "r")) {
    unsigned long v = 0;
    if (std::fscanf(f, "%lu", &v) == 1 && v > 0) value = v;
    std::fclose(f);
  }
  return value;
}

std::atomic<ThreadRecord*>* slot(pid_t tid) {
  std::atomic<ThreadRecord*>* table = g_table.load(std::memory_order_acquire);
  if (table == nullptr || tid <= 0 || static_cast<std::size_t>(tid) >= g_entries) return nullptr;
  return &table[tid];
}

}  // namespace

Result<void> tid_index_init() {
  Result<void> result;
  std::call_once(g_once, [&] {
    fork_participate(fork_guard("tid index", ForkRank::TidIndex, tid_lookup_mutex));
    const std::size_t entries = pid_max();
    Result<void*> map = os::mmap_anonymous(entries * sizeof(std::atomic<ThreadRecord*>),
                                           PROT_READ | PROT_WRITE, false, Step::TidIndexMmap);
    if (!map) {
      result = std::unexpected(map.error());
      return;
    }
    g_entries = entries;
    g_table.store(static_cast<std::atomic<ThreadRecord*>*>(*map), std::memory_order_release);
  });
  return result;
}

void tid_index_publish(ThreadRecord* t) {
  if (std::atomic<ThreadRecord*>* s = slot(t->tid())) s->store(t, std::memory_order_release);
}

void tid_index_withdraw(ThreadRecord* t) {
  // Only if it is still ours: a tid reused by a thread that published after we were reaped
  // cannot happen before we withdraw, but an adopted thread released and re-adopted can.
  if (std::atomic<ThreadRecord*>* s = slot(t->tid())) {
    ThreadRecord* expected = t;
    s->compare_exchange_strong(expected, nullptr, std::memory_order_acq_rel);
  }
}

ThreadRecord* tid_index_find_locked(pid_t tid) {
  std::atomic<ThreadRecord*>* s = slot(tid);
  if (s == nullptr) return nullptr;
  ThreadRecord* t = s->load(std::memory_order_acquire);
  if (t == nullptr || t->tid() != tid) return nullptr;
  const TcrState state = t->state();
  return state == TcrState::Running || state == TcrState::Exiting ? t : nullptr;
}

}  // namespace tcr::detail

namespace tcr {

bool with_thread_of_tid(pid_t tid, void (*fn)(Tcr&, void*), void* context) {
  return detail::with_tcr_of_tid(tid, [&](ThreadRecord& t) { fn(t, context); });
}

}  // namespace tcr
