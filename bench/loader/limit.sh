#!/usr/bin/env bash
# The loader against PostgreSQL's own limit and against the original Python loader, on the same files, in one run.
#
# Usage: bench/loader/limit.sh [RUNS] [FILE_OR_DIR...]
#   RUNS  rounds (default 3); the median of each case is reported
#   FILE_OR_DIR  Cowrie JSON logs (default: the 56 daily files of the real Cowrie 1.x corpus kareiva/cowrie-logs,
#         102,686 events, exported from a git mirror: KAREIVA_GIT, default /work/.mirror/kareiva+cowrie-logs/repo)
#
# Each round, one after the other:
#   bulk      `cowrie-loader bulk --sensor bench FILES` into a fresh, migrated database (whole process, /usr/bin/time)
#   COPY      the limit: the rows the bulk load stored in raw_events, exported once with
#             `\copy (SELECT ...) TO rows.bin (FORMAT binary)`, copied back with `\copy raw_events (...) FROM rows.bin
#             (FORMAT binary)` into another fresh, migrated database (same table, same five indexes, empty like the
#             bulk's); psql's own wall time, so its start-up counts against the limit, as the loader's does
#   original  the original cowrieprocessor bulk loader (bench/loader/original_bulk.py) on the same files into SQLite,
#             whole process; only when ORIG_SRC (default /tmp/cowrieprocessor) holds its source and ORIG_PY (default
#             ~/.cache/celeriac/orig-venv/bin/python) imports sqlalchemy and dateutil; otherwise the row says why
# Env: BULK_ARGS (extra arguments of `bulk`, e.g. "--files-in-flight 1"), LOADER_BIN (a built cowrie-loader; default:
#      build the release binary), BENCH_PG_ADMIN.
# Prints the load average before and after each case and a Markdown table. Needs PostgreSQL on 127.0.0.1:5432
# (user postgres, trust auth), psql, python3, /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
shift || true
ADMIN=${BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432}
ORIG_SRC=${ORIG_SRC:-/tmp/cowrieprocessor}
ORIG_PY=${ORIG_PY:-$HOME/.cache/celeriac/orig-venv/bin/python}
export PGOPTIONS="-c client_min_messages=warning"
if [ -n "${LOADER_BIN:-}" ]; then
  BIN=$LOADER_BIN
else
  cargo build --release -p cowrie-loader >/dev/null 2>&1
  TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')
  BIN=$TARGET/release/cowrie-loader
fi
WORK=$(mktemp -d)
DB=bench_limit_$$
trap 'rm -rf "$WORK"; psql "$ADMIN/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  git_dir=${KAREIVA_GIT:-/work/.mirror/kareiva+cowrie-logs/repo}
  [ -d "$git_dir/.git" ] && git_dir=$git_dir/.git
  mkdir -p "$WORK/corpus"
  for f in $(git --git-dir="$git_dir" ls-tree --name-only HEAD | grep '^cowrie\.json\.'); do
    git --git-dir="$git_dir" show "HEAD:$f" >"$WORK/corpus/$f" 2>/dev/null || rm -f "$WORK/corpus/$f"
  done
  files=("$WORK"/corpus/*)
fi
mapfile -t files < <("$BIN" --version >/dev/null 2>&1; for f in "${files[@]}"; do if [ -d "$f" ]; then ls -d "$f"/cowrie*.json*; else echo "$f"; fi; done)
lines=$(cat "${files[@]}" | wc -l)
echo "files: ${#files[@]}, lines: $lines, bytes: $(cat "${files[@]}" | wc -c)"

orig_ok=1
orig_why=""
if [ ! -f "$ORIG_SRC/cowrieprocessor/loader/bulk.py" ]; then
  orig_ok=0; orig_why="original source missing at $ORIG_SRC"
elif ! "$ORIG_PY" -c 'import sqlalchemy, dateutil' 2>/dev/null; then
  orig_ok=0; orig_why="$ORIG_PY cannot import sqlalchemy and dateutil"
fi

fresh_db() {
  psql "$ADMIN/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
  psql "$ADMIN/postgres" -qc "CREATE DATABASE $DB" >/dev/null
  DATABASE_URL="$ADMIN/$DB" "$BIN" migrate >/dev/null
}
wall() { awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$1"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
COLS="ingest_id, source, stream_id, source_generation, source_offset, source_line, source_inode, payload, payload_hash, risk_score, quarantined, session_id, event_type, event_timestamp, src_ip, sensor"

: >"$WORK/results"
for r in $(seq "$RUNS"); do
  # bulk
  fresh_db
  l0=$(load1)
  # shellcheck disable=SC2086
  DATABASE_URL="$ADMIN/$DB" /usr/bin/time -v -o "$WORK/time" "$BIN" bulk --sensor bench --no-progress ${BULK_ARGS:-} "${files[@]}" >"$WORK/status" 2>"$WORK/stderr" || { cat "$WORK/stderr" >&2; exit 1; }
  l1=$(load1)
  rows=$(psql "$ADMIN/$DB" -Atc "SELECT count(*) FROM raw_events")
  echo "bulk $r $(wall "$WORK/time") $rows $l0 $l1" >>"$WORK/results"
  if [ "$r" = 1 ]; then
    psql "$ADMIN/$DB" -qc "\\copy (SELECT $COLS FROM raw_events ORDER BY id) TO '$WORK/rows.bin' WITH (FORMAT binary)"
    python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print("bulk status:", {k: d[k] for k in ("events_read","events_inserted","dead_letters","sessions_touched","files_rows_inserted","batches")})' "$WORK/status"
  fi
  # COPY limit
  fresh_db
  l0=$(load1)
  /usr/bin/time -v -o "$WORK/time" psql "$ADMIN/$DB" -qc "\\copy raw_events ($COLS) FROM '$WORK/rows.bin' WITH (FORMAT binary)"
  l1=$(load1)
  echo "copy $r $(wall "$WORK/time") $(psql "$ADMIN/$DB" -Atc "SELECT count(*) FROM raw_events") $l0 $l1" >>"$WORK/results"
  # original
  if [ "$orig_ok" = 1 ]; then
    l0=$(load1)
    /usr/bin/time -v -o "$WORK/time" "$ORIG_PY" bench/loader/original_bulk.py "$ORIG_SRC" "$WORK/orig.sqlite" "${files[@]}" >"$WORK/orig.json" 2>"$WORK/orig.err" || { tail -5 "$WORK/orig.err" >&2; exit 1; }
    l1=$(load1)
    echo "original $r $(wall "$WORK/time") $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events_read"])' "$WORK/orig.json") $l0 $l1" >>"$WORK/results"
    [ "$r" = 1 ] && echo "original status: $(cat "$WORK/orig.json")"
  fi
done

python3 - "$WORK/results" "$lines" "$orig_why" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
lines, why = int(sys.argv[2]), sys.argv[3]
med = {}
print("| case | rows | wall s per run | median wall s | events/s (of the file's lines) | load 1-min before/after each run |")
print("|---|---|---|---|---|---|")
names = {"bulk": "`cowrie-loader bulk` (whole process)", "copy": "limit: binary `COPY` into raw_events (psql)",
         "original": "original Python bulk loader into SQLite (whole process)"}
for case in ("bulk", "copy", "original"):
    rs = [r for r in rows if r[0] == case]
    if not rs:
        print(f"| {names[case]} | - | not run: {why} | | | |")
        continue
    walls = [float(r[2]) for r in rs]
    m = med[case] = statistics.median(walls)
    print(f"| {names[case]} | {rs[0][3]} | {' '.join(f'{w:.2f}' for w in walls)} | {m:.2f} | {lines / m:,.0f} | {', '.join(r[4] + '/' + r[5] for r in rs)} |")
if "copy" in med:
    print(f"\nbulk / COPY limit: {med['bulk'] / med['copy']:.2f}x the limit's time")
if "original" in med:
    print(f"original / bulk: {med['original'] / med['bulk']:.1f}x faster than the original")
PY
