#!/usr/bin/env bash
# HTTP benchmark of celeriac-api (release build) with wrk, on a database of >= 1,000,000 generated Cowrie events.
#
# Usage: bench/api/run.sh
#   EVENTS=1000000 DAYS=30 bench/api/run.sh     # data set size (events) spread over DAYS days ending about now
#   DURATION=20s CONNS=64 THREADS=2 TIMEOUT=30s # wrk settings of each timed run (a 5 s warm-up run comes first)
#   RELOAD=1 bench/api/run.sh                   # drop and reload the database even if it already holds the data
#   ENDPOINTS="healthz sessions_stats"          # a subset of: healthz sessions_stats sessions_stats_hour
#                                               #   threats threats_aligned session_detail session_list
#   BIN=/path/to/release bench/api/run.sh       # use these celeriac-api and cowrie-loader binaries, no build
#   ANSWER_CACHE_SECS=0 bench/api/run.sh        # the API's answer cache (default 5 s, as the API's own default); 0 = every request queries PostgreSQL
#
# What it does:
# - installs wrk with apt when missing, builds celeriac-api and cowrie-loader (release);
# - creates the database celeriac_bench_api on 127.0.0.1:5432 (user postgres; bench/lib/cowrie-db.sh, shared with
#   bench/dashboard) unless its comment says it already
#   holds this data set; generates DAYS x 24 files of EVENTS/(DAYS x 24) Cowrie 2.x events, one starting at each
#   hour of the DAYS days before the generation time (seeds 1, 2, ...; about 1,400 events, 170 sessions and 13
#   minutes of traffic each, so every hour has data and none lies in the future), loads them with
#   `cowrie-loader bulk`, then VACUUM ANALYZE (the state autovacuum reaches on its own);
# - creates an API key with a limit of 100000000/minute and starts the API on a free port, with a private Redis on
#   $BENCH_REDIS_PORT (6394) and --statistics-rate-limit 100000000/minute, so no request is ever limited;
# - the aggregates are asked for the last 7 days of the data (explicit start/end: the 7 days ending one second after
#   the newest event, so a reused database measures the same window; it ends inside an hour like the default window
#   does, so the API reads its two partial edge hours from raw_events and the whole hours from the rollups);
#   `threats_aligned` asks for the same 7 days moved to whole hours (rollups only);
# - checks each endpoint with curl (status 200 and the expected body) before timing it; stops if a timed run saw any
#   4xx (wrong key, path or a rate limit), and reports 5xx (the API shedding load after 5 s waiting for a database
#   connection) and wrk timeouts in the table, counted from the API's /metrics; req/s counts 200s only;
# - per endpoint: load average before, a 5 s warm-up, `wrk -t$THREADS -c$CONNS -d$DURATION --timeout $TIMEOUT
#   --latency` (the aggregates also with 1 connection: the latency of one client alone); CPU per request is the
#   API's (utime+stime of /proc/<pid>/stat), PostgreSQL's (the backends of this database) and Redis's (INFO cpu)
#   CPU from the idle state before the run to the idle state after it, over the requests the API answered in that
#   time (its /metrics); the API's RSS after the run and its peak RSS (VmHWM);
# - prints a Markdown table on stdout; wrk's own output is kept in $OUT (default /tmp/celeriac-bench-api).
# Needs: PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth), psql, redis-server, python3, curl; apt for wrk.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
source "$ROOT/scripts/lib.sh"
cargo_env
EVENTS=${EVENTS:-1000000}
DAYS=${DAYS:-30}
DURATION=${DURATION:-20s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
TIMEOUT=${TIMEOUT:-30s}
RPORT=${BENCH_REDIS_PORT:-6394}
ENDPOINTS=${ENDPOINTS:-healthz sessions_stats sessions_stats_hour threats threats_aligned session_detail session_list}
OUT=${OUT:-/tmp/celeriac-bench-api}
# DBNAME, ADMIN, DB, DATASET, psql_db, psql_admin and cowrie_db_ensure (the data set, shared with bench/dashboard).
# shellcheck source-path=SCRIPTDIR source=../lib/cowrie-db.sh
source "$ROOT/bench/lib/cowrie-db.sh"
mkdir -p "$OUT"

if ! command -v wrk >/dev/null 2>&1; then
  _apt_install wrk
fi
command -v curl >/dev/null 2>&1 || _apt_install curl

if [ -n "${BIN:-}" ]; then
  log "using the binaries in $BIN (no build)"
else
  log "building release binaries"
  cargo build --release -q -p celeriac-api -p cowrie-loader
  BIN="$CARGO_TARGET_DIR/release"
fi

WORK=$(mktemp -d)
APID=
cleanup() {
  if [ -n "$APID" ]; then
    kill "$APID" 2>/dev/null || true
    wait "$APID" 2>/dev/null || true
  fi
  bench_redis_stop
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- the data set ------------------------------------------------------------------------------------------------
cowrie_db_ensure "$BIN" "$WORK"
# The window: the 7 days ending one second after the newest event. It ends inside an hour, as the default window
# (the 7 days before now) does, so both edge hours are partial. The aligned window is the same 7 days moved to
# whole hours (the edges that the API counts in raw_events are then empty; only `threats_aligned` uses it).
end_s=$(($(date -u -d "$last" +%s) + 1))
END=$(date -u -d "@$end_s" +%Y-%m-%dT%H:%M:%SZ)
START=$(date -u -d "@$((end_s - 7 * 86400))" +%Y-%m-%dT%H:%M:%SZ)
aend_s=$(((end_s + 3599) / 3600 * 3600))
ALIGNED="start=$(date -u -d "@$((aend_s - 7 * 86400))" +%Y-%m-%dT%H:%M:%SZ)&end=$(date -u -d "@$aend_s" +%Y-%m-%dT%H:%M:%SZ)"
read -r w_events w_sessions < <(psql_db -Atc "SELECT
    (SELECT count(*) FROM raw_events WHERE event_timestamp >= '$START' AND event_timestamp < '$END'),
    (SELECT count(*) FROM session_summaries WHERE first_event_at >= '$START' AND first_event_at < '$END')" | tr '|' ' ')
WINDOW="start=$START&end=$END"
# The most tried credential and the most typed command of the window, counted in raw_events (checks the rollups).
top_cred=$(psql_db -Atc "SELECT count(*) FROM raw_events WHERE event_timestamp >= '$START' AND event_timestamp < '$END'
    AND event_type IN ('cowrie.login.success', 'cowrie.login.failed')
    GROUP BY payload->>'username', payload->>'password' ORDER BY 1 DESC LIMIT 1")
top_cmd=$(psql_db -Atc "SELECT count(*) FROM raw_events WHERE event_timestamp >= '$START' AND event_timestamp < '$END'
    AND event_type = 'cowrie.command.input' AND payload ? 'input' GROUP BY payload->>'input' ORDER BY 1 DESC LIMIT 1")
log "data: $n_events events, $n_sessions sessions from $first to $last; window $START .. $END: $w_events events, $w_sessions sessions"

# Session ids for /sessions/{id}: 1,000 sessions of the window, a fixed pseudo-random sample (md5 order).
psql_db -Atc "SELECT '/api/v1/sessions/' || session_id FROM session_summaries
    WHERE first_event_at >= '$START' AND first_event_at < '$END' ORDER BY md5(session_id) LIMIT 1000" >"$WORK/session_paths"
[ "$(wc -l <"$WORK/session_paths")" -eq 1000 ] || die "fewer than 1000 sessions in the window"

# --- the API -----------------------------------------------------------------------------------------------------
if redis-cli -p "$RPORT" ping >/dev/null 2>&1; then
  die "something already answers on port $RPORT; choose a free one with BENCH_REDIS_PORT"
fi
bench_redis_start "$RPORT" "$WORK/redis"
KEY=$(DATABASE_URL="$DB" "$BIN/celeriac-api" key create --name bench --scopes statistics:read \
  --rate-limit 100000000/minute --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
DATABASE_URL="$DB" "$BIN/celeriac-api" -b "redis://127.0.0.1:$RPORT/0" --config "$ROOT/worker-config.yaml" -l warn \
  serve --bind "127.0.0.1:$PORT" --statistics-rate-limit 100000000/minute --answer-cache-secs "${ANSWER_CACHE_SECS:-5}" >"$OUT/api.log" 2>&1 &
APID=$!
for _ in $(seq 100); do
  curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break
  kill -0 "$APID" 2>/dev/null || die "celeriac-api exited; see $OUT/api.log"
  sleep 0.1
done
curl -fsS "$BASE/healthz" >/dev/null || die "celeriac-api does not answer on $BASE; see $OUT/api.log"

# --- helpers -----------------------------------------------------------------------------------------------------
TICK=$(getconf CLK_TCK)
proc_cpu() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# "pid ticks" for every backend connected to the benchmark database.
pg_cpu() {
  local pid
  for pid in $(psql_admin -Atc "SELECT pid FROM pg_stat_activity WHERE datname = '$DBNAME' AND pid <> pg_backend_pid()"); do
    echo "$pid $(proc_cpu "$pid")"
  done
}
# Machine-wide busy and total jiffies.
machine_cpu() { awk '/^cpu /{busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6}' /proc/stat; }
# CPU seconds of the private Redis (user + sys).
redis_cpu() { redis-cli -p "$RPORT" info cpu | awk -F: '/^used_cpu_(sys|user):/{s += $2} END {print s}'; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# check NAME PATH PYTHON-ASSERTION: curl PATH, demand 200 and a body for which the assertion holds (`b` is the JSON).
check() {
  local name=$1 path=$2 assertion=$3 code
  code=$(curl -sS -o "$WORK/body" -w '%{http_code}' -H "X-API-Key: $KEY" "$BASE$path")
  [ "$code" = 200 ] || die "$name: $path answered $code: $(head -c 300 "$WORK/body")"
  python3 - "$WORK/body" "$assertion" <<'PY' || die "$name: unexpected body from $path: $(head -c 300 "$WORK/body")"
import json, sys
b = json.load(open(sys.argv[1]))
assert eval(sys.argv[2]), sys.argv[2]
PY
  cp "$WORK/body" "$OUT/$name.json"
}

# Request counters by route and status, from the API's own /metrics.
api_counts() { curl -fsS "$BASE/metrics" | grep '^celeriac_api_http_requests_total' || true; }
# wait_idle: until no query of the benchmark database runs and the API's counters stand still (requests wrk gave up
# on when it stopped are still being answered for a while); at most 120 s.
wait_idle() {
  local a b active _
  for _ in $(seq 240); do
    a=$(api_counts | grep -v 'route="/metrics"')
    sleep 0.5
    b=$(api_counts | grep -v 'route="/metrics"')
    active=$(psql_admin -Atc "SELECT count(*) FROM pg_stat_activity WHERE datname = '$DBNAME' AND state = 'active' AND backend_type = 'client backend'")
    [ "$a" != "$b" ] || [ "$active" != 0 ] || return 0
  done
  log "the API did not become idle within 120 s"
}

ROWS=()
FAILED=0
# measure LABEL CONNS URL-PATH [PATHS-FILE]: a 5 s warm-up, then the timed run; appends a JSON row to ROWS.
# CPU and the answered requests are counted from the idle state before the timed run to the idle state after it,
# so the work on requests still in flight when wrk stopped is counted once, with those requests.
measure() {
  local name=$1 conns=$2 path=$3 paths=${4:-} threads=$THREADS la cpu0 cpu1 m0 m1 pg0 pg1 c0 c1 r0 r1 t0 t1 res
  [ "$conns" -ge "$threads" ] || threads=$conns
  API_KEY=$KEY PATHS_FILE=$paths wrk -t"$threads" -c"$conns" -d5s --timeout "$TIMEOUT" -s "$HERE/wrk.lua" \
    "$BASE$path" >"$OUT/$name.c$conns.warmup.txt" 2>&1
  wait_idle
  la=$(cut -d' ' -f1-3 /proc/loadavg)
  c0=$(api_counts); cpu0=$(proc_cpu "$APID"); pg0=$(pg_cpu); r0=$(redis_cpu); m0=$(machine_cpu); t0=$(date +%s.%N)
  API_KEY=$KEY PATHS_FILE=$paths wrk -t"$threads" -c"$conns" -d"$DURATION" --timeout "$TIMEOUT" --latency -s "$HERE/wrk.lua" \
    "$BASE$path" >"$OUT/$name.c$conns.txt" 2>&1
  wait_idle
  cpu1=$(proc_cpu "$APID"); pg1=$(pg_cpu); r1=$(redis_cpu); m1=$(machine_cpu); t1=$(date +%s.%N); c1=$(api_counts)
  res=$(python3 - "$OUT/$name.c$conns.txt" "$name" "$conns" "$la" "$cpu0" "$cpu1" "$TICK" "$pg0" "$pg1" "$m0" "$m1" \
    "$(status_kib "$APID" VmRSS)" "$(status_kib "$APID" VmHWM)" "$c0" "$c1" "$r0" "$r1" "$t0" "$t1" <<'PY'
import json, re, sys
text, name, conns, la = open(sys.argv[1]).read(), sys.argv[2], int(sys.argv[3]), sys.argv[4]
cpu0, cpu1, tick = float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
def table(s):
    return {int(p): float(t) for p, t in (l.split() for l in s.splitlines() if l.strip())}
pg0, pg1 = table(sys.argv[8]), table(sys.argv[9])
(mb0, mt0), (mb1, mt1) = map(float, sys.argv[10].split()), map(float, sys.argv[11].split())
rss, hwm = int(sys.argv[12]) / 1024, int(sys.argv[13]) / 1024
def counts(s):
    out = {}
    for m in re.finditer(r'^celeriac_api_http_requests_total\{(.*)\} (\d+)$', s, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        out[(labels["route"], labels["status"])] = int(m.group(2))
    return out
k0, k1 = counts(sys.argv[14]), counts(sys.argv[15])
redis = float(sys.argv[17]) - float(sys.argv[16])
interval = float(sys.argv[19]) - float(sys.argv[18])
statuses = {}
for (route, status), v in k1.items():
    if route == "/metrics" or (route == "/healthz" and not name.startswith("healthz")):
        continue
    d = v - k0.get((route, status), 0)
    if d:
        statuses[status] = statuses.get(status, 0) + d
w = json.loads(text.split("WRKJSON ", 1)[1].splitlines()[0])
secs = w["duration_us"] / 1e6
n = w["requests"]
ok = n - w["non2xx"]
answered = sum(statuses.values())  # by the API, from idle to idle (includes requests wrk stopped waiting for)
api = (cpu1 - cpu0) / tick
pg = sum(t - pg0.get(p, 0.0) for p, t in pg1.items()) / tick
busy = (mb1 - mb0) / (mt1 - mt0) * 2  # cores busy, whole machine (2 cores)
other = busy - (api + pg + redis) / interval  # wrk and everything else on the machine
ms = lambda k: w[k] / 1000
row = {"endpoint": name, "conns": conns, "requests": n, "ok": ok, "seconds": round(secs, 2), "rps": round(ok / secs, 1),
       "statuses": statuses, "timeouts": w["timeouts"],
       "p50_ms": ms("p50_us"), "p90_ms": ms("p90_us"), "p95_ms": ms("p95_us"), "p99_ms": ms("p99_us"), "max_ms": ms("max_us"),
       "api_cpu_s": round(api, 2), "answered": answered,
       "api_cpu_us_per_req": round(api / answered * 1e6, 1) if answered else None, "pg_cpu_s": round(pg, 2),
       "pg_cpu_us_per_req": round(pg / answered * 1e6, 1) if answered else None, "machine_cores_busy": round(busy, 2),
       "redis_cpu_us_per_req": round(redis / answered * 1e6, 1) if answered else None, "other_cores_busy": round(other, 2),
       "api_rss_mib": round(rss, 1), "api_peak_rss_mib": round(hwm, 1), "bytes_per_req": round(w["bytes"] / n) if n else None,
       "loadavg_before": la}
print(json.dumps(row))
PY
)
  echo "$res" >>"$OUT/results.jsonl"
  log "$res"
  ROWS+=("$res")
  # A 4xx means the benchmark timed the wrong thing (key, path, rate limit): stop. 5xx under load is the API
  # shedding requests it could not serve in time (pool wait > 5 s); it is reported in the table.
  if python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(any(s.startswith("4") for s in r["statuses"]))' "$res"; then :; else
    die "$name: 4xx answers during the timed run: $res"
  fi
  if grep -q 'Non-2xx or 3xx responses\|Socket errors' "$OUT/$name.c$conns.txt"; then
    FAILED=1
    log "$name: not every request was answered 200 in time: $(grep 'Non-2xx\|Socket errors' "$OUT/$name.c$conns.txt" | tr -s ' ' | tr '\n' ';')"
  fi
}

# --- check, then time --------------------------------------------------------------------------------------------
SID=$(head -1 "$WORK/session_paths")
echo "# $(date -u +%FT%TZ) $(nproc) cores, loadavg $(cut -d' ' -f1-3 /proc/loadavg); API pid $APID on $BASE"
echo "# load: $LOAD_NOTE"
echo "# data: $n_events events, $n_sessions sessions ($first .. $last); window $START .. $END: $w_events events, $w_sessions sessions"
echo "# wrk -t$THREADS -c$CONNS -d$DURATION --timeout $TIMEOUT --latency (after a 5 s warm-up), aggregates also at 1 connection; session_detail rotates over 1,000 session ids"
for e in $ENDPOINTS; do
  case $e in
  healthz)
    check "$e" /healthz 'b["status"] == "ok"'
    measure "$e" "$CONNS" /healthz ;;
  sessions_stats)
    check "$e" "/api/v1/statistics/sessions?$WINDOW" "b['total_sessions'] == $w_sessions and len(b['timeline']) >= 7 and sum(t['events'] for t in b['timeline']) == $w_events"
    measure "$e" "$CONNS" "/api/v1/statistics/sessions?$WINDOW"
    measure "$e" 1 "/api/v1/statistics/sessions?$WINDOW" ;;
  sessions_stats_hour)
    check "$e" "/api/v1/statistics/sessions?$WINDOW&bucket_size=hour" "b['total_sessions'] == $w_sessions and len(b['timeline']) in (168, 169) and sum(t['events'] for t in b['timeline']) == $w_events"
    measure "$e" "$CONNS" "/api/v1/statistics/sessions?$WINDOW&bucket_size=hour"
    measure "$e" 1 "/api/v1/statistics/sessions?$WINDOW&bucket_size=hour" ;;
  threats)
    check "$e" "/api/v1/statistics/threats?$WINDOW" "len(b['top_source_ips']) == 10 and b['top_credentials'][0]['attempts'] == $top_cred and b['top_commands'][0]['count'] == $top_cmd"
    measure "$e" "$CONNS" "/api/v1/statistics/threats?$WINDOW"
    measure "$e" 1 "/api/v1/statistics/threats?$WINDOW" ;;
  threats_aligned)
    check "$e" "/api/v1/statistics/threats?$ALIGNED" "len(b['top_source_ips']) == 10 and len(b['top_credentials']) == 10 and len(b['top_commands']) > 0"
    measure "$e" "$CONNS" "/api/v1/statistics/threats?$ALIGNED" ;;
  session_detail)
    check "$e" "$SID" "b['session']['session_id'] == '${SID##*/}' and len(b['events']) == b['session']['event_count'] > 0"
    while read -r p; do
      code=$(curl -sS -o /dev/null -w '%{http_code}' -H "X-API-Key: $KEY" "$BASE$p")
      [ "$code" = 200 ] || die "session_detail: $p answered $code"
    done <"$WORK/session_paths"
    measure "$e" "$CONNS" "$SID" "$WORK/session_paths" ;;
  session_list)
    check "$e" "/api/v1/sessions?$WINDOW&limit=50" "len(b['sessions']) == 50 and b['next_cursor']"
    measure "$e" "$CONNS" "/api/v1/sessions?$WINDOW&limit=50" ;;
  *) die "unknown endpoint $e" ;;
  esac
done
echo "# end $(date -u +%FT%TZ) loadavg $(cut -d' ' -f1-3 /proc/loadavg); API peak RSS $(($(status_kib "$APID" VmHWM) / 1024)) MiB"

python3 - "${ROWS[@]}" <<'PY'
import json, sys
rows = [json.loads(a) for a in sys.argv[1:]]
label = {"healthz": "`/healthz`", "sessions_stats": "`statistics/sessions` 7 d, by day",
         "sessions_stats_hour": "`statistics/sessions` 7 d, by hour", "threats": "`statistics/threats` 7 d",
         "threats_aligned": "`statistics/threats` 7 d, whole hours",
         "session_detail": "`sessions/{id}` (1,000 ids)", "session_list": "`sessions?limit=50` 7 d"}
print("| endpoint | conns | req/s (200) | p50 ms | p90 ms | p95 ms | p99 ms | not 200 | API CPU us/req | PostgreSQL CPU us/req "
      "| Redis CPU us/req | API RSS MiB | cores busy: all / others incl. wrk | load avg before |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    bad = {k: v for k, v in r["statuses"].items() if k != "200"}
    if r["timeouts"]:
        bad["wrk timeout"] = r["timeouts"]
    bad = ", ".join(f"{k}: {v}" for k, v in sorted(bad.items())) or "0"
    print(f"| {label.get(r['endpoint'], r['endpoint'])} | {r['conns']} | {r['rps']:,} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
          f"| {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {bad} | {r['api_cpu_us_per_req']:,} | {r['pg_cpu_us_per_req']:,} "
          f"| {r['redis_cpu_us_per_req']:,} | {r['api_rss_mib']} | {r['machine_cores_busy']} / {r['other_cores_busy']} "
          f"| {r['loadavg_before']} |")
PY
[ "$FAILED" = 0 ] || log "some requests were not answered 200 in time (see the 'not 200' column)"
