// The GC-trap layer's part in fork() (runtime/fork.h). Internal to exceptions/.
// In the child the listener thread does not exist, and the kernel side of the Listener and Async
// modes belongs to the parent: a userfaultfd acts on the memory of the process that opened it
// (UFFDIO_WRITEPROTECT through the child's copy would change the parent's pages) and the pagemap
// fd reads the parent's page tables. The child's copies of registered ranges are registered with
// no userfaultfd at all: tcr opens its userfaultfds without UFFD_FEATURE_EVENT_FORK, so the kernel
// drops the child's registrations and write-protect bits at the fork, and its copies of those
// pages are plain writable memory.
// So the child closes its copies of those fds and forgets the listener; the next Listener-mode
// region to arm pages (or ExceptionListener::start) opens a userfaultfd of the child's own and
// starts a listener thread there. An inherited Listener or Async region that was armed counts
// every page as written in the child; its next protect() or collect_dirty() registers it with the
// child's userfaultfd (collect_dirty reports every page and arms them again), and its destruction
// leaves the parent's registration alone. Signal-mode regions need nothing: their protection and
// the SIGSEGV handlers are inherited. A page that a thread of the parent was resolving (Busy) is
// made writable and counted as written.
#pragma once

namespace tcr::detail {

// Takes part in every later fork (idempotent): the first region, listener start or mode probe
// calls it.
void fork_participate_exceptions();

}  // namespace tcr::detail
