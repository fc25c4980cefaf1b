// The two signals the manager takes for itself (suspend for stop-the-world, interrupt for
// process-interrupt), chosen once per process and installed with SA_SIGINFO | SA_RESTART.
// A candidate is skipped when Boehm GC uses it or when a handler (or SIG_IGN) is already installed
// for it, so neither the collector's handshake nor the application's own handlers are displaced.
#include <errno.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/fork.h"
#include "runtime/gc.h"
#include "runtime/log.h"
#include "runtime/os.h"
#include "threads/current.h"
#include "threads/internal.h"

namespace tcr::detail {
namespace {

std::mutex g_mutex;
ManagerSignals g_signals;  // written once, under g_mutex, before g_installed
std::atomic<bool> g_installed{false};
sigset_t g_set;

void on_suspend(int, siginfo_t*, void* ucontext) {
  const int saved_errno = errno;
  if (ThreadRecord* t = t_current) ManagerCore::suspend_self(*t, ucontext);
  errno = saved_errno;
}

void on_interrupt(int, siginfo_t*, void*) {
  const int saved_errno = errno;
  if (ThreadRecord* t = t_current) t->run.mailbox.wake_from_handler();
  errno = saved_errno;
}

bool handler_installed(int sig) {
  struct sigaction old {};
  if (sigaction(sig, nullptr, &old) != 0) return true;  // not usable
  if (old.sa_flags & SA_SIGINFO) return true;
  return old.sa_handler != SIG_DFL;
}

}  // namespace

Result<ManagerSignals> install_manager_signals() {
  fork_participate(fork_guard("manager signals", ForkRank::Setup, g_mutex));
  std::lock_guard lock(g_mutex);
  if (g_installed) return g_signals;
  const std::vector<int> collector = gc::collector_signals();
  std::vector<int> chosen;
  std::string skipped;
  for (int sig : os::candidate_manager_signals()) {
    if (std::find(collector.begin(), collector.end(), sig) != collector.end()) {
      skipped += " " + std::to_string(sig) + "(gc)";
      continue;
    }
    if (handler_installed(sig)) {
      skipped += " " + std::to_string(sig) + "(app)";
      continue;
    }
    chosen.push_back(sig);
    if (chosen.size() == 2) break;
  }
  if (chosen.size() < 2) {
    return fail(Step::Sigaction, EBUSY, "no two free signals for suspend and interrupt; skipped" +
                                            skipped);
  }
  ManagerSignals s{chosen[0], chosen[1]};
  // The suspend handler blocks the interrupt signal: a suspended thread wakes no wait until the
  // world resumes. Neither handler is deferred or reset. SA_ONSTACK: on a thread whose stack is
  // nearly exhausted the kernel could not push the handler's frame there, and would kill the
  // process with a SIGSEGV no handler can catch; on the alternate stack it always can. The
  // interrupted stack pointer (in the ucontext) is still the thread's own.
  struct sigaction sa {};
  sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, s.interrupt);
  sa.sa_sigaction = on_suspend;
  if (sigaction(s.suspend, &sa, nullptr) != 0) return fail(Step::Sigaction, errno, "suspend");
  sigemptyset(&sa.sa_mask);
  sa.sa_sigaction = on_interrupt;
  if (sigaction(s.interrupt, &sa, nullptr) != 0) {
    const int e = errno;
    signal(s.suspend, SIG_DFL);
    return fail(Step::Sigaction, e, "interrupt");
  }
  sigemptyset(&g_set);
  sigaddset(&g_set, s.suspend);
  sigaddset(&g_set, s.interrupt);
  g_signals = s;
  g_installed.store(true, std::memory_order_release);
  log::info("manager signals: suspend {}, interrupt {} (skipped:{})", s.suspend, s.interrupt,
            skipped.empty() ? " none" : skipped);
  return s;
}

ManagerSignals manager_signals() {
  return g_installed.load(std::memory_order_acquire) ? g_signals : ManagerSignals{};
}

void unblock_manager_signals() { pthread_sigmask(SIG_UNBLOCK, &g_set, nullptr); }

void block_manager_signals(sigset_t* old) { pthread_sigmask(SIG_BLOCK, &g_set, old); }

}  // namespace tcr::detail
