/* tcr.h: the C API of tcr, for runtimes written in C (and for C++ that wants a stable ABI).
 * C11 or C++; link libtcr.so (pkg-config tcr; CMake: find_package(tcr), tcr::shared) or libtcr.a
 * (pkg-config tcr-static; tcr::tcr).
 *
 * Conventions
 *  - Opaque handles: tcr_manager, tcr_self (a thread's control record), tcr_ticket,
 *    tcr_semaphore, tcr_region. tcr_thread is a small value (copy it freely): it names a thread
 *    *and* the run it had, so a call with a tcr_thread whose thread is gone answers
 *    TCR_STEP_StaleThread rather than reach a stranger.
 *  - Every call that can fail returns a tcr_status: TCR_OK (0), or the step that failed,
 *    TCR_STEP_<Name> for each entry of runtime/steps.h (TCR_STEP_PidfdOpen,
 *    TCR_STEP_BadArgument, ...). The calling thread's last failure stays readable until its next
 *    failing tcr call: tcr_error_step(), tcr_error_code() (errno, or 0 for a rule of the API) and
 *    tcr_error_message() ("pidfd_open: Too many open files (EMFILE)"). A successful call leaves
 *    them as they were. Nothing throws, nothing aborts on bad input: a NULL handle or pointer, an
 *    out-of-range index or an unknown enum value answers TCR_STEP_BadArgument.
 *  - Option structs are versioned: set .size = sizeof(the struct) (the *_init functions do, and
 *    fill in the defaults). The library reads the fields that a struct of that size holds, so a
 *    caller built against an older, shorter struct keeps working; a size smaller than the first
 *    version's, or a larger one whose extra bytes are not zero (or that is more than 4096 bytes
 *    larger than the library knows), is TCR_STEP_BadArgument.
 *  - Callbacks run on the thread the comment names and must not longjmp or throw out of tcr's
 *    frames: a runtime's non-local exit (a Scheme error, a Lisp throw) must be caught inside the
 *    callback (the interrupt trampoline is there for that).
 *  - The ABI: within one major version (the SONAME, libtcr.so.0) functions are only added, struct
 *    fields are only appended (behind .size), enum and step values never change. libtcr.so
 *    exports the tcr_* functions only; the C++ API (threads/thread_manager.h and the others) is
 *    for static linking and promises source compatibility within a minor version, not an ABI.
 *  - Thread-safety: as the C++ API (threads/thread_manager.h): any thread may call any
 *    function unless its comment says otherwise.
 */
#ifndef TCR_TCR_H
#define TCR_TCR_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/steps.h"

#if defined(__GNUC__) || defined(__clang__)
#define TCR_API __attribute__((visibility("default")))
#else
#define TCR_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version ------------------------------------------------------------------------------- */

#define TCR_VERSION_MAJOR 0
#define TCR_VERSION_MINOR 2
#define TCR_VERSION_PATCH 0
/* major * 10000 + minor * 100 + patch: compare with tcr_version() to check the library loaded. */
#define TCR_VERSION (TCR_VERSION_MAJOR * 10000 + TCR_VERSION_MINOR * 100 + TCR_VERSION_PATCH)

TCR_API int tcr_version(void);                /* the TCR_VERSION the library was built as */
TCR_API const char* tcr_version_string(void); /* "0.2.0" */

/* ---- status and errors --------------------------------------------------------------------- */

#define TCR_C_STEP_(name, category, text) TCR_STEP_##name,
typedef enum tcr_status {
  TCR_OK = 0,
  TCR_STEPS(TCR_C_STEP_)
  TCR_STEP_COUNT_ /* not a step: one past the last */
} tcr_status;
#undef TCR_C_STEP_

TCR_API tcr_status tcr_error_step(void);     /* the calling thread's last failure; TCR_OK if none */
TCR_API int tcr_error_code(void);            /* its errno (kern_return_t for Mach steps), or 0 */
TCR_API const char* tcr_error_message(void); /* its message; "" if none. Valid until the next failure */
TCR_API const char* tcr_step_name(tcr_status step); /* "pidfd_open", "bad argument"; "ok" for TCR_OK */

/* ---- handles ------------------------------------------------------------------------------- */

typedef struct tcr_manager tcr_manager;
typedef struct tcr_self tcr_self; /* a thread's control record (tcr::Tcr) */
typedef struct tcr_ticket tcr_ticket;
typedef struct tcr_semaphore tcr_semaphore;
typedef struct tcr_region tcr_region;

typedef struct tcr_thread {
  uint64_t id;          /* the run's id, unique in the process; 0 for no thread */
  uintptr_t opaque_[2]; /* the record and its manager: not for the caller */
} tcr_thread;

/* ---- managers ------------------------------------------------------------------------------ */

typedef enum tcr_handle_mode { TCR_HANDLE_AUTO = 0, TCR_HANDLE_PIDFD = 1, TCR_HANDLE_TGKILL = 2 } tcr_handle_mode;

/* Who configures and initializes Boehm GC. */
typedef enum tcr_gc_owner {
  /* tcr calls GC_INIT (on the main thread) at tcr_manager_create if nobody has yet. */
  TCR_GC_TCR = 0,
  /* The runtime owns Boehm's configuration (GC_set_all_interior_pointers and the like) and calls
   * GC_INIT itself, before or after the manager is created, on its main thread. tcr never
   * initializes or configures it; it registers threads once GC_is_init_called(). Before that any
   * spawn or adoption answers TCR_STEP_GcNotInitialized (even one that does not register the
   * thread: its slot block is a GC root, and adding a root would initialize Boehm). Set Boehm's
   * signals (GC_set_suspend_signal, ...) before creating the manager: tcr picks its own signals
   * then, avoiding Boehm's. */
  TCR_GC_RUNTIME = 1,
  /* No GC: threads are never registered, slot blocks are not roots. */
  TCR_GC_NONE = 2
} tcr_gc_owner;

/* Runs on each new thread before its function, in its tcr context (tcr_current() answers it):
 * a runtime enters itself here (ecl_import_current_thread). Nonzero fails the thread: its
 * function does not run, the exit hook still does, and tcr_join answers TCR_STEP_StartHook with
 * that value as the code. */
typedef int (*tcr_start_hook)(tcr_self* self, void* data);
/* Runs on each exiting thread first thing at its exit (also after its function returned through a
 * stack overflow, or its start hook failed): a runtime leaves itself here. */
typedef void (*tcr_exit_hook)(tcr_self* self, void* data);
/* Rings the runtime's own doorbell for a thread that an interrupt was queued for
 * (Guile: system-async-mark): runs on the interrupting thread, after the closure is queued, with
 * the target's notify context (tcr_self_set_notify_context) and id. With a notify hook set, tcr
 * sends no wake-up signal to a thread that is not waiting inside tcr (so no blocking call of the
 * runtime's is cut short: the runtime wakes it as it would for its own asyncs); the runtime then
 * calls tcr_poll() where it runs its asyncs. */
typedef void (*tcr_notify_hook)(uint64_t thread_id, void* notify_context, void* data);
/* Runs each interrupt closure (tcr_interrupt) on the target thread: the trampoline must call
 * run(closure) exactly once, inside the runtime's own error handler, so that an error raised by
 * the closure is caught there rather than unwound through tcr. A trampoline that returns without
 * calling run leaves the interrupt Undelivered. */
typedef void (*tcr_trampoline)(tcr_self* self, void (*run)(void* closure), void* closure,
                               void* data);

typedef struct tcr_manager_options {
  size_t size;                  /* sizeof(tcr_manager_options) */
  tcr_handle_mode handle_mode;  /* default TCR_HANDLE_AUTO */
  tcr_gc_owner gc;              /* default TCR_GC_TCR */
  size_t stack_size;            /* the default for spawns, in [64 KiB, 1 GiB]; 0 or default: 1 MiB */
  size_t cached_stacks;         /* reaped stacks kept for reuse; default 8 (0: none) */
  uint32_t stop_timeout_ms;     /* how long tcr_suspend_all waits per thread; 0 (default): no limit */
  tcr_start_hook start_hook;    /* default NULL */
  void* start_hook_data;
  tcr_exit_hook exit_hook;      /* default NULL */
  void* exit_hook_data;
  tcr_notify_hook notify_hook;  /* default NULL: a wake-up signal, as the C++ API sends */
  void* notify_hook_data;
  tcr_trampoline trampoline;    /* default NULL: closures are called directly */
  void* trampoline_data;
} tcr_manager_options;

TCR_API void tcr_manager_options_init(tcr_manager_options* options);
/* options may be NULL (the defaults). *out is set on TCR_OK only. */
TCR_API tcr_status tcr_manager_create(const tcr_manager_options* options, tcr_manager** out);
/* Shuts the manager down (waits for spawned threads, joins what was never joined) and frees it.
 * NULL is a no-op. No other call on the manager may be in progress or follow (a thread still
 * inside tcr_join on it would use freed memory). Called from one of its own threads, it cannot wait: see ThreadManager's
 * destructor (the state is left alive and unowned, and that is logged). */
TCR_API void tcr_manager_destroy(tcr_manager* manager);
/* Refuses new spawns and adoptions and waits for every spawned thread to end (tcr_join still
 * works). TCR_STEP_AdoptedThreadsAlive while adopted threads remain. */
TCR_API tcr_status tcr_shutdown(tcr_manager* manager);
/* Reaps exited detached threads; with wait nonzero first waits for every detached thread (but
 * the caller) to finish. reaped may be NULL. */
TCR_API tcr_status tcr_reap(tcr_manager* manager, int wait, size_t* reaped);
/* Unmaps the stacks kept for reuse; answers how many (0 for NULL). */
TCR_API size_t tcr_trim(tcr_manager* manager);
TCR_API tcr_handle_mode tcr_manager_handle_mode(const tcr_manager* manager); /* PIDFD or TGKILL */

/* ---- threads ------------------------------------------------------------------------------- */

/* What a spawned thread runs; its result is what tcr_join answers. */
typedef void* (*tcr_thread_fn)(tcr_self* self, void* argument);

typedef enum tcr_gc_registration {
  TCR_GC_INHERIT = 0,  /* as the manager: registered unless it was created with TCR_GC_NONE */
  TCR_GC_REGISTER = 1,
  TCR_GC_DONT_REGISTER = 2
} tcr_gc_registration;

typedef struct tcr_spawn_options {
  size_t size;                 /* sizeof(tcr_spawn_options) */
  size_t stack_size;           /* 0 (default): the manager's */
  int detached;                /* default 0 */
  tcr_gc_registration gc;      /* default TCR_GC_INHERIT */
} tcr_spawn_options;

TCR_API void tcr_spawn_options_init(tcr_spawn_options* options);
/* process-run-function: returns once the thread runs fn(self, argument) (or with the step that
 * failed; nothing leaks). `argument` is kept in a GC-visible slot (tcr_argument) until the thread
 * exits. name may be NULL; options may be NULL. out may be NULL for a detached thread. */
TCR_API tcr_status tcr_spawn(tcr_manager* manager, const char* name, tcr_thread_fn fn,
                             void* argument, const tcr_spawn_options* options, tcr_thread* out);
/* Waits for the thread and reaps it; *result (result may be NULL) is what fn returned, kept
 * GC-visible until this call hands it over. Errors: StaleThread, AlreadyJoined, ThreadDetached,
 * JoinSelf, StartHook, StackOverflow, ThreadThrew. */
TCR_API tcr_status tcr_join(tcr_manager* manager, tcr_thread thread, void** result);
/* As tcr_join, but answers TCR_STEP_Timeout (the thread still joinable) when the thread has not
 * exited within timeout_ns (0: only a check; UINT64_MAX: no limit). A safe point while it waits. */
TCR_API tcr_status tcr_join_timed(tcr_manager* manager, tcr_thread thread, uint64_t timeout_ns,
                                  void** result);
TCR_API tcr_status tcr_detach(tcr_manager* manager, tcr_thread thread);
/* Sends sig through the thread's cached kernel handle; TCR_STEP_ThreadExited once it exited. */
TCR_API tcr_status tcr_signal(tcr_manager* manager, tcr_thread thread, int sig);
/* Whether the thread has finished (its function returned; it may not be reaped yet): 1 or 0 in
 * *exited. A stale thread has exited. */
TCR_API tcr_status tcr_thread_exited(tcr_manager* manager, tcr_thread thread, int* exited);

typedef struct tcr_adopt_options {
  size_t size;             /* sizeof(tcr_adopt_options) */
  tcr_gc_registration gc;  /* default TCR_GC_INHERIT */
} tcr_adopt_options;
TCR_API void tcr_adopt_options_init(tcr_adopt_options* options);
/* Gives the calling foreign thread a control record, as if spawned (start and exit hooks do not
 * run: the thread is already the runtime's). Released when the thread exits, or by
 * tcr_release_current_thread (BadArgument inside a blocking region or an interrupt closure).
 * out may be NULL. */
TCR_API tcr_status tcr_adopt_current_thread(tcr_manager* manager, const char* name,
                                            const tcr_adopt_options* options, tcr_self** out);
TCR_API tcr_status tcr_release_current_thread(tcr_manager* manager);
/* The calling thread as a tcr_thread of this manager; BadArgument from another thread. */
TCR_API tcr_status tcr_current_thread(const tcr_manager* manager, tcr_thread* out);

/* ---- the calling thread's record and its slots --------------------------------------------- */

#define TCR_SLOTS 16 /* per-thread GC-visible slots, tcr_slot_get/set indexes 0 .. TCR_SLOTS - 1 */

typedef enum tcr_state {
  TCR_STATE_FREE = 0, TCR_STATE_RESERVED, TCR_STATE_STARTING, TCR_STATE_RUNNING,
  TCR_STATE_EXITING, TCR_STATE_DEAD
} tcr_state;

/* The calling thread's record, or NULL if tcr neither spawned nor adopted it. */
TCR_API tcr_self* tcr_current(void);
/* Accessors: NULL self answers 0 / NULL. Another thread's record may be read only while that
 * thread cannot be reaped (it is the caller, or stopped, or inside tcr_for_each). */
TCR_API uint64_t tcr_self_id(const tcr_self* self);
TCR_API const char* tcr_self_name(const tcr_self* self); /* "" when unnamed */
TCR_API tcr_state tcr_self_state(const tcr_self* self);
TCR_API int tcr_self_tid(const tcr_self* self);
TCR_API int tcr_self_adopted(const tcr_self* self);
TCR_API int tcr_self_detached(const tcr_self* self);
TCR_API int tcr_self_gc_registered(const tcr_self* self);
TCR_API void* tcr_self_stack_low(const tcr_self* self);
TCR_API void* tcr_self_stack_high(const tcr_self* self);
TCR_API void* tcr_self_guard_low(const tcr_self* self);
TCR_API uint64_t tcr_self_traps(const tcr_self* self);
TCR_API int tcr_self_handle_fd(const tcr_self* self); /* its pidfd, or -1 (tgkill mode) */
/* The thread's alternate signal stack (where tcr's handlers run), its size in *size (size may be
 * NULL); NULL while none of tcr's is installed. */
TCR_API void* tcr_self_alt_stack(const tcr_self* self, size_t* size);
/* Darwin: the thread's Mach port, cached once at its start (mach_port_name_t); 0 elsewhere. */
TCR_API uint32_t tcr_self_mach_port(const tcr_self* self);
/* The GC-visible slots (scanned by Boehm; cleared when the thread exits, so what a thread kept
 * there does not outlive it). Own thread, or a thread the caller holds stopped. */
TCR_API tcr_status tcr_slot_get(const tcr_self* self, size_t index, void** value);
TCR_API tcr_status tcr_slot_set(tcr_self* self, size_t index, void* value);
TCR_API void* tcr_argument(const tcr_self* self);
/* Replaces (or with NULL clears) the argument slot, so that it stops keeping its object alive. */
TCR_API tcr_status tcr_set_argument(tcr_self* self, void* argument);
/* What the notify hook is handed for this thread (kept GC-visible), e.g. the runtime's own
 * thread object. */
TCR_API tcr_status tcr_self_set_notify_context(tcr_self* self, void* context);

/* ---- interrupts (process-interrupt) -------------------------------------------------------- */

typedef void (*tcr_interrupt_fn)(tcr_self* self, void* data);
typedef enum tcr_outcome { TCR_PENDING = 0, TCR_DELIVERED = 1, TCR_UNDELIVERED = 2 } tcr_outcome;

/* Queues fn(self, data) to run on the thread at its next safe point (tcr_poll, or any wait
 * inside tcr). ticket may be NULL; otherwise release it with tcr_ticket_release. An interrupt to
 * a thread that has exited is no error: its ticket settles TCR_UNDELIVERED. */
TCR_API tcr_status tcr_interrupt(tcr_manager* manager, tcr_thread thread, tcr_interrupt_fn fn,
                                 void* data, tcr_ticket** ticket);
/* As tcr_interrupt, and tcr owns data: release(data) runs exactly once when tcr is done with it,
 * after fn returned on the target, or when the interrupt is dropped undelivered (the target
 * exited), or before this call returns an error. It runs on whichever thread that happens on,
 * outside every tcr lock (a runtime's GC-protected closure is released this way). */
TCR_API tcr_status tcr_interrupt_owned(tcr_manager* manager, tcr_thread thread,
                                       tcr_interrupt_fn fn, void* data,
                                       void (*release)(void* data), tcr_ticket** ticket);
TCR_API tcr_outcome tcr_ticket_outcome(const tcr_ticket* ticket);
/* Waits until the outcome is known: TCR_OK when delivered, TCR_STEP_ThreadExited when not.
 * Never wait on an interrupt to the calling thread from inside one of its own closures or
 * blocking regions: the closure cannot run there, so the wait would not end. */
TCR_API tcr_status tcr_ticket_wait(const tcr_ticket* ticket);
TCR_API void tcr_ticket_release(tcr_ticket* ticket); /* NULL is a no-op */
/* A safe point: runs the calling thread's queued interrupts; answers how many ran. */
TCR_API size_t tcr_poll(void);
/* Sleeps, running interrupts that arrive meanwhile. */
TCR_API void tcr_sleep_ns(uint64_t duration_ns);

/* ---- semaphores whose waits are safe points ------------------------------------------------ */

TCR_API tcr_status tcr_semaphore_create(uint32_t initial, tcr_semaphore** out);
TCR_API void tcr_semaphore_destroy(tcr_semaphore* semaphore); /* no waiter may remain */
TCR_API void tcr_semaphore_post(tcr_semaphore* semaphore);     /* async-signal-safe */
TCR_API void tcr_semaphore_wait(tcr_semaphore* semaphore);
TCR_API int tcr_semaphore_try_wait(tcr_semaphore* semaphore);  /* 1: took a unit */
TCR_API int tcr_semaphore_wait_ns(tcr_semaphore* semaphore, uint64_t timeout_ns); /* 1: took one */
TCR_API uint32_t tcr_semaphore_value(const tcr_semaphore* semaphore);

/* ---- blocking regions ---------------------------------------------------------------------- */

/* A region in which the calling thread does not touch the GC heap (a foreign call, a blocking
 * system call): a stop-the-world does not signal it (it reports the stack and registers saved at
 * entry and holds the thread at the region's end until the world resumes), and no wake-up signal
 * is sent to it. Regions nest; interrupts queued meanwhile run at the outermost end.
 * Use the macros, in one function, paired: TCR_BLOCKING_BEGIN(r) ... TCR_BLOCKING_END(r), with
 * `tcr_blocking r;` declared in that function. */
typedef struct tcr_blocking {
  uintptr_t opaque_[48];
} tcr_blocking;
TCR_API void tcr_blocking_enter_(tcr_blocking* region);
TCR_API void tcr_blocking_leave_(tcr_blocking* region);
#if defined(__GNUC__) || defined(__clang__)
/* Spills the caller's callee-saved registers into its own frame, which the scan covers. */
#define TCR_BLOCKING_BEGIN(r) (__builtin_unwind_init(), tcr_blocking_enter_(&(r)))
#else
#define TCR_BLOCKING_BEGIN(r) tcr_blocking_enter_(&(r))
#endif
#define TCR_BLOCKING_END(r) tcr_blocking_leave_(&(r))

/* ---- stop the world ------------------------------------------------------------------------ */

typedef enum tcr_stop_kind { TCR_STOP_SUSPENDED = 0, TCR_STOP_BLOCKING = 1, TCR_STOP_EXITING = 2 } tcr_stop_kind;

typedef struct tcr_stopped_thread {
  const tcr_self* self;
  uint64_t id;
  int tid;
  tcr_stop_kind kind;
  const void* stack_low; /* [stack_low, stack_high): what a conservative scan reads */
  const void* stack_high;
  const uintptr_t* registers; /* register_count words */
  size_t register_count;
  uintptr_t sp, pc;           /* pc 0 for a blocking region */
} tcr_stopped_thread;

typedef struct tcr_world {
  size_t count;   /* threads stopped */
  uint64_t epoch;
  unsigned depth; /* nesting level this tcr_suspend_all reached */
  const void* opaque_;
} tcr_world;

/* Stops every other thread of the manager (from one of its threads; nests). While stopped the
 * caller must not spawn, join, allocate from the GC heap or call malloc-heavy code. Errors:
 * BadArgument from a thread the manager does not know, the signal step's, StopTimeout; on error
 * every thread runs again. */
TCR_API tcr_status tcr_suspend_all(tcr_manager* manager, tcr_world* world);
/* The index-th stopped thread (index < world->count), valid until the matching resume. */
TCR_API tcr_status tcr_world_thread(const tcr_world* world, size_t index, tcr_stopped_thread* out);
TCR_API tcr_status tcr_resume_all(tcr_manager* manager);
TCR_API int tcr_world_stopped_by_caller(const tcr_manager* manager);

/* ---- inspection ---------------------------------------------------------------------------- */

typedef struct tcr_thread_info {
  uint64_t id;
  char name[48]; /* truncated, NUL-terminated */
  tcr_state state;
  int tid;
  int handle_fd; /* -1 in tgkill mode */
  int detached, adopted, gc_registered;
} tcr_thread_info;

/* The live threads: *count is how many there are; the first min(capacity, *count) are written
 * to infos (which may be NULL when capacity is 0). */
TCR_API tcr_status tcr_snapshot(const tcr_manager* manager, tcr_thread_info* infos,
                                size_t capacity, size_t* count);
/* Calls fn for each live thread under the registry lock: fn must not call into the manager. */
TCR_API tcr_status tcr_for_each(const tcr_manager* manager,
                                void (*fn)(const tcr_self* self, void* data), void* data);

typedef struct tcr_stats {
  size_t size; /* sizeof(tcr_stats), set by the caller */
  uint64_t spawned, adopted, reaped;
  size_t live, dead_unreaped, records, free_records, cached_stacks, extra_handles_closed;
} tcr_stats;
TCR_API tcr_status tcr_manager_stats(const tcr_manager* manager, tcr_stats* stats);

typedef struct tcr_resource_counts {
  size_t size; /* sizeof(tcr_resource_counts), set by the caller */
  size_t fds, pidfds, maps, threads, rss_kb;
} tcr_resource_counts;
/* The process's kernel resources, as the leak tests count them (reads /proc: not for hot paths). */
TCR_API tcr_status tcr_resource_counts_read(tcr_resource_counts* counts);
/* Every open fd with its owner, one per line, as snprintf does: writes at most capacity bytes
 * (NUL-terminated when capacity > 0) and answers in *length the full length without the NUL. */
TCR_API tcr_status tcr_resource_dump(char* buffer, size_t capacity, size_t* length);

/* The signals tcr took for itself (the same for every manager of the process). */
TCR_API void tcr_signals(int* suspend_signal, int* interrupt_signal);

/* ---- GC traps: protected regions and fault handlers ---------------------------------------- */

typedef enum tcr_trap_mode {
  TCR_TRAP_BEST = -1, /* create: the best the kernel allows */
  TCR_TRAP_SIGNAL = 0, TCR_TRAP_LISTENER = 1, TCR_TRAP_ASYNC = 2
} tcr_trap_mode;
TCR_API tcr_trap_mode tcr_best_trap_mode(void);

/* Dirty-page tracking over [base, base + length) (page-aligned, mapped, writable): see
 * exceptions/protected_region.h. fall_back nonzero: an unavailable mode falls back to the next
 * best; zero: TCR_STEP_ModeUnavailable. */
TCR_API tcr_status tcr_region_create(void* base, size_t length, tcr_trap_mode mode, int fall_back,
                                     tcr_region** out);
TCR_API void tcr_region_destroy(tcr_region* region); /* NULL is a no-op */
TCR_API tcr_status tcr_region_protect(tcr_region* region);
TCR_API tcr_status tcr_region_unprotect(tcr_region* region);
/* The pages written since the last collect or protect, ascending, re-armed: *pages points to
 * *count indexes, valid until the next collect or the region's destruction. */
TCR_API tcr_status tcr_region_collect_dirty(tcr_region* region, const size_t** pages,
                                            size_t* count);
TCR_API tcr_trap_mode tcr_region_mode(const tcr_region* region);
TCR_API size_t tcr_region_pages(const tcr_region* region);
TCR_API size_t tcr_region_page_size(const tcr_region* region);
TCR_API uint64_t tcr_region_traps(const tcr_region* region);

/* The SIGSEGV/SIGBUS handlers that resolve Signal-mode traps and recover tcr threads' stack
 * overflows (join answers TCR_STEP_StackOverflow). Once per process. */
TCR_API tcr_status tcr_install_fault_handlers(void);
TCR_API int tcr_fault_handlers_installed(void);

/* The exception listener: the one thread that resolves Listener-mode traps (started by the first
 * such region). */
typedef struct tcr_listener_stats {
  size_t size; /* sizeof(tcr_listener_stats), set by the caller */
  uint64_t batches;    /* reads that returned messages */
  uint64_t messages;   /* fault messages received */
  uint64_t resolved;   /* faults that dirtied an armed page */
  uint64_t stale;      /* faults on pages already writable (a racing fault got there first) */
  uint64_t foreign;    /* faults in no region (unregistered while in flight): woken */
  uint64_t attributed; /* messages whose tid mapped to a tcr thread */
} tcr_listener_stats;
TCR_API tcr_status tcr_listener_stats_read(tcr_listener_stats* stats);
TCR_API int tcr_listener_running(void);

#ifdef __cplusplus
}
#endif

#endif /* TCR_TCR_H */
