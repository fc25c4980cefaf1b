// Mutex, MutexLock and UniqueLock: std::mutex, std::lock_guard and std::unique_lock with the
// thread-safety attributes of runtime/thread_annotations.h, so that clang checks every
// TCR_GUARDED_BY field and TCR_REQUIRES function against the locks actually held.
// (libstdc++'s own types carry no attributes: the analysis cannot see through them.)
#pragma once

#include <condition_variable>
#include <mutex>

#include "runtime/thread_annotations.h"

namespace tcr {

class TCR_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() TCR_ACQUIRE() { m_mutex.lock(); }
  void unlock() TCR_RELEASE() { m_mutex.unlock(); }

 private:
  friend class UniqueLock;
  std::mutex m_mutex;
};

// Holds the mutex for its scope (std::lock_guard).
class TCR_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& m) TCR_ACQUIRE(m) : m_mutex(m) { m.lock(); }
  ~MutexLock() TCR_RELEASE() { m_mutex.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& m_mutex;
};

// Holds the mutex, may let it go and take it again, and waits on condition variables with it
// (std::unique_lock).
class TCR_SCOPED_CAPABILITY UniqueLock {
 public:
  explicit UniqueLock(Mutex& m) TCR_ACQUIRE(m) : m_lock(m.m_mutex) {}
  ~UniqueLock() TCR_RELEASE() = default;
  UniqueLock(const UniqueLock&) = delete;
  UniqueLock& operator=(const UniqueLock&) = delete;

  void lock() TCR_ACQUIRE() { m_lock.lock(); }
  void unlock() TCR_RELEASE() { m_lock.unlock(); }

  // Until ready() (called with the lock held: a lambda says TCR_REQUIRES). The lock is held before
  // and after (the analysis's view: the wait gives it up only inside).
  template <typename Predicate>
  void wait(std::condition_variable& cv, Predicate ready) {
    cv.wait(m_lock, ready);
  }

 private:
  std::unique_lock<std::mutex> m_lock;
};

}  // namespace tcr
