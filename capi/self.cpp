// tcr.h's view of a thread's control record: the accessors, the slots, the argument and the
// notify context. A NULL record answers 0 (accessors) or BadArgument (the rest).
#include "capi/handles.h"

namespace tcr::capi {
namespace {

static_assert(TCR_SLOTS == Tcr::kSlots, "tcr.h's TCR_SLOTS and Tcr::kSlots disagree");
static_assert(TCR_STATE_FREE == static_cast<int>(TcrState::Free) &&
                  TCR_STATE_RESERVED == static_cast<int>(TcrState::Reserved) &&
                  TCR_STATE_STARTING == static_cast<int>(TcrState::Starting) &&
                  TCR_STATE_RUNNING == static_cast<int>(TcrState::Running) &&
                  TCR_STATE_EXITING == static_cast<int>(TcrState::Exiting) &&
                  TCR_STATE_DEAD == static_cast<int>(TcrState::Dead),
              "tcr_state and tcr::TcrState disagree");

}  // namespace
}  // namespace tcr::capi

using namespace tcr;
using namespace tcr::capi;

extern "C" {

tcr_self* tcr_current(void) { return to_self(Tcr::current()); }

uint64_t tcr_self_id(const tcr_self* self) { return self != nullptr ? from_self(self)->id() : 0; }

const char* tcr_self_name(const tcr_self* self) {
  // The name is a std::string's: its view is NUL-terminated.
  return self != nullptr ? from_self(self)->name().data() : "";
}

tcr_state tcr_self_state(const tcr_self* self) {
  return self != nullptr ? static_cast<tcr_state>(from_self(self)->state()) : TCR_STATE_FREE;
}

int tcr_self_tid(const tcr_self* self) { return self != nullptr ? from_self(self)->tid() : 0; }
int tcr_self_adopted(const tcr_self* self) { return self != nullptr && from_self(self)->adopted(); }
int tcr_self_detached(const tcr_self* self) {
  return self != nullptr && from_self(self)->detached();
}
int tcr_self_gc_registered(const tcr_self* self) {
  return self != nullptr && from_self(self)->gc_registered();
}
void* tcr_self_stack_low(const tcr_self* self) {
  return self != nullptr ? from_self(self)->stack_low() : nullptr;
}
void* tcr_self_stack_high(const tcr_self* self) {
  return self != nullptr ? from_self(self)->stack_high() : nullptr;
}
void* tcr_self_guard_low(const tcr_self* self) {
  return self != nullptr ? from_self(self)->guard_low() : nullptr;
}
uint64_t tcr_self_traps(const tcr_self* self) {
  return self != nullptr ? from_self(self)->traps() : 0;
}
int tcr_self_handle_fd(const tcr_self* self) {
  if (self == nullptr) return -1;
  const KernelThreadHandle& handle = from_self(self)->handle();
  return handle.mode() == HandleMode::Pidfd ? handle.fd() : -1;
}

void* tcr_self_alt_stack(const tcr_self* self, size_t* size) {
  void* low = self != nullptr ? from_self(self)->alt_stack() : nullptr;
  if (size != nullptr) *size = low != nullptr ? from_self(self)->alt_stack_size() : 0;
  return low;
}

uint32_t tcr_self_mach_port(const tcr_self* self) {
  return self != nullptr ? from_self(self)->mach_port() : 0;
}

tcr_status tcr_slot_get(const tcr_self* self, size_t index, void** value) {
  if (self == nullptr) return bad_argument("tcr_slot_get: NULL tcr_self");
  if (value == nullptr) return bad_argument("tcr_slot_get: NULL value");
  if (index >= TCR_SLOTS) return bad_argument("tcr_slot_get: index >= TCR_SLOTS");
  *value = const_cast<Tcr*>(from_self(self))->slot(index);
  return TCR_OK;
}

tcr_status tcr_slot_set(tcr_self* self, size_t index, void* value) {
  if (self == nullptr) return bad_argument("tcr_slot_set: NULL tcr_self");
  if (index >= TCR_SLOTS) return bad_argument("tcr_slot_set: index >= TCR_SLOTS");
  from_self(self)->slot(index) = value;
  return TCR_OK;
}

void* tcr_argument(const tcr_self* self) {
  return self != nullptr ? from_self(self)->argument() : nullptr;
}

tcr_status tcr_set_argument(tcr_self* self, void* argument) {
  if (self == nullptr) return bad_argument("tcr_set_argument: NULL tcr_self");
  from_self(self)->set_argument(argument);
  return TCR_OK;
}

tcr_status tcr_self_set_notify_context(tcr_self* self, void* context) {
  if (self == nullptr) return bad_argument("tcr_self_set_notify_context: NULL tcr_self");
  from_self(self)->set_notify_context(context);
  return TCR_OK;
}

}  // extern "C"
