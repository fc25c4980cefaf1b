/* Two extensions loaded into one process share one tcr (issue 12): dlopen(RTLD_LOCAL) ext_a and
 * ext_b, which both link libtcr.so, and ext_static, which links libtcr.a. A thread that ext_a's
 * tcr spawned has a record in ext_b's tcr (the same one), and none in ext_static's copy, which is
 * the control: it shows the check can tell one tcr from two.
 * usage: tcr_two_extensions EXT_A EXT_B EXT_STATIC (paths of the three shared objects) */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;

#define EXPECT(cond)                                                   \
  do {                                                                 \
    if (!(cond)) {                                                     \
      fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                      \
    }                                                                  \
  } while (0)

typedef int (*int_fn)(void);
typedef void* (*ptr_fn)(void);
typedef int (*spawn_fn)(int_fn);

static void* open_extension(const char* path) {
  void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (handle == NULL) fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
  return handle;
}

static void* symbol(void* handle, const char* name) {
  void* p = dlsym(handle, name);
  if (p == NULL) fprintf(stderr, "dlsym %s: %s\n", name, dlerror());
  return p;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s EXT_A EXT_B EXT_STATIC\n", argv[0]);
    return 2;
  }
  void* a = open_extension(argv[1]);
  void* b = open_extension(argv[2]);
  void* s = open_extension(argv[3]);
  if (a == NULL || b == NULL || s == NULL) return 1;
  spawn_fn a_spawn;
  int_fn b_has_record, s_has_record, a_signal, b_signal;
  ptr_fn a_version, b_version, s_version;
  *(void**)&a_spawn = symbol(a, "ext_a_spawn_and_probe");
  *(void**)&b_has_record = symbol(b, "ext_b_has_record");
  *(void**)&s_has_record = symbol(s, "ext_static_has_record");
  *(void**)&a_signal = symbol(a, "ext_a_interrupt_signal");
  *(void**)&b_signal = symbol(b, "ext_b_interrupt_signal");
  *(void**)&a_version = symbol(a, "ext_a_version_function");
  *(void**)&b_version = symbol(b, "ext_b_version_function");
  *(void**)&s_version = symbol(s, "ext_static_version_function");
  if (!a_spawn || !b_has_record || !s_has_record || !a_signal || !b_signal || !a_version ||
      !b_version || !s_version) {
    return 1;
  }
  /* One libtcr.so behind both extensions; the static one calls its own copy. */
  EXPECT(a_version() == b_version());
  EXPECT(a_version() != s_version());
  /* A thread spawned through ext_a is a tcr thread for ext_b's code too... */
  EXPECT(a_spawn(b_has_record) == 1);
  /* ...and not for the extension that carries its own copy of tcr. */
  EXPECT(a_spawn(s_has_record) == 0);
  /* The process-wide state is one: ext_a's manager chose the signals, ext_b sees them. */
  EXPECT(a_signal() != 0);
  EXPECT(a_signal() == b_signal());
  /* The main thread is no tcr thread in either. */
  EXPECT(b_has_record() == 0);
  if (failures == 0) printf("two extensions, one tcr: OK\n");
  return failures == 0 ? 0 : 1;
}
