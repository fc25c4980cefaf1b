// The list of tcr's steps (tcr::Step in C++, TCR_STEP_<Name> in C): what a failed call names as
// the place it failed. Plain preprocessor, so C and C++ both number the steps from this one list:
// C's TCR_STEP_<Name> is Step::<Name> + 1 (TCR_OK is 0). The order is part of the C ABI: a new
// step is appended, never inserted.
#pragma once

// Every step, once, in the order of the enum: X(Name, Category, "what message() prints"). The
// enum, to_string(Step) and category(Step) are made from it, so a step cannot lack a name or a
// category. (Comments inside are /* */: a // comment would swallow the line continuation.)
#define TCR_STEPS(X)                                                                               \
  /* OS calls */                                                                                   \
  X(PthreadCreate, Errno, "pthread_create")                                                        \
  X(PthreadJoin, Errno, "pthread_join")                                                            \
  X(StackMmap, Errno, "mmap (thread stack)")                                                       \
  X(StackGuardMprotect, Errno, "mprotect (stack guard page)")                                      \
  /* an adopted thread's alternate signal stack, and the guard page below it */                    \
  X(AltStackMmap, Errno, "mmap (alternate signal stack)")                                          \
  X(AltStackGuardMprotect, Errno, "mprotect (alternate signal stack guard page)")                  \
  /* the process's tid -> Tcr index (threads/tid_index.h) */                                       \
  X(TidIndexMmap, Errno, "mmap (tid index)")                                                       \
  X(PidfdOpen, Errno, "pidfd_open")                                                                \
  X(PidfdSendSignal, Errno, "pidfd_send_signal")                                                   \
  X(PidfdPoll, Errno, "poll (pidfd)")                                                              \
  X(Tgkill, Errno, "tgkill")                                                                       \
  /* allocating a TCR or its GC slot block; code ENOMEM */                                         \
  X(TcrAllocate, Errno, "allocating a thread control record")                                      \
  /* GC_register_my_thread; code is errno-like (ENOMEM, ENOSYS for GC_NO_THREADS) */               \
  X(GcRegister, Errno, "GC_register_my_thread")                                                    \
  /* installing a thread's alternate signal stack */                                               \
  X(Sigaltstack, Errno, "sigaltstack")                                                             \
  /* mprotect of a ProtectedRegion's pages (Signal mode) */                                        \
  X(RegionMprotect, Errno, "mprotect (protected region)")                                          \
  /* opening a userfaultfd; EPERM/ENOSYS when the process may not */                               \
  X(Userfaultfd, Errno, "userfaultfd")                                                             \
  /* a userfaultfd ioctl (API, REGISTER, WRITEPROTECT); the detail names which */                  \
  X(UffdIoctl, Errno, "ioctl (userfaultfd)")                                                       \
  /* the PAGEMAP_SCAN ioctl on /proc/self/pagemap, or opening that file */                         \
  X(PagemapScan, Errno, "PAGEMAP_SCAN (/proc/self/pagemap)")                                       \
  /* the ExceptionListener's control eventfd */                                                    \
  X(Eventfd, Errno, "eventfd")                                                                     \
  /* reading the memory map under a ProtectedRegion (/proc/thread-self/maps) */                    \
  X(RegionMappings, Errno, "reading the memory map (protected region)")                            \
  /* a ProtectedRegion's bookkeeping (page states, protections, a page list) */                    \
  X(RegionAllocate, Errno, "allocating a protected region's bookkeeping")                          \
  /* installing the manager's signal handlers; EBUSY when no signal is free */                     \
  X(Sigaction, Errno, "sigaction (manager signals)")                                               \
  /* Mach calls */                                                                                 \
  X(MachGetRefs, KernReturn, "mach_port_get_refs")                                                 \
  X(MachModRefs, KernReturn, "mach_port_mod_refs")                                                 \
  X(MachDeallocate, KernReturn, "mach_port_deallocate")                                            \
  /* mach_port_allocate: a receive right or a port set */                                          \
  X(MachAllocate, KernReturn, "mach_port_allocate")                                                \
  /* mach_port_insert_right (MAKE_SEND) */                                                         \
  X(MachInsertRight, KernReturn, "mach_port_insert_right")                                         \
  /* mach_port_move_member: a thread's exception port into the listener's set */                   \
  X(MachMoveMember, KernReturn, "mach_port_move_member")                                           \
  /* thread_swap_exception_ports / thread_set_exception_ports */                                   \
  X(MachExceptionPorts, KernReturn, "thread_swap_exception_ports")                                 \
  /* mach_msg: the listener's receive, or a reply to an exception message */                       \
  X(MachMsg, KernReturn, "mach_msg")                                                               \
  X(MachPortNames, KernReturn, "mach_port_names")                                                  \
  /* Rules of the API */                                                                           \
  /* a caller passed something unusable; the message says what */                                  \
  X(BadArgument, Rule, "bad argument")                                                             \
  /* spawn or adopt after ThreadManager::shutdown() */                                             \
  X(ManagerShutDown, Rule, "thread manager is shut down")                                          \
  /* Boehm GC must be initialized from the process's main thread */                                \
  X(NotOnMainThread, Rule, "not on the main thread")                                               \
  /* the ThreadRef's record was reaped and reused: that thread is gone */                          \
  X(StaleThread, Rule, "stale thread reference")                                                   \
  /* second join of the same thread */                                                             \
  X(AlreadyJoined, Rule, "thread already joined")                                                  \
  /* join of a detached thread */                                                                  \
  X(ThreadDetached, Rule, "thread is detached")                                                    \
  /* a thread joining itself would wait forever */                                                 \
  X(JoinSelf, Rule, "thread cannot join itself")                                                   \
  /* a message to a thread that has exited; code: ESRCH when the kernel said so, so an errno */    \
  X(ThreadExited, Errno, "thread has exited")                                                      \
  /* join: the thread's function ended with an exception (see Error::exception) */                 \
  X(ThreadThrew, Rule, "thread ended with an exception")                                           \
  /* adopt_current_thread on a thread that already has a TCR */                                    \
  X(AlreadyAdopted, Rule, "thread already has a TCR")                                              \
  /* release_current_thread on a thread tcr did not adopt */                                       \
  X(NotAdopted, Rule, "thread was not adopted")                                                    \
  /* ThreadManager::shutdown while adopted foreign threads still run */                            \
  X(AdoptedThreadsAlive, Rule, "adopted threads still alive")                                      \
  /* a thread did not acknowledge a stop within ManagerOptions::stop_timeout */                    \
  X(StopTimeout, Rule, "stop-the-world timed out")                                                 \
  /* join: the thread ran into its stack's guard page (the detail says where) */                   \
  X(StackOverflow, Rule, "thread overflowed its stack")                                            \
  /* a ProtectedRegion mode this kernel or platform does not offer */                              \
  X(ModeUnavailable, Rule, "protected-region mode unavailable")                                    \
  /* Added with the C API; new steps go here, at the end (C numbers steps by position) */         \
  /* a start hook (ManagerOptions::start_hooks) failed: code is what it answered (errno-like) */   \
  X(StartHook, Errno, "start hook")                                                                \
  /* GcOwner::Runtime: a thread was to be registered before the runtime initialized Boehm */       \
  X(GcNotInitialized, Rule, "Boehm GC not initialized yet (the runtime owns it)")                  \
  /* a join that was given a timeout ran out of time */                                            \
  X(Timeout, Rule, "timed out")
