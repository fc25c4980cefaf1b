;;; (tcr threads): Guile threads that are tcr threads.
;;;
;;; (use-modules (tcr threads)) replaces call-with-new-thread, join-thread, thread?,
;;; current-thread, thread-exited? and cancel-thread of (ice-9 threads) with procedures of the
;;; same behaviour whose threads are spawned by tcr (libtcr.so), and adds thread-interrupt!
;;; and tcr's inspection procedures. The replacements also accept Guile's own threads (the main
;;; thread, threads made by (ice-9 threads)) and hand those to Guile's procedures, so code that
;;; mixes both keeps working.

(define-module (tcr threads)
  #:use-module ((ice-9 threads) #:prefix guile:)
  #:replace (call-with-new-thread
             join-thread
             thread?
             current-thread
             thread-exited?
             cancel-thread)
  #:export (thread-interrupt!
            tcr-thread?
            tcr-thread-id
            tcr-stats
            tcr-resource-counts
            tcr-thread-dump
            tcr-reap
            tcr-trim
            begin-tcr-thread))

(eval-when (expand load eval)
  (load-extension "guile-tcr" "scm_init_tcr_guile"))

;; A thread body ends through this prompt when cancel-thread asks it to (as (ice-9 threads)
;; does: an interrupt that aborts to it, so dynamic-wind post thunks run).
(define cancel-tag (make-prompt-tag "tcr-cancel"))

;; Without a handler, an uncaught exception ends the thread with no values after printing its
;; backtrace and the exception, as (ice-9 threads) does, and the same way (its
;; call-with-backtrace): a catch whose pre-unwind handler prints the stack still there, which
;; %start-stack bounds, so it never walks below the thread's first Scheme frame. (A
;; non-unwinding with-exception-handler that aborts to the cancel prompt would save each new
;; thread a prompt and a fluid, but Guile 3.0.8's display-backtrace fails on the frames it
;; sees there.)
(define (call-with-backtrace thunk)
  (let ((err (current-error-port)))
    (catch #t
      (lambda () (%start-stack 'thread thunk))
      (lambda _ (values))
      (lambda (key . args)
        (false-if-exception
         (let* ((stack (make-stack #t 4))
                (frame (and stack (stack-ref stack 0))))
           (when stack (display-backtrace stack err))
           (print-exception err frame key args)))))))

;; The body starts with asyncs blocked (%tcr-spawn's C part calls it so, as Guile's
;; really_launch does); they are unblocked only inside the prompt and the catch, so an interrupt
;; that arrives at once (a cancel-thread right after the spawn, say) finds both in place.
(define (thread-body thunk)
  (lambda ()
    (call-with-prompt cancel-tag
      (lambda ()
        (call-with-values
            (lambda () (call-with-unblocked-asyncs (lambda () (call-with-backtrace thunk))))
          list))
      (lambda (k . vals) vals))))

(define* (call-with-new-thread thunk #:optional handler)
  "Call @var{thunk} in a new tcr thread with a copy of the current dynamic state, returning
the thread object.  With @var{handler}, @var{thunk} is called within a @code{catch} of tag
@code{#t} with @var{handler} as its handler.  The values of @var{thunk} (or of @var{handler})
are the thread's exit values, answered by @code{join-thread}."
  (unless (thunk? thunk)
    (scm-error 'wrong-type-arg "call-with-new-thread" "Wrong type argument in position ~A: ~S"
               (list 1 thunk) (list thunk)))
  ;; The thread starts in a copy of this dynamic state, as Guile's threads do (%tcr-spawn
  ;; installs it first thing, as scm_i_with_guile does for them).
  (%tcr-spawn (thread-body (if handler (lambda () (catch #t thunk handler)) thunk))
              (current-dynamic-state)))

(define-syntax-rule (begin-tcr-thread e0 e1 ...)
  (call-with-new-thread (lambda () e0 e1 ...) guile:%thread-handler))

(define* (join-thread thread #:optional timeout timeoutval)
  "Wait for @var{thread} to end and answer its values.  @var{timeout}, as Guile's, is an
absolute time (seconds since the epoch, a real, or a @code{(seconds . microseconds)} pair as
from @code{gettimeofday}); when it passes first, answer @var{timeoutval} (the thread stays
joinable).  Joining again answers the same values."
  (if (tcr-thread? thread)
      (let ((r (%tcr-join thread (or timeout #f))))
        (if (eq? r %tcr-join-timed-out)
            timeoutval
            (apply values r)))
      (guile:join-thread thread timeout timeoutval)))

(define (thread? obj)
  (or (tcr-thread? obj) (guile:thread? obj)))

(define (current-thread)
  "The calling thread: its (tcr threads) object on a thread this module spawned, Guile's own
thread object on any other thread."
  (or (%tcr-current-thread) (guile:current-thread)))

(define (thread-exited? thread)
  (if (tcr-thread? thread)
      (%tcr-thread-exited? thread)
      (guile:thread-exited? thread)))

(define (thread-interrupt! thread thunk)
  "Run @var{thunk} on @var{thread} at its next safe point, inside the Scheme code it is
running (as a Guile async: an error it raises is raised there).  Answers #t when queued, #f
when the thread had exited (the interrupt is dropped)."
  (if (tcr-thread? thread)
      (%tcr-thread-interrupt! thread thunk)
      (begin
        (system-async-mark thunk thread)
        #t)))

(define (cancel-thread thread . values)
  "Ask @var{thread} to end, returning @var{values}, at its next safe point: an interrupt that
aborts to the thread's outermost prompt, so dynamic-wind post thunks run and catch handlers do
not, as with (ice-9 threads).  A no-op for a thread that has exited."
  (if (tcr-thread? thread)
      (begin
        (thread-interrupt!
         thread
         (lambda ()
           (catch #t
             (lambda () (apply abort-to-prompt cancel-tag values))
             (lambda _
               (error "thread cancellation failed, throwing error instead???")))))
        *unspecified*)
      (apply guile:cancel-thread thread values)))
