// The Darwin listener's ports (listener_darwin.h): the port set it receives on, the set's wake
// port, and a Mach exception port per thread, put in the set by the thread extension; opening
// the backend, and closing it. Compiled only on Apple, and written where it could not be compiled
// (Linux): the port-right accounting it relies on lives in mach_exception_rights.{h,cpp}, which
// are portable and tested on MachModel (tests/mach_exception_test.cpp). Mach calls used, as
// <mach/*.h> declares them:
//   mach_port_allocate(task, MACH_PORT_RIGHT_PORT_SET, &name), mach_port_move_member(task,
//   member, set), mach_port_mod_refs(task, set, MACH_PORT_RIGHT_PORT_SET, -1),
//   thread_swap_exception_ports(thread, mask, port, behavior, flavor, masks, &count, ports,
//   behaviors, flavors), thread_set_exception_ports(thread, mask, port, behavior, flavor).
//
// Why per thread, and why EXCEPTION_STATE: the port a message arrives on names the faulting
// thread, so the message need not carry the thread's identity; EXCEPTION_STATE carries no port
// rights at all, so there is nothing to release, and nothing that seed 001's leak could grow from.
// Were EXCEPTION_STATE_IDENTITY used (kBehavior below), its thread and task rights are released
// after the reply by mach::release_exception_rights, the code the tests run.
#include <mach/mach.h>
#include <mach/mach_error.h>
#include <pthread.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <new>
#include <unordered_map>
#include <utility>

#include "exceptions/listener_backend.h"
#include "exceptions/listener_darwin.h"
#include "exceptions/mach_exception_rights.h"
#include "runtime/error.h"
#include "runtime/fork.h"
#include "runtime/log.h"
#include "runtime/mutex.h"
#include "runtime/xnu_port_space.h"
#include "threads/tcr.h"
#include "threads/thread_extensions.h"

namespace tcr::detail {
namespace darwin_listener {

Mutex g_mutex;
DarwinListener* g_listener TCR_GUARDED_BY(g_mutex) = nullptr;

namespace {

constexpr exception_mask_t kMask = EXC_MASK_BAD_ACCESS;
constexpr mach::ExceptionBehavior kBehavior = mach::ExceptionBehavior::State;
#if defined(__x86_64__)
constexpr thread_state_flavor_t kFlavor = x86_THREAD_STATE64;
#elif defined(__arm64__)
constexpr thread_state_flavor_t kFlavor = ARM_THREAD_STATE64;
#else
#error "tcr's Darwin listener knows x86_64 and arm64"
#endif

Result<void> attach_thread(Tcr& self) {
  MutexLock lock(g_mutex);
  if (g_listener == nullptr) return {};
  return g_listener->add_thread(self);
}

void detach_thread(Tcr& self) {
  MutexLock lock(g_mutex);
  if (g_listener != nullptr) g_listener->remove_thread(self);
}

Result<void> register_extension_once() {
  fork_participate(fork_guard("mach exception listener", ForkRank::Setup, g_mutex));
  static const Result<void> registered =
      register_thread_extension({"mach exception port", &attach_thread, &detach_thread});
  return registered;
}

}  // namespace

void log_kr(const char* what, kern_return_t kr) {
  log::warn("exception listener: {}: {} ({:#x})", what, mach_error_string(kr),
            static_cast<unsigned>(kr));
}

void log_error(const Error& e) { log::warn("exception listener: {}", e.message()); }

// --- Opening and closing ---

Result<void> DarwinListener::start() {
  mach_port_name_t set = MACH_PORT_NULL;
  if (kern_return_t kr = mach_port_allocate(mach_task_self(), MACH_PORT_RIGHT_PORT_SET, &set);
      kr != KERN_SUCCESS) {
    return fail(Step::MachAllocate, kr, "the exception listener's port set");
  }
  m_port_set = set;
  Result<PortName> wake = mach::create_exception_port(m_space);
  if (!wake) return std::unexpected(wake.error());
  m_wake = *wake;
  if (kern_return_t kr = mach_port_move_member(mach_task_self(), m_wake, m_port_set);
      kr != KERN_SUCCESS) {
    return fail(Step::MachMoveMember, kr, "the listener's wake port");
  }
  return {};
}

// Threads first: their handlers go back (under g_mutex, so none of them can exit meanwhile and
// leave us a stale thread name). Then every message gets its answer, queued ones included, since
// no thread must stay blocked on a port nobody reads; only then are the ports destroyed. The
// answer is KERN_FAILURE, as for a Foreign fault: the kernel passes the exception on to the
// signal path, whose handlers know whether the page is ours and writable by now.
// The listener thread must be gone: its receive buffer is in use here.
DarwinListener::~DarwinListener() {
  if (m_abandoned) {  // in a forked child (exceptions/fork_hooks.h), single-threaded
    if (g_listener == this) g_listener = nullptr;
    return;
  }
  std::unordered_map<Tcr*, ThreadPort> threads;
  {
    MutexLock global(g_mutex);
    if (g_listener == this) g_listener = nullptr;
    {
      MutexLock lock(m_mutex);
      threads.swap(m_threads);
      m_by_port.clear();  // so drain_queued answers each message at once
    }
    for (auto& [tcr, t] : threads) restore_handlers(t);
  }
  if (m_port_set != MACH_PORT_NULL) (void)drain_queued();
  for (Pending& p : take_pending(Range{0, UINTPTR_MAX})) reply(p.request, KERN_FAILURE);
  for (auto& [tcr, t] : threads) {
    if (Result<void> r = mach::destroy_exception_port(m_space, t.port); !r) log_error(r.error());
  }
  if (m_wake != MACH_PORT_NULL) {
    if (Result<void> r = mach::destroy_exception_port(m_space, m_wake); !r) log_error(r.error());
  }
  if (m_port_set != MACH_PORT_NULL) {
    if (kern_return_t kr =
            mach_port_mod_refs(mach_task_self(), m_port_set, MACH_PORT_RIGHT_PORT_SET, -1);
        kr != KERN_SUCCESS) {
      log_kr("destroying the port set", kr);
    }
  }
}

// --- Threads ---

Result<void> DarwinListener::add_thread(Tcr& self) {
  Result<PortName> port = mach::create_exception_port(m_space);
  if (!port) return std::unexpected(port.error());
  auto undo = [&] {
    if (Result<void> r = mach::destroy_exception_port(m_space, *port); !r) log_error(r.error());
  };
  if (kern_return_t kr = mach_port_move_member(mach_task_self(), *port, m_port_set);
      kr != KERN_SUCCESS) {
    undo();
    return fail(Step::MachMoveMember, kr, "a thread's exception port");
  }
  ThreadPort t;
  t.tcr = &self;
  t.port = *port;
  // libpthread's cached name: no uref to release (mach_thread_self() would add one).
  t.thread = pthread_mach_thread_np(pthread_self());
  // The kernel copies a send right of its own; ours stays on the port's name until destroy.
  if (kern_return_t kr = thread_swap_exception_ports(
          t.thread, kMask, t.port,
          static_cast<exception_behavior_t>(mach::behavior_value(kBehavior)), kFlavor,
          t.saved.masks, &t.saved.count, t.saved.ports, t.saved.behaviors, t.saved.flavors);
      kr != KERN_SUCCESS) {
    undo();
    return fail(Step::MachExceptionPorts, kr, "setting a thread's EXC_BAD_ACCESS port");
  }
  MutexLock lock(m_mutex);
  m_by_port.emplace(t.port, &self);
  m_threads.emplace(&self, std::move(t));
  return {};
}

// The thread is running this, so no message of its own can be pending or queued.
void DarwinListener::remove_thread(Tcr& self) {
  ThreadPort t;
  {
    MutexLock lock(m_mutex);
    auto it = m_threads.find(&self);
    if (it == m_threads.end()) return;  // attached before this listener opened
    t = std::move(it->second);
    m_threads.erase(it);
    m_by_port.erase(t.port);
  }
  restore_handlers(t);
  if (Result<void> r = mach::destroy_exception_port(m_space, t.port); !r) log_error(r.error());
}

void DarwinListener::restore_handlers(ThreadPort& t) {
  if (t.saved.count == 0) {
    if (kern_return_t kr = thread_set_exception_ports(t.thread, kMask, MACH_PORT_NULL,
                                                      EXCEPTION_DEFAULT, THREAD_STATE_NONE);
        kr != KERN_SUCCESS) {
      log_kr("clearing a thread's EXC_BAD_ACCESS port", kr);
    }
    return;
  }
  for (mach_msg_type_number_t i = 0; i < t.saved.count; ++i) {
    if (kern_return_t kr = thread_set_exception_ports(t.thread, t.saved.masks[i], t.saved.ports[i],
                                                      t.saved.behaviors[i], t.saved.flavors[i]);
        kr != KERN_SUCCESS) {
      log_kr("restoring a thread's exception handler", kr);
    }
  }
  for (mach_msg_type_number_t i = 0; i < t.saved.count; ++i) {
    if (mach::KernReturn kr = m_space.deallocate(t.saved.ports[i]); kr != KERN_SUCCESS) {
      log_kr("releasing a saved exception handler's send right", kr);
    }
    t.saved.ports[i] = MACH_PORT_NULL;
  }
  t.saved.count = 0;
}

}  // namespace darwin_listener

// Threads started before the first open are not attached (thread_extensions.h): their faults go
// to the task's handlers, as if no listener were there. A listener that is not installed is
// destroyed with g_mutex free, since its destructor takes it.
Result<std::unique_ptr<ListenerBackend>> ListenerBackend::open() {
  using darwin_listener::DarwinListener, darwin_listener::g_listener, darwin_listener::g_mutex,
      darwin_listener::register_extension_once;
  if (Result<void> r = register_extension_once(); !r) return std::unexpected(r.error());
  std::unique_ptr<DarwinListener> listener(new (std::nothrow) DarwinListener());
  if (!listener) return fail(Step::RegionAllocate, ENOMEM, "the exception listener");
  if (Result<void> r = listener->start(); !r) return std::unexpected(r.error());
  bool installed = false;
  {
    MutexLock lock(g_mutex);
    if (g_listener == nullptr) {
      g_listener = listener.get();
      installed = true;
    }
  }
  if (!installed) {
    return fail(
        Step::BadArgument, 0,
        "a Darwin ExceptionListener is already open (a thread has one EXC_BAD_ACCESS port)");
  }
  return std::unique_ptr<ListenerBackend>(std::move(listener));
}

}  // namespace tcr::detail
