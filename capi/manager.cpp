// tcr.h's managers and threads: create and destroy, spawn, join, detach, signal, adoption. Each
// entry point checks its arguments, calls the C++ API and turns its Error into a status.
#include <chrono>
#include <cstring>
#include <string_view>

#include "capi/handles.h"

namespace tcr::capi {
namespace {

// The first version of each option struct is the one this library was born with.
constexpr std::size_t kManagerOptionsV1 = sizeof(tcr_manager_options);
constexpr std::size_t kSpawnOptionsV1 = sizeof(tcr_spawn_options);
constexpr std::size_t kAdoptOptionsV1 = sizeof(tcr_adopt_options);

std::string_view name_of(const char* name) { return name != nullptr ? name : ""; }

Result<GcRegistration> registration_of(const tcr_gc_registration& gc) {
  switch (enum_value(gc)) {
    case TCR_GC_INHERIT: return GcRegistration::Inherit;
    case TCR_GC_REGISTER: return GcRegistration::Register;
    case TCR_GC_DONT_REGISTER: return GcRegistration::DontRegister;
  }
  return std::unexpected(Error{Step::BadArgument, 0, {}, nullptr, "unknown tcr_gc_registration"});
}

// The C options as the C++ ones: the hooks become closures over the caller's function and data.
Result<ManagerOptions> manager_options_of(const tcr_manager_options& c) {
  ManagerOptions o;
  switch (enum_value(c.handle_mode)) {
    case TCR_HANDLE_AUTO: o.handle_mode = HandleModeChoice::Auto; break;
    case TCR_HANDLE_PIDFD: o.handle_mode = HandleModeChoice::Pidfd; break;
    case TCR_HANDLE_TGKILL: o.handle_mode = HandleModeChoice::Tgkill; break;
    default:
      return std::unexpected(Error{Step::BadArgument, 0, {}, nullptr, "unknown tcr_handle_mode"});
  }
  switch (enum_value(c.gc)) {
    case TCR_GC_TCR: o.gc = true; o.gc_owner = GcOwner::Tcr; break;
    case TCR_GC_RUNTIME: o.gc = true; o.gc_owner = GcOwner::Runtime; break;
    case TCR_GC_NONE: o.gc = false; break;
    default:
      return std::unexpected(Error{Step::BadArgument, 0, {}, nullptr, "unknown tcr_gc_owner"});
  }
  if (c.stack_size != 0) o.stack_size = c.stack_size;  // 0: the default, 1 MiB
  o.cached_stacks = c.cached_stacks;
  o.stop_timeout = std::chrono::milliseconds(c.stop_timeout_ms);
  if (tcr_start_hook fn = c.start_hook) {
    void* data = c.start_hook_data;
    o.start_hooks.push_back([fn, data](Tcr& self) { return fn(to_self(self), data); });
  }
  if (tcr_exit_hook fn = c.exit_hook) {
    void* data = c.exit_hook_data;
    // tcr.h: an adopted thread runs neither hook (it is already the runtime's); the C++ API
    // runs exit hooks on every exiting thread, so the C one skips adopted threads here.
    o.exit_hooks.push_back([fn, data](Tcr& self) {
      if (!self.adopted()) fn(to_self(self), data);
    });
  }
  if (tcr_notify_hook fn = c.notify_hook) {
    void* data = c.notify_hook_data;
    o.interrupt_notify = [fn, data](std::uint64_t id, void* context) { fn(id, context, data); };
  }
  if (tcr_trampoline fn = c.trampoline) {
    void* data = c.trampoline_data;
    o.interrupt_trampoline = [fn, data](Tcr& self, void (*run)(void*), void* closure) {
      fn(to_self(self), run, closure, data);
    };
  }
  return o;
}

}  // namespace
}  // namespace tcr::capi

using namespace tcr;
using namespace tcr::capi;

extern "C" {

void tcr_manager_options_init(tcr_manager_options* options) {
  if (options == nullptr) return;
  std::memset(options, 0, sizeof *options);
  options->size = sizeof *options;
  options->handle_mode = TCR_HANDLE_AUTO;
  options->gc = TCR_GC_TCR;
  options->stack_size = ManagerOptions{}.stack_size;
  options->cached_stacks = ManagerOptions{}.cached_stacks;
}

tcr_status tcr_manager_create(const tcr_manager_options* options, tcr_manager** out) {
  return guarded("tcr_manager_create", [&] {
    if (out == nullptr) return bad_argument("tcr_manager_create: NULL out");
    tcr_manager_options c;
    tcr_manager_options_init(&c);
    if (!read_versioned(options, kManagerOptionsV1, &c)) {
      return bad_argument("tcr_manager_create: options.size is not that of a tcr_manager_options");
    }
    Result<ManagerOptions> o = manager_options_of(c);
    if (!o) return fail_with(o.error());
    std::unique_ptr<tcr_manager> box(new tcr_manager);
    Result<std::unique_ptr<ThreadManager>> m = ThreadManager::create(std::move(*o));
    if (!m) return fail_with(m.error());
    box->manager = std::move(*m);
    *out = box.release();
    return TCR_OK;
  });
}

void tcr_manager_destroy(tcr_manager* manager) {
  // The ThreadManager's destructor shuts it down; it throws nothing.
  delete manager;
}

tcr_status tcr_shutdown(tcr_manager* manager) {
  TCR_NEED_MANAGER(manager, "tcr_shutdown");
  return guarded("tcr_shutdown", [&] { return status_of(manager->manager->shutdown()); });
}

tcr_status tcr_reap(tcr_manager* manager, int wait, size_t* reaped) {
  TCR_NEED_MANAGER(manager, "tcr_reap");
  return guarded("tcr_reap", [&] {
    Result<std::size_t> n = manager->manager->reap(wait != 0 ? ThreadManager::Reap::WaitForRunning
                                                             : ThreadManager::Reap::Exited);
    if (!n) return fail_with(n.error());
    if (reaped != nullptr) *reaped = *n;
    return TCR_OK;
  });
}

size_t tcr_trim(tcr_manager* manager) {
  if (manager == nullptr || !manager->manager) return 0;
  return manager->manager->trim();
}

tcr_handle_mode tcr_manager_handle_mode(const tcr_manager* manager) {
  if (manager == nullptr || !manager->manager) return TCR_HANDLE_AUTO;
  return manager->manager->handle_mode() == HandleMode::Pidfd ? TCR_HANDLE_PIDFD
                                                              : TCR_HANDLE_TGKILL;
}

void tcr_spawn_options_init(tcr_spawn_options* options) {
  if (options == nullptr) return;
  std::memset(options, 0, sizeof *options);
  options->size = sizeof *options;
  options->gc = TCR_GC_INHERIT;
}

tcr_status tcr_spawn(tcr_manager* manager, const char* name, tcr_thread_fn fn, void* argument,
                     const tcr_spawn_options* options, tcr_thread* out) {
  TCR_NEED_MANAGER(manager, "tcr_spawn");
  if (fn == nullptr) return bad_argument("tcr_spawn: NULL function");
  return guarded("tcr_spawn", [&] {
    tcr_spawn_options c;
    tcr_spawn_options_init(&c);
    if (!read_versioned(options, kSpawnOptionsV1, &c)) {
      return bad_argument("tcr_spawn: options.size is not that of a tcr_spawn_options");
    }
    if (out == nullptr && c.detached == 0) {
      return bad_argument("tcr_spawn: NULL out for a joinable thread (nobody could join it)");
    }
    Result<GcRegistration> gc = registration_of(c.gc);
    if (!gc) return fail_with(gc.error());
    SpawnOptions o;
    o.stack_size = c.stack_size;
    o.detached = c.detached != 0;
    o.gc = *gc;
    o.argument = argument;
    Result<ThreadRef> ref = manager->manager->spawn(
        name_of(name), [fn](Tcr& self) { return fn(to_self(self), self.argument()); }, o);
    if (!ref) return fail_with(ref.error());
    if (out != nullptr) *out = to_thread(*ref);
    return TCR_OK;
  });
}

tcr_status tcr_join_timed(tcr_manager* manager, tcr_thread thread, uint64_t timeout_ns,
                          void** result) {
  TCR_NEED_MANAGER(manager, "tcr_join");
  return guarded("tcr_join", [&] {
    const ThreadRef ref = from_thread(thread);
    Result<void*> r = timeout_ns == UINT64_MAX
                          ? manager->manager->join(ref)
                          : manager->manager->join_for(ref, nanoseconds_of(timeout_ns));
    if (!r) return fail_with(r.error());
    if (result != nullptr) *result = *r;
    return TCR_OK;
  });
}

tcr_status tcr_join(tcr_manager* manager, tcr_thread thread, void** result) {
  return tcr_join_timed(manager, thread, UINT64_MAX, result);
}

tcr_status tcr_detach(tcr_manager* manager, tcr_thread thread) {
  TCR_NEED_MANAGER(manager, "tcr_detach");
  return guarded("tcr_detach", [&] { return status_of(manager->manager->detach(from_thread(thread))); });
}

tcr_status tcr_signal(tcr_manager* manager, tcr_thread thread, int sig) {
  TCR_NEED_MANAGER(manager, "tcr_signal");
  return guarded("tcr_signal",
                 [&] { return status_of(manager->manager->signal(from_thread(thread), sig)); });
}

tcr_status tcr_thread_exited(tcr_manager* manager, tcr_thread thread, int* exited) {
  TCR_NEED_MANAGER(manager, "tcr_thread_exited");
  if (exited == nullptr) return bad_argument("tcr_thread_exited: NULL exited");
  return guarded("tcr_thread_exited", [&] {
    Result<bool> r = manager->manager->exited(from_thread(thread));
    if (!r) return fail_with(r.error());
    *exited = *r ? 1 : 0;
    return TCR_OK;
  });
}

void tcr_adopt_options_init(tcr_adopt_options* options) {
  if (options == nullptr) return;
  std::memset(options, 0, sizeof *options);
  options->size = sizeof *options;
  options->gc = TCR_GC_INHERIT;
}

tcr_status tcr_adopt_current_thread(tcr_manager* manager, const char* name,
                                    const tcr_adopt_options* options, tcr_self** out) {
  TCR_NEED_MANAGER(manager, "tcr_adopt_current_thread");
  return guarded("tcr_adopt_current_thread", [&] {
    tcr_adopt_options c;
    tcr_adopt_options_init(&c);
    if (!read_versioned(options, kAdoptOptionsV1, &c)) {
      return bad_argument("tcr_adopt_current_thread: options.size is not that of a tcr_adopt_options");
    }
    Result<GcRegistration> gc = registration_of(c.gc);
    if (!gc) return fail_with(gc.error());
    AdoptOptions o;
    o.gc = *gc;
    Result<Tcr*> self = manager->manager->adopt_current_thread(name_of(name), o);
    if (!self) return fail_with(self.error());
    if (out != nullptr) *out = to_self(*self);
    return TCR_OK;
  });
}

tcr_status tcr_release_current_thread(tcr_manager* manager) {
  TCR_NEED_MANAGER(manager, "tcr_release_current_thread");
  return guarded("tcr_release_current_thread",
                 [&] { return status_of(manager->manager->release_current_thread()); });
}

tcr_status tcr_current_thread(const tcr_manager* manager, tcr_thread* out) {
  TCR_NEED_MANAGER(manager, "tcr_current_thread");
  if (out == nullptr) return bad_argument("tcr_current_thread: NULL out");
  return guarded("tcr_current_thread", [&] {
    Result<ThreadRef> ref = manager->manager->current_ref();
    if (!ref) return fail_with(ref.error());
    *out = to_thread(*ref);
    return TCR_OK;
  });
}

}  // extern "C"
