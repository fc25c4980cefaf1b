// MachModel and the send-right accounting of mach_ports.h, as specifications. The rules the model
// follows are XNU's (cited in testing/mach_model.cpp and mach_model_threads.cpp); the leak
// scenarios are the seeds' (001-003).
#include <gtest/gtest.h>

#include <barrier>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "runtime/mach_ports.h"
#include "testing/mach_model.h"

namespace tcr::mach {
namespace {

// Mach constants the header does not need but the specifications read better with.
constexpr auto kRightLabelh = static_cast<Right>(5);  // MACH_PORT_RIGHT_LABELH
constexpr auto kRightNumber = static_cast<Right>(6);  // MACH_PORT_RIGHT_NUMBER
constexpr int kMax = static_cast<int>(kUrefsMax);

// A thread whose port carries `extra` user references beyond libpthread's one.
ThreadId thread_with_extra_refs(MachModel& m, Urefs extra) {
  const ThreadId t = m.create_thread();
  for (Urefs i = 0; i < extra; ++i) m.mach_thread_self(t);
  return t;
}

// --- Threads and their ports ---

TEST(MachModel, NewSpaceHoldsOnlyTheTaskPortName) {
  MachModel m;
  std::size_t count = 0;
  ASSERT_EQ(m.names_count(&count), kSuccess);
  EXPECT_EQ(count, 1u);
  EXPECT_EQ(m.urefs(m.task_port(), Right::Send), 1u);
}

TEST(MachModel, MachTaskSelfAddsNoUserReference) {
  MachModel m;
  const PortName task = m.task_port();
  EXPECT_EQ(m.task_port(), task);
  EXPECT_EQ(m.urefs(task, Right::Send), 1u);
}

TEST(MachModel, PthreadCreateGivesTheThreadPortOneSendUserReference) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const PortName port = m.thread_port(t);
  EXPECT_NE(port, kPortNull);
  EXPECT_EQ(m.urefs(port, Right::Send), 1u);
  EXPECT_EQ(m.names(), 2u);
  EXPECT_EQ(m.live_threads(), 1u);
}

TEST(MachModel, PthreadMachThreadNpAddsNoUserReference) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const PortName port = m.thread_port(t);
  EXPECT_EQ(m.thread_port(t), port);
  EXPECT_EQ(m.urefs(port, Right::Send), 1u);
}

TEST(MachModel, MachThreadSelfAddsAUserReferenceToTheSameName) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const PortName port = m.thread_port(t);
  EXPECT_EQ(m.mach_thread_self(t), port);
  EXPECT_EQ(m.mach_thread_self(t), port);
  EXPECT_EQ(m.urefs(port, Right::Send), 3u);
  EXPECT_EQ(m.names(), 2u);
}

TEST(MachModel, ThreadsGetDistinctPorts) {
  MachModel m;
  const ThreadId a = m.create_thread();
  const ThreadId b = m.create_thread();
  EXPECT_NE(m.thread_port(a), m.thread_port(b));
  EXPECT_EQ(m.live_threads(), 2u);
}

TEST(MachModel, ThreadExitWithOneUserReferenceLeavesNoName) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const PortName port = m.thread_port(t);
  m.terminate_thread(t);
  EXPECT_FALSE(m.has_name(port));
  EXPECT_EQ(m.names(), 1u);
  EXPECT_EQ(m.live_threads(), 0u);
  EXPECT_EQ(m.thread_port(t), kPortNull);
  EXPECT_EQ(m.failed_exit_deallocations(), 0u);
}

TEST(MachModel, ThreadExitWithExtraUserReferencesLeavesADeadNameThatKeepsThem) {
  MachModel m;
  const ThreadId t = thread_with_extra_refs(m, 4);
  const PortName port = m.thread_port(t);
  m.terminate_thread(t);
  EXPECT_TRUE(m.is_dead_name(port));
  EXPECT_EQ(m.urefs(port, Right::DeadName), 4u);
  EXPECT_EQ(m.names(), 2u);
}

TEST(MachModel, GetRefsForSendOnADeadNameAnswersZero) {
  MachModel m;
  const ThreadId t = thread_with_extra_refs(m, 2);
  const PortName port = m.thread_port(t);
  m.terminate_thread(t);
  Urefs refs = 99;
  EXPECT_EQ(m.get_refs(port, Right::Send, &refs), kSuccess);
  EXPECT_EQ(refs, 0u);
  EXPECT_EQ(m.get_refs(port, Right::DeadName, &refs), kSuccess);
  EXPECT_EQ(refs, 2u);
}

TEST(MachModel, ModRefsSendOnADeadNameIsInvalidRightButDeadNameWorks) {
  MachModel m;
  const ThreadId t = thread_with_extra_refs(m, 3);
  const PortName port = m.thread_port(t);
  m.terminate_thread(t);
  EXPECT_EQ(m.mod_refs(port, Right::Send, -1), kInvalidRight);
  EXPECT_EQ(m.urefs(port, Right::DeadName), 3u);
  EXPECT_EQ(m.mod_refs(port, Right::DeadName, -2), kSuccess);
  EXPECT_EQ(m.urefs(port, Right::DeadName), 1u);
  EXPECT_EQ(m.mod_refs(port, Right::DeadName, -1), kSuccess);
  EXPECT_FALSE(m.has_name(port));
}

TEST(MachModel, DeallocateReleasesDeadNameReferencesOneAtATime) {
  MachModel m;
  const ThreadId t = thread_with_extra_refs(m, 2);
  const PortName port = m.thread_port(t);
  m.terminate_thread(t);
  EXPECT_EQ(m.deallocate(port), kSuccess);
  EXPECT_EQ(m.urefs(port, Right::DeadName), 1u);
  EXPECT_EQ(m.deallocate(port), kSuccess);
  EXPECT_FALSE(m.has_name(port));
  EXPECT_EQ(m.deallocate(port), kInvalidName);
}

TEST(MachModel, OverReleasingLibpthreadsReferenceMakesItsExitDeallocationFail) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const PortName port = m.thread_port(t);
  ASSERT_EQ(m.deallocate(port), kSuccess);  // the one uref libpthread owns
  EXPECT_FALSE(m.has_name(port));
  m.terminate_thread(t);
  EXPECT_EQ(m.failed_exit_deallocations(), 1u);
  EXPECT_EQ(m.names(), 1u);
}

TEST(MachModel, MachThreadSelfAfterAllReferencesWereReleasedMakesANewName) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const PortName cached = m.thread_port(t);
  ASSERT_EQ(m.deallocate(cached), kSuccess);
  const PortName fresh = m.mach_thread_self(t);
  EXPECT_NE(fresh, cached);
  EXPECT_EQ(m.urefs(fresh, Right::Send), 1u);
  m.terminate_thread(t);
  EXPECT_EQ(m.failed_exit_deallocations(), 1u);
  EXPECT_TRUE(m.is_dead_name(fresh));  // the right libpthread never knew about, now dead
}

// --- mach_port_mod_refs / mach_port_get_refs / mach_port_deallocate rules ---

TEST(MachModel, ModRefsBelowZeroIsInvalidValue) {
  MachModel m;
  const ThreadId t = thread_with_extra_refs(m, 1);
  const PortName port = m.thread_port(t);
  EXPECT_EQ(m.mod_refs(port, Right::Send, -3), kInvalidValue);
  EXPECT_EQ(m.urefs(port, Right::Send), 2u);
}

TEST(MachModel, ModRefsDeltaZeroIsASuccessfulNoOp) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const PortName port = m.thread_port(t);
  const PortName receive = m.allocate_receive();
  const PortName once = m.make_send_once(receive);
  EXPECT_EQ(m.mod_refs(port, Right::Send, 0), kSuccess);
  EXPECT_EQ(m.mod_refs(receive, Right::Receive, 0), kSuccess);
  EXPECT_EQ(m.mod_refs(once, Right::SendOnce, 0), kSuccess);
  EXPECT_EQ(m.urefs(port, Right::Send), 1u);
  EXPECT_EQ(m.urefs(receive, Right::Receive), 1u);
  EXPECT_EQ(m.urefs(once, Right::SendOnce), 1u);
  m.mach_thread_self(t);
  m.terminate_thread(t);
  EXPECT_EQ(m.mod_refs(port, Right::DeadName, 0), kSuccess);
  EXPECT_EQ(m.urefs(port, Right::DeadName), 1u);
}

TEST(MachModel, SendUserReferencesReachingZeroFreeTheName) {
  MachModel m;
  const ThreadId t = thread_with_extra_refs(m, 1);
  const PortName port = m.thread_port(t);
  EXPECT_EQ(m.mod_refs(port, Right::Send, -2), kSuccess);
  EXPECT_FALSE(m.has_name(port));
  EXPECT_EQ(m.names(), 1u);
}

TEST(MachModel, AnUnknownNameIsInvalidName) {
  MachModel m;
  Urefs refs = 0;
  const PortName unknown = 0x4203;
  EXPECT_EQ(m.get_refs(unknown, Right::Send, &refs), kInvalidName);
  EXPECT_EQ(m.mod_refs(unknown, Right::Send, 1), kInvalidName);
  EXPECT_EQ(m.deallocate(unknown), kInvalidName);
}

TEST(MachModel, AStaleNameDoesNotMatchItsReusedEntry) {
  MachModel m;
  const ThreadId a = m.create_thread();
  const PortName stale = m.thread_port(a);
  m.terminate_thread(a);
  const ThreadId b = m.create_thread();  // takes the freed entry, with a new generation
  const PortName reused = m.thread_port(b);
  EXPECT_NE(reused, stale);
  EXPECT_EQ(reused >> 8, stale >> 8);
  Urefs refs = 0;
  EXPECT_EQ(m.get_refs(stale, Right::Send, &refs), kInvalidName);
  EXPECT_EQ(m.mod_refs(stale, Right::Send, -1), kInvalidName);
  EXPECT_EQ(m.urefs(reused, Right::Send), 1u);
}

TEST(MachModel, ARightTheNameDoesNotHoldIsInvalidRight) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const PortName send = m.thread_port(t);
  const PortName receive = m.allocate_receive();
  const PortName once = m.make_send_once(receive);
  EXPECT_EQ(m.mod_refs(send, Right::Receive, -1), kInvalidRight);
  EXPECT_EQ(m.mod_refs(send, Right::SendOnce, -1), kInvalidRight);
  EXPECT_EQ(m.mod_refs(send, Right::DeadName, -1), kInvalidRight);  // its port is alive
  EXPECT_EQ(m.mod_refs(send, Right::PortSet, -1), kInvalidRight);
  EXPECT_EQ(m.mod_refs(send, kRightLabelh, -1), kInvalidRight);
  EXPECT_EQ(m.mod_refs(receive, Right::Send, 1), kInvalidRight);
  EXPECT_EQ(m.mod_refs(once, Right::Send, -1), kInvalidRight);
  EXPECT_EQ(m.deallocate(receive), kInvalidRight);  // mach_port_deallocate never drops receive
  EXPECT_EQ(m.urefs(send, Right::Send), 1u);
  EXPECT_TRUE(m.has_name(receive));
  EXPECT_TRUE(m.has_name(once));
}

TEST(MachModel, ARightValuePastMachPortRightNumberIsInvalidValue) {
  MachModel m;
  const PortName send = m.thread_port(m.create_thread());
  Urefs refs = 0;
  EXPECT_EQ(m.get_refs(send, kRightNumber, &refs), kInvalidValue);
  EXPECT_EQ(m.mod_refs(send, kRightNumber, -1), kInvalidValue);
  EXPECT_EQ(m.get_refs(send, kRightLabelh, &refs), kSuccess);
  EXPECT_EQ(refs, 0u);
}

TEST(MachModel, GetRefsAnswersZeroForARightTheNameDoesNotHold) {
  MachModel m;
  const PortName send = m.thread_port(m.create_thread());
  Urefs refs = 99;
  for (Right r : {Right::Receive, Right::SendOnce, Right::PortSet, Right::DeadName}) {
    ASSERT_EQ(m.get_refs(send, r, &refs), kSuccess);
    EXPECT_EQ(refs, 0u);
  }
}

TEST(MachModel, NullAndDeadNamesStandForOneSendRight) {
  MachModel m;
  for (PortName name : {kPortNull, kPortDead}) {
    Urefs refs = 0;
    EXPECT_EQ(m.get_refs(name, Right::Send, &refs), kSuccess);
    EXPECT_EQ(refs, 1u);
    EXPECT_EQ(m.mod_refs(name, Right::Send, -1), kSuccess);
    EXPECT_EQ(m.mod_refs(name, Right::SendOnce, -1), kSuccess);
    EXPECT_EQ(m.deallocate(name), kSuccess);
    EXPECT_EQ(m.get_refs(name, Right::Receive, &refs), kInvalidName);
    EXPECT_EQ(m.mod_refs(name, Right::DeadName, -1), kInvalidName);
  }
  EXPECT_EQ(m.names(), 1u);
}

// --- MACH_PORT_UREFS_MAX: XNU pegs, it does not fail ---

TEST(MachModel, ModRefsReachingUrefsMaxPegsTheCountInsteadOfFailing) {
  MachModel m;
  const PortName port = m.thread_port(m.create_thread());
  EXPECT_EQ(m.mod_refs(port, Right::Send, kMax + 1), kInvalidValue);  // |delta| > max
  EXPECT_EQ(m.mod_refs(port, Right::Send, -kMax - 1), kInvalidValue);
  EXPECT_EQ(m.mod_refs(port, Right::Send, kMax - 3), kSuccess);
  EXPECT_EQ(m.urefs(port, Right::Send), kUrefsMax - 2);
  EXPECT_EQ(m.mod_refs(port, Right::Send, 10), kSuccess);  // not KERN_UREFS_OVERFLOW: pegged
  EXPECT_EQ(m.urefs(port, Right::Send), kUrefsMax);
}

TEST(MachModel, APeggedCountIgnoresEverythingButMinusUrefsMax) {
  MachModel m;
  const PortName port = m.thread_port(m.create_thread());
  ASSERT_EQ(m.mod_refs(port, Right::Send, kMax), kSuccess);
  ASSERT_EQ(m.urefs(port, Right::Send), kUrefsMax);
  EXPECT_EQ(m.mod_refs(port, Right::Send, -1), kSuccess);
  EXPECT_EQ(m.mod_refs(port, Right::Send, -(kMax - 1)), kSuccess);
  EXPECT_EQ(m.deallocate(port), kSuccess);
  EXPECT_EQ(m.urefs(port, Right::Send), kUrefsMax);
  EXPECT_EQ(m.mod_refs(port, Right::Send, -kMax), kSuccess);
  EXPECT_FALSE(m.has_name(port));
}

TEST(MachModel, CopyoutAtUrefsMaxLeavesTheCountPegged) {
  MachModel m;
  const ThreadId t = thread_with_extra_refs(m, kUrefsMax + 10);
  const PortName port = m.thread_port(t);
  EXPECT_EQ(m.urefs(port, Right::Send), kUrefsMax);
  EXPECT_EQ(m.mach_thread_self(t), port);
  EXPECT_EQ(m.urefs(port, Right::Send), kUrefsMax);
}

TEST(MachModel, APeggedThreadPortOutlivesItsThreadAsAPeggedDeadName) {
  MachModel m;
  const ThreadId t = thread_with_extra_refs(m, kUrefsMax);
  const PortName port = m.thread_port(t);
  m.terminate_thread(t);  // libpthread's deallocate cannot move a pegged count
  EXPECT_TRUE(m.is_dead_name(port));
  EXPECT_EQ(m.urefs(port, Right::DeadName), kUrefsMax);
  EXPECT_EQ(m.deallocate(port), kSuccess);
  EXPECT_EQ(m.urefs(port, Right::DeadName), kUrefsMax);
  EXPECT_EQ(m.mod_refs(port, Right::DeadName, -kMax), kSuccess);
  EXPECT_FALSE(m.has_name(port));
}

// --- Receive and send-once rights ---

TEST(MachModel, ANameCanHoldReceiveAndSendTogether) {
  MachModel m;
  const PortName name = m.allocate_receive();
  ASSERT_EQ(m.insert_send_right(name), kSuccess);
  ASSERT_EQ(m.insert_send_right(name), kSuccess);
  EXPECT_EQ(m.urefs(name, Right::Receive), 1u);
  EXPECT_EQ(m.urefs(name, Right::Send), 2u);
  EXPECT_EQ(m.names(), 2u);
  EXPECT_EQ(m.mod_refs(name, Right::Send, -2), kSuccess);  // send gone, receive stays
  EXPECT_TRUE(m.has_name(name));
  EXPECT_EQ(m.urefs(name, Right::Send), 0u);
  EXPECT_EQ(m.urefs(name, Right::Receive), 1u);
  EXPECT_EQ(m.insert_send_right(m.thread_port(m.create_thread())), kInvalidRight);
}

TEST(MachModel, DestroyingAReceiveRightKeepsItsSendUrefsAsADeadName) {
  MachModel m;
  const PortName name = m.allocate_receive();
  ASSERT_EQ(m.insert_send_right(name), kSuccess);
  ASSERT_EQ(m.insert_send_right(name), kSuccess);
  EXPECT_EQ(m.mod_refs(name, Right::Receive, -2), kInvalidValue);
  EXPECT_EQ(m.mod_refs(name, Right::Receive, -1), kSuccess);
  EXPECT_TRUE(m.is_dead_name(name));
  EXPECT_EQ(m.urefs(name, Right::DeadName), 2u);
  const PortName bare = m.allocate_receive();
  EXPECT_EQ(m.mod_refs(bare, Right::Receive, -1), kSuccess);
  EXPECT_FALSE(m.has_name(bare));
}

TEST(MachModel, SendOnceRightsCountOneAndAlwaysTakeAFreshName) {
  MachModel m;
  const PortName receive = m.allocate_receive();
  const PortName a = m.make_send_once(receive);
  const PortName b = m.make_send_once(receive);
  EXPECT_NE(a, b);
  EXPECT_NE(a, receive);
  EXPECT_EQ(m.urefs(a, Right::SendOnce), 1u);
  EXPECT_EQ(m.mod_refs(a, Right::SendOnce, 1), kInvalidValue);
  EXPECT_EQ(m.mod_refs(a, Right::SendOnce, -2), kInvalidValue);
  EXPECT_EQ(m.mod_refs(a, Right::SendOnce, -1), kSuccess);
  EXPECT_FALSE(m.has_name(a));
  EXPECT_EQ(m.deallocate(b), kSuccess);
  EXPECT_FALSE(m.has_name(b));
}

TEST(MachModel, ASendOnceRightBecomesADeadNameWithOneReferenceWhenItsPortDies) {
  MachModel m;
  const PortName receive = m.allocate_receive();
  const PortName once = m.make_send_once(receive);
  ASSERT_EQ(m.mod_refs(receive, Right::Receive, -1), kSuccess);
  EXPECT_TRUE(m.is_dead_name(once));
  EXPECT_EQ(m.urefs(once, Right::DeadName), 1u);
  EXPECT_EQ(m.mod_refs(once, Right::SendOnce, -1), kInvalidRight);
  EXPECT_EQ(m.deallocate(once), kSuccess);
  EXPECT_EQ(m.names(), 1u);
}

// --- Exception messages (seed 001's second leak) ---

TEST(MachModel, AnIdentityExceptionMessageCarriesThreadAndTaskRights) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const ExceptionRights rights = m.deliver_exception_message(t, /*carries_identity=*/true);
  EXPECT_EQ(rights.thread, m.thread_port(t));
  EXPECT_EQ(rights.task, m.task_port());
  EXPECT_EQ(m.urefs(rights.thread, Right::Send), 2u);
  EXPECT_EQ(m.urefs(rights.task, Right::Send), 2u);
  EXPECT_EQ(m.names(), 2u);  // urefs grow, names do not
}

TEST(MachModel, AnExceptionStateMessageCarriesNoRights) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const ExceptionRights rights = m.deliver_exception_message(t, /*carries_identity=*/false);
  EXPECT_EQ(rights.thread, kPortNull);
  EXPECT_EQ(rights.task, kPortNull);
  EXPECT_EQ(m.urefs(m.thread_port(t), Right::Send), 1u);
  EXPECT_EQ(m.urefs(m.task_port(), Right::Send), 1u);
}

TEST(MachModel, AMillionReleasedExceptionMessagesLeaveNamesAndUrefsUnchanged) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const std::size_t names_before = m.names();
  for (int i = 0; i < 1'000'000; ++i) {
    const ExceptionRights rights = m.deliver_exception_message(t, true);
    ASSERT_EQ(m.deallocate(rights.thread), kSuccess);
    ASSERT_EQ(m.deallocate(rights.task), kSuccess);
  }
  EXPECT_EQ(m.names(), names_before);
  EXPECT_EQ(m.urefs(m.thread_port(t), Right::Send), 1u);
  EXPECT_EQ(m.urefs(m.task_port(), Right::Send), 1u);
  m.terminate_thread(t);
  EXPECT_EQ(m.names(), names_before - 1);
}

// Seed 001's footnote asked what happens when the count wraps: in XNU it does not wrap, it pegs,
// and from then on the rights cannot be released any more. The thread's port then outlives the
// thread as a dead name, whatever shutdown does.
TEST(MachModel, UnreleasedExceptionMessagesPegThreadAndTaskUrefsForGood) {
  MachModel m;
  const ThreadId t = m.create_thread();
  const PortName thread = m.thread_port(t);
  const PortName task = m.task_port();
  for (int i = 0; i < 1000; ++i) m.deliver_exception_message(t, true);
  EXPECT_EQ(m.urefs(thread, Right::Send), 1001u);
  EXPECT_EQ(m.urefs(task, Right::Send), 1001u);
  for (int i = 1000; i < 1'000'000; ++i) m.deliver_exception_message(t, true);
  EXPECT_EQ(m.urefs(thread, Right::Send), kUrefsMax);
  EXPECT_EQ(m.urefs(task, Right::Send), kUrefsMax);
  EXPECT_EQ(m.names(), 2u);
  EXPECT_EQ(m.deallocate(task), kSuccess);
  EXPECT_EQ(m.urefs(task, Right::Send), kUrefsMax);
  const Result<Urefs> normalized = normalize_send_refs(m, thread, 1);
  ASSERT_FALSE(normalized.has_value());
  EXPECT_EQ(normalized.error().code, kUrefsOverflow);
  m.terminate_thread(t);
  EXPECT_TRUE(m.is_dead_name(thread));
  EXPECT_EQ(m.names(), 2u);
}

// --- send_refs / normalize_send_refs (mach_ports.h) ---

TEST(SendRefs, AnswersTheSendUserReferences) {
  MachModel m;
  const ThreadId t = thread_with_extra_refs(m, 6);
  const Result<Urefs> refs = send_refs(m, m.thread_port(t));
  ASSERT_TRUE(refs.has_value());
  EXPECT_EQ(*refs, 7u);
}

TEST(SendRefs, AnUnknownNameFailsAtMachGetRefs) {
  MachModel m;
  const Result<Urefs> refs = send_refs(m, 0x5503);
  ASSERT_FALSE(refs.has_value());
  EXPECT_EQ(refs.error().step, Step::MachGetRefs);
  EXPECT_EQ(refs.error().code, kInvalidName);
  EXPECT_NE(refs.error().message().find("0x5503"), std::string::npos);
}

TEST(NormalizeSendRefs, RejectsATargetBelowOne) {
  MachModel m;
  const PortName port = m.thread_port(thread_with_extra_refs(m, 2));
  const Result<Urefs> r = normalize_send_refs(m, port, 0);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().step, Step::BadArgument);
  EXPECT_EQ(m.urefs(port, Right::Send), 3u);
}

TEST(NormalizeSendRefs, BringsTheCountDownToTheTargetAndAnswersTheCountBefore) {
  MachModel m;
  const PortName port = m.thread_port(thread_with_extra_refs(m, 9));
  const Result<Urefs> r = normalize_send_refs(m, port, 3);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*r, 10u);
  EXPECT_EQ(m.urefs(port, Right::Send), 3u);
}

TEST(NormalizeSendRefs, NeverRaisesTheCount) {
  MachModel m;
  const PortName port = m.thread_port(thread_with_extra_refs(m, 1));
  const Result<Urefs> r = normalize_send_refs(m, port, 5);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*r, 2u);
  EXPECT_EQ(m.urefs(port, Right::Send), 2u);
}

TEST(NormalizeSendRefs, OnADeadNameAnswersZeroAndChangesNothing) {
  MachModel m;
  const ThreadId t = thread_with_extra_refs(m, 2);
  const PortName port = m.thread_port(t);
  m.terminate_thread(t);
  const Result<Urefs> r = normalize_send_refs(m, port, 1);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*r, 0u);
  EXPECT_EQ(m.urefs(port, Right::DeadName), 2u);
}

TEST(NormalizeSendRefs, ReportsAPeggedCountInsteadOfPretending) {
  MachModel m;
  const ThreadId t = thread_with_extra_refs(m, kUrefsMax - 1);  // 1 + 0xfffe = pegged
  const PortName port = m.thread_port(t);
  const Result<Urefs> r = normalize_send_refs(m, port, 1);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().step, Step::MachModRefs);
  EXPECT_EQ(r.error().code, kUrefsOverflow);
  EXPECT_EQ(m.urefs(port, Right::Send), kUrefsMax);  // libpthread's uref is still there
  m.terminate_thread(t);
  EXPECT_EQ(m.failed_exit_deallocations(), 0u);
  EXPECT_TRUE(m.is_dead_name(port));
}

// A PortSpace whose mod_refs fails, for the error path no model state reaches.
class FailingModRefs final : public PortSpace {
 public:
  KernReturn get_refs(PortName, Right, Urefs* refs) override {
    *refs = 4;
    return kSuccess;
  }
  KernReturn mod_refs(PortName, Right, int) override { return kInvalidTask; }
  KernReturn deallocate(PortName) override { return kSuccess; }
  KernReturn names_count(std::size_t* count) override {
    *count = 0;
    return kSuccess;
  }
  PortName current_thread_port() override { return 0x103; }
};

TEST(NormalizeSendRefs, AFailedModRefsIsReportedWithItsKernReturn) {
  FailingModRefs space;
  const Result<Urefs> r = normalize_send_refs(space, 0x103, 1);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().step, Step::MachModRefs);
  EXPECT_EQ(r.error().code, kInvalidTask);
}

// --- Shutdown: the seeds' fix, end to end on model threads ---

class ShutdownWithExtraRefs : public ::testing::TestWithParam<Urefs> {};

TEST_P(ShutdownWithExtraRefs, LeavesExactlyOneSendRightBeforeExitAndNoNameAfter) {
  const Urefs extra = GetParam();
  MachModel m;
  const std::size_t baseline = m.names();
  const ThreadId t = thread_with_extra_refs(m, extra);
  const PortName port = m.thread_port(t);
  const Result<Urefs> before = normalize_send_refs(m, port, 1);
  ASSERT_TRUE(before.has_value()) << before.error().message();
  EXPECT_EQ(*before, 1 + extra);
  EXPECT_EQ(m.urefs(port, Right::Send), 1u);
  m.terminate_thread(t);
  EXPECT_FALSE(m.has_name(port));
  EXPECT_EQ(m.names(), baseline);
  EXPECT_EQ(m.failed_exit_deallocations(), 0u);
}

// kUrefsMax - 2 extra is the largest count XNU still keeps exactly (1 + 0xfffd = 0xfffe); one
// more pegs it (see NormalizeSendRefs.ReportsAPeggedCountInsteadOfPretending).
INSTANTIATE_TEST_SUITE_P(ExtraRefs, ShutdownWithExtraRefs,
                         ::testing::Values(Urefs{0}, Urefs{1}, Urefs{5}, Urefs{1000},
                                           kUrefsMax - 2));

constexpr int kThreadLifetimes = 100'000;

TEST(MachShutdown, AHundredThousandNormalizedThreadsKeepTheNameCountFlat) {
  MachModel m;
  const std::size_t baseline = m.names();
  for (int i = 0; i < kThreadLifetimes; ++i) {
    const ThreadId t = thread_with_extra_refs(m, 3);
    const Result<Urefs> before = normalize_send_refs(m, m.thread_port(t), 1);
    ASSERT_TRUE(before.has_value());
    ASSERT_EQ(*before, 4u);
    m.terminate_thread(t);
    ASSERT_EQ(m.names(), baseline) << "after thread " << i;
  }
  EXPECT_EQ(m.live_threads(), 0u);
}

TEST(MachShutdown, WithoutNormalizationEveryThreadLeavesExactlyOneDeadName) {
  MachModel m;
  const std::size_t baseline = m.names();
  std::vector<PortName> ports;
  ports.reserve(kThreadLifetimes);
  for (int i = 0; i < kThreadLifetimes; ++i) {
    const ThreadId t = thread_with_extra_refs(m, 3);
    ports.push_back(m.thread_port(t));
    m.terminate_thread(t);
  }
  EXPECT_EQ(m.names(), baseline + kThreadLifetimes);
  for (PortName port : ports) {
    ASSERT_TRUE(m.is_dead_name(port));
    ASSERT_EQ(m.urefs(port, Right::DeadName), 3u);
  }
}

// --- Real OS threads driving the model ---

TEST(MachModelOsThreads, CurrentThreadPortIsStablePerThreadAndAddsNoReference) {
  MachModel m;
  const PortName mine = m.current_thread_port();
  EXPECT_EQ(m.current_thread_port(), mine);
  EXPECT_EQ(m.urefs(mine, Right::Send), 1u);
  PortName theirs = kPortNull;
  std::thread([&] { theirs = m.current_thread_port(); }).join();
  EXPECT_NE(theirs, mine);
  EXPECT_EQ(m.live_threads(), 1u);  // theirs exited, mine still runs
}

TEST(MachModelOsThreads, MachThreadSelfCurrentAddsAReferenceToTheCallersPort) {
  MachModel m;
  const PortName port = m.current_thread_port();
  EXPECT_EQ(m.mach_thread_self_current(), port);
  EXPECT_EQ(m.urefs(port, Right::Send), 2u);
}

TEST(MachModelOsThreads, AnOsThreadsExitTerminatesItsModelThread) {
  MachModel m;
  PortName port = kPortNull;
  std::thread([&] {
    port = m.current_thread_port();
    m.mach_thread_self_current();
  }).join();
  EXPECT_EQ(m.live_threads(), 0u);
  EXPECT_TRUE(m.is_dead_name(port));
  EXPECT_EQ(m.urefs(port, Right::DeadName), 1u);
}

TEST(MachModelOsThreads, AThreadCanBeBoundToSeveralModels) {
  MachModel a;
  MachModel b;
  std::thread([&] {
    a.current_thread_port();
    b.current_thread_port();
    EXPECT_EQ(a.live_threads(), 1u);
    EXPECT_EQ(b.live_threads(), 1u);
  }).join();
  EXPECT_EQ(a.live_threads(), 0u);
  EXPECT_EQ(b.live_threads(), 0u);
  EXPECT_EQ(a.names(), 1u);
  EXPECT_EQ(b.names(), 1u);
}

TEST(MachModelOsThreads, AModelDestroyedBeforeItsThreadsExitIsLeftAloneAtTheirExit) {
  auto model = std::make_unique<MachModel>();
  std::barrier bound(2);
  std::barrier destroyed(2);
  std::thread worker([&] {
    model->current_thread_port();
    bound.arrive_and_wait();
    destroyed.arrive_and_wait();
  });  // exits after the model is gone: must not touch it
  bound.arrive_and_wait();
  model.reset();
  destroyed.arrive_and_wait();
  worker.join();
  MachModel fresh;  // may reuse the address; the old binding must not apply to it
  EXPECT_EQ(fresh.live_threads(), 0u);
  EXPECT_EQ(fresh.names(), 1u);
}

// tcr's own per-thread state is torn down by thread_local destructors, which may still ask for
// the thread's port; the model thread must not die before them.
struct AsksForThePortAtThreadExit {
  MachModel* model = nullptr;
  PortName* answer = nullptr;
  ~AsksForThePortAtThreadExit() {
    if (model != nullptr) *answer = model->current_thread_port();
  }
};

TEST(MachModelOsThreads, ThreadLocalDestructorsStillSeeTheThreadsPort) {
  MachModel m;
  PortName during = kPortNull;
  PortName at_exit = kPortNull;
  std::thread([&] {
    thread_local AsksForThePortAtThreadExit asker;  // constructed before the binding
    during = m.current_thread_port();
    asker.model = &m;
    asker.answer = &at_exit;
  }).join();
  EXPECT_EQ(at_exit, during);
  EXPECT_EQ(m.live_threads(), 0u);
  EXPECT_EQ(m.names(), 1u);
}

TEST(MachModelOsThreads, AThreadFirstBoundDuringItsExitIsStillTerminated) {
  MachModel m;
  PortName at_exit = kPortNull;
  std::thread([&] {
    thread_local AsksForThePortAtThreadExit asker;
    asker.model = &m;
    asker.answer = &at_exit;
  }).join();
  EXPECT_NE(at_exit, kPortNull);
  EXPECT_EQ(m.live_threads(), 0u);
  EXPECT_EQ(m.names(), 1u);
}

// Threads that run at the same time, each with extra references, normalized in its own
// shutdown, as tcr's shutdown_thread_tcr does; after they exit the space is back to baseline.
void run_threads(MachModel& m, int count, Urefs extra, bool normalize) {
  std::barrier all_bound(count);
  std::vector<std::thread> threads;
  threads.reserve(count);
  for (int i = 0; i < count; ++i) {
    threads.emplace_back([&] {
      const PortName port = m.current_thread_port();
      for (Urefs k = 0; k < extra; ++k) EXPECT_EQ(m.mach_thread_self_current(), port);
      all_bound.arrive_and_wait();  // every thread alive at once: distinct ports
      if (normalize) {
        const Result<Urefs> before = normalize_send_refs(m, port, 1);
        ASSERT_TRUE(before.has_value()) << before.error().message();
        EXPECT_EQ(*before, 1 + extra);
      }
    });
  }
  for (auto& t : threads) t.join();
}

TEST(MachModelOsThreads, NormalizedThreadsReturnTheNamesToBaseline) {
  MachModel m;
  std::size_t baseline = 0;
  ASSERT_EQ(m.names_count(&baseline), kSuccess);
  for (int round = 0; round < 20; ++round) {
    run_threads(m, 32, 3, /*normalize=*/true);
    std::size_t now = 0;
    ASSERT_EQ(m.names_count(&now), kSuccess);
    ASSERT_EQ(now, baseline) << "round " << round;
  }
  EXPECT_EQ(m.live_threads(), 0u);
  EXPECT_EQ(m.failed_exit_deallocations(), 0u);
}

TEST(MachModelOsThreads, UnnormalizedThreadsLeaveOneDeadNameEach) {
  MachModel m;
  const std::size_t baseline = m.names();
  run_threads(m, 32, 3, /*normalize=*/false);
  EXPECT_EQ(m.names(), baseline + 32);
  EXPECT_EQ(m.live_threads(), 0u);
}

}  // namespace
}  // namespace tcr::mach
