#!/usr/bin/env bash
# scripts/demo.sh: the demo (README: "run the demo").
#
# 1-4: a Rust worker, Python <-> Rust calls, a drain rate. 5: the main job (Cowrie logs -> cowrie-loader ->
# PostgreSQL -> analysis tasks called from Python). 6: the same data and analyses through celeriac-api
# (statistics, an analysis submitted over HTTP with its live SSE progress, the stored finding).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root="$(repo_root)"
cd "$root"

ensure_services
python_env
cargo_env
log "building celeriac-worker, celeriac, cowrie-loader and celeriac-bench"
cargo build -q -p celeriac-worker -p celeriac-cli -p cowrie-loader -p celeriac-bench -p celeriac-api --bins >&2 || die "cargo build failed"
bin="$CARGO_TARGET_DIR/debug"
venv="${CELERIAC_VENV:-$HOME/.cache/celeriac/venv}"
broker="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0}"
export CELERY_BROKER_URL="$broker" CELERY_RESULT_BACKEND="${CELERY_RESULT_BACKEND:-$broker}"

workdir="$(mktemp -d)"
cleanup() {
    # Every process is stopped whatever the others answer (set -e would end the trap at the first failure).
    set +e
    for p in "${apid:-}" "${ppid_:-}" "${wpid:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null
    done
    [ -n "${wpid:-}" ] && wait "$wpid" 2>/dev/null
    rm -rf "$workdir"
}
trap cleanup EXIT

database="${DATABASE_URL:-postgres://127.0.0.1/celeriac}"
export DATABASE_URL="$database"

echo "== 1. a Rust worker (celeriac-worker -n demo@%h -Q celery,longtail -c 4 -E) on $broker, analyses on $database"
NO_COLOR=1 "$bin/celeriac-worker" -b "$broker" -n 'demo@%h' -Q celery,longtail -c 4 -E --loglevel info > "$workdir/worker.log" 2>&1 &
wpid=$!
for _ in $(seq 300); do
    if grep -q "celeriac-worker ready" "$workdir/worker.log" 2>/dev/null; then break; fi
    kill -0 "$wpid" 2>/dev/null || { cat "$workdir/worker.log" >&2; die "the worker exited"; }
    sleep 0.1
done

echo "== 2. Python Celery 5.7 calls the Rust tasks by name"
(cd tests/python && "$venv/bin/python" - <<'PY'
from pytasks import app
print("  celeriac.add(2, 3)            ->", app.send_task('celeriac.add', args=(2, 3)).get(timeout=10))
print("  celeriac.echo('ünï', k=[1,2]) ->", app.send_task('celeriac.echo', args=('ünï',), kwargs={'k': [1, 2]}).get(timeout=10))
try:
    app.send_task('celeriac.fail', args=('boom',)).get(timeout=10)
except ValueError as e:
    print("  celeriac.fail('boom')         -> raised ValueError:", e)
PY
)

echo "== 3. the Rust CLI calls a Python worker"
(cd tests/python && exec "$venv/bin/celery" -A pytasks worker -n 'pydemo@%h' -Q pyq -P solo -l warning > "$workdir/py.log" 2>&1) &
ppid_=$!
sleep 4
printf '  celeriac call tasks.add -a [20,22] -Q pyq --wait -> '
"$bin/celeriac" -b "$broker" call tasks.add -a '[20, 22]' -Q pyq --wait 2>/dev/null

echo "== 4. throughput: 20,000 no-op tasks (Python-identical messages) drained by the Rust worker"
echo "   (this demo runs the DEBUG build, unoptimised and about ten times slower than a release build; the release"
echo "   build's figure, measured beside Python Celery on the same Redis, is in docs/benchmarks.md, section 'Wire core',"
echo "   and bench/wire-core/run.sh measures it on this machine)"
"$bin/celeriac-bench" -b "$broker" publish 20000 --queue celery --task celeriac.ping --ignore-result >/dev/null
start=$(date +%s.%N)
while [ "$(redis-cli -u "$broker" llen celery 2>/dev/null || echo 0)" != "0" ]; do sleep 0.05; done
end=$(date +%s.%N)
python3 -c "print('  debug build: drained 20000 tasks in %.2f s, %.0f tasks/s (not the release figure: see docs/benchmarks.md)' % ($end - $start, 20000 / ($end - $start)))"
echo "== 5. the main job: Cowrie logs -> cowrie-loader -> PostgreSQL -> analysis tasks called from Python"
# An existing database may be behind this build's schema: the loader never migrates a database in use by itself.
"$bin/cowrie-loader" migrate --database-url "$database" >/dev/null
"$bin/cowrie-loader" generate --out "$workdir/cowrie.json" --events 30000 --format 2 --seed 7 --start 2024-01-10T00:00:00Z >/dev/null
printf '  cowrie-loader bulk --sensor demo-sensor (30,000 generated Cowrie 2.x events): '
"$bin/cowrie-loader" bulk --sensor demo-sensor --no-progress "$workdir/cowrie.json" | tail -1 | cut -c1-200
(cd tests/python && "$venv/bin/python" - <<'PY'
import json, time
from pytasks import app
window = {"start": "2024-01-01T00:00:00Z", "end": "2024-03-01T00:00:00Z"}
for run in (1, 2):
    t = time.perf_counter()
    r = app.send_task('cowrieprocessor.workers.longtail_analysis', args=('demo-sensor', window))
    stages = []
    while not r.ready():
        info = r.info if r.state == 'PROGRESS' else None
        if isinstance(info, dict) and info.get('stage') and info['stage'] not in stages:
            stages.append(info['stage'])
        time.sleep(0.01)
    res = r.get(timeout=300)
    inc = res['incremental']
    print("  longtail run %d: %d sessions, %d rare commands, %d outlier sessions, days reused %d/%d, %.2f s (progress stages seen: %s)"
          % (run, res['total_sessions_analyzed'], res['rare_command_count'], res['outlier_session_count'],
             inc['days_reused'], inc['days_total'], time.perf_counter() - t, ', '.join(stages) or '-'))
s = app.send_task('cowrieprocessor.workers.snowshoe_detection', args=('demo-sensor', window)).get(timeout=300)
b = app.send_task('cowrieprocessor.workers.botnet_detection', args=('demo-sensor', window)).get(timeout=300)
print("  snowshoe: likely=%s score=%s | botnet: likely=%s score=%s" % (s['is_likely_snowshoe'], s['confidence_score'], b['is_likely_botnet'], b['coordination_score']))
print("  stored in longtail_analysis, longtail_detections, snowshoe_detections, botnet_detections")
PY
)

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
api="http://127.0.0.1:$port"
echo "== 6. the same through the public API: celeriac-api on $api (docs at /docs/, OpenAPI at /openapi.json)"
key="$("$bin/celeriac-api" key create --name demo --scopes statistics:read,jobs:write 2>/dev/null)"
NO_COLOR=1 "$bin/celeriac-api" serve --bind "127.0.0.1:$port" > "$workdir/api.log" 2>&1 &
apid=$!
for _ in $(seq 100); do curl -fs "$api/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$api/healthz" >/dev/null || { cat "$workdir/api.log" >&2; die "celeriac-api did not start"; }
q="sensor=demo-sensor&start=2024-01-01T00:00:00Z&end=2024-03-01T00:00:00Z"
curl -fs -H "X-API-Key: $key" "$api/api/v1/statistics/sessions?$q" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("  GET /api/v1/statistics/sessions: %d sessions from %d IPs, %d login attempts (%d sessions logged in), %d with commands"
      % (s["total_sessions"], s["unique_ips"], s["login_attempts"], s["successful_logins"], s["sessions_with_commands"]))'
curl -fs -H "X-API-Key: $key" "$api/api/v1/statistics/threats?$q&limit=3" | python3 -c '
import json, sys
t = json.load(sys.stdin)
print("  GET /api/v1/statistics/threats: top IPs", ", ".join("%s (%d sessions)" % (r["ip"], r["sessions"]) for r in t["top_source_ips"]))
print("    top credentials", ", ".join("%s/%s x%d" % (r["username"], r["password"], r["attempts"]) for r in t["top_credentials"]))
print("    top command", (t["top_commands"] or [{"command": "-"}])[0]["command"][:100])'
job="$(curl -fs -H "X-API-Key: $key" -H 'Content-Type: application/json' -X POST "$api/api/v1/analyses" \
    -d '{"kind": "longtail", "sensor": "demo-sensor", "time_window": {"start": "2024-01-01T00:00:00Z", "end": "2024-03-01T00:00:00Z"}}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')"
echo "  POST /api/v1/analyses (longtail) -> job $job; its SSE stream:"
curl -fsN -H "X-API-Key: $key" "$api/api/v1/jobs/$job/events" | python3 -c '
import json, sys
for line in sys.stdin:
    if line.startswith("data: "):
        j = json.loads(line[6:])
        p = j.get("progress") or {}
        print("    state %-8s %s" % (j["state"], ("stage %s %s/%s" % (p.get("stage"), p.get("current"), p.get("total"))) if p else ""))'
curl -fs -H "X-API-Key: $key" "$api/api/v1/findings/longtail?sensor=demo-sensor&limit=1" | python3 -c '
import json, sys
f = json.load(sys.stdin)["findings"][0]
print("  GET /api/v1/findings/longtail: finding %d, %s" % (f["id"], json.dumps(f["summary"])))'
echo "demo done"
