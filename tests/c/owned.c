/* tcr_interrupt_owned: tcr releases an interrupt's data exactly once, whatever becomes of the
 * interrupt: after the closure ran on the target, when it is dropped because the target exited
 * (with or without a ticket), and when the call fails (bad arguments). The release callback may
 * call into the manager: it runs outside tcr's locks. */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static tcr_manager* g_manager;
static atomic_int g_ran, g_released;
static atomic_int g_stop;

typedef struct payload {
  atomic_int ran;
} payload;

static void run_closure(tcr_self* self, void* data) {
  (void)self;
  payload* p = data;
  atomic_store(&p->ran, 1);
  atomic_fetch_add(&g_ran, 1);
}

static void release_payload(void* data) {
  payload* p = data;
  /* Calls back into the manager: it would deadlock if tcr held its registry lock here. */
  tcr_stats stats;
  stats.size = sizeof stats;
  (void)tcr_manager_stats(g_manager, &stats);
  free(p);
  atomic_fetch_add(&g_released, 1);
}

static void release_failing(void* data) {
  void* value = NULL;
  (void)tcr_slot_get(NULL, 0, &value); /* fails: BadArgument "NULL tcr_self" */
  release_payload(data);
}

static void* poller(tcr_self* self, void* argument) {
  (void)self;
  (void)argument;
  while (!atomic_load(&g_stop)) tcr_poll();
  return NULL;
}

static void* quick(tcr_self* self, void* argument) {
  (void)self;
  return argument;
}

static payload* new_payload(void) {
  payload* p = malloc(sizeof *p);
  atomic_init(&p->ran, 0);
  return p;
}

int main(void) {
  CHECK_STATUS(tcr_manager_create(NULL, &g_manager), TCR_OK);
  tcr_thread target;
  CHECK_STATUS(tcr_spawn(g_manager, "poller", poller, NULL, NULL, &target), TCR_OK);

  /* Delivered: released once, after the closure ran. */
  for (int i = 0; i < 20; ++i) {
    tcr_ticket* ticket = NULL;
    CHECK_STATUS(tcr_interrupt_owned(g_manager, target, run_closure, new_payload(), release_payload,
                                     &ticket),
                 TCR_OK);
    CHECK_STATUS(tcr_ticket_wait(ticket), TCR_OK);
    tcr_ticket_release(ticket);
  }
  WAIT_UNTIL(atomic_load(&g_released) == 20);
  CHECK(atomic_load(&g_released) == 20);
  CHECK(atomic_load(&g_ran) == 20);
  /* Without a ticket, too. */
  CHECK_STATUS(tcr_interrupt_owned(g_manager, target, run_closure, new_payload(), release_payload,
                                   NULL),
               TCR_OK);
  WAIT_UNTIL(atomic_load(&g_released) == 21);
  CHECK(atomic_load(&g_released) == 21);
  CHECK(atomic_load(&g_ran) == 21);

  atomic_store(&g_stop, 1);
  CHECK_STATUS(tcr_join(g_manager, target, NULL), TCR_OK);

  /* Dropped: the target is gone (joined), so the closure never runs; released at once. */
  tcr_ticket* ticket = NULL;
  CHECK_STATUS(tcr_interrupt_owned(g_manager, target, run_closure, new_payload(), release_payload,
                                   &ticket),
               TCR_OK);
  CHECK(tcr_ticket_outcome(ticket) == TCR_UNDELIVERED);
  tcr_ticket_release(ticket);
  CHECK(atomic_load(&g_released) == 22);
  CHECK(atomic_load(&g_ran) == 21);

  /* Exited but not joined yet: dropped as well. */
  tcr_thread done;
  CHECK_STATUS(tcr_spawn(g_manager, "quick", quick, NULL, NULL, &done), TCR_OK);
  int exited = 0;
  WAIT_UNTIL(tcr_thread_exited(g_manager, done, &exited) == TCR_OK && exited);
  CHECK_STATUS(tcr_interrupt_owned(g_manager, done, run_closure, new_payload(), release_payload,
                                   NULL),
               TCR_OK);
  CHECK_STATUS(tcr_join(g_manager, done, NULL), TCR_OK);
  WAIT_UNTIL(atomic_load(&g_released) == 23);
  CHECK(atomic_load(&g_released) == 23);

  /* Refused: released before the call returns its error; NULL release is allowed. */
  CHECK_STATUS(tcr_interrupt_owned(NULL, done, run_closure, new_payload(), release_payload, NULL),
               TCR_STEP_BadArgument);
  CHECK(atomic_load(&g_released) == 24);
  CHECK_STATUS(tcr_interrupt_owned(g_manager, done, NULL, new_payload(), release_payload, NULL),
               TCR_STEP_BadArgument);
  CHECK(atomic_load(&g_released) == 25);
  /* A release that itself fails a tcr call leaves the caller the refused call's error. */
  CHECK_STATUS(tcr_interrupt_owned(g_manager, done, NULL, new_payload(), release_failing, NULL),
               TCR_STEP_BadArgument);
  CHECK(strstr(tcr_error_message(), "NULL function") != NULL);
  CHECK(atomic_load(&g_released) == 26);
  tcr_thread made_up = {12345, {1, 2}};
  CHECK_STATUS(tcr_interrupt_owned(g_manager, made_up, run_closure, new_payload(),
                                   release_payload, NULL),
               TCR_STEP_BadArgument);
  CHECK(atomic_load(&g_released) == 27);
  CHECK(atomic_load(&g_ran) == 21);

  tcr_manager_destroy(g_manager);
  return check_done();
}
