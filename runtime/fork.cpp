// The fork registry behind runtime/fork.h. glibc runs the atfork handlers of one fork under its
// own lock, from prepare to the end of parent or child, and so does every libc with atfork
// handlers: one fork's handlers never overlap another's, and the snapshot below is the fork's.
#include "runtime/fork.h"

#include <pthread.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>

#include "runtime/mutex.h"

namespace tcr {
namespace {

constexpr std::size_t kMaxParticipants = 32;

struct Registry {
  // Registration only. Not held across a fork: a registration that waited for a fork could hold
  // a lock that the fork's prepare step waits for.
  Mutex mutex;
  // Written under mutex, but not guarded by it: the fork's prepare step reads the entries below
  // count without the lock (count's release store publishes each one).
  ForkParticipant table[kMaxParticipants];
  std::atomic<std::size_t> count{0};  // entries below it are complete
  bool atfork_installed TCR_GUARDED_BY(mutex) = false;
  // The participants of the fork in progress, by rank: taken at prepare, so that a registration
  // meanwhile does not run a parent or child step whose prepare never ran. The forking thread's
  // own, under libc's atfork lock (a lock of libc's, which the analysis does not see).
  ForkParticipant running[kMaxParticipants];
  std::size_t running_count = 0;
};

Registry& registry() {
  // Never destroyed: a fork may come while the process exits.
  static Registry* const s_registry = new Registry;
  return *s_registry;
}

void on_prepare() {
  Registry& r = registry();
  const std::size_t n = r.count.load(std::memory_order_acquire);
  // Insertion sort by rank, stable: equal ranks keep their registration order.
  for (std::size_t i = 0; i < n; ++i) {
    ForkParticipant p = r.table[i];
    std::size_t j = i;
    for (; j > 0 && r.running[j - 1].rank > p.rank; --j) r.running[j] = r.running[j - 1];
    r.running[j] = p;
  }
  r.running_count = n;
  for (std::size_t i = 0; i < n; ++i) r.running[i].prepare(r.running[i].context);
}

void on_parent() {
  Registry& r = registry();
  for (std::size_t i = r.running_count; i-- > 0;) r.running[i].parent(r.running[i].context);
}

void on_child() {
  Registry& r = registry();
  // A thread of the parent may have been registering: its lock, and any entry past count, are
  // left behind with it.
  recreate_in_child(r.mutex);
  for (std::size_t i = r.running_count; i-- > 0;) r.running[i].child(r.running[i].context);
}

}  // namespace

void fork_participate(const ForkParticipant& participant) {
  Registry& r = registry();
  MutexLock lock(r.mutex);
  const std::size_t n = r.count.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < n; ++i) {
    if (r.table[i].prepare == participant.prepare && r.table[i].context == participant.context) {
      return;
    }
  }
  if (n == kMaxParticipants) {
    std::fprintf(stderr, "tcr: more than %zu fork participants ('%s')\n", kMaxParticipants,
                 participant.name);
    std::abort();
  }
  if (!r.atfork_installed) {
    if (int rc = pthread_atfork(on_prepare, on_parent, on_child); rc != 0) {
      // ENOMEM, at the first registration: nothing tcr can offer a forked child without it.
      std::fprintf(stderr, "tcr: pthread_atfork failed (%d)\n", rc);
      std::abort();
    }
    r.atfork_installed = true;
  }
  r.table[n] = participant;
  r.count.store(n + 1, std::memory_order_release);
}

}  // namespace tcr
