#!/usr/bin/env bash
# bench/peers.sh: what one thread's create + exit costs in the runtimes tcr is for, next to tcr.
# Runs, when installed (Debian: sbcl guile-3.0 chezscheme ecl), a loop of thread lives in each:
#   sbcl   make-thread + join-thread, and the foo loop (make-thread signals a semaphore)
#   guile  call-with-new-thread + join-thread
#   chez   fork-thread signalling a condition (Chez has no join-thread): a foo loop
#   ecl    mp:process-run-function + mp:process-join, and the foo loop
# and tcr's own figures from `tcr-bench spawn --json`. A runtime that is not installed is skipped.
#
# Every runtime is measured the same way: in one process, an untimed warm-up of a tenth of the
# threads, then PEERS_ROUNDS timed rounds; the row gives the median, min and max over rounds (tcr:
# tcr-bench's own rounds, after its own warm-up). The "x tcr" column compares like with like: a
# create + join loop with tcr spawn + join, a foo loop (the thread signals, nobody joins) with tcr
# spawn detached + semaphore.
# Informational only: never part of the test suite, nothing is asserted, and a shared machine is
# noisy. Whole run about two minutes (each runtime is capped by a timeout). Exit status 1 if tcr's
# own measurement failed (its error is printed), or if a runtime that is installed failed.
#
# Usage: bench/peers.sh            (from anywhere; tcr-bench from build/bin)
# Environment: TCR_BENCH (path to tcr-bench), PEERS_THREADS (default 5000; ECL, ~30x slower per
# thread here, runs a tenth of it), PEERS_ROUNDS (default 5), PEERS_TIMEOUT (seconds per runtime,
# default 60).
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
bench=${TCR_BENCH:-$root/build/bin/tcr-bench}
n=${PEERS_THREADS:-5000}
n_ecl=$(((n + 9) / 10))
rounds=${PEERS_ROUNDS:-5}
limit=${PEERS_TIMEOUT:-60}
status=0
tcr_join="" tcr_detach=""

row() { printf '  %-24s %-50s %9s %9s %8s %8s %7s\n' "$@"; }

# ratio A B: A / B to two places, nothing if either is missing.
ratio() {
  [ -n "$1" ] && [ -n "$2" ] || return 0
  awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b }'
}

# stats: reads one number per line, prints "median min max" (one decimal each).
stats() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) exit 1
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.1f %.1f %.1f\n", m, v[1], v[NR] }'
}

# peer NAME LOOP KIND THREADS COMMAND...: runs COMMAND, which prints one us/thread figure per
# timed round, each on a line of its own. KIND: join or foo (which tcr row it is compared with).
peer() {
  local name=$1 loop=$2 kind=$3 count=$4
  shift 4
  local out figures med min max
  out=$(timeout "$limit" "$@" 2>&1)
  figures=$(printf '%s\n' "$out" | grep -Ex '[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?')
  if [ "$(printf '%s\n' "$figures" | grep -c .)" -ne "$rounds" ]; then
    row "$name" "$loop" "${count}x$rounds" "FAILED" "" "" ""
    printf '%s\n' "$out" | tail -n 3 | sed 's/^/      /'
    status=1
    return
  fi
  read -r med min max < <(printf '%s\n' "$figures" | stats)
  local base=$tcr_join
  [ "$kind" = foo ] && base=$tcr_detach
  row "$name" "$loop" "${count}x$rounds" "$med" "$min" "$max" "$(ratio "$med" "$base")"
}

# The rounds of a Lisp program: BODY runs K thread lives (with S a semaphore); the warm-up runs
# a tenth of N, then each round prints its us/thread.
lisp_rounds() {  # lisp_rounds PREFIX N BODY   (PREFIX: the package of make-semaphore)
  printf '%s' "(let ((s ($1make-semaphore)))
     (declare (ignorable s))
     (flet ((run (k) $3))
       (run (max 1 (floor $2 10)))
       (dotimes (r $rounds)
         (let ((t0 (get-internal-real-time)))
           (run $2)
           (format t \"~,3f~%\" (/ (* 1e6 (- (get-internal-real-time) t0))
                                 internal-time-units-per-second $2))))))"
}

echo "Thread create + exit, us per thread (lower is better): median, min and max over rounds"
row "runtime" "loop" "threads" "median" "min" "max" "x tcr"

if [ -x "$bench" ]; then
  err=$(mktemp)
  json=$("$bench" spawn --json --threads 2000 --rounds "$rounds" --history-after 0 \
           --fd-high-water 0 2>"$err")
  rc=$?
  if [ $rc -ne 0 ] || [ -z "$json" ]; then
    echo "  tcr-bench spawn failed (exit status $rc):"
    sed 's/^/      /' "$err"
    status=1
  else
    # field VARIANT KEY: the variant's figure, one decimal.
    field() {
      printf '%s' "$json" | sed -n "s/.*\"$1\":{[^}]*\"$2\":\([0-9.]*\).*/\1/p" |
        awk '{ printf "%.1f", $1 }'
    }
    tcr_join=$(field tcr_join us_per_thread)
    tcr_detach=$(field tcr_detach us_per_thread)
    tcr_row() {  # tcr_row NAME LOOP VARIANT BASE
      row "$1" "$2" "2000x$rounds" "$(field "$3" us_per_thread)" "$(field "$3" min)" \
        "$(field "$3" max)" "$(ratio "$(field "$3" us_per_thread)" "$4")"
    }
    mode=$(printf '%s' "$json" | sed -n 's/.*"handle_mode":"\([a-z]*\)".*/(\1)/p')
    tcr_row "tcr $mode" "spawn + join" tcr_join "$tcr_join"
    tcr_row "tcr" "spawn detached + semaphore (foo loop)" tcr_detach "$tcr_detach"
    tcr_row "pthread (glibc)" "pthread_create + pthread_join" pthread "$tcr_join"
    tcr_row "pthread (glibc)" "pthread_create detached + semaphore (foo)" pthread_detach \
      "$tcr_detach"
    tcr_row "Boehm GC $(pkg-config --modversion bdw-gc 2>/dev/null)" \
      "GC_pthread_create + GC_pthread_join" gc_pthread "$tcr_join"
  fi
  rm -f "$err"
else
  echo "  (no $bench: build tcr first, or set TCR_BENCH)"
  status=1
fi

if command -v sbcl >/dev/null; then
  v="sbcl $(sbcl --version | awk '{print $2}')"
  sbcl_run() {
    peer "$v" "$1" "$2" "$n" sbcl --noinform --non-interactive --no-sysinit --no-userinit \
      --eval "$(lisp_rounds sb-thread: "$n" "$3")"
  }
  sbcl_run "make-thread + join-thread" join \
    "(dotimes (i k) (sb-thread:join-thread (sb-thread:make-thread (lambda () nil))))"
  sbcl_run "make-thread signals semaphore (foo loop)" foo \
    "(dotimes (i k) (sb-thread:make-thread (lambda () (sb-thread:signal-semaphore s)))
                    (sb-thread:wait-on-semaphore s))"
else
  row "sbcl" "(not installed)" "" "" "" "" ""
fi

if command -v guile >/dev/null; then
  v="guile $(guile --version | head -n 1 | awk '{print $NF}')"
  peer "$v" "call-with-new-thread + join-thread" join "$n" guile --no-auto-compile -c \
    "(use-modules (ice-9 threads) (ice-9 format))
     (define (run k)
       (do ((i 0 (1+ i))) ((= i k))
         (join-thread (call-with-new-thread (lambda () #f)))))
     (run (max 1 (quotient $n 10)))
     (do ((r 0 (1+ r))) ((= r $rounds))
       (let ((t0 (get-internal-real-time)))
         (run $n)
         (format #t \"~,3f~%\" (exact->inexact (/ (* 1e6 (- (get-internal-real-time) t0))
                                                  internal-time-units-per-second $n)))))"
else
  row "guile" "(not installed)" "" "" "" "" ""
fi

if command -v scheme >/dev/null && echo '(exit (if (threaded?) 0 1))' | scheme -q 2>/dev/null; then
  v="chez $(scheme --version 2>&1 | head -n 1)"
  peer "$v" "fork-thread signals a condition (foo loop)" foo "$n" scheme -q <<EOF
(define m (make-mutex))
(define c (make-condition))
(define done #f)
(define (now-us)
  (let ([t (current-time 'time-monotonic)])
    (+ (* 1e6 (time-second t)) (/ (time-nanosecond t) 1e3))))
(define (run k)
  (let loop ([i 0])
    (when (< i k)
      (with-mutex m (set! done #f))
      (fork-thread (lambda () (with-mutex m (set! done #t) (condition-broadcast c))))
      (with-mutex m (let wait () (unless done (condition-wait c m) (wait))))
      (loop (+ i 1)))))
(run (max 1 (quotient $n 10)))
(let rounds ([r 0])
  (when (< r $rounds)
    (let ([t0 (now-us)])
      (run $n)
      (display (/ (- (now-us) t0) $n))
      (newline))
    (rounds (+ r 1))))
EOF
else
  row "chez" "(not installed, or not threaded)" "" "" "" "" ""
fi

if command -v ecl >/dev/null; then
  v="ecl $(ecl --version | awk '{print $2}')"
  ecl_run() {
    peer "$v" "$1" "$2" "$n_ecl" ecl --norc --eval "$(lisp_rounds mp: "$n_ecl" "$3")" \
      --eval '(quit)'
  }
  ecl_run "process-run-function + process-join" join \
    "(dotimes (i k) (mp:process-join (mp:process-run-function \"t\" (lambda () nil))))"
  ecl_run "process-run-function signals semaphore (foo loop)" foo \
    "(dotimes (i k) (mp:process-run-function \"t\" (lambda () (mp:signal-semaphore s)))
                    (mp:wait-on-semaphore s))"
else
  row "ecl" "(not installed)" "" "" "" "" ""
fi
exit "$status"
