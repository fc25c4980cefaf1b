;;; ecl.StackOverflow: unbounded recursion on tcr threads.
;;; 1. ECL's own C-stack check (limits set from the tcr stack by the start hook): the overflow is
;;;    an EXT:STACK-OVERFLOW caught by a handler-case in the thread, which goes on running.
;;; 2. With the ECL check off (tcr:*stack-check* nil at spawn) a recursion in plain C frames
;;;    (tcr::%overflow-c-stack: a Lisp one could hit the guard page inside Boehm, holding its
;;;    lock, which no recovery can give back) reaches tcr's guard page: tcr's fault handler (tcr:install-fault-handlers, opt-in) recovers the thread, the exit hook releases it from ECL, and
;;;    tcr:process-join signals TCR:THREAD-ERROR "thread overflowed its stack".
;;; Both at least 20 times in a row, then normal threads (reused stacks and records import again).
(load (merge-pathnames "common.lsp" *load-truename*))
(defun deep (n) (1+ (deep (1+ n))))
(defvar *depth* 0)
(defun deep-counting (n) (setf *depth* n) (1+ (deep-counting (1+ n))))

;; ECL sees the tcr thread's stack.
(let ((l (tcr:process-join (tcr:process-run-function "limits" #'tcr:stack-limits))))
  (format t "~&thread stack as ECL and tcr see it: ~S~%" l)
  (check (= (getf l :cs-org) (getf l :stack-high)) "cs_org is the tcr stack's top")
  (check (= (getf l :cs-size) (- (getf l :stack-high) (getf l :stack-low))) "cs_size is the tcr stack's size")
  (check (= (getf l :cs-size) tcr:*stack-size*) "which is tcr:*stack-size*")
  (check (< (getf l :stack-low) (getf l :cs-limit) (getf l :stack-high)) "cs_limit inside the stack"))

(defun overflow-in-thread ()
  (let ((caught (handler-case (progn (deep-counting 0) :returned)
                  (ext:stack-overflow (c) (list :caught (type-of c) (ext:stack-overflow-type c))))))
    ;; The thread survives: allocate, call, return normally.
    (list caught *depth* (length (loop for i below 10000 collect i)))))

(let ((depths '()))
  (dotimes (i 25)
    (let ((r (tcr:process-join (tcr:process-run-function (format nil "ecl-overflow-~D" i) #'overflow-in-thread))))
      (unless (and (equal (first r) '(:caught ext:stack-overflow ext:c-stack)) (= (third r) 10000))
        (format t "~&thread ~D: ~S~%" i r)
        (incf *failures*))
      (push (second r) depths)))
  (format t "~&ECL-detected overflows: 25 threads, recursion depth at the overflow ~D..~D~%" (reduce #'min depths) (reduce #'max depths))
  (check (apply #'= depths) "same depth each time (same stack, same limits)"))

;; tcr's fault handlers are opt-in (README.md, "ECL on tcr threads"): without them a guard-page hit kills the
;; process, ECL's handler cannot run on the overflowed stack.
(check (eq (tcr:install-fault-handlers) t) "tcr:install-fault-handlers")
(let ((steps '()))
  (dotimes (i 25)
    (let ((th (let ((tcr:*stack-check* nil)) (tcr:process-run-function (format nil "guard-overflow-~D" i) #'tcr::%overflow-c-stack))))
      (handler-case (progn (tcr:process-join th) (push :no-error steps))
        (tcr:thread-error (c) (push (tcr:thread-error-step c) steps)
          (when (= i 0) (format t "~&guard page overflow: ~A~%" c))))))
  (check (every (lambda (s) (equal s "thread overflowed its stack")) steps) "25 guard-page overflows recovered by tcr, joined as errors"))

;; Normal threads afterwards, on reused stacks and records; ECL's process list is clean.
(check (equal (loop for i below 50 collect (tcr:process-join (tcr:process-run-function "after" (lambda (x) (* x x)) i)))
              (loop for i below 50 collect (* i i))) "50 normal threads after the overflows")
(check (= (length (mp:all-processes)) (length (remove-if-not #'mp:process-active-p (mp:all-processes))))
       "no dead process left listed")
(check (notany (lambda (p) (search "overflow" (princ-to-string (mp:process-name p)))) (mp:all-processes)) "no overflowed thread listed")
;; And an overflow in ECL's check mode again, after the guard-page ones.
(check (equal (first (tcr:process-join (tcr:process-run-function "again" #'overflow-in-thread)))
              '(:caught ext:stack-overflow ext:c-stack)) "ECL-detected overflow still works")
(finish)
