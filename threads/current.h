// The calling thread's Tcr. A plain thread_local pointer: no constructor or destructor, so it is
// readable from a signal handler and still valid while pthread key destructors run at exit.
#pragma once

namespace tcr {
class ThreadRecord;
namespace detail {
inline thread_local ThreadRecord* t_current = nullptr;
}  // namespace detail
}  // namespace tcr
