// ResourceLedger on Darwin. Compiled only on Apple (CMake adds resources_${TCR_PLATFORM}.cpp);
// it is NOT built on the Linux machines this project is developed on, so read it against the SDK
// headers named below when touching it.
//
// fds: proc_pidinfo(PROC_PIDLISTFDS), kinds from the proc_fdtype (vnodes split into "file" and
// "device" by path). No pidfds on Darwin: pidfds stays 0. Threads: task_threads, whose every
// thread send right and whose array are given back here — keeping them is exactly the seeds' leak
// (one port name per thread, forever). Mappings: top-level VM map entries. RSS: resident_size.
#include <libproc.h>        // proc_pidinfo, proc_pidfdinfo
#include <mach/mach.h>      // task_threads, task_info, mach_port_deallocate, vm_deallocate
#include <mach/mach_vm.h>   // mach_vm_region_recurse
#include <sys/proc_info.h>  // PROC_PIDLISTFDS, struct proc_fdinfo, PROX_FDTYPE_*
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "runtime/handle_table.h"
#include "runtime/resources.h"

namespace tcr {

namespace {

// The process's open fds. The kernel sizes its answer by the fd table, which other threads may
// grow between the two calls, hence the slack and the retry.
std::vector<proc_fdinfo> list_fds() {
  const pid_t pid = ::getpid();
  std::vector<proc_fdinfo> fds;
  int got = 0;
  for (int attempt = 0; attempt < 4; ++attempt) {
    const int needed = ::proc_pidinfo(pid, PROC_PIDLISTFDS, 0, nullptr, 0);
    if (needed <= 0) return {};
    fds.resize(static_cast<std::size_t>(needed) / sizeof(proc_fdinfo) + 16);
    const int bytes_size = static_cast<int>(fds.size() * sizeof(proc_fdinfo));
    got = ::proc_pidinfo(pid, PROC_PIDLISTFDS, 0, fds.data(), bytes_size);
    if (got <= 0) return {};
    if (got < bytes_size) break;  // a full buffer may mean it was cut short: ask again
  }
  // Only the entries the kernel filled in; the slack past them is zeroes, not fd 0.
  fds.resize(static_cast<std::size_t>(got) / sizeof(proc_fdinfo));
  return fds;
}

// The path of a vnode fd into buf (MAXPATHLEN bytes), or false when the fd is gone or is not one.
bool vnode_path(int fd, char* buf, std::size_t size) {
  vnode_fdinfowithpath info;
  const int got = ::proc_pidfdinfo(::getpid(), fd, PROC_PIDFDVNODEPATHINFO, &info,
                                   PROC_PIDFDVNODEPATHINFO_SIZE);
  if (got != PROC_PIDFDVNODEPATHINFO_SIZE) return false;
  std::snprintf(buf, size, "%s", info.pvip.vip_path);
  return true;
}

// Kinds named as on Linux where the concept is the same ("file", "device", "socket", "pipe").
// `path` is filled for vnodes (empty when it could not be read).
void classify(const proc_fdinfo& fd, std::string& kind, char* path, std::size_t path_size) {
  path[0] = '\0';
  switch (fd.proc_fdtype) {
    case PROX_FDTYPE_VNODE:
      if (vnode_path(fd.proc_fd, path, path_size) && std::strncmp(path, "/dev/", 5) == 0) {
        kind.assign("device");
      } else {
        kind.assign("file");
      }
      return;
    case PROX_FDTYPE_SOCKET:
      kind.assign("socket");
      return;
    case PROX_FDTYPE_PIPE:
      kind.assign("pipe");
      return;
    case PROX_FDTYPE_KQUEUE:
      kind.assign("kqueue");
      return;
    case PROX_FDTYPE_PSHM:
      kind.assign("pshm");
      return;
    case PROX_FDTYPE_PSEM:
      kind.assign("psem");
      return;
    case PROX_FDTYPE_FSEVENTS:
      kind.assign("fsevents");
      return;
    case PROX_FDTYPE_ATALK:
      kind.assign("atalk");
      return;
    default: {
      // Newer types (netpolicy, channel, nexus) are not in every SDK's headers: name by number.
      char name[32];
      std::snprintf(name, sizeof name, "fdtype:%u", static_cast<unsigned>(fd.proc_fdtype));
      kind.assign(name);
      return;
    }
  }
}

// task_threads hands us one send right per thread (a user reference added to the name libpthread
// already holds, or a fresh name) plus an out-of-line array. Both go back before we return.
std::size_t count_threads() {
  thread_act_array_t threads = nullptr;
  mach_msg_type_number_t count = 0;
  if (::task_threads(mach_task_self(), &threads, &count) != KERN_SUCCESS) return 0;
  for (mach_msg_type_number_t i = 0; i < count; ++i) {
    ::mach_port_deallocate(mach_task_self(), threads[i]);
  }
  ::vm_deallocate(mach_task_self(), reinterpret_cast<vm_address_t>(threads),
                  count * sizeof(threads[0]));
  return count;
}

// Top-level entries of the task's VM map. Submaps (the shared cache) are counted once, not
// descended into: their thousands of entries cost time and never change with thread lifetimes,
// while thread stacks and guard pages are top-level entries. mach_vm_region_recurse, unlike
// mach_vm_region, returns no object-name port that would need deallocating.
std::size_t count_maps() {
  std::size_t maps = 0;
  mach_vm_address_t address = 0;
  for (;;) {
    mach_vm_size_t size = 0;
    natural_t depth = 0;
    vm_region_submap_info_data_64_t info;
    mach_msg_type_number_t info_count = VM_REGION_SUBMAP_INFO_COUNT_64;
    const kern_return_t kr =
        ::mach_vm_region_recurse(mach_task_self(), &address, &size, &depth,
                                 reinterpret_cast<vm_region_recurse_info_t>(&info), &info_count);
    if (kr != KERN_SUCCESS) break;  // KERN_INVALID_ADDRESS: past the last region
    ++maps;
    address += size;
  }
  return maps;
}

std::size_t rss_kb() {
  mach_task_basic_info_data_t info;
  mach_msg_type_number_t count = MACH_TASK_BASIC_INFO_COUNT;
  if (::task_info(mach_task_self(), MACH_TASK_BASIC_INFO, reinterpret_cast<task_info_t>(&info),
                  &count) != KERN_SUCCESS) {
    return 0;
  }
  return static_cast<std::size_t>(info.resident_size / 1024);
}

}  // namespace

ResourceCounts ResourceLedger::snapshot() const {
  ResourceCounts counts;
  std::string kind;
  char path[MAXPATHLEN];
  for (const proc_fdinfo& fd : list_fds()) {
    classify(fd, kind, path, sizeof path);
    ++counts.fds;
    ++counts.fds_by_kind[kind];
  }
  counts.pidfds = 0;
  counts.maps = count_maps();
  counts.threads = count_threads();
  counts.rss_kb = rss_kb();
  // Last: a right that count_threads failed to give back would show up in this very snapshot.
  counts.port_names = port_names();
  return counts;
}

std::string ResourceLedger::dump() const {
  std::string out;
  std::string kind;
  char path[MAXPATHLEN];
  for (const proc_fdinfo& fd : list_fds()) {
    classify(fd, kind, path, sizeof path);
    char line[160];
    HandleEntry entry;
    if (HandleTable::instance().lookup(fd.proc_fd, &entry)) {
      std::snprintf(line, sizeof line, "fd %d %s tcr#%llu '%s'", fd.proc_fd, kind.c_str(),
                    static_cast<unsigned long long>(entry.tcr_id), entry.name);
      out.append(line);
      if (entry.tid != 0) {
        std::snprintf(line, sizeof line, " tid %d", entry.tid);
        out.append(line);
      }
    } else {
      std::snprintf(line, sizeof line, "fd %d %s", fd.proc_fd, kind.c_str());
      out.append(line);
      if (path[0] != '\0') out.append(" ").append(path);
    }
    out.append("\n");
  }
  return out;
}

}  // namespace tcr
