// The Darwin exception listener's port rights (exceptions/mach_exception_rights.h), as
// specifications, on MachModel: what the Darwin listener runs on XnuPortSpace, here on a model
// of one Mach IPC space. Seed 001: "Mach messages received from the kernel after registering with
// thread_swap_exception_ports may contain Mach ports ... Any such ports must be deallocated by the
// receiver", or "the extra ... references to the thread port would eventually turn into dead
// names after the thread died, but would never go away".
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "exceptions/mach_exception_rights.h"
#include "runtime/mach_ports.h"
#include "testing/mach_model.h"

namespace tcr::mach {
namespace {

constexpr int kMessages = 1'000'000;
constexpr int kCheckEvery = 10'000;

// A PortSpace that forwards to a MachModel and, after every call that changes the space, looks
// at the name it touched: a dead name there, even for a moment, is counted. Can also fail one
// kind of call, for the error paths no model state reaches.
class WatchedSpace final : public PortSpace {
 public:
  explicit WatchedSpace(MachModel& model) : m_model(model) {}

  KernReturn get_refs(PortName name, Right right, Urefs* refs) override {
    return m_model.get_refs(name, right, refs);
  }
  KernReturn mod_refs(PortName name, Right right, int delta) override {
    return watch(name, m_model.mod_refs(name, right, delta));
  }
  KernReturn deallocate(PortName name) override { return watch(name, m_model.deallocate(name)); }
  KernReturn names_count(std::size_t* count) override { return m_model.names_count(count); }
  PortName current_thread_port() override { return m_model.current_thread_port(); }
  KernReturn allocate_receive(PortName* name) override {
    if (m_fail_allocate != kSuccess) return m_fail_allocate;
    const KernReturn kr = m_model.allocate_receive(name);
    return kr == kSuccess ? watch(*name, kr) : kr;
  }
  KernReturn insert_send_right(PortName name) override {
    if (m_fail_insert != kSuccess) return m_fail_insert;
    return watch(name, m_model.insert_send_right(name));
  }

  std::size_t dead_names_seen() const { return m_dead_names_seen; }
  void fail_allocate(KernReturn kr) { m_fail_allocate = kr; }
  void fail_insert(KernReturn kr) { m_fail_insert = kr; }

 private:
  KernReturn watch(PortName name, KernReturn kr) {
    if (m_model.is_dead_name(name)) ++m_dead_names_seen;
    return kr;
  }

  MachModel& m_model;
  std::size_t m_dead_names_seen = 0;
  KernReturn m_fail_allocate = kSuccess;
  KernReturn m_fail_insert = kSuccess;
};

// --- Exception messages and the rights they carry ---

TEST(MachExceptionRights, BehaviorsAreMachsValuesWith64BitCodes) {
  EXPECT_EQ(behavior_value(ExceptionBehavior::State), 0x80000002u);
  EXPECT_EQ(behavior_value(ExceptionBehavior::StateIdentity), 0x80000003u);
}

TEST(MachExceptionRights, AMillionIdentityMessagesReleasedAfterHandlingChangeNoNameOrUref) {
  MachModel m;
  const std::size_t space_baseline = m.names();
  std::vector<ThreadId> threads;
  for (int i = 0; i < 4; ++i) threads.push_back(m.create_thread());
  const std::size_t baseline = m.names();
  const PortName task = m.task_port();
  for (int i = 0; i < kMessages; ++i) {
    const ThreadId t = threads[i % threads.size()];
    const ExceptionRights rights = m.deliver_exception_message(t, /*carries_identity=*/true);
    ASSERT_EQ(rights.thread, m.thread_port(t));  // the handler's use of the identity
    ASSERT_EQ(rights.task, task);
    const Result<void> released =
        release_exception_rights(m, ExceptionBehavior::StateIdentity, rights);
    ASSERT_TRUE(released) << released.error().message();
    if (i % kCheckEvery == 0) {
      ASSERT_EQ(m.names(), baseline) << "after message " << i;
      ASSERT_EQ(m.urefs(rights.thread, Right::Send), 1u) << "after message " << i;
      ASSERT_EQ(m.urefs(task, Right::Send), 1u) << "after message " << i;
    }
  }
  EXPECT_EQ(m.names(), baseline);
  for (ThreadId t : threads) EXPECT_EQ(m.urefs(m.thread_port(t), Right::Send), 1u);
  EXPECT_EQ(m.urefs(task, Right::Send), 1u);
  for (ThreadId t : threads) m.terminate_thread(t);
  EXPECT_EQ(m.names(), space_baseline);          // no dead names: the threads' ports went with them
  EXPECT_EQ(m.failed_exit_deallocations(), 0u);  // and libpthread's uref was never taken
}

// Seed 001's leak, made concrete: the same million messages, kept. 7 of 10 threads take faults.
TEST(MachExceptionRights, WithTheReleaseOffTheSameMessagesLeaveADeadNamePerFaultingThread) {
  MachModel m;
  const std::size_t space_baseline = m.names();
  std::vector<ThreadId> threads;
  for (int i = 0; i < 10; ++i) threads.push_back(m.create_thread());
  const std::size_t baseline = m.names();
  constexpr int kFaulting = 7;
  std::vector<PortName> faulting_ports;
  for (int i = 0; i < kFaulting; ++i) faulting_ports.push_back(m.thread_port(threads[i]));
  const PortName task = m.task_port();
  for (int i = 0; i < kMessages; ++i) {
    const ThreadId t = threads[i % kFaulting];
    const ExceptionRights rights = m.deliver_exception_message(t, true);
    ASSERT_TRUE(release_exception_rights(m, ExceptionBehavior::StateIdentity, rights,
                                         RightsDisposal::Keep));
    if (i % kCheckEvery == 0 || i == kMessages - 1) {
      // Urefs grow with every message (names do not) until XNU pegs them at the maximum.
      const Urefs per_thread = static_cast<Urefs>(i / kFaulting + 1);
      const Urefs expected = std::min<std::uint64_t>(1 + per_thread, kUrefsMax);
      ASSERT_EQ(m.urefs(faulting_ports[0], Right::Send), expected) << "after message " << i;
      ASSERT_EQ(m.urefs(task, Right::Send), std::min<std::uint64_t>(2 + i, kUrefsMax));
      ASSERT_EQ(m.names(), baseline);
    }
  }
  for (PortName port : faulting_ports) EXPECT_EQ(m.urefs(port, Right::Send), kUrefsMax);
  for (int i = kFaulting; i < 10; ++i) {
    EXPECT_EQ(m.urefs(m.thread_port(threads[i]), Right::Send), 1u);  // no message, no growth
  }

  for (ThreadId t : threads) m.terminate_thread(t);
  EXPECT_EQ(m.live_threads(), 0u);
  EXPECT_EQ(m.names(), space_baseline + kFaulting);  // one dead name per faulting thread
  for (PortName port : faulting_ports) {
    EXPECT_TRUE(m.is_dead_name(port));
    EXPECT_EQ(m.urefs(port, Right::DeadName), kUrefsMax);  // pegged: no deallocate frees it
  }
  EXPECT_EQ(m.urefs(task, Right::Send), kUrefsMax);  // and the task port's count is lost for good
}

TEST(MachExceptionRights, EveryThreadThatGotUnreleasedMessagesLeavesOneDeadNameWithThoseUrefs) {
  MachModel m;
  const std::size_t baseline = m.names();
  std::vector<PortName> ports;
  for (Urefs messages = 0; messages < 6; ++messages) {
    const ThreadId t = m.create_thread();
    ports.push_back(m.thread_port(t));
    for (Urefs k = 0; k < messages; ++k) {
      ASSERT_TRUE(release_exception_rights(m, ExceptionBehavior::StateIdentity,
                                           m.deliver_exception_message(t, true),
                                           RightsDisposal::Keep));
    }
    m.terminate_thread(t);
  }
  EXPECT_EQ(m.names(), baseline + 5);  // the thread that took no message left nothing
  EXPECT_FALSE(m.has_name(ports[0]));
  for (Urefs messages = 1; messages < 6; ++messages) {
    EXPECT_TRUE(m.is_dead_name(ports[messages]));
    EXPECT_EQ(m.urefs(ports[messages], Right::DeadName), messages);
  }
  EXPECT_EQ(m.urefs(m.task_port(), Right::Send), 1u + 15u);
}

TEST(MachExceptionRights, AStateMessageCarriesNoRightsAndReleasingItChangesNothing) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const std::size_t baseline = m.names();
  for (int i = 0; i < 1000; ++i) {
    const ExceptionRights rights = m.deliver_exception_message(t, /*carries_identity=*/false);
    ASSERT_EQ(rights.thread, kPortNull);
    ASSERT_EQ(rights.task, kPortNull);
    ASSERT_TRUE(release_exception_rights(m, ExceptionBehavior::State, rights));
  }
  EXPECT_EQ(m.names(), baseline);
  EXPECT_EQ(m.urefs(m.thread_port(t), Right::Send), 1u);
  EXPECT_EQ(m.urefs(m.task_port(), Right::Send), 1u);
  m.terminate_thread(t);
  EXPECT_EQ(m.names(), baseline - 1);
}

// Releasing rights a State message never carried would take someone else's urefs: here
// libpthread's, so the thread's exit could no longer deallocate its own (an over-release).
TEST(MachExceptionRights, RightsClaimedForAStateMessageAreRefusedAndNothingIsReleased) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const ExceptionRights claimed{m.thread_port(t), m.task_port()};
  for (RightsDisposal d : {RightsDisposal::Release, RightsDisposal::Keep}) {
    const Result<void> r = release_exception_rights(m, ExceptionBehavior::State, claimed, d);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().step, Step::BadArgument);
  }
  EXPECT_EQ(m.urefs(claimed.thread, Right::Send), 1u);
  EXPECT_EQ(m.urefs(claimed.task, Right::Send), 1u);
  m.terminate_thread(t);
  EXPECT_EQ(m.failed_exit_deallocations(), 0u);
}

TEST(MachExceptionRights, ReleasingANameThatIsNotThereFailsAtMachDeallocateAndChangesNothing) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const std::size_t baseline = m.names();
  const ExceptionRights bogus{0x4203, 0x5503};
  const Result<void> r = release_exception_rights(m, ExceptionBehavior::StateIdentity, bogus);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().step, Step::MachDeallocate);
  EXPECT_EQ(r.error().code, kInvalidName);
  EXPECT_NE(r.error().message().find("0x4203"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("thread"), std::string::npos) << r.error().message();
  EXPECT_EQ(m.names(), baseline);
  EXPECT_EQ(m.urefs(m.thread_port(t), Right::Send), 1u);
  EXPECT_EQ(m.urefs(m.task_port(), Right::Send), 1u);
}

// Each right is the message's own: a bad thread name must not cost the task right its release.
TEST(MachExceptionRights, ABadThreadNameStillReleasesTheTaskRightTheMessageCarried) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const std::size_t baseline = m.names();
  ExceptionRights rights = m.deliver_exception_message(t, true);
  ASSERT_EQ(m.urefs(rights.task, Right::Send), 2u);
  const PortName real_thread = rights.thread;
  rights.thread = 0x4203;  // a corrupted name
  const Result<void> r = release_exception_rights(m, ExceptionBehavior::StateIdentity, rights);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().step, Step::MachDeallocate);
  EXPECT_EQ(r.error().code, kInvalidName);
  EXPECT_EQ(m.urefs(rights.task, Right::Send), 1u);
  EXPECT_EQ(m.urefs(real_thread, Right::Send), 2u);  // the thread right stays: its name was lost
  EXPECT_EQ(m.names(), baseline);
}

// The faulting thread can die while its message waits: the name is then a dead name holding the
// message's uref, and the same release frees it.
TEST(MachExceptionRights, AThreadThatExitsBeforeTheReleaseLeavesNoDeadName) {
  MachModel m;
  const std::size_t baseline = m.names();
  const ThreadId t = m.create_thread();
  const ExceptionRights rights = m.deliver_exception_message(t, true);
  m.terminate_thread(t);
  ASSERT_TRUE(m.is_dead_name(rights.thread));
  ASSERT_TRUE(release_exception_rights(m, ExceptionBehavior::StateIdentity, rights));
  EXPECT_FALSE(m.has_name(rights.thread));
  EXPECT_EQ(m.names(), baseline);
  EXPECT_EQ(m.failed_exit_deallocations(), 0u);
}

// A port that dies while the message is in flight arrives as MACH_PORT_DEAD: nothing to release.
TEST(MachExceptionRights, ARightThatDiedInFlightNeedsNoRelease) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const std::size_t baseline = m.names();
  ExceptionRights rights = m.deliver_exception_message(t, true);
  ASSERT_EQ(m.deallocate(rights.thread), kSuccess);  // what the kernel's copyout would not do
  rights.thread = kPortDead;
  ASSERT_TRUE(release_exception_rights(m, ExceptionBehavior::StateIdentity, rights));
  EXPECT_EQ(m.names(), baseline);
  EXPECT_EQ(m.urefs(m.task_port(), Right::Send), 1u);
}

// --- A thread's exception port ---

TEST(MachExceptionRights, AnExceptionPortIsOneNameWithTheReceiveRightAndOneSendUref) {
  MachModel m;
  const std::size_t baseline = m.names();
  const Result<PortName> port = create_exception_port(m);
  ASSERT_TRUE(port) << port.error().message();
  EXPECT_EQ(m.urefs(*port, Right::Receive), 1u);
  EXPECT_EQ(m.urefs(*port, Right::Send), 1u);
  EXPECT_EQ(m.names(), baseline + 1);
  ASSERT_TRUE(destroy_exception_port(m, *port));
  EXPECT_FALSE(m.has_name(*port));
  EXPECT_EQ(m.names(), baseline);
}

constexpr int kThreadLifetimes = 100'000;

TEST(MachExceptionRights, AHundredThousandThreadsExceptionPortsKeepNamesFlatAndNeverADeadName) {
  MachModel m;
  WatchedSpace space(m);
  const std::size_t baseline = m.names();
  for (int i = 0; i < kThreadLifetimes; ++i) {
    const ThreadId t = m.create_thread();  // attach runs on the new thread
    const Result<PortName> port = create_exception_port(space);
    ASSERT_TRUE(port) << port.error().message();
    for (int k = 0; k < i % 3; ++k) {  // a few faults, as the listener asks for them: State
      ASSERT_TRUE(release_exception_rights(space, ExceptionBehavior::State,
                                           m.deliver_exception_message(t, false)));
    }
    const Result<void> destroyed = destroy_exception_port(space, *port);  // detach
    ASSERT_TRUE(destroyed) << destroyed.error().message();
    ASSERT_FALSE(m.has_name(*port));
    m.terminate_thread(t);
    ASSERT_EQ(m.names(), baseline) << "after thread " << i;
  }
  EXPECT_EQ(space.dead_names_seen(), 0u);
  EXPECT_EQ(m.failed_exit_deallocations(), 0u);
}

// Why destroy_exception_port releases the send uref first.
TEST(MachExceptionRights, DestroyingTheReceiveRightFirstWouldLeaveADeadName) {
  MachModel m;
  WatchedSpace space(m);
  const std::size_t baseline = m.names();
  const Result<PortName> port = create_exception_port(space);
  ASSERT_TRUE(port);
  ASSERT_EQ(space.mod_refs(*port, Right::Receive, -1), kSuccess);
  EXPECT_TRUE(m.is_dead_name(*port));
  EXPECT_EQ(space.dead_names_seen(), 1u);
  EXPECT_EQ(m.names(), baseline + 1);  // until someone remembers the send uref
  ASSERT_EQ(space.deallocate(*port), kSuccess);
  EXPECT_EQ(m.names(), baseline);
}

TEST(MachExceptionRights, AFailedAllocateIsReportedAndLeavesNothing) {
  MachModel m;
  WatchedSpace space(m);
  const std::size_t baseline = m.names();
  space.fail_allocate(kNoSpace);
  const Result<PortName> port = create_exception_port(space);
  ASSERT_FALSE(port);
  EXPECT_EQ(port.error().step, Step::MachAllocate);
  EXPECT_EQ(port.error().code, kNoSpace);
  EXPECT_EQ(m.names(), baseline);
}

TEST(MachExceptionRights, AFailedInsertRightDestroysTheReceiveRightAgain) {
  MachModel m;
  WatchedSpace space(m);
  const std::size_t baseline = m.names();
  space.fail_insert(kResourceShortage);
  const Result<PortName> port = create_exception_port(space);
  ASSERT_FALSE(port);
  EXPECT_EQ(port.error().step, Step::MachInsertRight);
  EXPECT_EQ(port.error().code, kResourceShortage);
  EXPECT_EQ(m.names(), baseline);
  EXPECT_EQ(space.dead_names_seen(), 0u);
}

// A space that only counts (PortSpace's defaults) cannot make ports, and says so.
TEST(MachExceptionRights, ASpaceThatCannotMakePortsAnswersNotSupported) {
  class CountingOnly final : public PortSpace {
   public:
    KernReturn get_refs(PortName, Right, Urefs*) override { return kInvalidName; }
    KernReturn mod_refs(PortName, Right, int) override { return kInvalidName; }
    KernReturn deallocate(PortName) override { return kInvalidName; }
    KernReturn names_count(std::size_t* count) override {
      *count = 0;
      return kSuccess;
    }
    PortName current_thread_port() override { return kPortNull; }
  } space;
  const Result<PortName> port = create_exception_port(space);
  ASSERT_FALSE(port);
  EXPECT_EQ(port.error().step, Step::MachAllocate);
  EXPECT_EQ(port.error().code, kNotSupported);
}

// Someone released the port's send uref behind our back: destroy says so, and still destroys
// the receive right, so the port itself does not leak.
TEST(MachExceptionRights, DestroyStillReleasesTheReceiveRightWhenTheSendUrefIsGone) {
  MachModel m;
  const std::size_t baseline = m.names();
  const Result<PortName> port = create_exception_port(m);
  ASSERT_TRUE(port);
  ASSERT_EQ(m.deallocate(*port), kSuccess);
  const Result<void> r = destroy_exception_port(m, *port);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().step, Step::MachDeallocate);
  EXPECT_EQ(r.error().code, kInvalidRight);
  EXPECT_FALSE(m.has_name(*port));
  EXPECT_EQ(m.names(), baseline);
}

TEST(MachExceptionRights, DestroyingANameThatIsNotThereFailsAndChangesNothing) {
  MachModel m;
  const std::size_t baseline = m.names();
  const Result<void> r = destroy_exception_port(m, 0x4203);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().step, Step::MachDeallocate);
  EXPECT_EQ(r.error().code, kInvalidName);
  EXPECT_NE(r.error().message().find("0x4203"), std::string::npos);
  EXPECT_EQ(m.names(), baseline);
}

// --- mach_exc on the wire ---

// A request as the kernel's mach_exception_raise_state(_identity) stub lays it out (MIG, packed
// to 4): the offsets are spelled out here, independently of the parser.
struct Wire {
  std::vector<std::byte> bytes;
  void put32(std::size_t at, std::uint32_t v) {
    if (bytes.size() < at + 4) bytes.resize(at + 4);
    std::memcpy(bytes.data() + at, &v, 4);
  }
  void put64(std::size_t at, std::uint64_t v) {
    if (bytes.size() < at + 8) bytes.resize(at + 8);
    std::memcpy(bytes.data() + at, &v, 8);
  }
  std::uint32_t get32(std::size_t at) const {
    std::uint32_t v;
    std::memcpy(&v, bytes.data() + at, 4);
    return v;
  }
};

constexpr std::uint32_t kSendOnce = 18;  // MACH_MSG_TYPE_PORT_SEND_ONCE
constexpr std::uint32_t kSend = 17;      // MACH_MSG_TYPE_PORT_SEND
constexpr std::uint32_t kComplex = 0x80000000u;
constexpr PortName kReplyPort = 0x1307;
constexpr PortName kExceptionPort = 0x2203;
constexpr std::uint64_t kAddress = 0x7f0012345000;
constexpr std::int32_t kFlavor = 4;  // x86_THREAD_STATE64 (ARM_THREAD_STATE64 is 6)

// NDR_record on a little-endian machine: int_rep NDR_INT_LITTLE_ENDIAN (1) in byte 4.
void put_ndr(Wire& w, std::size_t at) {
  w.put32(at, 0);
  w.put32(at + 4, 1);
}

std::vector<std::uint32_t> some_state(std::uint32_t words) {
  std::vector<std::uint32_t> state(words);
  for (std::uint32_t i = 0; i < words; ++i) state[i] = 0xa0000000u + i;
  return state;
}

// mach_exception_raise_state: header 0-24, NDR 24, exception 32, codeCnt 36, code[2] 40,
// flavor 56, old_stateCnt 60, old_state 64.
Wire raise_state(const std::vector<std::uint32_t>& state) {
  Wire w;
  w.put32(0, kSendOnce | (kSend << 8));  // remote: the reply right; local bits are ignored
  w.put32(8, kReplyPort);
  w.put32(12, kExceptionPort);
  w.put32(16, 0);
  w.put32(20, 2406);
  put_ndr(w, 24);
  w.put32(32, 1);  // EXC_BAD_ACCESS
  w.put32(36, 2);
  w.put64(40, 2);  // KERN_PROTECTION_FAILURE
  w.put64(48, kAddress);
  w.put32(56, kFlavor);
  w.put32(60, static_cast<std::uint32_t>(state.size()));
  for (std::size_t i = 0; i < state.size(); ++i) w.put32(64 + 4 * i, state[i]);
  w.put32(4, static_cast<std::uint32_t>(64 + 4 * state.size()));
  return w;
}

// mach_exception_raise_state_identity: header, body 24 (count 2), thread descriptor 28, task
// descriptor 40 (name, pad, then pad:16 disposition:8 type:8), NDR 52, exception 60, codeCnt 64,
// code[2] 68, flavor 84, old_stateCnt 88, old_state 92.
Wire raise_state_identity(const ExceptionRights& rights, const std::vector<std::uint32_t>& state) {
  Wire w;
  w.put32(0, kComplex | kSendOnce);
  w.put32(8, kReplyPort);
  w.put32(12, kExceptionPort);
  w.put32(20, 2407);
  w.put32(24, 2);
  w.put32(28, rights.thread);
  w.put32(32, 0);
  w.put32(36, (kSend << 16) | (0u << 24));  // MACH_MSG_PORT_DESCRIPTOR is 0
  w.put32(40, rights.task);
  w.put32(44, 0);
  w.put32(48, kSend << 16);
  put_ndr(w, 52);
  w.put32(60, 1);
  w.put32(64, 2);
  w.put64(68, 2);
  w.put64(76, kAddress);
  w.put32(84, kFlavor);
  w.put32(88, static_cast<std::uint32_t>(state.size()));
  for (std::size_t i = 0; i < state.size(); ++i) w.put32(92 + 4 * i, state[i]);
  w.put32(4, static_cast<std::uint32_t>(92 + 4 * state.size()));
  return w;
}

TEST(MachExceptionMessage, ParsesARaiseStateRequest) {
  const std::vector<std::uint32_t> state = some_state(42);  // x86_THREAD_STATE64_COUNT
  Wire w = raise_state(state);
  w.bytes.resize(w.bytes.size() + 52);  // the receive buffer is larger (the trailer, and more)
  const Result<ExceptionRequest> r = parse_exception_request(w.bytes);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->behavior, ExceptionBehavior::State);
  EXPECT_EQ(r->reply_port, kReplyPort);
  EXPECT_EQ(r->port, kExceptionPort);
  EXPECT_EQ(r->rights.thread, kPortNull);
  EXPECT_EQ(r->rights.task, kPortNull);
  EXPECT_EQ(r->exception, kExcBadAccess);
  ASSERT_EQ(r->code_count, 2u);
  EXPECT_EQ(r->code[0], 2);
  EXPECT_EQ(static_cast<std::uint64_t>(r->code[1]), kAddress);
  EXPECT_EQ(r->flavor, kFlavor);
  EXPECT_EQ(r->state, state);
}

TEST(MachExceptionMessage, ParsesAnIdentityRequestAndTheRightsItCarries) {
  const std::vector<std::uint32_t> state = some_state(68);  // ARM_THREAD_STATE64_COUNT
  const Wire w = raise_state_identity({0x3303, 0x0103}, state);
  const Result<ExceptionRequest> r = parse_exception_request(w.bytes);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->behavior, ExceptionBehavior::StateIdentity);
  EXPECT_EQ(r->rights.thread, 0x3303u);
  EXPECT_EQ(r->rights.task, 0x0103u);
  EXPECT_EQ(static_cast<std::uint64_t>(r->code[1]), kAddress);
  EXPECT_EQ(r->flavor, kFlavor);
  EXPECT_EQ(r->state, state);
}

// codeCnt is variable for MIG: flavor and the state follow the codes that are there.
TEST(MachExceptionMessage, FewerCodesMoveTheFieldsAfterThem) {
  const std::vector<std::uint32_t> state = some_state(3);
  Wire w;
  w.put32(0, kSendOnce);
  w.put32(8, kReplyPort);
  w.put32(20, 2406);
  put_ndr(w, 24);
  w.put32(32, 1);
  w.put32(36, 1);
  w.put64(40, 2);
  w.put32(48, kFlavor);
  w.put32(52, 3);
  for (std::size_t i = 0; i < 3; ++i) w.put32(56 + 4 * i, state[i]);
  w.put32(4, 68);
  const Result<ExceptionRequest> r = parse_exception_request(w.bytes);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->code_count, 1u);
  EXPECT_EQ(r->flavor, kFlavor);
  EXPECT_EQ(r->state, state);
}

TEST(MachExceptionMessage, RejectsWhatMigRejects) {
  const std::vector<std::uint32_t> state = some_state(42);
  auto rejected = [](const Wire& w, const char* why) {
    const Result<ExceptionRequest> r = parse_exception_request(w.bytes);
    ASSERT_FALSE(r) << why;
    EXPECT_EQ(r.error().step, Step::BadArgument) << why;
    EXPECT_EQ(r.error().code, kMigBadArguments) << why;
  };
  {
    Wire w = raise_state(state);
    w.put32(20, 2405);
    rejected(w, "mach_exception_raise (no state) is not asked for");
  }
  {
    Wire w = raise_state(state);
    w.put32(0, kComplex | kSendOnce);
    rejected(w, "raise_state is never complex");
  }
  {
    Wire w = raise_state(state);
    w.put32(0, kSend);
    rejected(w, "the reply right must be send-once");
  }
  {
    Wire w = raise_state(state);
    w.put32(36, 3);
    rejected(w, "codeCnt > 2");
  }
  {
    Wire w = raise_state(state);
    w.put32(60, 41);
    rejected(w, "old_stateCnt disagrees with msgh_size");
  }
  {
    Wire w = raise_state(state);
    w.put32(60, kThreadStateMax + 1);
    rejected(w, "old_stateCnt > THREAD_STATE_MAX");
  }
  {
    Wire w = raise_state(state);
    w.put32(4, static_cast<std::uint32_t>(w.bytes.size() + 4));
    rejected(w, "msgh_size past the bytes received");
  }
  {
    Wire w = raise_state(state);
    w.put32(4, 40);
    w.bytes.resize(40);
    rejected(w, "shorter than the fixed part");
  }
  {
    Wire w;
    w.put32(0, kSendOnce);
    w.bytes.resize(20);
    rejected(w, "shorter than a header");
  }
  {
    Wire w = raise_state_identity({0x3303, 0x0103}, state);
    w.put32(0, kSendOnce);
    rejected(w, "raise_state_identity is complex");
  }
  {
    Wire w = raise_state_identity({0x3303, 0x0103}, state);
    w.put32(24, 1);
    rejected(w, "two descriptors");
  }
  {
    Wire w = raise_state_identity({0x3303, 0x0103}, state);
    w.put32(48, kSendOnce << 16);
    rejected(w, "the task right is a send right");
  }
}

TEST(MachExceptionMessage, AHandledFaultsReplyGivesTheStateBack) {
  const std::vector<std::uint32_t> state = some_state(42);
  const Result<ExceptionRequest> request = parse_exception_request(raise_state(state).bytes);
  ASSERT_TRUE(request);
  alignas(8) std::byte buffer[kMaxReplySize];
  const std::size_t size = encode_exception_reply(*request, kSuccess, buffer);
  // __Reply__mach_exception_raise_state_t: header, NDR 24, RetCode 32, flavor 36,
  // new_stateCnt 40, new_state 44: exactly what the kernel's MIG stub accepts.
  ASSERT_EQ(size, 44 + 4 * state.size());
  Wire reply{std::vector<std::byte>(buffer, buffer + size)};
  EXPECT_EQ(reply.get32(0), kSendOnce);  // MACH_MSGH_BITS(MOVE_SEND_ONCE, 0), not complex
  EXPECT_EQ(reply.get32(4), size);
  EXPECT_EQ(reply.get32(8), kReplyPort);
  EXPECT_EQ(reply.get32(12), kPortNull);
  EXPECT_EQ(reply.get32(20), 2506u);
  EXPECT_EQ(reply.get32(28), 1u);  // the request's NDR record
  EXPECT_EQ(reply.get32(32), static_cast<std::uint32_t>(kSuccess));
  EXPECT_EQ(reply.get32(36), static_cast<std::uint32_t>(kFlavor));
  EXPECT_EQ(reply.get32(40), state.size());
  for (std::size_t i = 0; i < state.size(); ++i) EXPECT_EQ(reply.get32(44 + 4 * i), state[i]);
}

TEST(MachExceptionMessage, AnUnhandledFaultsReplyIsAMigReplyErrorThatPassesItOn) {
  const Result<ExceptionRequest> request =
      parse_exception_request(raise_state_identity({0x3303, 0x0103}, some_state(68)).bytes);
  ASSERT_TRUE(request);
  alignas(8) std::byte buffer[kMaxReplySize];
  const std::size_t size = encode_exception_reply(*request, kFailure, buffer);
  ASSERT_EQ(size, 36u);  // sizeof(mig_reply_error_t)
  Wire reply{std::vector<std::byte>(buffer, buffer + size)};
  EXPECT_EQ(reply.get32(0), kSendOnce);
  EXPECT_EQ(reply.get32(8), kReplyPort);
  EXPECT_EQ(reply.get32(20), 2507u);
  EXPECT_EQ(reply.get32(32), static_cast<std::uint32_t>(kFailure));
}

TEST(MachExceptionMessage, AReplyThatDoesNotFitIsNotWritten) {
  const Result<ExceptionRequest> request =
      parse_exception_request(raise_state(some_state(42)).bytes);
  ASSERT_TRUE(request);
  std::vector<std::byte> small(44 + 4 * 41, std::byte{0x5a});
  EXPECT_EQ(encode_exception_reply(*request, kSuccess, small), 0u);
  EXPECT_EQ(small[0], std::byte{0x5a});
  EXPECT_EQ(encode_exception_reply(*request, kFailure, small), 36u);
}

// The listener's path for an identity message, on the model: the kernel copies the rights out,
// the listener parses them from the message, handles the fault, replies, then releases them.
TEST(MachExceptionMessage, IdentityMessagesThroughParseHandleReplyAndReleaseLeaveNoTrace) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const std::size_t baseline = m.names();
  alignas(8) std::byte buffer[kMaxReplySize];
  for (int i = 0; i < 10'000; ++i) {
    const Wire w = raise_state_identity(m.deliver_exception_message(t, true), some_state(42));
    const Result<ExceptionRequest> request = parse_exception_request(w.bytes);
    ASSERT_TRUE(request) << request.error().message();
    ASSERT_EQ(request->rights.thread, m.thread_port(t));
    ASSERT_NE(encode_exception_reply(*request, kSuccess, buffer), 0u);
    ASSERT_TRUE(release_exception_rights(m, request->behavior, request->rights));
  }
  EXPECT_EQ(m.names(), baseline);
  EXPECT_EQ(m.urefs(m.thread_port(t), Right::Send), 1u);
  EXPECT_EQ(m.urefs(m.task_port(), Right::Send), 1u);
}

}  // namespace
}  // namespace tcr::mach
