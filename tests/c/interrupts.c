/* process-interrupt through the C API: tcr_interrupt and its tickets, tcr_poll, tcr_sleep_ns,
 * semaphores (and interrupts delivered while a thread waits on one), the notify hook (the
 * runtime's doorbell; no wake-up signal) and the trampoline. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "check.h"

static int my_tid(void) { return (int)syscall(SYS_gettid); }

static tcr_manager* new_manager(const tcr_manager_options* options) {
  tcr_manager* m = NULL;
  if (!CHECK_STATUS(tcr_manager_create(options, &m), TCR_OK)) return NULL;
  return m;
}

static int interrupt_signal(void) {
  int suspend = 0, interrupt = 0;
  tcr_signals(&suspend, &interrupt);
  return interrupt;
}

static void block_interrupt_signal(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, interrupt_signal());
  pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static int interrupt_signal_pending(void) {
  sigset_t pending;
  sigemptyset(&pending);
  sigpending(&pending);
  return sigismember(&pending, interrupt_signal()) == 1;
}

/* ---- a target that polls ---- */

static atomic_int g_stop;
static _Atomic(tcr_self*) g_target_self;
static atomic_int g_target_tid;

static void* poll_until_stopped(tcr_self* self, void* argument) {
  (void)argument;
  atomic_store(&g_target_tid, my_tid());
  atomic_store(&g_target_self, self);
  while (!atomic_load(&g_stop)) tcr_poll();
  return NULL;
}

static tcr_thread spawn_poller(tcr_manager* m, int* ok) {
  tcr_thread t;
  memset(&t, 0, sizeof t);
  atomic_store(&g_stop, 0);
  atomic_store(&g_target_self, NULL);
  *ok = CHECK_STATUS(tcr_spawn(m, "poller", poll_until_stopped, NULL, NULL, &t), TCR_OK);
  if (*ok) {
    WAIT_UNTIL(atomic_load(&g_target_self) != NULL);
    *ok = CHECK(atomic_load(&g_target_self) != NULL);
  }
  return t;
}

static void stop_and_join(tcr_manager* m, tcr_thread t) {
  atomic_store(&g_stop, 1);
  CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
}

/* What a closure saw. */
typedef struct {
  atomic_int ran;
  _Atomic(tcr_self*) self_arg;
  _Atomic(tcr_self*) current;
  atomic_int tid;
} seen;

static void record(tcr_self* self, void* data) {
  seen* s = data;
  atomic_store(&s->self_arg, self);
  atomic_store(&s->current, tcr_current());
  atomic_store(&s->tid, my_tid());
  atomic_fetch_add(&s->ran, 1);
}

static void count(tcr_self* self, void* data) {
  (void)self;
  atomic_fetch_add((atomic_int*)data, 1);
}

static void basic_interrupts(void) {
  tcr_manager* m = new_manager(NULL);
  if (m == NULL) return;
  int ok = 0;
  tcr_thread t = spawn_poller(m, &ok);
  if (ok) {
    static seen s;
    tcr_ticket* ticket = NULL;
    if (CHECK_STATUS(tcr_interrupt(m, t, record, &s, &ticket), TCR_OK)) {
      CHECK(ticket != NULL);
      CHECK_STATUS(tcr_ticket_wait(ticket), TCR_OK);
      CHECK(tcr_ticket_outcome(ticket) == TCR_DELIVERED);
      CHECK_STATUS(tcr_ticket_wait(ticket), TCR_OK); /* a settled ticket answers again */
      tcr_ticket_release(ticket);
      CHECK(atomic_load(&s.ran) == 1);
      CHECK(atomic_load(&s.self_arg) == atomic_load(&g_target_self));
      CHECK(atomic_load(&s.current) == atomic_load(&g_target_self));
      CHECK(atomic_load(&s.tid) == atomic_load(&g_target_tid));
    }
    /* No ticket: the closure still runs. */
    static atomic_int counter;
    for (int i = 0; i < 5; ++i) CHECK_STATUS(tcr_interrupt(m, t, count, &counter, NULL), TCR_OK);
    WAIT_UNTIL(atomic_load(&counter) == 5);
    CHECK(atomic_load(&counter) == 5);

    /* Bad arguments: nothing is queued. */
    tcr_ticket* none = NULL;
    CHECK_STATUS(tcr_interrupt(m, t, NULL, NULL, &none), TCR_STEP_BadArgument);
    CHECK(none == NULL);
    CHECK_STATUS(tcr_interrupt(NULL, t, count, &counter, &none), TCR_STEP_BadArgument);
    CHECK(none == NULL);
    tcr_thread zero;
    memset(&zero, 0, sizeof zero);
    CHECK_STATUS(tcr_interrupt(m, zero, count, &counter, &none), TCR_STEP_BadArgument);
    CHECK(none == NULL);
    tcr_manager* other = new_manager(NULL);
    if (other != NULL) {
      CHECK_STATUS(tcr_interrupt(other, t, count, &counter, &none), TCR_STEP_BadArgument);
      tcr_manager_destroy(other);
    }
    stop_and_join(m, t);
    CHECK(atomic_load(&counter) == 5);
  }
  CHECK_STATUS(tcr_ticket_wait(NULL), TCR_STEP_BadArgument);
  tcr_ticket_release(NULL); /* a no-op */
  tcr_manager_destroy(m);
}

/* An exited thread: the interrupt is no error, its ticket settles Undelivered. */
static void* return_at_once(tcr_self* self, void* argument) {
  (void)argument;
  atomic_store(&g_target_self, self);
  return NULL;
}

static void interrupt_exited_thread(void) {
  tcr_manager* m = new_manager(NULL);
  if (m == NULL) return;
  atomic_store(&g_target_self, NULL);
  tcr_thread t;
  if (CHECK_STATUS(tcr_spawn(m, "gone", return_at_once, NULL, NULL, &t), TCR_OK)) {
    WAIT_UNTIL(atomic_load(&g_target_self) != NULL &&
               tcr_self_state(atomic_load(&g_target_self)) == TCR_STATE_DEAD);
    CHECK(tcr_self_state(atomic_load(&g_target_self)) == TCR_STATE_DEAD);
    static atomic_int counter;
    tcr_ticket* ticket = NULL;
    if (CHECK_STATUS(tcr_interrupt(m, t, count, &counter, &ticket), TCR_OK)) {
      CHECK_STATUS(tcr_ticket_wait(ticket), TCR_STEP_ThreadExited);
      CHECK(tcr_ticket_outcome(ticket) == TCR_UNDELIVERED);
      tcr_ticket_release(ticket);
    }
    CHECK_STATUS(tcr_interrupt(m, t, count, &counter, NULL), TCR_OK);
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
    CHECK(atomic_load(&counter) == 0);
  }
  tcr_manager_destroy(m);
}

/* ---- tcr_poll answers how many ran; tcr_sleep_ns and semaphore waits run interrupts ---- */

static atomic_int g_phase;
static atomic_size_t g_polled_first, g_polled_second;
static void* poll_once_when_told(tcr_self* self, void* argument) {
  (void)self;
  (void)argument;
  block_interrupt_signal(); /* no handler: closures run only at the poll */
  atomic_store(&g_phase, 1);
  while (atomic_load(&g_phase) != 2) check_nap_();
  atomic_store(&g_polled_first, tcr_poll());
  atomic_store(&g_polled_second, tcr_poll());
  return NULL;
}

static atomic_int g_in_wait;
static void note_in_wait(tcr_self* self, void* data) {
  (void)self;
  if (atomic_load(&g_in_wait)) atomic_fetch_add((atomic_int*)data, 1);
}

static void* sleep_until_interrupted(tcr_self* self, void* argument) {
  (void)self;
  atomic_int* inside = argument;
  block_interrupt_signal(); /* only tcr's own wait can run the closure */
  for (int i = 0; i < 200 && atomic_load(inside) == 0; ++i) {
    atomic_store(&g_in_wait, 1);
    tcr_sleep_ns(50 * 1000 * 1000);
    atomic_store(&g_in_wait, 0);
  }
  return NULL;
}

static tcr_semaphore* g_semaphore;
static void* wait_on_semaphore(tcr_self* self, void* argument) {
  (void)self;
  if (argument != NULL) block_interrupt_signal();
  atomic_store(&g_in_wait, 1);
  tcr_semaphore_wait(g_semaphore);
  atomic_store(&g_in_wait, 0);
  return NULL;
}

static void noop_notify(uint64_t id, void* context, void* data) {
  (void)id;
  (void)context;
  (void)data;
}

static void safe_points(void) {
  tcr_manager* m = new_manager(NULL);
  if (m == NULL) return;
  atomic_store(&g_phase, 0);
  tcr_thread t;
  if (CHECK_STATUS(tcr_spawn(m, "poll-once", poll_once_when_told, NULL, NULL, &t), TCR_OK)) {
    WAIT_UNTIL(atomic_load(&g_phase) == 1);
    static atomic_int counter;
    tcr_ticket* tickets[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; ++i) CHECK_STATUS(tcr_interrupt(m, t, count, &counter, &tickets[i]), TCR_OK);
    CHECK(atomic_load(&counter) == 0);
    for (int i = 0; i < 3; ++i) CHECK(tcr_ticket_outcome(tickets[i]) == TCR_PENDING);
    atomic_store(&g_phase, 2);
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
    CHECK(atomic_load(&g_polled_first) == 3);
    CHECK(atomic_load(&g_polled_second) == 0);
    CHECK(atomic_load(&counter) == 3);
    for (int i = 0; i < 3; ++i) {
      CHECK(tcr_ticket_outcome(tickets[i]) == TCR_DELIVERED);
      tcr_ticket_release(tickets[i]);
    }
  }
  CHECK(tcr_poll() == 0); /* main: not a tcr thread, nothing to run */
  tcr_sleep_ns(0);
  tcr_manager_destroy(m);

  /* With a notify hook, tcr's own waits are woken directly: the thread blocks the signal. */
  tcr_manager_options o;
  tcr_manager_options_init(&o);
  o.notify_hook = noop_notify;
  m = new_manager(&o);
  if (m == NULL) return;
  static atomic_int inside;
  atomic_store(&g_in_wait, 0);
  if (CHECK_STATUS(tcr_spawn(m, "sleeper", sleep_until_interrupted, &inside, NULL, &t), TCR_OK)) {
    WAIT_UNTIL(atomic_load(&g_in_wait) == 1);
    tcr_ticket* ticket = NULL;
    if (CHECK_STATUS(tcr_interrupt(m, t, note_in_wait, &inside, &ticket), TCR_OK)) {
      CHECK_STATUS(tcr_ticket_wait(ticket), TCR_OK);
      tcr_ticket_release(ticket);
    }
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
    CHECK(atomic_load(&inside) == 1);
  }

  /* A closure delivered while the target waits in tcr_semaphore_wait: with the doorbell manager
   * (signal blocked: woken directly), and with a default one (the wake-up signal). */
  tcr_manager* d = new_manager(NULL);
  /* Under TSan only the doorbell round: the wake-up signal into a futex wait never arrives there. */
  for (int round = 0; round < (CHECK_UNDER_TSAN ? 1 : 2) && d != NULL; ++round) {
    tcr_manager* mm = round == 0 ? m : d;
    static atomic_int in_sem;
    atomic_store(&in_sem, 0);
    atomic_store(&g_in_wait, 0);
    if (!CHECK_STATUS(tcr_semaphore_create(0, &g_semaphore), TCR_OK)) break;
    if (CHECK_STATUS(tcr_spawn(mm, "sem-waiter", wait_on_semaphore, round == 0 ? &in_sem : NULL,
                               NULL, &t), TCR_OK)) {
      WAIT_UNTIL(atomic_load(&g_in_wait) == 1);
      tcr_ticket* ticket = NULL;
      if (CHECK_STATUS(tcr_interrupt(mm, t, note_in_wait, &in_sem, &ticket), TCR_OK)) {
        CHECK_STATUS(tcr_ticket_wait(ticket), TCR_OK);
        CHECK(tcr_ticket_outcome(ticket) == TCR_DELIVERED);
        tcr_ticket_release(ticket);
      }
      CHECK(atomic_load(&in_sem) == 1);
      CHECK(atomic_load(&g_in_wait) == 1); /* still waiting: the interrupt took no unit */
      tcr_semaphore_post(g_semaphore);
      CHECK_STATUS(tcr_join(mm, t, NULL), TCR_OK);
      CHECK(tcr_semaphore_value(g_semaphore) == 0);
    }
    tcr_semaphore_destroy(g_semaphore);
  }
  tcr_manager_destroy(d);
  tcr_manager_destroy(m);
}

/* ---- semaphores ---- */

static void* post_twice(void* arg) {
  tcr_semaphore_post(arg);
  tcr_semaphore_post(arg);
  return NULL;
}

static void semaphores(void) {
  CHECK_STATUS(tcr_semaphore_create(0, NULL), TCR_STEP_BadArgument);
  tcr_semaphore* s = NULL;
  if (!CHECK_STATUS(tcr_semaphore_create(2, &s), TCR_OK)) return;
  CHECK(tcr_semaphore_value(s) == 2);
  CHECK(tcr_semaphore_try_wait(s) == 1);
  CHECK(tcr_semaphore_value(s) == 1);
  CHECK(tcr_semaphore_try_wait(s) == 1);
  CHECK(tcr_semaphore_try_wait(s) == 0);
  CHECK(tcr_semaphore_value(s) == 0);
  CHECK(tcr_semaphore_wait_ns(s, 1000000) == 0); /* times out: nothing posted */
  CHECK(tcr_semaphore_wait_ns(s, 0) == 0);
  tcr_semaphore_post(s);
  CHECK(tcr_semaphore_value(s) == 1);
  CHECK(tcr_semaphore_wait_ns(s, 10ull * 1000000000ull) == 1);
  CHECK(tcr_semaphore_value(s) == 0);
  tcr_semaphore_post(s);
  tcr_semaphore_wait(s); /* returns: a unit is there */
  CHECK(tcr_semaphore_value(s) == 0);
  /* Posted from another thread while this one waits. */
  pthread_t p;
  CHECK(pthread_create(&p, NULL, post_twice, s) == 0);
  tcr_semaphore_wait(s);
  CHECK(tcr_semaphore_wait_ns(s, 30ull * 1000000000ull) == 1);
  CHECK(pthread_join(p, NULL) == 0);
  CHECK(tcr_semaphore_value(s) == 0);
  tcr_semaphore_destroy(s);

  /* NULL: answers 0, does nothing. */
  CHECK(tcr_semaphore_try_wait(NULL) == 0);
  CHECK(tcr_semaphore_wait_ns(NULL, 1000) == 0);
  CHECK(tcr_semaphore_value(NULL) == 0);
  tcr_semaphore_post(NULL);
  tcr_semaphore_wait(NULL);
  tcr_semaphore_destroy(NULL);
}

/* ---- the notify hook ---- */

typedef struct {
  atomic_int rings;
  _Atomic uint64_t last_id;
  _Atomic(void*) last_context;
  atomic_int data_ok;
  atomic_int on_interrupter;
} doorbell;
static doorbell g_bell;
static int g_bell_data;
static int g_context_object;
static atomic_int g_main_tid;

static void ring(uint64_t id, void* context, void* data) {
  atomic_store(&g_bell.last_id, id);
  atomic_store(&g_bell.last_context, context);
  if (data == &g_bell_data) atomic_fetch_add(&g_bell.data_ok, 1);
  if (my_tid() == atomic_load(&g_main_tid)) atomic_fetch_add(&g_bell.on_interrupter, 1);
  atomic_fetch_add(&g_bell.rings, 1);
}

static int set_context(tcr_self* self, void* data) {
  return tcr_self_set_notify_context(self, data) == TCR_OK ? 0 : 1;
}

static atomic_int g_ran, g_ready, g_signal_seen, g_wrong_thread;
static void count_ran(tcr_self* self, void* data) {
  (void)data;
  if (self != tcr_current() || my_tid() != atomic_load(&g_target_tid)) {
    atomic_fetch_add(&g_wrong_thread, 1);
  }
  atomic_fetch_add(&g_ran, 1);
}

/* A runtime's own loop: no tcr safe point until its doorbell rings. */
static void* runtime_loop(tcr_self* self, void* argument) {
  (void)self;
  (void)argument;
  atomic_store(&g_target_tid, my_tid());
  block_interrupt_signal();
  atomic_store(&g_ready, 1);
  while (!atomic_load(&g_stop)) {
    if (atomic_load(&g_bell.rings) > atomic_load(&g_ran)) tcr_poll();
  }
  atomic_store(&g_signal_seen, interrupt_signal_pending());
  return NULL;
}

/* The control: without the hook, the blocked signal is pending, so the check above can fail. */
static void* spin_until_signal_pending(tcr_self* self, void* argument) {
  (void)self;
  (void)argument;
  block_interrupt_signal();
  atomic_store(&g_ready, 1);
  while (!atomic_load(&g_stop) && !interrupt_signal_pending()) {
  }
  atomic_store(&g_signal_seen, interrupt_signal_pending());
  return NULL;
}

static void notify_hook(void) {
  atomic_store(&g_main_tid, my_tid());
  tcr_manager_options o;
  tcr_manager_options_init(&o);
  o.notify_hook = ring;
  o.notify_hook_data = &g_bell_data;
  o.start_hook = set_context;
  o.start_hook_data = &g_context_object;
  tcr_manager* m = new_manager(&o);
  if (m == NULL) return;
  atomic_store(&g_stop, 0);
  atomic_store(&g_ready, 0);
  atomic_store(&g_signal_seen, -1);
  tcr_thread t;
  if (CHECK_STATUS(tcr_spawn(m, "runtime", runtime_loop, NULL, NULL, &t), TCR_OK)) {
    WAIT_UNTIL(atomic_load(&g_ready));
    for (int i = 0; i < 10; ++i) {
      tcr_ticket* ticket = NULL;
      if (!CHECK_STATUS(tcr_interrupt(m, t, count_ran, NULL, &ticket), TCR_OK)) break;
      WAIT_UNTIL(tcr_ticket_outcome(ticket) == TCR_DELIVERED);
      CHECK(tcr_ticket_outcome(ticket) == TCR_DELIVERED);
      tcr_ticket_release(ticket);
    }
    atomic_store(&g_stop, 1);
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
    CHECK(atomic_load(&g_ran) == 10);
    CHECK(atomic_load(&g_wrong_thread) == 0);
    CHECK(atomic_load(&g_bell.rings) == 10);
    CHECK(atomic_load(&g_bell.data_ok) == 10);
    CHECK(atomic_load(&g_bell.on_interrupter) == 10);
    CHECK(atomic_load(&g_bell.last_id) == t.id);
    CHECK(atomic_load(&g_bell.last_context) == &g_context_object);
    CHECK(atomic_load(&g_signal_seen) == 0);
  }
  tcr_manager_destroy(m);

  m = new_manager(NULL);
  if (m == NULL) return;
  atomic_store(&g_stop, 0);
  atomic_store(&g_ready, 0);
  atomic_store(&g_signal_seen, -1);
  if (CHECK_STATUS(tcr_spawn(m, "control", spin_until_signal_pending, NULL, NULL, &t), TCR_OK)) {
    WAIT_UNTIL(atomic_load(&g_ready));
    tcr_ticket* ticket = NULL;
    static atomic_int counter;
    CHECK_STATUS(tcr_interrupt(m, t, count, &counter, &ticket), TCR_OK);
    WAIT_UNTIL(atomic_load(&g_signal_seen) == 1);
    atomic_store(&g_stop, 1);
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
    CHECK(atomic_load(&g_signal_seen) == 1);
    if (ticket != NULL) {
      CHECK(tcr_ticket_outcome(ticket) == TCR_DELIVERED); /* at the thread's exit */
      tcr_ticket_release(ticket);
    }
  }
  tcr_manager_destroy(m);
}

/* ---- the trampoline ---- */

static _Thread_local int t_in_trampoline;
static atomic_int g_trampolines, g_trampoline_ok, g_inside, g_outside;
static int g_trampoline_data;

static void trampoline(tcr_self* self, void (*run)(void* closure), void* closure, void* data) {
  atomic_fetch_add(&g_trampolines, 1);
  if (self == tcr_current() && data == &g_trampoline_data) atomic_fetch_add(&g_trampoline_ok, 1);
  ++t_in_trampoline;
  run(closure);
  run(closure); /* a second call runs nothing */
  --t_in_trampoline;
}

static void where_am_i(tcr_self* self, void* data) {
  (void)self;
  (void)data;
  atomic_fetch_add(t_in_trampoline ? &g_inside : &g_outside, 1);
}

static void no_run(tcr_self* self, void (*run)(void* closure), void* closure, void* data) {
  (void)self;
  (void)run;
  (void)closure;
  atomic_fetch_add((atomic_int*)data, 1);
}

static void trampolines(void) {
  tcr_manager_options o;
  tcr_manager_options_init(&o);
  o.trampoline = trampoline;
  o.trampoline_data = &g_trampoline_data;
  tcr_manager* m = new_manager(&o);
  if (m == NULL) return;
  int ok = 0;
  tcr_thread t = spawn_poller(m, &ok);
  if (ok) {
    for (int i = 0; i < 10; ++i) {
      tcr_ticket* ticket = NULL;
      if (!CHECK_STATUS(tcr_interrupt(m, t, where_am_i, NULL, &ticket), TCR_OK)) break;
      CHECK_STATUS(tcr_ticket_wait(ticket), TCR_OK);
      tcr_ticket_release(ticket);
    }
    stop_and_join(m, t);
    CHECK(atomic_load(&g_inside) == 10);
    CHECK(atomic_load(&g_outside) == 0);
    CHECK(atomic_load(&g_trampolines) == 10);
    CHECK(atomic_load(&g_trampoline_ok) == 10);
  }
  tcr_manager_destroy(m);

  static atomic_int calls;
  tcr_manager_options_init(&o);
  o.trampoline = no_run;
  o.trampoline_data = &calls;
  m = new_manager(&o);
  if (m == NULL) return;
  t = spawn_poller(m, &ok);
  if (ok) {
    static atomic_int counter;
    tcr_ticket* ticket = NULL;
    if (CHECK_STATUS(tcr_interrupt(m, t, count, &counter, &ticket), TCR_OK)) {
      CHECK_STATUS(tcr_ticket_wait(ticket), TCR_STEP_ThreadExited);
      CHECK(tcr_ticket_outcome(ticket) == TCR_UNDELIVERED);
      tcr_ticket_release(ticket);
    }
    stop_and_join(m, t);
    CHECK(atomic_load(&counter) == 0);
    CHECK(atomic_load(&calls) == 1);
  }
  tcr_manager_destroy(m);
}

int main(void) {
  basic_interrupts();
  interrupt_exited_thread();
  safe_points();
  semaphores();
  notify_hook();
  trampolines();
  return check_done();
}
