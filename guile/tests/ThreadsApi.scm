;;; guile.ThreadsApi: (tcr threads)'s procedures behave as (ice-9 threads)'s. Where Guile's
;;; behaviour is the reference, the same case runs on Guile's own threads too and both answers
;;; are compared.
(use-modules (tcr threads)
             ((ice-9 threads) #:prefix guile:)
             (ice-9 atomic)
             (ice-9 format)
             (tests check))

(define (values->list thunk) (call-with-values thunk list))

;; Results: one value, several, none.
(check-equal "one value" 42 (join-thread (call-with-new-thread (lambda () 42))))
(check-equal "several values" '(1 2 3)
             (values->list (lambda () (join-thread (call-with-new-thread (lambda () (values 1 2 3)))))))
(check-equal "no values, as Guile"
             (values->list (lambda () (guile:join-thread (guile:call-with-new-thread (lambda () (values))))))
             (values->list (lambda () (join-thread (call-with-new-thread (lambda () (values)))))))

;; The thread object.
(let ((t (call-with-new-thread (lambda () (current-thread)))))
  (check "thread? of a tcr thread" (thread? t))
  (check "tcr-thread? of a tcr thread" (tcr-thread? t))
  (check "current-thread on the thread is its object" (eq? t (join-thread t)))
  (check "a tcr thread has a tcr id" (> (tcr-thread-id t) 0)))
(check "thread? of Guile's own thread" (thread? (guile:current-thread)))
(check "tcr-thread? of Guile's own thread is #f" (not (tcr-thread? (guile:current-thread))))
(check "thread? of a non-thread" (not (thread? 42)))
(check "current-thread off tcr threads is Guile's"
       (eq? (current-thread) (guile:current-thread)))
(check "current-thread on a Guile thread is Guile's"
       (let ((g (guile:call-with-new-thread (lambda () (eq? (current-thread) (guile:current-thread))))))
         (guile:join-thread g)))

;; Joining twice answers the same values (Guile keeps them too).
(let* ((obj (list 'fresh))
       (t (call-with-new-thread (lambda () (values obj 'b)))))
  (let ((first (values->list (lambda () (join-thread t))))
        (second (values->list (lambda () (join-thread t)))))
    (check-equal "first join" (list obj 'b) first)
    (check "second join: the same objects" (and (eq? (car first) (car second))
                                                (equal? first second)))
    (check "third join with a timeout: the same" (eq? obj (join-thread t (+ (current-time) 5) 'x)))))

;; Join timeouts: absolute times, as Guile's; the thread stays joinable.
(let* ((go (make-atomic-box #f))
       (t (call-with-new-thread
           (lambda ()
             (let loop () (unless (atomic-box-ref go) (usleep 1000) (loop)))
             'done))))
  (let* ((start (now-ns))
         (r (join-thread t (+ (current-time) 1) 'timed-out))
         (waited (/ (- (now-ns) start) 1e9)))
    (check-equal "timeout answers timeoutval" 'timed-out r)
    (check (format #f "timeout waited about until the deadline (~,3fs)" waited)
           (and (> waited 0.0) (< waited 3.0))))
  (check-equal "timeoutval defaults to #f" #f (join-thread t (+ (current-time) 0.05)))
  (check-equal "a past deadline only checks" 'past (join-thread t (- (current-time) 10) 'past))
  (check-equal "a (seconds . microseconds) deadline"
               'pair (let ((tv (gettimeofday)))
                       (join-thread t (cons (car tv) (cdr tv)) 'pair)))
  (check "not exited while running" (not (thread-exited? t)))
  (atomic-box-set! go #t)
  (check-equal "still joinable after timeouts" 'done (join-thread t))
  (check "exited after join" (thread-exited? t)))

;; Guile's own join-thread with the same kind of timeout, for reference: the same answer.
;; (Not joined again: Guile 3.0.8's join-thread returns timeoutval with the thread's join mutex
;; still locked (ice-9/threads.scm, the `else` arm of its loop), so a second join from this
;; thread raises "mutex already locked by thread" and one from another thread blocks forever.
;; (tcr threads) keeps the thread joinable, as the documentation promises.)
(let* ((go (make-atomic-box #f))
       (g (guile:call-with-new-thread
           (lambda () (let loop () (unless (atomic-box-ref go) (usleep 1000) (loop))) 'done))))
  (check-equal "Guile: timeout answers timeoutval" 'timed-out
               (guile:join-thread g (+ (current-time) 0.05) 'timed-out))
  (atomic-box-set! go #t))

;; thread-exited? before and after the thread ends (without joining it).
(let* ((go (make-atomic-box #f))
       (t (call-with-new-thread (lambda () (let loop () (unless (atomic-box-ref go) (usleep 1000) (loop)))))))
  (check "thread-exited? #f while it runs" (not (thread-exited? t)))
  (atomic-box-set! go #t)
  (check "thread-exited? #t once it ended" (wait-until 10 (lambda () (thread-exited? t))))
  (join-thread t))

;; Errors as Scheme exceptions.
(check-raises "join-thread of a non-thread" (lambda (k) (not (eq? k 'no-exception)))
              (lambda () (join-thread 42)))
(check-raises "thread-exited? of a non-thread" (lambda (k) (not (eq? k 'no-exception)))
              (lambda () (thread-exited? 'nope)))
(check-raises "thread-interrupt! of a non-thread" (lambda (k) (not (eq? k 'no-exception)))
              (lambda () (thread-interrupt! "nope" (lambda () #t))))
(check-raises "call-with-new-thread of a non-thunk" 'wrong-type-arg
              (lambda () (call-with-new-thread 42)))
(check-raises "thread-interrupt! with a non-thunk" 'wrong-type-arg
              (lambda () (thread-interrupt! (call-with-new-thread (lambda () 1)) 42)))
(check-equal "a thread joining itself: a tcr-error (JoinSelf), not a deadlock" 'tcr-error
             (join-thread
              (call-with-new-thread
               (lambda () (catch #t (lambda () (join-thread (current-thread))) (lambda (k . a) k))))))

;; A thunk that raises: with a handler, the handler's value is the result, as Guile's.
(define (raising) (throw 'my-error 1 2))
(define (handler key . args) (list 'handled key args))
(check-equal "handler: the same result as Guile's"
             (guile:join-thread (guile:call-with-new-thread raising handler))
             (join-thread (call-with-new-thread raising handler)))
(check-equal "handler result" '(handled my-error (1 2))
             (join-thread (call-with-new-thread raising handler)))
;; Without a handler: Guile prints the error and the thread answers no values.
(format (current-error-port) "(an uncaught error from a thread without handler, printed as Guile prints it:)~%")
(check-equal "no handler: the same values as Guile's (none)"
             (values->list (lambda () (guile:join-thread (guile:call-with-new-thread raising))))
             (values->list (lambda () (join-thread (call-with-new-thread raising)))))
(check-equal "an error raised with raise-exception reaches the handler as in Guile"
             (guile:join-thread (guile:call-with-new-thread (lambda () (raise-exception 'obj))
                                                            (lambda (k . a) (list k a))))
             (join-thread (call-with-new-thread (lambda () (raise-exception 'obj))
                                                (lambda (k . a) (list k a)))))

;; What an uncaught error prints (to the current error port the thread inherited): the same
;; backtrace and message as Guile's own threads print.
(define (f x) (car x))
(define (printed spawn join)
  (call-with-output-string
   (lambda (port)
     (parameterize ((current-error-port port))
       (join (spawn (lambda () (f 1))))))))
(let ((guile-text (printed guile:call-with-new-thread guile:join-thread))
      (tcr-text (printed call-with-new-thread join-thread)))
  (check "Guile prints something for an uncaught error" (string-contains guile-text "Wrong type argument"))
  (check-equal "an uncaught error prints as in Guile's threads" guile-text tcr-text))

;; The new thread starts with a copy of the spawner's dynamic state (fluids, parameters).
(define p (make-parameter 'outer))
(check-equal "dynamic state inherited, as Guile's"
             (parameterize ((p 'inner)) (guile:join-thread (guile:call-with-new-thread (lambda () (p)))))
             (parameterize ((p 'inner)) (join-thread (call-with-new-thread (lambda () (p))))))

;; Guile's own synchronization works on tcr threads (they are Guile threads too).
(let* ((m (guile:make-mutex))
       (cv (guile:make-condition-variable))
       (box (list #f))
       (t (call-with-new-thread
           (lambda ()
             (guile:lock-mutex m)
             (let loop () (unless (car box) (guile:wait-condition-variable cv m) (loop)))
             (guile:unlock-mutex m)
             (car box)))))
  (usleep 20000)
  (guile:lock-mutex m)
  (set-car! box 'signalled)
  (guile:signal-condition-variable cv)
  (guile:unlock-mutex m)
  (check-equal "a Guile condition variable between a tcr thread and the main thread"
               'signalled (join-thread t)))

;; cancel-thread: the thread ends with the given values; dynamic-wind post thunks run.
(let* ((unwound (make-atomic-box #f))
       (t (call-with-new-thread
           (lambda ()
             (dynamic-wind
               (lambda () #f)
               (lambda () (let loop () (loop)))
               (lambda () (atomic-box-set! unwound #t)))))))
  (usleep 20000)
  (cancel-thread t 'cancelled 'twice)
  (check-equal "cancelled thread's values" '(cancelled twice)
               (values->list (lambda () (join-thread t))))
  (check "dynamic-wind post thunk ran" (atomic-box-ref unwound))
  (cancel-thread t)                     ; exited: a no-op, as Guile's
  (check "cancel of an exited thread: no-op" #t))

;; Nested: a tcr thread spawns and joins tcr threads.
(check-equal "threads spawned from a tcr thread" 45
             (join-thread
              (call-with-new-thread
               (lambda ()
                 (apply + (map join-thread
                               (map (lambda (i) (call-with-new-thread (lambda () i))) (iota 10))))))))

;; Inspection.
(let* ((go (make-atomic-box #f))
       (t (call-with-new-thread (lambda () (let loop () (unless (atomic-box-ref go) (usleep 1000) (loop)))))))
  (let ((dump (tcr-thread-dump)))
    (check "tcr-thread-dump lists the running thread"
           (let ((id (tcr-thread-id t)))
             (or-map (lambda (info) (= id (assq-ref info 'id))) dump))))
  (check "tcr-stats counts it live" (>= (assq-ref (tcr-stats) 'live) 1))
  (atomic-box-set! go #t)
  (join-thread t))
(check "tcr-stats: spawned counted" (> (assq-ref (tcr-stats) 'spawned) 10))
(check "tcr-resource-counts: fds and threads read"
       (let ((c (tcr-resource-counts))) (and (> (assq-ref c 'fds) 0) (> (assq-ref c 'threads) 0))))

(report-and-exit "guile.ThreadsApi")
