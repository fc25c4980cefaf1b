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

/* ---- a closure that ends its thread while others wait behind it ---- */

/* Two interrupts wait for a thread that reaches no safe point before its function returns, so
 * both run at its exit; the first calls pthread_exit. The second must still settle (tcr.h: an
 * interrupt to an exited thread settles TCR_UNDELIVERED) and its owned data be released once;
 * it used to stay in the closed thread's queue: its ticket Pending for ever, its data never
 * released (until the record was reused, and then released under the mailbox lock). */
static atomic_int g_go, g_spinning, g_second_ran, g_released;
static void* spin_then_return(tcr_self* self, void* argument) {
  (void)self;
  (void)argument;
  atomic_store(&g_spinning, 1);
  while (!atomic_load(&g_go)) {
  }
  return (void*)7;
}
static void exit_thread(tcr_self* self, void* data) {
  (void)self;
  (void)data;
  pthread_exit(NULL);
}
static void note_second(tcr_self* self, void* data) {
  (void)self;
  (void)data;
  atomic_fetch_add(&g_second_ran, 1);
}
static void release_counted(void* data) {
  (void)data;
  atomic_fetch_add(&g_released, 1);
}

static void pthread_exit_in_exit_drain(void) {
  tcr_thread t;
  if (!CHECK_STATUS(tcr_spawn(g_m, "spinner", spin_then_return, NULL, NULL, &t), TCR_OK)) return;
  WAIT_UNTIL(atomic_load(&g_spinning));
  tcr_ticket *first = NULL, *second = NULL;
  CHECK_STATUS(tcr_interrupt(g_m, t, exit_thread, NULL, &first), TCR_OK);
  CHECK_STATUS(tcr_interrupt_owned(g_m, t, note_second, NULL, release_counted, &second), TCR_OK);
  atomic_store(&g_go, 1);
  CHECK_STATUS(tcr_join(g_m, t, NULL), TCR_OK);
  CHECK(tcr_ticket_outcome(first) == TCR_DELIVERED);
  WAIT_UNTIL(tcr_ticket_outcome(second) != TCR_PENDING);
  CHECK(tcr_ticket_outcome(second) != TCR_PENDING);
  if (tcr_ticket_outcome(second) == TCR_UNDELIVERED) {
    CHECK_STATUS(tcr_ticket_wait(second), TCR_STEP_ThreadExited);
    CHECK(atomic_load(&g_second_ran) == 0);
  }
  WAIT_UNTIL(atomic_load(&g_released) == 1);
  CHECK(atomic_load(&g_released) == 1);
  tcr_ticket_release(first);
  tcr_ticket_release(second);
}

/* ---- an adopted thread that releases itself from inside an interrupt closure ---- */

/* tcr_release_current_thread tears the record down (its last safe point runs the rest of the
 * queue) and gives it back to the pool, while the closure that called it, and the safe point
 * that ran that closure, still use it: the closures behind it ran nested inside it (interrupt.h:
 * closures do not nest), and the safe point went on with a record another thread may own by
 * then. It is refused (BadArgument), as from inside a blocking region; outside the closure the
 * release works. */
static atomic_int g_in_first, g_second_nested = -1, g_release_status = -1;
static void release_inside(tcr_self* self, void* data) {
  (void)self;
  (void)data;
  atomic_store(&g_in_first, 1);
  atomic_store(&g_release_status, (int)tcr_release_current_thread(g_m));
  atomic_store(&g_in_first, 0);
}
static void second_closure(tcr_self* self, void* data) {
  (void)self;
  (void)data;
  atomic_store(&g_second_nested, atomic_load(&g_in_first));
}
static void* adopted_releases_in_closure(void* unused) {
  (void)unused;
  if (!CHECK_STATUS(tcr_adopt_current_thread(g_m, "adoptee", NULL, NULL), TCR_OK)) return NULL;
  tcr_thread me;
  CHECK_STATUS(tcr_current_thread(g_m, &me), TCR_OK);
  CHECK_STATUS(tcr_interrupt(g_m, me, release_inside, NULL, NULL), TCR_OK);
  CHECK_STATUS(tcr_interrupt(g_m, me, second_closure, NULL, NULL), TCR_OK);
  CHECK(tcr_poll() == 2);
  CHECK(atomic_load(&g_release_status) == (int)TCR_STEP_BadArgument);
  CHECK(atomic_load(&g_second_nested) == 0);
  CHECK(tcr_current() != NULL);
  CHECK_STATUS(tcr_release_current_thread(g_m), TCR_OK);
  CHECK(tcr_current() == NULL);
  return NULL;
}

static void release_in_closure(void) {
  pthread_t p;
  if (!CHECK(pthread_create(&p, NULL, adopted_releases_in_closure, NULL) == 0)) return;
  pthread_join(p, NULL);
}

/* ---- waits with no practical limit ---- */

/* A timeout near UINT64_MAX is clamped to INT64_MAX ns, which the wait then added to the clock:
 * a signed overflow (undefined; the asan preset's -fno-sanitize-recover=undefined stops the
 * program there). The waits must simply wait until the post or the exit comes. */
static tcr_semaphore* g_sem;
static void* post_later(tcr_self* self, void* argument) {
  (void)self;
  (void)argument;
  tcr_sleep_ns(20 * 1000 * 1000);
  tcr_semaphore_post(g_sem);
  return (void*)3;
}

static void huge_timeouts(void) {
  if (!CHECK_STATUS(tcr_semaphore_create(0, &g_sem), TCR_OK)) return;
  tcr_thread t;
  if (CHECK_STATUS(tcr_spawn(g_m, "poster", post_later, NULL, NULL, &t), TCR_OK)) {
    CHECK(tcr_semaphore_wait_ns(g_sem, UINT64_MAX) == 1);
    void* result = NULL;
    CHECK_STATUS(tcr_join_timed(g_m, t, UINT64_MAX - 1, &result), TCR_OK);
    CHECK(result == (void*)3);
  }
  tcr_semaphore_destroy(g_sem);
}

int main(void) {
  if (!CHECK_STATUS(tcr_manager_create(NULL, &g_m), TCR_OK)) return check_done();
  blocking_misuse();
  pthread_exit_in_exit_drain();
  release_in_closure();
  huge_timeouts();
  tcr_manager_destroy(g_m);
  return check_done();
}
