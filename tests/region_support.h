// Helpers of the ProtectedRegion tests: memory the test owns, a collect that expects success, and
// a fixture that makes a region in exactly the mode under test (skipping a mode this kernel lacks).
#pragma once

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "exceptions/protected_region.h"

namespace tcr::test {

inline std::size_t page() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }

// An anonymous mapping the test owns, mapped with `prot`; a region never maps or unmaps its
// memory. base is null if the mapping failed.
struct Mapping {
  explicit Mapping(std::size_t pages, int prot = PROT_READ | PROT_WRITE, int flags = MAP_PRIVATE)
      : length(pages * page()) {
    void* p = mmap(nullptr, length, prot, flags | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(p, MAP_FAILED) << std::strerror(errno);
    base = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
  }
  ~Mapping() {
    if (base != nullptr) munmap(base, length);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  char* page_at(std::size_t i) const { return base + i * page(); }
  char* base;
  std::size_t length;
};

inline std::vector<std::size_t> collect(ProtectedRegion& r) {
  Result<std::vector<std::size_t>> pages = r.collect_dirty();
  EXPECT_TRUE(pages) << (pages ? "" : pages.error().message());
  return pages ? *pages : std::vector<std::size_t>{};
}

inline Result<std::unique_ptr<ProtectedRegion>> create_in(TrapMode mode, void* base,
                                                          std::size_t length) {
  RegionOptions options;
  options.mode = mode;
  options.fall_back = false;
  return ProtectedRegion::create(base, length, options);
}

class RegionModeTest : public ::testing::TestWithParam<TrapMode> {
 protected:
  // The region in exactly the mode under test, or null with m_skip saying why this kernel lacks
  // the mode.
  std::unique_ptr<ProtectedRegion> make(void* base, std::size_t length) {
    Result<std::unique_ptr<ProtectedRegion>> r = create_in(GetParam(), base, length);
    if (!r && r.error().step == Step::ModeUnavailable) {
      m_skip = r.error().message();
      return nullptr;
    }
    EXPECT_TRUE(r) << (r ? "" : r.error().message());
    if (!r) return nullptr;
    EXPECT_EQ((*r)->mode(), GetParam());
    return std::move(*r);
  }
  bool traps_expected() const { return GetParam() != TrapMode::Async; }
  std::string m_skip;
};

inline std::string mode_name(const ::testing::TestParamInfo<TrapMode>& param) {
  return to_string(param.param);
}

}  // namespace tcr::test

#define MAKE_OR_SKIP(var, base, length)                \
  auto var = make(base, length);                       \
  if (!var && !m_skip.empty()) GTEST_SKIP() << m_skip; \
  ASSERT_NE(var, nullptr)
