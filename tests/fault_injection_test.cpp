// Every OS call on the spawn and adopt paths made to fail through the shim: the error names the
// step and carries errno, the manager stays usable, and the ledger shows nothing leaked. And the
// names themselves: every Step and os::Call has one, and a Step's category says what its message
// prints of the code.
#include <gtest/gtest.h>
#include <errno.h>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <iterator>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "runtime/kernel_handle.h"

#include "runtime/os.h"
#include "testing/fault_injection.h"
#include "tests/test_support.h"

namespace tcr {
namespace {

struct Fault {
  os::Call call;
  int err;
  Step step;
  const char* name;
};

class SpawnFault : public ::testing::TestWithParam<Fault> {};

TEST_P(SpawnFault, NamesTheStepLeaksNothingAndTheManagerRecovers) {
  const Fault f = GetParam();
  auto m = test::make_manager();
  ASSERT_NE(m, nullptr);
  // Warm up so the baseline holds the steady state (GC heap, first arena).
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(m->join(*m->spawn("warm", [](Tcr&) { return nullptr; })));
  m->trim();  // no cached stack: the failing spawn must map one, and give it back on failure
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  const ManagerStats stats_before = m->stats();
  {
    os::ScopedFault fault(f.call, 1, f.err);
    bool ran = false;
    Result<ThreadRef> t = m->spawn("doomed", [&](Tcr&) {
      ran = true;
      return nullptr;
    });
    ASSERT_FALSE(t) << "spawn succeeded despite a failing " << os::to_string(f.call);
    EXPECT_EQ(t.error().step, f.step) << t.error().message();
    EXPECT_EQ(t.error().code, f.err);
    EXPECT_NE(t.error().message().find(strerrorname_np(f.err)), std::string::npos)
        << t.error().message();
    EXPECT_FALSE(ran);
  }
  test::expect_no_leak(before, test::settled(ledger));
  const ManagerStats s = m->stats();
  EXPECT_EQ(s.cached_stacks, 0u);  // the failed spawn's stack was unmapped, not cached
  EXPECT_EQ(s.live, 0u);
  EXPECT_EQ(s.spawned, stats_before.spawned);
  EXPECT_EQ(s.free_records, s.records);  // the record went back to the free list
  // Usable afterwards.
  Result<ThreadRef> t = m->spawn("after", [](Tcr&) { return test::as_ptr(3); });
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ(test::as_int(*m->join(*t)), 3u);
}

INSTANTIATE_TEST_SUITE_P(
    EveryAcquisition, SpawnFault,
    ::testing::Values(Fault{os::Call::Mmap, ENOMEM, Step::StackMmap, "StackMmap"},
                      Fault{os::Call::Mprotect, ENOMEM, Step::StackGuardMprotect, "GuardPage"},
                      Fault{os::Call::PthreadCreate, EAGAIN, Step::PthreadCreate, "PthreadCreate"},
                      Fault{os::Call::PidfdOpen, EMFILE, Step::PidfdOpen, "PidfdOpen"},
                      Fault{os::Call::GcRegister, ENOMEM, Step::GcRegister, "GcRegister"}),
    [](const ::testing::TestParamInfo<Fault>& p) { return p.param.name; });

class AdoptFault : public ::testing::TestWithParam<Fault> {};

// The foreign thread brings an alternate signal stack of its own (a runtime's, say): whichever
// step fails, adoption gives it back exactly, and so does release after the retry.
bool same_alt_stack(const stack_t& a, const stack_t& b) {
  return a.ss_sp == b.ss_sp && a.ss_size == b.ss_size && a.ss_flags == b.ss_flags;
}

TEST_P(AdoptFault, NamesTheStepLeaksNothingAndTheThreadCanRetry) {
  const Fault f = GetParam();
  auto m = test::make_manager();
  const ResourceLedger ledger;
  std::thread foreign([&] {
    std::vector<char> own(64 * 1024);
    stack_t mine{};
    mine.ss_sp = own.data();
    mine.ss_size = own.size();
    ASSERT_EQ(::sigaltstack(&mine, nullptr), 0);
    stack_t before_alt{};
    ASSERT_EQ(::sigaltstack(nullptr, &before_alt), 0);
    const ResourceCounts before = test::settled(ledger);
    {
      os::ScopedFault fault(f.call, 1, f.err);
      Result<Tcr*> t = m->adopt_current_thread("callback");
      ASSERT_FALSE(t);
      EXPECT_EQ(t.error().step, f.step) << t.error().message();
      EXPECT_EQ(t.error().code, f.err);
    }
    EXPECT_EQ(Tcr::current(), nullptr);
    stack_t after_alt{};
    ASSERT_EQ(::sigaltstack(nullptr, &after_alt), 0);
    EXPECT_TRUE(same_alt_stack(before_alt, after_alt))
        << "the failed adoption left the alternate stack at " << after_alt.ss_sp;
    test::expect_no_leak(before, test::settled(ledger));
    Result<Tcr*> retry = m->adopt_current_thread("callback");
    ASSERT_TRUE(retry) << retry.error().message();
    ASSERT_TRUE(m->release_current_thread());
    ASSERT_EQ(::sigaltstack(nullptr, &after_alt), 0);
    EXPECT_TRUE(same_alt_stack(before_alt, after_alt))
        << "release left the alternate stack at " << after_alt.ss_sp;
    stack_t off{};
    off.ss_flags = SS_DISABLE;
    ::sigaltstack(&off, nullptr);
  });
  foreign.join();
  EXPECT_TRUE(m->snapshot().value().empty());
}

INSTANTIATE_TEST_SUITE_P(
    EveryAcquisition, AdoptFault,
    ::testing::Values(Fault{os::Call::PidfdOpen, EMFILE, Step::PidfdOpen, "PidfdOpen"},
                      Fault{os::Call::Mmap, ENOMEM, Step::AltStackMmap, "AltStackMmap"},
                      Fault{os::Call::Mprotect, ENOMEM, Step::AltStackGuardMprotect, "AltGuardPage"},
                      Fault{os::Call::Sigaltstack, ENOMEM, Step::Sigaltstack, "Sigaltstack"},
                      Fault{os::Call::GcRegister, ENOMEM, Step::GcRegister, "GcRegister"}),
    [](const ::testing::TestParamInfo<Fault>& p) { return p.param.name; });

TEST(SpawnFaultUnderLoad, EveryTenthSpawnFailsAndNothingLeaks) {
  auto m = test::make_manager();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(m->join(*m->spawn("warm", [](Tcr&) { return nullptr; })));
  m->trim();
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  const os::Call calls[] = {os::Call::Mmap, os::Call::Mprotect, os::Call::PthreadCreate,
                            os::Call::PidfdOpen, os::Call::GcRegister};
  int failures = 0;
  for (int i = 0; i < 1000; ++i) {
    if (i % 10 == 0) {
      m->trim();  // so the armed spawn maps a stack, and a cached one cannot skip the mmap fault
      os::fail_nth(calls[(i / 10) % 5], 1, EAGAIN);
    }
    Result<ThreadRef> t = m->spawn("mixed", [](Tcr&) { return nullptr; });
    if (!t) {
      ++failures;
      continue;
    }
    ASSERT_TRUE(m->join(*t));
  }
  os::clear_faults();
  EXPECT_EQ(failures, 100);
  m->trim();
  test::expect_no_leak(before, test::settled(ledger));
}

TEST(FaultPlan, FailsExactlyTheNthCallAndTheOnesAfterIt) {
  const std::uint64_t start = os::call_count(os::Call::Poll);
  os::fail_nth(os::Call::Poll, 2, EINTR, 2);
  EXPECT_EQ(os::take_fault(os::Call::Poll), 0);
  EXPECT_EQ(os::take_fault(os::Call::Poll), EINTR);
  EXPECT_EQ(os::take_fault(os::Call::Poll), EINTR);
  EXPECT_EQ(os::take_fault(os::Call::Poll), 0);
  os::clear_faults();
  EXPECT_EQ(os::call_count(os::Call::Poll), start + 4);
}

// These go through the lists themselves (TCR_STEPS, TCR_OS_CALLS), so an entry added there is
// checked here without a word of this test changing.
TEST(Steps, EachHasItsOwnNameAndACategoryThatSaysHowItsCodeIsPrinted) {
  struct Listed {
    Step step;
    StepCategory category;
    std::string_view text;
  };
  const Listed listed[] = {
#define TCR_LISTED_STEP(name, category, text) {Step::name, StepCategory::category, text},
      TCR_STEPS(TCR_LISTED_STEP)
#undef TCR_LISTED_STEP
  };
  std::set<std::string_view> names;
  for (const Listed& l : listed) {
    const std::string_view name = to_string(l.step);
    SCOPED_TRACE(name);
    EXPECT_EQ(name, l.text);
    EXPECT_FALSE(name.empty());
    EXPECT_NE(name, "unknown step");
    EXPECT_TRUE(names.insert(name).second) << "two steps read alike";
    EXPECT_EQ(category(l.step), l.category);
    const std::string message = fail(l.step, EPERM).error().message();
    switch (category(l.step)) {
      case StepCategory::Errno:
        EXPECT_EQ(message, std::string(name) + ": " + std::strerror(EPERM) + " (EPERM)");
        break;
      case StepCategory::KernReturn:
        EXPECT_EQ(message, std::string(name) + ": kern_return_t " + std::to_string(EPERM));
        break;
      case StepCategory::Rule:
        EXPECT_EQ(message, name);
        break;
      default:
        ADD_FAILURE() << "no category";
    }
  }
  // ThreadExited is a rule of the API whose code is the kernel's ESRCH.
  EXPECT_EQ(category(Step::ThreadExited), StepCategory::Errno);
  EXPECT_EQ(category(Step::GcRegister), StepCategory::Errno);
  EXPECT_EQ(category(Step::MachMsg), StepCategory::KernReturn);
  EXPECT_EQ(category(Step::StaleThread), StepCategory::Rule);
  EXPECT_EQ(to_string(static_cast<Step>(std::size(listed))), "unknown step");
}

TEST(OsCalls, EachHasItsOwnName) {
  const os::Call listed[] = {
#define TCR_LISTED_CALL(name, text) os::Call::name,
      TCR_OS_CALLS(TCR_LISTED_CALL)
#undef TCR_LISTED_CALL
  };
  static_assert(std::size(listed) == static_cast<std::size_t>(os::Call::kCount));
  std::set<std::string_view> names;
  for (os::Call call : listed) {
    const std::string_view name = os::to_string(call);
    EXPECT_FALSE(name.empty());
    EXPECT_NE(name, "?");
    EXPECT_TRUE(names.insert(name).second) << name << ": two calls read alike";
  }
  EXPECT_STREQ(os::to_string(os::Call::kCount), "?");
}

}  // namespace
}  // namespace tcr

namespace tcr {
namespace {

// The message path: a failing pidfd_send_signal or tgkill comes back as that step with its errno,
// and the thread is unharmed.
class SignalFault : public ::testing::TestWithParam<HandleModeChoice> {};

TEST_P(SignalFault, NamesTheStepAndLeavesTheThreadAlone) {
  ManagerOptions options;
  options.handle_mode = GetParam();
  auto m = test::make_manager(std::move(options));
  std::atomic<bool> stop{false};
  Result<ThreadRef> t = m->spawn("target", [&](Tcr&) {
    while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return test::as_ptr(9);
  });
  ASSERT_TRUE(t);
  const bool pidfd = m->handle_mode() == HandleMode::Pidfd;
  {
    os::ScopedFault fault(pidfd ? os::Call::PidfdSendSignal : os::Call::Tgkill, 1, EPERM);
    Result<void> r = m->signal(*t, 0);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().step, pidfd ? Step::PidfdSendSignal : Step::Tgkill);
    EXPECT_EQ(r.error().code, EPERM);
    EXPECT_NE(r.error().message().find("EPERM"), std::string::npos) << r.error().message();
  }
  EXPECT_TRUE(m->signal(*t, 0));  // the next one goes through
  stop = true;
  Result<void*> v = m->join(*t);
  ASSERT_TRUE(v);
  EXPECT_EQ(test::as_int(*v), 9u);
}

INSTANTIATE_TEST_SUITE_P(HandleModes, SignalFault,
                         ::testing::Values(HandleModeChoice::Pidfd, HandleModeChoice::Tgkill),
                         [](const ::testing::TestParamInfo<HandleModeChoice>& p) {
                           return p.param == HandleModeChoice::Pidfd ? "Pidfd" : "Tgkill";
                         });

TEST(PollFault, AFailingPollOfAPidfdIsAnErrorNotADeadThread) {
  Result<KernelThreadHandle> h =
      KernelThreadHandle::open_current(HandleMode::Pidfd, HandleTag{4242, "poller"});
  ASSERT_TRUE(h);
  os::ScopedFault fault(os::Call::Poll, 1, ENOMEM);
  Result<bool> exited = h->wait_exit(0);
  ASSERT_FALSE(exited);
  EXPECT_EQ(exited.error().step, Step::PidfdPoll);
  EXPECT_EQ(exited.error().code, ENOMEM);
}

}  // namespace
}  // namespace tcr
