;;; bench/guile_embed.scm [rounds] [threads-per-round]: Guile's own call-with-new-thread +
;;; join-thread beside (tcr threads)'s, interleaved in rounds in one process (default 7 rounds
;;; of 2000 threads each, each thread spawned then joined before the next, running a small
;;; thunk). Prints a markdown table: median, min and max microseconds per thread over the
;;; rounds, and the ratio tcr/guile of the medians. Nothing is asserted.
;;;
;;;   GUILE_LOAD_PATH=guile GUILE_EXTENSIONS_PATH=build/guile guile bench/guile_embed.scm 7 2000
(use-modules (tcr threads)
             ((ice-9 threads) #:prefix guile:)
             (ice-9 format))

(define args (cdr (command-line)))
(define rounds (if (pair? args) (string->number (car args)) 7))
(define per-round (if (and (pair? args) (pair? (cdr args))) (string->number (cadr args)) 2000))

(define (thunk) (+ 1 2))

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

(define results
  (let loop ((r 0) (guile '()) (tcr '()))
    (if (= r rounds)
        (cons (reverse guile) (reverse tcr))
        ;; Alternate which goes first, so neither always runs on a freshly collected heap.
        (if (even? r)
            (let* ((g (measure guile:call-with-new-thread guile:join-thread per-round))
                   (t (measure call-with-new-thread join-thread per-round)))
              (loop (+ r 1) (cons g guile) (cons t tcr)))
            (let* ((t (measure call-with-new-thread join-thread per-round))
                   (g (measure guile:call-with-new-thread guile:join-thread per-round)))
              (loop (+ r 1) (cons g guile) (cons t tcr)))))))

(define guile-us (car results))
(define tcr-us (cdr results))

(format #t "Guile ~a, ~a rounds x ~a threads (spawn + join each, interleaved)~%~%"
        (version) rounds per-round)
(format #t "| threads | median us/thread | min | max | ratio tcr/guile |~%")
(format #t "|---|---:|---:|---:|---:|~%")
(format #t "| Guile call-with-new-thread + join-thread | ~,1f | ~,1f | ~,1f | 1.00 |~%"
        (median guile-us) (apply min guile-us) (apply max guile-us))
(format #t "| (tcr threads) call-with-new-thread + join-thread | ~,1f | ~,1f | ~,1f | ~,2f |~%"
        (median tcr-us) (apply min tcr-us) (apply max tcr-us) (/ (median tcr-us) (median guile-us)))
(format #t "~%per round, guile: ~{~,1f ~}~%per round, tcr:   ~{~,1f ~}~%" guile-us tcr-us)
