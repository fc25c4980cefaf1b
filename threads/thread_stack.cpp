#include "threads/thread_stack.h"

#include <sys/mman.h>
#include <unistd.h>

#include "runtime/os.h"

namespace tcr {

std::size_t page_size() {
  static const std::size_t s_page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return s_page;
}

std::size_t alt_stack_bytes() {
  static const std::size_t s_size = [] {
    std::size_t want = std::size_t{64} << 10;
    const long sig = sysconf(_SC_SIGSTKSZ);
    if (sig > 0 && static_cast<std::size_t>(sig) * 4 > want)
      want = static_cast<std::size_t>(sig) * 4;
    return (want + page_size() - 1) & ~(page_size() - 1);
  }();
  return s_size;
}

// ---- ThreadStack ------------------------------------------------------------------------------

Result<void> ThreadStack::prepare(std::size_t stack_size) {
  const std::size_t page = page_size();
  const std::size_t stack = (stack_size + page - 1) & ~(page - 1);
  const std::size_t total = page + stack + page + alt_stack_bytes();
  if (m_map != nullptr && m_map_size == total) return {};
  release();
  Result<void*> map =
      os::mmap_anonymous(total, PROT_READ | PROT_WRITE, /*stack=*/true, Step::StackMmap);
  if (!map) return std::unexpected(map.error());
  m_map = *map;
  m_map_size = total;
  m_stack = stack;
  char* base = static_cast<char*>(*map);
  for (char* guard_page : {base, base + page + stack}) {
    if (Result<void> guard = os::mprotect(guard_page, page, PROT_NONE, Step::StackGuardMprotect);
        !guard) {
      release();  // a failed prepare holds nothing
      return guard;
    }
  }
  return {};
}

void ThreadStack::release() {
  if (m_map == nullptr) return;
  os::munmap(m_map, m_map_size);
  m_map = nullptr;
  m_map_size = 0;
  m_stack = 0;
}

void* ThreadStack::low() const {
  return m_map == nullptr ? nullptr : static_cast<char*>(m_map) + page_size();
}

void* ThreadStack::high() const {
  return m_map == nullptr ? nullptr : static_cast<char*>(low()) + m_stack;
}

void* ThreadStack::alt() const {
  return m_map == nullptr ? nullptr : static_cast<char*>(high()) + page_size();
}

// ---- AltStack ---------------------------------------------------------------------------------

Result<void> AltStack::map_own() {
  const std::size_t size = page_size() + alt_stack_bytes();
  Result<void*> map = os::mmap_anonymous(size, PROT_READ | PROT_WRITE, false, Step::AltStackMmap);
  if (!map) return std::unexpected(map.error());
  m_own = *map;
  m_own_size = size;
  if (Result<void> guard = os::mprotect(*map, page_size(), PROT_NONE, Step::AltStackGuardMprotect);
      !guard) {
    unmap_own();
    return guard;
  }
  return {};
}

Result<void> AltStack::install(void* sp, std::size_t size) {
  if (sp == nullptr && m_own != nullptr) {
    sp = static_cast<char*>(m_own) + page_size();
    size = alt_stack_bytes();
  }
  stack_t alt{};
  alt.ss_sp = sp;
  alt.ss_size = size;
  Result<stack_t> prev = os::sigaltstack(alt);
  if (!prev) return std::unexpected(prev.error());
  m_prev = *prev;
  m_stack = sp;
  m_size = size;
  return {};
}

bool AltStack::restore() {
  stack_t now{};
  if (::sigaltstack(nullptr, &now) == 0 && (now.ss_flags & SS_ONSTACK) != 0) {
    m_own = nullptr;  // left mapped: the thread runs on it
    m_own_size = 0;
    m_stack = nullptr;
    m_size = 0;
    return false;
  }
  // Releasing, with the raw call (a release is not fault-injected): the previous stack was valid
  // when it was installed, so putting it back (or disabling ours, if there was none) does not
  // fail.
  stack_t back = m_prev;
  if ((back.ss_flags & SS_DISABLE) != 0 || back.ss_sp == nullptr) {
    back = stack_t{};
    back.ss_flags = SS_DISABLE;
  }
  ::sigaltstack(&back, nullptr);
  m_prev = stack_t{};
  unmap_own();
  m_stack = nullptr;
  m_size = 0;
  return true;
}

void AltStack::unmap_own() {
  if (m_own == nullptr) return;
  os::munmap(m_own, m_own_size);
  m_own = nullptr;
  m_own_size = 0;
}

void AltStack::forget() {
  unmap_own();
  m_stack = nullptr;
  m_size = 0;
  m_prev = stack_t{};
}

}  // namespace tcr
