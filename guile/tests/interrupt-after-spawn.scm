;;; The open bug noted in guile/tests/Interrupts.scm: an interrupt sent at once after the spawn
;;; is lost about once in 2,000 on a loaded machine. Each of COUNT threads sleeps 10 s and is
;;; interrupted right after its spawn by a thunk that aborts to the thread's cancel prompt; every
;;; thread that sleeps its 10 s instead is printed with what thread-interrupt! answered and what
;;; the thunk saw. Exits 1 if any was lost. Not run by ctest (it fails there now and then).
;;;   guile --no-auto-compile guile/tests/interrupt-after-spawn.scm [COUNT]
(use-modules (tcr threads) (ice-9 atomic))
(define count (if (> (length (command-line)) 1) (string->number (cadr (command-line))) 2000))
(let loop ((i 0) (bad 0))
  (if (< i count)
      (let* ((ran (make-atomic-box 'no))
             (t (call-with-new-thread (lambda () (sleep 10) 'slept)))
             (queued
              (thread-interrupt!
               t (lambda ()
                   (atomic-box-set! ran 'yes)
                   (catch #t
                     (lambda () (abort-to-prompt (@@ (tcr threads) cancel-tag) 'cancelled i))
                     (lambda (key . args) (atomic-box-set! ran (cons key args)))))))
             (r (call-with-values (lambda () (join-thread t)) list)))
        (unless (equal? r (list 'cancelled i))
          (format #t "~a: joined ~s; thread-interrupt! answered ~s; the thunk: ~s~%"
                  i r queued (atomic-box-ref ran)))
        (loop (+ i 1) (if (equal? r (list 'cancelled i)) bad (+ bad 1))))
      (begin
        (format #t "~a of ~a interrupts lost~%" bad count)
        (exit (if (zero? bad) 0 1)))))
