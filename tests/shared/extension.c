/* A runtime extension that uses tcr through its C API, built three times by
 * tests/shared/CMakeLists.txt: as ext_a and ext_b, both linking libtcr.so, and as ext_static,
 * which links libtcr.a and so carries a copy of tcr of its own. EXT(name) gives each build's
 * functions their own names, so the host can tell them apart after dlopen(RTLD_LOCAL). */
#include <stddef.h>

#include "tcr.h"

#define EXT_CAT2(a, b) a##_##b
#define EXT_CAT(a, b) EXT_CAT2(a, b)
#define EXT(name) EXT_CAT(EXTENSION_NAME, name)

/* 1 if the calling thread has a tcr record in this extension's tcr. */
__attribute__((visibility("default"))) int EXT(has_record)(void) { return tcr_current() != NULL; }

/* The tcr_version this extension calls. */
__attribute__((visibility("default"))) void* EXT(version_function)(void) {
  return (void*)&tcr_version;
}

__attribute__((visibility("default"))) int EXT(interrupt_signal)(void) {
  int suspend = 0, interrupt = 0;
  tcr_signals(&suspend, &interrupt);
  return interrupt;
}

static void* call_probe(tcr_self* self, void* argument) {
  (void)self;
  int (*probe)(void) = (int (*)(void))(size_t)argument;
  return (void*)(size_t)probe();
}

/* Spawns a thread with this extension's tcr and answers what `probe` answered on it: -1 if the
 * manager or the thread could not be made. */
__attribute__((visibility("default"))) int EXT(spawn_and_probe)(int (*probe)(void)) {
  tcr_manager_options options;
  tcr_manager_options_init(&options);
  options.gc = TCR_GC_NONE;
  tcr_manager* manager = NULL;
  if (tcr_manager_create(&options, &manager) != TCR_OK) return -1;
  tcr_thread thread;
  void* result = NULL;
  int answer = -1;
  if (tcr_spawn(manager, "probe", call_probe, (void*)(size_t)probe, NULL, &thread) == TCR_OK &&
      tcr_join(manager, thread, &result) == TCR_OK) {
    answer = (int)(size_t)result;
  }
  tcr_manager_destroy(manager);
  return answer;
}
