#!/usr/bin/env bash
# scripts/demo.sh: the demo (README: "run the demo").
#
# Setup part (reusable): services, Python venv, worker build.
# Body: placeholder until celeriac-worker has a command line; the lead rewrites it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root="$(repo_root)"
cd "$root"

ensure_services
python_env
cargo_env
log "building celeriac-worker"
cargo build -p celeriac-worker --bins >&2 || die "cargo build -p celeriac-worker failed"
worker="$CARGO_TARGET_DIR/debug/celeriac-worker"

if [ ! -x "$worker" ] || ! "$worker" --help >/dev/null 2>&1; then
    echo "demo: worker not ready yet"
    exit 0
fi

# ---- demo body (the lead fills this in) -------------------------------------
echo "demo: $worker is built; the demo body is not written yet"
"$worker" --help
