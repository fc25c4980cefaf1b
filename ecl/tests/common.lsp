;;; Shared by the ecl.* tests: loads tcr-ecl.fas (the first argument after the script) and
;;; gives CHECK, which counts failures, and FINISH, which exits non-zero if any.
(defvar *script-args*
  (cdr (member "--shell" ext:*command-args* :test #'string=))) ; (script fas args...)
(defvar *failures* 0)
(load (second *script-args*))
(defun script-arg (i default)
  (let ((a (nth (+ 2 i) *script-args*)))
    (if a (parse-integer a) default)))
(defmacro check (form &optional (what (prin1-to-string form)))
  `(if ,form
       (format t "~&ok   ~A~%" ,what)
       (progn (incf *failures*) (format t "~&FAIL ~A~%" ,what))))
(defun finish ()
  (format t "~&~A failure~:P~%" *failures*)
  (finish-output)
  (ext:quit (if (zerop *failures*) 0 1)))
(defun median (list)
  (let ((v (sort (coerce list 'vector) #'<)))
    (aref v (floor (length v) 2))))
