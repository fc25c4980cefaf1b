// ResourceLedger on Linux: counts read from /proc with open/read/getdents64 into stack buffers.
// A snapshot opens one fd at a time, closes it before the next step, and leaves out the directory
// fd it lists /proc/.../fd through, so taking a snapshot changes none of the counts it reports.
// It allocates only for the map of fd kinds (one node per distinct kind, not per fd).
//
// Why /proc/thread-self and not /proc/self for fds, maps and statm: once the main thread has
// called pthread_exit, the group leader is a zombie and /proc/<tgid>/fd lists nothing,
// /proc/<tgid>/maps reads empty and statm reads zeros, so every leak check would pass vacuously.
// The calling thread's own directory shows the same (shared) fd table and address space.
// Threads are the exception: only /proc/<tgid>/task lists the whole group.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string_view>

#include "runtime/handle_table.h"
#include "runtime/os.h"
#include "runtime/resources.h"

namespace tcr {

namespace {

// A snapshot must never leave an fd behind, early returns included.
using os::ScopedFd;

// /proc/thread-self/<leaf>, or /proc/self/<leaf> on kernels before 3.17 (no thread-self).
// O_CLOEXEC: a concurrent fork+exec in another thread must not inherit the ledger's fd.
int open_proc(const char* leaf, int flags) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/thread-self/%s", leaf);
  int fd = ::open(path, flags | O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    std::snprintf(path, sizeof path, "/proc/self/%s", leaf);
    fd = ::open(path, flags | O_RDONLY | O_CLOEXEC);
  }
  return fd;
}

// read() that retries EINTR; /proc files are generated per read, so short reads are normal.
ssize_t read_some(int fd, char* buf, std::size_t size) {
  ssize_t n;
  do {
    n = ::read(fd, buf, size);
  } while (n < 0 && errno == EINTR);
  return n;
}

// Calls fn(name) for each entry of the open directory `dirfd` except "." and "..".
template <class Fn>
void for_each_entry(int dirfd, Fn&& fn) {
  alignas(dirent64) char buf[4096];
  for (;;) {
    const ssize_t n = ::getdents64(dirfd, buf, sizeof buf);
    if (n <= 0) return;  // 0: end; <0: the directory went away (EINTR does not occur here)
    for (ssize_t off = 0; off < n;) {
      const auto* d = reinterpret_cast<const dirent64*>(buf + off);
      off += d->d_reclen;
      if (d->d_name[0] == '.' &&
          (d->d_name[1] == '\0' || (d->d_name[1] == '.' && d->d_name[2] == '\0'))) {
        continue;
      }
      fn(d->d_name);
    }
  }
}

// The fd number an entry of /proc/.../fd names; -1 if the name is not a number.
int parse_fd(const char* name) {
  if (*name == '\0') return -1;
  int fd = 0;
  for (const char* p = name; *p; ++p) {
    if (*p < '0' || *p > '9' || fd > (1 << 27)) return -1;
    fd = fd * 10 + (*p - '0');
  }
  return fd;
}

// The kind of an fd, from its /proc/.../fd/N link target. `kind` is reused across fds, so once
// it has grown to the longest kind no fd costs an allocation.
void classify(std::string_view target, std::string& kind) {
  constexpr std::string_view kAnon = "anon_inode:";
  if (target.starts_with(kAnon)) {
    std::string_view what = target.substr(kAnon.size());  // "[eventfd]", or "inotify" unbracketed
    if (what.size() >= 2 && what.front() == '[' && what.back() == ']') {
      what = what.substr(1, what.size() - 2);
    }
    if (what == "pidfd" || what == "eventfd" || what == "userfaultfd") {
      kind.assign(what);
    } else {
      kind.assign("anon:").append(what);
    }
  } else if (target.starts_with("/dev/")) {
    kind.assign("device");
  } else if (target.starts_with("/memfd:")) {
    // memfd_create's files live nowhere on disk; telling them from files makes a leak readable.
    kind.assign("memfd");
  } else if (target.starts_with("/")) {
    kind.assign("file");
  } else if (const std::size_t bracket = target.find(":["); bracket != std::string_view::npos) {
    // "socket:[123]", "pipe:[456]", "net:[4026531840]" (namespace fds), "pidfd:[789]" (pidfs).
    kind.assign(target.substr(0, bracket));
  } else {
    kind.assign("other");
  }
}

// The link target of /proc/.../fd/<name> into buf (NUL-terminated, truncated to fit: the kind
// only needs the prefix). Empty view with errno set when the fd is gone or unreadable.
std::string_view fd_target(int dirfd, const char* name, char* buf, std::size_t size) {
  const ssize_t n = ::readlinkat(dirfd, name, buf, size - 1);
  if (n < 0) return {};
  buf[n] = '\0';
  return {buf, static_cast<std::size_t>(n)};
}

// Calls fn(fd, target) for every open fd except the listing's own. An fd closed by another
// thread between the listing and its readlink (ENOENT) is skipped: it is no longer open.
template <class Fn>
bool for_each_fd(char* target_buf, std::size_t target_size, Fn&& fn) {
  const ScopedFd dir(open_proc("fd", O_DIRECTORY));
  if (!dir.ok()) return false;
  for_each_entry(dir.get(), [&](const char* name) {
    const int fd = parse_fd(name);
    if (fd < 0 || fd == dir.get()) return;
    std::string_view target = fd_target(dir.get(), name, target_buf, target_size);
    if (target.empty()) {
      if (errno == ENOENT) return;
      target = "?";
    }
    fn(fd, target);
  });
  return true;
}

// Lines of /proc/.../maps, one per mapping. The buffer is on the stack: a heap buffer this size
// could be served by mmap and add the very mapping it is counting.
std::size_t count_maps() {
  const ScopedFd fd(open_proc("maps", 0));
  if (!fd.ok()) return 0;
  char buf[8192];
  std::size_t lines = 0;
  for (ssize_t n; (n = read_some(fd.get(), buf, sizeof buf)) > 0;) {
    for (const char* p = buf; (p = static_cast<const char*>(std::memchr(p, '\n', buf + n - p)));
         ++p) {
      ++lines;
    }
  }
  return lines;
}

std::size_t count_threads() {
  const ScopedFd dir(::open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.ok()) return 0;
  std::size_t threads = 0;
  for_each_entry(dir.get(), [&](const char*) { ++threads; });
  return threads;
}

// statm: "size resident shared text lib data dt", in pages.
std::size_t rss_kb() {
  const ScopedFd fd(open_proc("statm", 0));
  if (!fd.ok()) return 0;
  char buf[128];
  const ssize_t n = read_some(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return 0;
  buf[n] = '\0';
  unsigned long size = 0;
  unsigned long resident = 0;
  if (std::sscanf(buf, "%lu %lu", &size, &resident) != 2) return 0;
  static const long page_size = ::sysconf(_SC_PAGESIZE);
  return static_cast<std::size_t>(resident) * static_cast<std::size_t>(page_size) / 1024;
}

}  // namespace

ResourceCounts ResourceLedger::snapshot() const {
  ResourceCounts counts;
  std::string kind;
  char target[256];
  for_each_fd(target, sizeof target, [&](int, std::string_view link) {
    classify(link, kind);
    ++counts.fds;
    ++counts.fds_by_kind[kind];
  });
  if (const auto it = counts.fds_by_kind.find("pidfd"); it != counts.fds_by_kind.end()) {
    counts.pidfds = it->second;
  }
  counts.maps = count_maps();
  counts.threads = count_threads();
  counts.rss_kb = rss_kb();
  // Last, so that a leak in anything above that touched the port space would show here too.
  counts.port_names = port_names();
  return counts;
}

std::string ResourceLedger::dump() const {
  std::string out;
  std::string kind;
  char target[4096];  // PATH_MAX: dump prints the whole path
  const bool listed = for_each_fd(target, sizeof target, [&](int fd, std::string_view link) {
    classify(link, kind);
    char line[160];
    HandleEntry entry;
    if (HandleTable::instance().lookup(fd, &entry)) {
      std::snprintf(line, sizeof line, "fd %d %s tcr#%llu '%s'", fd, kind.c_str(),
                    static_cast<unsigned long long>(entry.tcr_id), entry.name);
      out.append(line);
      if (entry.tid != 0) {
        std::snprintf(line, sizeof line, " tid %d", entry.tid);
        out.append(line);
      }
      // The table thinks it owns an fd of another kind: someone closed a tagged fd behind the
      // table's back and the number was reused. Worth shouting about in a dump.
      if (kind != to_string(entry.kind) && entry.kind != HandleKind::Other) {
        out.append(" (table says ").append(to_string(entry.kind)).append(", is ").append(link);
        out.append(")");
      }
    } else {
      std::snprintf(line, sizeof line, "fd %d %s ", fd, kind.c_str());
      out.append(line).append(link);
    }
    out.append("\n");
  });
  if (!listed) {
    out.append("cannot list /proc/thread-self/fd: ").append(std::strerror(errno)).append("\n");
  }
  return out;
}

}  // namespace tcr
