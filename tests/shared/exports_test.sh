#!/usr/bin/env bash
# libtcr.so exports exactly the functions capi/tcr.h declares with TCR_API, each under the
# version node TCR_<major>, and nothing else (no C++ symbol of the static library, none of
# spdlog's or Boehm's inline code); its SONAME is libtcr.so.<major>.
# usage: exports_test.sh LIBTCR_SO TCR_H MAJOR
set -euo pipefail
so=$1 header=$2 major=$3
status=0
declared=$(grep -oE 'TCR_API [^(;]*\btcr_[a-z0-9_]+\(' "$header" | grep -oE 'tcr_[a-z0-9_]+\($' |
           tr -d '(' | LC_ALL=C sort -u)
exported=$(nm -D --defined-only "$so" | awk '{print $3}' | LC_ALL=C sort -u)
expected=$(sed "s/\$/@@TCR_$major/" <<<"$declared"; echo "TCR_$major")
expected=$(LC_ALL=C sort -u <<<"$expected")
if [[ $exported != "$expected" ]]; then
  echo "exports_test: libtcr.so's exports differ from tcr.h's TCR_API functions (< tcr.h, > libtcr.so):"
  diff <(echo "$expected") <(echo "$exported") || true
  status=1
fi
soname=$(readelf -d "$so" | sed -nE 's/.*\(SONAME\).*\[(.*)\].*/\1/p')
if [[ $soname != "libtcr.so.$major" ]]; then
  echo "exports_test: SONAME is '$soname', not libtcr.so.$major"
  status=1
fi
if ((status == 0)); then
  echo "exports_test: OK ($(wc -l <<<"$declared") functions, SONAME $soname)"
fi
exit "$status"
