#!/usr/bin/env bash
# The README's examples work: every fenced code block whose first line names it
# ("/* README example: NAME.c */", ";; README example: NAME.scm", ";; README example: NAME.lsp")
# is extracted and run against this build: C is compiled as C11 (-Wall -Wextra -Werror -pedantic)
# against tcr.h and linked with the build's libtcr.so; Scheme is run by guile with the build's
# (tcr threads); Lisp by ecl with the build's module. Fails if an example fails, or if none is found.
# usage: readme_examples_test.sh README BUILD_DIR SOURCE_DIR CC [EXTRA_FLAGS]
#   Scheme and Lisp examples need GUILE_LOAD_PATH / GUILE_EXTENSIONS_PATH and TCR_ECL_MODULE set
#   by the caller (tests/CMakeLists.txt); without them those examples are reported and skipped.
set -euo pipefail
readme=$1 build=$2 src=$3 cc=$4
read -r -a extra_flags <<<"${5:-}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tcr-readme.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Split the README into $tmp/NAME for each named block.
awk -v dir="$tmp" '
  /^```/ { if (in_block) { in_block = 0; if (out != "") close(out); out = ""; next }
           in_block = 1; first = 1; next }
  in_block && first { first = 0
    if (match($0, /README example: [A-Za-z0-9_.-]+/)) {
      name = substr($0, RSTART + 16, RLENGTH - 16); out = dir "/" name; print > out; next }
    out = "" }
  in_block && out != "" { print >> out }
' "$readme"

mapfile -t examples < <(cd "$tmp" && ls)
((${#examples[@]} > 0)) || { echo "readme_examples_test: no named example in $readme"; exit 1; }
status=0 ran=0
for name in "${examples[@]}"; do
  file=$tmp/$name
  echo "== $name"
  case $name in
    *.c)
      "$cc" -std=c11 -Wall -Wextra -Werror -pedantic "${extra_flags[@]}" -I"$src/capi" -I"$src" \
        "$file" -o "$tmp/${name%.c}" -L"$build/lib" -ltcr -Wl,-rpath,"$build/lib" || { status=1; continue; }
      timeout 120 "$tmp/${name%.c}" || { echo "readme_examples_test: $name failed"; status=1; }
      ;;
    *.scm)
      if [[ -z ${GUILE_EXTENSIONS_PATH:-} ]]; then echo "(skipped: no (tcr threads) in this build)"; continue; fi
      timeout 120 guile --no-auto-compile "$file" || { echo "readme_examples_test: $name failed"; status=1; }
      ;;
    *.lsp)
      if [[ -z ${TCR_ECL_MODULE:-} ]]; then echo "(skipped: no ECL module in this build)"; continue; fi
      timeout 120 ecl --norc --shell "$file" || { echo "readme_examples_test: $name failed"; status=1; }
      ;;
    *) echo "readme_examples_test: $name: unknown kind"; status=1; continue ;;
  esac
  ran=$((ran + 1))
done
((status == 0)) && echo "readme_examples_test: OK ($ran of ${#examples[@]} examples ran)"
exit "$status"
