#!/usr/bin/env bash
# scripts/ensure-chromium.sh: make sure headless Chromium (Debian's `chromium` package) is installed for the
# Flower screenshot test, and print its path.
#
#   scripts/ensure-chromium.sh
#
# Installs with apt-get when it is missing and we are root. Under CI=true a missing Chromium is an error;
# elsewhere it prints a warning and exits 0 (the screenshot test then skips with a notice).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"
    exit 0
fi

find_chromium() {
    command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null || true
}

path="$(find_chromium)"
if [ -z "$path" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's chromium for the Flower screenshot test"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; then
        apt-get update >/dev/null 2>&1 || true
        apt-get install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1 || true
    fi
    path="$(find_chromium)"
fi
if [ -z "$path" ]; then
    if [ "${CI:-}" = "true" ]; then
        die "chromium is not installed and could not be installed (apt-get install chromium)"
    fi
    log "WARNING: chromium not available; the Flower screenshot test will skip"
    exit 0
fi
echo "$path"
