#!/usr/bin/env bash
# Benchmarks the analysis crate: longtail, snowshoe and botnet over synthetic sessions.
#
# Usage: bench/analysis/run.sh [sizes...]   (default: 10000 22238 100000)
# Env:   RUNS=3 (runs per point; the table shows the median wall time and the largest peak RSS)
#        ANALYSES="longtail snowshoe botnet"
#        DAYS=7 (days the synthetic start times span)
# Prints one markdown table row per (analysis, size) with whole-process wall time and peak RSS
# from /usr/bin/time -v, the analysis-only time printed by the binary, and the 1-minute load
# average read just before the first run of that row.
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(10000 22238 100000)
runs=${RUNS:-3}
analyses=${ANALYSES:-"longtail snowshoe botnet"}
days=${DAYS:-7}
cargo build --release -q -p analysis --example analysis_bench
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target/release/examples/analysis_bench"
echo "| analysis | sessions | wall (median of $runs) | analysis step | peak RSS | load avg (1 min) |"
echo "|---|---|---|---|---|---|"
for a in $analyses; do
  for n in "${sizes[@]}"; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    walls=(); steps=(); rss=0
    for _ in $(seq "$runs"); do
      out=$( { /usr/bin/time -v "$bin" "$a" "$n" "$days" >/tmp/analysis_bench.out; } 2>&1 )
      wall=$(echo "$out" | awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
      kb=$(echo "$out" | awk -F': ' '/Maximum resident set size/ {print $2}')
      step=$(sed -n 's/.*analysis_s=\([0-9.]*\).*/\1/p' /tmp/analysis_bench.out)
      walls+=("$wall"); steps+=("$step")
      [ "$kb" -gt "$rss" ] && rss=$kb
    done
    med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    printf '| %s | %s | %.2f s | %.2f s | %d MiB | %s |\n' "$a" "$n" "$(med "${walls[@]}")" "$(med "${steps[@]}")" $((rss / 1024)) "$load"
  done
done
