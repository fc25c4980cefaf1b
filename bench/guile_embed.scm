;;; bench/guile_embed.scm [rounds] [threads-per-round]: Guile's own call-with-new-thread +
;;; join-thread beside (tcr threads)'s, interleaved in rounds in one process (default 7 rounds
;;; of 2000 threads each, each thread spawned then joined before the next, running a small
;;; thunk). Prints a markdown table: median, min and max microseconds per thread over the
;;; rounds, and the ratio tcr/guile of the medians. Nothing is asserted.
;;; Three more rows, for where the time goes: (tcr threads)'s primitives alone (%tcr-spawn and
;;; %tcr-join of a body that answers its values list), without what call-with-new-thread adds
;;; for Guile's semantics (the dynamic state copy, the catch that prints an uncaught error's
;;; backtrace, the cancel prompt), each of which costs a new thread its first-use allocation;
;;; Guile's own entry on a bare pthread with no manager (the floor for any manager that gives
;;; each Scheme thread a fresh OS thread); and the bare pthread alone.
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

;; The two baselines, for where the time goes (tcr-guile.c, "baselines"): Guile's own entry
;; (scm_with_guile calling the thunk) on a bare pthread_create'd thread joined by pthread_join, and
;; that thread alone. No thread manager can make a Guile thread cheaper than the first: it is what
;; any of them must do on a fresh OS thread for Guile to run Scheme code there.
(define bare-with-guile (@@ (tcr threads) %bare-pthread-with-guile))
(define bare-pthread (@@ (tcr threads) %bare-pthread))
;; tcr's core alone under Guile's entry: tcr_spawn of scm_with_guile calling the thunk, tcr_join
;; (no (tcr threads) thread object, no interrupt plumbing).
(define bare-tcr-with-guile (@@ (tcr threads) %bare-tcr-with-guile))
(define (spawn-bare-tcr thunk) (bare-tcr-with-guile thunk))
(define (spawn-bare-guile thunk) (bare-with-guile thunk))
(define (spawn-bare thunk) (bare-pthread))
(define (no-join x) x)

;; name, spawn, join; measured in this order in even rounds and in reverse in odd ones, so none
;; always runs on a freshly collected heap.
(define variants
  (list (list "Guile call-with-new-thread + join-thread" guile:call-with-new-thread guile:join-thread)
        (list "(tcr threads) call-with-new-thread + join-thread" call-with-new-thread join-thread)
        (list "(tcr threads) primitives only: %tcr-spawn + %tcr-join" spawn-raw join-raw)
        (list "tcr core only: tcr_spawn + scm_with_guile + tcr_join" spawn-bare-tcr no-join)
        (list "no manager: pthread_create + scm_with_guile + pthread_join" spawn-bare-guile no-join)
        (list "no Guile: pthread_create + pthread_join" spawn-bare no-join)))

;; A warm-up of each (first-time costs: code loading, stack caches, Guile's heap growth).
(for-each (lambda (v) (measure (cadr v) (caddr v) (min per-round 200))) variants)

;; One list of per-round figures per variant, in the order of variants.
(define results
  (let loop ((r 0) (acc (map (lambda (v) '()) variants)))
    (if (= r rounds)
        (map reverse acc)
        (let* ((order (if (even? r) variants (reverse variants)))
               (timed (map (lambda (v) (cons (car v) (measure (cadr v) (caddr v) per-round))) order)))
          (loop (+ r 1)
                (map (lambda (v past) (cons (assoc-ref timed (car v)) past)) variants acc))))))

(define guile-median (median (car results)))

(format #t "Guile ~a, ~a rounds x ~a threads (spawn + join each, interleaved)~%~%"
        (version) rounds per-round)
(format #t "| threads | median us/thread | min | max | ratio to Guile's own |~%")
(format #t "|---|---:|---:|---:|---:|~%")
(for-each (lambda (v us)
            (format #t "| ~a | ~,1f | ~,1f | ~,1f | ~,2f |~%" (car v) (median us) (apply min us)
                    (apply max us) (/ (median us) guile-median)))
          variants results)
(newline)
(for-each (lambda (v us) (format #t "per round, ~a: ~{~,1f ~}~%" (car v) us)) variants results)
