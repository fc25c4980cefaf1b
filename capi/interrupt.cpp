// tcr.h's process-interrupt, safe points, semaphores and blocking regions.
#include <new>

#include "capi/handles.h"
#include "runtime/machine_context.h"
#include "threads/stop_world.h"

namespace tcr::capi {
namespace {

// What a tcr_blocking holds between TCR_BLOCKING_BEGIN and END, in the caller's frame.
struct BlockingState {
  RegisterSet registers;
  Tcr* tcr;
};
static_assert(sizeof(BlockingState) <= sizeof(tcr_blocking) &&
                  alignof(BlockingState) <= alignof(tcr_blocking),
              "tcr_blocking is too small for a blocking region's state");

// An interrupt's data and what releases it: released when the last closure holding it goes.
struct OwnedData {
  void* data;
  void (*release)(void*);
  OwnedData(void* d, void (*r)(void*)) : data(d), release(r) {}
  ~OwnedData() {
    if (release != nullptr) release(data);
  }
  OwnedData(const OwnedData&) = delete;
  OwnedData& operator=(const OwnedData&) = delete;
};

}  // namespace
}  // namespace tcr::capi

using namespace tcr;
using namespace tcr::capi;

extern "C" {

tcr_status tcr_interrupt_owned(tcr_manager* manager, tcr_thread thread, tcr_interrupt_fn fn,
                               void* data, void (*release)(void* data), tcr_ticket** ticket) {
  // Every way out of this call that queues nothing releases the data before it records its
  // error, so that a release which itself calls tcr leaves the caller this call's error to read.
  auto refuse = [&](tcr_status (*report)(const char*), const char* what) {
    if (release != nullptr) release(data);
    return report(what);
  };
  constexpr auto out_of_memory = [](const char* what) {
    return fail_with(Error{Step::TcrAllocate, ENOMEM, {}, nullptr, what});
  };
  if (manager == nullptr || !manager->manager) {
    return refuse(bad_argument, "tcr_interrupt: NULL tcr_manager");
  }
  if (fn == nullptr) return refuse(bad_argument, "tcr_interrupt: NULL function");
  // The ticket's box first: once the closure is queued nothing may fail.
  std::unique_ptr<tcr_ticket> box;
  if (ticket != nullptr) {
    box.reset(new (std::nothrow) tcr_ticket);
    if (!box) return refuse(out_of_memory, "tcr_interrupt");
  }
  // Queues the closure; on an error the closure (and with it an owned data's last reference)
  // is gone before the error is recorded.
  auto queue = [&](auto closure) {
    return guarded("tcr_interrupt", [&] {
      Result<InterruptTicket> t =
          manager->manager->interrupt(from_thread(thread), std::move(closure));
      if (!t) return fail_with(t.error());
      if (ticket != nullptr) {
        box->ticket.emplace(std::move(*t));
        *ticket = box.release();
      }
      return TCR_OK;
    });
  };
  // Nothing to release: the closure holds two words (no allocation for it).
  if (release == nullptr) return queue([fn, data](Tcr& self) { fn(to_self(self), data); });
  // Owned from here: the closure holds the only reference, dropped after it ran or undelivered.
  std::shared_ptr<OwnedData> owned;
  try {
    owned = std::make_shared<OwnedData>(data, release);
  } catch (const std::bad_alloc&) {
    return refuse(out_of_memory, "tcr_interrupt");
  }
  return queue([fn, owned = std::move(owned)](Tcr& self) { fn(to_self(self), owned->data); });
}

tcr_status tcr_interrupt(tcr_manager* manager, tcr_thread thread, tcr_interrupt_fn fn, void* data,
                         tcr_ticket** ticket) {
  return tcr_interrupt_owned(manager, thread, fn, data, nullptr, ticket);
}

tcr_outcome tcr_ticket_outcome(const tcr_ticket* ticket) {
  if (ticket == nullptr || !ticket->ticket) return TCR_UNDELIVERED;
  switch (ticket->ticket->outcome()) {
    case InterruptOutcome::Pending: return TCR_PENDING;
    case InterruptOutcome::Delivered: return TCR_DELIVERED;
    case InterruptOutcome::Undelivered: break;
  }
  return TCR_UNDELIVERED;
}

tcr_status tcr_ticket_wait(const tcr_ticket* ticket) {
  if (ticket == nullptr || !ticket->ticket) return bad_argument("tcr_ticket_wait: NULL tcr_ticket");
  return guarded("tcr_ticket_wait", [&] { return status_of(ticket->ticket->wait()); });
}

void tcr_ticket_release(tcr_ticket* ticket) { delete ticket; }

size_t tcr_poll(void) { return ThreadManager::poll(); }

void tcr_sleep_ns(uint64_t duration_ns) { ThreadManager::sleep_for(nanoseconds_of(duration_ns)); }

tcr_status tcr_semaphore_create(uint32_t initial, tcr_semaphore** out) {
  if (out == nullptr) return bad_argument("tcr_semaphore_create: NULL out");
  tcr_semaphore* s = new (std::nothrow) tcr_semaphore(initial);
  if (s == nullptr) {
    return fail_with(Error{Step::TcrAllocate, ENOMEM, {}, nullptr, "tcr_semaphore_create"});
  }
  *out = s;
  return TCR_OK;
}

void tcr_semaphore_destroy(tcr_semaphore* semaphore) { delete semaphore; }

void tcr_semaphore_post(tcr_semaphore* semaphore) {
  if (semaphore != nullptr) semaphore->semaphore.post();
}

void tcr_semaphore_wait(tcr_semaphore* semaphore) {
  if (semaphore != nullptr) semaphore->semaphore.wait();
}

int tcr_semaphore_try_wait(tcr_semaphore* semaphore) {
  return semaphore != nullptr && semaphore->semaphore.try_wait() ? 1 : 0;
}

int tcr_semaphore_wait_ns(tcr_semaphore* semaphore, uint64_t timeout_ns) {
  return semaphore != nullptr && semaphore->semaphore.wait_for(nanoseconds_of(timeout_ns)) ? 1 : 0;
}

uint32_t tcr_semaphore_value(const tcr_semaphore* semaphore) {
  return semaphore != nullptr ? semaphore->semaphore.value() : 0;
}

void tcr_blocking_enter_(tcr_blocking* region) {
  if (region == nullptr) return;
  auto* state = new (static_cast<void*>(region->opaque_)) BlockingState;
  // TCR_BLOCKING_BEGIN spilled the caller's callee-saved registers into its frame; these are
  // their values too (this function preserves them), and the stack pointer is below that frame.
  machine::capture_callee_saved(state->registers);
  state->tcr = BlockingScope::enter(&state->registers);
}

void tcr_blocking_leave_(tcr_blocking* region) {
  if (region == nullptr) return;
  auto* state = reinterpret_cast<BlockingState*>(region->opaque_);
  Tcr* t = state->tcr;
  state->tcr = nullptr;  // a second END is a no-op
  BlockingScope::leave(t);
}

}  // extern "C"
