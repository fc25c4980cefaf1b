;;; (tests check): the little the guile.* tests share: checks that count failures, and an exit
;;; status that says whether any failed.
(define-module (tests check)
  #:use-module (ice-9 format)
  #:export (check check-equal check-raises report-and-exit now-ns median wait-until))

(define failures 0)
(define checks 0)

(define (fail! what detail)
  (set! failures (+ failures 1))
  (format (current-error-port) "FAIL: ~a~@[: ~a~]~%" what detail))

(define (check what ok)
  (set! checks (+ checks 1))
  (unless ok (fail! what #f)))

(define (check-equal what expected actual)
  (set! checks (+ checks 1))
  (unless (equal? expected actual)
    (fail! what (format #f "expected ~s, got ~s" expected actual))))

;; The thunk raises; the key it raised with satisfies key-ok? (a key, or a predicate).
(define (check-raises what key-ok thunk)
  (set! checks (+ checks 1))
  (let ((got (catch #t (lambda () (thunk) 'no-exception) (lambda (key . args) key))))
    (unless (if (procedure? key-ok) (key-ok got) (eq? key-ok got))
      (fail! what (format #f "raised ~s" got)))))

(define (report-and-exit name)
  (format #t "~a: ~a checks, ~a failed~%" name checks failures)
  (exit (if (zero? failures) 0 1)))

(define (now-ns) (get-internal-real-time)) ; Guile 3: internal time units are nanoseconds

(define (median numbers)
  (let ((v (list->vector (sort numbers <))))
    (vector-ref v (quotient (vector-length v) 2))))

;; Polls ready? every 1 ms for at most seconds; answers its last value.
(define (wait-until seconds ready?)
  (let ((deadline (+ (now-ns) (* seconds 1000000000))))
    (let loop ()
      (or (ready?)
          (if (> (now-ns) deadline)
              #f
              (begin (usleep 1000) (loop)))))))
