#!/usr/bin/env bash
# Longtail as a Celery task over a 30-day window: cold run, incremental re-run (nothing changed), and a re-run
# after one more day of logs arrived. Release build, a private Redis on $BENCH_REDIS_PORT (6390) and a fresh
# PostgreSQL database `celeriac_bench_tasks` (dropped and re-created). Prints JSON lines; see docs/benchmarks.md.
#   bench/analysis-tasks/run.sh            # 30 days x ~27,000 events (~100,000 sessions)
#   DAYS=7 EVENTS_PER_DAY=5000 bench/analysis-tasks/run.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
source "$ROOT/scripts/lib.sh"
cargo_env
DAYS=${DAYS:-30}
EVENTS_PER_DAY=${EVENTS_PER_DAY:-27000}
PORT=${BENCH_REDIS_PORT:-6390}
VENV=$(bash "$ROOT/scripts/python-env.sh" | tail -1)
DBNAME=celeriac_bench_tasks
ADMIN=${CELERIAC_TEST_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB="postgres://postgres@127.0.0.1:5432/$DBNAME"
BROKER="redis://127.0.0.1:$PORT/0"
cargo build --release -q -p celeriac-worker -p cowrie-loader
BIN="$CARGO_TARGET_DIR/release"
WORK=$(mktemp -d)
cleanup() {
  [ -n "${WPID:-}" ] && kill "$WPID" 2>/dev/null || true
  bench_redis_stop
  rm -rf "$WORK"
}
trap cleanup EXIT
bench_redis_start "$PORT" "$WORK"
redis-cli -p "$PORT" flushdb >/dev/null
psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DBNAME" -c "CREATE DATABASE $DBNAME" >/dev/null
echo "# $(date -u +%FT%TZ) days=$DAYS events/day=$EVENTS_PER_DAY loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s.%N)
for d in $(seq 0 $((DAYS - 1))); do
  day=$(date -u -d "2024-01-01 + $d day" +%F)
  "$BIN/cowrie-loader" generate --out "$WORK/cowrie.json.$day" --events "$EVENTS_PER_DAY" --seed "$((d + 1))" --start "${day}T00:00:00Z" >/dev/null
done
"$BIN/cowrie-loader" bulk --sensor bench --no-progress --database-url "$DB" "$WORK"/cowrie.json.* >"$WORK/load.json"
t1=$(date +%s.%N)
python3 -c "import json,sys; s=json.load(open('$WORK/load.json')); print(json.dumps({'bench': 'load', 'events': s.get('events_inserted', s.get('inserted')), 'seconds': round($t1 - $t0, 2)}))" 2>/dev/null || tail -1 "$WORK/load.json"
"$BIN/celeriac-worker" -b "$BROKER" -n bench-tasks@%h -c 2 --database-url "$DB" --loglevel warn >"$WORK/worker.log" 2>&1 &
WPID=$!
sleep 1
run() {
  (cd "$ROOT/tests/python" && CELERY_BROKER_URL="$BROKER" CELERY_RESULT_BACKEND="$BROKER" "$VENV/bin/python" - "$1" "$DAYS" <<'PY'
import json, sys, time
from pytasks import app
label, days = sys.argv[1], int(sys.argv[2])
window = {"start": "2024-01-01T00:00:00Z", "end": "2024-01-%02dT00:00:00Z" % (days + 1) if days < 31 else "2024-02-01T00:00:00Z"}
t = time.perf_counter()
r = app.send_task('cowrieprocessor.workers.longtail_analysis', args=('bench', window)).get(timeout=3600)
dt = time.perf_counter() - t
print(json.dumps({'bench': 'longtail_task', 'run': label, 'seconds': round(dt, 3), 'sessions': r['total_sessions_analyzed'],
                  'rare_commands': r['rare_command_count'], 'outliers': r['outlier_session_count'], 'incremental': r['incremental'],
                  'worker_peak_rss_mib': round(r['memory_usage_mb'], 1), 'loadavg': open('/proc/loadavg').read().split()[:3]}))
PY
  )
}
run cold
run unchanged
# One more day of logs arrives for the last day of the window (appended to that day's sessions).
last=$(date -u -d "2024-01-01 + $((DAYS - 1)) day" +%F)
"$BIN/cowrie-loader" generate --out "$WORK/cowrie.json.extra" --events 2000 --seed 999 --start "${last}T12:00:00Z" >/dev/null
"$BIN/cowrie-loader" bulk --sensor bench --no-progress --database-url "$DB" "$WORK/cowrie.json.extra" >/dev/null
run one-day-changed
echo "# end $(date -u +%FT%TZ) loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
