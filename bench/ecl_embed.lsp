;;; bench/ecl_embed.lsp: ECL's own mp:process-run-function + mp:process-join beside
;;; tcr:process-run-function + tcr:process-join (tcr-ecl.fas), interleaved in rounds in one run.
;;;   ecl --norc --shell bench/ecl_embed.lsp build/lib/tcr/ecl/tcr-ecl.fas [ROUNDS [THREADS]]
;;; Each round creates and joins THREADS threads one after the other with each API (the order
;;; alternates between rounds) and prints a markdown table of microseconds per thread over the
;;; rounds: median, min, max, and the ratio tcr/ECL of the medians. Nothing is hard-coded.
(defvar *args* (cdr (member "--shell" ext:*command-args* :test #'string=)))
(load (second *args*))
(defvar *rounds* (if (third *args*) (parse-integer (third *args*)) 7))
(defvar *threads* (if (fourth *args*) (parse-integer (fourth *args*)) 1000))

(defun thread-body (i) (+ i 1))

(defvar *cpu* '()) ; (api . process CPU us per thread), every round

;; Wall-clock microseconds per thread; the process's CPU time per thread (all its threads, from
;; get-internal-run-time) goes to *cpu*: on a loaded machine it says what the wall clock cannot.
(defmacro timed-round (api &body body)
  `(let ((t0 (tcr:monotonic-ns)) (c0 (get-internal-run-time)))
     ,@body
     (push (cons ,api (/ (* 1e6 (- (get-internal-run-time) c0)) internal-time-units-per-second *threads*)) *cpu*)
     (/ (- (tcr:monotonic-ns) t0) 1000.0 *threads*)))

(defun round-ecl ()
  (timed-round :ecl
    (dotimes (i *threads*)
      (unless (eql (mp:process-join (mp:process-run-function "bench" #'thread-body i)) (+ i 1))
        (error "mp:process-join: wrong value")))))

(defun round-tcr ()
  (timed-round :tcr
    (dotimes (i *threads*)
      (unless (eql (tcr:process-join (tcr:process-run-function "bench" #'thread-body i)) (+ i 1))
        (error "tcr:process-join: wrong value")))))

(defun median (list) (let ((v (sort (coerce list 'vector) #'<))) (aref v (floor (length v) 2))))

;; One warm-up round each (stack caches, Boehm heap), not counted.
(let ((*threads* (min *threads* 100))) (round-ecl) (round-tcr))
(setf *cpu* '())
(let ((ecl '()) (tcr '()))
  (dotimes (r *rounds*)
    (if (evenp r)
        (progn (push (round-ecl) ecl) (push (round-tcr) tcr))
        (progn (push (round-tcr) tcr) (push (round-ecl) ecl))))
  (format t "~&~%ECL ~A, ~D rounds x ~D threads, create + join one after the other~%~%"
          (lisp-implementation-version) *rounds* *threads*)
  (format t "| API | median us/thread | min | max |~%|---|---:|---:|---:|~%")
  (format t "| ECL mp:process-run-function + mp:process-join | ~,1F | ~,1F | ~,1F |~%"
          (median ecl) (reduce #'min ecl) (reduce #'max ecl))
  (format t "| tcr:process-run-function + tcr:process-join | ~,1F | ~,1F | ~,1F |~%"
          (median tcr) (reduce #'min tcr) (reduce #'max tcr))
  (let ((ecl-cpu (mapcar #'cdr (remove :tcr *cpu* :key #'car)))
        (tcr-cpu (mapcar #'cdr (remove :ecl *cpu* :key #'car))))
    (format t "| ECL, process CPU us/thread | ~,1F | ~,1F | ~,1F |~%"
            (median ecl-cpu) (reduce #'min ecl-cpu) (reduce #'max ecl-cpu))
    (format t "| tcr, process CPU us/thread | ~,1F | ~,1F | ~,1F |~%"
            (median tcr-cpu) (reduce #'min tcr-cpu) (reduce #'max tcr-cpu))
    (format t "~%ratio tcr/ECL (medians): wall ~,2F, CPU ~,2F~%" (/ (median tcr) (median ecl))
            (/ (median tcr-cpu) (max 1e-9 (median ecl-cpu)))))
  (format t "per round, ECL: ~{~,1F~^ ~}~%per round, tcr: ~{~,1F~^ ~}~%" (reverse ecl) (reverse tcr)))
(finish-output)
(ext:quit 0)
