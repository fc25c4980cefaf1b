;;; ecl.ManyThreads: COUNT (argument, default 100000) threads through tcr-ecl running small
;;; allocating Lisp code, two in three joined and one in three never joined (its object dropped:
;;; the finalizer detaches it, tcr reaps it), then the process's fds, pidfds, OS threads and
;;; mappings are back at the baseline and RSS within 4 MiB of it (a bounded wait for reaping).
;;; The baseline is taken after a warm-up round of the same pattern (Boehm's heap and tcr's stack
;;; cache at their working size), with the stack cache trimmed at both points. Run it with
;;; MALLOC_ARENA_MAX=1 GC_UNMAP_THRESHOLD=0 GC_INITIAL_HEAP_SIZE=64M (ctest does): glibc maps a
;;; new 64 MiB malloc arena, kept for reuse, when threads happen to contend for malloc, Boehm
;;; unmaps free heap blocks after some collections (splitting its mappings) and adds heap
;;; sections while it finds its working size: no leak, but each moves the mapping count or RSS.
;;; On a mismatch the test prints the mappings that differ; Boehm's live bytes are checked too.
(load (merge-pathnames "common.lsp" *load-truename*))
(defvar *count* (script-arg 0 100000))
(defvar *batch* 32)

(defun work (i)
  (let ((l (loop for k below (+ 5 (mod i 20)) collect (cons k i))))
    (reduce #'+ l :key #'car)))

(defun expected (i) (let ((n (+ 5 (mod i 20)))) (/ (* n (1- n)) 2)))

(defun run-threads (count)
  (let ((bad 0))
    (loop for start from 0 below count by *batch* do
      (let ((joinable '()))
        (loop for i from start below (min count (+ start *batch*)) do
          (let ((th (tcr:process-run-function "many" #'work i)))
            (if (= (mod i 3) 2)
                nil                          ; never joined: dropped
                (push (cons i th) joinable))))
        (dolist (p joinable)
          (unless (eql (tcr:process-join (cdr p)) (expected (car p))) (incf bad)))))
    bad))

(defun settle ()
  ;; Collections run the finalizers that detach dropped threads; spawns and tcr:reap reap them.
  (ext:gc t) (ext:gc t)
  (tcr:reap t)
  (tcr:trim)
  (tcr:resource-counts))

(defun same-counts-p (a b)
  (and (= (getf a :fds) (getf b :fds)) (= (getf a :pidfds) (getf b :pidfds))
       (= (getf a :threads) (getf b :threads)) (= (getf a :maps) (getf b :maps))
       (<= (- (getf b :rss-kb) (getf a :rss-kb)) 4096)))

;; Boehm's heap grows to its working size (about 36 MiB here) over the first few thousand
;; threads and stays there (tcr:gc-heap after every 5,000 of 30,000: flat, live bytes too).
(check (zerop (run-threads (min *count* 10000))) "warm-up threads returned the right values")
(defun maps ()
  (with-open-file (in "/proc/self/maps")
    (loop for line = (read-line in nil) while line collect line)))
;; Quiescent: every thread of the warm-up reaped (the dropped ones once their finalizers ran).
(defun quiesce ()
  (let ((deadline (+ (tcr:monotonic-ns) (* 30 1000000000))))
    (loop for counts = (settle)
          for stats = (tcr:stats)
          when (and (zerop (getf stats :live)) (zerop (getf stats :dead-unreaped))) return counts
          when (> (tcr:monotonic-ns) deadline) return (progn (check nil "quiescent within 30 s") counts)
          do (sleep 0.1))))
(defvar *baseline* (quiesce))
(defvar *baseline-maps* (maps))
(defvar *baseline-heap* (tcr:gc-heap))
(format t "~&baseline: ~S~%stats: ~S~%Boehm: ~S~%" *baseline* (tcr:stats) *baseline-heap*)
(let* ((t0 (tcr:monotonic-ns))
       (bad (run-threads *count*))
       (seconds (/ (- (tcr:monotonic-ns) t0) 1e9)))
  (format t "~&~D threads in ~,2F s (~,1F us per thread)~%" *count* seconds (/ (* seconds 1e6) *count*))
  (check (zerop bad) "every joined thread returned its value"))
(let ((deadline (+ (tcr:monotonic-ns) (* 30 1000000000)))
      (now nil))
  (loop do (setf now (settle))
        until (or (and (same-counts-p *baseline* now) (zerop (getf (tcr:stats) :live)))
                  (> (tcr:monotonic-ns) deadline))
        do (sleep 0.2))
  (format t "~&after:    ~S~%stats: ~S~%" now (tcr:stats))
  (unless (= (getf now :maps) (getf *baseline* :maps))
    (let ((after (maps)))
      (format t "~&mappings gone since the baseline:~%~{  ~A~%~}new ones:~%~{  ~A~%~}"
              (set-difference *baseline-maps* after :test #'string=)
              (set-difference after *baseline-maps* :test #'string=))))
  (dolist (k '(:fds :pidfds :threads :maps))
    (check (= (getf now k) (getf *baseline* k)) (format nil "~(~A~) back at baseline (~D)" k (getf *baseline* k))))
  (check (<= (- (getf now :rss-kb) (getf *baseline* :rss-kb)) 4096)
         (format nil "RSS within 4 MiB of baseline (~@D KiB)" (- (getf now :rss-kb) (getf *baseline* :rss-kb))))
  (let ((heap (tcr:gc-heap)))
    (format t "~&Boehm:    ~S~%" heap)
    (check (<= (- (getf heap :in-use) (getf *baseline-heap* :in-use)) (* 4 1024 1024))
           (format nil "Boehm's live bytes after a collection within 4 MiB of baseline (~@D KiB)"
                   (round (- (getf heap :in-use) (getf *baseline-heap* :in-use)) 1024))))
  (let ((s (tcr:stats)))
    (check (and (zerop (getf s :live)) (zerop (getf s :dead-unreaped))) "no thread live or unreaped")
    (check (= (getf s :spawned) (getf s :reaped)) "every spawned thread reaped")))
(check (= 1 (count-if (lambda (p) (not (eq p mp:*current-process*))) (mp:all-processes)))
       "ECL lists only its own signal thread besides the main one")
(finish)
