// HandleTable: every kernel handle (fd) tcr opens, tagged with the TCR it belongs to, so that a
// resource dump says whose each fd is (the annotated port dump the seeds wished Darwin had) and so
// that shutdown can close a thread's extra handles exactly once. Entries carry a serial: closing
// by (fd, serial) is a no-op when the entry was already closed, even if the fd number has since
// been reused. An owner's handles are also linked into its HandleChain, so closing a thread's
// extras costs what that thread holds, not what the table ever held (a server that once had
// 100,000 fds open must not pay for them at every thread exit). Thread-safe (one mutex); not for
// signal handlers. Indexed by fd: no allocation once the table has grown to the highest fd.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

#include "runtime/error.h"

namespace tcr {

enum class HandleKind : std::uint8_t { Pidfd, Eventfd, Userfaultfd, Other };
const char* to_string(HandleKind kind);

// The handles one owner (a TCR) holds, linked through the table's entries. It lives in the
// owner, which must outlive the links: detach_chain() unlinks whatever is still open before the
// owner goes away or is reused.
struct HandleChain {
  int head = -1;  // fd of the newest entry, -1 when empty
};

struct HandleTag {
  std::uint64_t tcr_id = 0;      // 0: owned by the manager itself, not a thread
  std::string_view name;         // the thread's name; copied (truncated to 31 bytes) into the table
  HandleChain* chain = nullptr;  // the owner's chain (Tcr::handle_tag()), or none
};

struct HandleEntry {
  int fd;
  HandleKind kind;
  std::uint64_t serial;
  std::uint64_t tcr_id;
  int tid;            // the thread the handle names, or 0
  char name[32];
  // Links of the owner's chain (fds, -1 at the ends).
  HandleChain* chain;
  int prev;
  int next;
};

class HandleTable {
 public:
  static HandleTable& instance();

  // Records a freshly opened fd. Returns its serial (never 0).
  std::uint64_t add(int fd, HandleKind kind, const HandleTag& tag, int tid);
  // Opens a handle with `opener` (one system call, answering the fd) and records it, both under
  // the table's lock, so that a fork never copies an fd that is open and not yet recorded: the
  // child could neither tell whose it is nor close it.
  struct Opened {
    int fd;
    std::uint64_t serial;
  };
  Result<Opened> open(HandleKind kind, const HandleTag& tag, int tid,
                      Result<int> (*opener)(void* context), void* context);
  // Closes fd if (fd, serial) is still recorded; returns whether it closed it.
  bool close(int fd, std::uint64_t serial);
  // Closes every handle of `kind` in `chain` except `keep_fd`; returns how many it closed. Costs
  // the chain's length.
  std::size_t close_others(HandleChain& chain, HandleKind kind, int keep_fd);
  // Closes every handle in `chain`, whatever its kind; returns how many. For an owner whose
  // thread is gone with all its handles (a thread a forked child does not have).
  std::size_t close_chain(HandleChain& chain);
  // Unlinks whatever is still in `chain` without closing it (its owner is going away).
  void detach_chain(HandleChain& chain);
  // Handles of `kind` tagged with tcr_id. Scans the table: for tests and dumps.
  std::size_t count(std::uint64_t tcr_id, HandleKind kind) const;
  // Copy of the entry for fd, if tcr recorded it.
  bool lookup(int fd, HandleEntry* out) const;
  void for_each(const std::function<void(const HandleEntry&)>& fn) const;
};

}  // namespace tcr
