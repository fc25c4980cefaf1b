/* Managers and threads through the C API: create/destroy, spawn/join/detach/reap, signals,
 * stale and foreign tcr_threads, stack sizes, start and exit hooks, the record's accessors and
 * slots, shutdown, trim, handle modes, GC registration rules and adoption. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "check.h"

#define MiB ((size_t)1 << 20)
#define KiB ((size_t)1 << 10)

static int my_tid(void) { return (int)syscall(SYS_gettid); }

static tcr_manager* new_manager(const tcr_manager_options* options) {
  tcr_manager* m = NULL;
  if (!CHECK_STATUS(tcr_manager_create(options, &m), TCR_OK)) return NULL;
  CHECK(m != NULL);
  return m;
}

/* ---- thread functions ---- */

static void* return_argument(tcr_self* self, void* argument) {
  (void)self;
  return argument;
}

static atomic_int g_gate; /* threads that wait for it spin (with naps) until it is nonzero */
static void* wait_for_gate(tcr_self* self, void* argument) {
  (void)self;
  while (!atomic_load(&g_gate)) check_nap_();
  return argument;
}

/* ---- managers ---- */

static void manager_create_destroy(void) {
  tcr_manager* m = NULL;
  CHECK_STATUS(tcr_manager_create(NULL, NULL), TCR_STEP_BadArgument);
  m = new_manager(NULL);
  tcr_manager_destroy(m);
  tcr_manager_destroy(NULL); /* a no-op */

  tcr_manager_options o;
  tcr_manager_options_init(&o);
  o.handle_mode = (tcr_handle_mode)9;
  m = NULL;
  CHECK_STATUS(tcr_manager_create(&o, &m), TCR_STEP_BadArgument);
  CHECK(m == NULL);
  CHECK(strstr(tcr_error_message(), "tcr_handle_mode") != NULL);
  tcr_manager_options_init(&o);
  o.gc = (tcr_gc_owner)9;
  CHECK_STATUS(tcr_manager_create(&o, &m), TCR_STEP_BadArgument);
  CHECK(strstr(tcr_error_message(), "tcr_gc_owner") != NULL);
  CHECK(m == NULL);

  const size_t bad_sizes[] = {4096, 64 * KiB - 1, ((size_t)1 << 30) + 1};
  for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; ++i) {
    tcr_manager_options_init(&o);
    o.stack_size = bad_sizes[i];
    CHECK_STATUS(tcr_manager_create(&o, &m), TCR_STEP_BadArgument);
    CHECK(strstr(tcr_error_message(), "stack_size") != NULL);
    CHECK(m == NULL);
  }
  const size_t good_sizes[] = {0, 64 * KiB, (size_t)1 << 30};
  for (size_t i = 0; i < sizeof good_sizes / sizeof good_sizes[0]; ++i) {
    tcr_manager_options_init(&o);
    o.stack_size = good_sizes[i];
    m = new_manager(&o);
    tcr_manager_destroy(m);
  }
}

static void handle_modes(void) {
  CHECK(tcr_manager_handle_mode(NULL) == TCR_HANDLE_AUTO);
  tcr_manager* m = new_manager(NULL);
  if (m == NULL) return;
  const tcr_handle_mode detected = tcr_manager_handle_mode(m);
  CHECK(detected == TCR_HANDLE_PIDFD || detected == TCR_HANDLE_TGKILL);
  tcr_manager_destroy(m);

  tcr_manager_options o;
  tcr_manager_options_init(&o);
  o.handle_mode = TCR_HANDLE_TGKILL;
  m = new_manager(&o);
  if (m == NULL) return;
  CHECK(tcr_manager_handle_mode(m) == TCR_HANDLE_TGKILL);
  tcr_thread t;
  if (CHECK_STATUS(tcr_spawn(m, "tgkill", return_argument, NULL, NULL, &t), TCR_OK)) {
    tcr_thread_info info;
    size_t n = 0;
    CHECK_STATUS(tcr_snapshot(m, &info, 1, &n), TCR_OK);
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
  }
  tcr_manager_destroy(m);

  if (detected == TCR_HANDLE_PIDFD) {
    o.handle_mode = TCR_HANDLE_PIDFD;
    m = new_manager(&o);
    CHECK(tcr_manager_handle_mode(m) == TCR_HANDLE_PIDFD);
    tcr_manager_destroy(m);
  }
}

/* ---- spawn, join, join_timed, exited, detach, reap ---- */

static void spawn_and_join(tcr_manager* m) {
  int arg = 0;
  tcr_thread t;
  memset(&t, 0, sizeof t);
  void* result = NULL;
  if (!CHECK_STATUS(tcr_spawn(m, "echo", return_argument, &arg, NULL, &t), TCR_OK)) return;
  CHECK(t.id != 0);
  CHECK_STATUS(tcr_join(m, t, &result), TCR_OK);
  CHECK(result == &arg);
  /* Reaped: the tcr_thread is stale. */
  result = &result;
  CHECK_STATUS(tcr_join(m, t, &result), TCR_STEP_StaleThread);
  CHECK(result == &result); /* untouched on failure */
  CHECK_STATUS(tcr_join_timed(m, t, 0, NULL), TCR_STEP_StaleThread);
  CHECK_STATUS(tcr_detach(m, t), TCR_STEP_StaleThread);
  int exited = -1;
  CHECK_STATUS(tcr_thread_exited(m, t, &exited), TCR_OK);
  CHECK(exited == 1);
  CHECK_STATUS(tcr_thread_exited(m, t, NULL), TCR_STEP_BadArgument);

  /* A second thread gets another id, though it may reuse the record. */
  tcr_thread u;
  if (CHECK_STATUS(tcr_spawn(m, NULL, return_argument, NULL, NULL, &u), TCR_OK)) {
    CHECK(u.id != t.id);
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_STEP_StaleThread); /* still not u */
    result = &result;
    CHECK_STATUS(tcr_join(m, u, &result), TCR_OK);
    CHECK(result == NULL);
  }
}

static void join_timed(tcr_manager* m) {
  atomic_store(&g_gate, 0);
  int arg = 0;
  tcr_thread t;
  if (!CHECK_STATUS(tcr_spawn(m, "waiter", wait_for_gate, &arg, NULL, &t), TCR_OK)) return;
  void* result = &result;
  CHECK_STATUS(tcr_join_timed(m, t, 0, &result), TCR_STEP_Timeout);
  CHECK_STATUS(tcr_join_timed(m, t, 2000000, &result), TCR_STEP_Timeout);
  CHECK(result == &result);
  int exited = -1;
  CHECK_STATUS(tcr_thread_exited(m, t, &exited), TCR_OK);
  CHECK(exited == 0);
  atomic_store(&g_gate, 1);
  WAIT_UNTIL(tcr_thread_exited(m, t, &exited) == TCR_OK && exited == 1);
  CHECK(exited == 1); /* exited before the join */
  CHECK_STATUS(tcr_join_timed(m, t, 30ull * 1000000000ull, &result), TCR_OK);
  CHECK(result == &arg);
  CHECK_STATUS(tcr_join_timed(m, t, 0, NULL), TCR_STEP_StaleThread);
}

static void detach_and_reap(tcr_manager* m) {
  atomic_store(&g_gate, 0);
  tcr_spawn_options so;
  tcr_spawn_options_init(&so);
  so.detached = 1;
  CHECK_STATUS(tcr_spawn(m, "detached", wait_for_gate, NULL, &so, NULL), TCR_OK);
  tcr_thread t;
  if (CHECK_STATUS(tcr_spawn(m, "detach-me", wait_for_gate, NULL, NULL, &t), TCR_OK)) {
    CHECK_STATUS(tcr_detach(m, t), TCR_OK);
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_STEP_ThreadDetached);
    CHECK_STATUS(tcr_detach(m, t), TCR_STEP_ThreadDetached);
  }
  tcr_stats st;
  st.size = sizeof st;
  CHECK_STATUS(tcr_manager_stats(m, &st), TCR_OK);
  CHECK(st.live == 2);
  atomic_store(&g_gate, 1);
  size_t reaped = 0;
  CHECK_STATUS(tcr_reap(m, 1, &reaped), TCR_OK);
  CHECK(reaped == 2);
  CHECK_STATUS(tcr_manager_stats(m, &st), TCR_OK);
  CHECK(st.live == 0);
  CHECK(st.dead_unreaped == 0);
  CHECK_STATUS(tcr_reap(m, 0, NULL), TCR_OK);
  CHECK_STATUS(tcr_reap(NULL, 0, NULL), TCR_STEP_BadArgument);
}

/* JoinSelf: the thread joins its own tcr_thread; AlreadyJoined: a second joiner while one waits. */
static tcr_manager* g_manager;
static atomic_int g_join_self_status = -1;
static void* join_self(tcr_self* self, void* argument) {
  (void)self;
  (void)argument;
  tcr_thread me;
  if (CHECK_STATUS(tcr_current_thread(g_manager, &me), TCR_OK)) {
    CHECK(me.id == tcr_self_id(self));
    atomic_store(&g_join_self_status, (int)tcr_join(g_manager, me, NULL));
  }
  return NULL;
}

static tcr_thread g_join_target;
static void* join_target(tcr_self* self, void* argument) {
  (void)self;
  (void)argument;
  void* result = NULL;
  CHECK_STATUS(tcr_join(g_manager, g_join_target, &result), TCR_OK);
  return result;
}

static void join_rules(tcr_manager* m) {
  g_manager = m;
  tcr_thread t;
  if (CHECK_STATUS(tcr_spawn(m, "narcissus", join_self, NULL, NULL, &t), TCR_OK)) {
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
    CHECK(atomic_load(&g_join_self_status) == TCR_STEP_JoinSelf);
  }

  atomic_store(&g_gate, 0);
  int arg = 0;
  if (!CHECK_STATUS(tcr_spawn(m, "slow", wait_for_gate, &arg, NULL, &g_join_target), TCR_OK)) return;
  tcr_thread joiner;
  if (CHECK_STATUS(tcr_spawn(m, "joiner", join_target, NULL, NULL, &joiner), TCR_OK)) {
    /* Until the joiner waits, a check answers Timeout; then AlreadyJoined. */
    tcr_status s = TCR_STEP_Timeout;
    for (int i = 0; i < 10000 && s == TCR_STEP_Timeout; ++i) {
      s = tcr_join_timed(m, g_join_target, 0, NULL);
      if (s == TCR_STEP_Timeout) check_nap_();
    }
    CHECK_STATUS(s, TCR_STEP_AlreadyJoined);
    CHECK_STATUS(tcr_join(m, g_join_target, NULL), TCR_STEP_AlreadyJoined);
    atomic_store(&g_gate, 1);
    void* result = NULL;
    CHECK_STATUS(tcr_join(m, joiner, &result), TCR_OK);
    CHECK(result == &arg);
  } else {
    atomic_store(&g_gate, 1);
    CHECK_STATUS(tcr_join(m, g_join_target, NULL), TCR_OK);
  }
}

/* ---- signals ---- */

static atomic_int g_signalled;
static void count_signal(int sig) {
  (void)sig;
  atomic_fetch_add(&g_signalled, 1);
}

static void signals(tcr_manager* m) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = count_signal;
  sigemptyset(&sa.sa_mask);
  CHECK(sigaction(SIGUSR2, &sa, &old) == 0);
  atomic_store(&g_signalled, 0);
  atomic_store(&g_gate, 0);
  tcr_thread t;
  if (CHECK_STATUS(tcr_spawn(m, "target", wait_for_gate, NULL, NULL, &t), TCR_OK)) {
    CHECK_STATUS(tcr_signal(m, t, SIGUSR2), TCR_OK);
    WAIT_UNTIL(atomic_load(&g_signalled) == 1);
    CHECK(atomic_load(&g_signalled) == 1);
    atomic_store(&g_gate, 1);
    tcr_stats st;
    st.size = sizeof st;
    WAIT_UNTIL(tcr_manager_stats(m, &st) == TCR_OK && st.live == 0);
    CHECK(st.live == 0);
    CHECK_STATUS(tcr_signal(m, t, SIGUSR2), TCR_STEP_ThreadExited); /* dead, not yet joined */
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
    CHECK_STATUS(tcr_signal(m, t, SIGUSR2), TCR_STEP_StaleThread); /* reaped */
    CHECK(atomic_load(&g_signalled) == 1);
  }
  CHECK_STATUS(tcr_signal(NULL, t, SIGUSR2), TCR_STEP_BadArgument);
  sigaction(SIGUSR2, &old, NULL);
}

/* ---- tcr_threads no call handed out, and other managers' ---- */

static void foreign_threads(tcr_manager* m) {
  tcr_thread zero;
  memset(&zero, 0, sizeof zero);
  tcr_thread made_up;
  made_up.id = 5;
  made_up.opaque_[0] = (uintptr_t)0x12345678;
  made_up.opaque_[1] = (uintptr_t)0x9abcdef0;
  const tcr_thread bad[2] = {zero, made_up};
  int exited = 0;
  for (int i = 0; i < 2; ++i) {
    CHECK_STATUS(tcr_join(m, bad[i], NULL), TCR_STEP_BadArgument);
    CHECK_STATUS(tcr_join_timed(m, bad[i], 0, NULL), TCR_STEP_BadArgument);
    CHECK_STATUS(tcr_detach(m, bad[i]), TCR_STEP_BadArgument);
    CHECK_STATUS(tcr_signal(m, bad[i], SIGUSR2), TCR_STEP_BadArgument);
    CHECK_STATUS(tcr_thread_exited(m, bad[i], &exited), TCR_STEP_BadArgument);
  }

  /* A live thread of another manager. */
  tcr_manager* other = new_manager(NULL);
  if (other == NULL) return;
  atomic_store(&g_gate, 0);
  tcr_thread t;
  if (CHECK_STATUS(tcr_spawn(other, "elsewhere", wait_for_gate, NULL, NULL, &t), TCR_OK)) {
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_STEP_BadArgument);
    CHECK_STATUS(tcr_join_timed(m, t, 0, NULL), TCR_STEP_BadArgument);
    CHECK_STATUS(tcr_detach(m, t), TCR_STEP_BadArgument);
    CHECK_STATUS(tcr_signal(m, t, SIGUSR2), TCR_STEP_BadArgument);
    CHECK_STATUS(tcr_thread_exited(m, t, &exited), TCR_STEP_BadArgument);
    /* A tcr_thread with one bit of its check changed is refused too. */
    tcr_thread forged = t;
    forged.opaque_[1] ^= 1;
    CHECK_STATUS(tcr_join_timed(other, forged, 0, NULL), TCR_STEP_BadArgument);
    forged = t;
    forged.id += 1;
    CHECK_STATUS(tcr_join_timed(other, forged, 0, NULL), TCR_STEP_BadArgument);
    atomic_store(&g_gate, 1);
    CHECK_STATUS(tcr_join(other, t, NULL), TCR_OK);
  }
  atomic_store(&g_gate, 1);
  tcr_manager_destroy(other);
}

static void spawn_bad_arguments(tcr_manager* m) {
  tcr_thread t;
  CHECK_STATUS(tcr_spawn(m, "nofn", NULL, NULL, NULL, &t), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_spawn(NULL, "nomanager", return_argument, NULL, NULL, &t), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_spawn(m, "noout", return_argument, NULL, NULL, NULL), TCR_STEP_BadArgument);
  tcr_spawn_options so;
  tcr_spawn_options_init(&so);
  so.gc = (tcr_gc_registration)9;
  CHECK_STATUS(tcr_spawn(m, "badgc", return_argument, NULL, &so, &t), TCR_STEP_BadArgument);
  tcr_spawn_options_init(&so);
  so.stack_size = 4096;
  CHECK_STATUS(tcr_spawn(m, "tiny", return_argument, NULL, &so, &t), TCR_STEP_BadArgument);
  tcr_stats st;
  st.size = sizeof st;
  CHECK_STATUS(tcr_manager_stats(m, &st), TCR_OK);
  CHECK(st.live == 0); /* nothing of those runs */

  /* Without a GC, a thread cannot be registered with one. */
  tcr_manager_options o;
  tcr_manager_options_init(&o);
  o.gc = TCR_GC_NONE;
  tcr_manager* nogc = new_manager(&o);
  if (nogc == NULL) return;
  tcr_spawn_options_init(&so);
  so.gc = TCR_GC_REGISTER;
  CHECK_STATUS(tcr_spawn(nogc, "register", return_argument, NULL, &so, &t), TCR_STEP_BadArgument);
  tcr_adopt_options ao;
  tcr_adopt_options_init(&ao);
  ao.gc = TCR_GC_REGISTER;
  CHECK_STATUS(tcr_adopt_current_thread(nogc, "register", &ao, NULL), TCR_STEP_BadArgument);
  CHECK(tcr_current() == NULL);
  so.gc = TCR_GC_INHERIT;
  if (CHECK_STATUS(tcr_spawn(nogc, "inherit", return_argument, NULL, &so, &t), TCR_OK)) {
    CHECK_STATUS(tcr_join(nogc, t, NULL), TCR_OK);
  }
  tcr_manager_destroy(nogc);
}

/* ---- stack sizes ---- */

static atomic_size_t g_stack_bytes;
static void* measure_stack(tcr_self* self, void* argument) {
  (void)argument;
  CHECK(self == tcr_current());
  char* low = tcr_self_stack_low(self);
  char* high = tcr_self_stack_high(self);
  char here = 0;
  CHECK(low < &here && &here < high);
  atomic_store(&g_stack_bytes, (size_t)(high - low));
  return NULL;
}

static void stack_sizes(void) {
  tcr_manager_options o;
  tcr_manager_options_init(&o);
  o.stack_size = 8 * MiB;
  tcr_manager* m = new_manager(&o);
  if (m == NULL) return;
  tcr_thread t;
  atomic_store(&g_stack_bytes, 0);
  if (CHECK_STATUS(tcr_spawn(m, "default", measure_stack, NULL, NULL, &t), TCR_OK)) {
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
    CHECK(atomic_load(&g_stack_bytes) >= 8 * MiB);
    CHECK(atomic_load(&g_stack_bytes) < 9 * MiB);
  }
  tcr_spawn_options so;
  tcr_spawn_options_init(&so);
  so.stack_size = CHECK_SMALL_STACK;
  atomic_store(&g_stack_bytes, 0);
  if (CHECK_STATUS(tcr_spawn(m, "named", measure_stack, NULL, &so, &t), TCR_OK)) {
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
    CHECK(atomic_load(&g_stack_bytes) >= CHECK_SMALL_STACK);
    CHECK(atomic_load(&g_stack_bytes) < CHECK_SMALL_STACK + 1 * MiB);
  }
  tcr_manager_destroy(m);

  /* The default manager: 1 MiB. */
  m = new_manager(NULL);
  if (m == NULL) return;
  atomic_store(&g_stack_bytes, 0);
  if (CHECK_STATUS(tcr_spawn(m, "one", measure_stack, NULL, NULL, &t), TCR_OK)) {
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
    CHECK(atomic_load(&g_stack_bytes) >= 1 * MiB);
    CHECK(atomic_load(&g_stack_bytes) < 2 * MiB);
  }
  tcr_manager_destroy(m);
}

/* ---- start and exit hooks, slots cleared at exit ---- */

static int g_hook_data;
static atomic_int g_start_runs, g_start_saw_self, g_start_before_fn, g_fn_runs;
static atomic_int g_exit_runs, g_exit_saw_arg, g_exit_saw_slots, g_exit_data_ok;
static atomic_int g_exit_current_ok;
static _Atomic(tcr_self*) g_saved_self;
static int g_arg_object, g_slot_object;

static int start_hook(tcr_self* self, void* data) {
  atomic_fetch_add(&g_start_runs, 1);
  if (self == tcr_current() && data == &g_hook_data && tcr_self_state(self) != TCR_STATE_FREE) {
    atomic_fetch_add(&g_start_saw_self, 1);
  }
  if (atomic_load(&g_fn_runs) == 0) atomic_fetch_add(&g_start_before_fn, 1);
  if (strcmp(tcr_self_name(self), "refused") == 0) return EPERM;
  return 0;
}

static void exit_hook(tcr_self* self, void* data) {
  atomic_fetch_add(&g_exit_runs, 1);
  if (data == &g_hook_data) atomic_fetch_add(&g_exit_data_ok, 1);
  if (self == tcr_current()) atomic_fetch_add(&g_exit_current_ok, 1);
  if (tcr_argument(self) == &g_arg_object) atomic_fetch_add(&g_exit_saw_arg, 1);
  void* first = NULL;
  void* last = NULL;
  if (tcr_slot_get(self, 0, &first) == TCR_OK && tcr_slot_get(self, TCR_SLOTS - 1, &last) == TCR_OK &&
      first == &g_slot_object && last == &g_slot_object) {
    atomic_fetch_add(&g_exit_saw_slots, 1);
  }
}

static int g_result_object;
static void* fill_slots(tcr_self* self, void* argument) {
  atomic_fetch_add(&g_fn_runs, 1);
  CHECK(argument == &g_arg_object);
  CHECK(tcr_argument(self) == &g_arg_object);
  CHECK_STATUS(tcr_slot_set(self, 0, &g_slot_object), TCR_OK);
  CHECK_STATUS(tcr_slot_set(self, TCR_SLOTS - 1, &g_slot_object), TCR_OK);
  CHECK_STATUS(tcr_self_set_notify_context(self, &g_slot_object), TCR_OK);
  atomic_store(&g_saved_self, self);
  return &g_result_object;
}

static void hooks(void) {
  tcr_manager_options o;
  tcr_manager_options_init(&o);
  o.start_hook = start_hook;
  o.start_hook_data = &g_hook_data;
  o.exit_hook = exit_hook;
  o.exit_hook_data = &g_hook_data;
  tcr_manager* m = new_manager(&o);
  if (m == NULL) return;

  tcr_thread t;
  if (CHECK_STATUS(tcr_spawn(m, "slots", fill_slots, &g_arg_object, NULL, &t), TCR_OK)) {
    int exited = 0;
    WAIT_UNTIL(tcr_thread_exited(m, t, &exited) == TCR_OK && exited);
    tcr_self* self = atomic_load(&g_saved_self);
    if (CHECK(self != NULL)) {
      /* Exited but not joined: the record stays ours to read; once dead its slots are empty. */
      WAIT_UNTIL(tcr_self_state(self) == TCR_STATE_DEAD);
      CHECK(tcr_self_state(self) == TCR_STATE_DEAD);
      CHECK(tcr_argument(self) == NULL);
      for (size_t i = 0; i < TCR_SLOTS; ++i) {
        void* v = &v;
        CHECK_STATUS(tcr_slot_get(self, i, &v), TCR_OK);
        CHECK(v == NULL);
      }
    }
    void* result = NULL;
    CHECK_STATUS(tcr_join(m, t, &result), TCR_OK);
    CHECK(result == &g_result_object);
    CHECK(atomic_load(&g_start_runs) == 1);
    CHECK(atomic_load(&g_start_saw_self) == 1);
    CHECK(atomic_load(&g_start_before_fn) == 1);
    CHECK(atomic_load(&g_fn_runs) == 1);
    CHECK(atomic_load(&g_exit_runs) == 1);
    CHECK(atomic_load(&g_exit_data_ok) == 1);
    CHECK(atomic_load(&g_exit_current_ok) == 1);
    CHECK(atomic_load(&g_exit_saw_arg) == 1);
    CHECK(atomic_load(&g_exit_saw_slots) == 1);
  }

  /* A start hook that fails: no function, the exit hook still, join names the hook's code. */
  if (CHECK_STATUS(tcr_spawn(m, "refused", fill_slots, &g_arg_object, NULL, &t), TCR_OK)) {
    void* result = &result;
    CHECK_STATUS(tcr_join(m, t, &result), TCR_STEP_StartHook);
    CHECK(tcr_error_code() == EPERM);
    CHECK(tcr_error_step() == TCR_STEP_StartHook);
    CHECK(result == &result);
    CHECK(atomic_load(&g_start_runs) == 2);
    CHECK(atomic_load(&g_fn_runs) == 1); /* not run again */
    CHECK(atomic_load(&g_exit_runs) == 2);
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_STEP_StaleThread);
  }

  /* Adopted threads run no hooks. */
  tcr_self* self = NULL;
  if (CHECK_STATUS(tcr_adopt_current_thread(m, "adopted", NULL, &self), TCR_OK)) {
    CHECK_STATUS(tcr_release_current_thread(m), TCR_OK);
    CHECK(atomic_load(&g_start_runs) == 2);
    CHECK(atomic_load(&g_exit_runs) == 2);
  }
  tcr_manager_destroy(m);
}

/* ---- the record's accessors and slots ---- */

static _Atomic uint64_t g_expected_id;
static atomic_int g_expect_detached, g_expect_registered, g_expect_pidfd;
static atomic_int g_accessors_done;
static void* accessors(tcr_self* self, void* argument) {
  CHECK(self == tcr_current());
  WAIT_UNTIL(atomic_load(&g_expected_id) != 0);
  CHECK(tcr_self_id(self) == atomic_load(&g_expected_id));
  CHECK(strcmp(tcr_self_name(self), "accessors") == 0);
  CHECK(tcr_self_state(self) == TCR_STATE_RUNNING);
  CHECK(tcr_self_tid(self) == my_tid());
  CHECK(tcr_self_adopted(self) == 0);
  CHECK(tcr_self_detached(self) == atomic_load(&g_expect_detached));
  CHECK(tcr_self_gc_registered(self) == atomic_load(&g_expect_registered));
  char* low = tcr_self_stack_low(self);
  char* high = tcr_self_stack_high(self);
  char* guard = tcr_self_guard_low(self);
  char here = 0;
  CHECK(low != NULL && low < &here && &here < high);
  CHECK(guard != NULL && guard < low); /* the guard lies below the stack */
  CHECK(tcr_self_traps(self) == 0);
  if (atomic_load(&g_expect_pidfd)) {
    CHECK(tcr_self_handle_fd(self) >= 0);
  } else {
    CHECK(tcr_self_handle_fd(self) == -1);
  }

  /* Slots: every index, and the one past the end. */
  static int objects[TCR_SLOTS];
  for (size_t i = 0; i < TCR_SLOTS; ++i) {
    void* v = &v;
    CHECK_STATUS(tcr_slot_get(self, i, &v), TCR_OK);
    CHECK(v == NULL); /* a fresh thread's slots are empty */
    CHECK_STATUS(tcr_slot_set(self, i, &objects[i]), TCR_OK);
  }
  for (size_t i = 0; i < TCR_SLOTS; ++i) {
    void* v = NULL;
    CHECK_STATUS(tcr_slot_get(self, i, &v), TCR_OK);
    CHECK(v == &objects[i]);
  }
  void* v = &v;
  CHECK_STATUS(tcr_slot_get(self, TCR_SLOTS, &v), TCR_STEP_BadArgument);
  CHECK(v == &v);
  CHECK_STATUS(tcr_slot_set(self, TCR_SLOTS, &v), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_slot_get(self, (size_t)-1, &v), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_slot_get(self, 0, NULL), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_slot_get(NULL, 0, &v), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_slot_set(NULL, 0, &v), TCR_STEP_BadArgument);

  /* The argument, and clearing it. */
  CHECK(tcr_argument(self) == argument);
  CHECK_STATUS(tcr_set_argument(self, &objects[0]), TCR_OK);
  CHECK(tcr_argument(self) == &objects[0]);
  CHECK_STATUS(tcr_set_argument(self, NULL), TCR_OK);
  CHECK(tcr_argument(self) == NULL);
  CHECK_STATUS(tcr_set_argument(NULL, NULL), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_self_set_notify_context(self, &objects[1]), TCR_OK);
  CHECK_STATUS(tcr_self_set_notify_context(NULL, NULL), TCR_STEP_BadArgument);
  atomic_store(&g_accessors_done, 1);
  return NULL;
}

static void accessors_of(tcr_manager* m, int detached, tcr_gc_registration gc, int registered) {
  atomic_store(&g_expected_id, 0);
  atomic_store(&g_accessors_done, 0);
  atomic_store(&g_expect_detached, detached);
  atomic_store(&g_expect_registered, registered);
  atomic_store(&g_expect_pidfd, tcr_manager_handle_mode(m) == TCR_HANDLE_PIDFD);
  tcr_spawn_options so;
  tcr_spawn_options_init(&so);
  so.gc = gc;
  int arg = 0;
  tcr_thread t;
  /* A detached thread's id comes from tcr_snapshot: it has no tcr_thread here. */
  so.detached = 0;
  if (!CHECK_STATUS(tcr_spawn(m, "accessors", accessors, &arg, &so, &t), TCR_OK)) return;
  if (detached) CHECK_STATUS(tcr_detach(m, t), TCR_OK);
  atomic_store(&g_expected_id, t.id);
  if (detached) {
    WAIT_UNTIL(atomic_load(&g_accessors_done));
    CHECK(atomic_load(&g_accessors_done));
    CHECK_STATUS(tcr_reap(m, 1, NULL), TCR_OK);
  } else {
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
    CHECK(atomic_load(&g_accessors_done));
  }
}

static void null_accessors(void) {
  CHECK(tcr_current() == NULL); /* main is not a tcr thread */
  CHECK(tcr_self_id(NULL) == 0);
  CHECK(tcr_self_name(NULL) != NULL && tcr_self_name(NULL)[0] == '\0');
  CHECK(tcr_self_state(NULL) == TCR_STATE_FREE);
  CHECK(tcr_self_tid(NULL) == 0);
  CHECK(tcr_self_adopted(NULL) == 0);
  CHECK(tcr_self_detached(NULL) == 0);
  CHECK(tcr_self_gc_registered(NULL) == 0);
  CHECK(tcr_self_stack_low(NULL) == NULL);
  CHECK(tcr_self_stack_high(NULL) == NULL);
  CHECK(tcr_self_guard_low(NULL) == NULL);
  CHECK(tcr_self_traps(NULL) == 0);
  CHECK(tcr_self_handle_fd(NULL) == -1);
  CHECK(tcr_argument(NULL) == NULL);
}

static void unnamed(tcr_manager* m) {
  tcr_thread t;
  atomic_store(&g_gate, 0);
  if (CHECK_STATUS(tcr_spawn(m, NULL, wait_for_gate, NULL, NULL, &t), TCR_OK)) {
    tcr_thread_info info;
    memset(&info, 0x55, sizeof info);
    size_t n = 0;
    CHECK_STATUS(tcr_snapshot(m, &info, 1, &n), TCR_OK);
    CHECK(n == 1);
    CHECK(info.id == t.id);
    CHECK(info.name[0] == '\0');
    atomic_store(&g_gate, 1);
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
  }
}

/* ---- shutdown and trim ---- */

static atomic_int g_adopted;
static void* adopt_until_gate(void* arg) {
  tcr_manager* m = arg;
  const tcr_status s = tcr_adopt_current_thread(m, "until-gate", NULL, NULL);
  atomic_store(&g_adopted, s == TCR_OK ? 1 : 2);
  while (!atomic_load(&g_gate)) check_nap_();
  if (s == TCR_OK) CHECK_STATUS(tcr_release_current_thread(m), TCR_OK);
  return NULL;
}

static void shutdown_and_trim(void) {
  tcr_manager* m = new_manager(NULL);
  if (m == NULL) return;
  tcr_thread a, b;
  if (CHECK_STATUS(tcr_spawn(m, "a", return_argument, NULL, NULL, &a), TCR_OK)) {
    CHECK_STATUS(tcr_join(m, a, NULL), TCR_OK);
  }
  if (CHECK_STATUS(tcr_spawn(m, "b", return_argument, NULL, NULL, &b), TCR_OK)) {
    CHECK_STATUS(tcr_join(m, b, NULL), TCR_OK);
  }
  tcr_stats st;
  st.size = sizeof st;
  CHECK_STATUS(tcr_manager_stats(m, &st), TCR_OK);
  CHECK(st.spawned == 2);
  CHECK(st.reaped == 2);
  CHECK(st.cached_stacks >= 1);
  const size_t cached = st.cached_stacks;
  CHECK(tcr_trim(m) == cached);
  CHECK_STATUS(tcr_manager_stats(m, &st), TCR_OK);
  CHECK(st.cached_stacks == 0);
  CHECK(tcr_trim(m) == 0);
  CHECK(tcr_trim(NULL) == 0);

  /* Shutdown waits for running threads; joinable ones stay joinable. */
  int arg = 0;
  tcr_thread t;
  if (!CHECK_STATUS(tcr_spawn(m, "runs", return_argument, &arg, NULL, &t), TCR_OK)) return;
  CHECK_STATUS(tcr_shutdown(m), TCR_OK);
  int exited = 0;
  CHECK_STATUS(tcr_thread_exited(m, t, &exited), TCR_OK);
  CHECK(exited == 1);
  tcr_thread u;
  CHECK_STATUS(tcr_spawn(m, "late", return_argument, NULL, NULL, &u), TCR_STEP_ManagerShutDown);
  CHECK_STATUS(tcr_adopt_current_thread(m, "late", NULL, NULL), TCR_STEP_ManagerShutDown);
  CHECK(tcr_current() == NULL);
  void* result = NULL;
  CHECK_STATUS(tcr_join(m, t, &result), TCR_OK);
  CHECK(result == &arg);
  CHECK_STATUS(tcr_shutdown(NULL), TCR_STEP_BadArgument);
  tcr_manager_destroy(m);

  /* With another adopted thread alive: AdoptedThreadsAlive (the caller itself does not count,
   * as in the C++ API). */
  m = new_manager(NULL);
  if (m == NULL) return;
  atomic_store(&g_adopted, 0);
  atomic_store(&g_gate, 0);
  pthread_t p;
  CHECK(pthread_create(&p, NULL, adopt_until_gate, m) == 0);
  WAIT_UNTIL(atomic_load(&g_adopted) != 0);
  if (CHECK(atomic_load(&g_adopted) == 1)) {
    CHECK_STATUS(tcr_shutdown(m), TCR_STEP_AdoptedThreadsAlive);
  }
  atomic_store(&g_gate, 1);
  CHECK(pthread_join(p, NULL) == 0);
  CHECK_STATUS(tcr_shutdown(m), TCR_OK);
  tcr_manager_destroy(m);
  m = new_manager(NULL);
  if (m == NULL) return;
  if (CHECK_STATUS(tcr_adopt_current_thread(m, "main", NULL, NULL), TCR_OK)) {
    CHECK_STATUS(tcr_shutdown(m), TCR_OK); /* only the caller is adopted */
    CHECK_STATUS(tcr_release_current_thread(m), TCR_OK);
  }
  tcr_manager_destroy(m);

  /* cached_stacks 0: nothing kept, nothing to trim. */
  tcr_manager_options o;
  tcr_manager_options_init(&o);
  o.cached_stacks = 0;
  m = new_manager(&o);
  if (m == NULL) return;
  if (CHECK_STATUS(tcr_spawn(m, "a", return_argument, NULL, NULL, &a), TCR_OK)) {
    CHECK_STATUS(tcr_join(m, a, NULL), TCR_OK);
  }
  CHECK_STATUS(tcr_manager_stats(m, &st), TCR_OK);
  CHECK(st.cached_stacks == 0);
  CHECK(tcr_trim(m) == 0);
  tcr_manager_destroy(m);
}

/* ---- adoption ---- */

static void* adoptee(void* arg) {
  tcr_manager* m = arg;
  tcr_thread t;
  CHECK(tcr_current() == NULL);
  CHECK_STATUS(tcr_current_thread(m, &t), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_release_current_thread(m), TCR_STEP_NotAdopted);
  CHECK_STATUS(tcr_adopt_current_thread(NULL, "x", NULL, NULL), TCR_STEP_BadArgument);
  tcr_self* self = NULL;
  if (!CHECK_STATUS(tcr_adopt_current_thread(m, "adoptee", NULL, &self), TCR_OK)) return NULL;
  CHECK(self != NULL);
  CHECK(tcr_current() == self);
  CHECK(tcr_self_adopted(self) == 1);
  CHECK(tcr_self_detached(self) == 0);
  CHECK(tcr_self_tid(self) == my_tid());
  CHECK(strcmp(tcr_self_name(self), "adoptee") == 0);
  CHECK(tcr_self_state(self) == TCR_STATE_RUNNING);
  CHECK(tcr_self_gc_registered(self) == 1);
  char here = 0;
  CHECK((char*)tcr_self_stack_low(self) < &here && &here < (char*)tcr_self_stack_high(self));
  if (CHECK_STATUS(tcr_current_thread(m, &t), TCR_OK)) {
    CHECK(t.id == tcr_self_id(self));
    CHECK(t.id != 0);
    int exited = -1;
    CHECK_STATUS(tcr_thread_exited(m, t, &exited), TCR_OK);
    CHECK(exited == 0);
    CHECK_STATUS(tcr_current_thread(m, NULL), TCR_STEP_BadArgument);
    CHECK_STATUS(tcr_current_thread(NULL, &t), TCR_STEP_BadArgument);
  }
  /* Another manager does not know it. */
  tcr_manager* other = new_manager(NULL);
  if (other != NULL) {
    tcr_thread u;
    CHECK_STATUS(tcr_current_thread(other, &u), TCR_STEP_BadArgument);
    CHECK_STATUS(tcr_release_current_thread(other), TCR_STEP_NotAdopted);
    tcr_manager_destroy(other);
  }
  CHECK_STATUS(tcr_release_current_thread(m), TCR_OK);
  CHECK(tcr_current() == NULL);
  CHECK_STATUS(tcr_current_thread(m, &t), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_release_current_thread(m), TCR_STEP_NotAdopted);
  /* Adopt again, not registered with the GC this time, and leave the release to the exit. */
  tcr_adopt_options ao;
  tcr_adopt_options_init(&ao);
  ao.gc = TCR_GC_DONT_REGISTER;
  if (CHECK_STATUS(tcr_adopt_current_thread(m, NULL, &ao, &self), TCR_OK)) {
    CHECK(tcr_current() == self);
    CHECK(tcr_self_gc_registered(self) == 0);
    CHECK(strcmp(tcr_self_name(self), "") == 0);
  }
  return NULL;
}

static void adoption(void) {
  tcr_manager* m = new_manager(NULL);
  if (m == NULL) return;
  pthread_t p;
  CHECK(pthread_create(&p, NULL, adoptee, m) == 0);
  CHECK(pthread_join(p, NULL) == 0);
  /* The second adoption was released at the thread's exit. */
  tcr_stats st;
  st.size = sizeof st;
  WAIT_UNTIL(tcr_manager_stats(m, &st) == TCR_OK && st.live == 0);
  CHECK(st.live == 0);
  CHECK(st.adopted == 2);
  tcr_thread t;
  CHECK_STATUS(tcr_current_thread(m, &t), TCR_STEP_BadArgument); /* main: not a tcr thread */
  tcr_manager_destroy(m);
}

int main(void) {
  null_accessors();
  manager_create_destroy();
  handle_modes();
  tcr_manager* m = new_manager(NULL);
  if (m != NULL) {
    spawn_and_join(m);
    join_timed(m);
    detach_and_reap(m);
    join_rules(m);
    signals(m);
    foreign_threads(m);
    spawn_bad_arguments(m);
    accessors_of(m, 0, TCR_GC_INHERIT, 1);
    accessors_of(m, 1, TCR_GC_DONT_REGISTER, 0);
    unnamed(m);
    tcr_manager_destroy(m);
  }
  tcr_manager_options o;
  tcr_manager_options_init(&o);
  o.handle_mode = TCR_HANDLE_TGKILL;
  o.gc = TCR_GC_NONE;
  m = new_manager(&o);
  if (m != NULL) {
    accessors_of(m, 0, TCR_GC_INHERIT, 0);
    tcr_manager_destroy(m);
  }
  stack_sizes();
  hooks();
  shutdown_and_trim();
  adoption();
  return check_done();
}
