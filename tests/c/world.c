/* Blocking regions, stop-the-world and inspection through the C API: TCR_BLOCKING_BEGIN/END,
 * tcr_suspend_all / tcr_world_thread / tcr_resume_all, tcr_snapshot, tcr_for_each,
 * tcr_manager_stats, tcr_resource_counts_read, tcr_resource_dump and tcr_signals. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "check.h"

static int my_tid(void) { return (int)syscall(SYS_gettid); }

static tcr_manager* g_m;

/* ---- blocking regions ---- */

static atomic_int g_depth = -1, g_leave_inner, g_leave_outer, g_seen_depth = -1;
static void note_depth(tcr_self* self, void* data) {
  (void)self;
  (void)data;
  atomic_store(&g_seen_depth, atomic_load(&g_depth));
}

static void* nested_region(tcr_self* self, void* argument) {
  (void)self;
  (void)argument;
  tcr_blocking outer, inner;
  TCR_BLOCKING_BEGIN(outer);
  TCR_BLOCKING_BEGIN(inner);
  atomic_store(&g_depth, 2);
  while (!atomic_load(&g_leave_inner)) {
  }
  TCR_BLOCKING_END(inner);
  atomic_store(&g_depth, 1);
  while (!atomic_load(&g_leave_outer)) {
  }
  TCR_BLOCKING_END(outer);
  atomic_store(&g_depth, 0);
  /* The interrupt ran at the outermost END: before this thread goes on. */
  CHECK(atomic_load(&g_seen_depth) == 1);
  return NULL;
}

static void blocking_regions(void) {
  tcr_thread t;
  if (!CHECK_STATUS(tcr_spawn(g_m, "nested", nested_region, NULL, NULL, &t), TCR_OK)) return;
  WAIT_UNTIL(atomic_load(&g_depth) == 2);
  CHECK(atomic_load(&g_depth) == 2);
  tcr_ticket* ticket = NULL;
  if (CHECK_STATUS(tcr_interrupt(g_m, t, note_depth, NULL, &ticket), TCR_OK)) {
    /* Inside the region: not run (the thread is spinning in "foreign code"). */
    CHECK(tcr_ticket_outcome(ticket) == TCR_PENDING);
    atomic_store(&g_leave_inner, 1);
    WAIT_UNTIL(atomic_load(&g_depth) == 1);
    CHECK(atomic_load(&g_depth) == 1);
    /* Nor at the inner END. */
    CHECK(tcr_ticket_outcome(ticket) == TCR_PENDING);
    CHECK(atomic_load(&g_seen_depth) == -1);
    atomic_store(&g_leave_outer, 1);
    CHECK_STATUS(tcr_ticket_wait(ticket), TCR_OK);
    /* It ran once the outer region ended: the thread had left both (it says 1 only because
     * g_depth is set after END returns). */
    CHECK(atomic_load(&g_seen_depth) == 1);
    tcr_ticket_release(ticket);
  } else {
    atomic_store(&g_leave_inner, 1);
    atomic_store(&g_leave_outer, 1);
  }
  CHECK_STATUS(tcr_join(g_m, t, NULL), TCR_OK);
}

/* ---- stop the world ---- */

#define SPINNERS 3
static atomic_ulong g_spins[SPINNERS];
static atomic_int g_stop;
static atomic_int g_blocker_inside;
static atomic_int g_blocker_left;

static void* spinner(tcr_self* self, void* argument) {
  (void)self;
  atomic_ulong* counter = argument;
  while (!atomic_load(&g_stop)) atomic_fetch_add(counter, 1);
  return NULL;
}

static void* blocker(tcr_self* self, void* argument) {
  (void)self;
  (void)argument;
  tcr_blocking r;
  TCR_BLOCKING_BEGIN(r);
  atomic_store(&g_blocker_inside, 1);
  while (!atomic_load(&g_stop)) {
  }
  TCR_BLOCKING_END(r);
  atomic_store(&g_blocker_left, 1);
  return NULL;
}

static void* suspend_from_a_stranger(void* arg) {
  (void)arg;
  tcr_world w;
  CHECK_STATUS(tcr_suspend_all(g_m, &w), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_resume_all(g_m), TCR_STEP_BadArgument);
  CHECK(tcr_world_stopped_by_caller(g_m) == 0);
  return NULL;
}

static int all_spinners_moved_since(const unsigned long* frozen) {
  for (int i = 0; i < SPINNERS; ++i) {
    if (atomic_load(&g_spins[i]) == frozen[i]) return 0;
  }
  return 1;
}

#define LONG_NAME \
  "a-thread-name-much-longer-than-forty-eight-characters-so-the-snapshot-truncates-it"

static void on_each(const tcr_self* self, void* data) {
  int* n = data;
  if (self != NULL && tcr_self_id(self) != 0) ++*n;
}

static void stop_the_world(void) {
  pthread_t p;
  CHECK(pthread_create(&p, NULL, suspend_from_a_stranger, NULL) == 0);
  CHECK(pthread_join(p, NULL) == 0);
  CHECK_STATUS(tcr_suspend_all(NULL, NULL), TCR_STEP_BadArgument);
  CHECK(tcr_world_stopped_by_caller(NULL) == 0);

  /* main adopts itself to stop the world it is part of. */
  tcr_self* me = NULL;
  if (!CHECK_STATUS(tcr_adopt_current_thread(g_m, "controller", NULL, &me), TCR_OK)) return;

  tcr_thread threads[SPINNERS + 1];
  int spawned = 0;
  for (int i = 0; i < SPINNERS; ++i) {
    if (CHECK_STATUS(tcr_spawn(g_m, i == 0 ? LONG_NAME : "spinner", spinner, &g_spins[i], NULL,
                               &threads[spawned]), TCR_OK)) {
      ++spawned;
    }
  }
  const int have_blocker =
      CHECK_STATUS(tcr_spawn(g_m, "blocker", blocker, NULL, NULL, &threads[spawned]), TCR_OK);
  const uint64_t blocker_id = have_blocker ? threads[spawned].id : 0;
  if (have_blocker) ++spawned;
  if (!CHECK(spawned == SPINNERS + 1)) goto out;
  WAIT_UNTIL(atomic_load(&g_blocker_inside) && atomic_load(&g_spins[0]) &&
             atomic_load(&g_spins[1]) && atomic_load(&g_spins[2]));

  /* ---- inspection while they run ---- */
  size_t count = 0;
  CHECK_STATUS(tcr_snapshot(g_m, NULL, 0, &count), TCR_OK);
  CHECK(count == SPINNERS + 2); /* and main */
  CHECK_STATUS(tcr_snapshot(g_m, NULL, 1, &count), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_snapshot(g_m, NULL, 0, NULL), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_snapshot(NULL, NULL, 0, &count), TCR_STEP_BadArgument);
  tcr_thread_info infos[SPINNERS + 3];
  memset(infos, 0x7f, sizeof infos);
  count = 0;
  CHECK_STATUS(tcr_snapshot(g_m, infos, 2, &count), TCR_OK);
  CHECK(count == SPINNERS + 2);
  CHECK(infos[2].id == 0x7f7f7f7f7f7f7f7full); /* past the capacity: not written */
  memset(infos, 0x7f, sizeof infos);
  CHECK_STATUS(tcr_snapshot(g_m, infos, SPINNERS + 3, &count), TCR_OK);
  CHECK(count == SPINNERS + 2);
  int found_main = 0, found_long = 0, found_blocker = 0;
  for (size_t i = 0; i < count && i < SPINNERS + 2; ++i) {
    CHECK(memchr(infos[i].name, '\0', sizeof infos[i].name) != NULL);
    CHECK(infos[i].state == TCR_STATE_RUNNING);
    if (tcr_manager_handle_mode(g_m) == TCR_HANDLE_PIDFD) CHECK(infos[i].handle_fd >= 0);
    if (infos[i].id == tcr_self_id(me)) {
      ++found_main;
      CHECK(infos[i].adopted == 1);
      CHECK(infos[i].tid == my_tid());
      CHECK(strcmp(infos[i].name, "controller") == 0);
    } else {
      CHECK(infos[i].adopted == 0);
      CHECK(infos[i].detached == 0);
      CHECK(infos[i].gc_registered == 1);
    }
    if (infos[i].id == threads[0].id) {
      ++found_long;
      CHECK(strlen(infos[i].name) == sizeof infos[i].name - 1);
      CHECK(strncmp(infos[i].name, LONG_NAME, sizeof infos[i].name - 1) == 0);
    }
    if (infos[i].id == blocker_id) {
      ++found_blocker;
      CHECK(strcmp(infos[i].name, "blocker") == 0);
    }
  }
  CHECK(found_main == 1 && found_long == 1 && found_blocker == 1);
  CHECK(infos[SPINNERS + 2].id == 0x7f7f7f7f7f7f7f7full);

  int each = 0;
  CHECK_STATUS(tcr_for_each(g_m, on_each, &each), TCR_OK);
  CHECK(each == SPINNERS + 2);
  CHECK_STATUS(tcr_for_each(g_m, NULL, &each), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_for_each(NULL, on_each, &each), TCR_STEP_BadArgument);

  tcr_stats st;
  st.size = sizeof st;
  CHECK_STATUS(tcr_manager_stats(g_m, &st), TCR_OK);
  CHECK(st.live == SPINNERS + 2);
  CHECK(st.adopted == 1);
  CHECK(st.records >= SPINNERS + 2);
  st.size = sizeof st - 1;
  CHECK_STATUS(tcr_manager_stats(g_m, &st), TCR_STEP_BadArgument);
  st.size = sizeof st;
  CHECK_STATUS(tcr_manager_stats(NULL, &st), TCR_STEP_BadArgument);

  /* ---- the stop ---- */
  CHECK(tcr_world_stopped_by_caller(g_m) == 0);
  tcr_world w;
  memset(&w, 0, sizeof w);
  if (!CHECK_STATUS(tcr_suspend_all(g_m, &w), TCR_OK)) goto out;
  CHECK(tcr_world_stopped_by_caller(g_m) == 1);
  CHECK(w.count == SPINNERS + 1);
  CHECK(w.depth == 1);
  int kinds_ok = 0, listed = 0;
  for (size_t i = 0; i < w.count; ++i) {
    tcr_stopped_thread s;
    memset(&s, 0, sizeof s);
    if (!CHECK_STATUS(tcr_world_thread(&w, i, &s), TCR_OK)) continue;
    if (!CHECK(s.self != NULL)) continue;
    CHECK(s.self != me);
    CHECK(s.id == tcr_self_id(s.self));
    CHECK(s.tid == tcr_self_tid(s.self));
    for (int k = 0; k < spawned; ++k) {
      if (threads[k].id == s.id) ++listed;
    }
    const char* low = s.stack_low;
    const char* high = s.stack_high;
    CHECK(low < high);
    CHECK(low >= (const char*)tcr_self_stack_low(s.self));
    CHECK(high <= (const char*)tcr_self_stack_high(s.self));
    CHECK(s.registers != NULL && s.register_count > 0);
    CHECK(s.sp >= (uintptr_t)low && s.sp <= (uintptr_t)high);
    if (s.id == blocker_id) {
      kinds_ok += s.kind == TCR_STOP_BLOCKING;
      CHECK(s.kind == TCR_STOP_BLOCKING);
      CHECK(s.pc == 0);
    } else {
      kinds_ok += s.kind == TCR_STOP_SUSPENDED;
      CHECK(s.kind == TCR_STOP_SUSPENDED);
      CHECK(s.pc != 0);
    }
  }
  CHECK(listed == SPINNERS + 1);
  CHECK(kinds_ok == SPINNERS + 1);
  tcr_stopped_thread s;
  CHECK_STATUS(tcr_world_thread(&w, w.count, &s), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_world_thread(&w, (size_t)-1, &s), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_world_thread(NULL, 0, &s), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_world_thread(&w, 0, NULL), TCR_STEP_BadArgument);

  /* Held: no spinner moves while stopped (two reads a while apart; true of any stop). */
  unsigned long frozen[SPINNERS];
  for (int i = 0; i < SPINNERS; ++i) frozen[i] = atomic_load(&g_spins[i]);
  struct timespec ts = {0, 20 * 1000 * 1000};
  nanosleep(&ts, NULL);
  for (int i = 0; i < SPINNERS; ++i) CHECK(atomic_load(&g_spins[i]) == frozen[i]);

  /* Nesting: the same epoch one level deeper. */
  tcr_world inner;
  if (CHECK_STATUS(tcr_suspend_all(g_m, &inner), TCR_OK)) {
    CHECK(inner.depth == 2);
    CHECK(inner.epoch == w.epoch);
    CHECK(inner.count == w.count);
    CHECK_STATUS(tcr_resume_all(g_m), TCR_OK);
    CHECK(tcr_world_stopped_by_caller(g_m) == 1); /* still at depth 1 */
  }
  /* The blocker cannot leave its region while the world is stopped. */
  atomic_store(&g_stop, 1);
  nanosleep(&ts, NULL);
  CHECK(atomic_load(&g_blocker_left) == 0);
  for (int i = 0; i < SPINNERS; ++i) CHECK(atomic_load(&g_spins[i]) == frozen[i]);
  CHECK_STATUS(tcr_resume_all(g_m), TCR_OK);
  CHECK(tcr_world_stopped_by_caller(g_m) == 0);
  CHECK_STATUS(tcr_resume_all(g_m), TCR_STEP_BadArgument); /* one too many */
  WAIT_UNTIL(atomic_load(&g_blocker_left));
  CHECK(atomic_load(&g_blocker_left) == 1);

out:
  atomic_store(&g_stop, 1);
  for (int k = 0; k < spawned; ++k) CHECK_STATUS(tcr_join(g_m, threads[k], NULL), TCR_OK);
  CHECK_STATUS(tcr_release_current_thread(g_m), TCR_OK);
}

/* A stop that runs again lets the spinners move: a second round, to check the resume. */
static void resume_lets_threads_run(void) {
  if (!CHECK_STATUS(tcr_adopt_current_thread(g_m, "controller", NULL, NULL), TCR_OK)) return;
  atomic_store(&g_stop, 0);
  tcr_thread threads[SPINNERS];
  int spawned = 0;
  for (int i = 0; i < SPINNERS; ++i) {
    atomic_store(&g_spins[i], 0);
    if (CHECK_STATUS(tcr_spawn(g_m, "spinner", spinner, &g_spins[i], NULL, &threads[spawned]), TCR_OK)) {
      ++spawned;
    }
  }
  WAIT_UNTIL(atomic_load(&g_spins[0]) && atomic_load(&g_spins[1]) && atomic_load(&g_spins[2]));
  tcr_world w;
  if (spawned == SPINNERS && CHECK_STATUS(tcr_suspend_all(g_m, &w), TCR_OK)) {
    CHECK(w.count == SPINNERS);
    unsigned long frozen[SPINNERS];
    for (int i = 0; i < SPINNERS; ++i) frozen[i] = atomic_load(&g_spins[i]);
    CHECK_STATUS(tcr_resume_all(g_m), TCR_OK);
    WAIT_UNTIL(all_spinners_moved_since(frozen));
    CHECK(all_spinners_moved_since(frozen));
  }
  atomic_store(&g_stop, 1);
  for (int k = 0; k < spawned; ++k) CHECK_STATUS(tcr_join(g_m, threads[k], NULL), TCR_OK);
  CHECK_STATUS(tcr_release_current_thread(g_m), TCR_OK);
}

/* ---- the process's resources ---- */

static void* nothing(tcr_self* self, void* argument) {
  (void)self;
  return argument;
}

static void resources(void) {
  tcr_resource_counts before, during, after;
  memset(&before, 0, sizeof before);
  before.size = sizeof before;
  if (!CHECK_STATUS(tcr_resource_counts_read(&before), TCR_OK)) return;
  CHECK(before.size == sizeof before);
  CHECK(before.threads >= 1);
  CHECK(before.fds >= 3);
  CHECK(before.maps > 0);
  CHECK(before.rss_kb > 0);

  atomic_store(&g_stop, 0);
  static atomic_ulong spins;
  tcr_thread t[4];
  int spawned = 0;
  for (int i = 0; i < 4; ++i) {
    if (CHECK_STATUS(tcr_spawn(g_m, "counted", spinner, &spins, NULL, &t[spawned]), TCR_OK)) ++spawned;
  }
  during.size = sizeof during;
  CHECK_STATUS(tcr_resource_counts_read(&during), TCR_OK);
  CHECK(during.threads == before.threads + (size_t)spawned);
  if (tcr_manager_handle_mode(g_m) == TCR_HANDLE_PIDFD) {
    CHECK(during.pidfds == before.pidfds + (size_t)spawned);
  }
  atomic_store(&g_stop, 1);
  for (int k = 0; k < spawned; ++k) CHECK_STATUS(tcr_join(g_m, t[k], NULL), TCR_OK);
  tcr_spawn_options so;
  tcr_spawn_options_init(&so);
  so.detached = 1;
  CHECK_STATUS(tcr_spawn(g_m, "detached", nothing, NULL, &so, NULL), TCR_OK);
  CHECK_STATUS(tcr_reap(g_m, 1, NULL), TCR_OK);
  after.size = sizeof after;
  WAIT_UNTIL(tcr_resource_counts_read(&after) == TCR_OK && after.threads == before.threads &&
             after.fds == before.fds);
  CHECK(after.threads == before.threads);
  CHECK(after.fds == before.fds);
  CHECK(after.pidfds == before.pidfds);
}

static void resource_dump(void) {
  size_t full = 0;
  CHECK_STATUS(tcr_resource_dump(NULL, 0, &full), TCR_OK);
  CHECK(full > 0);
  CHECK_STATUS(tcr_resource_dump(NULL, 8, &full), TCR_STEP_BadArgument);
  char* text = malloc(full + 64);
  if (!CHECK(text != NULL)) return;
  size_t length = 0;
  CHECK_STATUS(tcr_resource_dump(text, full + 64, &length), TCR_OK);
  CHECK(length == full);
  CHECK(strlen(text) == full);
  char small[8];
  memset(small, 'x', sizeof small);
  length = 0;
  CHECK_STATUS(tcr_resource_dump(small, sizeof small, &length), TCR_OK);
  CHECK(length == full); /* the full length, as snprintf answers */
  CHECK(small[sizeof small - 1] == '\0');
  CHECK(strlen(small) == (full < sizeof small ? full : sizeof small - 1));
  CHECK(strncmp(small, text, strlen(small)) == 0);
  char one = 'x';
  CHECK_STATUS(tcr_resource_dump(&one, 1, &length), TCR_OK);
  CHECK(one == '\0');
  CHECK(length == full);
  CHECK_STATUS(tcr_resource_dump(small, sizeof small, NULL), TCR_OK); /* length may be NULL */
  free(text);
}

static void signals(void) {
  int suspend = 0, interrupt = 0;
  tcr_signals(&suspend, &interrupt);
  CHECK(suspend > 0 && interrupt > 0);
  CHECK(suspend != interrupt);
  CHECK(suspend <= SIGRTMAX && interrupt <= SIGRTMAX);
  CHECK(suspend != SIGSEGV && suspend != SIGBUS && interrupt != SIGSEGV && interrupt != SIGBUS);
  int again = 0;
  tcr_signals(NULL, &again);
  CHECK(again == interrupt);
  tcr_signals(&again, NULL);
  CHECK(again == suspend);
}

int main(void) {
  if (!CHECK_STATUS(tcr_manager_create(NULL, &g_m), TCR_OK)) return check_done();
  blocking_regions();
  stop_the_world();
  resume_lets_threads_run();
  resources();
  resource_dump();
  signals();
  tcr_manager_destroy(g_m);
  return check_done();
}
