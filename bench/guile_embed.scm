;;; bench/guile_embed.scm [rounds] [threads-per-round]: Guile's own call-with-new-thread +
;;; join-thread beside (tcr threads)'s, interleaved in rounds in one process (default 7 rounds
;;; of 2000 threads each, each thread spawned then joined before the next, running a small
;;; thunk). Prints a markdown table: median, min and max microseconds per thread over the
;;; rounds, and the ratio tcr/guile of the medians. Nothing is asserted.
;;; A third row, for where the time goes: (tcr threads)'s primitives alone (%tcr-spawn and
;;; %tcr-join of a body that answers its values list), without what call-with-new-thread adds
;;; for Guile's semantics (the dynamic state copy, the catch that prints an uncaught error's
;;; backtrace, the cancel prompt), each of which costs a new thread its first-use allocation.
;;;
;;;   GUILE_LOAD_PATH=guile GUILE_EXTENSIONS_PATH=build/guile guile bench/guile_embed.scm 7 2000
(use-modules (tcr threads)
             ((ice-9 threads) #:prefix guile:)
             (ice-9 format))

(define args (cdr (command-line)))
(define rounds (if (pair? args) (string->number (car args)) 7))
(define per-round (if (and (pair? args) (pair? (cdr args))) (string->number (cadr args)) 2000))

(define (thunk) (+ 1 2))
(define raw-spawn (@@ (tcr threads) %tcr-spawn))
(define raw-join (@@ (tcr threads) %tcr-join))
(define (raw-body) (list (thunk)))
(define (spawn-raw thunk) (raw-spawn raw-body))
(define (join-raw t) (raw-join t #f))

;; Microseconds per thread for n spawn+join pairs.
(define (measure spawn join n)
  (let ((start (get-internal-real-time)))
    (let loop ((i 0))
      (when (< i n)
        (join (spawn thunk))
        (loop (+ i 1))))
    (/ (- (get-internal-real-time) start) 1e3 n)))

(define (median xs)
  (let ((v (list->vector (sort xs <))))
    (vector-ref v (quotient (vector-length v) 2))))

;; A warm-up of each (first-time costs: code loading, stack caches, Guile's heap growth).
(measure guile:call-with-new-thread guile:join-thread (min per-round 200))
(measure call-with-new-thread join-thread (min per-round 200))

(measure spawn-raw join-raw (min per-round 200))

(define results
  (let loop ((r 0) (guile '()) (tcr '()) (raw '()))
    (if (= r rounds)
        (list (reverse guile) (reverse tcr) (reverse raw))
        ;; Alternate which goes first, so neither always runs on a freshly collected heap.
        (if (even? r)
            (let* ((g (measure guile:call-with-new-thread guile:join-thread per-round))
                   (t (measure call-with-new-thread join-thread per-round))
                   (w (measure spawn-raw join-raw per-round)))
              (loop (+ r 1) (cons g guile) (cons t tcr) (cons w raw)))
            (let* ((w (measure spawn-raw join-raw per-round))
                   (t (measure call-with-new-thread join-thread per-round))
                   (g (measure guile:call-with-new-thread guile:join-thread per-round)))
              (loop (+ r 1) (cons g guile) (cons t tcr) (cons w raw)))))))

(define guile-us (car results))
(define tcr-us (cadr results))
(define raw-us (caddr results))

(format #t "Guile ~a, ~a rounds x ~a threads (spawn + join each, interleaved)~%~%"
        (version) rounds per-round)
(format #t "| threads | median us/thread | min | max | ratio tcr/guile |~%")
(format #t "|---|---:|---:|---:|---:|~%")
(format #t "| Guile call-with-new-thread + join-thread | ~,1f | ~,1f | ~,1f | 1.00 |~%"
        (median guile-us) (apply min guile-us) (apply max guile-us))
(format #t "| (tcr threads) call-with-new-thread + join-thread | ~,1f | ~,1f | ~,1f | ~,2f |~%"
        (median tcr-us) (apply min tcr-us) (apply max tcr-us) (/ (median tcr-us) (median guile-us)))
(format #t "| (tcr threads) primitives only: %tcr-spawn + %tcr-join | ~,1f | ~,1f | ~,1f | ~,2f |~%"
        (median raw-us) (apply min raw-us) (apply max raw-us) (/ (median raw-us) (median guile-us)))
(format #t "~%per round, guile: ~{~,1f ~}~%per round, tcr:   ~{~,1f ~}~%per round, raw:   ~{~,1f ~}~%"
        guile-us tcr-us raw-us)
