#!/usr/bin/env bash
# Longtail as a Celery task through celeriac-worker, timed from a Python Celery client (release build, a private
# Redis on $BENCH_REDIS_PORT (6390), a fresh PostgreSQL database `celeriac_bench_tasks`, dropped and re-created).
# Prints JSON lines; see docs/benchmarks.md.
#
#   bench/analysis-tasks/run.sh                  # MODE=window: 30 days x 27,000 generated events (~100,000
#                                                #   sessions): cold, nothing changed, one day changed
#   MODE=real bench/analysis-tasks/run.sh        # the real Cowrie 1.x corpus (kareiva/cowrie-logs, 56 daily files,
#                                                #   102,686 events, 22,238 sessions) exported from the git mirror
#                                                #   KAREIVA_GIT (default /work/.mirror/kareiva+cowrie-logs/repo):
#                                                #   cold and nothing changed, the window of the whole corpus
#   MODE=fanout bench/analysis-tasks/run.sh      # the same generated window, cold each time, as a Celery chord of
#                                                #   longtail_day tasks + longtail_merge: one worker -c 1, then two
#                                                #   workers -c 1 (and the single longtail_analysis task for scale)
#   DAYS=7 EVENTS_PER_DAY=5000 bench/analysis-tasks/run.sh
#   REUSE_DB=1 ...                               # keep the database the previous run loaded (same MODE, DAYS and
#                                                #   EVENTS_PER_DAY) instead of loading again; the caches are emptied
#                                                #   (not after MODE=window, whose last run adds events)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
source "$ROOT/scripts/lib.sh"
cargo_env
MODE=${MODE:-window}
DAYS=${DAYS:-30}
EVENTS_PER_DAY=${EVENTS_PER_DAY:-27000}
PORT=${BENCH_REDIS_PORT:-6390}
VENV=$(bash "$ROOT/scripts/python-env.sh" | tail -1)
DBNAME=celeriac_bench_tasks
ADMIN=${CELERIAC_TEST_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB="postgres://postgres@127.0.0.1:5432/$DBNAME"
BROKER="redis://127.0.0.1:$PORT/0"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p celeriac-worker -p cowrie-loader
BIN="$CARGO_TARGET_DIR/release"
WORK=$(mktemp -d)
WPIDS=()
stop_workers() {
  for p in "${WPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${WPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  WPIDS=()
}
cleanup() {
  stop_workers
  bench_redis_stop
  rm -rf "$WORK"
}
trap cleanup EXIT
bench_redis_start "$PORT" "$WORK"
redis-cli -p "$PORT" flushdb >/dev/null
reuse=
if [ -n "${REUSE_DB:-}" ] && [ "$(psql "$DB" -tAc 'SELECT count(*) > 0 FROM raw_events' 2>/dev/null)" = t ]; then
  reuse=1   # the previous run's data, same MODE/DAYS/EVENTS_PER_DAY assumed: only the caches are emptied below
else
  psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DBNAME WITH (FORCE)" -c "CREATE DATABASE $DBNAME" >/dev/null
fi
echo "# $(date -u +%FT%TZ) mode=$MODE loadavg $(cut -d' ' -f1-3 /proc/loadavg)${reuse:+ (database reused, not loaded)}"

if [ "$MODE" = real ]; then
  SENSOR="*"   # the corpus names its sensor by container hostname: all sensors
  WINDOW_START=2018-05-01T00:00:00Z
  WINDOW_END=2018-07-05T00:00:00Z
else
  SENSOR=bench
  WINDOW_START=2024-01-01T00:00:00Z
  WINDOW_END=$(date -u -d "2024-01-01 + $DAYS day" +%FT%TZ)
fi

t0=$(date +%s.%N)
if [ -n "$reuse" ]; then
  : # the database holds what the previous run loaded
elif [ "$MODE" = real ]; then
  git_dir=${KAREIVA_GIT:-/work/.mirror/kareiva+cowrie-logs/repo}
  [ -d "$git_dir/.git" ] && git_dir=$git_dir/.git
  mkdir -p "$WORK/corpus"
  for f in $(git --git-dir="$git_dir" ls-tree --name-only HEAD | grep '^cowrie\.json\.'); do
    git --git-dir="$git_dir" show "HEAD:$f" >"$WORK/corpus/$f" 2>/dev/null || rm -f "$WORK/corpus/$f"
  done
  "$BIN/cowrie-loader" bulk --sensor real --no-progress --database-url "$DB" "$WORK"/corpus/* >"$WORK/load.json"
else
  for d in $(seq 0 $((DAYS - 1))); do
    day=$(date -u -d "2024-01-01 + $d day" +%F)
    "$BIN/cowrie-loader" generate --out "$WORK/cowrie.json.$day" --events "$EVENTS_PER_DAY" --seed "$((d + 1))" --start "${day}T00:00:00Z" >/dev/null
  done
  "$BIN/cowrie-loader" bulk --sensor "$SENSOR" --no-progress --database-url "$DB" "$WORK"/cowrie.json.* >"$WORK/load.json"
fi
t1=$(date +%s.%N)
echo "{\"bench\": \"load\", \"seconds\": $(python3 -c "print(round($t1 - $t0, 2))"), \"events\": $(psql "$DB" -tAc 'SELECT count(*) FROM raw_events'), \"sessions\": $(psql "$DB" -tAc 'SELECT count(*) FROM session_summaries')}"

start_worker() { # name concurrency
  "$BIN/celeriac-worker" -b "$BROKER" -n "$1@%h" -c "$2" --database-url "$DB" --loglevel warn >"$WORK/worker-$1.log" 2>&1 &
  WPIDS+=($!)
}
wait_workers() { # how many
  (cd "$ROOT/tests/python" && CELERY_BROKER_URL="$BROKER" CELERY_RESULT_BACKEND="$BROKER" "$VENV/bin/python" - "$1" <<'PY'
import sys, time
from pytasks import app
n = int(sys.argv[1])
for _ in range(200):
    r = app.control.ping(timeout=0.5) or []
    if len(r) >= n:
        sys.exit(0)
    time.sleep(0.1)
sys.exit("workers did not answer")
PY
  )
}
drop_caches() {
  psql "$DB" -qc "DELETE FROM longtail_day_cache" -c "DELETE FROM longtail_window_cache" >/dev/null
}
[ -z "$reuse" ] || drop_caches
# how: task (one longtail_analysis) or chord (longtail_day per day, then longtail_merge)
run() { # label how
  (cd "$ROOT/tests/python" && CELERY_BROKER_URL="$BROKER" CELERY_RESULT_BACKEND="$BROKER" "$VENV/bin/python" - "$1" "$2" "$SENSOR" "$WINDOW_START" "$WINDOW_END" <<'PY'
import json, sys, time, datetime
from celery import chord
from pytasks import app
label, how, sensor, start, end = sys.argv[1:6]
window = {"start": start, "end": end}
t = time.perf_counter()
if how == "chord":
    d0 = datetime.date.fromisoformat(start[:10]); d1 = datetime.date.fromisoformat(end[:10])
    days = [(d0 + datetime.timedelta(days=i)).isoformat() for i in range((d1 - d0).days)]
    header = [app.signature('cowrieprocessor.workers.longtail_day', args=(sensor, d)) for d in days]
    body = app.signature('cowrieprocessor.workers.longtail_merge', args=(sensor, window))
    r = chord(header)(body).get(timeout=3600)
else:
    r = app.send_task('cowrieprocessor.workers.longtail_analysis', args=(sensor, window)).get(timeout=3600)
dt = time.perf_counter() - t
print(json.dumps({'bench': 'longtail_task', 'run': label, 'how': how, 'seconds': round(dt, 3),
                  'sessions': r['total_sessions_analyzed'], 'rare_commands': r['rare_command_count'],
                  'anomalous': r['anomalous_sequence_count'], 'outliers': r['outlier_session_count'],
                  'result_bytes': len(json.dumps(r)), 'incremental': r['incremental'],
                  'worker_peak_rss_mib': round(r.get('memory_usage_mb') or 0, 1),
                  'loadavg': open('/proc/loadavg').read().split()[:3]}))
PY
  )
}

case "$MODE" in
  real)
    start_worker bench-tasks 2
    wait_workers 1
    run cold task
    run unchanged task
    ;;
  window)
    start_worker bench-tasks 2
    wait_workers 1
    run cold task
    run unchanged task
    # One more day of logs arrives for the last day of the window (appended to that day's sessions).
    last=$(date -u -d "2024-01-01 + $((DAYS - 1)) day" +%F)
    "$BIN/cowrie-loader" generate --out "$WORK/cowrie.json.extra" --events 2000 --seed 999 --start "${last}T12:00:00Z" >/dev/null
    "$BIN/cowrie-loader" bulk --sensor "$SENSOR" --no-progress --database-url "$DB" "$WORK/cowrie.json.extra" >/dev/null
    run one-day-changed task
    ;;
  fanout)
    start_worker one 1
    wait_workers 1
    run cold-task-1-worker-c1 task
    drop_caches
    run cold-chord-1-worker-c1 chord
    drop_caches
    start_worker two 1
    wait_workers 2
    run cold-chord-2-workers-c1 chord
    drop_caches
    ;;
  *) echo "unknown MODE $MODE" >&2; exit 2 ;;
esac
echo "# end $(date -u +%FT%TZ) loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
