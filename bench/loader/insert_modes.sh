#!/usr/bin/env bash
# Compares ways of writing raw_events rows into the local PostgreSQL:
# unnest arrays (what the loader uses), diesel multi-row VALUES, the loader's full
# transaction, and COPY from CSV (psql \copy; no ON CONFLICT possible).
#
# Usage: bench/loader/insert_modes.sh [ROWS] [BATCH]   (defaults 100000 2000)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100000}
B=${2:-2000}
ADMIN=${BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432}
DB=bench_insert_$$
WORK=$(mktemp -d)
export PGOPTIONS="-c client_min_messages=warning"
trap 'rm -rf "$WORK"; psql "$ADMIN/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
cargo build --release -p store --example insert_modes >/dev/null 2>&1
cargo build --release -p cowrie-loader >/dev/null 2>&1
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')
psql "$ADMIN/postgres" -qc "CREATE DATABASE $DB" >/dev/null
DATABASE_URL="$ADMIN/$DB" "$TARGET/release/cowrie-loader" migrate >/dev/null
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| mode | rows | batch | wall s | rows/s |"
echo "|---|---|---|---|---|"
"$TARGET/release/examples/insert_modes" "$ADMIN/$DB" "$N" "$B" "$WORK"
start=$(date +%s.%N)
psql "$ADMIN/$DB" -qc "\\copy raw_events (ingest_id, source, stream_id, source_generation, source_offset, source_line, payload, payload_hash, session_id, event_type, event_timestamp, src_ip, sensor) FROM '$WORK/rows.csv' WITH (FORMAT csv)"
end=$(date +%s.%N)
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); n=int(sys.argv[3]); print(f'| COPY FROM csv via psql (raw_events only, no dedup) | {n} | all | {s:.2f} | {n/s:.0f} |')" "$start" "$end" "$N"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
