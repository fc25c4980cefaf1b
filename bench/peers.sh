#!/usr/bin/env bash
# bench/peers.sh: what one thread's create + exit costs in the runtimes tcr is for, next to tcr.
# Runs, when installed (Debian: sbcl guile-3.0 chezscheme ecl), a loop of thread lives in each:
#   sbcl   make-thread + join-thread, and the foo loop (make-thread signals a semaphore)
#   guile  call-with-new-thread + join-thread
#   chez   fork-thread signalling a condition (Chez has no join-thread)
#   ecl    mp:process-run-function + mp:process-join, and the foo loop
# and tcr's own figures from `tcr-bench spawn --json`. A runtime that is not installed is skipped.
# Informational only: never part of the test suite, nothing is asserted, and single runs on a
# shared machine are noisy. Whole run well under 2 minutes (each peer is capped by a timeout).
#
# Usage: bench/peers.sh            (from anywhere; tcr-bench from build/bin)
# Environment: TCR_BENCH (path to tcr-bench), PEERS_THREADS (default 5000; ECL, ~100x slower
# per thread here, runs a tenth of it), PEERS_TIMEOUT (seconds per peer, default 30).
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
bench=${TCR_BENCH:-$root/build/bin/tcr-bench}
n=${PEERS_THREADS:-5000}
n_ecl=$(((n + 9) / 10))
limit=${PEERS_TIMEOUT:-30}
tcr_join=""

row() { printf '  %-22s %-52s %7s %10s %7s\n' "$@"; }

# "x tcr" column: the peer's us/thread over tcr spawn + join.
versus_tcr() {
  [ -n "$tcr_join" ] && [ -n "$1" ] || return 0
  awk -v a="$1" -v b="$tcr_join" 'BEGIN { if (b > 0) printf "%.2f", a / b }'
}

# peer NAME LOOP THREADS COMMAND...: runs COMMAND, whose last line of output is us/thread.
peer() {
  local name=$1 loop=$2 count=$3
  shift 3
  local out us
  out=$(timeout "$limit" "$@" 2>&1)
  us=$(printf '%s\n' "$out" | tail -n 1 | grep -Eo '^[0-9]+(\.[0-9]+)?' || true)
  if [ -z "$us" ]; then
    row "$name" "$loop" "$count" "failed" ""
    printf '%s\n' "$out" | tail -n 3 | sed 's/^/      /'
    return
  fi
  row "$name" "$loop" "$count" "$(printf '%.1f' "$us")" "$(versus_tcr "$us")"
}

lisp_time='(/ (* 1e6 (- (get-internal-real-time) t0)) internal-time-units-per-second n)'

echo "Thread create + exit, us per thread (lower is better)"
row "runtime" "loop" "threads" "us/thread" "x tcr"

if [ -x "$bench" ]; then
  json=$("$bench" spawn --json --threads 2000 --rounds 5 --history-after 0 2>/dev/null)
  field() {
    printf '%.1f' "$(printf '%s' "$json" |
      sed -n "s/.*\"$1\":{[^}]*\"us_per_thread\":\([0-9.]*\).*/\1/p")"
  }
  tcr_join=$(field tcr_join)
  row "tcr $(printf '%s' "$json" | sed -n 's/.*"handle_mode":"\([a-z]*\)".*/(\1)/p')" \
    "spawn + join" "2000x5" "$tcr_join" "1.00"
  row "tcr" "spawn detached + semaphore (foo loop)" "2000x5" "$(field tcr_detach)" \
    "$(versus_tcr "$(field tcr_detach)")"
  row "pthread (glibc)" "pthread_create + pthread_join" "2000x5" "$(field pthread)" \
    "$(versus_tcr "$(field pthread)")"
  row "Boehm GC $(pkg-config --modversion bdw-gc 2>/dev/null)" "GC_pthread_create + GC_pthread_join" \
    "2000x5" "$(field gc_pthread)" "$(versus_tcr "$(field gc_pthread)")"
else
  echo "  (no $bench: build tcr first, or set TCR_BENCH)"
fi

if command -v sbcl >/dev/null; then
  v="sbcl $(sbcl --version | awk '{print $2}')"
  sbcl_run() {
    peer "$v" "$1" "$n" sbcl --noinform --non-interactive --no-sysinit --no-userinit --eval \
      "(let ((n $n) (s (sb-thread:make-semaphore)) (t0 (get-internal-real-time)))
         (declare (ignorable s))
         $2
         (format t \"~,3f~%\" $lisp_time))"
  }
  sbcl_run "make-thread + join-thread" \
    "(dotimes (i n) (sb-thread:join-thread (sb-thread:make-thread (lambda () nil))))"
  sbcl_run "make-thread signals semaphore (foo loop)" \
    "(dotimes (i n) (sb-thread:make-thread (lambda () (sb-thread:signal-semaphore s)))
                    (sb-thread:wait-on-semaphore s))"
else
  row "sbcl" "(not installed)" "" "" ""
fi

if command -v guile >/dev/null; then
  v="guile $(guile --version | head -n 1 | awk '{print $NF}')"
  peer "$v" "call-with-new-thread + join-thread" "$n" guile --no-auto-compile -c \
    "(use-modules (ice-9 threads))
     (define n $n)
     (define t0 (get-internal-real-time))
     (do ((i 0 (1+ i))) ((= i n))
       (join-thread (call-with-new-thread (lambda () #f))))
     (display (exact->inexact $lisp_time)) (newline)"
else
  row "guile" "(not installed)" "" "" ""
fi

if command -v scheme >/dev/null && echo '(exit (if (threaded?) 0 1))' | scheme -q 2>/dev/null; then
  v="chez $(scheme --version 2>&1 | head -n 1)"
  peer "$v" "fork-thread signals a condition" "$n" scheme -q <<EOF
(define n $n)
(define m (make-mutex))
(define c (make-condition))
(define done #f)
(define (now-us)
  (let ([t (current-time 'time-monotonic)])
    (+ (* 1e6 (time-second t)) (/ (time-nanosecond t) 1e3))))
(define t0 (now-us))
(let loop ([i 0])
  (when (< i n)
    (with-mutex m (set! done #f))
    (fork-thread (lambda () (with-mutex m (set! done #t) (condition-broadcast c))))
    (with-mutex m (let wait () (unless done (condition-wait c m) (wait))))
    (loop (+ i 1))))
(display (/ (- (now-us) t0) n))
(newline)
EOF
else
  row "chez" "(not installed, or not threaded)" "" "" ""
fi

if command -v ecl >/dev/null; then
  v="ecl $(ecl --version | awk '{print $2}')"
  ecl_run() {
    peer "$v" "$1" "$n_ecl" ecl --norc --eval \
      "(let ((n $n_ecl) (s (mp:make-semaphore)) (t0 (get-internal-real-time)))
         (declare (ignorable s))
         $2
         (format t \"~,3f~%\" $lisp_time))" --eval '(quit)'
  }
  ecl_run "process-run-function + process-join" \
    "(dotimes (i n) (mp:process-join (mp:process-run-function \"t\" (lambda () nil))))"
  ecl_run "process-run-function signals semaphore (foo loop)" \
    "(dotimes (i n) (mp:process-run-function \"t\" (lambda () (mp:signal-semaphore s)))
                    (mp:wait-on-semaphore s))"
else
  row "ecl" "(not installed)" "" "" ""
fi
