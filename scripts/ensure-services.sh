#!/usr/bin/env bash
# scripts/ensure-services.sh: make Redis (127.0.0.1:6379), RabbitMQ (127.0.0.1:5672) and PostgreSQL
# (127.0.0.1:5432, user postgres, no password) reachable, and create the
# database `celeriac` if it is missing.
#
# Idempotent: a service that already answers is left alone.
# On Debian as root it installs missing servers with apt-get and starts them;
# on a fresh PostgreSQL install it adds `trust` for 127.0.0.1 and ::1 to
# pg_hba.conf (development and CI machines only).
# Prints one line per service saying what it did; exits non-zero with a clear
# error when a service cannot be made to answer within
# CELERIAC_SERVICE_TIMEOUT seconds (default 60).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_services
