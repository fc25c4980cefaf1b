/* The C API's version, step names, each thread's last error, and versioned option structs. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

static void versions(void) {
  CHECK(tcr_version() == TCR_VERSION);
  CHECK(TCR_VERSION == TCR_VERSION_MAJOR * 10000 + TCR_VERSION_MINOR * 100 + TCR_VERSION_PATCH);
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", TCR_VERSION_MAJOR, TCR_VERSION_MINOR, TCR_VERSION_PATCH);
  CHECK(tcr_version_string() != NULL && strcmp(tcr_version_string(), want) == 0);
}

static void step_names(void) {
  CHECK(TCR_OK == 0);
  CHECK(strcmp(tcr_step_name(TCR_OK), "ok") == 0);
  CHECK(strcmp(tcr_step_name(TCR_STEP_BadArgument), "bad argument") == 0);
  CHECK(strcmp(tcr_step_name(TCR_STEP_PidfdOpen), "pidfd_open") == 0);
  CHECK(strcmp(tcr_step_name(TCR_STEP_PthreadCreate), "pthread_create") == 0);
  CHECK(strcmp(tcr_step_name(TCR_STEP_StaleThread), "stale thread reference") == 0);
  CHECK(strcmp(tcr_step_name(TCR_STEP_JoinSelf), "thread cannot join itself") == 0);
  /* The first step is 1: C's numbering is C++'s + 1. */
  CHECK(TCR_STEP_PthreadCreate == 1);
  /* Every step has a name of its own, none "ok" or the unknown answer. */
  for (int s = 1; s < TCR_STEP_COUNT_; ++s) {
    const char* name = tcr_step_name((tcr_status)s);
    if (!CHECK(name != NULL && name[0] != '\0')) continue;
    CHECK(strcmp(name, "ok") != 0);
    CHECK(strcmp(name, tcr_step_name(TCR_STEP_COUNT_)) != 0);
  }
  /* Out of range: a fixed answer, not a crash, and not any step's name. */
  const char* unknown = tcr_step_name(TCR_STEP_COUNT_);
  CHECK(unknown != NULL && strcmp(unknown, "unknown step") == 0);
  CHECK(strcmp(tcr_step_name((tcr_status)(TCR_STEP_COUNT_ + 100)), "unknown step") == 0);
  CHECK(strcmp(tcr_step_name((tcr_status)-1), "unknown step") == 0);
}

/* ---- each thread's last error ---- */

static void* fail_on_another_thread(void* arg) {
  (void)arg;
  /* A fresh thread starts with no error. */
  CHECK(tcr_error_step() == TCR_OK);
  CHECK(tcr_error_code() == 0);
  CHECK(tcr_error_message() != NULL && tcr_error_message()[0] == '\0');
  tcr_semaphore* s = NULL;
  CHECK_STATUS(tcr_semaphore_create(0, NULL), TCR_STEP_BadArgument);
  (void)s;
  CHECK(tcr_error_step() == TCR_STEP_BadArgument);
  return NULL;
}

static void error_state(void) {
  CHECK(tcr_error_step() == TCR_OK);
  CHECK(strcmp(tcr_error_message(), "") == 0);
  /* A failure is recorded: step, code 0 for a rule of the API, a message naming the call. */
  CHECK_STATUS(tcr_manager_create(NULL, NULL), TCR_STEP_BadArgument);
  CHECK(tcr_error_step() == TCR_STEP_BadArgument);
  CHECK(tcr_error_code() == 0);
  CHECK(strstr(tcr_error_message(), "tcr_manager_create") != NULL);
  CHECK(strstr(tcr_error_message(), "bad argument") != NULL);

  /* Another thread's failure is not seen here. */
  pthread_t t;
  CHECK(pthread_create(&t, NULL, fail_on_another_thread, NULL) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(tcr_error_step() == TCR_STEP_BadArgument);
  CHECK(strstr(tcr_error_message(), "tcr_manager_create") != NULL);

  /* A success leaves the last error as it was. */
  tcr_semaphore* s = NULL;
  CHECK_STATUS(tcr_semaphore_create(1, &s), TCR_OK);
  tcr_semaphore_destroy(s);
  CHECK(tcr_error_step() == TCR_STEP_BadArgument);
  CHECK(strstr(tcr_error_message(), "tcr_manager_create") != NULL);

  /* The next failure replaces it. */
  CHECK_STATUS(tcr_semaphore_create(0, NULL), TCR_STEP_BadArgument);
  CHECK(strstr(tcr_error_message(), "tcr_semaphore_create") != NULL);
  CHECK(strstr(tcr_error_message(), "tcr_manager_create") == NULL);
}

/* ---- versioned option structs ---- */

static void defaults(void) {
  tcr_manager_options m;
  memset(&m, 0xA5, sizeof m);
  tcr_manager_options_init(&m);
  CHECK(m.size == sizeof m);
  CHECK(m.handle_mode == TCR_HANDLE_AUTO);
  CHECK(m.gc == TCR_GC_TCR);
  CHECK(m.stack_size == (size_t)1 << 20);
  CHECK(m.cached_stacks == 8);
  CHECK(m.stop_timeout_ms == 0);
  CHECK(m.start_hook == NULL && m.start_hook_data == NULL);
  CHECK(m.exit_hook == NULL && m.exit_hook_data == NULL);
  CHECK(m.notify_hook == NULL && m.notify_hook_data == NULL);
  CHECK(m.trampoline == NULL && m.trampoline_data == NULL);

  tcr_spawn_options s;
  memset(&s, 0xA5, sizeof s);
  tcr_spawn_options_init(&s);
  CHECK(s.size == sizeof s);
  CHECK(s.stack_size == 0);
  CHECK(s.detached == 0);
  CHECK(s.gc == TCR_GC_INHERIT);

  tcr_adopt_options a;
  memset(&a, 0xA5, sizeof a);
  tcr_adopt_options_init(&a);
  CHECK(a.size == sizeof a);
  CHECK(a.gc == TCR_GC_INHERIT);

  /* NULL is a no-op, not a crash. */
  tcr_manager_options_init(NULL);
  tcr_spawn_options_init(NULL);
  tcr_adopt_options_init(NULL);
}

static void* returns_argument(tcr_self* self, void* argument) {
  (void)self;
  return argument;
}

/* A struct inside a bigger buffer: the extra bytes are what a newer caller's struct would hold. */
#define EXTRA 64
typedef union {
  tcr_manager_options options;
  unsigned char bytes[sizeof(tcr_manager_options) + EXTRA];
} big_manager_options;
typedef union {
  tcr_spawn_options options;
  unsigned char bytes[sizeof(tcr_spawn_options) + EXTRA];
} big_spawn_options;
typedef union {
  tcr_adopt_options options;
  unsigned char bytes[sizeof(tcr_adopt_options) + EXTRA];
} big_adopt_options;

static void manager_options_versioning(void) {
  tcr_manager* m = NULL;
  tcr_manager_options o;
  tcr_manager_options_init(&o);
  o.size = sizeof o - 1;
  CHECK_STATUS(tcr_manager_create(&o, &m), TCR_STEP_BadArgument);
  CHECK(m == NULL); /* *out is set on TCR_OK only */
  o.size = 0;
  CHECK_STATUS(tcr_manager_create(&o, &m), TCR_STEP_BadArgument);
  CHECK(m == NULL);
  /* A garbage size (a struct nobody initialized) is refused without reading past the struct. */
  o.size = (size_t)-1;
  CHECK_STATUS(tcr_manager_create(&o, &m), TCR_STEP_BadArgument);
  o.size = sizeof o + 4097;
  CHECK_STATUS(tcr_manager_create(&o, &m), TCR_STEP_BadArgument);
  CHECK(m == NULL);

  big_manager_options big;
  memset(&big, 0, sizeof big);
  tcr_manager_options_init(&big.options);
  big.options.size = sizeof big.bytes;
  CHECK_STATUS(tcr_manager_create(&big.options, &m), TCR_OK);
  CHECK(m != NULL);
  tcr_manager_destroy(m);
  m = NULL;

  big.bytes[sizeof(tcr_manager_options) + EXTRA - 1] = 1; /* the last extra byte */
  CHECK_STATUS(tcr_manager_create(&big.options, &m), TCR_STEP_BadArgument);
  CHECK(m == NULL);
  big.bytes[sizeof(tcr_manager_options) + EXTRA - 1] = 0;
  big.bytes[sizeof(tcr_manager_options)] = 0x80; /* the first */
  CHECK_STATUS(tcr_manager_create(&big.options, &m), TCR_STEP_BadArgument);
  CHECK(m == NULL);
  /* A non-zero byte beyond the given size is not read. */
  big.options.size = sizeof(tcr_manager_options);
  CHECK_STATUS(tcr_manager_create(&big.options, &m), TCR_OK);
  tcr_manager_destroy(m);
}

static void spawn_and_adopt_options_versioning(void) {
  tcr_manager* m = NULL;
  if (!CHECK_STATUS(tcr_manager_create(NULL, &m), TCR_OK)) return;
  int arg = 7;
  void* result = NULL;
  tcr_thread t;

  tcr_spawn_options s;
  tcr_spawn_options_init(&s);
  s.size = sizeof s - 1;
  CHECK_STATUS(tcr_spawn(m, "short", returns_argument, &arg, &s, &t), TCR_STEP_BadArgument);

  big_spawn_options big;
  memset(&big, 0, sizeof big);
  tcr_spawn_options_init(&big.options);
  big.options.size = sizeof big.bytes;
  if (CHECK_STATUS(tcr_spawn(m, "bigger", returns_argument, &arg, &big.options, &t), TCR_OK)) {
    CHECK_STATUS(tcr_join(m, t, &result), TCR_OK);
    CHECK(result == &arg);
  }
  big.bytes[sizeof(tcr_spawn_options) + 3] = 9;
  CHECK_STATUS(tcr_spawn(m, "dirty", returns_argument, &arg, &big.options, &t),
               TCR_STEP_BadArgument);

  tcr_adopt_options a;
  tcr_adopt_options_init(&a);
  a.size = sizeof a - 1;
  CHECK_STATUS(tcr_adopt_current_thread(m, "short", &a, NULL), TCR_STEP_BadArgument);
  CHECK(tcr_current() == NULL);
  big_adopt_options biga;
  memset(&biga, 0, sizeof biga);
  tcr_adopt_options_init(&biga.options);
  biga.options.size = sizeof biga.bytes;
  biga.bytes[sizeof biga.bytes - 1] = 1;
  CHECK_STATUS(tcr_adopt_current_thread(m, "dirty", &biga.options, NULL), TCR_STEP_BadArgument);
  CHECK(tcr_current() == NULL);
  biga.bytes[sizeof biga.bytes - 1] = 0;
  tcr_self* self = NULL;
  if (CHECK_STATUS(tcr_adopt_current_thread(m, "bigger", &biga.options, &self), TCR_OK)) {
    CHECK(self != NULL && self == tcr_current());
    CHECK_STATUS(tcr_release_current_thread(m), TCR_OK);
    CHECK(tcr_current() == NULL);
  }
  tcr_manager_destroy(m);
}

static void stats_versioning(void) {
  tcr_manager* m = NULL;
  if (!CHECK_STATUS(tcr_manager_create(NULL, &m), TCR_OK)) return;
  tcr_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st - 1;
  CHECK_STATUS(tcr_manager_stats(m, &st), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_manager_stats(m, NULL), TCR_STEP_BadArgument);
  st.size = sizeof st;
  CHECK_STATUS(tcr_manager_stats(m, &st), TCR_OK);
  CHECK(st.size == sizeof st);
  tcr_resource_counts rc;
  memset(&rc, 0, sizeof rc);
  rc.size = sizeof rc - 1;
  CHECK_STATUS(tcr_resource_counts_read(&rc), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_resource_counts_read(NULL), TCR_STEP_BadArgument);
  tcr_manager_destroy(m);
}

int main(void) {
  versions();
  step_names();
  error_state();
  defaults();
  manager_options_versioning();
  spawn_and_adopt_options_versioning();
  stats_versioning();
  return check_done();
}
