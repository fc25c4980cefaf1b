// The Darwin ExceptionListener backend (listener_backend.h), what its two files share. Compiled
// only on Apple: listener_ports_darwin.cpp makes and destroys the ports (the port set, its wake
// port, an exception port per thread through the thread extension) and opens the backend;
// listener_messages_darwin.cpp receives, parses and answers the exception messages and keeps the
// registered ranges, whose blocked threads it lets go when their pages become writable.
// Internal to exceptions/. The names are in tcr::detail::darwin_listener, apart from the rest of
// tcr::detail.
// Thread-safety: as ListenerBackend says; m_mutex guards the tables, g_mutex the one listener.
#pragma once

#include <mach/mach.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <unordered_map>
#include <vector>

#include "exceptions/listener_backend.h"
#include "exceptions/mach_exception_rights.h"
#include "exceptions/region_mappings.h"
#include "runtime/error.h"
#include "runtime/mutex.h"
#include "runtime/xnu_port_space.h"

namespace tcr::detail::darwin_listener {

using mach::PortName;

struct Range {
  std::uintptr_t low = 0;
  std::uintptr_t high = 0;  // exclusive; low == high: empty
  const RangeLayout* layout = nullptr;  // registered ranges: the protection of each part
  bool contains(std::uintptr_t a) const { return a >= low && a < high; }
  bool within(const Range& outer) const { return low >= outer.low && high <= outer.high; }
};

// What thread_swap_exception_ports handed back: the handlers the thread had before ours, to put
// back when it detaches. Each port is a send right copied out into our space: released once,
// after it has been given back to the kernel (thread_set_exception_ports copies its own).
struct SavedHandlers {
  mach_msg_type_number_t count = EXC_TYPES_COUNT;
  exception_mask_t masks[EXC_TYPES_COUNT] = {};
  mach_port_t ports[EXC_TYPES_COUNT] = {};
  exception_behavior_t behaviors[EXC_TYPES_COUNT] = {};
  thread_state_flavor_t flavors[EXC_TYPES_COUNT] = {};
};

struct ThreadPort {
  Tcr* tcr = nullptr;
  PortName port = MACH_PORT_NULL;       // ours: receive right + one send uref, in the port set
  mach_port_t thread = MACH_PORT_NULL;  // libpthread's name for the thread; we own no uref
  SavedHandlers saved;
};

// A received message not answered yet. Its reply right is ours until the reply consumes it; the
// faulting thread stays blocked in the kernel until then. Once receive() has reported it, the
// listener owes it a resume().
struct Pending {
  mach::ExceptionRequest request;
  FaultMessage fault;  // what receive() reports; fault.token is this entry's key
};

class DarwinListener;

// A thread has one EXC_BAD_ACCESS port, so one listener at a time; the thread extension reaches
// it here. Order: g_mutex, then the listener's m_mutex. Defined in listener_ports_darwin.cpp.
extern Mutex g_mutex;
extern DarwinListener* g_listener TCR_GUARDED_BY(g_mutex);

class DarwinListener final : public ListenerBackend {
 public:
  DarwinListener() = default;
  ~DarwinListener() override;
  // On failure the destructor releases whatever was made.
  Result<void> start();

  Result<void> register_range(void* base, std::size_t length, const RangeLayout& layout) override;
  void unregister_range(void* base, std::size_t length) override;
  Result<void> write_protect(void* base, std::size_t length, bool on) override;
  Result<std::size_t> receive(FaultMessage* out, std::size_t max, bool* stopped) override;
  void resume(const FaultMessage& message, FaultOutcome outcome) override;
  void request_stop() override;
  // A forked child inherits none of these ports: the destructor must not touch their names.
  void abandon_in_child() override { m_abandoned = true; }

  // The thread extension, on the thread itself.
  Result<void> add_thread(Tcr& self) TCR_REQUIRES(g_mutex);
  void remove_thread(Tcr& self) TCR_REQUIRES(g_mutex);

 private:
  static constexpr mach_msg_size_t kBufferSize =
      mach::kMaxRequestSize + sizeof(mach_msg_max_trailer_t);

  const RangeLayout* layout_of(const Range& r);
  bool admit(std::span<std::byte> message);
  std::size_t report(FaultMessage* out, std::size_t room);
  bool drain_queued();
  void release_blocked_in(const Range& range);
  std::vector<Pending> take_pending(const Range& range);
  void reply(mach::ExceptionRequest& request, kern_return_t result);
  void send_wake();
  void restore_handlers(ThreadPort& t);

  mach::XnuPortSpace m_space;
  mach_port_t m_port_set = MACH_PORT_NULL;
  PortName m_wake = MACH_PORT_NULL;  // receive right in the set + the send uref send_wake uses
  std::atomic<bool> m_stop{false};
  bool m_abandoned = false;

  Mutex m_mutex;
  std::unordered_map<Tcr*, ThreadPort> m_threads TCR_GUARDED_BY(m_mutex);
  std::unordered_map<PortName, Tcr*> m_by_port TCR_GUARDED_BY(m_mutex);
  std::vector<Range> m_ranges TCR_GUARDED_BY(m_mutex);
  std::unordered_map<std::uint64_t, Pending> m_pending TCR_GUARDED_BY(m_mutex);
  // Tokens in arrival order; answered ones are skipped.
  std::deque<std::uint64_t> m_unreported TCR_GUARDED_BY(m_mutex);
  std::uint64_t m_next_token TCR_GUARDED_BY(m_mutex) = 0;

  // The listener thread's receive buffer.
  alignas(8) std::byte m_buffer[kBufferSize];
};

// A failed Mach call, or an Error, logged as the exception listener's warning.
void log_kr(const char* what, kern_return_t kr);
void log_error(const Error& e);

}  // namespace tcr::detail::darwin_listener
