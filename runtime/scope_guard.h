// ScopeGuard: runs its function when the scope ends, unless dismissed. One per acquisition on a
// path that can fail part-way, so "whatever was acquired before the failure is released" holds
// by construction instead of being listed again at each exit.
#pragma once

#include <utility>

namespace tcr {

template <typename Release>
class [[nodiscard]] ScopeGuard {
 public:
  explicit ScopeGuard(Release release) : m_release(std::move(release)) {}
  ~ScopeGuard() {
    if (m_armed) m_release();
  }
  ScopeGuard(const ScopeGuard&) = delete;
  ScopeGuard& operator=(const ScopeGuard&) = delete;

  // The acquisition succeeded for good: keep it.
  void dismiss() { m_armed = false; }

 private:
  Release m_release;
  bool m_armed = true;
};

}  // namespace tcr
