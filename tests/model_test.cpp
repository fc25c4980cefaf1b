// Model-based test (issue 9): random sequences of calls on two managers and on ProtectedRegions,
// made from several threads, each checked against a small model of what it must answer, with
// every kernel resource back at its baseline at the end of each case.
//
// The model (Model below) knows, per manager, which ThreadRefs are live, joinable, detached,
// joined or stale, which workers are adopted, who holds the world stopped and how deep, and per
// region whether it is armed and which pages were written since the last collect. Each command
// (rapidcheck's stateful testing: rc::state::Command) has a precondition, the answer the model
// says it must give (the exact Step for every error), and its effect on the model. Calls run on
// workers (tests/model_worker.h): four foreign threads (two run their interrupts when idle, two
// hold them for a poll) and spawned threads running the same loop; the test's own thread only
// generates, hands out calls and checks. Spawned threads are scripted (a latch, a latch inside a
// BlockingScope, a throw, a poll loop, a spin), so that joins have known results.
//
// Determinism: after each command the system is brought to the state the model says (threads
// that must have exited are waited out of the registry and out of the kernel, interrupts that
// must have run are waited for), so every answer is exact. Where a race is the point (an
// interrupt or signal racing the target's exit, writes racing collect_dirty), the command says
// which answers are allowed. Calls that would block the test (a join of a running thread, a
// spawn into a stopped world) are not generated; calls whose waiting is the point run
// asynchronously on their worker while the test does what they wait for: a join, shutdown(), and
// a second initiator of the other manager, which waits for the first stop to end (its holder keeps
// Boehm's allocation lock). Two initiators of one manager are not modelled: every other thread of
// the manager is suspended by the first, so none can start the second.
//
// Budget: TCR_MODEL_BUDGET (unset: kDefaultCases; "long": kLongCases; or a number of cases).
// Seed: fixed by default, TCR_MODEL_SEED to change it; RC_PARAMS (rapidcheck's own) overrides
// both. A failure prints the seed and budget that reproduce it; a hang aborts with the case so far.
#include <gtest/gtest.h>
#include <malloc.h>
#include <pthread.h>
#include <rapidcheck.h>
#include <rapidcheck/state.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "exceptions/protected_region.h"
#include "tests/model_worker.h"
#include "tests/test_support.h"

namespace tcr::model {

const char* to_string(Script s) {
  switch (s) {
    case Script::Latch: return "latch";
    case Script::BlockingLatch: return "blocking-latch";
    case Script::Throw: return "throw";
    case Script::Poll: return "poll";
    case Script::Spin: return "spin";
    case Script::Worker: return "worker";
  }
  return "?";
}

namespace {

constexpr int kManagers = 2;             // A: Boehm GC, pidfds. B: no GC, tgkill.
constexpr int kForeign = 4;              // F0, F1 run interrupts when idle; F2, F3 hold them
constexpr int kMaxAlivePerManager = 6;
constexpr std::size_t kMaxThreads = 40;  // thread records of one case, stale ones included
constexpr int kMaxSpawnedWorkers = 2;
constexpr int kRegionSlots = 2;
constexpr int kMaxPages = 8;
constexpr int kBadSignal = 99999;
constexpr int kDefaultCases = 400;
constexpr int kLongCases = 20000;
constexpr int kMaxCommands = 50;
constexpr std::uint64_t kDefaultSeed = 0x7c5'0009;
constexpr std::size_t kStacks[] = {std::size_t{64} << 10, std::size_t{256} << 10,
                                   std::size_t{1} << 20};

// Not run under TSan (the tsan preset's filter leaves it out): TSan runs a signal's handler only
// when its thread next enters the TSan runtime, and the model's idle threads sleep in futex waits,
// so an interrupt to an idle worker never arrives while it waits (seen: the 30 s bound ran out
// on "interrupt #0 to settle"), nor does a stop's signal to a spinning thread.

std::size_t page_size() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }

// The ProtectedRegion modes this kernel offers, probed once.
std::vector<TrapMode>& trap_modes() {
  static std::vector<TrapMode> s_modes;
  return s_modes;
}

// ---- the model ---------------------------------------------------------------------------------

enum class Kind : std::uint8_t { Latch, BlockingLatch, Throw, Poll, Spin, Worker, Adopted };

Script script_of(Kind k) {
  switch (k) {
    case Kind::Latch: return Script::Latch;
    case Kind::BlockingLatch: return Script::BlockingLatch;
    case Kind::Throw: return Script::Throw;
    case Kind::Poll: return Script::Poll;
    case Kind::Spin: return Script::Spin;
    default: return Script::Worker;
  }
}

const char* to_string(Kind k) { return k == Kind::Adopted ? "adopted" : to_string(script_of(k)); }

// A thread record: a spawned thread, or one adoption of a foreign worker.
struct ThreadM {
  int mgr = 0;
  Kind kind = Kind::Latch;
  std::uintptr_t result = 0;  // what its function returns
  bool detached = false;
  bool gc = false;       // registered with Boehm GC: its exit needs Boehm's lock
  int worker = -1;       // Worker: the worker it is; Adopted: the foreign worker adopted
  bool finish_asked = false;
  bool dead = false;     // out of the registry
  bool reaped = false;   // its ThreadRef is stale
  bool exited_by_closure = false;  // an interrupt closure called pthread_exit: join answers null
  int joiner = -1;       // the worker blocked in an asynchronous join of it
};

enum class Outcome : std::uint8_t { Pending, Delivered, Undelivered, Either };

struct TicketM {
  int thread = 0;
  Outcome outcome = Outcome::Pending;
  bool exits = false;  // the closure ends its thread
};

struct WorkerM {
  bool spawned = false;
  int tcr = -1;          // the record it runs as: its own (spawned), its adoption, or none
  bool run_idle = true;  // runs its interrupts while idle
  bool busy = false;     // blocked in an asynchronous join, or in suspend_all (stopping)
  bool stopping = false; // blocked in suspend_all until the other manager's stop ends
  bool gone = false;     // a spawned worker that finished
};

struct ManagerM {
  bool gc = false;
  bool tgkill = false;
  bool shut_down = false;
  int holder = -1;  // the worker holding this world stopped
  unsigned depth = 0;
  int waiter = -1;  // a worker in suspend_all, waiting for the other manager's stop to end
  std::uint64_t spawned = 0;
  std::uint64_t adopted = 0;
  std::uint64_t reaped = 0;
};

struct RegionM {
  bool live = false;
  TrapMode mode = TrapMode::Signal;
  int pages = 0;
  bool armed = false;
  std::set<int> dirty;              // written since the last collect or protect, while armed
  std::vector<std::uint8_t> bytes;  // the last byte written to each page
};

struct Model {
  std::array<ManagerM, kManagers> mgr;
  std::vector<ThreadM> threads;
  std::vector<TicketM> tickets;
  std::vector<WorkerM> workers;
  std::array<RegionM, kRegionSlots> regions;

  static Model initial() {
    Model s;
    s.mgr[0].gc = true;
    s.mgr[1].tgkill = true;
    for (int w = 0; w < kForeign; ++w) s.workers.push_back(WorkerM{false, -1, w < 2, false, false});
    return s;
  }

  bool stopped(int m) const { return mgr[m].holder >= 0; }
  bool any_stop() const { return stopped(0) || stopped(1); }
  bool stop_waited() const { return mgr[0].waiter >= 0 || mgr[1].waiter >= 0; }
  int tcr_of(int w) const { return workers[w].tcr; }
  int mgr_of_worker(int w) const { return tcr_of(w) < 0 ? -1 : threads[tcr_of(w)].mgr; }
  bool holds(int w) const {
    const int m = mgr_of_worker(w);
    return m >= 0 && mgr[m].holder == w;
  }
  // A stop holds it (it is not the thread that stopped the world).
  bool suspended(int t) const {
    const ThreadM& th = threads[t];
    const ManagerM& m = mgr[th.mgr];
    return !th.dead && m.holder >= 0 && workers[m.holder].tcr != t;
  }
  bool worker_suspended(int w) const { return tcr_of(w) >= 0 && suspended(tcr_of(w)); }
  bool runnable(int w) const {
    const WorkerM& x = workers[w];
    return !x.gone && !x.busy && !worker_suspended(w);
  }
  // Its exit cannot complete now: it is suspended, or needs Boehm's lock, which a stop holds.
  bool exit_blocked(int t) const { return suspended(t) || (threads[t].gc && any_stop()); }
  // Its interrupts run as soon as they are queued (it sits at a safe point).
  bool prompt(int t) const {
    const ThreadM& th = threads[t];
    switch (th.kind) {
      case Kind::Latch:
      case Kind::Throw:
      case Kind::Poll: return true;
      case Kind::BlockingLatch:
      case Kind::Spin: return false;
      // Idle, or in a join (a safe point); not while it waits for Boehm's lock in suspend_all.
      case Kind::Worker: return !workers[th.worker].stopping;
      case Kind::Adopted: {
        const WorkerM& w = workers[th.worker];
        return !w.stopping && (w.run_idle || w.busy);
      }
    }
    return false;
  }
  int alive_in(int m) const {
    int n = 0;
    for (const ThreadM& th : threads) n += th.mgr == m && !th.dead;
    return n;
  }
  int alive_of(Kind k) const {
    int n = 0;
    for (const ThreadM& th : threads) n += th.kind == k && !th.dead;
    return n;
  }
  bool zombie(const ThreadM& th) const { return th.detached && th.dead && !th.reaped; }
  std::size_t zombies(int m) const {
    std::size_t n = 0;
    for (const ThreadM& th : threads) n += th.mgr == m && zombie(th);
    return n;
  }
  std::size_t pending_of(int t) const {
    std::size_t n = 0;
    for (const TicketM& k : tickets) n += k.thread == t && k.outcome == Outcome::Pending;
    return n;
  }

  void deliver(TicketM& k) {
    k.outcome = Outcome::Delivered;
    if (!k.exits) return;
    threads[k.thread].finish_asked = true;
    threads[k.thread].exited_by_closure = true;
  }
  // Thread t reached a safe point: everything queued for it runs.
  void deliver_pending(int t) {
    for (TicketM& k : tickets) {
      if (t >= 0 && k.thread == t && k.outcome == Outcome::Pending) deliver(k);
    }
  }
  void reap_zombies(int m) {
    for (ThreadM& th : threads) {
      if (th.mgr != m || !zombie(th)) continue;
      th.reaped = true;
      ++mgr[m].reaped;
    }
  }
  void end_stop(int m) {
    mgr[m].holder = -1;
    mgr[m].depth = 0;
  }

  // What follows by itself from the last call: a waiting initiator gets its stop once the other
  // one ends, threads asked to finish exit when nothing holds them, interrupts run on threads at
  // a safe point, asynchronous joins of exited threads return.
  void normalize() {
    for (bool changed = true; changed;) {
      changed = false;
      for (int m = 0; m < kManagers && !any_stop(); ++m) {
        const int w = mgr[m].waiter;
        if (w < 0) continue;
        mgr[m].waiter = -1;
        mgr[m].holder = w;
        mgr[m].depth = 1;
        workers[w].busy = workers[w].stopping = false;
        changed = true;
      }
      for (std::size_t t = 0; t < threads.size(); ++t) {
        ThreadM& th = threads[t];
        if (th.kind == Kind::Adopted || th.dead || !th.finish_asked ||
            exit_blocked(static_cast<int>(t))) {
          continue;
        }
        th.dead = true;
        deliver_pending(static_cast<int>(t));  // its exit is its last safe point
        if (th.kind == Kind::Worker) workers[th.worker].gone = true;
        changed = true;
      }
      for (TicketM& k : tickets) {
        if (k.outcome != Outcome::Pending || suspended(k.thread) || !prompt(k.thread)) continue;
        deliver(k);
        changed = true;
      }
      for (ThreadM& th : threads) {
        if (th.joiner < 0 || !th.dead || worker_suspended(th.joiner)) continue;
        workers[th.joiner].busy = false;
        th.joiner = -1;
        th.reaped = true;
        ++mgr[th.mgr].reaped;
        changed = true;
      }
    }
  }
};

// ---- answers -----------------------------------------------------------------------------------

// A command's precondition (discards it when false). Not RC_PRE(a && b) itself: rapidcheck's
// expression capture evaluates both sides of a && b, so b could index past what a checked.
void require(bool ok) { RC_PRE(ok); }

using Want = std::optional<Step>;  // nullopt: the call succeeds

// The checks every call on a ThreadRef makes first (ManagerCore::record_of).
Want ref_check(const Model& s, int t, int m_call) {
  if (s.threads[t].mgr != m_call) return Step::BadArgument;
  if (s.threads[t].reaped) return Step::StaleThread;
  return std::nullopt;
}

// nullopt: join waits for the thread and reaps it.
Want join_answer(const Model& s, int t, int m_call, int by) {
  if (Want w = ref_check(s, t, m_call)) return w;
  const ThreadM& th = s.threads[t];
  if (s.tcr_of(by) == t) return Step::JoinSelf;
  if (s.holds(by)) return Step::BadArgument;
  if (th.kind == Kind::Adopted) return Step::BadArgument;
  if (th.detached) return Step::ThreadDetached;
  if (th.joiner >= 0) return Step::AlreadyJoined;
  return std::nullopt;
}

std::string worker_name(int w) { return (w < kForeign ? "F" : "S") + std::to_string(w); }
std::string mgr_name(int m) { return m == 0 ? "A" : "B"; }
std::string thread_name(int t) { return "t" + std::to_string(t); }

std::string describe(const Want& w) {
  return w ? std::string("error ") + std::string(tcr::to_string(*w)) : std::string("success");
}
template <class T>
std::string describe(const Result<T>& r) {
  return r ? std::string("success") : "error " + r.error().message();
}

// ---- the system under test ---------------------------------------------------------------------

// How often each call gave each answer (printed at the end: what the budget covered).
std::map<std::string, std::uint64_t>& answers() {
  static std::map<std::string, std::uint64_t> s_answers;
  return s_answers;
}

// The managers, the threads and regions of one case, and the workers that call them. Its
// destructor cleans up after a failed case without the model (from what the calls answered).
class Sut {
 public:
  explicit Sut(const std::vector<ForeignWorker*>& pool) {
    ManagerOptions a;
    a.gc = true;
    ManagerOptions b;
    b.gc = false;
    b.handle_mode = HandleModeChoice::Tgkill;
    m_managers[0] = test::make_manager(std::move(a));
    m_managers[1] = test::make_manager(std::move(b));
    for (ForeignWorker* f : pool) m_workers.push_back(&f->worker());
    m_adopted_by.assign(m_workers.size(), -1);
    m_joins.resize(m_workers.size());
    m_join_started.assign(m_workers.size(), 0);
    m_stops.resize(m_workers.size());
  }
  Sut(const Sut&) = delete;
  Sut& operator=(const Sut&) = delete;
  ~Sut() { clean_up(); }

  ThreadManager& mgr(int m) { return *m_managers[m]; }
  Worker& worker(int w) { return *m_workers[w]; }
  ThreadRef ref(int t) const { return m_refs[t]; }

  // Runs job on worker w and waits for it.
  void on(int w, const std::function<void()>& job) { worker(w).run(job, m_current); }

  void begin(const std::string& what) {
    m_current = what;
    case_log() += what + "\n";
  }

  // Fails the case (rapidcheck shrinks it); the first failure is also printed as it happens, so
  // that it is seen even if the clean-up after it hangs.
  void check(bool ok, const std::string& what) {
    if (ok) return;
    static bool s_printed = false;
    if (!s_printed) {
      s_printed = true;
      std::fprintf(stderr, "model test: first failure, at '%s': %s\nthe case so far:\n%s\n",
                   m_current.c_str(), what.c_str(), case_log().c_str());
    }
    RC_FAIL(m_current + ": " + what);
  }
  template <class T>
  void expect(const Result<T>& got, const Want& want, const std::string& call) {
    ++answers()[call + ":" + (want ? std::string(tcr::to_string(*want)) : std::string("ok"))];
    if (!want) {
      check(got.has_value(), call + ": expected success, got " + describe(got));
    } else {
      check(!got.has_value() && got.error().step == *want,
            call + ": expected " + describe(want) + ", got " + describe(got));
    }
  }
  // A join's answer for a thread the model says exited.
  void expect_joined(const Result<void*>& got, const ThreadM& th, const std::string& call) {
    if (th.kind == Kind::Throw && !th.exited_by_closure) {
      bool threw = !got && got.error().step == Step::ThreadThrew && got.error().exception;
      std::string what;
      if (threw) {
        try {
          std::rethrow_exception(got.error().exception);
        } catch (const std::runtime_error& e) {
          what = e.what();
        } catch (...) {
        }
      }
      check(threw && what == "scripted throw",
            call + ": expected ThreadThrew('scripted throw'), got " + describe(got));
      return;
    }
    const auto want = th.exited_by_closure ? std::uintptr_t{0} : th.result;
    check(got.has_value() && test::as_int(*got) == want,
          call + ": expected result " + std::to_string(want) + ", got " +
              (got ? std::to_string(test::as_int(*got)) : describe(got)));
  }

  void add_spawned(ThreadRef r, std::unique_ptr<ScriptedThread> script, int m) {
    ScriptedThread& started = *script;
    await([&] { return started.ready.load(std::memory_order_acquire); },
          m_current + ": the new thread to reach its script");
    pid_t tid = 0;
    const std::vector<ThreadInfo> live = mgr(m).snapshot().value();
    for (const ThreadInfo& i : live) {
      if (i.id == r.id()) tid = i.tid;
    }
    check(tid != 0, "a spawned thread is in its manager's snapshot");
    if (script->script == Script::Worker) {
      m_workers.push_back(&script->worker);
      m_adopted_by.push_back(-1);
      m_joins.emplace_back();
      m_join_started.push_back(0);
      m_stops.emplace_back();
    }
    m_refs.push_back(r);
    m_tids.push_back(tid);
    m_scripts.push_back(std::move(script));
  }
  void add_adopted(ThreadRef r, int w, int m) {
    m_refs.push_back(r);
    m_tids.push_back(0);
    m_scripts.push_back(nullptr);
    m_adopted_by[w] = m;
  }
  void released(int w) { m_adopted_by[w] = -1; }
  ScriptedThread& script(int t) { return *m_scripts[t]; }

  void stopped_by(int m, int w) { m_stop_holder[m] = w; }
  void resumed(int m) { m_stop_holder[m] = -1; }

  Probe& new_probe(bool exits) {
    Probe& p = m_probes.emplace_back();
    p.exits = exits;
    return p;
  }
  void add_ticket(InterruptTicket k, const Probe& p) {
    m_tickets.push_back(std::move(k));
    m_ticket_probes.push_back(&p);
  }
  std::size_t tickets() const { return m_tickets.size(); }

  // Starts a join that must wait, and waits until it does (until then another join or detach
  // of the thread would not see it under way).
  void start_join(int w, int m, int t) {
    m_join_started[w] = 1;
    Worker& joiner = worker(w);
    joiner.start([this, w, m, t] { m_joins[w] = mgr(m).join(m_refs[t]); });
    await([&] { return joiner.done() || joiner.asleep_in_job(); },
          m_current + ": the join to wait for its thread");
    if (!joiner.done()) return;
    joiner.finish(m_current);
    m_join_started[w] = 0;
    check(false, "join returned at once, with " + describe(m_joins[w]) +
                     ": its thread has not exited");
  }

  // What a suspend_all made on a worker answered.
  struct Stop {
    struct Entry {
      std::uint64_t id;
      StopKind kind;
      bool operator<(const Entry& o) const { return id < o.id; }
      bool operator==(const Entry& o) const { return id == o.id && kind == o.kind; }
    };
    Result<StoppedWorld> result = fail(Step::BadArgument);
    std::vector<Entry> listed;
    unsigned depth = 0;
    bool stacks_ok = true;
    bool by_caller = false;
  };
  Stop& stop_result(int w) { return m_stops[w]; }
  // suspend_all on manager m, its answer copied into `out` while the world is stopped (into room
  // reserved before: a stopped thread must not be holding malloc's lock, but none is).
  std::function<void()> suspend_job(int m, Stop& out) {
    out = Stop{};
    out.listed.reserve(64);
    return [this, m, &out] {
      out.result = mgr(m).suspend_all();
      if (!out.result) return;
      out.depth = out.result->depth();
      for (const StoppedThread& e : out.result->threads()) {
        if (out.listed.size() < out.listed.capacity()) out.listed.push_back({e.id, e.kind});
        out.stacks_ok = out.stacks_ok && e.stack_low != nullptr && e.stack_low < e.stack_high;
      }
      out.by_caller = mgr(m).world_stopped_by_caller();
    };
  }
  // The stop by worker `by` lists every other live thread of m, as the model has them.
  void check_stop(const Model& s, int m, int by, unsigned depth) {
    Stop& stop = m_stops[by];
    stopped_by(m, by);
    std::vector<Stop::Entry> want;
    for (std::size_t t = 0; t < s.threads.size(); ++t) {
      const ThreadM& th = s.threads[t];
      if (th.mgr != m || th.dead || static_cast<int>(t) == s.tcr_of(by)) continue;
      want.push_back({m_refs[t].id(), th.kind == Kind::BlockingLatch ? StopKind::Blocking
                                                                      : StopKind::Suspended});
    }
    std::sort(stop.listed.begin(), stop.listed.end());
    std::sort(want.begin(), want.end());
    const auto show = [](const std::vector<Stop::Entry>& v) {
      std::string out;
      for (const Stop::Entry& e : v) out += " #" + std::to_string(e.id) + "/" + tcr::to_string(e.kind);
      return out;
    };
    check(stop.listed == want,
          "the stopped world lists" + show(stop.listed) + "; expected" + show(want));
    check(stop.stacks_ok, "every stopped thread has a stack range to scan");
    check(stop.depth == depth, "suspend_all's depth is " + std::to_string(stop.depth) +
                                   ", expected " + std::to_string(depth));
    check(stop.by_caller, "world_stopped_by_caller() in the holder");
  }
  // Starts a suspend_all that must wait for the other manager's stop, and waits until it does.
  void start_stop(int w, int m) {
    m_stop_waiter[m] = w;
    Worker& initiator = worker(w);
    initiator.start(suspend_job(m, m_stops[w]));
    await([&] { return initiator.done() || initiator.asleep_in_job(); },
          m_current + ": the second initiator to wait");
    check(!initiator.done(), "suspend_all did not wait for the other manager's stop: " +
                                 describe(m_stops[w].result));
  }

  struct Region {
    char* base = nullptr;
    std::size_t length = 0;
    std::unique_ptr<ProtectedRegion> region;
  };
  Region& region(int slot) { return m_regions[slot]; }
  static char* map_pages(std::size_t pages) {
    void* p = mmap(nullptr, pages * page_size(), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
  }
  void destroy_region(int slot, int by) {
    Region& r = m_regions[slot];
    if (r.region) on(by, [&] { r.region.reset(); });
    if (r.base != nullptr) munmap(r.base, r.length);
    r = Region{};
  }

  // Brings the system to what the model says after a call: waits for what must have happened by
  // now and checks that nothing happened that must not have.
  void settle(const Model& s0, const Model& s1) {
    for (std::size_t t = 0; t < s1.threads.size(); ++t) {
      const bool was_dead = t < s0.threads.size() && s0.threads[t].dead;
      if (!was_dead && s1.threads[t].dead && s1.threads[t].kind != Kind::Adopted) {
        wait_exited(static_cast<int>(t), s1.threads[t].mgr);
      }
    }
    for (std::size_t w = 0; w < s0.workers.size(); ++w) {
      if (!s0.workers[w].stopping || s1.workers[w].busy) continue;
      const int m = s0.mgr_of_worker(static_cast<int>(w));
      worker(static_cast<int>(w)).finish(m_current + ": the second initiator to stop its world");
      m_stop_waiter[m] = -1;
      expect(m_stops[w].result, std::nullopt, "suspend_all that waited");
      if (m_stops[w].result) check_stop(s1, m, static_cast<int>(w), 1);
    }
    for (std::size_t w = 0; w < s0.workers.size(); ++w) {
      if (!s0.workers[w].busy || s0.workers[w].stopping || s1.workers[w].busy) continue;
      for (std::size_t t = 0; t < s0.threads.size(); ++t) {
        if (s0.threads[t].joiner != static_cast<int>(w)) continue;
        worker(static_cast<int>(w)).finish(m_current + ": the asynchronous join of " +
                                           thread_name(static_cast<int>(t)));
        m_join_started[w] = 0;
        expect_joined(m_joins[w], s1.threads[t],
                      "asynchronous join of " + thread_name(static_cast<int>(t)) + " by " +
                          worker_name(static_cast<int>(w)));
      }
    }
    check(m_tickets.size() == s1.tickets.size(), "one ticket per interrupt the model counts");
    for (std::size_t k = 0; k < s1.tickets.size() && k < m_tickets.size(); ++k) {
      const Outcome want = s1.tickets[k].outcome;
      const bool was_pending = k >= s0.tickets.size() || s0.tickets[k].outcome == Outcome::Pending;
      if (want == Outcome::Pending || !was_pending) continue;
      const InterruptTicket& ticket = m_tickets[k];
      await([&] { return ticket.outcome() != InterruptOutcome::Pending; },
            m_current + ": interrupt #" + std::to_string(k) + " to settle");
      check_ticket(k, s1.tickets[k]);
    }
    // Interrupts the model says cannot have run yet have not.
    for (std::size_t k = 0; k < s1.tickets.size() && k < m_tickets.size(); ++k) {
      if (s1.tickets[k].outcome != Outcome::Pending) continue;
      check(m_tickets[k].outcome() == InterruptOutcome::Pending,
            "interrupt #" + std::to_string(k) + " to " + thread_name(s1.tickets[k].thread) +
                " ran before its thread reached a safe point");
    }
  }

  void check_ticket(std::size_t k, const TicketM& want) {
    const InterruptTicket& ticket = m_tickets[k];
    const Probe& p = *m_ticket_probes[k];
    const InterruptOutcome got = ticket.outcome();
    const std::string name = "interrupt #" + std::to_string(k) + " to " + thread_name(want.thread);
    if (want.outcome == Outcome::Delivered ||
        (want.outcome == Outcome::Either && got == InterruptOutcome::Delivered)) {
      check(got == InterruptOutcome::Delivered,
            name + ": expected delivered, got " + tcr::to_string(got));
      check(p.runs.load(std::memory_order_acquire) == 1 &&
                p.ran_on.load(std::memory_order_relaxed) == m_refs[want.thread].id(),
            name + ": its closure ran " + std::to_string(p.runs.load()) + " time(s), on #" +
                std::to_string(p.ran_on.load()) + ", not once on #" +
                std::to_string(m_refs[want.thread].id()));
      check(ticket.wait().has_value(), name + ": wait() of a delivered ticket failed");
    } else {
      check(got == InterruptOutcome::Undelivered,
            name + ": expected undelivered, got " + tcr::to_string(got));
      check(p.runs.load() == 0, name + ": undelivered, yet its closure ran");
      Result<void> w = ticket.wait();
      check(!w && w.error().step == Step::ThreadExited,
            name + ": wait() of an undelivered ticket: " + describe(w));
    }
  }

 private:
  // Out of the registry, and out of the kernel (so a try-join in the reaper finds it gone).
  void wait_exited(int t, int m) {
    const std::uint64_t id = m_refs[t].id();
    await(
        [&] {
          const std::vector<ThreadInfo> live = mgr(m).snapshot().value();
          for (const ThreadInfo& i : live) {
            if (i.id == id) return false;
          }
          return true;
        },
        m_current + ": " + thread_name(t) + " to leave the registry");
    const std::string task = "/proc/self/task/" + std::to_string(m_tids[t]);
    await([&] { return access(task.c_str(), F_OK) != 0; },
          m_current + ": " + thread_name(t) + "'s OS thread to end");
  }

  // After a failed case: what the calls answered says who holds a stop and who is adopted.
  void clean_up() {
    m_current = "clean-up after the case";
    for (auto& s : m_scripts) {
      if (s && s->script != Script::Worker) s->finish();
    }
    for (int round = 0; round < 2; ++round) {  // a waiting initiator stops when the first ends
      for (int m = 0; m < kManagers; ++m) {
        if (m_stop_holder[m] < 0) continue;
        ThreadManager& manager = mgr(m);
        on(m_stop_holder[m], [&] {
          while (manager.world_stopped_by_caller()) (void)manager.resume_all();
        });
        m_stop_holder[m] = -1;
      }
      for (int m = 0; m < kManagers; ++m) {
        if (m_stop_waiter[m] < 0) continue;
        worker(m_stop_waiter[m]).finish("clean-up: a waiting suspend_all");
        if (m_stops[m_stop_waiter[m]].result) m_stop_holder[m] = m_stop_waiter[m];
        m_stop_waiter[m] = -1;
      }
    }
    for (std::size_t w = 0; w < m_workers.size(); ++w) {
      if (m_join_started[w]) worker(static_cast<int>(w)).finish("clean-up: a join");
      m_join_started[w] = 0;
    }
    for (std::size_t w = 0; w < m_adopted_by.size(); ++w) {
      if (m_adopted_by[w] < 0) continue;
      ThreadManager& manager = mgr(m_adopted_by[w]);
      on(static_cast<int>(w), [&] { (void)manager.release_current_thread(); });
      m_adopted_by[w] = -1;
    }
    for (auto& s : m_scripts) {
      if (s && s->script == Script::Worker) s->finish();
    }
    for (int slot = 0; slot < kRegionSlots; ++slot) destroy_region(slot, 0);
    for (auto& m : m_managers) m.reset();  // shuts down: every spawned thread was finished
  }

  std::array<std::unique_ptr<ThreadManager>, kManagers> m_managers;
  std::vector<Worker*> m_workers;
  std::vector<int> m_adopted_by;  // per worker: the manager it is adopted by, or -1
  std::vector<Result<void*>> m_joins;  // per worker: its last asynchronous join
  std::vector<char> m_join_started;  // per worker: an asynchronous join was started
  std::array<int, kManagers> m_stop_holder{-1, -1};
  std::array<int, kManagers> m_stop_waiter{-1, -1};
  std::deque<Stop> m_stops;  // per worker: its last suspend_all
  std::vector<ThreadRef> m_refs;
  std::vector<pid_t> m_tids;
  std::vector<std::unique_ptr<ScriptedThread>> m_scripts;  // null for adoptions
  std::deque<Probe> m_probes;
  std::vector<InterruptTicket> m_tickets;
  std::vector<const Probe*> m_ticket_probes;  // per ticket (a refused interrupt has a probe too)
  std::array<Region, kRegionSlots> m_regions;
  std::string m_current;
};

// ---- commands ----------------------------------------------------------------------------------

using CommandBase = rc::state::Command<Model, Sut>;

// How many calls of each kind the run made (printed at the end: what the budget covered).
std::map<std::string, std::uint64_t>& calls_made() {
  static std::map<std::string, std::uint64_t> s_calls;
  return s_calls;
}

// Every command: its effect on the model, then normalize(); its call on the system, then settle.
struct Call : CommandBase {
  void apply(Model& s) const final {
    effect(s);
    s.normalize();
  }
  void run(const Model& s0, Sut& sut) const final {
    std::ostringstream os;
    show(os);
    sut.begin(os.str());
    execute(s0, sut);
    sut.settle(s0, nextState(s0));
  }
  virtual void effect(Model& s) const = 0;
  virtual void execute(const Model& s0, Sut& sut) const = 0;
};

bool valid_worker(const Model& s, int w) { return w >= 0 && static_cast<std::size_t>(w) < s.workers.size(); }
bool valid_thread(const Model& s, int t) { return t >= 0 && static_cast<std::size_t>(t) < s.threads.size(); }

int pick_worker(const Model& s) {
  std::vector<int> ready;
  for (std::size_t w = 0; w < s.workers.size(); ++w) {
    if (s.runnable(static_cast<int>(w))) ready.push_back(static_cast<int>(w));
  }
  require(!ready.empty());
  return *rc::gen::elementOf(ready);
}
int pick_thread(const Model& s) {
  require(!s.threads.empty());
  return *rc::gen::inRange<int>(0, static_cast<int>(s.threads.size()));
}
// Mostly the thread's own manager; sometimes the other one, whose answer is BadArgument.
int pick_manager_for(const Model& s, int t) {
  const int own = s.threads[t].mgr;
  return *rc::gen::weightedElement<int>({{8, own}, {1, 1 - own}});
}
int pick_manager() { return *rc::gen::inRange(0, kManagers); }
// Mostly a runnable worker that is a thread of some manager (the caller suspend_all, current_ref
// and the like want), and that manager; else any worker and any manager.
std::pair<int, int> pick_member(const Model& s) {
  std::vector<int> members;
  for (std::size_t w = 0; w < s.workers.size(); ++w) {
    if (s.runnable(static_cast<int>(w)) && s.tcr_of(static_cast<int>(w)) >= 0) {
      members.push_back(static_cast<int>(w));
    }
  }
  if (!members.empty() && *rc::gen::weightedElement<bool>({{3, true}, {1, false}})) {
    const int w = *rc::gen::elementOf(members);
    return {w, s.mgr_of_worker(w)};
  }
  return {pick_worker(s), pick_manager()};
}
// Mostly a worker holding a stop, and its manager.
std::pair<int, int> pick_holder(const Model& s) {
  for (int m = 0; m < kManagers; ++m) {
    const int h = s.mgr[m].holder;
    if (h >= 0 && s.runnable(h) && *rc::gen::weightedElement<bool>({{4, true}, {1, false}})) {
      return {h, m};
    }
  }
  return pick_member(s);
}
void require_worker(const Model& s, int w) { require(valid_worker(s, w) && s.runnable(w)); }

std::uintptr_t result_for(std::size_t index) { return 0x10000 + 16 * index; }

struct Spawn final : Call {
  int m, by;
  Kind kind;
  bool detached;
  int stack;
  GcRegistration gc;
  bool tiny_stack;  // below the 64 KiB minimum: BadArgument

  explicit Spawn(const Model& s)
      : m(pick_manager()),
        by(pick_worker(s)),
        kind(*rc::gen::element(Kind::Latch, Kind::BlockingLatch, Kind::Throw, Kind::Poll,
                               Kind::Spin, Kind::Worker)),
        detached(*rc::gen::weightedElement<bool>({{3, false}, {1, true}})),
        stack(*rc::gen::inRange(0, 3)),
        gc(*rc::gen::weightedElement<GcRegistration>({{8, GcRegistration::Inherit},
                                                      {1, GcRegistration::Register},
                                                      {1, GcRegistration::DontRegister}})),
        tiny_stack(*rc::gen::weightedElement<bool>({{20, false}, {1, true}})) {
    checkPreconditions(s);
  }
  bool checked_before_reaping(const Model& s) const {
    return s.holds(by) || tiny_stack || (gc == GcRegistration::Register && !s.mgr[m].gc);
  }
  Want want(const Model& s) const {
    if (checked_before_reaping(s)) return Step::BadArgument;
    if (s.mgr[m].shut_down) return Step::ManagerShutDown;
    return std::nullopt;
  }
  bool registers(const Model& s) const {
    return gc == GcRegistration::Register || (gc == GcRegistration::Inherit && s.mgr[m].gc);
  }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    if (want(s)) return;
    // It would wait: at the stopped world's gate, or (a GC manager) for Boehm's lock, which a
    // stop holds, to register the thread or a new chunk of GC-scanned slot blocks.
    require(!s.stopped(m) && !(s.mgr[m].gc && s.any_stop()));
    require(s.threads.size() < kMaxThreads && s.alive_in(m) < kMaxAlivePerManager);
    if (kind == Kind::Spin) require(s.alive_of(Kind::Spin) == 0);
    if (kind == Kind::Poll) require(s.alive_of(Kind::Poll) < 2);
    if (kind == Kind::Worker) require(s.alive_of(Kind::Worker) < kMaxSpawnedWorkers);
  }
  void effect(Model& s) const override {
    if (!checked_before_reaping(s)) s.reap_zombies(m);  // spawn runs reap(ThreadManager::Reap::Exited) first
    if (want(s)) return;
    ThreadM th;
    th.mgr = m;
    th.kind = kind;
    th.result = result_for(s.threads.size());
    th.detached = detached;
    th.gc = registers(s);
    if (kind == Kind::Worker) {
      th.worker = static_cast<int>(s.workers.size());
      s.workers.push_back(WorkerM{true, static_cast<int>(s.threads.size()), true, false, false});
    }
    s.threads.push_back(th);
    ++s.mgr[m].spawned;
  }
  void execute(const Model& s, Sut& sut) const override {
    auto script = std::make_unique<ScriptedThread>(script_of(kind), result_for(s.threads.size()));
    ScriptedThread* p = script.get();
    SpawnOptions o;
    o.stack_size = tiny_stack ? 4096 : kStacks[stack];
    o.detached = detached;
    o.gc = gc;
    Result<ThreadRef> r;
    sut.on(by, [&] {
      r = sut.mgr(m).spawn(std::string("model-") + to_string(kind),
                           [p](Tcr&) -> void* { return p->run(); }, o);
    });
    sut.expect(r, want(s), "spawn");
    if (r) sut.add_spawned(*r, std::move(script), m);
  }
  void show(std::ostream& os) const override {
    os << "Spawn(" << mgr_name(m) << ", " << to_string(kind) << (detached ? ", detached" : "")
       << ", stack " << (tiny_stack ? std::size_t{4096} : kStacks[stack])
       << (gc == GcRegistration::Register ? ", gc=register"
           : gc == GcRegistration::DontRegister ? ", gc=no" : "")
       << ") by " << worker_name(by);
  }
};

struct Join final : Call {
  int t, m_call, by;
  explicit Join(const Model& s) : t(pick_thread(s)), m_call(pick_manager_for(s, t)), by(pick_worker(s)) {
    checkPreconditions(s);
  }
  Join(int t_, int m_, int by_) : t(t_), m_call(m_), by(by_) {}
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    require(valid_thread(s, t));
    if (!join_answer(s, t, m_call, by)) require(s.threads[t].dead);  // else it would block
  }
  void effect(Model& s) const override {
    if (join_answer(s, t, m_call, by)) return;
    s.threads[t].reaped = true;
    ++s.mgr[m_call].reaped;
    s.deliver_pending(s.tcr_of(by));  // join's wait is the caller's safe point
  }
  void execute(const Model& s, Sut& sut) const override {
    Result<void*> r;
    sut.on(by, [&] { r = sut.mgr(m_call).join(sut.ref(t)); });
    if (Want w = join_answer(s, t, m_call, by)) {
      sut.expect(r, w, "join");
    } else {
      sut.expect_joined(r, s.threads[t], "join");
    }
  }
  void show(std::ostream& os) const override {
    os << "Join(" << thread_name(t) << " via " << mgr_name(m_call) << ") by " << worker_name(by);
  }
};

// A join that waits: the worker stays blocked in it until the thread exits.
struct JoinAsync final : Call {
  int t, by;
  explicit JoinAsync(const Model& s) : t(pick_thread(s)), by(pick_worker(s)) { checkPreconditions(s); }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    require(valid_thread(s, t));
    const ThreadM& th = s.threads[t];
    require(th.kind != Kind::Adopted && th.kind != Kind::Worker && !th.dead);
    require(!join_answer(s, t, th.mgr, by));
  }
  void effect(Model& s) const override {
    s.threads[t].joiner = by;
    s.workers[by].busy = true;
    s.deliver_pending(s.tcr_of(by));
  }
  void execute(const Model& s, Sut& sut) const override { sut.start_join(by, s.threads[t].mgr, t); }
  void show(std::ostream& os) const override {
    os << "JoinAsync(" << thread_name(t) << ") by " << worker_name(by);
  }
};

struct Detach final : Call {
  int t, m_call, by;
  explicit Detach(const Model& s) : t(pick_thread(s)), m_call(pick_manager_for(s, t)), by(pick_worker(s)) {
    checkPreconditions(s);
  }
  Want want(const Model& s) const {
    if (Want w = ref_check(s, t, m_call)) return w;
    const ThreadM& th = s.threads[t];
    if (th.kind == Kind::Adopted) return Step::BadArgument;
    if (th.detached) return Step::ThreadDetached;
    if (th.joiner >= 0) return Step::AlreadyJoined;
    return std::nullopt;
  }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    require(valid_thread(s, t));
  }
  void effect(Model& s) const override {
    if (!want(s)) s.threads[t].detached = true;
  }
  void execute(const Model& s, Sut& sut) const override {
    Result<void> r;
    sut.on(by, [&] { r = sut.mgr(m_call).detach(sut.ref(t)); });
    sut.expect(r, want(s), "detach");
  }
  void show(std::ostream& os) const override {
    os << "Detach(" << thread_name(t) << " via " << mgr_name(m_call) << ") by " << worker_name(by);
  }
};

struct Signal final : Call {
  int t, m_call, by, sig;
  explicit Signal(const Model& s)
      : t(pick_thread(s)),
        m_call(pick_manager_for(s, t)),
        by(pick_worker(s)),
        sig(*rc::gen::weightedElement<int>({{3, 0}, {3, SIGUSR1}, {1, kBadSignal}})) {
    checkPreconditions(s);
  }
  Want want(const Model& s) const {
    if (Want w = ref_check(s, t, m_call)) return w;
    if (s.threads[t].dead) return Step::ThreadExited;
    if (sig == kBadSignal) return s.mgr[m_call].tgkill ? Step::Tgkill : Step::PidfdSendSignal;
    return std::nullopt;
  }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    require(valid_thread(s, t));
  }
  void effect(Model&) const override {}
  void execute(const Model& s, Sut& sut) const override {
    Result<void> r;
    sut.on(by, [&] { r = sut.mgr(m_call).signal(sut.ref(t), sig); });
    const Want w = want(s);
    sut.expect(r, w, "signal");
    if (w == Step::ThreadExited) sut.check(r.error().code == ESRCH, "ThreadExited carries ESRCH");
    if (w == Step::Tgkill || w == Step::PidfdSendSignal) {
      sut.check(r.error().code == EINVAL, "a bad signal number is EINVAL");
    }
  }
  void show(std::ostream& os) const override {
    os << "Signal(" << thread_name(t) << " via " << mgr_name(m_call) << ", " << sig << ") by "
       << worker_name(by);
  }
};

struct Interrupt final : Call {
  int t, m_call, by;
  bool exits;  // the closure calls pthread_exit
  explicit Interrupt(const Model& s)
      : t(pick_thread(s)),
        m_call(pick_manager_for(s, t)),
        by(pick_worker(s)),
        exits(*rc::gen::weightedElement<bool>({{6, false}, {1, true}})) {
    checkPreconditions(s);
  }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    require(valid_thread(s, t));
    if (!exits) return;
    const ThreadM& th = s.threads[t];
    require(th.kind == Kind::Latch || th.kind == Kind::Poll);
    require(m_call == th.mgr && !th.dead && !th.finish_asked && !s.suspended(t));
    require(!(th.gc && s.any_stop()));
  }
  Outcome outcome(const Model& s) const {
    return s.threads[t].dead || s.threads[t].reaped ? Outcome::Undelivered : Outcome::Pending;
  }
  void effect(Model& s) const override {
    if (s.threads[t].mgr != m_call) return;  // BadArgument
    s.tickets.push_back(TicketM{t, outcome(s), exits});
  }
  void execute(const Model& s, Sut& sut) const override {
    Probe& p = sut.new_probe(exits);
    Result<InterruptTicket> r = fail(Step::BadArgument);
    sut.on(by, [&] { r = sut.mgr(m_call).interrupt(sut.ref(t), p.closure()); });
    const Want w = s.threads[t].mgr != m_call ? Want(Step::BadArgument) : std::nullopt;
    sut.expect(r, w, "interrupt");
    if (!r) return;
    sut.check(r->target_id() == sut.ref(t).id(), "the ticket names its target");
    sut.add_ticket(*r, p);
  }
  void show(std::ostream& os) const override {
    os << "Interrupt(" << thread_name(t) << " via " << mgr_name(m_call)
       << (exits ? ", pthread_exit" : "") << ") by " << worker_name(by);
  }
};

struct Poll final : Call {
  int by;
  explicit Poll(const Model& s) : by(pick_worker(s)) {}
  void checkPreconditions(const Model& s) const override { require_worker(s, by); }
  void effect(Model& s) const override { s.deliver_pending(s.tcr_of(by)); }
  void execute(const Model& s, Sut& sut) const override {
    std::size_t ran = 0;
    sut.on(by, [&] { ran = ThreadManager::poll(); });
    const std::size_t want = s.tcr_of(by) < 0 ? 0 : s.pending_of(s.tcr_of(by));
    sut.check(ran == want, "poll ran " + std::to_string(ran) + " closure(s), expected " +
                               std::to_string(want));
  }
  void show(std::ostream& os) const override { os << "Poll() by " << worker_name(by); }
};

struct Adopt final : Call {
  int m, by;
  GcRegistration gc;
  // While a world is stopped, mostly into the other manager (the one whose calls still run).
  explicit Adopt(const Model& s)
      : m(s.any_stop() && *rc::gen::weightedElement<bool>({{3, true}, {1, false}})
              ? (s.stopped(0) ? 1 : 0)
              : pick_manager()),
        by(pick_worker(s)),
        gc(*rc::gen::weightedElement<GcRegistration>({{8, GcRegistration::Inherit},
                                                      {1, GcRegistration::Register},
                                                      {1, GcRegistration::DontRegister}})) {
    checkPreconditions(s);
  }
  bool registers(const Model& s) const {
    return gc == GcRegistration::Register || (gc == GcRegistration::Inherit && s.mgr[m].gc);
  }
  Want want(const Model& s) const {
    if (s.tcr_of(by) >= 0) return Step::AlreadyAdopted;
    if (gc == GcRegistration::Register && !s.mgr[m].gc) return Step::BadArgument;
    if (s.mgr[m].shut_down) return Step::ManagerShutDown;
    return std::nullopt;
  }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    if (want(s)) return;
    require(!s.stopped(m) && !(s.mgr[m].gc && s.any_stop()));  // else it would wait (see Spawn)
    require(s.threads.size() < kMaxThreads);
  }
  void effect(Model& s) const override {
    if (want(s)) return;
    ThreadM th;
    th.mgr = m;
    th.kind = Kind::Adopted;
    th.gc = registers(s);
    th.worker = by;
    s.workers[by].tcr = static_cast<int>(s.threads.size());
    s.threads.push_back(th);
    ++s.mgr[m].adopted;
  }
  void execute(const Model& s, Sut& sut) const override {
    Result<Tcr*> r = fail(Step::BadArgument);
    Result<ThreadRef> ref = fail(Step::BadArgument);
    AdoptOptions o;
    o.gc = gc;
    sut.on(by, [&] {
      r = sut.mgr(m).adopt_current_thread("model-adopted", o);
      if (r) ref = sut.mgr(m).current_ref();
    });
    sut.expect(r, want(s), "adopt_current_thread");
    if (!r) return;
    sut.check(ref.has_value() && ref->id() == (*r)->id(), "current_ref() after adoption: " +
                                                              describe(ref));
    sut.check((*r)->adopted() && (*r)->gc_registered() == registers(s),
              "the adopted Tcr says adopted, and GC-registered as asked");
    sut.add_adopted(*ref, by, m);
  }
  void show(std::ostream& os) const override {
    os << "Adopt(" << mgr_name(m)
       << (gc == GcRegistration::Register ? ", gc=register"
           : gc == GcRegistration::DontRegister ? ", gc=no" : "")
       << ") by " << worker_name(by);
  }
};

struct Release final : Call {
  int m_call, by;
  explicit Release(const Model& s) {
    std::tie(by, m_call) = pick_member(s);
    checkPreconditions(s);
  }
  Release(int m_, int by_) : m_call(m_), by(by_) {}
  Want want(const Model& s) const {
    const int t = s.tcr_of(by);
    if (t < 0 || s.threads[t].kind != Kind::Adopted || s.threads[t].mgr != m_call) {
      return Step::NotAdopted;
    }
    return std::nullopt;
  }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    if (want(s)) return;
    // Unregistering from the GC waits for Boehm's lock, which another thread's stop holds (or,
    // when this thread holds the stop and an initiator waits, which that initiator races for).
    const bool gc = s.threads[s.tcr_of(by)].gc;
    require(!(gc && s.any_stop() && !s.holds(by)));
    require(!(gc && s.stop_waited()));
  }
  void effect(Model& s) const override {
    if (want(s)) return;
    const int t = s.tcr_of(by);
    if (s.holds(by)) s.end_stop(m_call);  // a thread that exits holding a stop releases it
    ThreadM& th = s.threads[t];
    th.dead = th.reaped = true;
    ++s.mgr[m_call].reaped;
    s.deliver_pending(t);
    s.workers[by].tcr = -1;
  }
  void execute(const Model& s, Sut& sut) const override {
    Result<void> r;
    sut.on(by, [&] { r = sut.mgr(m_call).release_current_thread(); });
    sut.expect(r, want(s), "release_current_thread");
    if (!r) return;
    sut.released(by);
    if (s.holds(by)) sut.resumed(m_call);
  }
  void show(std::ostream& os) const override {
    os << "Release(" << mgr_name(m_call) << ") by " << worker_name(by);
  }
};

struct CurrentRef final : Call {
  int m_call, by;
  explicit CurrentRef(const Model& s) {
    std::tie(by, m_call) = pick_member(s);
  }
  void checkPreconditions(const Model& s) const override { require_worker(s, by); }
  void effect(Model&) const override {}
  void execute(const Model& s, Sut& sut) const override {
    Result<ThreadRef> r = fail(Step::BadArgument);
    sut.on(by, [&] { r = sut.mgr(m_call).current_ref(); });
    const int t = s.tcr_of(by);
    const bool mine = t >= 0 && s.threads[t].mgr == m_call;
    sut.expect(r, mine ? std::nullopt : Want(Step::BadArgument), "current_ref");
    if (r && mine) sut.check(r->id() == sut.ref(t).id(), "current_ref names the caller");
  }
  void show(std::ostream& os) const override {
    os << "CurrentRef(" << mgr_name(m_call) << ") by " << worker_name(by);
  }
};

struct SuspendAll final : Call {
  int m, by;
  explicit SuspendAll(const Model& s) {
    std::tie(by, m) = pick_holder(s);
    checkPreconditions(s);
  }
  Want want(const Model& s) const {
    if (s.mgr_of_worker(by) != m) return Step::BadArgument;
    return std::nullopt;
  }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    if (!want(s) && !s.holds(by)) require(!s.any_stop());  // a second initiator waits: below
  }
  void effect(Model& s) const override {
    if (want(s)) return;
    if (!s.holds(by)) s.mgr[m].holder = by;
    ++s.mgr[m].depth;
  }
  void execute(const Model& s, Sut& sut) const override {
    Sut::Stop& stop = sut.stop_result(by);
    sut.on(by, sut.suspend_job(m, stop));
    sut.expect(stop.result, want(s), "suspend_all");
    if (stop.result) sut.check_stop(s, m, by, s.mgr[m].depth + 1);
  }
  void show(std::ostream& os) const override {
    os << "SuspendAll(" << mgr_name(m) << ") by " << worker_name(by);
  }
};

// A second initiator, of the other manager: it waits (for Boehm's lock, which the first stop
// holds) until the first stop ends, and then stops its own world. Meanwhile the first stop's
// holder may call its manager.
struct SuspendAllWaiting final : Call {
  int m, by;
  explicit SuspendAllWaiting(const Model& s) {
    require(s.any_stop());
    m = s.stopped(0) ? 1 : 0;
    std::vector<int> members;
    for (std::size_t w = 0; w < s.workers.size(); ++w) {
      const int x = static_cast<int>(w);
      if (s.runnable(x) && s.mgr_of_worker(x) == m) members.push_back(x);
    }
    require(!members.empty());
    by = *rc::gen::elementOf(members);
    checkPreconditions(s);
  }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    require(s.mgr_of_worker(by) == m && s.stopped(1 - m) && s.mgr[m].waiter < 0);
    // A GC-registered thread whose exit waits for the first stop to end would then race the
    // second initiator for Boehm's lock.
    for (const ThreadM& th : s.threads) require(!(th.gc && th.finish_asked && !th.dead));
  }
  void effect(Model& s) const override {
    s.mgr[m].waiter = by;
    s.workers[by].busy = s.workers[by].stopping = true;
  }
  void execute(const Model&, Sut& sut) const override { sut.start_stop(by, m); }
  void show(std::ostream& os) const override {
    os << "SuspendAllWaiting(" << mgr_name(m) << ") by " << worker_name(by);
  }
};

struct ResumeAll final : Call {
  int m, by;
  explicit ResumeAll(const Model& s) { std::tie(by, m) = pick_holder(s); }
  ResumeAll(int m_, int by_) : m(m_), by(by_) {}
  Want want(const Model& s) const {
    if (!s.holds(by) || s.mgr_of_worker(by) != m) return Step::BadArgument;
    return std::nullopt;
  }
  void checkPreconditions(const Model& s) const override { require_worker(s, by); }
  void effect(Model& s) const override {
    if (want(s)) return;
    if (--s.mgr[m].depth == 0) s.end_stop(m);
  }
  void execute(const Model& s, Sut& sut) const override {
    Result<void> r;
    bool still = false;
    sut.on(by, [&] {
      r = sut.mgr(m).resume_all();
      still = sut.mgr(m).world_stopped_by_caller();
    });
    sut.expect(r, want(s), "resume_all");
    const bool want_still = s.holds(by) && s.mgr_of_worker(by) == m && s.mgr[m].depth > (r ? 1u : 0u);
    sut.check(still == want_still, "world_stopped_by_caller() after resume_all");
    if (r && !still) sut.resumed(m);
  }
  void show(std::ostream& os) const override {
    os << "ResumeAll(" << mgr_name(m) << ") by " << worker_name(by);
  }
};

// The test's thread lets a scripted thread return (a latch opens, a loop ends, a worker quits).
struct Finish final : Call {
  int t;
  explicit Finish(const Model& s) : t(pick_thread(s)) { checkPreconditions(s); }
  explicit Finish(int t_) : t(t_) {}
  void checkPreconditions(const Model& s) const override {
    require(valid_thread(s, t));
    const ThreadM& th = s.threads[t];
    require(th.kind != Kind::Adopted && !th.dead && !th.finish_asked);
    if (th.kind == Kind::Worker) require(!s.workers[th.worker].busy);
    // Its exit would wait for Boehm's lock in the middle of its teardown; not modelled.
    const bool releases_stop = th.kind == Kind::Worker && s.holds(th.worker);
    require(!(th.gc && s.any_stop() && !s.suspended(t) && !releases_stop));
    require(!(th.gc && s.stop_waited()));  // it would race the waiting initiator for Boehm's lock
  }
  void effect(Model& s) const override {
    ThreadM& th = s.threads[t];
    th.finish_asked = true;
    // A spawned worker that returns holding the world stopped releases it on its way out.
    if (th.kind == Kind::Worker && s.holds(th.worker)) s.end_stop(th.mgr);
  }
  void execute(const Model& s, Sut& sut) const override {
    const ThreadM& th = s.threads[t];
    if (th.kind == Kind::Worker && s.holds(th.worker)) sut.resumed(th.mgr);
    sut.script(t).finish();
  }
  void show(std::ostream& os) const override { os << "Finish(" << thread_name(t) << ")"; }
};

// The thread's exit races a signal and an interrupt sent from a worker: either answer is right,
// as long as the interrupt is either run on that thread or reported undelivered.
struct FinishRacing final : Call {
  int t, by;
  explicit FinishRacing(const Model& s) : t(pick_thread(s)), by(pick_worker(s)) { checkPreconditions(s); }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    require(valid_thread(s, t) && !s.any_stop());
    const ThreadM& th = s.threads[t];
    require(th.kind != Kind::Adopted && th.kind != Kind::Worker && !th.dead && !th.finish_asked);
  }
  void effect(Model& s) const override {
    s.threads[t].finish_asked = true;
    s.tickets.push_back(TicketM{t, Outcome::Either, false});
  }
  void execute(const Model& s, Sut& sut) const override {
    Probe& p = sut.new_probe(false);
    Result<void> sig;
    Result<InterruptTicket> k = fail(Step::BadArgument);
    const int m = s.threads[t].mgr;
    const ThreadRef ref = sut.ref(t);
    sut.worker(by).start([&] {
      sig = sut.mgr(m).signal(ref, SIGUSR1);
      k = sut.mgr(m).interrupt(ref, p.closure());
    });
    sut.script(t).finish();
    sut.worker(by).finish("the racing signal and interrupt");
    // Stale too when a join under way reaps the thread as soon as it has exited.
    const bool joined = s.threads[t].joiner >= 0;
    sut.check(sig || sig.error().step == Step::ThreadExited ||
                  (joined && sig.error().step == Step::StaleThread),
              "a signal racing its target's exit: " + describe(sig));
    sut.check(k.has_value(), "an interrupt racing its target's exit: " + describe(k));
    if (k) sut.add_ticket(*k, p);
  }
  void show(std::ostream& os) const override {
    os << "FinishRacing(" << thread_name(t) << ") signal+interrupt by " << worker_name(by);
  }
};

// The caller's own spawned thread: reap(ThreadManager::Reap::WaitForRunning) does not wait for running threads there.
bool own_spawned(const Model& s, int by, int m) {
  const int t = s.tcr_of(by);
  return t >= 0 && s.threads[t].mgr == m && s.threads[t].kind != Kind::Adopted;
}

struct Reap final : Call {
  int m, by;
  bool wait;
  explicit Reap(const Model& s)
      : m(pick_manager()), by(pick_worker(s)), wait(*rc::gen::arbitrary<bool>()) {
    checkPreconditions(s);
  }
  Reap(int m_, int by_, bool wait_) : m(m_), by(by_), wait(wait_) {}
  Want want(const Model& s) const {
    if (wait && s.holds(by)) return Step::BadArgument;
    return std::nullopt;
  }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    if (want(s) || !wait || own_spawned(s, by, m)) return;
    for (const ThreadM& th : s.threads) {
      require(!(th.mgr == m && th.detached && !th.dead));  // it would wait for them
    }
  }
  void effect(Model& s) const override {
    if (!want(s)) s.reap_zombies(m);
  }
  void execute(const Model& s, Sut& sut) const override {
    Result<std::size_t> r = fail(Step::BadArgument);
    sut.on(by, [&] {
      r = sut.mgr(m).reap(wait ? ThreadManager::Reap::WaitForRunning : ThreadManager::Reap::Exited);
    });
    sut.expect(r, want(s), "reap");
    if (r) {
      sut.check(*r == s.zombies(m), "reap answered " + std::to_string(*r) + ", expected " +
                                        std::to_string(s.zombies(m)));
    }
  }
  void show(std::ostream& os) const override {
    os << "Reap(" << mgr_name(m) << (wait ? ", wait" : "") << ") by " << worker_name(by);
  }
};

// shutdown() waits for every spawned thread: it runs on a worker while the test's thread finishes
// them one by one.
struct Shutdown final : Call {
  int m, by;
  explicit Shutdown(const Model& s) : m(pick_manager()), by(pick_worker(s)) { checkPreconditions(s); }
  Shutdown(int m_, int by_) : m(m_), by(by_) {}
  Want refused(const Model& s) const {
    if (own_spawned(s, by, m) || s.holds(by)) return Step::BadArgument;
    return std::nullopt;
  }
  Want want(const Model& s) const {
    if (Want w = refused(s)) return w;
    int adopted = 0;
    for (const ThreadM& th : s.threads) adopted += th.mgr == m && th.kind == Kind::Adopted && !th.dead;
    const int t = s.tcr_of(by);
    const bool caller_adopted = t >= 0 && s.threads[t].mgr == m;
    if (adopted > 0 && !(adopted == 1 && caller_adopted)) return Step::AdoptedThreadsAlive;
    return std::nullopt;
  }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    if (refused(s)) return;
    require(!s.any_stop());
    for (const ThreadM& th : s.threads) {
      require(!(th.mgr == m && th.kind == Kind::Worker && !th.dead && s.workers[th.worker].busy));
    }
  }
  void effect(Model& s) const override {
    if (refused(s)) return;
    s.mgr[m].shut_down = true;
    for (ThreadM& th : s.threads) {
      if (th.mgr == m && th.kind != Kind::Adopted && !th.dead) th.finish_asked = true;
    }
    s.normalize();
    s.reap_zombies(m);
  }
  void execute(const Model& s, Sut& sut) const override {
    Result<void> r;
    sut.worker(by).start([&] { r = sut.mgr(m).shutdown(); });
    if (!refused(s)) {
      for (std::size_t t = 0; t < s.threads.size(); ++t) {
        const ThreadM& th = s.threads[t];
        if (th.mgr == m && th.kind != Kind::Adopted && !th.dead && !th.finish_asked) {
          sut.script(static_cast<int>(t)).finish();
        }
      }
    }
    sut.worker(by).finish("shutdown to return");
    sut.expect(r, want(s), "shutdown");
  }
  void show(std::ostream& os) const override {
    os << "Shutdown(" << mgr_name(m) << ") by " << worker_name(by);
  }
};

// Reads the manager's view (stats, snapshot, current_ref, world_stopped_by_caller) against the
// model's.
struct Inspect final : Call {
  int m, by;
  explicit Inspect(const Model& s) : m(pick_manager()), by(pick_worker(s)) {}
  Inspect(int m_, int by_) : m(m_), by(by_) {}
  void checkPreconditions(const Model& s) const override { require_worker(s, by); }
  void effect(Model&) const override {}
  void execute(const Model& s, Sut& sut) const override {
    ManagerStats st;
    std::vector<ThreadInfo> snap;
    bool stopped = false;
    sut.on(by, [&] {
      stopped = sut.mgr(m).world_stopped_by_caller();
      st = sut.mgr(m).stats();
      snap = sut.mgr(m).snapshot().value();
    });
    const ManagerM& mm = s.mgr[m];
    sut.check(stopped == (s.holds(by) && s.mgr_of_worker(by) == m), "world_stopped_by_caller()");
    std::size_t live = 0;
    std::size_t dead_unreaped = 0;
    for (const ThreadM& th : s.threads) {
      if (th.mgr != m) continue;
      live += !th.dead;
      dead_unreaped += th.kind != Kind::Adopted && th.dead && !th.reaped;
    }
    const auto eq = [&](std::uint64_t got, std::uint64_t want, const char* what) {
      sut.check(got == want, std::string("stats().") + what + " is " + std::to_string(got) +
                                 ", expected " + std::to_string(want));
    };
    eq(st.spawned, mm.spawned, "spawned");
    eq(st.adopted, mm.adopted, "adopted");
    eq(st.reaped, mm.reaped, "reaped");
    eq(st.live, live, "live");
    eq(st.dead_unreaped, dead_unreaped, "dead_unreaped");
    sut.check(st.cached_stacks <= 8, "at most cached_stacks stacks are kept");
    sut.check(snap.size() == live, "snapshot() lists " + std::to_string(snap.size()) +
                                       " thread(s), expected " + std::to_string(live));
    for (std::size_t t = 0; t < s.threads.size(); ++t) {
      const ThreadM& th = s.threads[t];
      if (th.mgr != m || th.dead) continue;
      const std::uint64_t id = sut.ref(static_cast<int>(t)).id();
      auto it = std::find_if(snap.begin(), snap.end(), [&](const ThreadInfo& i) { return i.id == id; });
      sut.check(it != snap.end(), "snapshot() lists " + thread_name(static_cast<int>(t)));
      if (it == snap.end()) continue;
      sut.check(it->state == TcrState::Running && it->detached == th.detached &&
                    it->adopted == (th.kind == Kind::Adopted) && it->gc_registered == th.gc &&
                    (it->handle_fd < 0) == mm.tgkill,
                "snapshot() of " + thread_name(static_cast<int>(t)) + ": state " +
                    tcr::to_string(it->state) + ", detached " + std::to_string(it->detached) +
                    ", adopted " + std::to_string(it->adopted) + ", gc " +
                    std::to_string(it->gc_registered) + ", fd " + std::to_string(it->handle_fd));
    }
  }
  void show(std::ostream& os) const override {
    os << "Inspect(" << mgr_name(m) << ") by " << worker_name(by);
  }
};

struct Trim final : Call {
  int m, by;
  explicit Trim(const Model& s) : m(pick_manager()), by(pick_worker(s)) {}
  void checkPreconditions(const Model& s) const override { require_worker(s, by); }
  void effect(Model&) const override {}
  void execute(const Model&, Sut& sut) const override {
    std::size_t before = 0, released = 0, after = 0;
    sut.on(by, [&] {
      before = sut.mgr(m).stats().cached_stacks;
      released = sut.mgr(m).trim();
      after = sut.mgr(m).stats().cached_stacks;
    });
    sut.check(released == before && after == 0,
              "trim() released " + std::to_string(released) + " of " + std::to_string(before) +
                  " cached stacks, " + std::to_string(after) + " left");
  }
  void show(std::ostream& os) const override { os << "Trim(" << mgr_name(m) << ") by " << worker_name(by); }
};

// ---- regions -----------------------------------------------------------------------------------

int pick_live_region(const Model& s) {
  const int slot = *rc::gen::inRange(0, kRegionSlots);
  require(s.regions[slot].live);
  return slot;
}
std::vector<int> pick_pages(const Model& s, int slot) {
  const int n = s.regions[slot].pages;
  std::vector<int> pages;
  for (int p = 0; p < n; ++p) {
    if (*rc::gen::arbitrary<bool>()) pages.push_back(p);
  }
  require(!pages.empty());
  return pages;
}
void require_region(const Model& s, int slot) { require(slot >= 0 && slot < kRegionSlots && s.regions[slot].live); }
void require_pages(const Model& s, int slot, const std::vector<int>& pages) {
  for (int p : pages) require(p < s.regions[slot].pages);
}
char* page_byte(Sut& sut, int slot, int p) {
  return sut.region(slot).base + static_cast<std::size_t>(p) * page_size() + 64 + 8 * p;
}
void write_pages(Sut& sut, const Model& s, int slot, const std::vector<int>& pages) {
  for (int p : pages) {
    *reinterpret_cast<volatile char*>(page_byte(sut, slot, p)) =
        static_cast<char>(s.regions[slot].bytes[p] + 1);
  }
}
std::string list(const std::vector<std::size_t>& v) {
  std::string out = "{";
  for (std::size_t p : v) out += (out.size() > 1 ? "," : "") + std::to_string(p);
  return out + "}";
}
void show_pages(std::ostream& os, const std::vector<int>& pages) {
  os << "{";
  for (std::size_t i = 0; i < pages.size(); ++i) os << (i ? "," : "") << pages[i];
  os << "}";
}

struct RegionCreate final : Call {
  int slot, mode, pages, by;
  explicit RegionCreate(const Model& s)
      : slot(*rc::gen::inRange(0, kRegionSlots)),
        mode(*rc::gen::inRange(0, static_cast<int>(trap_modes().size()))),
        pages(*rc::gen::inRange(1, kMaxPages + 1)),
        by(pick_worker(s)) {
    checkPreconditions(s);
  }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    require(slot >= 0 && slot < kRegionSlots && !s.regions[slot].live);
    require(mode >= 0 && mode < static_cast<int>(trap_modes().size()));
  }
  void effect(Model& s) const override {
    RegionM& r = s.regions[slot];
    r = RegionM{};
    r.live = true;
    r.mode = trap_modes()[mode];
    r.pages = pages;
    r.bytes.assign(pages, 0);
  }
  void execute(const Model&, Sut& sut) const override {
    Sut::Region& r = sut.region(slot);
    r.length = static_cast<std::size_t>(pages) * page_size();
    r.base = Sut::map_pages(pages);
    sut.check(r.base != nullptr, "mmap for a region");
    Result<std::unique_ptr<ProtectedRegion>> got = fail(Step::BadArgument);
    RegionOptions o;
    o.mode = trap_modes()[mode];
    o.fall_back = false;
    sut.on(by, [&] { got = ProtectedRegion::create(r.base, r.length, o); });
    sut.expect(got, std::nullopt, "ProtectedRegion::create");
    if (!got) return;
    sut.check((*got)->mode() == trap_modes()[mode] && (*got)->pages() == static_cast<std::size_t>(pages),
              "the region has the mode and pages asked for");
    r.region = std::move(*got);
  }
  void show(std::ostream& os) const override {
    os << "RegionCreate(r" << slot << ", " << tcr::to_string(trap_modes()[mode]) << ", " << pages
       << " pages) by " << worker_name(by);
  }
};

// A range that breaks one of create()'s rules: not page-aligned, empty, or overlapping a region.
struct RegionCreateBad final : Call {
  enum class Flaw : std::uint8_t { Misaligned, Empty, Overlap };
  Flaw flaw;
  int mode, slot, by;
  explicit RegionCreateBad(const Model& s)
      : flaw(*rc::gen::element(Flaw::Misaligned, Flaw::Empty, Flaw::Overlap)),
        mode(*rc::gen::inRange(0, static_cast<int>(trap_modes().size()))),
        slot(*rc::gen::inRange(0, kRegionSlots)),
        by(pick_worker(s)) {
    checkPreconditions(s);
  }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    require(mode >= 0 && mode < static_cast<int>(trap_modes().size()));
    if (flaw == Flaw::Overlap) require_region(s, slot);
  }
  void effect(Model&) const override {}
  void execute(const Model&, Sut& sut) const override {
    char* scratch = flaw == Flaw::Overlap ? nullptr : Sut::map_pages(2);
    char* base = flaw == Flaw::Overlap ? sut.region(slot).base : scratch;
    std::size_t length = page_size();
    if (flaw == Flaw::Misaligned) base += 1;
    if (flaw == Flaw::Empty) length = 0;
    RegionOptions o;
    o.mode = trap_modes()[mode];
    o.fall_back = false;
    Result<std::unique_ptr<ProtectedRegion>> got = fail(Step::StaleThread);
    sut.on(by, [&] { got = ProtectedRegion::create(base, length, o); });
    if (scratch != nullptr) munmap(scratch, 2 * page_size());
    sut.expect(got, Step::BadArgument, "ProtectedRegion::create of a bad range");
  }
  void show(std::ostream& os) const override {
    static const char* const kFlaws[] = {"misaligned", "empty", "overlapping"};
    os << "RegionCreateBad(" << kFlaws[static_cast<int>(flaw)];
    if (flaw == Flaw::Overlap) os << " r" << slot;
    os << ", " << tcr::to_string(trap_modes()[mode]) << ") by " << worker_name(by);
  }
};

struct RegionProtect final : Call {
  int slot, by;
  bool arm;  // protect(), or unprotect()
  explicit RegionProtect(const Model& s)
      : slot(pick_live_region(s)), by(pick_worker(s)), arm(*rc::gen::weightedElement<bool>({{3, true}, {1, false}})) {}
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    require_region(s, slot);
  }
  void effect(Model& s) const override {
    s.regions[slot].armed = arm;
    s.regions[slot].dirty.clear();
  }
  void execute(const Model&, Sut& sut) const override {
    Result<void> r;
    ProtectedRegion& region = *sut.region(slot).region;
    sut.on(by, [&] { r = arm ? region.protect() : region.unprotect(); });
    sut.expect(r, std::nullopt, arm ? "protect" : "unprotect");
  }
  void show(std::ostream& os) const override {
    os << (arm ? "RegionProtect(r" : "RegionUnprotect(r") << slot << ") by " << worker_name(by);
  }
};

struct RegionWrite final : Call {
  int slot;
  std::vector<int> pages;
  int by;
  explicit RegionWrite(const Model& s) : slot(pick_live_region(s)), pages(pick_pages(s, slot)), by(pick_worker(s)) {}
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    require_region(s, slot);
    require_pages(s, slot, pages);
  }
  void effect(Model& s) const override {
    RegionM& r = s.regions[slot];
    for (int p : pages) {
      ++r.bytes[p];
      if (r.armed) r.dirty.insert(p);
    }
  }
  void execute(const Model& s, Sut& sut) const override {
    sut.on(by, [&] { write_pages(sut, s, slot, pages); });
  }
  void show(std::ostream& os) const override {
    os << "RegionWrite(r" << slot << ", ";
    show_pages(os, pages);
    os << ") by " << worker_name(by);
  }
};

std::vector<std::size_t> as_sizes(const std::set<int>& pages) {
  return std::vector<std::size_t>(pages.begin(), pages.end());
}

struct RegionCollect final : Call {
  int slot, by;
  explicit RegionCollect(const Model& s) : slot(pick_live_region(s)), by(pick_worker(s)) {}
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    require_region(s, slot);
  }
  void effect(Model& s) const override { s.regions[slot].dirty.clear(); }
  void execute(const Model& s, Sut& sut) const override {
    const RegionM& rm = s.regions[slot];
    Result<std::vector<std::size_t>> got = fail(Step::BadArgument);
    ProtectedRegion& region = *sut.region(slot).region;
    sut.on(by, [&] { got = region.collect_dirty(); });
    sut.expect(got, std::nullopt, "collect_dirty");
    if (!got) return;
    const std::vector<std::size_t> want = rm.armed ? as_sizes(rm.dirty) : std::vector<std::size_t>{};
    sut.check(*got == want, "collect_dirty answered " + list(*got) + ", expected " + list(want));
    for (int p = 0; p < rm.pages; ++p) {
      sut.check(*page_byte(sut, slot, p) == static_cast<char>(rm.bytes[p]),
                "page " + std::to_string(p) + " holds what was last written to it");
    }
  }
  void show(std::ostream& os) const override {
    os << "RegionCollect(r" << slot << ") by " << worker_name(by);
  }
};

// Writes race a collect_dirty; a second and a third collect after them. Each write is reported by
// the first collect or the second, never lost; pages dirty before are reported by the first; a
// page neither dirty nor written is reported by none; the third reports nothing.
struct RegionRace final : Call {
  int slot;
  std::vector<int> pages;
  int writer, collector;
  explicit RegionRace(const Model& s)
      : slot(pick_live_region(s)), pages(pick_pages(s, slot)), writer(pick_worker(s)), collector(pick_worker(s)) {
    checkPreconditions(s);
  }
  void checkPreconditions(const Model& s) const override {
    require_worker(s, writer);
    require_worker(s, collector);
    require(writer != collector);
    require_region(s, slot);
    require_pages(s, slot, pages);
  }
  void effect(Model& s) const override {
    RegionM& r = s.regions[slot];
    for (int p : pages) ++r.bytes[p];
    r.dirty.clear();
  }
  void execute(const Model& s, Sut& sut) const override {
    const RegionM& rm = s.regions[slot];
    ProtectedRegion& region = *sut.region(slot).region;
    Result<std::vector<std::size_t>> first = fail(Step::BadArgument);
    Result<std::vector<std::size_t>> second = fail(Step::BadArgument);
    sut.worker(writer).start([&] { write_pages(sut, s, slot, pages); });
    sut.on(collector, [&] { first = region.collect_dirty(); });
    sut.worker(writer).finish("the racing writes");
    Result<std::vector<std::size_t>> third = fail(Step::BadArgument);
    sut.on(collector, [&] {
      second = region.collect_dirty();
      third = region.collect_dirty();
    });
    sut.expect(first, std::nullopt, "collect_dirty racing writes");
    sut.expect(second, std::nullopt, "collect_dirty after racing writes");
    sut.expect(third, std::nullopt, "collect_dirty after that");
    if (!first || !second || !third) return;
    sut.check(third->empty(), "a third collect_dirty, with no write since, answered " + list(*third));
    const std::string seen = "collect_dirty answered " + list(*first) + " then " + list(*second);
    sut.check(std::is_sorted(first->begin(), first->end()) &&
                  std::is_sorted(second->begin(), second->end()),
              seen + ": not ascending");
    if (!rm.armed) {
      sut.check(first->empty() && second->empty(), seen + " while unarmed");
      return;
    }
    const std::set<int> written(pages.begin(), pages.end());
    const auto in = [](const std::vector<std::size_t>& v, int p) {
      return std::find(v.begin(), v.end(), static_cast<std::size_t>(p)) != v.end();
    };
    for (int p = 0; p < rm.pages; ++p) {
      const bool before = rm.dirty.count(p) > 0;
      const bool now = written.count(p) > 0;
      const bool a = in(*first, p);
      const bool b = in(*second, p);
      bool ok = true;
      if (!before && !now) ok = !a && !b;
      if (before && !now) ok = a && !b;
      // A write can be reported twice: the first collect may claim and re-arm its page between
      // the fault that marked it and the store itself, which then faults again.
      if (!before && now) ok = a || b;
      if (before && now) ok = a;
      sut.check(ok, seen + ": page " + std::to_string(p) + (before ? " was dirty" : " was clean") +
                        (now ? " and written" : " and not written"));
    }
    for (int p = 0; p < rm.pages; ++p) {
      const auto want = static_cast<char>(rm.bytes[p] + (written.count(p) ? 1 : 0));
      sut.check(*page_byte(sut, slot, p) == want, "page " + std::to_string(p) + " holds its write");
    }
  }
  void show(std::ostream& os) const override {
    os << "RegionRace(r" << slot << ", ";
    show_pages(os, pages);
    os << ") writes by " << worker_name(writer) << ", collects by " << worker_name(collector);
  }
};

struct RegionDestroy final : Call {
  int slot, by;
  explicit RegionDestroy(const Model& s) : slot(pick_live_region(s)), by(pick_worker(s)) {}
  RegionDestroy(int slot_, int by_) : slot(slot_), by(by_) {}
  void checkPreconditions(const Model& s) const override {
    require_worker(s, by);
    require_region(s, slot);
  }
  void effect(Model& s) const override { s.regions[slot] = RegionM{}; }
  void execute(const Model&, Sut& sut) const override { sut.destroy_region(slot, by); }
  void show(std::ostream& os) const override {
    os << "RegionDestroy(r" << slot << ") by " << worker_name(by);
  }
};

// ---- a case ------------------------------------------------------------------------------------

using CallPtr = std::shared_ptr<const Call>;

// What ends a case: stops resumed, every thread finished and joined, workers released, regions
// destroyed, managers shut down; checked like any other call.
CallPtr teardown_step(const Model& s) {
  for (int m = 0; m < kManagers; ++m) {
    if (s.mgr[m].holder >= 0) return std::make_shared<ResumeAll>(m, s.mgr[m].holder);
  }
  for (int pass = 0; pass < 2; ++pass) {  // workers last: a joiner is busy until its thread ends
    for (std::size_t t = 0; t < s.threads.size(); ++t) {
      const ThreadM& th = s.threads[t];
      if (th.kind == Kind::Adopted || th.dead || th.finish_asked) continue;
      if ((th.kind == Kind::Worker) != (pass == 1)) continue;
      if (th.kind == Kind::Worker && s.workers[th.worker].busy) continue;
      return std::make_shared<Finish>(static_cast<int>(t));
    }
  }
  for (int w = 0; w < kForeign; ++w) {
    if (s.tcr_of(w) >= 0) return std::make_shared<Release>(s.threads[s.tcr_of(w)].mgr, w);
  }
  for (std::size_t t = 0; t < s.threads.size(); ++t) {
    const ThreadM& th = s.threads[t];
    if (th.kind != Kind::Adopted && th.dead && !th.reaped && !th.detached && th.joiner < 0) {
      return std::make_shared<Join>(static_cast<int>(t), th.mgr, 0);
    }
  }
  for (int m = 0; m < kManagers; ++m) {
    if (s.zombies(m) > 0) return std::make_shared<Reap>(m, 0, true);
  }
  for (int slot = 0; slot < kRegionSlots; ++slot) {
    if (s.regions[slot].live) return std::make_shared<RegionDestroy>(slot, 0);
  }
  for (int m = 0; m < kManagers; ++m) {
    if (!s.mgr[m].shut_down) return std::make_shared<Shutdown>(m, 0);
  }
  return nullptr;
}

std::string leaks(const ResourceCounts& before, const ResourceCounts& after) {
  std::string out;
  const auto differ = [&](const char* what, std::size_t b, std::size_t a) {
    if (a != b) out += std::string(what) + ": " + std::to_string(b) + " -> " + std::to_string(a) + "; ";
  };
  differ("fds", before.fds, after.fds);
  differ("pidfds", before.pidfds, after.pidfds);
  differ("threads", before.threads, after.threads);
  if (test::kMemoryCountsExact) {
    differ("maps", before.maps, after.maps);
    if (after.rss_kb > before.rss_kb + 8192) differ("rss_kb", before.rss_kb, after.rss_kb);
  }
  return out;
}

void run_case(const std::vector<ForeignWorker*>& pool,
              const rc::state::Commands<CommandBase>& commands) {
  case_log().clear();
  const ResourceLedger ledger;
  const ResourceCounts before = test::settled(ledger);
  {
    Model s = Model::initial();
    Sut sut(pool);
    for (const auto& c : commands) {
      c->checkPreconditions(s);
      std::ostringstream name;
      c->show(name);
      ++calls_made()[name.str().substr(0, name.str().find('('))];
      c->run(s, sut);
      c->apply(s);
    }
    int steps = 0;
    while (CallPtr c = teardown_step(s)) {
      sut.check(++steps < 400, "the teardown does not end");
      c->run(s, sut);
      c->apply(s);
    }
    for (int m = 0; m < kManagers; ++m) {
      const Inspect last(m, 0);
      last.run(s, sut);
    }
    for (std::size_t k = 0; k < s.tickets.size(); ++k) {
      sut.check(s.tickets[k].outcome != Outcome::Pending,
                "the model leaves interrupt #" + std::to_string(k) + " pending at the end");
    }
    // Back at the baseline while the managers still exist (their destruction would release what
    // a reaped record kept by mistake), once their cached stacks are trimmed.
    sut.begin("end of the case: trim, then count resources");
    sut.on(0, [&] {
      for (int m = 0; m < kManagers; ++m) (void)sut.mgr(m).trim();
    });
    const std::string held = leaks(before, test::settled(ledger));
    sut.check(held.empty(), "resources held by the shut-down managers: " + held);
  }
  const std::string leaked = leaks(before, test::settled(ledger));
  if (!leaked.empty()) {
    std::fprintf(stderr, "model test: resources not back at baseline: %s\nthe case:\n%s\n",
                 leaked.c_str(), case_log().c_str());
  }
  RC_ASSERT(leaked == "");
}

// The lazily created parts of tcr (signal handlers, the exception listener, the Async mode's
// descriptors, Boehm's thread tables) and glibc's, made once, so that a case's counts are its own.
void warm_up(const std::vector<ForeignWorker*>& pool) {
  Sut sut(pool);
  Worker& w = pool[0]->worker();
  for (int m = 0; m < kManagers; ++m) {
    ThreadManager& manager = sut.mgr(m);
    w.run([&] {
      Result<ThreadRef> t = manager.spawn("warm-up", [](Tcr&) -> void* { return nullptr; });
      if (t) (void)manager.join(*t);
      if (manager.adopt_current_thread("warm-up")) {
        Result<ThreadRef> self = manager.current_ref();
        if (self) (void)manager.interrupt(*self, [](Tcr&) {});
        ThreadManager::poll();
        if (manager.suspend_all()) (void)manager.resume_all();
        (void)manager.release_current_thread();
      }
    }, "warm-up");
  }
  for (TrapMode mode : trap_modes()) {
    char* base = Sut::map_pages(2);
    RegionOptions o;
    o.mode = mode;
    o.fall_back = false;
    w.run([&] {
      Result<std::unique_ptr<ProtectedRegion>> r = ProtectedRegion::create(base, 2 * page_size(), o);
      if (r && (*r)->protect()) {
        base[0] = 1;
        (void)(*r)->collect_dirty();
      }
    }, "warm-up");
    munmap(base, 2 * page_size());
  }
}

template <class C>
rc::Gen<std::shared_ptr<const CommandBase>> one(const Model& s) {
  return rc::state::gen::execOneOfWithArgs<C>()(s);
}

// The next call of a case, weighted: spawning and finishing threads, interrupts, stops and
// writes often; shutdown, which ends a manager's part of the case, rarely.
rc::Gen<std::shared_ptr<const CommandBase>> generate(const Model& s) {
  return rc::gen::weightedOneOf<std::shared_ptr<const CommandBase>>({
      {12, one<Spawn>(s)},        {8, one<Finish>(s)},        {5, one<Join>(s)},
      {4, one<JoinAsync>(s)},     {3, one<Detach>(s)},        {4, one<Signal>(s)},
      {8, one<Interrupt>(s)},     {3, one<Poll>(s)},          {6, one<Adopt>(s)},
      {3, one<Release>(s)},       {2, one<CurrentRef>(s)},    {5, one<SuspendAll>(s)},
      {4, one<ResumeAll>(s)},     {3, one<FinishRacing>(s)},  {3, one<Reap>(s)},
      {6, one<SuspendAllWaiting>(s)},
      {1, one<Shutdown>(s)},      {3, one<Inspect>(s)},       {1, one<Trim>(s)},
      {4, one<RegionCreate>(s)},  {1, one<RegionCreateBad>(s)}, {3, one<RegionProtect>(s)},
      {5, one<RegionWrite>(s)},   {4, one<RegionCollect>(s)}, {3, one<RegionRace>(s)},
      {1, one<RegionDestroy>(s)},
  });
}

int budget() {
  const char* b = std::getenv("TCR_MODEL_BUDGET");
  if (b == nullptr || *b == '\0') return kDefaultCases;
  if (std::string(b) == "long") return kLongCases;
  return std::max(1, std::atoi(b));
}

std::uint64_t seed() {
  const char* s = std::getenv("TCR_MODEL_SEED");
  return s != nullptr && *s != '\0' ? std::strtoull(s, nullptr, 0) : kDefaultSeed;
}

std::atomic<int> g_usr1{0};

TEST(Model, RandomCallSequencesAnswerAsTheModelSays) {
  // One malloc arena: glibc makes one (two mappings, kept for good) the first time threads
  // contend for malloc, which would show as a leak in the case that happened to contend first.
  mallopt(M_ARENA_MAX, 1);
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_usr1.fetch_add(1, std::memory_order_relaxed); };
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, nullptr), 0);  // no SA_RESTART: waits see EINTR
  for (TrapMode mode : {TrapMode::Signal, TrapMode::Listener, TrapMode::Async}) {
    char* base = Sut::map_pages(1);
    RegionOptions o;
    o.mode = mode;
    o.fall_back = false;
    if (ProtectedRegion::create(base, page_size(), o)) trap_modes().push_back(mode);
    munmap(base, page_size());
  }
  ASSERT_FALSE(trap_modes().empty());

  std::vector<std::unique_ptr<ForeignWorker>> owned;
  std::vector<ForeignWorker*> pool;
  for (int w = 0; w < kForeign; ++w) {
    owned.push_back(std::make_unique<ForeignWorker>(w < 2 ? Worker::Idle::RunInterrupts
                                                          : Worker::Idle::HoldInterrupts));
    pool.push_back(owned.back().get());
  }
  warm_up(pool);

  rc::detail::TestParams params = rc::detail::configuration().testParams;
  const bool rc_params = std::getenv("RC_PARAMS") != nullptr;
  if (!rc_params) {
    params.seed = seed();
    params.maxSuccess = budget();
    params.maxSize = kMaxCommands;
  }
  rc::detail::TestMetadata metadata;
  metadata.id = "Model/RandomCallSequencesAnswerAsTheModelSays";
  metadata.description = "random call sequences answer as the model says";
  const auto property = [&pool] {
    const auto commands = *rc::state::gen::commands(Model::initial(), generate);
    run_case(pool, commands);
  };
  const rc::detail::TestResult result =
      rc_params ? rc::detail::checkTestable(property, metadata)
                : rc::detail::checkTestable(property, metadata, params);
  std::ostringstream report;
  rc::detail::printResultMessage(result, report);
  std::cout << report.str() << "\n";
  EXPECT_TRUE(result.template is<rc::detail::SuccessResult>())
      << report.str() << "\nreproduce: TCR_MODEL_SEED=" << params.seed
      << " TCR_MODEL_BUDGET=" << params.maxSuccess << " (or rapidcheck's RC_PARAMS)";
  std::cout << "model test: seed " << params.seed << ", " << params.maxSuccess
            << " cases, modes";
  for (TrapMode mode : trap_modes()) std::cout << " " << tcr::to_string(mode);
  std::cout << ", SIGUSR1 handled " << g_usr1.load() << " times; calls:";
  for (const auto& [name, n] : calls_made()) std::cout << " " << name << " " << n;
  std::cout << "\nmodel test: answers:";
  for (const auto& [name, n] : answers()) std::cout << " " << name << " " << n << ";";
  std::cout << "\n";
}

}  // namespace
}  // namespace tcr::model
