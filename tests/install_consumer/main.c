/* Uses an installed tcr from C through libtcr.so: checks the library is the version the header
 * names, creates a manager, spawns a thread that computes a value from its argument, joins it
 * and checks the value, and checks that a bad call answers a clear error. Exit status 0 only if
 * all of that worked. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tcr.h"

static int fail(const char* what, tcr_status status) {
  fprintf(stderr, "install consumer (C): %s: %s (%s)\n", what, tcr_step_name(status),
          tcr_error_message());
  return 1;
}

static void* twice_plus_two(tcr_self* self, void* argument) {
  (void)self;
  return (void*)(2 * (uintptr_t)argument + 2);
}

int main(void) {
  if (tcr_version() != TCR_VERSION) {
    fprintf(stderr, "install consumer (C): libtcr is %s, tcr.h says %d\n", tcr_version_string(),
            TCR_VERSION);
    return 1;
  }
  tcr_manager* manager = NULL;
  tcr_status status = tcr_manager_create(NULL, &manager);
  if (status != TCR_OK) return fail("tcr_manager_create", status);
  tcr_thread thread;
  status = tcr_spawn(manager, "consumer", twice_plus_two, (void*)(uintptr_t)20, NULL, &thread);
  if (status != TCR_OK) return fail("tcr_spawn", status);
  void* result = NULL;
  status = tcr_join(manager, thread, &result);
  if (status != TCR_OK) return fail("tcr_join", status);
  if ((uintptr_t)result != 42) {
    fprintf(stderr, "install consumer (C): joined %lu, not 42\n", (unsigned long)(uintptr_t)result);
    return 1;
  }
  /* Joined: the thread is stale now, and a second join says so. */
  status = tcr_join(manager, thread, &result);
  if (status != TCR_STEP_StaleThread || strstr(tcr_error_message(), "already joined") == NULL) {
    fprintf(stderr, "install consumer (C): second join answered %s (%s)\n", tcr_step_name(status),
            tcr_error_message());
    return 1;
  }
  tcr_manager_destroy(manager);
  printf("install consumer (C): libtcr %s, spawn + join answered 42\n", tcr_version_string());
  return 0;
}
