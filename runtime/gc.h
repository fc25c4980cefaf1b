// Boehm GC glue. initialize() must run on the process's main thread (Boehm's rule for GC_INIT);
// it also calls GC_allow_register_threads() so threads that tcr creates with plain pthread_create
// can register themselves. A registered thread's stack, from its stack pointer to the base it gave,
// is scanned conservatively; so are the TCR slot blocks (RootArena): a runtime may keep GC
// pointers there.
#pragma once

#include <cstddef>
#include <vector>

#include "runtime/error.h"

namespace tcr::gc {

// Idempotent; safe to call after the embedding program ran GC_INIT itself.
Result<void> initialize();
bool initialized();
// For a collector the runtime owns (GcOwner::Runtime): never initializes it. Once the runtime
// has (GC_is_init_called), does what initialize() does after GC_INIT (lets threads created with
// plain pthread_create register) and answers true; false while Boehm is not initialized.
bool adopt_runtime_collector();

// Registers the calling thread with stack base `stack_base` (the high end). Answers whether this
// call registered it (false: it already was, e.g. the main thread; then don't unregister it).
Result<bool> register_current_thread(void* stack_base);
void unregister_current_thread();

// The calling thread's stack base (high end), as Boehm finds it (pthread_getattr_np); for
// adopted threads, whose stacks tcr did not map.
Result<void*> current_stack_base();

// The signals Boehm GC uses to stop and restart the world, which tcr must not take for itself:
// what this Boehm answers once initialized, plus its Linux defaults (SIGPWR, SIGXCPU) before.
std::vector<int> collector_signals();

// Boehm's allocation lock (GC_alloc_lock), which every collection holds. tcr's stop-the-world
// holds it from before it signals the first thread until the world resumes, so the two
// stop-the-worlds never interleave: a Boehm collector half-way through stopping the world is
// never suspended by tcr (it would wait forever for threads tcr then holds), and no thread that
// tcr suspends can be holding the lock. Not reentrant.
void lock_allocator();
void unlock_allocator();

// Memory for TCR slot blocks: zeroed, fixed-size blocks that the collector scans as roots and
// never frees, carved from malloc'd chunks each registered once with GC_add_roots (or not
// registered, for managers without the GC). Unlike GC_MALLOC_UNCOLLECTABLE, allocating here never
// starts a collection, so a thread the GC does not know (a foreign thread being adopted, or a
// spawner that is not registered) may do it; Boehm aborts a collection started by such a thread.
// Blocks live as long as the arena. Not thread-safe: the owner serializes calls.
class RootArena {
 public:
  // Blocks per malloc'd chunk: every kBlocksPerChunk-th allocate() makes a new chunk.
  static constexpr std::size_t kBlocksPerChunk = 64;

  RootArena(std::size_t block_words, bool scanned);
  ~RootArena();
  RootArena(const RootArena&) = delete;
  RootArena& operator=(const RootArena&) = delete;

  // A zeroed block of block_words words, or nullptr when memory is exhausted.
  void** allocate();

 private:
  std::size_t m_block_words;
  bool m_scanned;
  std::size_t m_used_in_chunk = kBlocksPerChunk;  // blocks handed out from the newest chunk
  std::vector<void**> m_chunks;
};

}  // namespace tcr::gc
