#!/usr/bin/env bash
# Chaos soak of a mixed cluster (docs/reliability.md): two celeriac-workers and a Python Celery worker on one queue,
# the coordinator and the API, a private Redis (AOF, appendfsync always) and a private PostgreSQL, under a steady
# load of celeriac.add while workers, Redis, PostgreSQL and the coordinator are killed and one worker's link to Redis
# is cut and blackholed through a TCP proxy. Counts published, completed, lost, run twice, dead-lettered.
#
#   bench/chaos/run.sh [--duration 660] [--rate 90] [--fault-every 18] [...driver.py flags]
#
# Loopback only (private ports 16399-16401, 15433, 18081-18082). Builds the binaries (debug profile unless
# CHAOS_PROFILE=release). Output in $CHAOS_OUT (default /tmp/celeriac-chaos-<time>): logs and report.json.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
profile="${CHAOS_PROFILE:-debug}"
venv="${CELERIAC_VENV:-$HOME/.cache/celeriac/venv}"
out="${CHAOS_OUT:-/tmp/celeriac-chaos-$(date +%Y%m%d-%H%M%S)}"
pgbin="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}"
if [ "${CHAOS_NO_BUILD:-}" != 1 ]; then
    flag=(); [ "$profile" = release ] && flag=(--release)
    (cd "$repo" && cargo build "${flag[@]}" -p celeriac-worker -p celeriac-coordinator -p celeriac-api --bins)
fi
mkdir -p "$out/bin"
echo "output: $out"
# A copy of the binaries, so a build in the same target directory during the soak does not swap them underneath.
cp "$target/$profile/celeriac-worker" "$target/$profile/celeriac-coordinator" "$target/$profile/celeriac-api" "$out/bin/"
uptime | tee "$out/uptime-start.txt"
"$venv/bin/python" "$here/driver.py" --out "$out" --bin "$out/bin" --python "$venv/bin/python" \
    --celery "$venv/bin/celery" --pytasks "$repo/tests/python" --pg-bin "$pgbin" "$@" 2>&1 | tee "$out/driver.log"
uptime | tee "$out/uptime-end.txt"
