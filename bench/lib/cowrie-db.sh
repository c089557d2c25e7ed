# shellcheck shell=bash
# bench/lib/cowrie-db.sh: the database of generated Cowrie events that bench/api and bench/dashboard share
# (sourced, never run; scripts/lib.sh must be sourced first, for log and die).
#
# Set before sourcing: EVENTS (default 1000000) and DAYS (default 30); optionally BENCH_PG_ADMIN
# (default postgres://postgres@127.0.0.1:5432).
# Sourcing sets DBNAME (celeriac_bench_api), ADMIN, DB (the database's URL) and DATASET (the database comment that
# names the data set), and defines psql_db and psql_admin (psql on the database, and on `postgres`).
#
# cowrie_db_ensure BIN WORK: make sure DBNAME holds the data set, then run pending migrations; sets LOAD_NOTE, and
#   n_events, n_sessions, first and last (what the database holds; dies if fewer than EVENTS events).
#   BIN is the directory with the cowrie-loader binary, WORK a scratch directory (the generated files are removed).
#   Unless RELOAD=1, a database whose comment names this data set is reused. Otherwise it is dropped and created,
#   DAYS x 24 files of EVENTS/(DAYS x 24) Cowrie 2.x events are generated, one starting at each hour of the DAYS
#   days before the generation time (seeds 1, 2, ...; about 1,400 events, 170 sessions and 13 minutes of traffic
#   each, so every hour has data and none lies in the future), loaded with `cowrie-loader bulk`, then VACUUM
#   ANALYZE (the state autovacuum reaches on its own), and the comment records the data set and the load time.
# Needs: PostgreSQL (user postgres, trust auth), psql, python3.

EVENTS=${EVENTS:-1000000}
DAYS=${DAYS:-30}
DBNAME=celeriac_bench_api
ADMIN=${BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432}
DB="$ADMIN/$DBNAME"
DATASET="celeriac bench/api data set: events=$EVENTS days=$DAYS hourly files format=2"

psql_db() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -w "$DB" "$@"; }
psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -w "$ADMIN/postgres" "$@"; }

cowrie_db_ensure() {
  local bin=$1 work=$2 have anchor per_file t0 t1 t2 t3 f start
  have=$(psql_admin -Atc "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '$DBNAME'")
  if [ "${RELOAD:-0}" = 1 ] || [ "${have%% loaded *}" != "$DATASET" ]; then
    log "creating $DBNAME and loading $EVENTS events over $DAYS days"
    psql_admin -c "DROP DATABASE IF EXISTS $DBNAME WITH (FORCE)" -c "CREATE DATABASE $DBNAME"
    anchor=$(($(date -u +%s) / 3600 * 3600))
    per_file=$(((EVENTS + DAYS * 24 - 1) / (DAYS * 24)))
    t0=$(date +%s.%N)
    for f in $(seq 0 $((DAYS * 24 - 1))); do
      start=$(date -u -d "@$((anchor - DAYS * 86400 + f * 3600))" +%Y-%m-%dT%H:%M:%SZ)
      "$bin/cowrie-loader" generate --out "$work/cowrie.json.$f" --events "$per_file" --seed "$((f + 1))" --start "$start" >/dev/null
    done
    t1=$(date +%s.%N)
    DATABASE_URL="$DB" "$bin/cowrie-loader" bulk --sensor bench-api --no-progress "$work"/cowrie.json.* >"$work/load.json"
    t2=$(date +%s.%N)
    rm -f "$work"/cowrie.json.*
    psql_db -c "VACUUM ANALYZE"
    t3=$(date +%s.%N)
    LOAD_NOTE=$(python3 - "$work/load.json" "$t0" "$t1" "$t2" "$t3" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
t0, t1, t2, t3 = map(float, sys.argv[2:6])
print(f"generated in {t1 - t0:.1f} s, loaded {s.get('events_inserted', s.get('events_read'))} events in {t2 - t1:.1f} s "
      f"(load average after: {open('/proc/loadavg').read().split()[0]}), VACUUM ANALYZE {t3 - t2:.1f} s")
PY
)
    log "$LOAD_NOTE"
    psql_admin -c "COMMENT ON DATABASE $DBNAME IS '$DATASET loaded $(date -u +%FT%TZ)'"
  else
    log "reusing $DBNAME (${have})"
    LOAD_NOTE="reused: ${have}"
  fi
  # Pending migrations now (a new index on a million rows takes a while), not in the API's start-up.
  DATABASE_URL="$DB" "$bin/cowrie-loader" migrate >/dev/null
  # What it holds: n_events, n_sessions, first and last (the oldest and newest event's time).
  read -r n_events n_sessions first last < <(psql_db -Atc "SELECT (SELECT count(*) FROM raw_events),
      (SELECT count(*) FROM session_summaries),
      to_char(min(event_timestamp) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
      to_char(max(event_timestamp) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM raw_events" | tr '|' ' ')
  [ "$n_events" -ge "$EVENTS" ] || die "the database holds $n_events events, fewer than $EVENTS; run with RELOAD=1"
}
