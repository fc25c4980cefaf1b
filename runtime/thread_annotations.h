// Clang's thread-safety attributes, under names of our own: which lock guards a field, which a
// function needs held, which it takes or lets go. `clang++-19 -Wthread-safety` (the clang preset)
// checks them at every access; to any other compiler they are nothing.
// The one file outside a backend with conditional compilation (tests/layering_test.sh names it):
// it selects on the compiler, not on the platform, and no behaviour depends on it.
#pragma once

#if defined(__clang__)
#define TCR_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define TCR_THREAD_ANNOTATION(x)
#endif

#define TCR_CAPABILITY(name) TCR_THREAD_ANNOTATION(capability(name))
#define TCR_SCOPED_CAPABILITY TCR_THREAD_ANNOTATION(scoped_lockable)
#define TCR_GUARDED_BY(m) TCR_THREAD_ANNOTATION(guarded_by(m))
#define TCR_REQUIRES(...) TCR_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define TCR_EXCLUDES(...) TCR_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define TCR_ACQUIRE(...) TCR_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define TCR_RELEASE(...) TCR_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
// For the few functions whose locking the analysis cannot follow (a lock taken in one function
// and released in another across fork(), say); each use says why.
#define TCR_NO_THREAD_SAFETY_ANALYSIS TCR_THREAD_ANNOTATION(no_thread_safety_analysis)
