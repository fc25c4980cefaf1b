/* The rest of a thread's record (its alternate signal stack, its Mach port) and the exception
 * listener's counters, through the C API. */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"

static void* inspect_self(tcr_self* self, void* argument) {
  (void)argument;
  size_t size = 0;
  char* low = tcr_self_alt_stack(self, &size);
  int ok = low != NULL && size >= 4096;
  /* Not the thread's stack: a mapping of its own, or a part of the stack mapping below it. */
  char* stack_low = tcr_self_stack_low(self);
  char* stack_high = tcr_self_stack_high(self);
  ok = ok && (low + size <= stack_low || low >= stack_high);
  ok = ok && tcr_self_alt_stack(self, NULL) == low;
  ok = ok && tcr_self_mach_port(self) == 0; /* Linux, no PortSpace */
  return (void*)(uintptr_t)ok;
}

static atomic_int g_wrote;

static void* write_pages(tcr_self* self, void* argument) {
  (void)self;
  char* base = argument;
  const long page = sysconf(_SC_PAGESIZE);
  base[0] = 1;
  base[3 * page] = 1;
  atomic_store(&g_wrote, 1);
  return NULL;
}

int main(void) {
  CHECK(tcr_self_alt_stack(NULL, NULL) == NULL);
  size_t size = 7;
  CHECK(tcr_self_alt_stack(NULL, &size) == NULL && size == 0);
  CHECK(tcr_self_mach_port(NULL) == 0);

  tcr_manager* m = NULL;
  if (!CHECK_STATUS(tcr_manager_create(NULL, &m), TCR_OK)) return check_done();
  tcr_thread t;
  void* result = NULL;
  CHECK_STATUS(tcr_spawn(m, "inspect", inspect_self, NULL, NULL, &t), TCR_OK);
  CHECK_STATUS(tcr_join(m, t, &result), TCR_OK);
  CHECK(result == (void*)1);

  /* The listener's counters: bad sizes refused; a Listener region's faults counted. */
  CHECK_STATUS(tcr_listener_stats_read(NULL), TCR_STEP_BadArgument);
  tcr_listener_stats stats;
  stats.size = sizeof stats - 1;
  CHECK_STATUS(tcr_listener_stats_read(&stats), TCR_STEP_BadArgument);
  stats.size = sizeof stats;
  CHECK_STATUS(tcr_listener_stats_read(&stats), TCR_OK);
  CHECK(stats.size == sizeof stats);
  const uint64_t messages_before = stats.messages;
  if (tcr_best_trap_mode() >= TCR_TRAP_LISTENER) {
    const long page = sysconf(_SC_PAGESIZE);
    char* base = mmap(NULL, 8 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    CHECK(base != MAP_FAILED);
    tcr_region* region = NULL;
    if (CHECK_STATUS(tcr_region_create(base, 8 * (size_t)page, TCR_TRAP_LISTENER, 0, &region),
                     TCR_OK)) {
      CHECK_STATUS(tcr_region_protect(region), TCR_OK);
      CHECK(tcr_listener_running() == 1);
      CHECK_STATUS(tcr_spawn(m, "writer", write_pages, base, NULL, &t), TCR_OK);
      CHECK_STATUS(tcr_join(m, t, NULL), TCR_OK);
      CHECK(atomic_load(&g_wrote) == 1);
      /* The listener counts a fault as resolved after the unprotect that already let the
       * writer go on: the writer may be joined before the second count lands. */
      WAIT_UNTIL(tcr_listener_stats_read(&stats) != TCR_OK ||
                 (stats.resolved >= 2 && stats.attributed >= 2));
      CHECK_STATUS(tcr_listener_stats_read(&stats), TCR_OK);
      CHECK(stats.messages >= messages_before + 2);
      CHECK(stats.resolved >= 2);
      CHECK(stats.attributed >= 2); /* the writer is a tcr thread */
      tcr_region_destroy(region);
    }
    munmap(base, 8 * (size_t)page);
  } else {
    fprintf(stderr, "extras: no Listener mode on this kernel; its counters not exercised\n");
  }
  tcr_manager_destroy(m);
  return check_done();
}
