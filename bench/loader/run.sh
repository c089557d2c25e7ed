#!/usr/bin/env bash
# Load-throughput benchmark of cowrie-loader (release build) against the local PostgreSQL.
#
# Usage: bench/loader/run.sh [EVENTS] [RUNS]
#   EVENTS  generated events per format (default 100000)
#   RUNS    runs per case; the median is reported (default 3)
#
# Each run loads into a fresh database (bench_loader_<pid>), measured with
# /usr/bin/time -v (wall time, peak RSS). Prints one Markdown table row per case
# and the load average before and after. Needs: PostgreSQL on 127.0.0.1:5432
# (user postgres, trust auth), psql, /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVENTS=${1:-100000}
RUNS=${2:-3}
ADMIN=${BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432}
FIX=../shared/fixtures/cowrie
cargo build --release -p cowrie-loader >/dev/null 2>&1
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET/release/cowrie-loader
WORK=$(mktemp -d)
DB=bench_loader_$$
trap 'rm -rf "$WORK"; PGOPTIONS="-c client_min_messages=warning" psql "$ADMIN/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT

for f in 1 2 3; do
  "$BIN" generate --out "$WORK/gen-v$f.json" --events "$EVENTS" --format "$f" --seed 42 >/dev/null
done

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| case | events | batch | median wall s | events/s | peak RSS MiB |"
echo "|---|---|---|---|---|---|"

# run_case NAME BATCH EXTRA_ARGS... -- FILES...
run_case() {
  local name=$1 batch=$2; shift 2
  local walls=() rss=() events=0
  for _ in $(seq "$RUNS"); do
    PGOPTIONS="-c client_min_messages=warning" psql "$ADMIN/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
    PGOPTIONS="-c client_min_messages=warning" psql "$ADMIN/postgres" -qc "CREATE DATABASE $DB" >/dev/null
    DATABASE_URL="$ADMIN/$DB" "$BIN" migrate >/dev/null
    DATABASE_URL="$ADMIN/$DB" /usr/bin/time -v -o "$WORK/time" \
      "$BIN" bulk --sensor bench --no-progress --batch-size "$batch" "$@" >"$WORK/status" 2>/dev/null
    events=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["events_read"])' "$WORK/status")
    walls+=("$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$WORK/time")")
    rss+=("$(awk -F': ' '/Maximum resident set size/{print $2}' "$WORK/time")")
  done
  python3 - "$name" "$events" "$batch" "${walls[*]}" "${rss[*]}" <<'PY'
import statistics, sys
name, events, batch, walls, rss = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(), sys.argv[5].split()
w = statistics.median(float(x) for x in walls)
r = statistics.median(int(x) for x in rss) / 1024
print(f"| {name} | {events} | {batch} | {w:.2f} | {events / w:,.0f} | {r:.0f} |")
PY
}

for f in 1 2 3; do
  run_case "generated Cowrie $f.x" 2000 "$WORK/gen-v$f.json"
done
for b in 500 5000; do
  run_case "generated Cowrie 2.x" "$b" "$WORK/gen-v2.json"
done
# dry run: parsing alone, no database writes
PGOPTIONS="-c client_min_messages=warning" psql "$ADMIN/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
/usr/bin/time -v -o "$WORK/time" "$BIN" bulk --sensor bench --no-progress --dry-run "$WORK/gen-v2.json" >"$WORK/status" 2>/dev/null
python3 - "$WORK/status" "$WORK/time" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(sys.argv[2]).read()).group(1)) / 1024
print(f"| dry run (parse only), Cowrie 2.x | {d['events_read']} | - | {d['duration_seconds']:.2f} | {d['events_read'] / d['duration_seconds']:,.0f} | {rss:.0f} |")
PY
run_case "real samples (10 files)" 2000 "$FIX"/kareiva-cowrie-logs/* "$FIX"/lucasfaudman-honeypot-ai/*
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
