// MachModel's threads: model instances and the OS threads bound to them (a thread's exit
// terminates its model thread), thread ports as libpthread and the kernel hand them out and take
// them back, the task port, and the rights an exception message carries. The space these act on
// (the table, rights, urefs) is in mach_model.cpp.
#include "testing/mach_model.h"

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_set>

#include "runtime/fork.h"

// Sources of the rules (apple-oss-distributions/xnu unless said otherwise):
//   osfmk/kern/ipc_tt.c       thread_self_trap, ipc_thread_disable, ipc_thread_terminate
//   osfmk/kern/exception.c    exception_deliver, mach_exception_raise*
//   apple/darwin-libpthread   src/pthread.c: _pthread_terminate, pthread_mach_thread_np;
//                             kern/kern_support.c: _bsdthread_create, _bsdthread_terminate

namespace tcr::mach {

namespace {

// Which models exist, so that an OS thread's exit never calls into a destroyed one. Leaked on
// purpose: threads may exit after static destruction has begun.
struct Registry {
  std::mutex mutex;
  std::unordered_set<std::uint64_t> live;
};
Registry& registry() {
  static Registry* const instance = [] {
    Registry* created = new Registry;
    // Held by a thread ending while the process forks, it would stay held in the child. (Each
    // model's own lock is the model owner's business, as any object's.)
    fork_participate(fork_guard("mach models", ForkRank::Setup, created->mutex));
    return created;
  }();
  return *instance;
}

std::atomic<std::uint64_t> g_next_instance{1};

}  // namespace

// The model threads the calling OS thread is bound to, one per model, kept under one pthread key
// for the whole process (a key per model would run out: PTHREAD_KEYS_MAX). A key destructor
// rather than a thread_local destructor, because it runs after every C++ thread_local destructor
// (which may still ask for the thread's port) and may run again if one binds anew: the same place
// in a thread's end as Darwin's, where _pthread_exit runs the TSD destructors and then
// _pthread_terminate, whose __bsdthread_terminate deallocates the port's libpthread uref and lets
// the thread die.
struct MachModel::OsThreadBindings {
  struct Binding {
    MachModel* model;
    std::uint64_t instance;
    ThreadId thread;
  };
  std::vector<Binding> list;

  static void thread_exited(void* bindings) {
    const std::unique_ptr<OsThreadBindings> self(static_cast<OsThreadBindings*>(bindings));
    Registry& reg = registry();
    // Held across terminate_thread so that ~MachModel (which takes it first) waits for us.
    std::lock_guard lock(reg.mutex);
    for (const Binding& b : self->list) {
      if (reg.live.contains(b.instance)) b.model->terminate_thread(b.thread);
    }
  }
};

// nullptr only if the process is out of pthread keys.
MachModel::OsThreadBindings* MachModel::os_thread_bindings() {
  static const std::optional<pthread_key_t> key = []() -> std::optional<pthread_key_t> {
    pthread_key_t k;
    if (pthread_key_create(&k, &OsThreadBindings::thread_exited) != 0) return std::nullopt;
    return k;
  }();
  if (!key) return nullptr;
  auto* bindings = static_cast<OsThreadBindings*>(pthread_getspecific(*key));
  if (bindings == nullptr) {
    auto fresh = std::make_unique<OsThreadBindings>();
    if (pthread_setspecific(*key, fresh.get()) != 0) return nullptr;
    bindings = fresh.release();
  }
  return bindings;
}

MachModel::MachModel() : m_instance(g_next_instance.fetch_add(1, std::memory_order_relaxed)) {
  m_table.resize(1);  // index 0 never names anything (ipc_right_lookup_read: index 0 is invalid)
  // mach_task_self() is a cached name: libsystem's mach_init stored task_self_trap()'s answer,
  // one send uref, in mach_task_self_ once, and every later mach_task_self() reads that variable
  // without adding a uref (seed 001 saw the same).
  m_task_port = new_port();
  m_task_name = copyout_send(m_task_port);
  Registry& reg = registry();
  std::lock_guard lock(reg.mutex);
  reg.live.insert(m_instance);
}

MachModel::~MachModel() {
  Registry& reg = registry();
  std::lock_guard lock(reg.mutex);
  reg.live.erase(m_instance);
}

PortName MachModel::current_thread_port() { return thread_port(current_thread()); }

// --- Threads ---

// _bsdthread_create (darwin-libpthread kern/kern_support.c): convert_thread_to_port, then
// ipc_port_copyout_send into the task's space. The name is handed to the new thread
// (_pthread_start's kport) and cached in the pthread_t; that one uref is libpthread's.
ThreadId MachModel::create_thread() {
  std::lock_guard lock(m_mutex);
  const PortId port = new_port();
  const PortName name = copyout_send(port);
  const std::uint64_t id = m_next_thread++;
  m_threads.emplace(id, ThreadRecord{port, name});
  return ThreadId{id};
}

// pthread_mach_thread_np returns the cached kernel_thread name; no call into the kernel.
PortName MachModel::thread_port(ThreadId thread) const {
  std::lock_guard lock(m_mutex);
  auto it = m_threads.find(static_cast<std::uint64_t>(thread));
  return it == m_threads.end() ? kPortNull : it->second.name;
}

// thread_self_trap (osfmk/kern/ipc_tt.c): retrieve_thread_self_fast makes a send right and
// ipc_port_copyout_send puts it in the space: the same name, one more uref. If every uref of
// libpthread's name was released before, the copyout makes a new name that libpthread does not
// know: the over-release then shows at exit as a failed deallocation.
PortName MachModel::mach_thread_self(ThreadId thread) {
  std::lock_guard lock(m_mutex);
  auto it = m_threads.find(static_cast<std::uint64_t>(thread));
  return it == m_threads.end() ? kPortNull : copyout_send(it->second.port);
}

// _pthread_terminate passes the thread's kport to __bsdthread_terminate, for joinable and detached
// threads alike; _bsdthread_terminate calls thread_terminate (which only disables the port's
// kobject, ipc_thread_disable), then mach_port_deallocate(kport) in the task's space while the
// port is still alive, then returns to user mode, where the thread terminates itself and
// ipc_thread_terminate destroys the port (ipc_port_dealloc_kernel). So: 1 uref at exit leaves no
// name; 1+k urefs leave one dead name with k urefs. (Deallocating after the port's death would
// give the same counts: ipc_right_dealloc converts first, then drops a dead-name uref.)
// Old Libc kept a joinable thread's port until pthread_join (seed 003); that timing is not
// modeled.
void MachModel::terminate_thread(ThreadId thread) {
  std::lock_guard lock(m_mutex);
  auto it = m_threads.find(static_cast<std::uint64_t>(thread));
  if (it == m_threads.end()) return;
  if (deallocate_locked(it->second.name) != kSuccess) ++m_failed_exit_deallocations;
  destroy_port(it->second.port);
  m_threads.erase(it);
}

ThreadId MachModel::current_thread() {
  OsThreadBindings* bindings = os_thread_bindings();
  if (bindings == nullptr) return kNoThread;
  for (const auto& b : bindings->list) {
    if (b.instance == m_instance) return b.thread;
  }
  const ThreadId thread = create_thread();
  {
    // Bindings to models that are gone would only be skipped at exit; drop them here.
    Registry& reg = registry();
    std::lock_guard lock(reg.mutex);
    std::erase_if(bindings->list, [&reg](const auto& b) { return !reg.live.contains(b.instance); });
  }
  bindings->list.push_back({this, m_instance, thread});
  return thread;
}

PortName MachModel::mach_thread_self_current() { return mach_thread_self(current_thread()); }

// --- Task port and exception messages ---

PortName MachModel::task_port() const {
  std::lock_guard lock(m_mutex);
  return m_task_name;
}

// osfmk/kern/exception.c (exception_deliver -> mach_exception_raise*): for the identity behaviors
// the kernel puts send rights to the thread and the task port in the message; receiving it copies
// them out (ipc_kmsg_copyout_body -> ipc_object_copyout), one uref more on each existing name,
// pegged at MACH_PORT_UREFS_MAX like any copyout. EXCEPTION_STATE sends thread state only.
ExceptionRights MachModel::deliver_exception_message(ThreadId thread, bool carries_identity) {
  if (!carries_identity) return {};
  std::lock_guard lock(m_mutex);
  auto it = m_threads.find(static_cast<std::uint64_t>(thread));
  if (it == m_threads.end()) return {};
  ExceptionRights rights;
  rights.thread = copyout_send(it->second.port);
  rights.task = copyout_send(m_task_port);
  return rights;
}

}  // namespace tcr::mach
