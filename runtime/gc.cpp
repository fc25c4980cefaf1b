#include "runtime/gc.h"

#include <errno.h>
#include <signal.h>
#include <unistd.h>

// GC_THREADS declares the thread registration API; GC_NO_THREAD_REDIRECTS keeps gc.h from
// renaming pthread_create to GC_pthread_create: tcr creates threads itself and registers them.
#define GC_THREADS 1
#define GC_NO_THREAD_REDIRECTS 1
#include <gc/gc.h>

#include <cstdlib>
#include <mutex>
#include <new>

#include "runtime/fork.h"
#include "runtime/log.h"
#include "runtime/os.h"

namespace tcr::gc {
namespace {
std::mutex g_init_mutex;
bool g_initialized = false;

// Boehm's fork handling (GC_atfork_prepare, _parent, _child: its allocation lock, its marker
// threads' lock, and in the child a thread table of the forking thread alone), run from tcr's
// handlers at the innermost rank, so its allocation lock is taken after tcr's locks at a fork as
// everywhere else (a thread allocating a TCR's slot block holds the registry lock, then Boehm's).
// Boehm's own pthread_atfork handlers would run in an order set by who registered first. Those
// calls do nothing when Boehm installed its handlers itself (a program that ran GC_INIT before
// tcr with GC_set_handle_fork(1)); nor does this step in a process whose GC is not initialized.
bool g_forking_with_gc = false;  // written in prepare, read in parent and child (one fork at a time)

void collector_prepare(void*) {
  g_forking_with_gc = GC_is_init_called() != 0;
  if (g_forking_with_gc) GC_atfork_prepare();
}
void collector_parent(void*) {
  if (g_forking_with_gc) GC_atfork_parent();
}
void collector_child(void*) {
  if (g_forking_with_gc) GC_atfork_child();
}

void participate_in_fork() {
  fork_participate(fork_guard("gc initialization", ForkRank::Setup, g_init_mutex));
  fork_participate(
      {"Boehm GC", ForkRank::Collector, collector_prepare, collector_parent, collector_child});
}
}  // namespace

Result<void> initialize() {
  participate_in_fork();
  std::lock_guard lock(g_init_mutex);
  if (g_initialized) return {};
  if (!GC_is_init_called()) {
    // Boehm finds the main thread's stack and installs its stop-the-world signal handlers in
    // GC_init; on Linux it must run on the main thread, which it then registers itself.
    if (os::gettid() != getpid()) {
      return fail(Step::NotOnMainThread, 0, "Boehm GC must be initialized on the main thread");
    }
    // Fork handling without handlers of Boehm's own: tcr's Collector step calls it (above).
    GC_set_handle_fork(0);
    GC_INIT();
  }
  // Lets threads created with plain pthread_create (not GC_pthread_create) register themselves.
  GC_allow_register_threads();
  g_initialized = true;
  log::info("Boehm GC {}.{}.{} ready; suspend signal {}, restart signal {}", GC_VERSION_MAJOR,
            GC_VERSION_MINOR, GC_VERSION_MICRO, GC_get_suspend_signal(),
            GC_get_thr_restart_signal());
  return {};
}

bool adopt_runtime_collector() {
  std::lock_guard lock(g_init_mutex);
  if (g_initialized) return true;
  if (!GC_is_init_called()) return false;
  GC_allow_register_threads();
  g_initialized = true;
  log::info("Boehm GC {}.{}.{}, initialized by the runtime; suspend signal {}, restart signal {}",
            GC_VERSION_MAJOR, GC_VERSION_MINOR, GC_VERSION_MICRO, GC_get_suspend_signal(),
            GC_get_thr_restart_signal());
  return true;
}

bool initialized() {
  std::lock_guard lock(g_init_mutex);
  return g_initialized;
}

Result<bool> register_current_thread(void* stack_base) {
  if (int e = os::take_fault(os::Call::GcRegister)) return fail(Step::GcRegister, e);
  GC_stack_base sb{};
  sb.mem_base = stack_base;
  switch (GC_register_my_thread(&sb)) {
    case GC_SUCCESS: return true;
    case GC_DUPLICATE: return false;  // e.g. the main thread, registered by GC_init
    default: break;
  }
  return fail(Step::GcRegister, ENOSYS, "this Boehm GC has no thread support");
}

void unregister_current_thread() { GC_unregister_my_thread(); }

std::vector<int> collector_signals() {
  std::vector<int> out = os::collector_default_signals();
  if (GC_is_init_called()) {
    out.push_back(GC_get_suspend_signal());
    out.push_back(GC_get_thr_restart_signal());
  }
  return out;
}

void lock_allocator() { GC_alloc_lock(); }
void unlock_allocator() { GC_alloc_unlock(); }

Result<void*> current_stack_base() {
  GC_stack_base sb{};
  if (GC_get_stack_base(&sb) != GC_SUCCESS) {
    return fail(Step::BadArgument, 0, "GC_get_stack_base cannot find this thread's stack");
  }
  return sb.mem_base;
}

RootArena::RootArena(std::size_t block_words, bool scanned)
    : m_block_words(block_words), m_scanned(scanned) {}

RootArena::~RootArena() {
  const std::size_t bytes = kBlocksPerChunk * m_block_words * sizeof(void*);
  for (void** chunk : m_chunks) {
    if (m_scanned) GC_remove_roots(chunk, reinterpret_cast<char*>(chunk) + bytes);
    std::free(chunk);
  }
}

void** RootArena::allocate() {
  if (m_used_in_chunk == kBlocksPerChunk) {
    const std::size_t bytes = kBlocksPerChunk * m_block_words * sizeof(void*);
    void** chunk = static_cast<void**>(std::calloc(kBlocksPerChunk * m_block_words, sizeof(void*)));
    if (chunk == nullptr) return nullptr;
    try {
      m_chunks.push_back(chunk);
    } catch (const std::bad_alloc&) {
      std::free(chunk);
      return nullptr;
    }
    // One root set per chunk, not per block: Boehm's root table is small and fixed.
    if (m_scanned) GC_add_roots(chunk, reinterpret_cast<char*>(chunk) + bytes);
    m_used_in_chunk = 0;
  }
  return m_chunks.back() + m_block_words * m_used_in_chunk++;
}

}  // namespace tcr::gc
