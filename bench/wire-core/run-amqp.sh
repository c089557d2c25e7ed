#!/usr/bin/env bash
# Wire-core benchmark on RabbitMQ (issue 12): celeriac-worker beside Python Celery 5.7 (solo and prefork) and a bare
# lapin consumer (RabbitMQ's own limit), same machine, same RabbitMQ (vhost celeriac_bench, made afresh each run),
# same messages; results in a private Redis. Appends JSON lines to bench/wire-core/results/*-amqp.jsonl.
#   bench/wire-core/run-amqp.sh            # N=20000, 3 runs each
#   N=5000 RUNS=1 bench/wire-core/run-amqp.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
source "$ROOT/scripts/lib.sh"
cargo_env
N=${N:-20000}
RUNS=${RUNS:-3}
PORT=${BENCH_REDIS_PORT:-6390}
export BENCH_REDIS_PORT=$PORT
ensure_services
VENV=$(bash "$ROOT/scripts/python-env.sh" | tail -1)
export CELERIAC_VENV=$VENV
PY="$VENV/bin/python"
"$PY" -c 'import redis' 2>/dev/null || "$VENV/bin/pip" install -q redis
log "building release binaries (celeriac-worker, celeriac-bench)"
cargo build --release -q -p celeriac-worker -p celeriac-bench
export CELERIAC_BIN="$CARGO_TARGET_DIR/release"
mkdir -p "$HERE/results"
bench_redis_start "$PORT" "$HERE/results"
trap 'bench_redis_stop; rabbitmqctl delete_vhost celeriac_bench >/dev/null 2>&1 || true' EXIT
echo "# amqp $(date -u +%FT%TZ) N=$N RUNS=$RUNS loadavg $(cut -d' ' -f1-3 /proc/loadavg) $(nproc) cores" | tee -a "$HERE/results/log.txt"
for _ in $(seq "$RUNS"); do
  for mode in noresult result; do
    for kind in bare rust python-solo python-prefork; do
      [ "$kind" = bare ] && [ "$mode" = result ] && continue
      "$PY" "$HERE/drain_amqp.py" "$kind" "$mode" "$N" | tee -a "$HERE/results/drain-amqp.jsonl"
    done
  done
done
"$PY" "$HERE/latency_amqp.py" rust rust 1000 | tee -a "$HERE/results/latency-amqp.jsonl"
"$PY" "$HERE/latency_amqp.py" python-solo python 1000 | tee -a "$HERE/results/latency-amqp.jsonl"
echo "# amqp end $(date -u +%FT%TZ) loadavg $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$HERE/results/log.txt"
