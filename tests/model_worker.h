// The threads of the model-based test (tests/model_test.cpp): workers that make the test's calls
// on request, so that calls come from several threads and the ones that must run on a given
// thread (adopt, release, current_ref, poll, suspend_all) can; and spawned threads whose
// behaviour is scripted, so that what each call about them must answer is known.
// Every wait here is bounded: a wait that runs out aborts the test with what it waited for and
// the case so far (a hang becomes a failure with a message, not a stuck ctest).
// Nothing a worker or a scripted thread does at its idle point allocates: a stop-the-world may
// suspend it there, and the test's own thread must still be able to call malloc.
#pragma once

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

#include "threads/thread_manager.h"

namespace tcr::model {

// How long one wait of the model may take before it counts as a hang: a spawn on a loaded
// 2-core machine under a sanitizer takes milliseconds, not seconds.
inline constexpr std::chrono::seconds kWaitLimit{30};

// What the running case did so far (set by the test's thread before each call), for the message
// of a hang.
inline std::string& case_log() {
  static std::string s_log;
  return s_log;
}

[[noreturn]] inline void hung(const std::string& what) {
  std::fprintf(stderr, "model test: hung: %s (waited %llds)\nthe case so far:\n%s\n",
               what.c_str(), static_cast<long long>(kWaitLimit.count()), case_log().c_str());
  std::fflush(stderr);
  std::abort();
}

// Polls done() until it holds; a hang after kWaitLimit. Not a timing assertion: a bound.
inline void await(const std::function<bool()>& done, const std::string& what) {
  const auto end = std::chrono::steady_clock::now() + kWaitLimit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) hung(what);
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

// Runs jobs on its thread, one at a time, for the test's thread, which waits for each. Between
// jobs it waits on a tcr::Semaphore, which on a tcr thread is a safe point (RunInterrupts: the
// thread's interrupts run while it is idle) or not (HoldInterrupts: they wait for a poll(), a
// join or the thread's release).
class Worker {
 public:
  enum class Idle : std::uint8_t { RunInterrupts, HoldInterrupts };
  explicit Worker(Idle idle) : m_idle(idle) {}
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  Idle idle() const { return m_idle; }

  // Runs job on the worker's thread and waits until it is done.
  void run(std::function<void()> job, const std::string& what) {
    start(std::move(job));
    finish(what);
  }
  // Hands job to the worker's thread; finish() waits for it.
  void start(std::function<void()> job) {
    m_job = std::move(job);
    ++m_jobs;
    m_request.post();
  }
  void finish(const std::string& what) {
    if (!m_done.wait_for(kWaitLimit, Semaphore::Interrupts::Hold)) hung(what);
  }
  // Whether the job started last is done (finish() then returns at once).
  bool done() const { return m_done.value() > 0; }
  // Whether the job started last is under way and its thread asleep in a futex wait: for a job
  // that is to block in a tcr wait (a join), that it has got there. Read from the kernel
  // (/proc/self/task/TID/syscall names the system call a sleeping thread is in).
  bool asleep_in_job() const {
    if (m_started.load(std::memory_order_acquire) != m_jobs) return false;
    const std::string path = "/proc/self/task/" + std::to_string(m_tid.load()) + "/syscall";
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr) return false;
    long nr = -1;
    const bool read = std::fscanf(f, "%ld", &nr) == 1;
    std::fclose(f);
    return read && nr == SYS_futex;
  }
  // loop() returns once it sees this, between jobs.
  void quit() {
    m_quit.store(true, std::memory_order_release);
    m_request.post();
  }

  // The worker thread's body.
  void loop() {
    const Semaphore::Interrupts mode = m_idle == Idle::RunInterrupts
                                           ? Semaphore::Interrupts::Run
                                           : Semaphore::Interrupts::Hold;
    m_tid.store(static_cast<pid_t>(::syscall(SYS_gettid)));
    for (;;) {
      m_request.wait(mode);
      if (m_quit.load(std::memory_order_acquire)) return;
      m_started.fetch_add(1, std::memory_order_release);
      m_job();
      m_job = nullptr;  // its captures go here, before the test's thread hears it is done
      m_done.post();
    }
  }

 private:
  const Idle m_idle;
  Semaphore m_request;
  Semaphore m_done;
  std::function<void()> m_job;
  std::uint64_t m_jobs = 0;                 // started by the test's thread
  std::atomic<std::uint64_t> m_started{0};  // begun by the worker's thread
  std::atomic<pid_t> m_tid{0};
  std::atomic<bool> m_quit{false};
};

// A worker on a thread tcr did not create (it may adopt itself), alive for the whole test.
class ForeignWorker {
 public:
  explicit ForeignWorker(Worker::Idle idle) : m_worker(idle), m_thread([this] { m_worker.loop(); }) {}
  ~ForeignWorker() {
    m_worker.quit();
    m_thread.join();
  }
  Worker& worker() { return m_worker; }

 private:
  Worker m_worker;
  std::thread m_thread;
};

// What a spawned thread of the model does until finish() and what it then returns.
enum class Script : std::uint8_t {
  Latch,          // waits on a tcr::Semaphore (a safe point): interrupts run at once
  BlockingLatch,  // the same inside a BlockingScope: a stop claims it without a signal, and its
                  // interrupts run when the scope ends
  Throw,          // like Latch, then throws instead of returning (join: ThreadThrew)
  Poll,           // loops on poll() (a safe point) until finished
  Spin,           // spins with no safe point: interrupts run at its exit, a stop signals it
  Worker,         // a Worker (RunInterrupts) on a spawned thread
};
const char* to_string(Script s);

struct ScriptedThread {
  ScriptedThread(Script s, std::uintptr_t r) : script(s), result(r) {}
  ScriptedThread(const ScriptedThread&) = delete;
  ScriptedThread& operator=(const ScriptedThread&) = delete;

  // The thread's function; the ThreadFunction captures only `this` (no allocation). It says when
  // it has reached the point where it waits (spawn returns a little before).
  void* run() {
    switch (script) {
      case Script::Latch:
        ready.store(true, std::memory_order_release);
        gate.wait();
        break;
      case Script::BlockingLatch: {
        BlockingScope blocking;
        ready.store(true, std::memory_order_release);
        gate.wait();
        break;
      }
      case Script::Throw:
        ready.store(true, std::memory_order_release);
        gate.wait();
        throw std::runtime_error("scripted throw");
      case Script::Poll:
        ready.store(true, std::memory_order_release);
        while (!stop.load(std::memory_order_acquire)) {
          ThreadManager::poll();
          ::usleep(50);
        }
        break;
      case Script::Spin:
        ready.store(true, std::memory_order_release);
        while (!stop.load(std::memory_order_relaxed)) {
        }
        break;
      case Script::Worker:
        ready.store(true, std::memory_order_release);
        worker.loop();
        break;
    }
    return reinterpret_cast<void*>(result);
  }
  // Lets run() return (or throw).
  void finish() {
    switch (script) {
      case Script::Latch:
      case Script::BlockingLatch:
      case Script::Throw: gate.post(); break;
      case Script::Poll:
      case Script::Spin: stop.store(true, std::memory_order_release); break;
      case Script::Worker: worker.quit(); break;
    }
  }

  const Script script;
  const std::uintptr_t result;
  Semaphore gate;
  std::atomic<bool> stop{false};
  std::atomic<bool> ready{false};
  Worker worker{Worker::Idle::RunInterrupts};
};

// Where an interrupt closure says that it ran, and on which thread. The closure captures only
// `this` (no allocation), and may end its thread (pthread_exit) once it has said so.
struct Probe {
  std::atomic<std::uint64_t> ran_on{0};
  std::atomic<int> runs{0};
  bool exits = false;
  InterruptFunction closure() {
    return [this](Tcr& self) {
      ran_on.store(self.id(), std::memory_order_relaxed);
      runs.fetch_add(1, std::memory_order_release);
      if (exits) pthread_exit(nullptr);
    };
  }
};

}  // namespace tcr::model
