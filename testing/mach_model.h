// MachModel: a user-space model of ONE Mach IPC space (one task), so tcr's send-right accounting
// runs, and is tested, on machines without Mach. It keeps what XNU keeps and answers what XNU
// answers: names, rights (send, receive, send-once, dead name), user references pegged at
// MACH_PORT_UREFS_MAX, thread ports that die with their threads, the rights exception messages
// carry. Thread-safe: one mutex guards the space (XNU's space lock). A model must outlive the OS
// threads it binds (current_thread_port()); see "OS threads" below. A test double: part of
// tcr_testing, which tests link and the install does not ship.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "runtime/mach_ports.h"

namespace tcr::mach {

// A kernel thread of the model. Never reused within one model.
enum class ThreadId : std::uint64_t {};
inline constexpr ThreadId kNoThread{0};  // no model issues it; its port is kPortNull

// Where a rule comes from is cited next to the code in mach_model.cpp (the space) and
// mach_model_threads.cpp (threads, task port, exception messages). The short version:
//  * A name denotes at most one entry; an entry holds send, receive, send+receive, send-once or a
//    dead name. Send and dead-name rights carry user references (urefs); receive and send-once
//    count as one. The same port gets the same name again when a send right to it is copied out
//    (ipc_object_copyout finds it with ipc_right_reverse), so repeated mach_thread_self() calls
//    pile urefs on one name instead of making new names.
//  * urefs saturate: reaching MACH_PORT_UREFS_MAX pegs the count there. A pegged count ignores
//    every change except "minus MACH_PORT_UREFS_MAX", and deallocate leaves it pegged.
//  * When a port dies, each name for it that still holds send or send-once rights becomes a dead
//    name and keeps its urefs, until someone releases them: the seeds' leak.
//  * Thread ports: pthread_create copies out one send right that libpthread owns; at exit the
//    kernel's bsdthread_terminate deallocates that one uref, then the thread (and its port) dies.
//
// OS threads: current_thread_port() binds the calling OS thread to a model thread the first time
// it asks (as pthread_create would have made one), and the OS thread's exit terminates it (as
// bsdthread_terminate would), after its thread_local destructors, which may still use the port.
// Bindings are per OS thread and keyed by model instance, so several models can coexist. A model
// must outlive the OS threads it bound, or their ports are never terminated and its counts are
// wrong; if it is destroyed first, those threads' exits are ignored (never a dangling access).
// The process's main thread never "exits" this way (exit() runs no thread-exit hooks), as on
// Darwin, where the main thread's port lives as long as the task.
class MachModel final : public PortSpace {
 public:
  MachModel();
  ~MachModel() override;
  MachModel(const MachModel&) = delete;
  MachModel& operator=(const MachModel&) = delete;

  // PortSpace, with mach_port_get_refs / mach_port_mod_refs / mach_port_deallocate /
  // mach_port_names semantics and error codes.
  KernReturn get_refs(PortName name, Right right, Urefs* refs) override;
  KernReturn mod_refs(PortName name, Right right, int delta) override;
  KernReturn deallocate(PortName name) override;
  KernReturn names_count(std::size_t* count) override;
  // The calling OS thread's port (pthread_mach_thread_np(pthread_self())); binds it on first use.
  PortName current_thread_port() override;

  // --- Threads (what the kernel and libpthread do) ---
  // pthread_create: a thread whose port's name holds the one send uref libpthread owns.
  ThreadId create_thread();
  // pthread_mach_thread_np(thread): the name libpthread cached. Adds no uref. kPortNull once dead.
  PortName thread_port(ThreadId thread) const;
  // mach_thread_self() run on `thread`: one more send uref on the same name.
  PortName mach_thread_self(ThreadId thread);
  // Thread exit: libpthread's uref is deallocated, then the port dies (whatever urefs remain
  // become a dead name). No effect on a thread that already exited.
  void terminate_thread(ThreadId thread);

  // --- The calling OS thread ---
  ThreadId current_thread();
  // What a runtime's mach_thread_self() call does: one more uref on current_thread_port().
  PortName mach_thread_self_current();

  // --- Task port and exception messages ---
  // mach_task_self(): the cached name of the task port. Adds no uref.
  PortName task_port() const;
  // The kernel delivers an exception message about `thread` to our listener. With an identity
  // behavior (EXCEPTION_DEFAULT, EXCEPTION_STATE_IDENTITY) the message carries a send right to the
  // thread port and one to the task port, copied out into this space (one uref more on each
  // name); the receiver owns them and must deallocate both. EXCEPTION_STATE carries no rights.
  ExceptionRights deliver_exception_message(ThreadId thread, bool carries_identity);

  // --- Ports of our own, for the rules that involve receive and send-once rights ---
  // mach_port_allocate(MACH_PORT_RIGHT_RECEIVE): the new name, kPortNull when the table is full.
  PortName allocate_receive();
  // The same as PortSpace answers it: KERN_NO_SPACE when the table is full.
  KernReturn allocate_receive(PortName* name) override;
  // mach_port_insert_right(name, name, MACH_MSG_TYPE_MAKE_SEND): the name then holds send+receive.
  KernReturn insert_send_right(PortName receive_name) override;
  // A send-once right made from our receive right and copied out: always a fresh name.
  PortName make_send_once(PortName receive_name);

  // --- Inspection for tests: no side effects ---
  // Like get_refs but never fails: 0 for unknown names.
  Urefs urefs(PortName name, Right right) const;
  bool has_name(PortName name) const;
  bool is_dead_name(PortName name) const;
  std::size_t names() const;
  std::size_t live_threads() const;
  // Exits at which libpthread's own mach_port_deallocate failed: the thread's urefs had already
  // been released by someone else (over-release; on Darwin the name may then be another right's).
  std::size_t failed_exit_deallocations() const;

 private:
  using PortId = std::uint64_t;
  enum class Type : std::uint8_t { None, Send, Receive, SendReceive, SendOnce, DeadName };
  struct Entry {
    Type type = Type::None;
    std::uint8_t gen = 0;
    Urefs urefs = 0;
    PortId port = 0;  // 0 for dead names and free entries
    std::uint32_t next_free = 0;
  };
  struct Port {
    PortName name = kPortNull;  // our entry holding send and/or receive for it (one at most)
    std::vector<PortName> send_once_names;
  };
  struct OsThreadBindings;  // what an OS thread is bound to, kept under a pthread key

  static OsThreadBindings* os_thread_bindings();
  static bool holds_send(Type t) { return t == Type::Send || t == Type::SendReceive; }
  static bool holds_receive(Type t) { return t == Type::Receive || t == Type::SendReceive; }
  static Urefs refs_of(const Entry& entry, Right right);

  Entry* lookup(PortName name);
  const Entry* lookup(PortName name) const;
  PortName allocate_entry(Type type, Urefs urefs, PortId port);
  void free_entry(PortName name);
  PortId new_port();
  PortName copyout_send(PortId port);
  void destroy_port(PortId port);
  KernReturn delta_send(PortName name, Entry& entry, int delta);
  KernReturn delta_dead_name(PortName name, Entry& entry, int delta);
  KernReturn delta_receive(PortName name, Entry& entry, int delta);
  KernReturn delta_send_once(PortName name, Entry& entry, int delta);
  KernReturn deallocate_locked(PortName name);

  mutable std::mutex m_mutex;
  const std::uint64_t m_instance;  // keys OS-thread bindings; never reused, unlike `this`
  std::vector<Entry> m_table;      // index 0 unused, like XNU's entry table
  std::uint32_t m_free_head = 0;
  std::size_t m_names = 0;
  std::unordered_map<PortId, Port> m_ports;  // live ports our space has rights to
  PortId m_next_port = 1;
  struct ThreadRecord {
    PortId port;
    PortName name;
  };
  std::unordered_map<std::uint64_t, ThreadRecord> m_threads;  // live threads
  std::uint64_t m_next_thread = 1;
  PortId m_task_port = 0;
  PortName m_task_name = kPortNull;
  std::size_t m_failed_exit_deallocations = 0;
};

}  // namespace tcr::mach
