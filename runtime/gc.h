// Boehm GC glue. initialize() must run on the process's main thread (Boehm's rule for GC_INIT);
// it also calls GC_allow_register_threads() so threads that tcr creates with plain pthread_create
// can register themselves. A registered thread's stack, from its stack pointer to the base it gave,
// is scanned conservatively; so are the TCR slot blocks, which come from
// GC_MALLOC_UNCOLLECTABLE: a runtime may keep GC pointers there.
#pragma once

#include <cstddef>

#include "runtime/error.h"

namespace tcr::gc {

// Idempotent; safe to call after the embedding program ran GC_INIT itself.
Result<void> initialize();
bool initialized();

// Registers the calling thread with stack base `stack_base` (the high end). Answers whether this
// call registered it (false: it already was, e.g. the main thread; then don't unregister it).
Result<bool> register_current_thread(void* stack_base);
void unregister_current_thread();

// The calling thread's stack base (high end), as Boehm finds it (pthread_getattr_np); for
// adopted threads, whose stacks tcr did not map.
Result<void*> current_stack_base();

// Zeroed memory for TCR slots: with scanned=true GC-scanned and never collected
// (GC_MALLOC_UNCOLLECTABLE), else plain calloc for managers created without the GC.
void** allocate_slots(std::size_t count, bool scanned);
void free_slots(void** slots, bool scanned);

}  // namespace tcr::gc
