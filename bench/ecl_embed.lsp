;;; bench/ecl_embed.lsp: ECL's own mp:process-run-function + mp:process-join beside
;;; tcr:process-run-function + tcr:process-join (tcr-ecl.fas), interleaved in rounds in one run.
;;;   ecl --norc --shell bench/ecl_embed.lsp build/lib/tcr/ecl/tcr-ecl.fas [ROUNDS [THREADS]]
;;; Each round creates and joins THREADS threads one after the other with each API (the order
;;; alternates between rounds) and prints a markdown table of microseconds per thread over the
;;; rounds: median, min, max, and the ratio to ECL's own of the medians, beside two baselines
;;; (ECL's import on a bare pthread, and the bare pthread). Nothing is hard-coded.
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

(defun check (value i api)
  (unless (eql value (+ i 1)) (error "~A: wrong value ~S" api value)))

;; Each variant creates and joins *threads* threads, one after the other. The last two are the
;; baselines for where the time goes (tcr-ecl.c, "baselines"): ECL's own import on a bare
;; pthread_create'd thread joined by pthread_join, with no thread manager (no manager can make an
;; ECL thread cheaper: it is what any of them must do on a fresh OS thread for Lisp to run
;; there), and that thread alone.
(defvar *variants*
  (list (list :ecl "ECL mp:process-run-function + mp:process-join"
              (lambda (i) (check (mp:process-join (mp:process-run-function "bench" #'thread-body i)) i :ecl)))
        (list :tcr "tcr:process-run-function + tcr:process-join"
              (lambda (i) (check (tcr:process-join (tcr:process-run-function "bench" #'thread-body i)) i :tcr)))
        (list :import "no manager: pthread_create + ecl_import_current_thread + pthread_join"
              (lambda (i) (check (tcr::%bare-pthread-import #'thread-body i) i :import)))
        (list :bare "no ECL: pthread_create + pthread_join"
              (lambda (i) (declare (ignore i)) (tcr::%bare-pthread)))))

(defun run-round (variant)
  (let ((fn (third variant)))
    (timed-round (first variant) (dotimes (i *threads*) (funcall fn i)))))

(defun median (list) (let ((v (sort (coerce list 'vector) #'<))) (aref v (floor (length v) 2))))

;; One warm-up round each (stack caches, Boehm heap), not counted.
(let ((*threads* (min *threads* 100))) (mapc #'run-round *variants*))
(setf *cpu* '())
(let ((wall (mapcar (lambda (v) (list (first v))) *variants*)))
  ;; Even rounds in the list's order, odd ones in reverse: none always runs on a fresh heap.
  (dotimes (r *rounds*)
    (dolist (v (if (evenp r) *variants* (reverse *variants*)))
      (push (run-round v) (cdr (assoc (first v) wall)))))
  (format t "~&~%ECL ~A, ~D rounds x ~D threads, create + join one after the other~%~%"
          (lisp-implementation-version) *rounds* *threads*)
  (format t "| API | median us/thread | min | max | ratio to ECL's own | process CPU us/thread | CPU ratio |~%")
  (format t "|---|---:|---:|---:|---:|---:|---:|~%")
  (let* ((cpu-of (lambda (key) (mapcar #'cdr (remove key *cpu* :key #'car :test-not #'eq))))
         (ecl-wall (median (cdr (assoc :ecl wall))))
         (ecl-cpu (median (funcall cpu-of :ecl))))
    (dolist (v *variants*)
      (let ((us (cdr (assoc (first v) wall)))
            (cpu (funcall cpu-of (first v))))
        (format t "| ~A | ~,1F | ~,1F | ~,1F | ~,2F | ~,1F | ~,2F |~%" (second v) (median us)
                (reduce #'min us) (reduce #'max us) (/ (median us) ecl-wall) (median cpu)
                (/ (median cpu) (max 1e-9 ecl-cpu))))))
  (terpri)
  (dolist (v *variants*)
    (format t "per round, ~A: ~{~,1F~^ ~}~%" (first v) (reverse (cdr (assoc (first v) wall))))))
(finish-output)
(ext:quit 0)
