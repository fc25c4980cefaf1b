// The installed Tcr's accessors, read from the ThreadRecord behind it (threads/record.h).
#include "threads/tcr.h"

#include "threads/current.h"
#include "threads/record.h"
#include "threads/thread_extensions.h"

namespace tcr {

const char* to_string(TcrState state) {
  switch (state) {
    case TcrState::Free:
      return "free";
    case TcrState::Reserved:
      return "reserved";
    case TcrState::Starting:
      return "starting";
    case TcrState::Running:
      return "running";
    case TcrState::Exiting:
      return "exiting";
    case TcrState::Dead:
      return "dead";
  }
  return "?";
}

Tcr* Tcr::current() { return detail::t_current; }

// Under the mailbox lock: interrupt() reads it there from the interrupting thread, and the
// thread's exit clears it there (threads/shutdown.cpp: clear_slots).
void Tcr::set_notify_context(void* context) {
  ThreadRecord& r = record(*this);
  MailboxLock lock(r.run.mailbox);
  r.notify_slot() = context;
}

void* Tcr::notify_context() const {
  ThreadRecord& r = const_cast<ThreadRecord&>(record(*this));
  MailboxLock lock(r.run.mailbox);
  return r.notify_slot();
}

std::uint64_t Tcr::id() const { return record(*this).run.id; }
std::string_view Tcr::name() const { return record(*this).run.name; }
TcrState Tcr::state() const { return record(*this).run.state.load(std::memory_order_acquire); }
pid_t Tcr::tid() const { return record(*this).os.tid; }
bool Tcr::adopted() const { return record(*this).os.adopted; }
bool Tcr::detached() const { return record(*this).run.detached; }
bool Tcr::gc_registered() const { return record(*this).os.gc_registered; }
const KernelThreadHandle& Tcr::handle() const { return record(*this).os.handle; }
HandleTag Tcr::handle_tag() {
  ThreadRecord& r = record(*this);
  return HandleTag{r.run.id, r.run.name, &r.os.handle_chain};
}
mach::PortName Tcr::mach_port() const { return record(*this).os.mach_port; }
void* Tcr::stack_low() const { return record(*this).os.stack_low; }
void* Tcr::stack_high() const { return record(*this).os.stack_high; }
void* Tcr::guard_low() const { return record(*this).os.stack.guard_low(); }
void* Tcr::alt_stack() const { return record(*this).os.alt.stack(); }
std::size_t Tcr::alt_stack_size() const { return record(*this).os.alt.size(); }
std::uint64_t Tcr::traps() const { return record(*this).run.traps.load(std::memory_order_relaxed); }

void count_trap(Tcr& t, int delta) {
  record(t).run.traps.fetch_add(static_cast<std::uint64_t>(static_cast<std::int64_t>(delta)),
                                std::memory_order_relaxed);
}

void escape_stack_overflow(Tcr& t, void* fault_address) {
  record(t).run.overflow.escape(fault_address);
}

}  // namespace tcr
