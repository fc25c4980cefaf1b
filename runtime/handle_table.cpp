#include "runtime/handle_table.h"

#include <errno.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "runtime/fork.h"
#include "runtime/mutex.h"
#include "runtime/os.h"

namespace tcr {

const char* to_string(HandleKind kind) {
  switch (kind) {
    case HandleKind::Pidfd: return "pidfd";
    case HandleKind::Eventfd: return "eventfd";
    case HandleKind::Userfaultfd: return "userfaultfd";
    case HandleKind::Other: return "other";
  }
  return "?";
}

namespace {

// The table's state, indexed by fd. serial 0 marks a free slot.
struct State {
  mutable Mutex mutex;
  std::vector<HandleEntry> by_fd TCR_GUARDED_BY(mutex);
  std::uint64_t next_serial TCR_GUARDED_BY(mutex) = 1;

  HandleEntry& at(int fd) TCR_REQUIRES(mutex) { return by_fd[static_cast<std::size_t>(fd)]; }

  void unlink(HandleEntry& e) TCR_REQUIRES(mutex) {
    if (e.chain == nullptr) return;
    if (e.prev >= 0) {
      at(e.prev).next = e.next;
    } else {
      e.chain->head = e.next;
    }
    if (e.next >= 0) at(e.next).prev = e.prev;
    e.chain = nullptr;
    e.prev = e.next = -1;
  }

  std::uint64_t add(int fd, HandleKind kind, const HandleTag& tag, int tid) TCR_REQUIRES(mutex) {
    if (static_cast<std::size_t>(fd) >= by_fd.size()) {
      by_fd.resize(std::max<std::size_t>(static_cast<std::size_t>(fd) + 1, by_fd.size() * 2),
                   HandleEntry{});
    }
    HandleEntry& e = at(fd);
    e.fd = fd;
    e.kind = kind;
    e.serial = next_serial++;
    e.tcr_id = tag.tcr_id;
    e.tid = tid;
    const std::size_t n = std::min(tag.name.size(), sizeof e.name - 1);
    std::memcpy(e.name, tag.name.data(), n);
    e.name[n] = '\0';
    e.chain = tag.chain;
    e.prev = -1;
    e.next = -1;
    if (tag.chain != nullptr) {
      e.next = tag.chain->head;
      if (e.next >= 0) at(e.next).prev = fd;
      tag.chain->head = fd;
    }
    return e.serial;
  }

  // Closed while the lock is held: no add() for a reused fd number can slip in between the close
  // and the clearing of the entry.
  void close_entry(HandleEntry& e) TCR_REQUIRES(mutex) {
    unlink(e);
    os::close(e.fd);
    e = HandleEntry{};
  }
};

State& state() {
  // Never destroyed: threads may still release handles while the process exits.
  static State* const s = [] {
    State* created = new State;
    // A fork while a thread adds or closes a handle would leave the child's table locked.
    fork_participate(fork_guard("handle table", ForkRank::HandleTable, created->mutex));
    return created;
  }();
  return *s;
}

}  // namespace

HandleTable& HandleTable::instance() {
  static HandleTable table;
  return table;
}

std::uint64_t HandleTable::add(int fd, HandleKind kind, const HandleTag& tag, int tid) {
  State& s = state();
  MutexLock lock(s.mutex);
  return s.add(fd, kind, tag, tid);
}

Result<HandleTable::Opened> HandleTable::open(HandleKind kind, const HandleTag& tag, int tid,
                                              Result<int> (*opener)(void* context),
                                              void* context) {
  State& s = state();
  MutexLock lock(s.mutex);
  Result<int> fd = opener(context);
  if (!fd) return std::unexpected(fd.error());
  try {
    return Opened{*fd, s.add(*fd, kind, tag, tid)};
  } catch (const std::bad_alloc&) {
    os::close(*fd);
    return fail(Step::TcrAllocate, ENOMEM, "the handle table");
  }
}

bool HandleTable::close(int fd, std::uint64_t serial) {
  State& s = state();
  MutexLock lock(s.mutex);
  if (fd < 0 || static_cast<std::size_t>(fd) >= s.by_fd.size()) return false;
  HandleEntry& e = s.at(fd);
  if (e.serial == 0 || e.serial != serial) return false;
  s.close_entry(e);
  return true;
}

std::size_t HandleTable::close_others(HandleChain& chain, HandleKind kind, int keep_fd) {
  State& s = state();
  MutexLock lock(s.mutex);
  std::size_t closed = 0;
  for (int fd = chain.head; fd >= 0;) {
    HandleEntry& e = s.at(fd);
    fd = e.next;
    if (e.kind == kind && e.fd != keep_fd) {
      s.close_entry(e);
      ++closed;
    }
  }
  return closed;
}

std::size_t HandleTable::close_chain(HandleChain& chain) {
  State& s = state();
  MutexLock lock(s.mutex);
  std::size_t closed = 0;
  while (chain.head >= 0) {
    s.close_entry(s.at(chain.head));
    ++closed;
  }
  return closed;
}

void HandleTable::detach_chain(HandleChain& chain) {
  State& s = state();
  MutexLock lock(s.mutex);
  while (chain.head >= 0) s.unlink(s.at(chain.head));
}

std::size_t HandleTable::count(std::uint64_t tcr_id, HandleKind kind) const {
  State& s = state();
  MutexLock lock(s.mutex);
  return static_cast<std::size_t>(std::count_if(s.by_fd.begin(), s.by_fd.end(), [&](const HandleEntry& e) {
    return e.serial != 0 && e.tcr_id == tcr_id && e.kind == kind;
  }));
}

bool HandleTable::lookup(int fd, HandleEntry* out) const {
  State& s = state();
  MutexLock lock(s.mutex);
  if (fd < 0 || static_cast<std::size_t>(fd) >= s.by_fd.size()) return false;
  const HandleEntry& e = s.by_fd[static_cast<std::size_t>(fd)];
  if (e.serial == 0) return false;
  *out = e;
  return true;
}

void HandleTable::for_each(const std::function<void(const HandleEntry&)>& fn) const {
  std::vector<HandleEntry> copy;
  {
    State& s = state();
    MutexLock lock(s.mutex);
    for (const HandleEntry& e : s.by_fd) {
      if (e.serial != 0) copy.push_back(e);
    }
  }
  for (const HandleEntry& e : copy) fn(e);
}

}  // namespace tcr
