#!/usr/bin/env bash
# Regenerate the reference outputs of the extra HipFT cases by running an existing HipFT build.
#
#   HIPFT_EXE=/path/to/hipft tests/data/hipft-extra/make_references.sh [case ...]
#
# HIPFT_EXE names a HipFT executable built elsewhere (this repository holds no HipFT code and
# no recipe to build it). Each case's input/ folder is copied to a scratch folder, HipFT runs
# there on one thread (the glibc settings of the suite README keep its large temporaries off
# mmap), and its history files -- plus, where the case asks for them, its map and flow
# output files and their lists -- are copied to <case>/reference/. Inputs come from
# make_inputs.py. Without arguments every case folder is done.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${HIPFT_EXE:?set HIPFT_EXE to a HipFT executable}"
exe="$(command -v "$HIPFT_EXE" || true)"
[[ -x "$exe" ]] || { echo "HIPFT_EXE=$HIPFT_EXE is not an executable" >&2; exit 2; }
cases=("$@")
if [[ ${#cases[@]} -eq 0 ]]; then
  for d in "$here"/*/input; do cases+=("$(basename "$(dirname "$d")")"); done
fi
for case in "${cases[@]}"; do
  src="$here/$case/input"
  [[ -f "$src/hipft.in" ]] || { echo "$case: no $src/hipft.in" >&2; exit 2; }
  work="$(mktemp -d)"
  cp -r "$src/." "$work/"
  echo "== $case"
  if ! (cd "$work" && OMP_NUM_THREADS=1 \
        GLIBC_TUNABLES=glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=268435456 \
        "$exe" hipft.in > hipft.log 2>&1); then
    tail -20 "$work/hipft.log" >&2
    echo "$case: HipFT failed (scratch folder kept: $work)" >&2
    exit 1
  fi
  ref="$here/$case/reference"
  rm -rf "$ref"
  mkdir -p "$ref"
  cp "$work"/hipft_history_*.out "$ref/"
  for extra in hipft_output_map_list.out hipft_output_flow_list.out; do
    [[ -f "$work/$extra" ]] && cp "$work/$extra" "$ref/"
  done
  # map and flow output folders named in the namelist (only cases that write them)
  for key in output_map_directory output_flows_directory; do
    dir="$(sed -n "s/^ *$key *= *'\([^']*\)'.*/\1/p" "$src/hipft.in")"
    if [[ -n "$dir" && -d "$work/$dir" ]]; then
      cp -r "$work/$dir" "$ref/"
    fi
  done
  grep -E "Wall clock time" "$work/hipft.log" || true
  rm -rf "$work"
done
