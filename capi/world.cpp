// tcr.h's stop-the-world and inspection: the stopped world's list, snapshots, stats, the
// process's resource counts and fd dump, tcr's signals.
#include <cstdio>
#include <cstring>
#include <string>

#include "capi/handles.h"
#include "runtime/resources.h"
#include "threads/stop_world.h"

namespace tcr::capi {
namespace {

static_assert(TCR_STOP_SUSPENDED == static_cast<int>(StopKind::Suspended) &&
                  TCR_STOP_BLOCKING == static_cast<int>(StopKind::Blocking) &&
                  TCR_STOP_EXITING == static_cast<int>(StopKind::Exiting),
              "tcr_stop_kind and tcr::StopKind disagree");

}  // namespace
}  // namespace tcr::capi

using namespace tcr;
using namespace tcr::capi;

extern "C" {

tcr_status tcr_suspend_all(tcr_manager* manager, tcr_world* world) {
  TCR_NEED_MANAGER(manager, "tcr_suspend_all");
  if (world == nullptr) return bad_argument("tcr_suspend_all: NULL world");
  return guarded("tcr_suspend_all", [&] {
    Result<StoppedWorld> w = manager->manager->suspend_all();
    if (!w) return fail_with(w.error());
    world->count = w->threads().size();
    world->epoch = w->epoch();
    world->depth = w->depth();
    world->opaque_ = w->threads().data();  // the manager's list: valid until the resume
    return TCR_OK;
  });
}

tcr_status tcr_world_thread(const tcr_world* world, size_t index, tcr_stopped_thread* out) {
  // Allocates nothing and takes no lock: called while the world is stopped.
  if (world == nullptr || out == nullptr) return bad_argument("tcr_world_thread: NULL argument");
  if (index >= world->count) return bad_argument("tcr_world_thread: index >= world->count");
  const StoppedThread& s = static_cast<const StoppedThread*>(world->opaque_)[index];
  out->self = to_self(*s.tcr);
  out->id = s.id;
  out->tid = s.tid;
  out->kind = static_cast<tcr_stop_kind>(s.kind);
  out->stack_low = s.stack_low;
  out->stack_high = s.stack_high;
  out->registers = s.registers.words;
  out->register_count = s.registers.count;
  out->sp = s.registers.sp;
  out->pc = s.registers.pc;
  return TCR_OK;
}

tcr_status tcr_resume_all(tcr_manager* manager) {
  TCR_NEED_MANAGER(manager, "tcr_resume_all");
  return guarded("tcr_resume_all", [&] { return status_of(manager->manager->resume_all()); });
}

int tcr_world_stopped_by_caller(const tcr_manager* manager) {
  return manager != nullptr && manager->manager && manager->manager->world_stopped_by_caller();
}

tcr_status tcr_snapshot(const tcr_manager* manager, tcr_thread_info* infos, size_t capacity,
                        size_t* count) {
  TCR_NEED_MANAGER(manager, "tcr_snapshot");
  if (count == nullptr) return bad_argument("tcr_snapshot: NULL count");
  if (infos == nullptr && capacity > 0) return bad_argument("tcr_snapshot: NULL infos");
  return guarded("tcr_snapshot", [&] {
    Result<std::vector<ThreadInfo>> list = manager->manager->snapshot();
    if (!list) return fail_with(list.error());
    *count = list->size();
    for (std::size_t i = 0; i < list->size() && i < capacity; ++i) {
      const ThreadInfo& in = (*list)[i];
      tcr_thread_info& o = infos[i];
      std::memset(&o, 0, sizeof o);
      o.id = in.id;
      std::snprintf(o.name, sizeof o.name, "%s", in.name.c_str());
      o.state = static_cast<tcr_state>(in.state);
      o.tid = in.tid;
      o.handle_fd = in.handle_fd;
      o.detached = in.detached;
      o.adopted = in.adopted;
      o.gc_registered = in.gc_registered;
    }
    return TCR_OK;
  });
}

tcr_status tcr_for_each(const tcr_manager* manager, void (*fn)(const tcr_self* self, void* data),
                        void* data) {
  TCR_NEED_MANAGER(manager, "tcr_for_each");
  if (fn == nullptr) return bad_argument("tcr_for_each: NULL function");
  return guarded("tcr_for_each", [&] {
    manager->manager->for_each([fn, data](const Tcr& t) { fn(to_self(t), data); });
    return TCR_OK;
  });
}

tcr_status tcr_manager_stats(const tcr_manager* manager, tcr_stats* stats) {
  TCR_NEED_MANAGER(manager, "tcr_manager_stats");
  if (!output_fits(stats, sizeof(tcr_stats))) {
    return bad_argument("tcr_manager_stats: NULL stats, or stats.size too small");
  }
  const ManagerStats s = manager->manager->stats();
  tcr_stats full{};
  full.size = sizeof full;
  full.spawned = s.spawned;
  full.adopted = s.adopted;
  full.reaped = s.reaped;
  full.live = s.live;
  full.dead_unreaped = s.dead_unreaped;
  full.records = s.records;
  full.free_records = s.free_records;
  full.cached_stacks = s.cached_stacks;
  full.extra_handles_closed = s.extra_handles_closed;
  write_versioned(stats, full);
  return TCR_OK;
}

tcr_status tcr_resource_counts_read(tcr_resource_counts* counts) {
  if (!output_fits(counts, sizeof(tcr_resource_counts))) {
    return bad_argument("tcr_resource_counts_read: NULL counts, or counts.size too small");
  }
  return guarded("tcr_resource_counts_read", [&] {
    const ResourceCounts c = ResourceLedger().snapshot();
    tcr_resource_counts full{};
    full.size = sizeof full;
    full.fds = c.fds;
    full.pidfds = c.pidfds;
    full.maps = c.maps;
    full.threads = c.threads;
    full.rss_kb = c.rss_kb;
    write_versioned(counts, full);
    return TCR_OK;
  });
}

tcr_status tcr_resource_dump(char* buffer, size_t capacity, size_t* length) {
  if (buffer == nullptr && capacity > 0) return bad_argument("tcr_resource_dump: NULL buffer");
  return guarded("tcr_resource_dump", [&] {
    const std::string text = ResourceLedger().dump();
    if (capacity > 0) {
      const std::size_t n = text.size() < capacity - 1 ? text.size() : capacity - 1;
      std::memcpy(buffer, text.data(), n);
      buffer[n] = '\0';
    }
    if (length != nullptr) *length = text.size();
    return TCR_OK;
  });
}

void tcr_signals(int* suspend_signal, int* interrupt_signal) {
  const ManagerSignals s = ThreadManager::signals();
  if (suspend_signal != nullptr) *suspend_signal = s.suspend;
  if (interrupt_signal != nullptr) *interrupt_signal = s.interrupt;
}

}  // extern "C"
