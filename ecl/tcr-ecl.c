/* tcr-ecl.c: ECL 21.2.1 runs its Lisp code on tcr threads (capi/tcr.h only, no C++).
 *
 * Loaded with (load ".../tcr-ecl.fas"): the file is a shared object with the entry point ECL's
 * compiler gives every FASL, init_fas_CODE (src/c/load.d, si_load_binary, calls it through
 * ecl_init_module: once with the codeblock to describe itself, once with OBJNULL to run). It
 * creates package TCR with
 *   (tcr:process-run-function name function &rest args) -> a TCR:THREAD object
 *   (tcr:process-join thread)      -> the function's values, or a TCR:THREAD-ERROR
 *   (tcr:process-detach thread)    -> T; a thread never joined nor detached is detached by a
 *                                     finalizer when its object is collected
 *   (tcr:process-interrupt thread function) -> a ticket; (tcr:interrupt-wait ticket) ->
 *                                     :DELIVERED or :UNDELIVERED, (tcr:interrupt-outcome ticket)
 *   (tcr:poll) (tcr:reap &optional wait) (tcr:resource-counts) (tcr:stats) (tcr:stack-limits)
 *   (tcr:install-fault-handlers) (tcr:deferred-polls) (tcr:monotonic-ns) (tcr:trim)
 *   (tcr:thread-id thread) (tcr:thread-exited-p thread) (tcr:current-thread-id)
 *   tcr:*stack-check* (default T): NIL at spawn leaves ECL's C-stack check off in that thread,
 *                                     so an overflow reaches tcr's guard page (for the tests).
 *
 * ECL facts this rests on (ECL 21.2.1 source):
 *  - ecl_import_current_thread (src/c/threads/process.d) calls GC_register_my_thread itself and
 *    remembers whether it did (env->cleanup); ecl_release_current_thread unregisters then. So
 *    threads are spawned TCR_GC_DONT_REGISTER: one registration, one unregistration, ECL's.
 *  - ecl_import_current_thread does not call ecl_cs_set_org (only cl_boot and ECL's own
 *    thread_entry_point do), so an imported thread has cs_limit 0: no C-stack overflow check at
 *    all. And ecl_cs_set_org/cs_set_size (src/c/stacks.d) size every thread's stack from
 *    RLIMIT_STACK, not from the thread's real stack, and on an overflow that is continued call
 *    setrlimit (process-wide). The start hook therefore sets env->cs_org/cs_size/cs_limit/
 *    cs_barrier/cs_max_size from tcr's own record of the stack (tcr_self_stack_low/high).
 *  - ecl_cs_overflow lowers cs_limit by ECL_OPT_C_STACK_SAFETY_AREA and signals
 *    EXT:STACK-OVERFLOW (a STORAGE-CONDITION): with cs_max_size == cs_size it offers no
 *    "extend" restart, so it never reaches the setrlimit in cs_set_size.
 *  - mp:interrupt-process (mp_interrupt_process -> ecl_interrupt_process, src/c/unixint.d)
 *    queues a function in the target's env and pthread_kills it with
 *    ECL_OPT_THREAD_INTERRUPT_SIGNAL; the handler runs queued functions at once when interrupts
 *    are enabled, else when they are re-enabled (ECL_USE_MPROTECT: the env page is write
 *    protected and the SIGSEGV handler runs them). That is the doorbell: the notify hook calls
 *    mp:interrupt-process with TCR::%POLL, which calls tcr_poll() on the target.
 *  - ECL's SIGSEGV handler (sigsegv_handler) is installed at boot; tcr_install_fault_handlers,
 *    called after it, chains every fault that is not a tcr guard page to it, but then on tcr's
 *    alternate signal stack, where ECL runs the interrupts its env-page trap caught: so it is
 *    opt-in here (tcr:install-fault-handlers; see l_poll and README.md, "ECL on tcr threads").
 */
#include <ecl/ecl.h>
#include <gc/gc.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tcr.h"

/* ---- state ---------------------------------------------------------------------------------- */

static tcr_manager* g_manager;
static cl_object g_serious;        /* (SERIOUS-CONDITION), for ECL_HANDLER_CASE */
static cl_object g_thread_tag;     /* TCR::THREAD, the foreign-data tag of thread objects */
static cl_object g_ticket_tag;     /* TCR::TICKET */
static cl_object g_poll_fn;        /* #'TCR::%POLL */
static cl_object g_stack_check;    /* TCR:*STACK-CHECK* */
static cl_object g_thread_error;   /* TCR:THREAD-ERROR */

/* The calling thread is inside a tcr call made by this module. Such a call runs with ECL's
 * interrupts disabled the Lisp way (EXT:*INTERRUPTS-ENABLED* bound to NIL), so that no ECL
 * interrupt function (mp:interrupt-process, Ctrl-C's break) runs from ECL's signal handler inside
 * tcr's frames and unwinds across them: ECL's handler (process_interrupt_handler) only leaves it
 * queued then, and the call runs what was queued once it returned (ecl_check_pending_interrupts).
 * Not the C way (env->disable_interrupts): with ECL_USE_MPROTECT a signal then write-protects
 * the env and ECL runs the interrupt from its SIGSEGV handler, which tcr's fault handler chains
 * to on tcr's alternate signal stack. The trampoline enables interrupts again inside its own
 * catch frames for the Lisp code it runs. ECL's doorbell (TCR::%POLL) skips tcr_poll while this
 * is set (no re-entry into tcr); the module polls when the call returns. */
static __thread int t_in_tcr;
static unsigned long g_deferred_polls; /* doorbells that came on the alternate stack (l_poll) */
static cl_object g_interrupts_enabled; /* EXT:*INTERRUPTS-ENABLED* */

#define TCR_CALL(env, ...)                                   \
  do {                                                       \
    t_in_tcr++;                                              \
    ecl_bds_bind(env, g_interrupts_enabled, ECL_NIL);        \
    __VA_ARGS__;                                             \
    ecl_bds_unwind1(env);                                    \
    t_in_tcr--;                                              \
    if (!Null(ECL_SYM_VAL(env, g_interrupts_enabled)))       \
      ecl_check_pending_interrupts(env);                     \
  } while (0)

/* What an interrupt closure (or an ECL interrupt run inside the notify hook) ended with,
 * re-raised on the thread once tcr's frames are gone. The condition (PENDING_ERROR) or the values
 * list (PENDING_UNWIND) is kept in an uncollectable cell of the thread's own (GC-visible; freed by
 * the exit hook). */
enum { PENDING_NONE = 0, PENDING_ERROR, PENDING_UNWIND };
static __thread int t_pending;
static __thread cl_index t_pending_frame; /* index of the frs frame an unwind was going to */
static __thread cl_object* t_pending_cell;

static void set_pending(int kind, cl_object object, cl_index frame)
{
  if (t_pending != PENDING_NONE) return; /* the first one wins */
  if (t_pending_cell == NULL) t_pending_cell = (cl_object*)ecl_alloc_uncollectable(sizeof(cl_object));
  *t_pending_cell = object;
  t_pending_frame = frame;
  t_pending = kind;
}

/* Catches what the Lisp code in body signals or unwinds, for set_pending. */
static void save_unwind(cl_env_ptr env)
{
  cl_object values = ECL_NIL;
  cl_index i = env->nvalues;
  while (i-- > 0) values = ecl_cons(env->values[i], values);
  set_pending(PENDING_UNWIND, values, (cl_index)(env->nlj_fr - env->frs_org));
}

enum outcome { OUT_RUNNING = 0, OUT_VALUES, OUT_ERROR, OUT_UNWOUND };

struct thread_rec {
  tcr_thread thread;
  cl_object name, function, args;
  cl_object process; /* ECL's process object for the thread (set by the start hook) */
  cl_object values;  /* OUT_VALUES */
  cl_object condition; /* OUT_ERROR */
  int outcome;
  int stack_check;
  int joined, detached; /* written by the one Lisp thread that holds the object */
};

struct ticket_rec {
  tcr_ticket* ticket;
};

/* ---- helpers -------------------------------------------------------------------------------- */

static cl_object sym(const char* name, const char* package) { return ecl_make_symbol(name, package); }

static cl_object kw(const char* name) { return ecl_make_keyword(name); }

static cl_object base_string(const char* s) { return ecl_make_simple_base_string(s, -1); }

/* Signals TCR:THREAD-ERROR for a failed tcr call (the step's name and message). */
static void signal_step(cl_object thread, tcr_status st, cl_object condition)
{
  const char* message = tcr_error_step() == st ? tcr_error_message() : "";
  cl_error(9, g_thread_error, kw("THREAD"), thread, kw("STEP"), base_string(tcr_step_name(st)),
           kw("MESSAGE"), base_string(message), kw("CONDITION"), condition);
}

static struct thread_rec* thread_of(cl_object o)
{
  if (ecl_t_of(o) != t_foreign || o->foreign.tag != g_thread_tag)
    FEwrong_type_argument(g_thread_tag, o);
  return (struct thread_rec*)o->foreign.data;
}

/* Re-raises what an interrupt closure ended with, now that no tcr frame is below us. */
static void resignal_pending(cl_env_ptr env)
{
  cl_object saved;
  int kind = t_pending;
  if (kind == PENDING_NONE) return;
  t_pending = PENDING_NONE;
  saved = *t_pending_cell;
  *t_pending_cell = ECL_NIL;
  if (kind == PENDING_ERROR) {
    cl_error(1, saved);
  } else {
    struct ecl_frame* fr = env->frs_org + t_pending_frame;
    cl_index n = 0;
    if (fr > env->frs_top) return; /* the frame is gone: nothing to go back to */
    for (; !Null(saved) && n < ECL_MULTIPLE_VALUES_LIMIT; saved = ECL_CONS_CDR(saved))
      env->values[n++] = ECL_CONS_CAR(saved);
    env->nvalues = n;
    ecl_unwind(env, fr);
  }
}

/* After a tcr call from Lisp: run what was queued meanwhile (the doorbell was skipped). */
static void after_tcr(cl_env_ptr env)
{
  if (t_in_tcr != 0) return;
  if (tcr_current() != NULL) TCR_CALL(env, tcr_poll());
  resignal_pending(env);
}

/* ---- hooks ---------------------------------------------------------------------------------- */

static int start_hook(tcr_self* self, void* data)
{
  struct thread_rec* rec = (struct thread_rec*)tcr_argument(self);
  cl_env_ptr env;
  char *low, *high;
  cl_index size, margin;
  (void)data;
  if (!ecl_import_current_thread(rec != NULL ? rec->name : ECL_NIL, ECL_NIL)) return EINVAL;
  env = ecl_process_env();
  /* ECL's C-stack limits from the thread's real stack (see the header comment). */
  low = (char*)tcr_self_stack_low(self);
  high = (char*)tcr_self_stack_high(self);
  size = (cl_index)(high - low);
  margin = (cl_index)ecl_get_option(ECL_OPT_C_STACK_SAFETY_AREA);
  env->cs_org = high;
  env->cs_size = size;
  env->cs_max_size = size;
  env->cs_limit_size = size - 2 * margin;
  env->cs_barrier = low;
  env->cs_limit = (rec == NULL || rec->stack_check) ? low + 2 * margin : NULL;
  if (rec != NULL) rec->process = env->own_process;
  tcr_self_set_notify_context(self, env->own_process);
  return 0;
}

static void exit_hook(tcr_self* self, void* data)
{
  cl_env_ptr env = ecl_process_env_unsafe();
  (void)self;
  (void)data;
  t_pending = PENDING_NONE;
  t_in_tcr = 0;
  if (t_pending_cell != NULL) {
    ecl_free_uncollectable(t_pending_cell);
    t_pending_cell = NULL;
  }
  if (env != NULL && env->own_process != NULL && !Null(env->own_process)) {
    ecl_release_current_thread(); /* also GC_unregister_my_thread, as ECL registered it */
  } else if (GC_thread_is_registered()) {
    /* The import failed after it registered the thread with Boehm. */
    GC_unregister_my_thread();
  }
}

/* Rings ECL's doorbell: mp:interrupt-process with TCR::%POLL. On the interrupting thread, from
 * inside tcr_interrupt_owned: nothing may unwind out of here (the target may be exiting, and
 * mp:interrupt-process then signals an error). */
static void notify_hook(uint64_t thread_id, void* context, void* data)
{
  cl_env_ptr env = ecl_process_env_unsafe();
  cl_object process = (cl_object)context;
  (void)thread_id;
  (void)data;
  if (env == NULL || process == NULL) return; /* not a Lisp thread: the next poll runs it */
  ECL_CATCH_ALL_BEGIN(env) {
    ECL_HANDLER_CASE_BEGIN(env, g_serious) {
      mp_interrupt_process(process, g_poll_fn);
    } ECL_HANDLER_CASE(1, condition) {
      (void)condition; /* the process is exiting: tcr settles the interrupt */
    } ECL_HANDLER_CASE_END;
  } ECL_CATCH_ALL_IF_CAUGHT {
    save_unwind(env); /* not expected (interrupts are disabled here): goes on after tcr returns */
  } ECL_CATCH_ALL_END;
}

/* Runs each interrupt closure inside a handler for every serious condition and a catch-all
 * frame, so that nothing unwinds through tcr's frames; what it caught is re-raised once tcr_poll
 * (or the tcr wait that ran it) has returned into Lisp: resignal_pending. */
static void trampoline(tcr_self* self, void (*run)(void* closure), void* closure, void* data)
{
  cl_env_ptr env = ecl_process_env_unsafe();
  const int saved_in_tcr = t_in_tcr;
  (void)self;
  (void)data;
  if (env == NULL || env->own_process == NULL || Null(env->own_process)) return; /* undelivered */
  t_in_tcr = 0;
  ECL_CATCH_ALL_BEGIN(env) {
    ECL_HANDLER_CASE_BEGIN(env, g_serious) {
      /* Lisp code runs with interrupts enabled; ECL interrupts that waited run here, inside
       * these frames. */
      ecl_bds_bind(env, g_interrupts_enabled, ECL_T);
      ecl_check_pending_interrupts(env);
      run(closure);
      ecl_bds_unwind1(env);
    } ECL_HANDLER_CASE(1, condition) {
      set_pending(PENDING_ERROR, condition, 0);
    } ECL_HANDLER_CASE_END;
  } ECL_CATCH_ALL_IF_CAUGHT {
    save_unwind(env);
  } ECL_CATCH_ALL_END;
  t_in_tcr = saved_in_tcr;
}

static void run_interrupt(tcr_self* self, void* data)
{
  (void)self;
  cl_funcall(1, *(cl_object*)data);
}

static void release_interrupt(void* data) { ecl_free_uncollectable(data); }

/* ---- the thread ----------------------------------------------------------------------------- */

static void* thread_main(tcr_self* self, void* argument)
{
  struct thread_rec* volatile rec = (struct thread_rec*)argument;
  cl_env_ptr env = ecl_process_env();
  volatile int outcome = OUT_UNWOUND;
  (void)self;
  ECL_CATCH_ALL_BEGIN(env) {
    ECL_HANDLER_CASE_BEGIN(env, g_serious) {
      cl_object values = ECL_NIL;
      cl_index i;
      /* An interrupt queued before the start hook set the notify context got no doorbell:
       * run it now, before the function (which may never reach a tcr call). */
      TCR_CALL(env, tcr_poll());
      resignal_pending(env);
      /* ECL returns the primary value, not in env->values[0] */
      env->values[0] = cl_apply(2, rec->function, rec->args);
      for (i = env->nvalues; i-- > 0;) values = ecl_cons(env->values[i], values);
      rec->values = values;
      outcome = OUT_VALUES;
    } ECL_HANDLER_CASE(1, condition) {
      rec->condition = condition;
      outcome = OUT_ERROR;
    } ECL_HANDLER_CASE_END;
  } ECL_CATCH_ALL_IF_CAUGHT {
    outcome = OUT_UNWOUND; /* mp:exit-process, or ECL's "jump to the toplevel" */
  } ECL_CATCH_ALL_END;
  rec->outcome = outcome;
  rec->function = ECL_NIL;
  rec->args = ECL_NIL;
  return NULL;
}

/* A thread object that was neither joined nor detached is detached when it is collected: the
 * tcr argument slot keeps the record alive until the thread exits, so this runs after. */
static void thread_finalizer(void* object, void* data)
{
  struct thread_rec* rec = (struct thread_rec*)object;
  (void)data;
  if (!rec->joined && !rec->detached && g_manager != NULL) tcr_detach(g_manager, rec->thread);
}

static void ticket_finalizer(void* object, void* data)
{
  struct ticket_rec* t = (struct ticket_rec*)object;
  (void)data;
  tcr_ticket_release(t->ticket);
}

/* ---- Lisp functions ------------------------------------------------------------------------- */

static cl_object l_process_run_function(cl_narg narg, cl_object name, cl_object function, ...)
{
  cl_env_ptr env = ecl_process_env();
  struct thread_rec* rec;
  cl_object object;
  tcr_spawn_options options;
  tcr_status st;
  const char* cname = NULL;
  ecl_va_list args;
  if (narg < 2) FEwrong_num_arguments(sym("PROCESS-RUN-FUNCTION", "TCR"));
  ecl_va_start(args, function, narg, 2);
  rec = (struct thread_rec*)ecl_alloc(sizeof *rec);
  memset(rec, 0, sizeof *rec);
  rec->name = name;
  rec->function = si_coerce_to_function(function);
  rec->args = cl_grab_rest_args(args);
  ecl_va_end(args);
  rec->process = ECL_NIL;
  rec->values = ECL_NIL;
  rec->condition = ECL_NIL;
  rec->stack_check = !Null(ecl_symbol_value(g_stack_check));
  if (ecl_stringp(name)) {
    name = si_coerce_to_base_string(name);
    cname = (const char*)name->base_string.self;
  }
  object = ecl_make_foreign_data(g_thread_tag, 0, rec);
  tcr_spawn_options_init(&options);
  options.gc = TCR_GC_DONT_REGISTER; /* ecl_import_current_thread registers it */
  TCR_CALL(env, {
    st = tcr_spawn(g_manager, cname, thread_main, rec, &options, &rec->thread);
  });
  if (st != TCR_OK) signal_step(ECL_NIL, st, ECL_NIL);
  GC_register_finalizer_no_order(rec, thread_finalizer, NULL, NULL, NULL);
  after_tcr(env);
  ecl_return1(env, object);
}

static cl_object values_of(cl_env_ptr env, cl_object list)
{
  cl_index n = 0;
  cl_object first = ECL_NIL;
  for (; !Null(list) && n < ECL_MULTIPLE_VALUES_LIMIT; list = ECL_CONS_CDR(list)) {
    env->values[n] = ECL_CONS_CAR(list);
    if (n == 0) first = env->values[0];
    n++;
  }
  env->nvalues = n;
  return first;
}

static cl_object l_process_join(cl_object thread)
{
  cl_env_ptr env = ecl_process_env();
  struct thread_rec* rec = thread_of(thread);
  tcr_status st;
  TCR_CALL(env, {
    st = tcr_join(g_manager, rec->thread, NULL);
  });
  if (st == TCR_OK || st == TCR_STEP_StackOverflow || st == TCR_STEP_StartHook) rec->joined = 1;
  after_tcr(env);
  if (st != TCR_OK) signal_step(thread, st, ECL_NIL);
  switch (rec->outcome) {
  case OUT_VALUES: {
    cl_object first = values_of(env, rec->values);
    return first;
  }
  case OUT_ERROR:
    cl_error(9, g_thread_error, kw("THREAD"), thread, kw("STEP"), base_string("lisp error"),
             kw("MESSAGE"), cl_princ_to_string(rec->condition), kw("CONDITION"), rec->condition);
  default:
    cl_error(9, g_thread_error, kw("THREAD"), thread, kw("STEP"), base_string("unwound"),
             kw("MESSAGE"), base_string("the thread's function exited non-locally"),
             kw("CONDITION"), ECL_NIL);
  }
  ecl_return0(env);
}

static cl_object l_process_detach(cl_object thread)
{
  cl_env_ptr env = ecl_process_env();
  struct thread_rec* rec = thread_of(thread);
  tcr_status st;
  TCR_CALL(env, {
    st = tcr_detach(g_manager, rec->thread);
  });
  if (st == TCR_OK) rec->detached = 1;
  after_tcr(env);
  if (st != TCR_OK) signal_step(thread, st, ECL_NIL);
  ecl_return1(env, ECL_T);
}

static cl_object l_process_interrupt(cl_object thread, cl_object function)
{
  cl_env_ptr env = ecl_process_env();
  struct thread_rec* rec = thread_of(thread);
  cl_object* cell = (cl_object*)ecl_alloc_uncollectable(sizeof(cl_object));
  struct ticket_rec* t = (struct ticket_rec*)ecl_alloc(sizeof *t);
  tcr_status st;
  *cell = si_coerce_to_function(function);
  t->ticket = NULL;
  TCR_CALL(env, {
    /* tcr owns the cell from here: release_interrupt frees it exactly once. */
    st = tcr_interrupt_owned(g_manager, rec->thread, run_interrupt, cell, release_interrupt,
                             &t->ticket);
  });
  after_tcr(env);
  if (st != TCR_OK) signal_step(thread, st, ECL_NIL);
  GC_register_finalizer_no_order(t, ticket_finalizer, NULL, NULL, NULL);
  ecl_return1(env, ecl_make_foreign_data(g_ticket_tag, 0, t));
}

static struct ticket_rec* ticket_of(cl_object o)
{
  if (ecl_t_of(o) != t_foreign || o->foreign.tag != g_ticket_tag)
    FEwrong_type_argument(g_ticket_tag, o);
  return (struct ticket_rec*)o->foreign.data;
}

static cl_object outcome_keyword(tcr_outcome outcome)
{
  switch (outcome) {
  case TCR_DELIVERED: return kw("DELIVERED");
  case TCR_UNDELIVERED: return kw("UNDELIVERED");
  default: return kw("PENDING");
  }
}

static cl_object l_interrupt_outcome(cl_object ticket)
{
  cl_env_ptr env = ecl_process_env();
  ecl_return1(env, outcome_keyword(tcr_ticket_outcome(ticket_of(ticket)->ticket)));
}

static cl_object l_interrupt_wait(cl_object ticket)
{
  cl_env_ptr env = ecl_process_env();
  struct ticket_rec* t = ticket_of(ticket);
  TCR_CALL(env, {
    tcr_ticket_wait(t->ticket);
  });
  after_tcr(env);
  ecl_return1(env, outcome_keyword(tcr_ticket_outcome(t->ticket)));
}

/* Whether the caller runs on its tcr stack (not on the alternate signal stack above it). */
static int on_thread_stack(void)
{
  tcr_self* self = tcr_current();
  char here;
  if (self == NULL) return 1;
  return &here >= (char*)tcr_self_stack_low(self) && &here < (char*)tcr_self_stack_high(self);
}

/* TCR::%POLL: what ECL's interrupt runs on the target thread. With tcr's fault handlers
 * installed (tcr:install-fault-handlers), ECL's SIGSEGV handler, which runs the interrupts that
 * arrived while ECL had them disabled (ECL_USE_MPROTECT: the env page trap), is called from
 * tcr's handler on tcr's alternate signal stack: Boehm does not know that stack (a collection
 * then would not scan the thread's own), and it is 64 KiB. No closure runs there: the poll is
 * left for the thread's next tcr call or doorbell. */
static cl_object l_poll(void)
{
  cl_env_ptr env = ecl_process_env();
  size_t ran = 0;
  if (!on_thread_stack()) {
    g_deferred_polls++;
    ecl_return1(env, ecl_make_fixnum(0));
  }
  if (t_in_tcr == 0) {
    TCR_CALL(env, ran = tcr_poll());
    resignal_pending(env);
  }
  ecl_return1(env, ecl_make_fixnum((cl_fixnum)ran));
}

static cl_object l_reap(cl_narg narg, ...)
{
  cl_env_ptr env = ecl_process_env();
  cl_object wait = ECL_NIL;
  size_t reaped = 0;
  tcr_status st;
  va_list ap;
  if (narg > 1) FEwrong_num_arguments(sym("REAP", "TCR"));
  va_start(ap, narg);
  if (narg == 1) wait = va_arg(ap, cl_object);
  va_end(ap);
  TCR_CALL(env, {
    st = tcr_reap(g_manager, !Null(wait), &reaped);
  });
  after_tcr(env);
  if (st != TCR_OK) signal_step(ECL_NIL, st, ECL_NIL);
  ecl_return1(env, ecl_make_unsigned_integer(reaped));
}

static cl_object l_trim(void)
{
  cl_env_ptr env = ecl_process_env();
  ecl_return1(env, ecl_make_unsigned_integer(tcr_trim(g_manager)));
}

static cl_object l_resource_counts(void)
{
  cl_env_ptr env = ecl_process_env();
  tcr_resource_counts c;
  tcr_status st;
  memset(&c, 0, sizeof c);
  c.size = sizeof c;
  st = tcr_resource_counts_read(&c);
  if (st != TCR_OK) signal_step(ECL_NIL, st, ECL_NIL);
  ecl_return1(env, cl_list(10, kw("FDS"), ecl_make_unsigned_integer(c.fds), kw("PIDFDS"),
                           ecl_make_unsigned_integer(c.pidfds), kw("MAPS"),
                           ecl_make_unsigned_integer(c.maps), kw("THREADS"),
                           ecl_make_unsigned_integer(c.threads), kw("RSS-KB"),
                           ecl_make_unsigned_integer(c.rss_kb)));
}

static cl_object l_stats(void)
{
  cl_env_ptr env = ecl_process_env();
  tcr_stats s;
  memset(&s, 0, sizeof s);
  s.size = sizeof s;
  tcr_manager_stats(g_manager, &s);
  ecl_return1(env, cl_list(14, kw("SPAWNED"), ecl_make_unsigned_integer(s.spawned), kw("REAPED"),
                           ecl_make_unsigned_integer(s.reaped), kw("LIVE"),
                           ecl_make_unsigned_integer(s.live), kw("DEAD-UNREAPED"),
                           ecl_make_unsigned_integer(s.dead_unreaped), kw("RECORDS"),
                           ecl_make_unsigned_integer(s.records), kw("FREE-RECORDS"),
                           ecl_make_unsigned_integer(s.free_records), kw("CACHED-STACKS"),
                           ecl_make_unsigned_integer(s.cached_stacks)));
}

/* The calling thread's C stack as ECL and tcr see it (addresses as integers). */
static cl_object l_stack_limits(void)
{
  cl_env_ptr env = ecl_process_env();
  tcr_self* self = tcr_current();
  cl_object tcr_part = ECL_NIL;
  if (self != NULL)
    tcr_part = cl_list(4, kw("STACK-LOW"), ecl_make_unsigned_integer((cl_index)tcr_self_stack_low(self)),
                       kw("STACK-HIGH"), ecl_make_unsigned_integer((cl_index)tcr_self_stack_high(self)));
  ecl_return1(env, ecl_append(cl_list(8, kw("CS-ORG"), ecl_make_unsigned_integer((cl_index)env->cs_org),
                                      kw("CS-LIMIT"), ecl_make_unsigned_integer((cl_index)env->cs_limit),
                                      kw("CS-SIZE"), ecl_make_unsigned_integer(env->cs_size),
                                      kw("CS-BARRIER"), ecl_make_unsigned_integer((cl_index)env->cs_barrier)),
                              tcr_part));
}

static cl_object l_thread_id(cl_object thread)
{
  cl_env_ptr env = ecl_process_env();
  ecl_return1(env, ecl_make_uint64_t(thread_of(thread)->thread.id));
}

static cl_object l_thread_exited_p(cl_object thread)
{
  cl_env_ptr env = ecl_process_env();
  int exited = 0;
  tcr_status st = tcr_thread_exited(g_manager, thread_of(thread)->thread, &exited);
  if (st != TCR_OK) signal_step(thread, st, ECL_NIL);
  ecl_return1(env, exited ? ECL_T : ECL_NIL);
}

static cl_object l_thread_process(cl_object thread)
{
  cl_env_ptr env = ecl_process_env();
  ecl_return1(env, thread_of(thread)->process);
}

/* CLOCK_MONOTONIC in nanoseconds (get-internal-real-time counts milliseconds in ECL 21.2.1). */
static cl_object l_monotonic_ns(void)
{
  cl_env_ptr env = ecl_process_env();
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ecl_return1(env, ecl_make_uint64_t((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec));
}

static cl_object l_current_thread_id(void)
{
  cl_env_ptr env = ecl_process_env();
  tcr_self* self = tcr_current();
  ecl_return1(env, self != NULL ? ecl_make_uint64_t(tcr_self_id(self)) : ECL_NIL);
}

/* (tcr:install-fault-handlers): tcr's SIGSEGV/SIGBUS handlers, after ECL's own (installed at
 * boot), which they chain every other fault to. Opt-in (see l_poll and README.md, "ECL on tcr threads"): a
 * thread's overflow into its guard page is then recovered (join: "thread overflowed its stack")
 * instead of killing the process, but ECL's env-page interrupts on tcr threads then run on tcr's
 * alternate stack. */
static cl_object l_install_fault_handlers(void)
{
  cl_env_ptr env = ecl_process_env();
  tcr_status st = tcr_install_fault_handlers();
  if (st != TCR_OK) signal_step(ECL_NIL, st, ECL_NIL);
  ecl_return1(env, ECL_T);
}

/* Boehm's heap: (:heap-size :free-bytes :unmapped-bytes :in-use), for the leak tests. */
static cl_object l_gc_heap(void)
{
  cl_env_ptr env = ecl_process_env();
  size_t heap = GC_get_heap_size(), free_bytes = GC_get_free_bytes(), unmapped = GC_get_unmapped_bytes();
  ecl_return1(env, cl_list(8, kw("HEAP-SIZE"), ecl_make_unsigned_integer(heap), kw("FREE-BYTES"),
                           ecl_make_unsigned_integer(free_bytes), kw("UNMAPPED-BYTES"),
                           ecl_make_unsigned_integer(unmapped), kw("IN-USE"),
                           ecl_make_unsigned_integer(heap - free_bytes - unmapped)));
}

/* For the tests: unbounded recursion in plain C frames that allocate nothing and take no lock,
 * so the overflow reaches tcr's guard page at a point that holds nothing. A Lisp recursion with
 * ECL's check off may instead hit the guard page inside Boehm (ECL grows its Lisp stack from the
 * GC heap), and abandoning those frames leaves Boehm's lock held: the thread's exit hook then
 * waited in GC_free for ever (seen once under load). */
static volatile size_t g_never = SIZE_MAX;
__attribute__((noinline)) static size_t recurse_in_c(size_t depth)
{
  volatile char frame[1024];
  frame[0] = (char)depth;
  frame[sizeof frame - 1] = (char)depth;
  if (depth >= g_never) return (size_t)frame[0];
  return recurse_in_c(depth + 1) + (size_t)frame[sizeof frame - 1];
}

static cl_object l_overflow_c_stack(void)
{
  cl_env_ptr env = ecl_process_env();
  ecl_return1(env, ecl_make_unsigned_integer(recurse_in_c(0)));
}

static cl_object l_deferred_polls(void)
{
  cl_env_ptr env = ecl_process_env();
  ecl_return1(env, ecl_make_unsigned_integer(g_deferred_polls));
}

/* ---- baselines for bench/ecl_embed.lsp ---------------------------------------------------------
 * Where a tcr:process-run-function + tcr:process-join goes, measured beside it: ECL's own import
 * on the cheapest thread there is, with no thread manager. Not part of the module's interface.
 * (pthread_create) in parentheses: the bare call, not a GC redirect of the name; the import
 * registers the thread with Boehm, as it does on a tcr thread. */

struct bare_call {
  cl_object function, arg, result;
};

static void* bare_thread_main(void* data)
{
  struct bare_call* call = data;
  cl_env_ptr env;
  if (call == NULL) return NULL;
  if (!ecl_import_current_thread(ECL_NIL, ECL_NIL)) return NULL;
  env = ecl_process_env();
  ECL_CATCH_ALL_BEGIN(env) {
    call->result = cl_funcall(2, call->function, call->arg);
  } ECL_CATCH_ALL_END;
  ecl_release_current_thread();
  return NULL;
}

static cl_object bare_thread(struct bare_call* call)
{
  cl_env_ptr env = ecl_process_env();
  pthread_t thread;
  const int rc = (pthread_create)(&thread, NULL, bare_thread_main, call);
  if (rc != 0) FEerror("tcr::%bare-pthread: pthread_create: ~A", 1, base_string(strerror(rc)));
  (void)pthread_join(thread, NULL); /* call, on this stack, keeps its objects visible */
  ecl_return1(env, call != NULL ? call->result : ECL_NIL);
}

/* (tcr::%bare-pthread-import function arg): pthread_create, ecl_import_current_thread, (funcall
 * function arg), ecl_release_current_thread, pthread_join; answers the call's primary value.
 * (tcr::%bare-pthread): pthread_create of an empty function and pthread_join. */
static cl_object l_bare_pthread_import(cl_object function, cl_object arg)
{
  struct bare_call call = {function, arg, ECL_NIL};
  return bare_thread(&call);
}

static cl_object l_bare_pthread(void) { return bare_thread(NULL); }

/* ---- initialization ------------------------------------------------------------------------- */

static const char* const lisp_prelude[] = {
  "(defpackage \"TCR\" (:use \"CL\")"
  " (:export \"PROCESS-RUN-FUNCTION\" \"PROCESS-JOIN\" \"PROCESS-DETACH\" \"PROCESS-INTERRUPT\""
  " \"INTERRUPT-WAIT\" \"INTERRUPT-OUTCOME\" \"POLL\" \"REAP\" \"TRIM\" \"RESOURCE-COUNTS\" \"STATS\""
  " \"STACK-LIMITS\" \"THREAD-ID\" \"THREAD-EXITED-P\" \"THREAD-PROCESS\" \"CURRENT-THREAD-ID\" \"MONOTONIC-NS\""
  " \"INSTALL-FAULT-HANDLERS\" \"DEFERRED-POLLS\" \"GC-HEAP\""
  " \"*STACK-CHECK*\" \"*STACK-SIZE*\" \"THREAD-ERROR\" \"THREAD-ERROR-THREAD\" \"THREAD-ERROR-STEP\""
  " \"THREAD-ERROR-MESSAGE\" \"THREAD-ERROR-CONDITION\"))",
  "(defvar tcr:*stack-check* t)",
  "(define-condition tcr:thread-error (error)"
  " ((thread :initarg :thread :initform nil :reader tcr:thread-error-thread)"
  "  (step :initarg :step :initform \"\" :reader tcr:thread-error-step)"
  "  (message :initarg :message :initform \"\" :reader tcr:thread-error-message)"
  "  (condition :initarg :condition :initform nil :reader tcr:thread-error-condition))"
  " (:report (lambda (c s) (format s \"tcr thread ~A: ~A\" (tcr:thread-error-thread c)"
  "   (let ((m (tcr:thread-error-message c))) (if (equal m \"\") (tcr:thread-error-step c) m))))))",
  NULL};

static void eval_string(const char* source)
{
  cl_object form = ecl_read_from_cstring(source);
  cl_object result = si_safe_eval(3, form, ECL_NIL, OBJNULL);
  if (result == OBJNULL) FEerror("tcr-ecl: initialization form failed: ~A", 1, base_string(source));
}

static void initialize(void)
{
  const char* const* form;
  tcr_manager_options options;
  tcr_status st;
  size_t stack_size = 8u << 20;
  const char* env_size = getenv("TCR_ECL_STACK_SIZE");
  cl_object size_var;

  if (tcr_version() / 10000 != TCR_VERSION_MAJOR)
    FEerror("tcr-ecl: libtcr ~A does not match the headers it was built with", 1,
            base_string(tcr_version_string()));
  for (form = lisp_prelude; *form != NULL; ++form) eval_string(*form);
  /* tcr:*stack-size*, set before the load (or TCR_ECL_STACK_SIZE), is every thread's stack. */
  size_var = sym("*STACK-SIZE*", "TCR");
  if (env_size != NULL && *env_size != '\0') stack_size = (size_t)strtoull(env_size, NULL, 0);
  if (ecl_boundp(ecl_process_env(), size_var) && ECL_FIXNUMP(ecl_symbol_value(size_var)))
    stack_size = (size_t)ecl_fixnum(ecl_symbol_value(size_var));
  cl_set(size_var, ecl_make_unsigned_integer(stack_size));

  g_serious = ecl_list1(sym("SERIOUS-CONDITION", "CL"));
  ecl_register_root(&g_serious);
  g_thread_tag = sym("THREAD", "TCR");
  g_ticket_tag = sym("TICKET", "TCR");
  g_stack_check = sym("*STACK-CHECK*", "TCR");
  g_thread_error = sym("THREAD-ERROR", "TCR");
  g_interrupts_enabled = sym("*INTERRUPTS-ENABLED*", "EXT");

  ecl_def_c_function_va(sym("PROCESS-RUN-FUNCTION", "TCR"), (cl_objectfn)l_process_run_function, 2);
  ecl_def_c_function(sym("PROCESS-JOIN", "TCR"), (cl_objectfn_fixed)l_process_join, 1);
  ecl_def_c_function(sym("%BARE-PTHREAD-IMPORT", "TCR"), (cl_objectfn_fixed)l_bare_pthread_import, 2);
  ecl_def_c_function(sym("%BARE-PTHREAD", "TCR"), (cl_objectfn_fixed)l_bare_pthread, 0);
  ecl_def_c_function(sym("PROCESS-DETACH", "TCR"), (cl_objectfn_fixed)l_process_detach, 1);
  ecl_def_c_function(sym("PROCESS-INTERRUPT", "TCR"), (cl_objectfn_fixed)l_process_interrupt, 2);
  ecl_def_c_function(sym("INTERRUPT-OUTCOME", "TCR"), (cl_objectfn_fixed)l_interrupt_outcome, 1);
  ecl_def_c_function(sym("INTERRUPT-WAIT", "TCR"), (cl_objectfn_fixed)l_interrupt_wait, 1);
  ecl_def_c_function(sym("%POLL", "TCR"), (cl_objectfn_fixed)l_poll, 0);
  ecl_def_c_function(sym("POLL", "TCR"), (cl_objectfn_fixed)l_poll, 0);
  ecl_def_c_function_va(sym("REAP", "TCR"), (cl_objectfn)l_reap, 0);
  ecl_def_c_function(sym("TRIM", "TCR"), (cl_objectfn_fixed)l_trim, 0);
  ecl_def_c_function(sym("RESOURCE-COUNTS", "TCR"), (cl_objectfn_fixed)l_resource_counts, 0);
  ecl_def_c_function(sym("STATS", "TCR"), (cl_objectfn_fixed)l_stats, 0);
  ecl_def_c_function(sym("STACK-LIMITS", "TCR"), (cl_objectfn_fixed)l_stack_limits, 0);
  ecl_def_c_function(sym("THREAD-ID", "TCR"), (cl_objectfn_fixed)l_thread_id, 1);
  ecl_def_c_function(sym("THREAD-EXITED-P", "TCR"), (cl_objectfn_fixed)l_thread_exited_p, 1);
  ecl_def_c_function(sym("THREAD-PROCESS", "TCR"), (cl_objectfn_fixed)l_thread_process, 1);
  ecl_def_c_function(sym("CURRENT-THREAD-ID", "TCR"), (cl_objectfn_fixed)l_current_thread_id, 0);
  ecl_def_c_function(sym("MONOTONIC-NS", "TCR"), (cl_objectfn_fixed)l_monotonic_ns, 0);
  ecl_def_c_function(sym("INSTALL-FAULT-HANDLERS", "TCR"), (cl_objectfn_fixed)l_install_fault_handlers, 0);
  ecl_def_c_function(sym("DEFERRED-POLLS", "TCR"), (cl_objectfn_fixed)l_deferred_polls, 0);
  ecl_def_c_function(sym("%OVERFLOW-C-STACK", "TCR"), (cl_objectfn_fixed)l_overflow_c_stack, 0);
  ecl_def_c_function(sym("GC-HEAP", "TCR"), (cl_objectfn_fixed)l_gc_heap, 0);
  g_poll_fn = cl_fdefinition(sym("%POLL", "TCR"));
  ecl_register_root(&g_poll_fn);

  if (g_manager != NULL) return; /* loaded twice: one manager per process */
  tcr_manager_options_init(&options);
  options.gc = TCR_GC_RUNTIME; /* ECL initialized and configured Boehm in cl_boot */
  options.stack_size = stack_size;
  options.start_hook = start_hook;
  options.exit_hook = exit_hook;
  options.notify_hook = notify_hook;
  options.trampoline = trampoline;
  st = tcr_manager_create(&options, &g_manager);
  if (st != TCR_OK)
    FEerror("tcr-ecl: tcr_manager_create: ~A: ~A", 2, base_string(tcr_step_name(st)),
            base_string(tcr_error_message()));
  {
    const char* fh = getenv("TCR_ECL_FAULT_HANDLERS");
    if (fh != NULL && strcmp(fh, "1") == 0) l_install_fault_handlers();
  }
}

/* The FASL entry point (see the header comment). */
ECL_DLLEXPORT void init_fas_CODE(cl_object flag)
{
  if (flag != OBJNULL) {
    flag->cblock.data = NULL;
    flag->cblock.data_size = 0;
    flag->cblock.temp_data_size = 0;
    flag->cblock.data_text = NULL;
    flag->cblock.cfuns_size = 0;
    flag->cblock.cfuns = NULL;
    flag->cblock.source = ecl_make_constant_base_string("tcr-ecl.c", -1);
    return;
  }
  initialize();
}
