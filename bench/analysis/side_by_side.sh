#!/usr/bin/env bash
# Side by side: the ORIGINAL Python cowrieprocessor detectors (scikit-learn) and this project's
# `analysis` crate on the same synthetic sessions, in the same session, one after the other.
#
# Prerequisites (not done by this script):
#   1. The original's source exported to /tmp/cowrieprocessor (or $COWRIEPROCESSOR_SRC), e.g. from
#      a bare mirror of github.com/datagen24/cowrieprocessor (we measured commit 57326ead):
#        git clone --bare https://github.com/datagen24/cowrieprocessor /tmp/cp.git
#        mkdir -p /tmp/cowrieprocessor
#        git --git-dir=/tmp/cp.git archive 57326ead | tar -x -C /tmp/cowrieprocessor
#      Its code is imported at run time only; nothing of it is committed here.
#   2. A venv with what its threat_detection modules import (default ~/.cache/celeriac/orig-venv):
#        python3.11 -m venv ~/.cache/celeriac/orig-venv
#        ~/.cache/celeriac/orig-venv/bin/pip install scikit-learn==1.9.1 numpy==2.4.6 \
#          sqlalchemy psutil requests python-dateutil
#
# Usage: bench/analysis/side_by_side.sh [sizes...]   (default: 10000 22000 100000)
# Env:   ANALYSES="longtail snowshoe botnet"; DAYS=7; ORIG_TIMEOUT=300 (seconds per original run);
#        SKIP="botnet:100000" (analysis:size pairs not run for the original; its botnet loops over
#        sessions x raw events and would take about an hour at 100,000 sessions);
#        ORIG_PY (python of the venv); WORK=/tmp/side_by_side (dumped sessions and logs).
# Prints one markdown row per (analysis, size): whole-process wall time and peak RSS
# (/usr/bin/time -v) of each side, the detector-call time each side prints, the wall-time ratio,
# the 1-minute load average before and after each run, and each side's headline results.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=${COWRIEPROCESSOR_SRC:-/tmp/cowrieprocessor}
if [ ! -f "$src/cowrieprocessor/threat_detection/longtail.py" ]; then
  echo "error: the original cowrieprocessor source is missing at $src" >&2
  echo "       export it first (see the comment at the top of $0)" >&2
  exit 1
fi
py=${ORIG_PY:-$HOME/.cache/celeriac/orig-venv/bin/python}
if ! "$py" -c 'import sklearn, numpy, sqlalchemy, psutil' 2>/dev/null; then
  echo "error: $py cannot import scikit-learn/numpy/sqlalchemy/psutil; create the venv (see $0)" >&2
  exit 1
fi
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(10000 22000 100000)
analyses=${ANALYSES:-"longtail snowshoe botnet"}
days=${DAYS:-7}
tmo=${ORIG_TIMEOUT:-300}
skip=${SKIP:-"botnet:100000"}
work=${WORK:-/tmp/side_by_side}
mkdir -p "$work"
cargo build --release -q -p analysis --example analysis_bench
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target/release/examples/analysis_bench"
harness="$PWD/bench/analysis/original_side_by_side.py"

load1() { cut -d' ' -f1 /proc/loadavg; }
secs() { awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$1" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }'; }
rss_mib() { awk -F': ' '/Maximum resident set size/ {printf "%d", $2/1024}' "$1"; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" "$2"; }

echo "original: $src ($(git --git-dir="$src/.git" rev-parse --short HEAD 2>/dev/null || echo 'exported tree')), python $("$py" -c 'import sys,sklearn,numpy; print(sys.version.split()[0], "sklearn", sklearn.__version__, "numpy", numpy.__version__)')"
echo "| step | sessions | original wall | original RSS | original detector call | Rust wall | Rust RSS | Rust detector call | wall ratio | detector-call ratio | load 1-min (orig before/after, Rust before/after) | original result | Rust result |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for n in "${sizes[@]}"; do
  f="$work/sessions_$n.jsonl"
  [ -s "$f" ] || "$bin" dump "$n" "$days" >"$f"
  for a in $analyses; do
    if [[ " $skip " == *" $a:$n "* ]]; then
      printf '| %s | %s | not run (SKIP) | | | | | | | | | | |\n' "$a" "$n"
      continue
    fi
    ol="$work/orig_${a}_$n"; rl="$work/rust_${a}_$n"
    lo1=$(load1)
    set +e
    timeout "$tmo" /usr/bin/time -v "$py" "$harness" "$a" "$f" "$days" >"$ol.out" 2>"$ol.time"
    orc=$?
    set -e
    lo2=$(load1)
    lr1=$(load1)
    SESSIONS_JSONL="$f" /usr/bin/time -v "$bin" "$a" "$n" "$days" >"$rl.out" 2>"$rl.time"
    lr2=$(load1)
    rw=$(secs "$rl.time"); rr=$(rss_mib "$rl.time"); rs=$(field analysis_s "$rl.out")
    rres=$(sed 's/.*last_stage=[^ ]* //' "$rl.out")
    if [ "$orc" -ne 0 ]; then
      why="exit $orc"; [ "$orc" -eq 124 ] && why="timeout after ${tmo} s"
      printf '| %s | %s | %s | | | %.2f s | %s MiB | %s s | | | %s/%s, %s/%s | | %s |\n' \
        "$a" "$n" "$why" "$rw" "$rr" "$rs" "$lo1" "$lo2" "$lr1" "$lr2" "$rres"
      continue
    fi
    ow=$(secs "$ol.time"); orr=$(rss_mib "$ol.time"); os=$(field analysis_s "$ol.out")
    ores=$(sed 's/.*analysis_s=[^ ]* //' "$ol.out")
    ratio=$(awk -v o="$ow" -v r="$rw" 'BEGIN { if (r > 0) printf "%.0fx", o / r; else print "n/a (Rust < 10 ms)" }')
    cratio=$(awk -v o="$os" -v r="$rs" 'BEGIN { if (r > 0) printf "%.0fx", o / r; else print "n/a" }')
    printf '| %s | %s | %.2f s | %s MiB | %s s | %.2f s | %s MiB | %s s | %s | %s | %s/%s, %s/%s | %s | %s |\n' \
      "$a" "$n" "$ow" "$orr" "$os" "$rw" "$rr" "$rs" "$ratio" "$cratio" "$lo1" "$lo2" "$lr1" "$lr2" "$ores" "$rres"
  done
done
