/* tcr-guile.c: the C part of (tcr threads), Guile 3.0 code running on tcr threads.
 * On the C API only (capi/tcr.h, libtcr.so). Loaded by guile/tcr/threads.scm with
 * (load-extension "guile-tcr" "scm_init_tcr_guile").
 *
 * The Guile facts this rests on (Guile 3.0.8, libguile/threads.c and libguile/async.c):
 *  - scm_with_guile -> GC_call_with_stack_base -> with_guile -> scm_i_init_thread_for_guile: a
 *    thread new to Guile is registered with Boehm there (GC_register_my_thread; needs_unregister
 *    is set when that answers GC_SUCCESS) and unregistered by on_thread_exit, the destructor of
 *    Guile's pthread key, when the pthread ends. So Guile owns the thread's Boehm registration:
 *    tcr spawns with TCR_GC_DONT_REGISTER (had tcr registered it too, Guile would have seen
 *    GC_DUPLICATE and left the unregistration to tcr, which does it before Guile's key
 *    destructor still touches its thread; one owner is simpler). tcr threads are pthreads
 *    (threads/spawn.cpp: pthread_create), so on_thread_exit runs and Guile's per-thread
 *    resources (sleep pipe, VM stack) go with the thread.
 *  - Guile initialized Boehm (scm_i_init_guile) before any extension loads: the manager is
 *    created with TCR_GC_RUNTIME, and tcr never initializes or configures it.
 *  - system-async-mark (scm_system_async_mark_for_thread) pushes a procedure on the target's
 *    pending asyncs (no effect when the same procedure is already pending: scm_i_async_push) and
 *    wakes the target from a Guile wait (its wake data: condition variable or sleep pipe). The
 *    target runs it at its next safe point in Scheme (the VM's handle-interrupts), so it may
 *    raise, abort to a prompt or call a continuation like any Scheme code there. Since Guile 3
 *    it does not refuse an exited thread.
 *  - `sleep` is scm_std_sleep -> scm_std_select on the thread's sleep pipe: an async mark cuts it
 *    short (it answers the seconds left) and the async runs after it returns.
 *
 * Interrupts (thread-interrupt!): tcr_interrupt_owned queues a closure holding the thunk in an
 * uncollectable Boehm cell; the notify hook rings Guile's doorbell for the target (a
 * system-async-mark of run_interrupts_proc to the target's Guile thread, the notify context);
 * run_interrupts_proc, a Guile async on the target, calls tcr_poll(). The closure that tcr runs
 * (through the trampoline, inside scm_c_catch) only moves the thunk to a per-thread list in tcr
 * slot 0; the thunk itself runs after tcr_poll has returned, from run_interrupts_proc, i.e. as a
 * Guile async in the interrupted Scheme code. So no Scheme non-local exit of any kind (an error,
 * an abort to a prompt such as cancel-thread's, a continuation) ever crosses tcr's frames, and an
 * error the thunk raises reaches the interrupted code with its own exception object, as with
 * Guile's own asyncs. An error raised while the closure runs inside tcr (it conses: out of
 * memory) is caught there and re-raised the same way once tcr_poll has returned.
 */
#include <libguile.h>
#include <gc/gc.h>

#include <errno.h>
#include <pthread.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "tcr.h"

/* ---- the manager --------------------------------------------------------------------------- */

static tcr_manager* g_manager;
static SCM g_thread_type;        /* the foreign object type of (tcr threads) thread objects */
static SCM g_run_interrupts;     /* the doorbell async: run_interrupts_proc as a gsubr */
static SCM g_timeout;            /* %tcr-join's answer on a timeout */
static SCM sym_tcr_error;

/* Slot 0 of a tcr thread: the Scheme list of interrupt thunks (and (key . args) re-raises) that
 * tcr delivered and that have not run yet. NULL: empty. Only the thread itself touches it. */
enum { PENDING_SLOT = 0 };

/* Whether this thread is inside the Scheme part of its life (within scm_with_guile, before its
 * thunk returned): only then does the trampoline let a closure run. */
static _Thread_local int t_in_guile;

static SCM scm_of(void* p) { return SCM_PACK_POINTER(p); }
static void* pointer_of(SCM x) { return SCM_UNPACK_POINTER(x); }

/* tcr's last failure on this thread as a Scheme exception: key tcr-error, arguments as
 * scm-error's (subr message args rest), rest being (step-number step-name). */
static void raise_tcr_error(const char* subr, tcr_status status) {
  scm_error(sym_tcr_error, subr, "~A: ~A",
            scm_list_2(scm_from_utf8_string(tcr_step_name(status)),
                       scm_from_utf8_string(tcr_error_message())),
            scm_list_2(scm_from_int((int)status), scm_from_utf8_string(tcr_step_name(status))));
}

/* ---- thread objects ------------------------------------------------------------------------ */

enum { HANDLE_UNSET = 0, HANDLE_WRITING = 1, HANDLE_SET = 2 };

/* What a (tcr threads) thread object holds: scm_gc_malloc'ed, so Boehm scans it (body, result
 * and error are visible to the GC through it). */
typedef struct guile_tcr_thread {
  _Atomic int handle_state; /* HANDLE_*: `handle` is published once, by spawner or thread */
  tcr_thread handle;
  SCM body;                 /* the thunk the thread runs; cleared when it starts */
  SCM dynamic_state;        /* what it starts in (#f: Guile's default); cleared then too */
  SCM result;               /* the list of the thread's values, written by it before it exits */
  _Atomic int joined;       /* reaped by a join: `result` (or `error`) is final */
  SCM error;                /* #f, or (status . message) when the join failed (StackOverflow) */
} guile_tcr_thread;

static guile_tcr_thread* data_of(SCM obj) {
  return (guile_tcr_thread*)scm_foreign_object_ref(obj, 0);
}

static int is_tcr_thread(SCM obj) { return SCM_IS_A_P(obj, g_thread_type); }

static void publish_handle(guile_tcr_thread* th, tcr_thread handle) {
  int expected = HANDLE_UNSET;
  if (atomic_compare_exchange_strong(&th->handle_state, &expected, HANDLE_WRITING)) {
    th->handle = handle;
    atomic_store_explicit(&th->handle_state, HANDLE_SET, memory_order_release);
  }
}

/* The thread's handle: published by the spawner right after tcr_spawn returned and by the thread
 * itself first thing, so a reader that got the object from either waits at most for the other's
 * store. Zero id for an object whose spawn failed. */
static tcr_thread handle_of(guile_tcr_thread* th) {
  for (;;) {
    int state = atomic_load_explicit(&th->handle_state, memory_order_acquire);
    if (state == HANDLE_SET) return th->handle;
    if (state == HANDLE_UNSET && th->body == SCM_BOOL_F) {
      tcr_thread none;
      memset(&none, 0, sizeof none);
      return none;
    }
    tcr_sleep_ns(1000);
  }
}

/* A thread object that Scheme dropped: a thread never joined is detached (tcr reaps it once it
 * has exited). Runs on Guile's finalization thread. The object is unreachable, so no join can
 * run concurrently; while its thread runs the object is tcr's argument (a GC root) and cannot
 * be finalized, so this sees only exited threads or threads about to exit. */
static void finalize_thread(SCM obj) {
  guile_tcr_thread* th = data_of(obj);
  if (th == NULL || atomic_load(&th->joined)) return;
  if (atomic_load_explicit(&th->handle_state, memory_order_acquire) != HANDLE_SET) return;
  (void)tcr_detach(g_manager, th->handle); /* StaleThread: already reaped; nothing else to do */
}

/* ---- interrupts ---------------------------------------------------------------------------- */

static SCM pending_list(tcr_self* self) {
  void* value = NULL;
  if (self == NULL || tcr_slot_get(self, PENDING_SLOT, &value) != TCR_OK || value == NULL) {
    return SCM_EOL;
  }
  return scm_of(value);
}

static void set_pending_list(tcr_self* self, SCM list) {
  (void)tcr_slot_set(self, PENDING_SLOT, scm_is_null(list) ? NULL : pointer_of(list));
}

static void append_pending(tcr_self* self, SCM item) {
  SCM list = pending_list(self);
  set_pending_list(self, scm_append(scm_list_2(list, scm_list_1(item))));
}

/* The closure tcr runs on the target (inside the trampoline's catch): the thunk moves to the
 * pending list; run_interrupts_proc calls it once tcr_poll has returned. */
static void interrupt_fn(tcr_self* self, void* data) {
  append_pending(self, *(SCM*)data);
}

/* tcr_interrupt_owned's release: after interrupt_fn, or when the interrupt was dropped (the
 * target exited, or its Scheme part had ended), on whichever thread that happened, perhaps one
 * no longer in Guile mode (an exiting thread, after scm_with_guile returned). GC_FREE needs no
 * Guile mode (scm_gc_unprotect_object would: it updates a Scheme hash table). */
static void release_cell(void* data) { GC_FREE(data); }

typedef struct trampoline_call {
  void (*run)(void*);
  void* closure;
  tcr_self* self;
} trampoline_call;

static SCM trampoline_body(void* data) {
  trampoline_call* call = data;
  call->run(call->closure);
  return SCM_UNSPECIFIED;
}

static SCM trampoline_handler(void* data, SCM key, SCM args) {
  trampoline_call* call = data;
  /* Re-raised by run_interrupts_proc, in the interrupted code, outside tcr's frames. */
  append_pending(call->self, scm_cons(key, args));
  return SCM_UNSPECIFIED;
}

/* The manager's trampoline: runs on the target inside tcr_poll (or a tcr wait, such as
 * join-thread's). Outside the thread's Scheme part it does not run the closure: tcr then counts
 * the interrupt undelivered and releases its cell. */
static void trampoline(tcr_self* self, void (*run)(void*), void* closure, void* data) {
  (void)data;
  if (!t_in_guile) return;
  trampoline_call call = {run, closure, self};
  scm_c_catch(SCM_BOOL_T, trampoline_body, &call, trampoline_handler, &call, NULL, NULL);
}

/* The notify hook: on the interrupting thread (in Guile mode: thread-interrupt! is called from
 * Scheme), outside tcr's locks. The context is the target's Guile thread object, set by the
 * target once inside scm_with_guile; NULL before that (the target polls after setting it) and
 * after its Scheme part ended (the interrupt is then dropped at its exit). */
static void notify_hook(uint64_t thread_id, void* notify_context, void* data) {
  (void)thread_id;
  (void)data;
  if (notify_context == NULL) return;
  scm_system_async_mark_for_thread(g_run_interrupts, scm_of(notify_context));
}

/* Whether this thread is inside run_interrupts_proc: a doorbell that rings meanwhile (Guile runs
 * an async inside another one) finds the running loop, which takes what arrived, so interrupts
 * run one after the other in the order they were queued (tcr's rule: they do not nest). */
static _Thread_local int t_running_interrupts;

/* A thunk escaped: the rest run at the next safe point. Marked whether or not the pending list
 * has more: interrupts queued in tcr since the last tcr_poll rang a doorbell that found this
 * loop running and returned, so only this mark brings them in. */
static void interrupts_unwound(void* data) {
  (void)data;
  t_running_interrupts = 0;
  scm_system_async_mark(g_run_interrupts);
}

/* The doorbell async (a gsubr, run by Guile at a safe point of the target): tcr_poll, then each
 * delivered thunk in turn, in the interrupted code. When one escapes (raises, aborts), the rest
 * stay pending and the doorbell is marked again, so they run at the next safe point. */
static SCM run_interrupts_proc(void) {
  tcr_self* self = tcr_current();
  if (self == NULL || !t_in_guile || t_running_interrupts) return SCM_UNSPECIFIED;
  t_running_interrupts = 1;
  scm_dynwind_begin(0);
  scm_dynwind_unwind_handler(interrupts_unwound, NULL, 0); /* on a non-local exit only */
  for (;;) {
    (void)tcr_poll(); /* also what arrived while the last thunk ran */
    SCM list = pending_list(self);
    if (!scm_is_pair(list)) break;
    SCM item = SCM_CAR(list);
    set_pending_list(self, SCM_CDR(list));
    if (scm_is_pair(item)) {
      scm_throw(SCM_CAR(item), SCM_CDR(item));
    } else {
      scm_call_0(item);
    }
  }
  scm_dynwind_end();
  t_running_interrupts = 0;
  return SCM_UNSPECIFIED;
}

/* ---- spawning ------------------------------------------------------------------------------ */

/* The body runs with asyncs blocked until (tcr threads)'s wrapper has set up its prompt and
 * catch and unblocks them, as Guile's own threads start (really_launch: block_asyncs++, then
 * call-with-unblocked-asyncs inside ice-9 threads' prompt). */
typedef struct body_call {
  tcr_self* self;
  SCM body;
} body_call;

/* With asyncs blocked: the thread becomes interruptible (its doorbell's address published, the
 * trampoline willing), and what was queued before that is taken now. A doorbell rung from here
 * on stays pending until the wrapper unblocks asyncs inside its prompt and catch, so no
 * interrupt (a cancel-thread's abort to that prompt, say) runs before they exist: a doorbell
 * that ran earlier found no prompt, and the cancel was lost (the thread slept on). */
static void* start_blocked(void* data) {
  body_call* call = data;
  /* Guile's thread object for this thread: the doorbell's address (kept GC-visible by tcr). */
  (void)tcr_self_set_notify_context(call->self, pointer_of(scm_current_thread()));
  t_in_guile = 1;
  /* Interrupts queued before the context was set rang no doorbell: take them now. */
  if (tcr_poll() > 0 || !scm_is_null(pending_list(call->self))) {
    scm_system_async_mark(g_run_interrupts);
  }
  return SCM_UNPACK_POINTER(scm_call_0(call->body));
}

static SCM call_body(void* data) {
  return SCM_PACK_POINTER(scm_c_call_with_blocked_asyncs(start_blocked, data));
}

static SCM body_escaped(void* data, SCM key, SCM args) {
  (void)data;
  (void)key;
  (void)args;
  return SCM_EOL; /* (tcr threads)'s wrapper catches everything; this is the last resort */
}

static SCM run_leftover(void* data) {
  tcr_self* self = data;
  for (;;) {
    SCM list = pending_list(self);
    if (!scm_is_pair(list)) return SCM_UNSPECIFIED;
    set_pending_list(self, SCM_CDR(list));
    if (!scm_is_pair(SCM_CAR(list))) scm_call_0(SCM_CAR(list));
  }
}

static SCM leftover_escaped(void* data, SCM key, SCM args) {
  (void)key;
  (void)args;
  tcr_self* self = data;
  set_pending_list(self, SCM_EOL);
  return SCM_UNSPECIFIED;
}

static void* guile_body(void* data) {
  tcr_self* self = data;
  SCM obj = scm_of(tcr_argument(self));
  guile_tcr_thread* th = data_of(obj);
  tcr_thread me;
  if (tcr_current_thread(g_manager, &me) == TCR_OK) publish_handle(th, me);
  /* The spawner's dynamic state, as Guile gives its own threads (scm_i_with_guile with
   * launch_data's dynamic_state): installed for good, the thread ends with it. */
  if (scm_is_true(th->dynamic_state)) scm_set_current_dynamic_state(th->dynamic_state);
  th->dynamic_state = SCM_BOOL_F;
  body_call call = {self, th->body};
  th->body = SCM_BOOL_F;
  th->result = scm_c_catch(SCM_BOOL_T, call_body, &call, body_escaped, NULL, NULL, NULL);
  /* From here tcr drops what arrives (the trampoline refuses it); what it delivered already
   * runs now, so a delivered interrupt is never lost. */
  t_in_guile = 0;
  (void)tcr_self_set_notify_context(self, NULL);
  scm_c_catch(SCM_BOOL_T, run_leftover, self, leftover_escaped, self, NULL, NULL);
  return NULL;
}

static void* thread_main(tcr_self* self, void* argument) {
  (void)argument;
  scm_with_guile(guile_body, self);
  t_in_guile = 0;
  return NULL; /* the result is in the thread object (not in tcr's result slot: see spawn) */
}

/* (%tcr-spawn body [dynamic-state]) -> thread object. body is (tcr threads)'s wrapper, a thunk
 * answering the list of the user thunk's values; the thread starts in dynamic-state when given
 * (a value of current-dynamic-state), else in Guile's default one.
 * The thread object is tcr's argument: GC-visible while the thread runs, cleared by tcr at exit,
 * so a dropped thread object becomes collectable once its thread has exited (and its finalizer
 * detaches it). The result goes into the object, not tcr's result slot: a result that refers to
 * its own thread object would otherwise be a root keeping that object alive forever. */
static SCM spawn(SCM body, SCM dynamic_state) {
  SCM_ASSERT_TYPE(scm_is_true(scm_procedure_p(body)), body, SCM_ARG1, "%tcr-spawn", "procedure");
  if (SCM_UNBNDP(dynamic_state)) dynamic_state = SCM_BOOL_F;
  SCM_ASSERT_TYPE(scm_is_false(dynamic_state) || scm_is_dynamic_state(dynamic_state),
                  dynamic_state, SCM_ARG2, "%tcr-spawn", "dynamic state");
  guile_tcr_thread* th = scm_gc_malloc(sizeof *th, "tcr-thread");
  atomic_init(&th->handle_state, HANDLE_UNSET);
  memset(&th->handle, 0, sizeof th->handle);
  th->body = body;
  th->dynamic_state = dynamic_state;
  th->result = SCM_EOL;
  atomic_init(&th->joined, 0);
  th->error = SCM_BOOL_F;
  SCM obj = scm_make_foreign_object_1(g_thread_type, th);
  tcr_spawn_options options;
  tcr_spawn_options_init(&options);
  options.gc = TCR_GC_DONT_REGISTER; /* scm_with_guile registers it (see the top) */
  tcr_thread handle;
  tcr_status status = tcr_spawn(g_manager, NULL, thread_main, pointer_of(obj), &options, &handle);
  if (status != TCR_OK) {
    th->body = SCM_BOOL_F;
    th->dynamic_state = SCM_BOOL_F;
    raise_tcr_error("call-with-new-thread", status);
  }
  publish_handle(th, handle);
  scm_remember_upto_here_1(obj);
  return obj;
}

/* ---- joining ------------------------------------------------------------------------------- */

static uint64_t realtime_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* join-thread's timeout, as Guile's (libguile/threads.c to_timespec, then a
 * pthread_cond_timedwait): an absolute time on the real-time clock, a real number of seconds
 * or a (seconds . microseconds) pair as gettimeofday answers. */
static uint64_t deadline_of(SCM timeout) {
  double seconds;
  if (scm_is_pair(timeout)) {
    seconds = (double)scm_to_ulong(SCM_CAR(timeout)) + (double)scm_to_ulong(SCM_CDR(timeout)) / 1e6;
  } else {
    seconds = scm_to_double(timeout);
  }
  if (seconds <= 0) return 0;
  if (seconds >= 1.8e10) return UINT64_MAX;
  return (uint64_t)(seconds * 1e9);
}

#define JOIN_SLICE_NS (20u * 1000u * 1000u)

/* Run Guile's own asyncs for this thread (as Guile's waits do when woken), and the tcr
 * interrupts that a tcr wait delivered to it. Outside tcr's frames. */
static void between_waits(void) {
  tcr_self* self = tcr_current();
  if (self != NULL && t_in_guile && !scm_is_null(pending_list(self))) {
    scm_system_async_mark(g_run_interrupts);
  }
  scm_async_tick();
}

static SCM joined_answer(guile_tcr_thread* th) {
  if (scm_is_pair(th->error)) {
    scm_error(sym_tcr_error, "join-thread", "~A: ~A",
              scm_list_2(SCM_CAR(th->error), SCM_CDR(th->error)), SCM_BOOL_F);
  }
  return th->result;
}

/* (%tcr-join thread timeout) -> the list of the thread's values, or %tcr-timeout. timeout #f:
 * no limit. Joining again answers the same values (Guile's semantics). */
static SCM join(SCM obj, SCM timeout) {
  scm_assert_foreign_object_type(g_thread_type, obj);
  guile_tcr_thread* th = data_of(obj);
  if (atomic_load(&th->joined)) return joined_answer(th);
  const int timed = scm_is_true(timeout);
  const uint64_t deadline = timed ? deadline_of(timeout) : UINT64_MAX;
  tcr_thread handle = handle_of(th);
  for (;;) {
    uint64_t slice = JOIN_SLICE_NS;
    if (timed) {
      uint64_t now = realtime_ns();
      uint64_t left = now >= deadline ? 0 : deadline - now;
      if (left < slice) slice = left;
    }
    tcr_status status = tcr_join_timed(g_manager, handle, slice, NULL);
    if (status == TCR_OK) {
      atomic_store(&th->joined, 1);
      break;
    }
    if (status == TCR_STEP_AlreadyJoined || status == TCR_STEP_StaleThread) {
      /* Another join is waiting for it or has just reaped it: wait for that one's answer. */
      if (!atomic_load(&th->joined)) {
        if (timed && realtime_ns() >= deadline) return g_timeout;
        tcr_sleep_ns(200 * 1000);
        between_waits();
        continue;
      }
      break;
    }
    if (status == TCR_STEP_Timeout) {
      if (timed && realtime_ns() >= deadline) return g_timeout;
      between_waits();
      continue;
    }
    if (status == TCR_STEP_StackOverflow || status == TCR_STEP_ThreadThrew ||
        status == TCR_STEP_StartHook) {
      /* Reaped, but its function did not return normally: the same error at every join. */
      th->error = scm_cons(scm_from_utf8_string(tcr_step_name(status)),
                           scm_from_utf8_string(tcr_error_message()));
      atomic_store(&th->joined, 1);
      break;
    }
    raise_tcr_error("join-thread", status); /* JoinSelf, ThreadDetached, ... */
  }
  between_waits();
  scm_remember_upto_here_1(obj);
  return joined_answer(th);
}

/* ---- the other procedures ------------------------------------------------------------------ */

static SCM thread_p(SCM obj) { return scm_from_bool(is_tcr_thread(obj)); }

/* The calling thread's (tcr threads) object when it is a thread this extension spawned (and its
 * Scheme part is running); #f otherwise ((tcr threads) then answers Guile's own current-thread). */
static SCM current_tcr_thread(void) {
  tcr_self* self = tcr_current();
  tcr_thread me;
  if (self == NULL || !t_in_guile || tcr_current_thread(g_manager, &me) != TCR_OK) {
    return SCM_BOOL_F;
  }
  void* argument = tcr_argument(self);
  if (argument == NULL || !is_tcr_thread(scm_of(argument))) return SCM_BOOL_F;
  return scm_of(argument);
}

static SCM thread_exited_p(SCM obj) {
  scm_assert_foreign_object_type(g_thread_type, obj);
  guile_tcr_thread* th = data_of(obj);
  if (atomic_load(&th->joined)) return SCM_BOOL_T;
  int exited = 0;
  tcr_status status = tcr_thread_exited(g_manager, handle_of(th), &exited);
  if (status != TCR_OK) raise_tcr_error("thread-exited?", status);
  return scm_from_bool(exited);
}

/* (thread-interrupt! thread thunk) -> #t when queued for a running thread, #f when the thread
 * had already exited (the interrupt is then dropped undelivered, not an error). */
static SCM thread_interrupt(SCM obj, SCM thunk) {
  scm_assert_foreign_object_type(g_thread_type, obj);
  SCM_ASSERT_TYPE(scm_is_true(scm_thunk_p(thunk)), thunk, SCM_ARG2, "thread-interrupt!", "thunk");
  guile_tcr_thread* th = data_of(obj);
  if (atomic_load(&th->joined)) return SCM_BOOL_F;
  SCM* cell = GC_MALLOC_UNCOLLECTABLE(sizeof(SCM));
  if (cell == NULL) scm_report_out_of_memory();
  *cell = thunk;
  tcr_ticket* ticket = NULL;
  tcr_status status =
      tcr_interrupt_owned(g_manager, handle_of(th), interrupt_fn, cell, release_cell, &ticket);
  if (status != TCR_OK) raise_tcr_error("thread-interrupt!", status); /* cell released */
  const int dropped = tcr_ticket_outcome(ticket) == TCR_UNDELIVERED;
  tcr_ticket_release(ticket);
  scm_remember_upto_here_2(obj, thunk);
  return scm_from_bool(!dropped);
}

static SCM acons_size(const char* key, size_t value, SCM alist) {
  return scm_acons(scm_from_utf8_symbol(key), scm_from_size_t(value), alist);
}

static SCM tcr_stats_proc(void) {
  tcr_stats s;
  memset(&s, 0, sizeof s);
  s.size = sizeof s;
  tcr_status status = tcr_manager_stats(g_manager, &s);
  if (status != TCR_OK) raise_tcr_error("tcr-stats", status);
  SCM alist = SCM_EOL;
  alist = acons_size("extra-handles-closed", s.extra_handles_closed, alist);
  alist = acons_size("cached-stacks", s.cached_stacks, alist);
  alist = acons_size("free-records", s.free_records, alist);
  alist = acons_size("records", s.records, alist);
  alist = acons_size("dead-unreaped", s.dead_unreaped, alist);
  alist = acons_size("live", s.live, alist);
  alist = scm_acons(scm_from_utf8_symbol("reaped"), scm_from_uint64(s.reaped), alist);
  alist = scm_acons(scm_from_utf8_symbol("adopted"), scm_from_uint64(s.adopted), alist);
  alist = scm_acons(scm_from_utf8_symbol("spawned"), scm_from_uint64(s.spawned), alist);
  return alist;
}

static SCM tcr_resource_counts_proc(void) {
  tcr_resource_counts c;
  memset(&c, 0, sizeof c);
  c.size = sizeof c;
  tcr_status status = tcr_resource_counts_read(&c);
  if (status != TCR_OK) raise_tcr_error("tcr-resource-counts", status);
  SCM alist = SCM_EOL;
  alist = acons_size("rss-kb", c.rss_kb, alist);
  alist = acons_size("threads", c.threads, alist);
  alist = acons_size("maps", c.maps, alist);
  alist = acons_size("pidfds", c.pidfds, alist);
  alist = acons_size("fds", c.fds, alist);
  return alist;
}

static const char* state_name(tcr_state state) {
  switch (state) {
    case TCR_STATE_FREE: return "free";
    case TCR_STATE_RESERVED: return "reserved";
    case TCR_STATE_STARTING: return "starting";
    case TCR_STATE_RUNNING: return "running";
    case TCR_STATE_EXITING: return "exiting";
    case TCR_STATE_DEAD: return "dead";
  }
  return "?";
}

/* (tcr-thread-dump) -> one alist per live thread of the manager (tcr_snapshot). */
static SCM tcr_thread_dump_proc(void) {
  size_t count = 0;
  tcr_status status = tcr_snapshot(g_manager, NULL, 0, &count);
  if (status != TCR_OK) raise_tcr_error("tcr-thread-dump", status);
  size_t capacity = count + 16;
  tcr_thread_info* infos = scm_gc_malloc_pointerless(capacity * sizeof *infos, "tcr-thread-dump");
  status = tcr_snapshot(g_manager, infos, capacity, &count);
  if (status != TCR_OK) raise_tcr_error("tcr-thread-dump", status);
  if (count > capacity) count = capacity;
  SCM list = SCM_EOL;
  for (size_t i = count; i-- > 0;) {
    const tcr_thread_info* info = &infos[i];
    SCM alist = scm_list_n(
        scm_cons(scm_from_utf8_symbol("id"), scm_from_uint64(info->id)),
        scm_cons(scm_from_utf8_symbol("name"), scm_from_utf8_string(info->name)),
        scm_cons(scm_from_utf8_symbol("state"), scm_from_utf8_symbol(state_name(info->state))),
        scm_cons(scm_from_utf8_symbol("tid"), scm_from_int(info->tid)),
        scm_cons(scm_from_utf8_symbol("handle-fd"), scm_from_int(info->handle_fd)),
        scm_cons(scm_from_utf8_symbol("detached"), scm_from_bool(info->detached)),
        scm_cons(scm_from_utf8_symbol("adopted"), scm_from_bool(info->adopted)),
        scm_cons(scm_from_utf8_symbol("gc-registered"), scm_from_bool(info->gc_registered)),
        SCM_UNDEFINED);
    list = scm_cons(alist, list);
  }
  return list;
}

/* (tcr-reap) -> how many exited detached threads were reaped now (tcr also reaps them at each
 * spawn). */
static SCM tcr_reap_proc(void) {
  size_t reaped = 0;
  tcr_status status = tcr_reap(g_manager, 0, &reaped);
  if (status != TCR_OK) raise_tcr_error("tcr-reap", status);
  return scm_from_size_t(reaped);
}

/* (tcr-trim) -> how many stacks tcr kept for reuse it unmapped now. */
static SCM tcr_trim_proc(void) { return scm_from_size_t(tcr_trim(g_manager)); }

static SCM tcr_thread_id(SCM obj) {
  scm_assert_foreign_object_type(g_thread_type, obj);
  return scm_from_uint64(handle_of(data_of(obj)).id);
}

/* ---- baselines for bench/guile_embed.scm ----------------------------------------------------
 * Where a (tcr threads) create + join goes, measured beside it: the same Guile entry on the
 * cheapest thread there is, with no thread manager at all. Not part of the module's interface.
 * (pthread_create) in parentheses: bdw-gc.h defines GC_THREADS, so gc.h redirects the name to
 * GC_pthread_create (which registers the thread itself); the bare call is wanted here, and
 * scm_with_guile registers the thread as it does on a tcr thread. */

typedef struct {
  SCM thunk;
  SCM result;
} bare_call;

static SCM bare_call_thunk(void* data) { return scm_call_0(((bare_call*)data)->thunk); }

static void* bare_with_guile(void* data) {
  bare_call* call = data;
  call->result = scm_c_catch(SCM_BOOL_T, bare_call_thunk, call, body_escaped, NULL, NULL, NULL);
  return NULL;
}

static void* bare_thread_main(void* data) {
  if (data != NULL) scm_with_guile(bare_with_guile, data);
  return NULL;
}

static SCM bare_thread(SCM thunk, int with_guile) {
  bare_call call = {thunk, SCM_BOOL_F};
  pthread_t thread;
  const int rc = (pthread_create)(&thread, NULL, bare_thread_main, with_guile ? &call : NULL);
  if (rc != 0) {
    scm_syserror_msg("%bare-pthread", "pthread_create: ~A", scm_list_1(scm_strerror(scm_from_int(rc))), rc);
  }
  (void)pthread_join(thread, NULL); /* thunk and the result live in call, on this stack */
  scm_remember_upto_here_1(thunk);
  return call.result;
}

/* (%bare-pthread-with-guile thunk): pthread_create, scm_with_guile calling thunk, pthread_join;
 * answers thunk's value. (%bare-pthread): pthread_create of an empty function and pthread_join. */
static SCM bare_pthread_with_guile(SCM thunk) {
  SCM_ASSERT_TYPE(scm_is_true(scm_procedure_p(thunk)), thunk, SCM_ARG1, "%bare-pthread-with-guile",
                  "procedure");
  return bare_thread(thunk, 1);
}

static SCM bare_pthread(void) { return bare_thread(SCM_BOOL_F, 0); }

static void* bare_tcr_main(tcr_self* self, void* argument) {
  (void)self;
  scm_with_guile(bare_with_guile, argument);
  return NULL;
}

/* (%bare-tcr-with-guile thunk): tcr_spawn of a thread whose function is scm_with_guile calling
 * thunk, then tcr_join; no (tcr threads) thread object, no interrupt plumbing. Beside
 * %bare-pthread-with-guile it is what tcr's core adds to a Guile thread; beside %tcr-spawn +
 * %tcr-join, what this file's C part adds. */
static SCM bare_tcr_with_guile(SCM thunk) {
  SCM_ASSERT_TYPE(scm_is_true(scm_procedure_p(thunk)), thunk, SCM_ARG1, "%bare-tcr-with-guile",
                  "procedure");
  bare_call call = {thunk, SCM_BOOL_F};
  tcr_spawn_options options;
  tcr_spawn_options_init(&options);
  options.gc = TCR_GC_DONT_REGISTER; /* scm_with_guile registers it, as in spawn */
  tcr_thread handle;
  tcr_status status = tcr_spawn(g_manager, NULL, bare_tcr_main, &call, &options, &handle);
  if (status != TCR_OK) raise_tcr_error("%bare-tcr-with-guile", status);
  status = tcr_join(g_manager, handle, NULL);
  if (status != TCR_OK) raise_tcr_error("%bare-tcr-with-guile", status);
  scm_remember_upto_here_1(thunk);
  return call.result;
}

/* ---- initialization ------------------------------------------------------------------------ */

void scm_init_tcr_guile(void);

void scm_init_tcr_guile(void) {
  sym_tcr_error = scm_permanent_object(scm_from_utf8_symbol("tcr-error"));
  g_timeout = scm_permanent_object(scm_from_utf8_symbol("%tcr-join-timed-out"));
  if (g_manager == NULL) {
    if (tcr_version() / 100 != TCR_VERSION / 100) {
      scm_misc_error("load-extension", "libtcr.so is version ~A; guile-tcr was built for ~A",
                     scm_list_2(scm_from_utf8_string(tcr_version_string()),
                                scm_from_int(TCR_VERSION)));
    }
    tcr_manager_options options;
    tcr_manager_options_init(&options);
    options.gc = TCR_GC_RUNTIME;            /* Guile configured and initialized Boehm */
    options.stack_size = 8u * 1024u * 1024u; /* as a Guile thread's (the pthread default) */
    options.notify_hook = notify_hook;
    options.trampoline = trampoline;
    tcr_manager* manager = NULL;
    tcr_status status = tcr_manager_create(&options, &manager);
    if (status != TCR_OK) raise_tcr_error("load-extension", status);
    g_manager = manager; /* one per process, for the process's life */
  }
  g_thread_type = scm_permanent_object(scm_make_foreign_object_type(
      scm_from_utf8_symbol("tcr-thread"), scm_list_1(scm_from_utf8_symbol("data")),
      finalize_thread));
  g_run_interrupts = scm_permanent_object(
      scm_c_make_gsubr("%tcr-run-interrupts", 0, 0, 0, (scm_t_subr)run_interrupts_proc));
  scm_c_define("%tcr-join-timed-out", g_timeout);
  scm_c_define_gsubr("%tcr-spawn", 1, 1, 0, (scm_t_subr)spawn);
  scm_c_define_gsubr("%tcr-join", 2, 0, 0, (scm_t_subr)join);
  scm_c_define_gsubr("tcr-thread?", 1, 0, 0, (scm_t_subr)thread_p);
  scm_c_define_gsubr("%tcr-current-thread", 0, 0, 0, (scm_t_subr)current_tcr_thread);
  scm_c_define_gsubr("%tcr-thread-exited?", 1, 0, 0, (scm_t_subr)thread_exited_p);
  scm_c_define_gsubr("%tcr-thread-interrupt!", 2, 0, 0, (scm_t_subr)thread_interrupt);
  scm_c_define_gsubr("tcr-thread-id", 1, 0, 0, (scm_t_subr)tcr_thread_id);
  scm_c_define_gsubr("tcr-stats", 0, 0, 0, (scm_t_subr)tcr_stats_proc);
  scm_c_define_gsubr("tcr-resource-counts", 0, 0, 0, (scm_t_subr)tcr_resource_counts_proc);
  scm_c_define_gsubr("tcr-thread-dump", 0, 0, 0, (scm_t_subr)tcr_thread_dump_proc);
  scm_c_define_gsubr("tcr-reap", 0, 0, 0, (scm_t_subr)tcr_reap_proc);
  scm_c_define_gsubr("tcr-trim", 0, 0, 0, (scm_t_subr)tcr_trim_proc);
  scm_c_define_gsubr("%bare-pthread-with-guile", 1, 0, 0, (scm_t_subr)bare_pthread_with_guile);
  scm_c_define_gsubr("%bare-pthread", 0, 0, 0, (scm_t_subr)bare_pthread);
  scm_c_define_gsubr("%bare-tcr-with-guile", 1, 0, 0, (scm_t_subr)bare_tcr_with_guile);
}
