#!/usr/bin/env bash
# Wire-core benchmark: celeriac-worker and Python Celery 5.7 side by side, same machine, same private Redis,
# same messages, beside Redis's own limit for the same drain (`celeriac-bench redis-limit`: the worker's delivery
# path with no task work). Appends JSON lines to bench/wire-core/results/*.jsonl.
#   bench/wire-core/run.sh            # N=20000, 3 runs each
#   N=5000 RUNS=1 bench/wire-core/run.sh
#   BASELINE_REF=216e13a bench/wire-core/run.sh   # also run celeriac-worker built from that commit (kind rust-baseline)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
source "$ROOT/scripts/lib.sh"
cargo_env
N=${N:-20000}
RUNS=${RUNS:-3}
PORT=${BENCH_REDIS_PORT:-6390}
export BENCH_REDIS_PORT=$PORT
VENV=$(bash "$ROOT/scripts/python-env.sh" | tail -1)
export CELERIAC_VENV=$VENV
PY="$VENV/bin/python"
"$PY" -c 'import redis' 2>/dev/null || "$VENV/bin/pip" install -q redis
log "building release binaries (celeriac-worker, celeriac-bench)"
cargo build --release -q -p celeriac-worker -p celeriac-bench
export CELERIAC_BIN="$CARGO_TARGET_DIR/release"
KINDS="rust python-solo"
if [ -n "${BASELINE_REF:-}" ]; then
  # The worker of an earlier commit, built in its own worktree and target directory, run in the same loops.
  wt="$HOME/.cache/celeriac/baseline-$BASELINE_REF"
  [ -d "$wt" ] || git -C "$ROOT" worktree add --detach -f "$wt" "$BASELINE_REF" >/dev/null
  log "building the baseline celeriac-worker at $BASELINE_REF"
  (cd "$wt" && CARGO_TARGET_DIR="$HOME/.cache/celeriac-baseline-target" cargo build --release -q -p celeriac-worker)
  export BASELINE_BIN="$HOME/.cache/celeriac-baseline-target/release"
  KINDS="rust rust-baseline python-solo"
fi
mkdir -p "$HERE/results"
bench_redis_start "$PORT" "$HERE/results"
trap bench_redis_stop EXIT
echo "# $(date -u +%FT%TZ) N=$N RUNS=$RUNS loadavg $(cut -d' ' -f1-3 /proc/loadavg) $(nproc) cores" | tee -a "$HERE/results/log.txt"
for kind in $KINDS; do
  "$PY" "$HERE/idle_mem.py" "$kind" | tee -a "$HERE/results/idle_mem.jsonl"
done
# redis-limit: Redis's own limit for the same drain (the worker's delivery path, no task work), in the same loops.
for _ in $(seq "$RUNS"); do
  for mode in noresult result; do
    for kind in $KINDS redis-limit; do
      "$PY" "$HERE/drain.py" "$kind" "$mode" "$N" | tee -a "$HERE/results/drain.jsonl"
    done
  done
done
for kind in $KINDS; do
  "$PY" "$HERE/latency.py" "$kind" rust 1000 | tee -a "$HERE/results/latency.jsonl"
done
"$PY" "$HERE/latency.py" python-solo python 1000 | tee -a "$HERE/results/latency.jsonl"
echo "# end $(date -u +%FT%TZ) loadavg $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$HERE/results/log.txt"
