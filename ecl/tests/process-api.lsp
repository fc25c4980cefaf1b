;;; ecl.ProcessApi: tcr:process-run-function / process-join values and arguments, errors as
;;; Lisp conditions, interrupts into a busy Lisp loop, an interrupt that signals an error or
;;; throws, an interrupt to an exited thread.
(load (merge-pathnames "common.lsp" *load-truename*))

;; Values and arguments.
(let ((th (tcr:process-run-function "values" (lambda (a b &rest more) (values (+ a b) more :third)) 1 2 3 4)))
  (check (equal (multiple-value-list (tcr:process-join th)) '(3 (3 4) :third)) "all values and &rest args"))
(check (eql (tcr:process-join (tcr:process-run-function nil #'+ 40 2)) 42) "unnamed thread, function designator")
(check (null (multiple-value-list (tcr:process-join (tcr:process-run-function "none" #'values)))) "zero values")
;; The thread is an ECL process of its own, and a tcr thread.
(let* ((main mp:*current-process*)
       (th (tcr:process-run-function "ident" (lambda () (list mp:*current-process* (tcr:current-thread-id)
                                                              (mp:process-name mp:*current-process*)))))
       (r (tcr:process-join th)))
  (check (and (typep (first r) 'mp:process) (not (eq (first r) main))) "own mp:process")
  (check (eql (second r) (tcr:thread-id th)) "tcr:current-thread-id is the thread's")
  (check (equal (third r) "ident") "the process has the thread's name")
  (check (not (member (first r) (mp:all-processes))) "released: no longer in mp:all-processes"))
;; Allocation on the thread, a GC meanwhile.
(check (= (tcr:process-join (tcr:process-run-function "alloc" (lambda () (let ((l (loop for i below 100000 collect (list i)))) (ext:gc t) (length l)))))
          100000) "allocating thread, collection on it")

;; A failed thread: TCR:THREAD-ERROR with the original condition.
(let ((th (tcr:process-run-function "err" (lambda () (error "boom ~A" 7)))))
  (handler-case (progn (tcr:process-join th) (check nil "error thread joined without error"))
    (tcr:thread-error (c)
      (check (typep (tcr:thread-error-condition c) 'simple-error) "the thread's condition is kept")
      (check (equal (tcr:thread-error-step c) "lisp error") "step says lisp error")
      (check (search "boom 7" (princ-to-string c)) "message carries the error's text"))))
;; Joining twice: a tcr step error.
(let ((th (tcr:process-run-function "twice" (lambda () 1))))
  (tcr:process-join th)
  (handler-case (progn (tcr:process-join th) (check nil "second join succeeded"))
    (tcr:thread-error (c) (check (member (tcr:thread-error-step c) '("stale thread reference" "thread already joined") :test #'equal)
                                 (format nil "second join: ~A" (tcr:thread-error-step c))))))
;; A non-local exit out of the thread's function (mp:exit-process): a join error.
(handler-case (progn (tcr:process-join (tcr:process-run-function "exit" (lambda () (mp:exit-process) 1)))
                     (check nil "exit-process joined normally"))
  (tcr:thread-error (c) (check (equal (tcr:thread-error-step c) "unwound") "exit-process: unwound")))
(check (eq (tcr:process-detach (tcr:process-run-function "detached" (lambda () 1))) t) "detach")

;; Interrupts into a busy Lisp loop (no sleep, no tcr call in it).
(defvar *stop* nil)
(defvar *hits* 0)
(let* ((th (tcr:process-run-function "busy" (lambda () (let ((n 0)) (loop until *stop* do (setf n (mod (+ n (length (list n n))) 1000003)))) :done)))
       (delays '()))
  (sleep 0.05)
  (dotimes (i 100)
    (let* ((t0 (tcr:monotonic-ns))
           (ticket (tcr:process-interrupt th (lambda () (incf *hits*)))))
      (unless (eq (tcr:interrupt-wait ticket) :delivered) (incf *failures*))
      (push (/ (- (tcr:monotonic-ns) t0) 1000.0) delays)))
  (format t "~&interrupt into a busy loop: median ~,1F us, max ~,1F us over 100~%" (median delays) (reduce #'max delays))
  (check (= *hits* 100) "100 interrupts ran")
  (check (zerop (tcr:deferred-polls)) "no doorbell came on the alternate signal stack")
  (check (< (median delays) 1e6) "median delay under 1 s")
  ;; The interrupt runs on that thread, with its dynamic bindings.
  (let ((where nil))
    (tcr:interrupt-wait (tcr:process-interrupt th (lambda () (setf where (mp:process-name mp:*current-process*)))))
    (check (equal where "busy") "ran on the target"))
  (setf *stop* t)
  (check (eq (tcr:process-join th) :done) "busy thread still ends normally")
  ;; An interrupt to an exited thread: undelivered, no error.
  (let ((ticket (tcr:process-interrupt th (lambda () (incf *hits*)))))
    (check (eq (tcr:interrupt-wait ticket) :undelivered) "exited thread: undelivered")
    (check (= *hits* 100) "its function did not run")))

;; An interrupt sent at once after the spawn (maybe before the thread's start hook gave tcr its
;; doorbell), to a thread that only loops: delivered all the same.
(let* ((stop nil)
       (th (tcr:process-run-function "early" (lambda () (let ((n 0)) (loop until stop do (setf n (mod (1+ n) 7)))) :early)))
       (ran nil)
       (ticket (tcr:process-interrupt th (lambda () (setf ran t)))))
  (check (eq (tcr:interrupt-wait ticket) :delivered) "interrupt right after the spawn delivered")
  (setf stop t)
  (check (and ran (eq (tcr:process-join th) :early)) "it ran, the thread went on"))

;; An interrupt whose function signals an error: the thread sees that error where it was
;; interrupted (re-signalled after tcr_poll returned), its own handler catches it.
(let ((th (tcr:process-run-function "catcher" (lambda () (handler-case (loop (sleep 0.001)) (error (c) (list :seen (princ-to-string c))))))))
  (sleep 0.05)
  (check (eq (tcr:interrupt-wait (tcr:process-interrupt th (lambda () (error "from interrupt")))) :delivered) "error interrupt delivered")
  (check (equal (tcr:process-join th) '(:seen "from interrupt")) "the thread's handler saw the interrupt's error"))
;; ... and the same into a busy loop without sleep.
(let ((th (tcr:process-run-function "catcher2" (lambda () (handler-case (let ((n 0)) (loop (setf n (mod (1+ n) 7)))) (error (c) (list :seen (princ-to-string c))))))))
  (sleep 0.05)
  (tcr:interrupt-wait (tcr:process-interrupt th (lambda () (error "busy interrupt"))))
  (check (equal (tcr:process-join th) '(:seen "busy interrupt")) "busy thread's handler saw the interrupt's error"))
;; An unhandled error from an interrupt ends the thread's function with that error.
(let ((th (tcr:process-run-function "uncaught" (lambda () (loop (sleep 0.001))))))
  (sleep 0.05)
  (tcr:interrupt-wait (tcr:process-interrupt th (lambda () (error "unhandled in interrupt"))))
  (handler-case (progn (tcr:process-join th) (check nil "uncaught interrupt error: joined normally"))
    (tcr:thread-error (c) (check (search "unhandled in interrupt" (princ-to-string c)) "uncaught interrupt error is the join's error"))))
;; A throw from an interrupt to a catch of the interrupted code, with its values.
(let ((th (tcr:process-run-function "thrower" (lambda () (catch 'out (loop (sleep 0.001)))))))
  (sleep 0.05)
  (tcr:interrupt-wait (tcr:process-interrupt th (lambda () (throw 'out (values :thrown 2)))))
  (check (equal (multiple-value-list (tcr:process-join th)) '(:thrown 2)) "throw from an interrupt reaches the thread's catch"))
;; Interrupts to a thread waiting in tcr:process-join (a tcr safe point).
(let* ((inner (tcr:process-run-function "inner" (lambda () (sleep 0.3) :inner)))
       (outer (tcr:process-run-function "outer" (lambda () (list (tcr:process-join inner) *hits*))))
       (tickets (progn (sleep 0.05) (loop repeat 5 collect (tcr:process-interrupt outer (lambda () (incf *hits*)))))))
  (check (every (lambda (tk) (eq (tcr:interrupt-wait tk) :delivered)) tickets) "interrupts delivered inside a join")
  (check (equal (tcr:process-join outer) '(:inner 105)) "join went on after them"))
;; ECL's own mp:interrupt-process to a thread blocked in tcr:process-join, with a function that
;; throws: ECL queues it while the thread is inside tcr (interrupts disabled there), and runs it
;; once the join returned, so the throw never crosses tcr's frames; the joined thread is reaped.
(let* ((inner (tcr:process-run-function "inner2" (lambda () (sleep 0.3) :inner)))
       (outer (tcr:process-run-function "outer2" (lambda () (list (catch 'out (tcr:process-join inner) :not-thrown)
                                                                  (tcr:thread-exited-p inner))))))
  (sleep 0.05)
  (mp:interrupt-process (tcr:thread-process outer) (lambda () (throw 'out :thrown)))
  (check (equal (tcr:process-join outer) '(:thrown t)) "ECL interrupt during a join ran after it, threw to the thread's catch"))
(tcr:reap t)
(finish)
