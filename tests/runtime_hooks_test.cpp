// What a runtime embedding tcr needs of it (issue 12): start hooks, a per-manager stack size,
// join with a timeout, exited(), slots released at exit, the interrupt notify hook (no wake-up
// signal) and the interrupt trampoline, and a collector the runtime owns.
#define GC_THREADS 1
#include <gc/gc.h>
#include <signal.h>
#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <string>
#include <vector>

#include "runtime/resources.h"
#include "threads/semaphore.h"
#include "tests/test_support.h"

namespace tcr {
namespace {

using namespace std::chrono_literals;
using test::eventually;
using test::make_manager;
using test::spawn_poller;

TEST(StartHooks, RunInOrderOnTheNewThreadBeforeItsFunction) {
  std::vector<std::string> seen;  // written by the one thread, read after join
  ManagerOptions options;
  options.start_hooks.push_back([&](Tcr& self) {
    seen.push_back("first " + std::string(self.name()) + (Tcr::current() == &self ? " here" : ""));
    return 0;
  });
  options.start_hooks.push_back([&](Tcr&) {
    seen.push_back("second");
    return 0;
  });
  auto m = make_manager(std::move(options));
  Result<ThreadRef> r = m->spawn("hooked", [&](Tcr&) -> void* {
    seen.push_back("function");
    return nullptr;
  });
  ASSERT_TRUE(r.has_value()) << r.error().message();
  ASSERT_TRUE(m->join(*r).has_value());
  EXPECT_EQ(seen, (std::vector<std::string>{"first hooked here", "second", "function"}));
}

TEST(StartHooks, OneThatFailsSkipsTheFunctionRunsTheExitHooksAndJoinNamesItsCode) {
  std::atomic<int> later_hooks{0}, functions{0}, exits{0};
  ManagerOptions options;
  options.start_hooks.push_back([](Tcr& self) { return self.name() == "refused" ? EPERM : 0; });
  options.start_hooks.push_back([&](Tcr&) {
    ++later_hooks;
    return 0;
  });
  options.exit_hooks.push_back([&](Tcr&) { ++exits; });
  auto m = make_manager(std::move(options));
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  for (int i = 0; i < 50; ++i) {
    Result<ThreadRef> r = m->spawn("refused", [&](Tcr&) -> void* {
      ++functions;
      return nullptr;
    });
    ASSERT_TRUE(r.has_value()) << r.error().message();
    Result<void*> joined = m->join(*r);
    ASSERT_FALSE(joined.has_value());
    EXPECT_EQ(joined.error().step, Step::StartHook);
    EXPECT_EQ(joined.error().code, EPERM);
    EXPECT_NE(joined.error().message().find("did not run"), std::string::npos)
        << joined.error().message();
  }
  EXPECT_EQ(functions.load(), 0);
  EXPECT_EQ(later_hooks.load(), 0);
  EXPECT_EQ(exits.load(), 50);
  // A thread that passes every hook runs as usual.
  Result<ThreadRef> ok = m->spawn("accepted", [](Tcr&) -> void* { return reinterpret_cast<void*>(7); });
  ASSERT_TRUE(ok.has_value());
  Result<void*> joined = m->join(*ok);
  ASSERT_TRUE(joined.has_value());
  EXPECT_EQ(*joined, reinterpret_cast<void*>(7));
  EXPECT_EQ(later_hooks.load(), 1);
  ASSERT_TRUE(m->shutdown().has_value());
  const ResourceCounts after = test::settled(ledger);
  EXPECT_EQ(after.fds, before.fds);
  EXPECT_EQ(after.pidfds, before.pidfds);
  EXPECT_EQ(after.threads, before.threads);
}

TEST(StartHooks, OneThatThrowsIsTheThreadsException) {
  ManagerOptions options;
  options.start_hooks.push_back([](Tcr&) -> int { throw std::runtime_error("no entry"); });
  auto m = make_manager(std::move(options));
  Result<ThreadRef> r = m->spawn("thrower", [](Tcr&) -> void* { return nullptr; });
  ASSERT_TRUE(r.has_value());
  Result<void*> joined = m->join(*r);
  ASSERT_FALSE(joined.has_value());
  EXPECT_EQ(joined.error().step, Step::ThreadThrew);
}

std::size_t stack_bytes(Tcr& self) {
  return static_cast<std::size_t>(static_cast<char*>(self.stack_high()) -
                                  static_cast<char*>(self.stack_low()));
}

TEST(StackSize, TheManagersDefaultAppliesToSpawnsThatNameNone) {
  ManagerOptions options;
  options.stack_size = std::size_t{8} << 20;
  auto m = make_manager(std::move(options));
  std::atomic<std::size_t> by_default{0}, named{0};
  Result<ThreadRef> a = m->spawn("default", [&](Tcr& self) -> void* {
    by_default = stack_bytes(self);
    return nullptr;
  });
  // TSan's runtime takes ~900 KiB of a thread's stack (pthread_create refuses less).
#if defined(__SANITIZE_THREAD__)
  constexpr std::size_t kSmall = std::size_t{2} << 20;
#else
  constexpr std::size_t kSmall = std::size_t{256} << 10;
#endif
  SpawnOptions small;
  small.stack_size = kSmall;
  Result<ThreadRef> b = m->spawn("named", [&](Tcr& self) -> void* {
    named = stack_bytes(self);
    return nullptr;
  }, small);
  ASSERT_TRUE(a.has_value() && b.has_value());
  ASSERT_TRUE(m->join(*a).has_value());
  ASSERT_TRUE(m->join(*b).has_value());
  EXPECT_GE(by_default.load(), std::size_t{8} << 20);
  EXPECT_LT(by_default.load(), std::size_t{9} << 20);
  EXPECT_GE(named.load(), kSmall);
  EXPECT_LT(named.load(), kSmall + (std::size_t{1} << 20));
}

TEST(StackSize, AManagerDefaultOutsideTheBoundsIsRefusedAtCreate) {
  for (std::size_t bad : {std::size_t{0}, std::size_t{4096}, (std::size_t{1} << 30) + 1}) {
    ManagerOptions options;
    options.stack_size = bad;
    Result<std::unique_ptr<ThreadManager>> m = ThreadManager::create(std::move(options));
    ASSERT_FALSE(m.has_value()) << bad;
    EXPECT_EQ(m.error().step, Step::BadArgument);
    EXPECT_NE(m.error().message().find("stack_size"), std::string::npos);
  }
}

TEST(JoinFor, TimesOutWhileTheThreadRunsAndTheThreadStaysJoinable) {
  auto m = make_manager();
  Semaphore go;
  Result<ThreadRef> r = m->spawn("waiter", [&](Tcr&) -> void* {
    go.wait();
    return reinterpret_cast<void*>(42);
  });
  ASSERT_TRUE(r.has_value());
  for (auto limit : {0ns, std::chrono::nanoseconds(2ms)}) {
    Result<void*> early = m->join_for(*r, limit);
    ASSERT_FALSE(early.has_value());
    EXPECT_EQ(early.error().step, Step::Timeout);
  }
  Result<bool> exited = m->exited(*r);
  ASSERT_TRUE(exited.has_value());
  EXPECT_FALSE(*exited);
  go.post();
  Result<void*> joined = m->join_for(*r, 30s);
  ASSERT_TRUE(joined.has_value()) << joined.error().message();
  EXPECT_EQ(*joined, reinterpret_cast<void*>(42));
  // Reaped by that join: the ref is stale.
  EXPECT_EQ(m->join_for(*r, 0ns).error().step, Step::StaleThread);
}

TEST(JoinFor, ATimedOutJoinLeavesTheThreadToDetachOrToAnotherJoin) {
  auto m = make_manager();
  Semaphore go;
  Result<ThreadRef> r = m->spawn("waiter", [&](Tcr&) -> void* {
    go.wait();
    return nullptr;
  });
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(m->join_for(*r, 1ms).error().step, Step::Timeout);
  ASSERT_TRUE(m->detach(*r).has_value());
  go.post();
  ASSERT_TRUE(eventually([&] { return m->stats().live == 0; }));
  Result<bool> exited = m->exited(*r);
  ASSERT_TRUE(exited.has_value());
  EXPECT_TRUE(*exited);
}

TEST(Exited, TrueOnceTheFunctionReturnedEvenBeforeTheJoin) {
  auto m = make_manager();
  ManagerOptions no_gc;
  no_gc.gc = false;
  auto other = make_manager(std::move(no_gc));
  Semaphore go;
  Result<ThreadRef> r = m->spawn("short", [&](Tcr&) -> void* {
    go.wait();
    return nullptr;
  });
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(*m->exited(*r));
  go.post();
  ASSERT_TRUE(eventually([&] { return *m->exited(*r); }));
  EXPECT_EQ(other->exited(*r).error().step, Step::BadArgument);
  ASSERT_TRUE(m->join(*r).has_value());
  EXPECT_TRUE(*m->exited(*r));
}

TEST(Slots, TheArgumentAndTheRuntimesSlotsAreReleasedAtExitAndTheResultKeptForJoin) {
  std::atomic<void*> argument_in_hook{nullptr}, slot_in_hook{nullptr};
  ManagerOptions options;
  options.exit_hooks.push_back([&](Tcr& self) {
    argument_in_hook = self.argument();
    slot_in_hook = self.slot(0);
  });
  auto m = make_manager(std::move(options));
  int arg = 0, kept = 0, result = 0;
  SpawnOptions spawn;
  spawn.argument = &arg;
  Result<ThreadRef> r = m->spawn("slots", [&](Tcr& self) -> void* {
    self.slot(0) = &kept;
    self.slot(Tcr::kSlots - 1) = &kept;
    self.set_notify_context(&kept);
    return &result;
  }, spawn);
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(eventually([&] { return *m->exited(*r); }));
  // Dead: out of the registry, after its exit hooks (exited() is true from Exiting on, before
  // them). The hooks still saw the slots; now, the thread gone but not joined, they are empty.
  ASSERT_TRUE(eventually([&] { return r->tcr_unchecked()->state() == TcrState::Dead; }));
  EXPECT_EQ(argument_in_hook.load(), &arg);
  EXPECT_EQ(slot_in_hook.load(), &kept);
  Tcr& record = *r->tcr_unchecked();
  EXPECT_EQ(record.argument(), nullptr);
  EXPECT_EQ(record.notify_context(), nullptr);
  for (std::size_t i = 0; i < Tcr::kSlots; ++i) EXPECT_EQ(record.slot(i), nullptr) << i;
  Result<void*> joined = m->join(*r);
  ASSERT_TRUE(joined.has_value());
  EXPECT_EQ(*joined, &result);
}

TEST(Slots, TheThreadMayClearItsArgument) {
  auto m = make_manager();
  int arg = 0;
  SpawnOptions spawn;
  spawn.argument = &arg;
  std::atomic<bool> seen{false}, cleared{false};
  Result<ThreadRef> r = m->spawn("clears", [&](Tcr& self) -> void* {
    seen = self.argument() == &arg;
    self.set_argument(nullptr);
    cleared = self.argument() == nullptr;
    return nullptr;
  }, spawn);
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(m->join(*r).has_value());
  EXPECT_TRUE(seen.load());
  EXPECT_TRUE(cleared.load());
}

// A thread that blocks tcr's wake-up signal: if interrupt() sent it, it stays pending.
bool interrupt_signal_pending() {
  sigset_t pending;
  sigpending(&pending);
  return sigismember(&pending, ThreadManager::signals().interrupt) == 1;
}

void block_interrupt_signal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, ThreadManager::signals().interrupt);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

struct Doorbell {
  std::atomic<int> rings{0};
  std::atomic<std::uint64_t> last_id{0};
  std::atomic<void*> last_context{nullptr};
};

ManagerOptions with_doorbell(Doorbell& bell) {
  ManagerOptions options;
  options.interrupt_notify = [&bell](std::uint64_t id, void* context) {
    bell.last_id = id;
    bell.last_context = context;
    ++bell.rings;
  };
  return options;
}

TEST(InterruptNotify, RingsTheRuntimesDoorbellWithTheContextAndSendsNoSignal) {
  Doorbell bell;
  auto m = make_manager(with_doorbell(bell));
  int context = 0;
  std::atomic<bool> ready{false}, stop{false}, signal_seen{false};
  std::atomic<int> ran{0};
  Result<ThreadRef> r = m->spawn("busy", [&](Tcr& self) -> void* {
    block_interrupt_signal();
    self.set_notify_context(&context);
    ready = true;
    // A runtime's own loop: no tcr safe point until its doorbell rings.
    while (!stop.load()) {
      if (bell.rings.load() > ran.load()) ThreadManager::poll();
    }
    signal_seen = interrupt_signal_pending();
    return nullptr;
  });
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(eventually([&] { return ready.load(); }));
  for (int i = 0; i < 20; ++i) {
    Result<InterruptTicket> t = m->interrupt(*r, [&](Tcr&) { ++ran; });
    ASSERT_TRUE(t.has_value());
    ASSERT_TRUE(eventually([&] { return t->outcome() == InterruptOutcome::Delivered; }));
  }
  EXPECT_EQ(bell.rings.load(), 20);
  EXPECT_EQ(bell.last_id.load(), r->id());
  EXPECT_EQ(bell.last_context.load(), &context);
  stop = true;
  ASSERT_TRUE(m->join(*r).has_value());
  EXPECT_EQ(ran.load(), 20);
  EXPECT_FALSE(signal_seen.load());
}

TEST(InterruptNotify, ATcrWaitIsWokenDirectlyWithoutTheSignal) {
  Doorbell bell;
  auto m = make_manager(with_doorbell(bell));
  Semaphore first, gate;
  std::atomic<int> phase{0};
  std::atomic<bool> signal_seen{false}, joined_ok{false};
  // The thread blocks the wake-up signal, so a closure queued while it waits in a Semaphore and
  // then in a join can only run if interrupt() wakes the wait directly.
  Result<ThreadRef> r = m->spawn("waiter", [&](Tcr&) -> void* {
    block_interrupt_signal();
    phase = 1;
    first.wait();
    Result<ThreadRef> inner = m->spawn("inner", [&](Tcr&) -> void* {
      gate.wait();
      return nullptr;
    });
    phase = 2;
    joined_ok = inner.has_value() && m->join(*inner).has_value();
    signal_seen = interrupt_signal_pending();
    return nullptr;
  });
  ASSERT_TRUE(r.has_value());
  std::atomic<int> ran{0};
  for (int want : {1, 2}) {
    ASSERT_TRUE(eventually([&] { return phase.load() == want; }));
    std::this_thread::sleep_for(20ms);  // most likely inside the wait by now (not asserted)
    Result<InterruptTicket> t = m->interrupt(*r, [&](Tcr&) { ++ran; });
    ASSERT_TRUE(t.has_value());
    ASSERT_TRUE(eventually([&] { return t->outcome() == InterruptOutcome::Delivered; }));
    (want == 1 ? first : gate).post();
  }
  ASSERT_TRUE(m->join(*r).has_value());
  EXPECT_EQ(ran.load(), 2);
  EXPECT_EQ(bell.rings.load(), 2);
  EXPECT_TRUE(joined_ok.load());
  EXPECT_FALSE(signal_seen.load());
}

TEST(InterruptNotify, WithoutTheHookTheSignalIsSent) {
  // The control for the two tests above: the same blocked signal is pending when no notify hook
  // is set, so their check can fail.
  auto m = make_manager();
  std::atomic<bool> ready{false}, stop{false}, signal_seen{false};
  Result<ThreadRef> r = m->spawn("busy", [&](Tcr&) -> void* {
    block_interrupt_signal();
    ready = true;
    while (!stop.load() && !interrupt_signal_pending()) {
    }
    signal_seen = interrupt_signal_pending();
    return nullptr;
  });
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(eventually([&] { return ready.load(); }));
  Result<InterruptTicket> t = m->interrupt(*r, [](Tcr&) {});
  ASSERT_TRUE(t.has_value());
  EXPECT_TRUE(eventually([&] { return signal_seen.load(); }));
  stop = true;
  ASSERT_TRUE(m->join(*r).has_value());
  EXPECT_TRUE(signal_seen.load());
  EXPECT_EQ(t->outcome(), InterruptOutcome::Delivered);  // at the thread's exit
}

// The trampoline's frame: closures must run inside it, on the target thread.
thread_local int t_in_trampoline = 0;

TEST(InterruptTrampoline, EveryClosureRunsInsideItOnTheTarget) {
  std::atomic<int> trampolines{0};
  ManagerOptions options;
  options.interrupt_trampoline = [&](Tcr& self, void (*run)(void*), void* closure) {
    ++trampolines;
    ++t_in_trampoline;
    EXPECT_EQ(Tcr::current(), &self);
    run(closure);
    run(closure);  // a second call runs nothing
    --t_in_trampoline;
  };
  auto m = make_manager(std::move(options));
  std::atomic<bool> stop{false};
  const ThreadRef target = spawn_poller(*m, stop);
  ASSERT_TRUE(target.valid());
  std::atomic<int> inside{0}, outside{0};
  for (int i = 0; i < 10; ++i) {
    Result<InterruptTicket> t = m->interrupt(target, [&](Tcr&) { ++(t_in_trampoline ? inside : outside); });
    ASSERT_TRUE(t.has_value());
    ASSERT_TRUE(t->wait().has_value());
  }
  stop = true;
  ASSERT_TRUE(m->join(target).has_value());
  EXPECT_EQ(inside.load(), 10);
  EXPECT_EQ(outside.load(), 0);
  EXPECT_EQ(trampolines.load(), 10);
}

TEST(InterruptTrampoline, OneThatNeverRunsTheClosureLeavesItUndelivered) {
  ManagerOptions options;
  options.interrupt_trampoline = [](Tcr&, void (*)(void*), void*) {};
  auto m = make_manager(std::move(options));
  std::atomic<bool> stop{false};
  const ThreadRef target = spawn_poller(*m, stop);
  ASSERT_TRUE(target.valid());
  std::atomic<int> ran{0};
  Result<InterruptTicket> t = m->interrupt(target, [&](Tcr&) { ++ran; });
  ASSERT_TRUE(t.has_value());
  Result<void> waited = t->wait();
  EXPECT_EQ(t->outcome(), InterruptOutcome::Undelivered);
  EXPECT_FALSE(waited.has_value());
  stop = true;
  ASSERT_TRUE(m->join(target).has_value());
  EXPECT_EQ(ran.load(), 0);
}

TEST(InterruptTrampoline, AClosureThatThrowsIsCaughtInsideRun) {
  std::atomic<int> returned_from_run{0};
  ManagerOptions options;
  options.interrupt_trampoline = [&](Tcr&, void (*run)(void*), void* closure) {
    run(closure);
    ++returned_from_run;  // reached: the exception did not unwind through this frame
  };
  auto m = make_manager(std::move(options));
  std::atomic<bool> stop{false};
  const ThreadRef target = spawn_poller(*m, stop);
  ASSERT_TRUE(target.valid());
  Result<InterruptTicket> t = m->interrupt(target, [](Tcr&) { throw std::runtime_error("closure"); });
  ASSERT_TRUE(t.has_value());
  (void)t->wait();
  stop = true;
  ASSERT_TRUE(m->join(target).has_value());
  EXPECT_EQ(returned_from_run.load(), 1);
}

// A closure's captures are destroyed outside tcr's locks, whether it ran or was dropped: a
// capture whose destructor calls into the manager (as the C API's release callback may) would
// deadlock on the registry lock otherwise.
struct CallsBackOnDestruction {
  ThreadManager* m;
  std::shared_ptr<std::atomic<int>> destroyed;
  CallsBackOnDestruction(ThreadManager* manager, std::shared_ptr<std::atomic<int>> count)
      : m(manager), destroyed(std::move(count)) {}
  CallsBackOnDestruction(const CallsBackOnDestruction&) = default;
  ~CallsBackOnDestruction() {
    if (destroyed) {
      (void)m->stats();  // takes the registry lock
      ++*destroyed;
    }
  }
};

TEST(InterruptClosures, AreDestroyedOutsideTcrsLocksWhenRunAndWhenDropped) {
  auto m = make_manager();
  auto destroyed = std::make_shared<std::atomic<int>>(0);
  std::atomic<bool> stop{false};
  const ThreadRef target = spawn_poller(*m, stop);
  ASSERT_TRUE(target.valid());
  {
    CallsBackOnDestruction capture(m.get(), destroyed);
    Result<InterruptTicket> t = m->interrupt(target, [capture](Tcr&) {});
    ASSERT_TRUE(t.has_value());
    ASSERT_TRUE(t->wait().has_value());
  }
  ASSERT_TRUE(eventually([&] { return destroyed->load() >= 1; }));
  stop = true;
  ASSERT_TRUE(m->join(target).has_value());
  const int before = destroyed->load();
  {
    CallsBackOnDestruction capture(m.get(), destroyed);
    Result<InterruptTicket> t = m->interrupt(target, [capture](Tcr&) {});  // joined: dropped
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(t->outcome(), InterruptOutcome::Undelivered);
  }
  EXPECT_GT(destroyed->load(), before);
}

// Each TEST runs in a process of its own (ctest), so here Boehm starts uninitialized.
TEST(GcOwnerRuntime, BeforeTheRuntimesGcInitSpawnAndAdoptAnswerGcNotInitialized) {
  ASSERT_FALSE(GC_is_init_called()) << "this process initialized Boehm before the test";
  ManagerOptions options;
  options.gc_owner = GcOwner::Runtime;
  auto m = make_manager(std::move(options));
  ASSERT_NE(m, nullptr);
  EXPECT_FALSE(GC_is_init_called()) << "create() initialized the runtime's collector";
  Result<ThreadRef> early = m->spawn("early", [](Tcr&) -> void* { return nullptr; });
  ASSERT_FALSE(early.has_value());
  EXPECT_EQ(early.error().step, Step::GcNotInitialized);
  std::thread([&] {
    Result<Tcr*> adopted = m->adopt_current_thread("foreign");
    ASSERT_FALSE(adopted.has_value());
    EXPECT_EQ(adopted.error().step, Step::GcNotInitialized);
  }).join();
  EXPECT_FALSE(GC_is_init_called());
  // The runtime configures the collector its way, then initializes it.
  GC_set_all_interior_pointers(0);
  GC_INIT();
  std::atomic<bool> registered{false};
  Result<ThreadRef> later = m->spawn("later", [&](Tcr& self) -> void* {
    registered = self.gc_registered() && GC_thread_is_registered() != 0;
    void* p = GC_MALLOC(64);
    GC_gcollect();
    return p;
  });
  ASSERT_TRUE(later.has_value()) << later.error().message();
  ASSERT_TRUE(m->join(*later).has_value());
  EXPECT_TRUE(registered.load());
  EXPECT_EQ(GC_get_all_interior_pointers(), 0) << "tcr changed the runtime's configuration";
}

TEST(GcOwnerRuntime, AManagerCreatedAfterTheRuntimesInitOnAnotherThreadUsesIt) {
  ASSERT_FALSE(GC_is_init_called());
  GC_set_all_interior_pointers(0);
  GC_INIT();
  std::unique_ptr<ThreadManager> m;
  std::thread([&] {
    ManagerOptions options;
    options.gc_owner = GcOwner::Runtime;
    m = make_manager(std::move(options));
  }).join();
  ASSERT_NE(m, nullptr);
  std::atomic<bool> registered{false};
  Result<ThreadRef> r = m->spawn("gc", [&](Tcr& self) -> void* {
    registered = self.gc_registered();
    GC_gcollect();
    return nullptr;
  });
  ASSERT_TRUE(r.has_value()) << r.error().message();
  ASSERT_TRUE(m->join(*r).has_value());
  EXPECT_TRUE(registered.load());
  EXPECT_EQ(GC_get_all_interior_pointers(), 0);
}

}  // namespace
}  // namespace tcr
