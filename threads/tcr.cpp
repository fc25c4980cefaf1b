#include "threads/tcr.h"

#include "threads/current.h"

namespace tcr {

const char* to_string(TcrState state) {
  switch (state) {
    case TcrState::Free: return "free";
    case TcrState::Reserved: return "reserved";
    case TcrState::Starting: return "starting";
    case TcrState::Running: return "running";
    case TcrState::Exiting: return "exiting";
    case TcrState::Dead: return "dead";
  }
  return "?";
}

Tcr* Tcr::current() { return detail::t_current; }

}  // namespace tcr
