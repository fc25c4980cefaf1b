#include "threads/tid_index.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdio>

#include "runtime/fork.h"
#include "runtime/os.h"
#include "threads/tcr.h"
#include "threads/thread_extensions.h"

namespace tcr::detail {
namespace {

std::atomic<std::atomic<Tcr*>*> g_table{nullptr};
std::size_t g_entries = 0;  // written once before g_table is published
std::mutex g_lookup_mutex;
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

std::atomic<Tcr*>* slot(pid_t tid) {
  std::atomic<Tcr*>* table = g_table.load(std::memory_order_acquire);
  if (table == nullptr || tid <= 0 || static_cast<std::size_t>(tid) >= g_entries) return nullptr;
  return &table[tid];
}

}  // namespace

Result<void> tid_index_init() {
  Result<void> result;
  std::call_once(g_once, [&] {
    const std::size_t entries = pid_max();
    Result<void*> map = os::mmap_anonymous(entries * sizeof(std::atomic<Tcr*>),
                                           PROT_READ | PROT_WRITE, false, Step::TidIndexMmap);
    if (!map) {
      result = std::unexpected(map.error());
      return;
    }
    g_entries = entries;
    g_table.store(static_cast<std::atomic<Tcr*>*>(*map), std::memory_order_release);
  });
  return result;
}

void tid_index_publish(Tcr* t) {
  if (std::atomic<Tcr*>* s = slot(t->tid())) s->store(t, std::memory_order_release);
}

void tid_index_withdraw(Tcr* t) {
  // Only if it is still ours: a tid reused by a thread that published after we were reaped
  // cannot happen before we withdraw, but an adopted thread released and re-adopted can.
  if (std::atomic<Tcr*>* s = slot(t->tid())) {
    Tcr* expected = t;
    s->compare_exchange_strong(expected, nullptr, std::memory_order_acq_rel);
  }
}

std::unique_lock<std::mutex> tid_index_guard() {
  // A fork while a listener looks a tid up would leave the child's lookups locked.
  static const bool s_in_forks = [] {
    fork_participate(fork_guard("tid index", ForkRank::TidIndex, g_lookup_mutex));
    return true;
  }();
  (void)s_in_forks;
  return std::unique_lock(g_lookup_mutex);
}

Tcr* tid_index_find_locked(pid_t tid) {
  std::atomic<Tcr*>* s = slot(tid);
  if (s == nullptr) return nullptr;
  Tcr* t = s->load(std::memory_order_acquire);
  if (t == nullptr || t->tid() != tid) return nullptr;
  const TcrState state = t->state();
  return state == TcrState::Running || state == TcrState::Exiting ? t : nullptr;
}

}  // namespace tcr::detail

namespace tcr {

bool with_thread_of_tid(pid_t tid, void (*fn)(Tcr&, void*), void* context) {
  return detail::with_tcr_of_tid(tid, [&](Tcr& t) { fn(t, context); });
}

}  // namespace tcr
