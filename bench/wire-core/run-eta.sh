#!/usr/bin/env bash
# ETA tasks held in memory (issue 15's bound): celeriac-worker with its default --eta-hold-max, without a bound,
# and Python Celery solo, each given N tasks a day ahead on a private Redis; RSS, how many it holds, warm shutdown.
#   bench/wire-core/run-eta.sh          # N=50000
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
source "$ROOT/scripts/lib.sh"
cargo_env
N=${N:-50000}
PORT=${BENCH_REDIS_PORT:-6390}
export BENCH_REDIS_PORT=$PORT
VENV=$(bash "$ROOT/scripts/python-env.sh" | tail -1)
export CELERIAC_VENV=$VENV
PY="$VENV/bin/python"
"$PY" -c 'import redis' 2>/dev/null || "$VENV/bin/pip" install -q redis
cargo build --release -q -p celeriac-worker -p celeriac-bench
export CELERIAC_BIN="$CARGO_TARGET_DIR/release"
mkdir -p "$HERE/results"
bench_redis_start "$PORT" "$HERE/results"
trap bench_redis_stop EXIT
echo "# eta $(date -u +%FT%TZ) N=$N loadavg $(cut -d' ' -f1-3 /proc/loadavg) $(nproc) cores" | tee -a "$HERE/results/log.txt"
for kind in rust rust-unbounded python-solo; do
  "$PY" "$HERE/eta_hold.py" "$kind" "$N" | tee -a "$HERE/results/eta-hold.jsonl"
done
