#!/usr/bin/env bash
# scripts/python-env.sh: create (idempotently) the Python venv used by the
# interop tests, with celery[redis]==5.7.* and flower==2.2.*, and print its path.
#
# Path: ${CELERIAC_VENV:-$HOME/.cache/celeriac/venv}.
# An existing venv whose celery reports 5.7 and whose flower is 2.2 is reused as is.
# Installs python3-venv with apt-get when `python3 -m venv` fails (Debian, root).
# Progress goes to stderr; stdout gets only the venv path, so
#   CELERIAC_VENV="$(scripts/python-env.sh)"
# works.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

python_env
printf '%s\n' "$CELERIAC_VENV"
