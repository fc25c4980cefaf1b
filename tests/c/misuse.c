/* The C API misused the way a runtime author might (a reviewer's adversarial pass): each case
 * is something tcr.h promises to survive, or answers with a status. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static tcr_manager* g_m;

/* ---- blocking regions off the beaten path ---- */

/* tcr.h: regions on a thread tcr does not know do nothing (BlockingScope's comment); a second
 * END of one region is a no-op (capi/interrupt.cpp); END on a zeroed tcr_blocking (a region
 * a binding never entered) does nothing. Each used to call BlockingScope::leave(nullptr),
 * which dereferenced it. */
static void* double_end(tcr_self* self, void* argument) {
  (void)self;
  (void)argument;
  tcr_blocking r;
  TCR_BLOCKING_BEGIN(r);
  TCR_BLOCKING_END(r);
  TCR_BLOCKING_END(r); /* a second END */
  tcr_blocking zeroed;
  memset(&zeroed, 0, sizeof zeroed);
  TCR_BLOCKING_END(zeroed);
  return (void*)1;
}

static void blocking_misuse(void) {
  /* The main thread is not adopted: tcr does not know it. */
  CHECK(tcr_current() == NULL);
  tcr_blocking r;
  TCR_BLOCKING_BEGIN(r);
  TCR_BLOCKING_END(r);
  tcr_thread t;
  if (!CHECK_STATUS(tcr_spawn(g_m, "double-end", double_end, NULL, NULL, &t), TCR_OK)) return;
  void* result = NULL;
  CHECK_STATUS(tcr_join(g_m, t, &result), TCR_OK);
  CHECK(result == (void*)1);
}

int main(void) {
  if (!CHECK_STATUS(tcr_manager_create(NULL, &g_m), TCR_OK)) return check_done();
  blocking_misuse();
  tcr_manager_destroy(g_m);
  return check_done();
}
