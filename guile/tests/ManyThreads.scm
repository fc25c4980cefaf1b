;;; guile.ManyThreads [count]: count tcr threads (default 100000), each running allocating
;;; Scheme code, with (gc) now and then; half of them joined, half dropped unjoined (their
;;; thread objects' finalizers detach them, and tcr reaps them). Afterwards the process's fds,
;;; pidfds, threads and mappings are back at their baseline and its RSS within 4 MiB of it.
(use-modules (tcr threads)
             (ice-9 format)
             (ice-9 rdelim)
             (tests check))

;; Run with MALLOC_ARENA_MAX=1 and GUILE_JIT_THRESHOLD=-1 (ctest does): glibc's malloc arenas,
;; created as threads contend and never unmapped, and Guile's JIT code arenas, mapped as
;; procedures get hot, would otherwise add mappings that are no leak.
(unless (and (getenv "MALLOC_ARENA_MAX") (getenv "GUILE_JIT_THRESHOLD"))
  (format (current-error-port) "note: MALLOC_ARENA_MAX or GUILE_JIT_THRESHOLD not set: glibc malloc arenas or Guile JIT code arenas may show as new mappings~%"))

(define count
  (let ((args (cdr (command-line))))
    (if (null? args) 100000 (string->number (car args)))))
(define batch 200)          ; threads alive at once, at most
(define gc-every 10000)     ; a (gc) after this many threads

(define (work i)
  ;; Allocating code: a list, a string, a vector, summed up.
  (let* ((l (iota 64 i))
         (s (number->string (apply + l)))
         (v (list->vector (map (lambda (x) (* x x)) l))))
    (+ (string-length s) (vector-ref v 63))))

(define (expected i) (+ (string-length (number->string (apply + (iota 64 i)))) (* (+ i 63) (+ i 63))))

(define bad-results 0)

;; Spawns n threads in batches; joins the even ones (checking their results), drops the odd
;; ones. Answers nothing: no thread object survives it.
(define (run-threads n)
  (let loop ((start 0))
    (when (< start n)
      (let* ((end (min n (+ start batch)))
             (threads (map (lambda (i) (cons i (call-with-new-thread (lambda () (work i)))))
                           (iota (- end start) start))))
        (for-each (lambda (entry)
                    (when (even? (car entry))
                      (unless (= (join-thread (cdr entry)) (expected (car entry)))
                        (set! bad-results (+ bad-results 1)))))
                  threads)
        (when (not (= (quotient start gc-every) (quotient end gc-every)))
          (gc))
        (loop end)))))

;; tcr keeps a few reaped stacks mapped for reuse (tcr-stats' cached-stacks; they come and go at
;; new addresses, and /proc/self/maps merges neighbours differently each time): they are
;; unmapped before each count, so that the mappings counted are what would leak.
(define (counts) (tcr-trim) (tcr-resource-counts))
(define (count-of c key) (assq-ref c key))

;; Collects, lets Guile's finalization thread detach the dropped threads, reaps them: until
;; no thread remains live or unreaped, for at most 60 s.
(define (settle)
  (wait-until 60
              (lambda ()
                (gc)
                (usleep 20000)
                (tcr-reap)
                (let ((s (tcr-stats)))
                  (and (zero? (assq-ref s 'live)) (zero? (assq-ref s 'dead-unreaped)))))))

(define (show what c)
  (format #t "~a: fds ~a, pidfds ~a, threads ~a, maps ~a, rss ~a KiB~%" what
          (count-of c 'fds) (count-of c 'pidfds) (count-of c 'threads) (count-of c 'maps)
          (count-of c 'rss-kb)))

;; Warm-up: the same pattern, so that what stays for good (Guile's finalization thread, tcr's
;; stack cache, the Boehm heap at its working size) is in the baseline.
(run-threads (min count 20000))
(check "warm-up threads settled" (settle))
(define (read-maps)
  (call-with-input-file "/proc/self/maps"
    (lambda (port)
      (let loop ((lines '()))
        (let ((line (read-line port)))
          (if (eof-object? line) (reverse lines) (loop (cons line lines))))))))
(define (heap-size) (assq-ref (gc-stats) 'heap-size))
(define baseline (counts))
(define baseline-maps (read-maps))
(define baseline-heap (heap-size))
(show "baseline" baseline)

(define start-ns (now-ns))
(run-threads count)
(define spawn-seconds (/ (- (now-ns) start-ns) 1e9))
(format #t "~a threads (~a joined, ~a dropped) in ~,2f s: ~,1f us per thread~%"
        count (quotient (+ count 1) 2) (quotient count 2) spawn-seconds
        (/ (* spawn-seconds 1e6) count))
(check-equal "every joined thread answered its result" 0 bad-results)
(check "all threads finalized, detached and reaped (within 60 s)" (settle))
(let ((s (tcr-stats)))
  (format #t "tcr-stats: ~a~%" s))

;; Counts back at the baseline: polled, for a bounded time, as the kernel and Guile's
;; finalization catch up.
(define final
  (let ((deadline (+ (now-ns) (* 30 1000000000))))
    (let loop ()
      (gc)
      (let ((c (counts)))
        (if (or (and (<= (count-of c 'fds) (count-of baseline 'fds))
                     (<= (count-of c 'pidfds) (count-of baseline 'pidfds))
                     (<= (count-of c 'threads) (count-of baseline 'threads))
                     (<= (count-of c 'maps) (+ (count-of baseline 'maps) (if (> (heap-size) baseline-heap) 2 0)))
                     (<= (count-of c 'rss-kb) (+ (count-of baseline 'rss-kb) 4096)))
                (> (now-ns) deadline))
            c
            (begin (usleep 50000) (loop)))))))
(show "after" final)
;; Boehm grows its heap in sections, each a mapping of its own, when the collector sees fit (CI
;; once saw one 1.3 MiB section more after 100,000 threads): a mapping more is the collector's
;; only if its heap grew, and then at most two. A per-thread leak would be thousands.
(define heap-grew (> (heap-size) baseline-heap))
(format #t "Boehm heap: ~a KiB at the baseline, ~a KiB now~%" (quotient baseline-heap 1024)
        (quotient (heap-size) 1024))
(define maps-slack (if heap-grew 2 0))
(for-each (lambda (key)
            (check-equal (format #f "~a back at the baseline" key)
                         (count-of baseline key) (count-of final key)))
          '(fds pidfds threads))
(check (format #f "maps not above the baseline (~a, baseline ~a, ~a more allowed: the heap ~a)"
               (count-of final 'maps) (count-of baseline 'maps) maps-slack
               (if heap-grew "grew" "did not grow"))
       (<= (count-of final 'maps) (+ (count-of baseline 'maps) maps-slack)))
(when (> (count-of final 'maps) (count-of baseline 'maps))
 (let ((now (read-maps)))
  (for-each (lambda (line) (unless (member line baseline-maps) (format #t "  new mapping: ~a~%" line)))
            now)
  (for-each (lambda (line) (unless (member line now) (format #t "  gone mapping: ~a~%" line)))
            baseline-maps)))
(check (format #f "rss within 4 MiB of the baseline (~a KiB, baseline ~a KiB)"
               (count-of final 'rss-kb) (count-of baseline 'rss-kb))
       (<= (count-of final 'rss-kb) (+ (count-of baseline 'rss-kb) 4096)))

(report-and-exit "guile.ManyThreads")
