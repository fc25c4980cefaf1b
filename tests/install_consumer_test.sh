#!/usr/bin/env bash
# Installs a built tcr into a temporary prefix and builds tests/install_consumer/main.cpp (the C++
# API, libtcr.a) and main.c (the C API, libtcr.so) against it twice each: as a CMake project
# (find_package(tcr): tcr::tcr and tcr::shared) and with plain compilers and pkg-config
# (tcr-static and tcr). Runs all four programs. Fails if anything is missing from the install, if a header that is not public
# or a test double (testing/) is in it, if a public header does not stand on its own, if it leaks a build-tree path, or if a consumer fails to configure, build or run.
# usage: install_consumer_test.sh BUILD_DIR SOURCE_DIR [CXX [EXTRA_CXXFLAGS [CC]]]
#   CXX, EXTRA_CXXFLAGS, CC: the build's compilers and its sanitizer flags (a sanitized libtcr
#   needs its runtime at link time); tests/CMakeLists.txt passes them.
set -euo pipefail

if (($# < 2)); then
  echo "usage: $0 BUILD_DIR SOURCE_DIR [CXX [EXTRA_CXXFLAGS]]" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
cxx=${3:-c++}
read -r -a extra_flags <<<"${4:-}"
cc=${5:-cc}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tcr-install-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
consumer=$src/tests/install_consumer

step() { printf '\n== %s\n' "$*"; }
die() {
  printf 'install_consumer_test: FAILED: %s\n' "$*" >&2
  exit 1
}

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix"

step "checking the installed tree"
# The public headers (cmake/public-headers.txt), each in its folder under include/tcr, and no
# other: a folder's internal headers (threads/record.h, manager_core.h, ...) stay its own.
# capi/'s header is installed at the top (include/tcr/tcr.h).
mapfile -t listed < <(grep -E '^[a-z]' "$src/cmake/public-headers.txt")
((${#listed[@]} > 0)) || die "cmake/public-headers.txt lists no header"
public=() sources=()
for rel in "${listed[@]}"; do
  sources+=("$rel")
  public+=("${rel#capi/}")
done
for i in "${!public[@]}"; do
  rel=${public[$i]}
  [[ -f $prefix/include/tcr/$rel ]] || die "header ${sources[$i]} not installed as include/tcr/$rel"
done
while IFS= read -r installed; do
  rel=${installed#"$prefix"/include/tcr/}
  printf '%s\n' "${public[@]}" | grep -qxF "$rel" ||
    die "include/tcr/$rel is installed but not in cmake/public-headers.txt"
done < <(find "$prefix/include/tcr" -type f)
# The C API's header is C: it compiles on its own as C11, pedantic, with warnings as errors.
printf '#include "tcr.h"\n#include "tcr.h"\nint main(void) { return tcr_version() == TCR_VERSION ? 0 : 1; }\n' |
  "$cc" -std=c11 -Wall -Wextra -Werror -pedantic -fsyntax-only -I"$prefix/include/tcr" -x c - ||
  die "tcr.h does not compile on its own as C11"
# What an embedder's program gets: each header compiles on its own against the installed tree,
# pulls in none of the system headers that were tcr's internals' (<setjmp.h>, <semaphore.h>,
# <deque>), and befriends no class of another folder.
gc_cflags=$(pkg-config --cflags bdw-gc 2>/dev/null || true)
for i in "${!public[@]}"; do
  rel=${public[$i]}
  header=$prefix/include/tcr/$rel
  # shellcheck disable=SC2086  # gc_cflags is a list of flags
  printf '#include "%s"\n#include "%s"\n' "$rel" "$rel" |
    "$cxx" -std=c++23 -fsyntax-only -I"$prefix/include/tcr" $gc_cflags -x c++ - ||
    die "$rel does not compile on its own against the installed headers"
  if grep -nE '^#include <(setjmp\.h|semaphore\.h|deque)>' "$header"; then
    die "$rel includes an internal system header (above)"
  fi
  folder=$(dirname "${sources[$i]}")
  while read -r friend; do
    [[ -n $friend ]] || continue
    grep -qE "^(class|struct) ([A-Z_]+\([^)]*\) )?$friend\b" "$src/$folder"/*.h ||
      die "$rel befriends $friend, which is not a class of $folder/"
  done < <(sed -nE 's/^ *friend +(class|struct) +([A-Za-z_:]+);.*/\2/p' "$header" | sed 's/.*:://')
  if grep -nE '^ *friend +[^cs(][^;]*\(' "$header"; then
    die "$rel befriends a function (above): friends are classes of the same folder"
  fi
done
# And none of the test doubles (testing/, tcr_testing): neither their headers nor their code.
for header in "$src"/testing/*.h; do
  found=$(find "$prefix" -name "$(basename "$header")" -print -quit)
  [[ -z $found ]] || die "test double ${header#"$src"/} installed as ${found#"$prefix"/}"
done
[[ ! -e $prefix/include/tcr/testing ]] || die "include/tcr/testing/ installed"
[[ -z $(find "$prefix" -name '*tcr_testing*' -print -quit) ]] || die "tcr_testing installed"
while IFS= read -r lib; do
  if nm -C --defined-only "$lib" 2>/dev/null | grep -E 'MachModel|fail_nth|clear_faults|call_count'; then
    die "$lib defines test doubles (above)"
  fi
done < <(find "$prefix" -type f -name 'libtcr.*')
config=$(find "$prefix" -path '*/cmake/tcr/tcrConfig.cmake' -print -quit)
[[ -n $config ]] || die "no lib/cmake/tcr/tcrConfig.cmake"
config_dir=$(dirname "$config")
for f in tcrConfigVersion.cmake tcrTargets.cmake; do
  [[ -f $config_dir/$f ]] || die "no $f next to tcrConfig.cmake"
done
pc=$(find "$prefix" -name tcr.pc -print -quit)
[[ -n $pc ]] || die "no lib/pkgconfig/tcr.pc"
[[ -f $(dirname "$pc")/tcr-static.pc ]] || die "no lib/pkgconfig/tcr-static.pc beside tcr.pc"
libdir=$(dirname "$(dirname "$pc")")
[[ -f $libdir/libtcr.a ]] || die "no lib/libtcr.a"
[[ -L $libdir/libtcr.so && -e $libdir/libtcr.so.0 ]] || die "no lib/libtcr.so -> libtcr.so.0"
# The installed package must stand on its own: no path into the source or build tree.
if grep -rnF -e "$src" -e "$build" "$config_dir" "$pc" "$(dirname "$pc")/tcr-static.pc"; then
  die "the installed package names a path in the source or build tree (above)"
fi
find "$prefix" -type f | sed "s|^$prefix/|  |" | sort

step "find_package(tcr): configure, build, run"
cmake -S "$consumer" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_CXX_FLAGS="${extra_flags[*]}" -DCMAKE_C_FLAGS="${extra_flags[*]}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo
found=$(sed -n 's/^tcr_DIR:PATH=//p' "$tmp/cmake-build/CMakeCache.txt")
[[ $found == "$config_dir" ]] || die "find_package(tcr) found '$found', not the one just installed"
cmake --build "$tmp/cmake-build"
timeout 120 "$tmp/cmake-build/tcr_install_consumer" || die "the find_package(tcr) consumer failed"
readelf -d "$tmp/cmake-build/tcr_install_consumer_c" | grep -q 'NEEDED.*\[libtcr\.so\.0\]' ||
  die "the find_package(tcr) C consumer does not load libtcr.so.0 (tcr::shared)"
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
  timeout 120 "$tmp/cmake-build/tcr_install_consumer_c" ||
  die "the find_package(tcr) C consumer (tcr::shared) failed"

step "pkg-config tcr-static (C++, libtcr.a) and tcr (C, libtcr.so): build, run"
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc")
for name in tcr tcr-static; do
  [[ $(pkg-config --variable=prefix $name) == "$prefix" ]] ||
    die "$name.pc has prefix $(pkg-config --variable=prefix $name), not $prefix"
done
pc_flags=$(pkg-config --cflags --libs tcr-static) || die "pkg-config --cflags --libs tcr-static failed"
echo "pkg-config --cflags --libs tcr-static: $pc_flags"
read -r -a pc_flag_array <<<"$pc_flags"
(
  set -x
  "$cxx" -std=c++23 "${extra_flags[@]}" "$consumer/main.cpp" -o "$tmp/pc-consumer" "${pc_flag_array[@]}"
)
timeout 120 "$tmp/pc-consumer" || die "the pkg-config tcr-static consumer failed"
pc_flags=$(pkg-config --cflags --libs tcr) || die "pkg-config --cflags --libs tcr failed"
echo "pkg-config --cflags --libs tcr: $pc_flags"
read -r -a pc_flag_array <<<"$pc_flags"
(
  set -x
  "$cc" -std=c11 -Wall -Wextra -Werror -pedantic "${extra_flags[@]}" "$consumer/main.c" \
    -o "$tmp/pc-consumer-c" "${pc_flag_array[@]}"
)
readelf -d "$tmp/pc-consumer-c" | grep -q 'NEEDED.*\[libtcr\.so\.0\]' ||
  die "the pkg-config tcr consumer does not load libtcr.so.0"
# libtcr.so in a prefix the loader does not search.
LD_LIBRARY_PATH=$(pkg-config --variable=libdir tcr)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
  timeout 120 "$tmp/pc-consumer-c" || die "the pkg-config tcr consumer (C, libtcr.so) failed"

echo
echo "install_consumer_test: OK (find_package and pkg-config consumers, C++ and C, built and ran)"
