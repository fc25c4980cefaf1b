/* A tiny harness for the C API's tests: CHECK(cond), CHECK_STATUS(call, expected) and
 * check_done(). Each failed check prints file:line and the expression (and, for a status, the
 * step names of both and the calling thread's tcr_error_message()) and is counted; check_done()
 * answers the program's exit code. Checks may run on any thread. One test program per
 * translation unit: the counter is static. */
#ifndef TCR_TESTS_C_CHECK_H
#define TCR_TESTS_C_CHECK_H

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tcr.h"

static atomic_int check_failures_;
static atomic_int check_count_;

static inline int check_(int ok, const char* file, int line, const char* expr) {
  atomic_fetch_add(&check_count_, 1);
  if (ok) return 1;
  atomic_fetch_add(&check_failures_, 1);
  fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, expr);
  return 0;
}

static inline int check_status_(tcr_status got, tcr_status want, const char* file, int line,
                         const char* expr) {
  atomic_fetch_add(&check_count_, 1);
  if (got == want) return 1;
  atomic_fetch_add(&check_failures_, 1);
  fprintf(stderr, "%s:%d: CHECK_STATUS failed: %s\n  got %d (%s), expected %d (%s)\n"
          "  tcr_error_message(): \"%s\" (code %d)\n",
          file, line, expr, (int)got, tcr_step_name(got), (int)want, tcr_step_name(want),
          tcr_error_message(), tcr_error_code());
  return 0;
}

/* Both evaluate to 1 when the check held, 0 otherwise, so a test can stop early:
 * if (!CHECK(p != NULL)) return; */
#define CHECK(cond) check_((cond) ? 1 : 0, __FILE__, __LINE__, #cond)
#define CHECK_STATUS(call, expected) \
  check_status_((call), (expected), __FILE__, __LINE__, #call " == " #expected)

static inline int check_done(void) {
  const int failed = atomic_load(&check_failures_);
  fprintf(stderr, "%d checks, %d failed\n", atomic_load(&check_count_), failed);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- helpers shared by the programs (no timing assertions: bounded waits only) ---- */

static inline void check_nap_(void) {
  struct timespec ts = {0, 1000000}; /* 1 ms */
  nanosleep(&ts, NULL);
}

/* Polls cond (an expression) every millisecond until it holds, for up to 10 s; a CHECK of
 * the same condition afterwards says whether it did. */
#define WAIT_UNTIL(cond)                                                   \
  do {                                                                     \
    for (int wait_i_ = 0; wait_i_ < 10000 && !(cond); ++wait_i_) check_nap_(); \
  } while (0)

/* ThreadSanitizer builds (the tsan preset): its runtime takes ~900 KiB of a thread's stack for
 * itself, so pthread_create refuses a small stack; and it defers an asynchronous signal sent to
 * a thread inside a raw futex wait until the thread makes an intercepted call, so a wake-up
 * signal into a tcr wait never arrives (scripts/run-tests lists the C++ tests skipped for the
 * same reason). */
#if defined(__SANITIZE_THREAD__)
#define CHECK_UNDER_TSAN 1
#define CHECK_SMALL_STACK ((size_t)2 << 20)
#else
#define CHECK_UNDER_TSAN 0
#define CHECK_SMALL_STACK ((size_t)256 << 10)
#endif

#endif /* TCR_TESTS_C_CHECK_H */
