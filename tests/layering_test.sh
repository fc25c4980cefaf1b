#!/usr/bin/env bash
# Checks the layering of the source tree (DESIGN.md, STYLE.md):
#  - runtime/ includes neither threads/ nor exceptions/ (it is what they stand on);
#  - nothing in runtime/, threads/ or exceptions/ includes testing/: the test doubles (tcr_testing)
#    stand on the library, which must not need them (the install does not ship them);
#  - nothing in runtime/, threads/ or exceptions/ includes capi/: the C API stands on the C++ one;
#  - exceptions/ includes only threads/'s public headers (THREADS_FOR_EXCEPTIONS below), no internals;
#  - threads/ includes no exceptions/ internals: only the headers named in EXCEPTIONS_PUBLIC below
#    (none: exceptions/ stands on threads/, through threads/thread_extensions.h, whose
#    count_trap and escape_stack_overflow are all it needs of a thread's record);
#  - invariant 5: no conditional compilation at all (#if, #ifdef, #ifndef, #elif...) outside
#    backend files (*_linux.cpp, *_darwin.cpp) in runtime/, threads/, exceptions/: not only OS
#    macros, since a platform hides as well behind a signal (#ifdef SIGPWR) or an architecture
#    (#if defined(__x86_64__)). Headers use #pragma once, so no include guard needs an exception.
# Prints every offending line as file:line: text and exits 1 if there is any.
# usage: layering_test.sh [SOURCE_DIR]   (default: the repository this script is in)
#        layering_test.sh --self-test     (the check fails on a tree that breaks each rule)
set -euo pipefail

if [[ ${1:-} == --self-test ]]; then
  # Each case is a one-file tree that breaks one rule; the check must refuse every one of them.
  self=$(readlink -f "${BASH_SOURCE[0]}")
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cases=('runtime/a.cpp|#include "threads/tcr.h"'
         'threads/a.cpp|#include "exceptions/listener.h"'
         'threads/a.cpp|#if defined(__linux__)'
         'runtime/a.cpp|#ifdef SIGPWR'
         'exceptions/a.cpp|#if defined(__x86_64__) || defined(__i386__)'
         'exceptions/a.h|  #  ifndef FOO'
         'exceptions/a.cpp|#include "threads/tid_index.h"'
         'exceptions/a.h|#include "../threads/manager_core.h"'
         'exceptions/a.cpp|#include "threads/record.h"'
         'threads/a.h|#if defined(__clang__)'
         'runtime/thread_annotations.h|#if defined(__linux__)'
         'threads/a.cpp|#include "testing/mach_model.h"'
         'exceptions/a.h|#include "../testing/fault_injection.h"'
         'runtime/a.cpp|#include <testing/fault_injection.h>'
         'threads/a.cpp|#include "capi/internal.h"')
  failed=0
  for c in "${cases[@]}"; do
    file=${c%%|*} line=${c#*|}
    rm -rf "${tmp:?}"/*
    mkdir -p "$tmp/$(dirname "$file")"
    printf '%s\n' "$line" >"$tmp/$file"
    if bash "$self" "$tmp" >/dev/null; then
      echo "layering self-test: accepted $file: $line"
      failed=1
    fi
  done
  # And a backend file may branch on its architecture, and testing/ may stand on runtime/.
  accepted=('runtime/a_linux.cpp|#if defined(__x86_64__)'
            'testing/a.cpp|#include "runtime/os.h"')
  for c in "${accepted[@]}"; do
    file=${c%%|*} line=${c#*|}
    rm -rf "${tmp:?}"/*
    mkdir -p "$tmp/$(dirname "$file")"
    printf '%s\n' "$line" >"$tmp/$file"
    if ! bash "$self" "$tmp" >/dev/null; then
      echo "layering self-test: refused $file: $line"
      failed=1
    fi
  done
  ((failed == 0)) &&
    echo "layering self-test: OK (${#cases[@]} broken trees refused, ${#accepted[@]} sound ones accepted)"
  exit "$failed"
fi

src=${1:-$(dirname "${BASH_SOURCE[0]}")/..}
# The lists come from this script's own tree (the self-test checks one-file trees with its rules).
lists=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$src"

# exceptions/ headers that threads/ may include, as "exceptions/name.h", space-separated.
EXCEPTIONS_PUBLIC=""

status=0
report() {  # report TITLE LINES
  if [[ -n $2 ]]; then
    printf 'layering: %s\n%s\n\n' "$1" "$2"
    status=1
  fi
}

sources() {  # C/C++ files under the given folders (missing folders are skipped)
  local dirs=()
  for d in "$@"; do [[ -d $d ]] && dirs+=("$d"); done
  ((${#dirs[@]})) || return 0
  find "${dirs[@]}" -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' -o -name '*.cc' \
    -o -name '*.c' -o -name '*.inc' -o -name '*.ipp' \) | LC_ALL=C sort
}

# grep_lines PATTERN FILE... : "file:line: text" for each matching line; nothing if no file matches.
grep_lines() {
  local pattern=$1
  shift
  (($#)) || return 0
  grep -nHE "$pattern" "$@" || true
}

include_of() {  # an #include of "<layer>/..." (also <...> and ../<layer>/...)
  printf '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](\\.\\./)*(%s)/' "$1"
}

mapfile -t runtime_files < <(sources runtime)
report "runtime/ must not include threads/ or exceptions/:" \
  "$(grep_lines "$(include_of 'threads|exceptions')" "${runtime_files[@]}")"

# The library does not include its test doubles: testing/ stands on it, not it on testing/.
mapfile -t library_files < <(sources runtime threads exceptions)
report "runtime/, threads/ and exceptions/ must not include testing/ (tcr_testing, not installed):" \
  "$(grep_lines "$(include_of 'testing')" "${library_files[@]}")"

# The C API (capi/) is a layer over the C++ API: the core never calls back up into it.
report "runtime/, threads/ and exceptions/ must not include capi/ (the C API stands on them):" \
  "$(grep_lines "$(include_of 'capi')" "${library_files[@]}")"

# only_public FROM TO LIST_NAME: FROM/ may include of TO/ only the headers in the variable LIST_NAME.
only_public() {
  local from=$1 to=$2 list=$3 hits line header bad=""
  local -a files
  mapfile -t files < <(sources "$from")
  hits=$(grep_lines "$(include_of "$to")" "${files[@]}")
  [[ -n $hits ]] || return 0
  while IFS= read -r line; do
    header=$(sed -E "s|.*[<\"](\\.\\./)*($to/[^\">]*)[\">].*|\\2|" <<<"$line")
    [[ " ${!list} " == *" $header "* ]] || bad+="$line"$'\n'
  done <<<"$hits"
  report "$from/ must not include $to/ internals (public ones are listed in $list in $0):" \
    "${bad%$'\n'}"
}

# exceptions/ stands on threads/ through its public headers only, the ones tcr installs
# (cmake/public-headers.txt): the API and the extension interface. threads/ internals
# (record.h, manager_core.h, internal.h, tid_index.h, current.h, fork.h, thread_stack.h: anything
# not listed) are threads/'s own.
THREADS_FOR_EXCEPTIONS=$(grep -E '^threads/' "$lists/cmake/public-headers.txt" | tr '\n' ' ')
mapfile -t threads_files < <(sources threads)
mapfile -t exceptions_files < <(sources exceptions)
only_public threads exceptions EXCEPTIONS_PUBLIC
only_public exceptions threads THREADS_FOR_EXCEPTIONS

mapfile -t core_files < <(sources runtime threads exceptions | grep -vE '_(linux|darwin)\.cpp$' || true)
# One exception, on the compiler rather than the platform: runtime/thread_annotations.h spells
# clang's thread-safety attributes, and to GCC they are nothing. Exactly that one line of it.
COMPILER_SELECT='^runtime/thread_annotations\.h:[0-9]+:#if defined\(__clang__\)$'
report "conditional compilation outside a backend file (*_linux.cpp, *_darwin.cpp); invariant 5:" \
  "$(grep_lines '^[[:space:]]*#[[:space:]]*(if|ifdef|ifndef|elif|elifdef|elifndef)\b' "${core_files[@]}" |
     grep -vE "$COMPILER_SELECT" || true)"

if ((status == 0)); then
  echo "layering: OK (${#runtime_files[@]} runtime/, ${#threads_files[@]} threads/, ${#exceptions_files[@]} exceptions/, ${#core_files[@]} core files checked)"
fi
exit "$status"
