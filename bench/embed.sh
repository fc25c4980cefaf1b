#!/usr/bin/env bash
# tcr under the runtimes it is proven with, against each runtime's own threads, in one command:
# Guile's call-with-new-thread + join-thread beside (tcr threads)'s (bench/guile_embed.scm), and
# ECL's mp:process-run-function + mp:process-join beside tcr-ecl's (bench/ecl_embed.lsp). Each
# runs both variants interleaved in rounds in one process and prints a markdown table (median,
# min, max µs per thread, ratio to the runtime's own). A runtime whose module this build lacks is
# reported, not skipped silently; the exit status is non-zero if a benchmark failed.
# usage: bench/embed.sh [BUILD_DIR [ROUNDS [GUILE_THREADS [ECL_THREADS]]]]   (build 7 2000 1000)
set -uo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
rounds=${2:-7} guile_threads=${3:-2000} ecl_threads=${4:-1000}
status=0

echo "## Guile $(guile -c '(display (version))' 2>/dev/null || echo '(not installed)')"
if [[ -f $build/guile/guile-tcr.so ]] && command -v guile >/dev/null; then
  GUILE_LOAD_PATH=$src/guile GUILE_LOAD_COMPILED_PATH=$build/guile \
    GUILE_EXTENSIONS_PATH=$build/guile GUILE_AUTO_COMPILE=0 \
    guile --no-auto-compile "$src/bench/guile_embed.scm" "$rounds" "$guile_threads" || status=1
else
  echo "not measured: no guile, or no (tcr threads) in $build (apt-get install guile-3.0-dev, rebuild)"
  status=1
fi
echo
echo "## ECL $(ecl --version 2>/dev/null | head -1 || echo '(not installed)')"
module=$build/lib/tcr/ecl/tcr-ecl.fas
if [[ -f $module ]] && command -v ecl >/dev/null; then
  ecl --norc --shell "$src/bench/ecl_embed.lsp" "$module" "$rounds" "$ecl_threads" || status=1
else
  echo "not measured: no ecl, or no tcr-ecl.fas in $build (apt-get install ecl, rebuild)"
  status=1
fi
exit "$status"
