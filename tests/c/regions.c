/* GC traps through the C API: protected regions in each trap mode (dirty pages, re-arming,
 * unprotect, accessors, trap counts, bad inputs) and a spawned thread's stack overflow recovered
 * by tcr's fault handlers. */
#define _GNU_SOURCE
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"

#define PAGES 16

static size_t page(void) { return (size_t)sysconf(_SC_PAGESIZE); }

static char* map_pages(size_t n) {
  void* p = mmap(NULL, n * page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(p != MAP_FAILED);
  return p == MAP_FAILED ? NULL : p;
}

static const char* mode_name(tcr_trap_mode mode) {
  switch (mode) {
    case TCR_TRAP_BEST: return "best";
    case TCR_TRAP_SIGNAL: return "signal";
    case TCR_TRAP_LISTENER: return "listener";
    case TCR_TRAP_ASYNC: return "async";
  }
  return "?";
}

static int dirty_is(tcr_region* r, const size_t* want, size_t n) {
  const size_t* pages = NULL;
  size_t count = (size_t)-1;
  if (!CHECK_STATUS(tcr_region_collect_dirty(r, &pages, &count), TCR_OK)) return 0;
  if (count != n) {
    fprintf(stderr, "  collect_dirty: %zu pages, expected %zu\n", count, n);
    return 0;
  }
  for (size_t i = 0; i < n; ++i) {
    if (pages[i] != want[i]) return 0;
  }
  return 1;
}

/* Writes pages 1 and 5 on a tcr thread, so that its own trap count can be read too. */
static char* g_base;
static atomic_ulong g_self_traps;
static void* write_pages(tcr_self* self, void* argument) {
  (void)argument;
  /* The count is the record's, kept when a record is reused (threads/record.h): what this
   * thread took is the difference. */
  const uint64_t at_start = tcr_self_traps(self);
  g_base[1 * page()] = 1;
  g_base[5 * page() + 17] = 2;
  g_base[5 * page() + 18] = 3; /* the same page again: no second trap */
  atomic_store(&g_self_traps, tcr_self_traps(self) - at_start);
  return NULL;
}

/* Exercises a region in `mode`, which must have been created in it. */
static void exercise(tcr_manager* m, tcr_region* r, tcr_trap_mode mode, char* base) {
  fprintf(stderr, "  exercising %s mode\n", mode_name(mode));
  CHECK(tcr_region_mode(r) == mode);
  CHECK(tcr_region_pages(r) == PAGES);
  CHECK(tcr_region_page_size(r) == page());
  CHECK(tcr_region_traps(r) == 0);
  CHECK(dirty_is(r, NULL, 0)); /* not armed yet: nothing tracked */
  CHECK_STATUS(tcr_region_protect(r), TCR_OK);
  g_base = base;
  atomic_store(&g_self_traps, 99);
  tcr_thread t;
  if (CHECK_STATUS(tcr_spawn(m, "writer", write_pages, NULL, NULL, &t), TCR_OK)) {
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
  }
  const size_t one_and_five[] = {1, 5};
  CHECK(dirty_is(r, one_and_five, 2));
  CHECK(dirty_is(r, NULL, 0)); /* re-armed: nothing new */
  if (mode == TCR_TRAP_SIGNAL || mode == TCR_TRAP_LISTENER) {
    CHECK(tcr_region_traps(r) == 2);
    CHECK(atomic_load(&g_self_traps) == 2);
  } else {
    CHECK(tcr_region_traps(r) == 0); /* Async takes no trap */
    CHECK(atomic_load(&g_self_traps) == 0);
  }
  /* Re-armed by the collect: a write on this thread is seen again. */
  base[5 * page()] = 4;
  base[15 * page() + page() - 1] = 5;
  const size_t five_and_fifteen[] = {5, 15};
  CHECK(dirty_is(r, five_and_fifteen, 2));
  /* The data is what was written. */
  CHECK(base[1 * page()] == 1 && base[5 * page() + 17] == 2 && base[5 * page() + 18] == 3);
  CHECK(base[5 * page()] == 4);
  /* Unprotected: writable and untracked until the next protect. */
  CHECK_STATUS(tcr_region_unprotect(r), TCR_OK);
  base[2 * page()] = 1;
  CHECK(dirty_is(r, NULL, 0));
  CHECK_STATUS(tcr_region_protect(r), TCR_OK);
  base[6 * page()] = 1;
  const size_t six[] = {6};
  CHECK(dirty_is(r, six, 1));
  CHECK_STATUS(tcr_region_unprotect(r), TCR_OK);
}

static void region_modes(tcr_manager* m) {
  const tcr_trap_mode best = tcr_best_trap_mode();
  CHECK(best == TCR_TRAP_SIGNAL || best == TCR_TRAP_LISTENER || best == TCR_TRAP_ASYNC);
  fprintf(stderr, "  best trap mode here: %s\n", mode_name(best));
  char* base = map_pages(PAGES);
  if (base == NULL) return;

  /* TCR_TRAP_BEST: the best mode. */
  tcr_region* r = NULL;
  if (CHECK_STATUS(tcr_region_create(base, PAGES * page(), TCR_TRAP_BEST, 1, &r), TCR_OK)) {
    CHECK(tcr_region_mode(r) == best);
    exercise(m, r, best, base);
    tcr_region_destroy(r);
  }
  r = NULL;
  if (CHECK_STATUS(tcr_region_create(base, PAGES * page(), TCR_TRAP_BEST, 0, &r), TCR_OK)) {
    CHECK(tcr_region_mode(r) == best);
    tcr_region_destroy(r);
  }

  const tcr_trap_mode modes[] = {TCR_TRAP_SIGNAL, TCR_TRAP_LISTENER, TCR_TRAP_ASYNC};
  for (size_t i = 0; i < 3; ++i) {
    const tcr_trap_mode mode = modes[i];
    /* fall_back=1: this mode, or one below it (the next best) when it is unavailable. */
    r = NULL;
    if (CHECK_STATUS(tcr_region_create(base, PAGES * page(), mode, 1, &r), TCR_OK)) {
      const tcr_trap_mode got = tcr_region_mode(r);
      CHECK(got <= mode && got >= TCR_TRAP_SIGNAL);
      if (mode <= best) CHECK(got == mode || mode != best);
      exercise(m, r, got, base);
      tcr_region_destroy(r);
    }
    /* fall_back=0: exactly this mode, or ModeUnavailable. Above the best: always unavailable. */
    r = NULL;
    const tcr_status s = tcr_region_create(base, PAGES * page(), mode, 0, &r);
    if (mode > best) {
      CHECK_STATUS(s, TCR_STEP_ModeUnavailable);
      CHECK(r == NULL);
    } else if (mode == best || mode == TCR_TRAP_SIGNAL) {
      if (CHECK_STATUS(s, TCR_OK)) {
        CHECK(tcr_region_mode(r) == mode);
        tcr_region_destroy(r);
      }
    } else if (s == TCR_OK) {
      CHECK(tcr_region_mode(r) == mode);
      tcr_region_destroy(r);
    } else {
      CHECK_STATUS(s, TCR_STEP_ModeUnavailable);
    }
  }
  munmap(base, PAGES * page());
}

static void bad_regions(void) {
  char* base = map_pages(8);
  if (base == NULL) return;
  tcr_region* r = NULL;
  CHECK_STATUS(tcr_region_create(base + 1, page(), TCR_TRAP_SIGNAL, 1, &r), TCR_STEP_BadArgument);
  CHECK(r == NULL);
  CHECK_STATUS(tcr_region_create(base, page() + 1, TCR_TRAP_SIGNAL, 1, &r), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_region_create(base, 0, TCR_TRAP_SIGNAL, 1, &r), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_region_create(NULL, page(), TCR_TRAP_SIGNAL, 1, &r), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_region_create(base, page(), TCR_TRAP_SIGNAL, 1, NULL), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_region_create(base, page(), (tcr_trap_mode)7, 1, &r), TCR_STEP_BadArgument);
  CHECK(strstr(tcr_error_message(), "tcr_trap_mode") != NULL);
  CHECK_STATUS(tcr_region_create(base, page(), (tcr_trap_mode)-2, 1, &r), TCR_STEP_BadArgument);
  CHECK(r == NULL);
  /* Overlapping a live region. */
  if (CHECK_STATUS(tcr_region_create(base + 2 * page(), 2 * page(), TCR_TRAP_SIGNAL, 1, &r), TCR_OK)) {
    tcr_region* again = NULL;
    CHECK_STATUS(tcr_region_create(base + 3 * page(), 2 * page(), TCR_TRAP_SIGNAL, 1, &again),
                 TCR_STEP_BadArgument);
    CHECK(again == NULL);
    tcr_region_destroy(r);
  }
  /* NULL regions. */
  const size_t* pages = NULL;
  size_t count = 0;
  CHECK_STATUS(tcr_region_protect(NULL), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_region_unprotect(NULL), TCR_STEP_BadArgument);
  CHECK_STATUS(tcr_region_collect_dirty(NULL, &pages, &count), TCR_STEP_BadArgument);
  CHECK(tcr_region_mode(NULL) == TCR_TRAP_BEST);
  CHECK(tcr_region_pages(NULL) == 0);
  CHECK(tcr_region_page_size(NULL) == 0);
  CHECK(tcr_region_traps(NULL) == 0);
  tcr_region_destroy(NULL); /* a no-op */
  r = NULL;
  if (CHECK_STATUS(tcr_region_create(base, page(), TCR_TRAP_BEST, 1, &r), TCR_OK)) {
    CHECK_STATUS(tcr_region_collect_dirty(r, NULL, &count), TCR_STEP_BadArgument);
    CHECK_STATUS(tcr_region_collect_dirty(r, &pages, NULL), TCR_STEP_BadArgument);
    tcr_region_destroy(r);
  }
  munmap(base, 8 * page());
}

/* ---- stack overflow ---- */

static volatile size_t g_depth_limit = SIZE_MAX;
__attribute__((noinline)) static size_t recurse(size_t depth) {
  volatile char frame[1024];
  frame[0] = (char)depth;
  frame[sizeof frame - 1] = (char)depth;
  if (depth >= g_depth_limit) return (size_t)frame[0];
  return recurse(depth + 1) + (size_t)frame[sizeof frame - 1];
}

static void* overflow(tcr_self* self, void* argument) {
  (void)self;
  (void)argument;
  return (void*)recurse(0);
}

static void* seven(tcr_self* self, void* argument) {
  (void)self;
  (void)argument;
  return (void*)(uintptr_t)7;
}

static void stack_overflow(tcr_manager* m) {
  tcr_spawn_options so;
  tcr_spawn_options_init(&so);
  so.stack_size = CHECK_SMALL_STACK;
  for (int i = 0; i < 3; ++i) { /* the cached stack comes back each time, its guard intact */
    tcr_thread t;
    if (!CHECK_STATUS(tcr_spawn(m, "deep", overflow, NULL, &so, &t), TCR_OK)) return;
    void* result = &result;
    CHECK_STATUS(tcr_join(m, t, &result), TCR_STEP_StackOverflow);
    CHECK(tcr_error_step() == TCR_STEP_StackOverflow);
    CHECK(result == &result);
    CHECK_STATUS(tcr_join(m, t, NULL), TCR_STEP_StaleThread);
    if (CHECK_STATUS(tcr_spawn(m, "next", seven, NULL, NULL, &t), TCR_OK)) {
      result = NULL;
      CHECK_STATUS(tcr_join(m, t, &result), TCR_OK);
      CHECK(result == (void*)(uintptr_t)7);
    }
  }
}

int main(void) {
  CHECK(tcr_fault_handlers_installed() == 0);
  CHECK_STATUS(tcr_install_fault_handlers(), TCR_OK);
  CHECK(tcr_fault_handlers_installed() == 1);
  CHECK_STATUS(tcr_install_fault_handlers(), TCR_OK); /* once per process: again is fine */
  tcr_manager* m = NULL;
  if (!CHECK_STATUS(tcr_manager_create(NULL, &m), TCR_OK)) return check_done();
  region_modes(m);
  bad_regions();
  stack_overflow(m);
  tcr_manager_destroy(m);
  return check_done();
}
