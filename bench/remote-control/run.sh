#!/usr/bin/env bash
# Remote-control and events benchmark: `inspect ping` latency with 1, 10 and 50 Rust workers and one Python
# worker on one private Redis, and task throughput of one worker (concurrency 2) with task events off and on,
# Rust beside Python. Appends JSON lines to bench/remote-control/results/*.jsonl and prints them.
#   bench/remote-control/run.sh              # N=5000 tasks per events run, 50 ping rounds
#   N=2000 ROUNDS=20 bench/remote-control/run.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
source "$ROOT/scripts/lib.sh"
cargo_env
N=${N:-5000}
ROUNDS=${ROUNDS:-50}
PORT=${BENCH_REDIS_PORT:-6391}
VENV=$(bash "$ROOT/scripts/python-env.sh" | tail -1)
export CELERIAC_PYTHON="$VENV/bin/python"
log "building release binaries (celeriac-worker, celeriac-bench-rc)"
cargo build --release -q -p celeriac-worker -p celeriac-bench-rc
export CELERIAC_BIN="$CARGO_TARGET_DIR/release"
mkdir -p "$HERE/results"
bench_redis_start "$PORT" "$HERE/results"
trap bench_redis_stop EXIT
B="redis://127.0.0.1:$PORT/0"
BENCH=("$CELERIAC_BIN/celeriac-bench-rc" -b "$B" --pytasks "$ROOT/tests/python")
echo "# $(date -u +%FT%TZ) N=$N ROUNDS=$ROUNDS loadavg $(cut -d' ' -f1-3 /proc/loadavg) $(nproc) cores" | tee -a "$HERE/results/log.txt"
for w in 1 10 50; do
  "${BENCH[@]}" ping --workers "$w" --rounds "$ROUNDS" | tee -a "$HERE/results/ping.jsonl"
done
"${BENCH[@]}" ping --python --rounds "$ROUNDS" | tee -a "$HERE/results/ping.jsonl"
for kind in rust python; do
  for ev in off on; do
    flag=()
    [ "$ev" = on ] && flag=(-E)
    "${BENCH[@]}" events --kind "$kind" --n "$N" ${flag[@]+"${flag[@]}"} | tee -a "$HERE/results/events.jsonl"
  done
done
