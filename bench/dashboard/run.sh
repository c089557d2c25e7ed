#!/usr/bin/env bash
# The operators' dashboard (issue 11) in headless Chromium beside Flower 2.2's workers page, on one cluster:
# transferred bytes and the time until the overview's numbers are shown, cold and warm, on the >= 1,000,000-event
# database of bench/api.
#
# Usage: bench/dashboard/run.sh
#   RUNS=5 bench/dashboard/run.sh               # loads of each kind per page (median and max are reported)
#   EVENTS=1000000 DAYS=30 RELOAD=1             # the data set (bench/lib/cowrie-db.sh, shared with bench/api)
#   BIN=/path/to/release bench/dashboard/run.sh # use these celeriac-api, cowrie-loader and celeriac-worker, no build
#   ANSWER_CACHE_SECS=5                         # the API's answer cache (its default); 0 = every load queries PostgreSQL
#   WINDOW=default|data                         # default: the page as opened (`/`, the last 7 days before now) when the
#                                               #   newest event is at most 6 h old, else `data`; data: the 7 days ending
#                                               #   one second after the newest event, in the URL (#/overview?start=&end=)
#
# What it does:
# - builds celeriac-api, cowrie-loader and celeriac-worker (release); makes the Python venv with Celery 5.7 and
#   Flower 2.2 (scripts/lib.sh python_env), installs api/ui's npm packages from the lockfile when missing
#   (playwright-core; no browser is downloaded: Debian's chromium, scripts/ensure-chromium.sh);
# - makes sure the database celeriac_bench_api holds the data set (bench/lib/cowrie-db.sh: 1,000,000 events over
#   the 30 days before its generation; reused when its comment says so);
# - starts, on a private Redis on $BENCH_REDIS_PORT (6396): celeriac-api on a free port (a statistics:read key and
#   rate limits of 100000000/minute, so nothing is limited; answer cache as the API's default), a Rust worker
#   (celeriac-worker -E, node rust@dashbench), a Python Celery 5.7 worker (tests/python/pytasks.py, -E, node
#   py@dashbench) and Flower 2.2 (`celery flower`) on a free port; waits until Flower's /workers?json=1 lists both;
# - checks with curl that the API answers the overview's four requests with 200 (and notes the window's totals);
# - part 1, the dashboard at `/` (the overview), part 2, Flower's `/workers`: load average before each part, then
#   bench/dashboard/measure.mjs in Chromium (see its header for the loads, "shown" and the byte counts);
# - prints a Markdown table on stdout; the raw JSON and the services' logs are kept in $OUT (default
#   /tmp/celeriac-bench-dashboard).
# Needs: PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth), psql, redis-server, python3, curl, node, npm.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib.sh
source "$ROOT/scripts/lib.sh"
cargo_env
EVENTS=${EVENTS:-1000000}
DAYS=${DAYS:-30}
RUNS=${RUNS:-5}
RPORT=${BENCH_REDIS_PORT:-6396}
ANSWER_CACHE_SECS=${ANSWER_CACHE_SECS:-5}
OUT=${OUT:-/tmp/celeriac-bench-dashboard}
# shellcheck source-path=SCRIPTDIR source=../lib/cowrie-db.sh
source "$ROOT/bench/lib/cowrie-db.sh"
mkdir -p "$OUT"
START_LA=$(cut -d' ' -f1-3 /proc/loadavg)
START_TS=$(date -u +%FT%TZ)

command -v curl >/dev/null 2>&1 || _apt_install curl
CHROMIUM=$(bash "$ROOT/scripts/ensure-chromium.sh")
[ -n "$CHROMIUM" ] || die "no chromium (apt-get install chromium)"
dashboard_node_modules
[ -d "$ROOT/api/ui/node_modules/playwright-core" ] || die "api/ui/node_modules/playwright-core is missing (npm ci in api/ui)"
python_env
VENV=$CELERIAC_VENV

if [ -n "${BIN:-}" ]; then
  log "using the binaries in $BIN (no build)"
else
  log "building release binaries"
  cargo build --release -q -p celeriac-api -p cowrie-loader -p celeriac-worker
  BIN="$CARGO_TARGET_DIR/release"
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  bench_redis_stop
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_log FILE TEXT SECONDS PID: until FILE contains TEXT; dies if PID exits or time is up.
wait_log() {
  local _
  for _ in $(seq $(($3 * 10))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$4" 2>/dev/null || die "the process writing $1 exited: $(tail -5 "$1")"
    sleep 0.1
  done
  die "no '$2' in $1 after $3 s: $(tail -5 "$1")"
}

# --- the data set ------------------------------------------------------------------------------------------------
cowrie_db_ensure "$BIN" "$WORK"
now_s=$(date -u +%s)
last_s=$(date -u -d "$last" +%s)
if [ -z "${WINDOW:-}" ]; then
  if [ $((now_s - last_s)) -le 21600 ]; then WINDOW=default; else WINDOW=data; fi
fi
case $WINDOW in
default)
  PAGE_PATH=/
  API_SCOPE="days=7"
  END=$(date -u -d "@$now_s" +%Y-%m-%dT%H:%M:%SZ)
  START=$(date -u -d "@$((now_s - 7 * 86400))" +%Y-%m-%dT%H:%M:%SZ)
  WINDOW_NOTE="the page's default window, the last 7 days before the run (about $START .. $END)" ;;
data)
  end_s=$((last_s + 1))
  END=$(date -u -d "@$end_s" +%Y-%m-%dT%H:%M:%SZ)
  START=$(date -u -d "@$((end_s - 7 * 86400))" +%Y-%m-%dT%H:%M:%SZ)
  PAGE_PATH="/#/overview?start=$START&end=$END"
  API_SCOPE="start=$START&end=$END"
  WINDOW_NOTE="the 7 days ending one second after the newest event, in the URL: $START .. $END" ;;
*) die "WINDOW must be default or data, not $WINDOW" ;;
esac
read -r w_events w_sessions < <(psql_db -Atc "SELECT
    (SELECT count(*) FROM raw_events WHERE event_timestamp >= '$START' AND event_timestamp < '$END'),
    (SELECT count(*) FROM session_summaries WHERE first_event_at >= '$START' AND first_event_at < '$END')" | tr '|' ' ')
[ "$w_sessions" -gt 0 ] || die "the window $START .. $END holds no session"
log "data: $n_events events, $n_sessions sessions from $first to $last; window $START .. $END: $w_events events, $w_sessions sessions"

# --- the cluster: private Redis, celeriac-api, a Rust and a Python worker, Flower ---------------------------------
if redis-cli -p "$RPORT" ping >/dev/null 2>&1; then
  die "something already answers on port $RPORT; choose a free one with BENCH_REDIS_PORT"
fi
bench_redis_start "$RPORT" "$WORK/redis"
BROKER="redis://127.0.0.1:$RPORT/0"
KEY=$(DATABASE_URL="$DB" "$BIN/celeriac-api" key create --name dashbench --scopes statistics:read \
  --rate-limit 100000000/minute --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
DATABASE_URL="$DB" "$BIN/celeriac-api" -b "$BROKER" --config "$ROOT/worker-config.yaml" -l warn \
  serve --bind "127.0.0.1:$PORT" --statistics-rate-limit 100000000/minute --answer-cache-secs "$ANSWER_CACHE_SECS" \
  >"$OUT/api.log" 2>&1 &
APID=$!
PIDS+=("$APID")
for _ in $(seq 100); do
  curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break
  kill -0 "$APID" 2>/dev/null || die "celeriac-api exited; see $OUT/api.log"
  sleep 0.1
done
curl -fsS "$BASE/healthz" >/dev/null || die "celeriac-api does not answer on $BASE; see $OUT/api.log"

RUST_NODE=rust@dashbench
PY_NODE=py@dashbench
NO_COLOR=1 DATABASE_URL="$DB" "$BIN/celeriac-worker" -b "$BROKER" -n "$RUST_NODE" -E -l info >"$OUT/rust-worker.log" 2>&1 &
PIDS+=("$!")
wait_log "$OUT/rust-worker.log" "celeriac-worker ready" 30 "$!"
(cd "$ROOT/tests/python" && CELERY_BROKER_URL="$BROKER" CELERY_RESULT_BACKEND="$BROKER" PYTHONUNBUFFERED=1 \
  exec "$VENV/bin/celery" -A pytasks worker -n "$PY_NODE" -E -l info -c 2) >"$OUT/python-worker.log" 2>&1 &
PIDS+=("$!")
wait_log "$OUT/python-worker.log" "ready\." 60 "$!"
FPORT=$(free_port)
FLOWER="http://127.0.0.1:$FPORT"
(cd "$WORK" && PYTHONUNBUFFERED=1 exec "$VENV/bin/celery" --broker="$BROKER" flower --port="$FPORT" --address=127.0.0.1) \
  >"$OUT/flower.log" 2>&1 &
FLPID=$!
PIDS+=("$FLPID")
for _ in $(seq 600); do
  curl -fsS "$FLOWER/healthcheck" >/dev/null 2>&1 && break
  kill -0 "$FLPID" 2>/dev/null || die "Flower exited; see $OUT/flower.log"
  sleep 0.1
done
# Flower lists a worker once it has had events from it (it broadcasts enable_events when it starts).
listed=
both_listed() { [[ " $listed " == *" $RUST_NODE "* && " $listed " == *" $PY_NODE "* ]]; }
for _ in $(seq 120); do
  listed=$(curl -fsS "$FLOWER/workers?json=1" 2>/dev/null | python3 -c 'import json,sys; print(" ".join(sorted(w["hostname"] for w in json.load(sys.stdin)["data"])))' 2>/dev/null || true)
  both_listed && break
  sleep 0.5
done
both_listed || die "Flower does not list $RUST_NODE and $PY_NODE after 60 s (it lists: $listed); see $OUT/flower.log"
log "Flower $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("flower"))') on $FLOWER lists: $listed"

# --- the overview's four requests answer 200 -----------------------------------------------------------------------
for path in "/api/v1/statistics/sessions?$API_SCOPE&bucket_size=day" "/api/v1/statistics/threats?$API_SCOPE" \
  "/api/v1/statistics/sensors?$API_SCOPE" "/api/v1/statistics/sensors?days=1"; do
  code=$(curl -sS -o "$WORK/body" -w '%{http_code}' -H "X-API-Key: $KEY" "$BASE$path")
  [ "$code" = 200 ] || die "$path answered $code: $(head -c 300 "$WORK/body")"
done
curl -fsS -H "X-API-Key: $KEY" "$BASE/api/v1/statistics/sessions?$API_SCOPE&bucket_size=day" >"$OUT/sessions.json"
SHOWN_NOTE=$(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); n=b["total_sessions"]; e=sum(t["events"] for t in b["timeline"]); print(f"the API counts {n:,} sessions and {e:,} events in the window")' "$OUT/sessions.json")
log "$SHOWN_NOTE"

# --- measure -------------------------------------------------------------------------------------------------------
TTL_MS=$(python3 -c "print(int(float('$ANSWER_CACHE_SECS') * 1000))")
# other_cpu: the busiest processes right now (what else shares the 2 cores).
other_cpu() { ps -eo pcpu=,comm= --sort=-pcpu | head -4 | awk '{printf "%s%s %s%%", (NR > 1 ? ", " : ""), $2, $1}'; }
LA_CELERIAC=$(cut -d' ' -f1-3 /proc/loadavg)
log "part 1: the dashboard ($BASE$PAGE_PATH), load average $LA_CELERIAC; busiest: $(other_cpu)"
MEASURE_PAGE=celeriac MEASURE_URL="$BASE$PAGE_PATH" MEASURE_KEY="$KEY" MEASURE_TTL_MS="$TTL_MS" MEASURE_RUNS="$RUNS" \
  MEASURE_CHROMIUM="$CHROMIUM" node "$HERE/measure.mjs" >"$OUT/celeriac.json" || die "measure.mjs failed for the dashboard: $(head -c 2000 "$OUT/celeriac.json")"
LA_FLOWER=$(cut -d' ' -f1-3 /proc/loadavg)
log "part 2: Flower ($FLOWER/workers), load average $LA_FLOWER; busiest: $(other_cpu)"
MEASURE_PAGE=flower MEASURE_URL="$FLOWER/workers" MEASURE_NODES="$RUST_NODE,$PY_NODE" MEASURE_RUNS="$RUNS" \
  MEASURE_CHROMIUM="$CHROMIUM" node "$HERE/measure.mjs" >"$OUT/flower.json" || die "measure.mjs failed for Flower: $(head -c 2000 "$OUT/flower.json")"

echo "# $START_TS .. $(date -u +%FT%TZ), $(nproc) cores, load average at the start $START_LA, at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# data: $n_events events, $n_sessions sessions ($first .. $last); $LOAD_NOTE"
echo "# window: $WINDOW_NOTE: $w_events events, $w_sessions sessions; $SHOWN_NOTE; API answer cache ${ANSWER_CACHE_SECS} s"
echo "# cluster on $BROKER: celeriac-api $BASE, workers $RUST_NODE (celeriac-worker) and $PY_NODE (Celery $("$VENV/bin/celery" --version | cut -d' ' -f1)), Flower $FLOWER"
python3 - "$OUT/celeriac.json" "$OUT/flower.json" "$LA_CELERIAC" "$LA_FLOWER" <<'PY'
import json, statistics, sys
cel, flo = (json.load(open(p)) for p in sys.argv[1:3])
la = {"celeriac": sys.argv[3], "flower": sys.argv[4]}
print(f"# Chromium {cel['chromium']} (headless), {cel['runs']} loads of each kind; raw JSON in the files given above")
for d in (cel, flo):
    if d["console_errors"]:
        print(f"# {d['page']}: console errors: {d['console_errors'][:5]}")
label = {("celeriac", "cold"): "celeriac overview, cold (new context, API answers from PostgreSQL)",
         ("celeriac", "warm"): "celeriac overview, warm (HTTP cache primed, API answers from PostgreSQL)",
         ("celeriac", "warm_hit"): "celeriac overview, warm (HTTP cache primed, API answer cache hit)",
         ("flower", "cold"): "Flower 2.2 /workers, cold (new context)",
         ("flower", "warm"): "Flower 2.2 /workers, warm (HTTP cache primed)"}
def mm(xs, f=lambda x: f"{x:,.0f}"):
    return f"{f(statistics.median(xs))} / {f(max(xs))}"
kb = lambda x: f"{x / 1000:,.1f}"
print()
print("| page and load | shown ms (median / max) | next frame ms | transferred KB (median / max) | body as sent KB | body decoded KB | requests (from cache) | load avg before |")
print("|---|---|---|---|---|---|---|---|")
for d in (cel, flo):
    for kind, loads in d["loads"].items():
        if not loads:
            continue
        reqs = f"{statistics.median([l['requests'] for l in loads]):.0f} ({statistics.median([l['from_cache'] for l in loads]):.0f})"
        print(f"| {label[(d['page'], kind)]} | {mm([l['shown_ms'] for l in loads])} | {mm([l['frame_ms'] for l in loads])} "
              f"| {mm([l['transfer_bytes'] for l in loads], kb)} | {mm([l['encoded_bytes'] for l in loads], kb)} "
              f"| {mm([l['decoded_bytes'] for l in loads], kb)} | {reqs} | {la[d['page']]} |")
print()
print("Milestones, medians in ms (navigation response end / DOMContentLoaded / load / last fetch or XHR end / shown):")
print()
for d in (cel, flo):
    for kind, loads in d["loads"].items():
        med = lambda k: statistics.median([l[k] for l in loads if l[k] is not None]) if any(l[k] is not None for l in loads) else float("nan")
        print(f"- {label[(d['page'], kind)]}: {med('nav_response_end_ms'):.0f} / {med('dom_content_loaded_ms'):.0f} / "
              f"{med('load_ms'):.0f} / {med('last_fetch_end_ms'):.0f} / {med('shown_ms'):.0f}")
print()
print("Per request, first run (transferred / as sent / decoded bytes; cold, then warm):")
for d in (cel, flo):
    for kind in ("cold", "warm"):
        print()
        print(f"{label[(d['page'], kind)]}:")
        print()
        print("| request | status | transferred | as sent | decoded |")
        print("|---|---|---|---|---|")
        for e in d["loads"][kind][0]["entries"]:
            name = e["name"] if len(e["name"]) <= 90 else e["name"][:87] + "..."
            print(f"| `{name}` | {e['status']} | {e['transfer']:,} | {e['encoded']:,} | {e['decoded']:,} |")
PY
