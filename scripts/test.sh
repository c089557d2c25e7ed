#!/usr/bin/env bash
# scripts/test.sh: THE test command of celeriac.
#
#   scripts/test.sh [--quick] [-- ARGS...]   (ARGS go verbatim to nextest / cargo test)
#
# Steps, each failing fast with a clear message:
#   1. scripts/ensure-services.sh  (Redis, PostgreSQL, RabbitMQ on 127.0.0.1)
#   2. scripts/python-env.sh       (venv with Celery 5.7 and Flower 2.2; a second one
#                                   with the MCP client and schemathesis)
#      then scripts/ensure-chromium.sh and `npm ci` in api/ui when its lockfile
#      changed (dashboard_node_modules in lib.sh: uPlot, playwright-core, axe-core)
#   3. cargo fmt --all -- --check                          (skipped by --quick)
#   4. cargo clippy --workspace --all-targets -- -D warnings (skipped by --quick)
#   5. scripts/check-manifests.sh  (k3s overlays rendered by kubectl kustomize, validated
#                                   against the Kubernetes schemas and by checkov; Prometheus
#                                   config and alert rule tests with promtool) (skipped by --quick)
#   6. cargo build --workspace --bins  (the tests start the real binaries)
#   7. cargo nextest run --workspace --no-fail-fast  (or cargo test when
#      cargo-nextest is not installed)
#
# Exports for the tests: CELERIAC_VENV, CELERIAC_PYTHON, CELERIAC_API_PYTHON
# (mcp), CELERIAC_SCHEMATHESIS, CELERIAC_CELERY,
# CELERIAC_FLOWER (Flower runs as `$CELERIAC_FLOWER flower`), CELERIAC_CHROMIUM
# (headless Chromium from scripts/ensure-chromium.sh), CELERIAC_SHARED
# (absolute path of ../shared) and CARGO_TARGET_DIR
# (default $HOME/.cache/celeriac-target).
# Under CI=true the tests fail loudly when a service is missing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    # The header comment, up to the first line that is not a comment.
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"
}

quick=0
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done

# step NAME CMD...: run one step; on failure name it and exit with its status.
step() {
    local name="$1" rc=0
    shift
    log "==> $name: $*"
    "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        log "FAILED: step '$name' exited with status $rc ($*)"
        exit "$rc"
    fi
}

root="$(repo_root)"
cd "$root"

step services ensure_services
step python-env python_env
step api-python-env api_python_env
export CELERIAC_API_PYTHON="$CELERIAC_API_VENV/bin/python"
export CELERIAC_SCHEMATHESIS="$CELERIAC_API_VENV/bin/schemathesis"
export CELERIAC_PYTHON="$CELERIAC_VENV/bin/python"
export CELERIAC_CELERY="$CELERIAC_VENV/bin/celery"
export CELERIAC_FLOWER="$CELERIAC_VENV/bin/celery"
CELERIAC_CHROMIUM="$("$root/scripts/ensure-chromium.sh")" || { log "FAILED: step 'chromium' (scripts/ensure-chromium.sh)"; exit 1; }
export CELERIAC_CHROMIUM
step dashboard-npm dashboard_node_modules
if [ -z "${CELERIAC_SHARED:-}" ]; then
    if [ -d "$root/../shared" ]; then
        CELERIAC_SHARED="$(cd "$root/../shared" && pwd)"
    else
        CELERIAC_SHARED="$(cd "$root/.." && pwd)/shared"
        log "WARNING: $CELERIAC_SHARED does not exist; tests that read fixtures will fail"
    fi
fi
export CELERIAC_SHARED
cargo_env
log "CELERIAC_VENV=$CELERIAC_VENV CELERIAC_SHARED=$CELERIAC_SHARED CARGO_TARGET_DIR=$CARGO_TARGET_DIR CI=${CI:-}"

if [ "$quick" -eq 0 ]; then
    step fmt cargo fmt --all -- --check
    step clippy cargo clippy --workspace --all-targets -- -D warnings
    step manifests "$root/scripts/check-manifests.sh"
else
    log "--quick: skipping fmt, clippy and manifests"
fi

step build cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
    step tests cargo nextest run --workspace --no-fail-fast ${extra[@]+"${extra[@]}"}
else
    log "cargo-nextest not installed; using cargo test"
    step tests cargo test --workspace --no-fail-fast ${extra[@]+"${extra[@]}"}
fi
