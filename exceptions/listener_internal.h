// What ProtectedRegion needs of the ExceptionListener. Internal to exceptions/.
#pragma once

#include <shared_mutex>

#include "exceptions/listener_backend.h"
#include "runtime/error.h"

namespace tcr::detail {

// The listener's kernel side, opened now if not yet (the thread is not started). Errors are not
// cached: a later call tries again.
Result<ListenerBackend*> listener_backend();

// Held while a Listener-mode region arms pages (protect, collect): the listener thread runs
// (started now if it was not), and stop() waits until the session ends, so no page is armed
// with nobody to resolve its faults.
Result<std::shared_lock<std::shared_mutex>> listener_session();

// Fork (exceptions/fork_hooks.h): prepare waits for every session and holds the listener's locks;
// the child forgets the listener thread (not there) and the backend (the parent's kernel side).
void listener_fork_prepare();
void listener_fork_parent();
void listener_fork_child();

}  // namespace tcr::detail
