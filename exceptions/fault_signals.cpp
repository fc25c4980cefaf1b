#include "exceptions/fault_signals.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>

#include <atomic>

#include "exceptions/region_table.h"
#include "exceptions/stack_guard.h"
#include "runtime/fork.h"
#include "runtime/log.h"
#include "runtime/machine_context.h"
#include "runtime/mutex.h"
#include "threads/tcr.h"
#include "threads/thread_extensions.h"

namespace tcr {
namespace {

struct sigaction g_prev_segv{};
struct sigaction g_prev_bus{};
std::atomic<bool> g_installed{false};
// SA_RESETHAND of a previous handler: it wants to run once, then the default action.
std::atomic<bool> g_prev_segv_spent{false};
std::atomic<bool> g_prev_bus_spent{false};
std::atomic<detail::ChainObserver> g_chain_observer{nullptr};

// 1. A write to an armed page of a Signal-mode region. Only a write (or a fault whose access the
// context does not say, as before the access was read): the armed protection keeps read and
// execute, so a read or an instruction fetch that faults in a region is not the barrier's, and
// taking it for a write would only give the page back a protection it already has and fault
// again, forever. It goes on to the previous handler.
bool resolve_region_fault(void* address, machine::FaultAccess access) {
  if (access != machine::FaultAccess::Write && access != machine::FaultAccess::Unknown) {
    return false;
  }
  detail::PinnedRegion region(address);
  if (!region || region->mode != TrapMode::Signal) return false;
  Tcr* const self = Tcr::current();
  const int prot = region->layout.span_of(address).prot;  // what the page had at create()
  bool counted = false;
  return detail::resolve_write_fault(
      *region.get(), region->page_of(address),
      [prot](void* page, std::size_t size) { return ::mprotect(page, size, prot) == 0; },
      [self](int delta) {
        if (self != nullptr) count_trap(*self, delta);
      },
      &counted);
}

// 3. The action that was there before ours.
void chain(int sig, siginfo_t* info, void* ucontext) {
  const struct sigaction& prev = sig == SIGSEGV ? g_prev_segv : g_prev_bus;
  std::atomic<bool>& spent = sig == SIGSEGV ? g_prev_segv_spent : g_prev_bus_spent;
  const bool user_sent = info->si_code <= 0;  // kill(), tgkill(), sigqueue(): not a fault
  const bool siginfo = (prev.sa_flags & SA_SIGINFO) != 0;
  const bool resethand = (prev.sa_flags & SA_RESETHAND) != 0;
  const bool is_default = (!siginfo && prev.sa_handler == SIG_DFL) ||
                          (resethand && spent.load(std::memory_order_acquire));
  const bool is_ignore = !siginfo && prev.sa_handler == SIG_IGN;
  if (is_ignore && user_sent) return;
  if (detail::ChainObserver observe = g_chain_observer.load(std::memory_order_relaxed)) {
    observe(sig, is_default || is_ignore);
  }
  if (is_default || is_ignore) {
    // The default action, as if we had never been installed. A fault re-executes the faulting
    // instruction on return and meets the default action there (the kernel does not let a
    // synchronous fault be ignored either); a sent signal is sent again.
    struct sigaction dfl{};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, nullptr);
    if (user_sent) {
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, sig);
      pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
      raise(sig);
    }
    return;
  }
  if (resethand) spent.store(true, std::memory_order_release);
  // Ours already blocks every signal: a superset of whatever mask the previous handler asked for.
  if (siginfo) {
    prev.sa_sigaction(sig, info, ucontext);
  } else {
    prev.sa_handler(sig);
  }
}

// The address this thread last retried as a stale fault (recently_released): a second fault
// there is real and goes on. Initial-exec TLS, readable in a handler.
thread_local void* t_retried = nullptr;

// Linux reports a write to a write-protected page as SIGSEGV. (Darwin reports some protection
// faults as SIGBUS: its Signal mode will need SIGBUS taken here too, once it is built there.)
void on_fault(int sig, siginfo_t* info, void* ucontext) {
  const int saved_errno = errno;
  const bool fault = info->si_code > 0;
  const machine::FaultAccess access =
      fault ? machine::fault_access(ucontext, info) : machine::FaultAccess::Unknown;
  const bool maybe_write =
      access == machine::FaultAccess::Write || access == machine::FaultAccess::Unknown;
  if (fault && sig == SIGSEGV && resolve_region_fault(info->si_addr, access)) {
    t_retried = nullptr;
    errno = saved_errno;
    return;
  }
  // A write fault on a region removed after the fault was raised: its pages were made writable
  // before the removal, so retrying the write is enough. Once per address: if it faults again, it
  // is not stale.
  if (fault && sig == SIGSEGV && maybe_write && t_retried != info->si_addr &&
      detail::recently_released(info->si_addr)) {
    t_retried = info->si_addr;
    errno = saved_errno;
    return;
  }
  t_retried = nullptr;
  if (fault) detail::escape_if_stack_overflow(info->si_addr, ucontext);  // may not return
  chain(sig, info, ucontext);
  errno = saved_errno;
}

}  // namespace

void detail::set_chain_observer(ChainObserver observer) {
  g_chain_observer.store(observer, std::memory_order_relaxed);
}

Result<void> install_fault_handlers() {
  // g_prev_segv and g_prev_bus are written under it too, but read without it by the handler.
  static Mutex s_mutex;
  static Result<void> s_result TCR_GUARDED_BY(s_mutex);
  fork_participate(fork_guard("fault handlers", ForkRank::Setup, s_mutex));
  MutexLock lock(s_mutex);
  if (g_installed.load(std::memory_order_acquire)) return s_result;
  struct sigaction ours{};
  ours.sa_sigaction = on_fault;
  ours.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  // Every other signal waits while a fault is resolved: a stop-the-world's suspend signal must
  // not stop a thread that holds a page Busy, or a collector waiting for that page would wait
  // for the stopped world.
  sigfillset(&ours.sa_mask);
  if (sigaction(SIGSEGV, &ours, &g_prev_segv) != 0) {
    s_result = fail(Step::Sigaction, errno, "SIGSEGV");
    return s_result;
  }
  if (sigaction(SIGBUS, &ours, &g_prev_bus) != 0) {
    const int e = errno;
    sigaction(SIGSEGV, &g_prev_segv, nullptr);
    s_result = fail(Step::Sigaction, e, "SIGBUS");
    return s_result;
  }
  g_installed.store(true, std::memory_order_release);
  auto describe = [](const struct sigaction& a) {
    if ((a.sa_flags & SA_SIGINFO) != 0) return "a handler (SA_SIGINFO)";
    if (a.sa_handler == SIG_DFL) return "SIG_DFL";
    if (a.sa_handler == SIG_IGN) return "SIG_IGN";
    return "a handler";
  };
  log::info("fault handlers installed for SIGSEGV and SIGBUS; faults not ours go to {} and {}",
            describe(g_prev_segv), describe(g_prev_bus));
  return s_result;
}

bool fault_handlers_installed() { return g_installed.load(std::memory_order_acquire); }

struct sigaction previous_fault_action(int sig) {
  return sig == SIGSEGV ? g_prev_segv : g_prev_bus;
}

}  // namespace tcr
