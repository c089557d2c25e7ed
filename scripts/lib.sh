# shellcheck shell=bash
# scripts/lib.sh: shared setup for the project's scripts (sourced, never run).
#
# Functions:
#   repo_root        print the absolute path of the repository root
#   log MSG...       print "[script] MSG" on stderr
#   die MSG...       log MSG and exit 1
#   ensure_services  make Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432,
#                    user postgres, no password) reachable and create the database
#                    `celeriac`; prints one line per service on stdout
#   python_env       make the Python venv with Celery 5.7 and Flower 2.2;
#                    exports CELERIAC_VENV (logs go to stderr, nothing to stdout)
#   api_python_env   make the venv with the MCP client and schemathesis; exports CELERIAC_API_VENV
#   cargo_env        make sure cargo is on PATH and export CARGO_TARGET_DIR
#
# Settings (environment):
#   CELERIAC_VENV             venv path (default $HOME/.cache/celeriac/venv)
#   CELERIAC_SERVICE_TIMEOUT  seconds to wait for a service to answer (default 60)
#   CELERIAC_PG_VERSION       PostgreSQL major version to start (default: newest in /etc/postgresql)
#   CELERIAC_REDIS_PORT, CELERIAC_PG_PORT, CELERIAC_PG_CLUSTER
#                             for trying the start paths beside running services only
#   CARGO_TARGET_DIR          cargo's target dir (default $HOME/.cache/celeriac-target)

# The addresses are the project's contract (../shared/design/system.md); the
# port and cluster overrides exist so the start paths can be tried on a machine
# whose standard services are already running.
CELERIAC_REDIS_HOST=127.0.0.1
CELERIAC_REDIS_PORT="${CELERIAC_REDIS_PORT:-6379}"
CELERIAC_PG_HOST=127.0.0.1
CELERIAC_PG_PORT="${CELERIAC_PG_PORT:-5432}"
CELERIAC_PG_CLUSTER="${CELERIAC_PG_CLUSTER:-main}"
CELERIAC_PG_DB=celeriac

repo_root() {
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
}

log() {
    printf '[%s] %s\n' "$(basename "${0:-celeriac}")" "$*" >&2
}

die() {
    log "ERROR: $*"
    exit 1
}

# ---------------------------------------------------------------------------
# apt helpers (Debian only, as root)

_is_debian() {
    [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1
}

_is_root() {
    [ "$(id -u)" -eq 0 ]
}

_CELERIAC_APT_UPDATED=0

# _apt_install PKG...: `apt-get update` once per process, then install.
_apt_install() {
    _is_debian || die "cannot install $* automatically: this is not Debian; install it yourself"
    _is_root || die "cannot install $* automatically: not root; run 'sudo apt-get install -y $*'"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$_CELERIAC_APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq >&2 || die "apt-get update failed"
        _CELERIAC_APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    apt-get install -y -qq --no-install-recommends "$@" >&2 || die "apt-get install $* failed"
}

# ---------------------------------------------------------------------------
# Redis

# _redis_ping: true if Redis answers PONG on 127.0.0.1:6379.
# Uses redis-cli when present, else bash's /dev/tcp, so it works before any install.
_redis_ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h "$CELERIAC_REDIS_HOST" -p "$CELERIAC_REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
        return
    fi
    # No redis-cli yet (fresh machine): speak RESP through bash's /dev/tcp.
    local reply
    # shellcheck disable=SC2016 # $1 and $2 expand in the inner bash
    reply="$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "PING\r\n" >&3
        IFS= read -r reply <&3 && printf "%s" "$reply"
    ' _ "$CELERIAC_REDIS_HOST" "$CELERIAC_REDIS_PORT" 2>/dev/null)" || return 1
    [ "${reply%$'\r'}" = "+PONG" ]
}

_redis_start() {
    local dir logfile
    if _is_root; then
        dir=/var/lib/redis
        logfile=/var/log/redis/ci.log
        [ "$CELERIAC_REDIS_PORT" = 6379 ] || logfile="/var/log/redis/ci-$CELERIAC_REDIS_PORT.log"
    else
        dir="${XDG_STATE_HOME:-$HOME/.local/state}/celeriac/redis"
        logfile="$dir/redis.log"
    fi
    mkdir -p "$dir" "$(dirname "$logfile")"
    _CELERIAC_REDIS_LOG="$logfile"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$CELERIAC_REDIS_PORT" \
        --save "" --appendonly no --dir "$dir" --logfile "$logfile" >&2 ||
        die "redis-server failed to start; see $logfile"
}

_ensure_redis() {
    local did=() logfile
    if _redis_ping; then
        echo "redis: already answering on $CELERIAC_REDIS_HOST:$CELERIAC_REDIS_PORT, left as is"
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        _apt_install redis-server redis-tools
        did+=("installed redis-server")
        # The package may have started its own server (no policy-rc.d); check again.
        if _wait_for _redis_ping 5; then
            did+=("the package started it")
            echo "redis: $(_join "${did[@]}"), answering on $CELERIAC_REDIS_HOST:$CELERIAC_REDIS_PORT"
            return 0
        fi
    fi
    _redis_start
    logfile="$_CELERIAC_REDIS_LOG"
    did+=("started redis-server (no persistence, log $logfile)")
    _wait_for _redis_ping "${CELERIAC_SERVICE_TIMEOUT:-60}" ||
        die "Redis did not answer PING on $CELERIAC_REDIS_HOST:$CELERIAC_REDIS_PORT within ${CELERIAC_SERVICE_TIMEOUT:-60}s; see $logfile"
    echo "redis: $(_join "${did[@]}"), answering on $CELERIAC_REDIS_HOST:$CELERIAC_REDIS_PORT"
}

# ---------------------------------------------------------------------------
# PostgreSQL

_pg_ready() {
    pg_isready -q -h "$CELERIAC_PG_HOST" -p "$CELERIAC_PG_PORT" -t 2 >/dev/null 2>&1
}

# _pg_psql ARGS...: psql as user postgres over TCP, never prompting for a password.
_pg_psql() {
    PGCONNECT_TIMEOUT=5 psql -w -X -q -h "$CELERIAC_PG_HOST" -p "$CELERIAC_PG_PORT" -U postgres "$@"
}

_pg_login_ok() {
    _pg_psql -d postgres -Atc 'select 1' >/dev/null 2>&1
}

# _pg_version: the cluster version to use (newest configured one).
_pg_version() {
    if [ -n "${CELERIAC_PG_VERSION:-}" ]; then
        echo "$CELERIAC_PG_VERSION"
        return
    fi
    if [ -d /etc/postgresql ]; then
        find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1
    fi
}

_pg_server_installed() {
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# _pg_trust_loopback VER: let 127.0.0.1 and ::1 connect without a password.
# Only called when a passwordless login as postgres fails (a fresh Debian install
# uses scram-sha-256 for TCP); the lines go first because pg_hba.conf is first-match.
_pg_trust_loopback() {
    local ver="$1" hba
    hba="/etc/postgresql/$ver/$CELERIAC_PG_CLUSTER/pg_hba.conf"
    [ -w "$hba" ] || die "PostgreSQL refuses a passwordless login as postgres on $CELERIAC_PG_HOST:$CELERIAC_PG_PORT and $hba is not writable; allow it yourself (see scripts/ensure-services.sh)"
    if ! grep -q '^# celeriac: trust loopback' "$hba"; then
        local tmp
        tmp="$(mktemp)"
        {
            echo '# celeriac: trust loopback (added by scripts/ensure-services.sh for development and CI only)'
            echo 'host    all    all    127.0.0.1/32    trust'
            echo 'host    all    all    ::1/128         trust'
            cat "$hba"
        } >"$tmp"
        cat "$tmp" >"$hba"
        rm -f "$tmp"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$ver" "$CELERIAC_PG_CLUSTER" reload >&2 ||
        die "could not reload PostgreSQL $ver after editing $hba"
}

_ensure_postgres() {
    local did=() ver
    if ! command -v pg_isready >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
        if _pg_server_installed || ! _is_debian; then
            _apt_install postgresql-client
            did+=("installed postgresql-client")
        fi
    fi
    if command -v pg_isready >/dev/null 2>&1 && _pg_ready; then
        [ ${#did[@]} -gt 0 ] || did+=("already answering on $CELERIAC_PG_HOST:$CELERIAC_PG_PORT, left as is")
    else
        if ! _pg_server_installed; then
            _apt_install postgresql
            did+=("installed postgresql")
        fi
        ver="$(_pg_version)"
        if [ -z "$ver" ]; then
            ver="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)"
            [ -n "$ver" ] || die "PostgreSQL is installed but no version found under /usr/lib/postgresql"
        fi
        if [ ! -d "/etc/postgresql/$ver/$CELERIAC_PG_CLUSTER" ]; then
            _is_root || die "no PostgreSQL cluster $ver/$CELERIAC_PG_CLUSTER and only root can create one here"
            pg_createcluster "$ver" "$CELERIAC_PG_CLUSTER" -p "$CELERIAC_PG_PORT" >&2 ||
                die "pg_createcluster $ver $CELERIAC_PG_CLUSTER failed"
            did+=("created cluster $ver/$CELERIAC_PG_CLUSTER")
        fi
        if ! _pg_ready; then
            _is_root || die "PostgreSQL is not answering on $CELERIAC_PG_HOST:$CELERIAC_PG_PORT and only root can start it here"
            pg_ctlcluster --skip-systemctl-redirect "$ver" "$CELERIAC_PG_CLUSTER" start >&2 ||
                die "pg_ctlcluster $ver $CELERIAC_PG_CLUSTER start failed; see /var/log/postgresql/postgresql-$ver-$CELERIAC_PG_CLUSTER.log"
            did+=("started cluster $ver/$CELERIAC_PG_CLUSTER")
        fi
        _wait_for _pg_ready "${CELERIAC_SERVICE_TIMEOUT:-60}" ||
            die "PostgreSQL did not answer pg_isready on $CELERIAC_PG_HOST:$CELERIAC_PG_PORT within ${CELERIAC_SERVICE_TIMEOUT:-60}s; see /var/log/postgresql/"
    fi
    if ! _pg_login_ok; then
        ver="$(_pg_version)"
        [ -n "$ver" ] || die "PostgreSQL answers but refuses a passwordless login as postgres on $CELERIAC_PG_HOST:$CELERIAC_PG_PORT, and it is not a local Debian cluster this script can configure"
        _pg_trust_loopback "$ver"
        _wait_for _pg_login_ok 15 ||
            die "PostgreSQL still refuses a passwordless login as postgres on $CELERIAC_PG_HOST:$CELERIAC_PG_PORT after trusting loopback"
        did+=("set trust auth for 127.0.0.1 and ::1 in /etc/postgresql/$ver/$CELERIAC_PG_CLUSTER/pg_hba.conf")
    fi
    # The default DATABASE_URL (postgres://127.0.0.1/celeriac) names no user, so
    # clients log in as the OS user: give that user a role when it has none.
    local me
    me="$(id -un)"
    if [ "$me" != postgres ] && [ -z "$(_pg_psql -d postgres -Atc "select 1 from pg_roles where rolname = '$me'" 2>/dev/null)" ]; then
        _pg_psql -d postgres -c "create role \"$me\" login superuser" >/dev/null ||
            die "could not create the PostgreSQL role $me"
        did+=("created superuser role $me")
    fi
    if [ -z "$(_pg_psql -d postgres -Atc "select 1 from pg_database where datname = '$CELERIAC_PG_DB'")" ]; then
        _pg_psql -d postgres -c "create database $CELERIAC_PG_DB" >/dev/null ||
            die "could not create the database $CELERIAC_PG_DB"
        did+=("created database $CELERIAC_PG_DB")
    fi
    echo "postgresql: $(_join "${did[@]}")"
}

# ---------------------------------------------------------------------------
# small helpers

# _wait_for CHECK SECONDS: run CHECK every half second until it succeeds or time is up.
_wait_for() {
    local check="$1" seconds="$2" deadline
    deadline=$((SECONDS + seconds))
    while ! "$check"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

_join() {
    local out="" part
    for part in "$@"; do
        if [ -z "$out" ]; then out="$part"; else out="$out; $part"; fi
    done
    printf '%s' "$out"
}

# ---------------------------------------------------------------------------
# RabbitMQ (the AMQP tests: guest/guest on 127.0.0.1:5672, and rabbitmqctl to make a vhost per test)

CELERIAC_AMQP_PORT="${CELERIAC_AMQP_PORT:-5672}"

_amqp_ping() {
    (exec 3<>"/dev/tcp/127.0.0.1/$CELERIAC_AMQP_PORT") 2>/dev/null
}

_ensure_rabbitmq() {
    local did=()
    if _amqp_ping; then
        echo "rabbitmq: already answering on 127.0.0.1:$CELERIAC_AMQP_PORT, left as is"
        return 0
    fi
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        _apt_install rabbitmq-server
        did+=("installed rabbitmq-server")
    fi
    if ! _wait_for _amqp_ping 5; then
        if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
            systemctl start rabbitmq-server >&2 || true
        else
            # No systemd (containers): the broker in the background, as Debian's service would run it.
            mkdir -p /var/log/rabbitmq /var/lib/rabbitmq
            (rabbitmq-server >/var/log/rabbitmq/celeriac-start.log 2>&1 &)
        fi
        did+=("started rabbitmq-server")
    fi
    _wait_for _amqp_ping "${CELERIAC_SERVICE_TIMEOUT:-60}" ||
        die "RabbitMQ did not answer on 127.0.0.1:$CELERIAC_AMQP_PORT within ${CELERIAC_SERVICE_TIMEOUT:-60}s"
    rabbitmqctl await_startup >/dev/null 2>&1 || true
    echo "rabbitmq: $(_join "${did[@]}"), answering on 127.0.0.1:$CELERIAC_AMQP_PORT"
}

ensure_services() {
    _ensure_redis || return
    _ensure_postgres || return
    _ensure_rabbitmq
}

# ---------------------------------------------------------------------------
# Python venv with Celery and Flower (for the interop tests)

# OpenTelemetry for the trace test (tests/tests/tracing.rs, docs/tracing.md): the Celery instrumentation, the SDK
# with its OTLP/HTTP exporter, and opentelemetry-proto for the test receiver.
CELERIAC_PY_PACKAGES=('celery[redis]==5.7.*' 'flower==2.2.*'
    'opentelemetry-sdk==1.45.*' 'opentelemetry-exporter-otlp-proto-http==1.45.*' 'opentelemetry-proto==1.45.*'
    'opentelemetry-instrumentation-celery==0.66b2')

_venv_ok() {
    local venv="$1" v
    [ -x "$venv/bin/celery" ] || return 1
    v="$("$venv/bin/celery" --version 2>/dev/null)" || return 1
    case "$v" in 5.7.*) ;; *) return 1 ;; esac
    v="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("flower"))' 2>/dev/null)" || return 1
    case "$v" in 2.2.*) ;; *) return 1 ;; esac
    v="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("opentelemetry-instrumentation-celery"), m.version("opentelemetry-exporter-otlp-proto-http"), m.version("opentelemetry-proto"))' 2>/dev/null)" || return 1
    case "$v" in "0.66b2 1.45."*" 1.45."*) ;; *) return 1 ;; esac
}

# _venv_create PATH: python3 -m venv, installing python3-venv through apt when
# Debian's python3 lacks ensurepip.
_venv_create() {
    local venv="$1" py="${CELERIAC_BASE_PYTHON:-python3}"
    command -v "$py" >/dev/null 2>&1 || die "$py not found; install Python 3.9 or newer"
    if "$py" -m venv "$venv" >/dev/null 2>&1; then
        return 0
    fi
    log "'$py -m venv' failed (Debian's python3 needs python3-venv); installing it"
    # A failed run leaves a venv without pip behind; remove only that.
    [ -f "$venv/pyvenv.cfg" ] && rm -rf "$venv"
    local minor
    minor="$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    _apt_install python3-venv "python${minor}-venv"
    "$py" -m venv "$venv" >&2 || die "'$py -m venv $venv' still fails after installing python3-venv"
}

python_env() {
    local venv="${CELERIAC_VENV:-$HOME/.cache/celeriac/venv}"
    if _venv_ok "$venv"; then
        log "reusing venv $venv ($("$venv/bin/celery" --version))"
    else
        if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
            mkdir -p "$(dirname "$venv")"
            [ -f "$venv/pyvenv.cfg" ] && rm -rf "$venv"
            log "creating venv $venv"
            _venv_create "$venv"
        fi
        log "pip install ${CELERIAC_PY_PACKAGES[*]} into $venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "${CELERIAC_PY_PACKAGES[@]}" >&2 ||
            die "pip install into $venv failed"
        _venv_ok "$venv" || die "venv $venv has no working celery 5.7 / flower 2.2 / opentelemetry after pip install"
        log "venv ready: $("$venv/bin/celery" --version)"
    fi
    CELERIAC_VENV="$(cd "$venv" && pwd)"
    export CELERIAC_VENV
}

# A second venv for the API's client-side test tools: the official MCP client (`mcp`) and `schemathesis`.
# Kept apart from Celery's so their dependency pins never fight.
CELERIAC_API_PY_PACKAGES=('mcp==2.3.*' 'schemathesis==4.32.*')

_api_venv_ok() {
    local venv="$1"
    [ -x "$venv/bin/schemathesis" ] || return 1
    "$venv/bin/python" - <<'PY' >/dev/null 2>&1 || return 1
import importlib.metadata as m
assert m.version("mcp").startswith("2.3.")
assert m.version("schemathesis").startswith("4.32.")
from mcp import Client  # noqa: F401
from mcp.client.streamable_http import streamable_http_client  # noqa: F401
PY
}

# api_python_env: make the venv with mcp and schemathesis; exports CELERIAC_API_VENV.
api_python_env() {
    local venv="${CELERIAC_API_VENV:-$HOME/.cache/celeriac/venv-api}"
    if _api_venv_ok "$venv"; then
        log "reusing venv $venv (mcp, schemathesis)"
    else
        if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
            mkdir -p "$(dirname "$venv")"
            [ -f "$venv/pyvenv.cfg" ] && rm -rf "$venv"
            log "creating venv $venv"
            _venv_create "$venv"
        fi
        log "pip install ${CELERIAC_API_PY_PACKAGES[*]} into $venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "${CELERIAC_API_PY_PACKAGES[@]}" >&2 ||
            die "pip install into $venv failed"
        _api_venv_ok "$venv" || die "venv $venv has no working mcp 2.3 / schemathesis 4.32 after pip install"
    fi
    CELERIAC_API_VENV="$(cd "$venv" && pwd)"
    export CELERIAC_API_VENV
}

# ---------------------------------------------------------------------------
# cargo

cargo_env() {
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (rustup)"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/celeriac-target}"
}

# Benchmarks: a private redis-server on 127.0.0.1:$1 (files under $2) unless one already answers there.
# Call bench_redis_stop on exit; it shuts the server down only if bench_redis started it.
BENCH_REDIS_STARTED=
bench_redis_start() {
    local port="$1" dir="$2"
    if redis-cli -p "$port" ping >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
    BENCH_REDIS_STARTED="$port"
    local _
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
    die "redis-server on port $port did not start (see $dir/redis.log)"
}

bench_redis_stop() {
    if [ -n "$BENCH_REDIS_STARTED" ]; then
        redis-cli -p "$BENCH_REDIS_STARTED" shutdown nosave >/dev/null 2>&1 || true
        BENCH_REDIS_STARTED=
    fi
}

# ---------------------------------------------------------------------------
# the dashboard's npm packages (api/ui: uPlot, playwright-core, axe-core), pinned by api/ui/package-lock.json

# dashboard_node_modules: `npm ci` in api/ui when node_modules is missing or the lockfile changed since the last
# install (its SHA-256 is kept in node_modules/.celeriac-lock.sha256). Idempotent; a no-op when up to date.
# Without Node: an error under CI=true, else a warning (the dashboard tests then skip).
dashboard_node_modules() {
    local dir stamp want
    dir="$(repo_root)/api/ui"
    stamp="$dir/node_modules/.celeriac-lock.sha256"
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        if [ "${CI:-}" = "true" ]; then
            die "node and npm are needed for the dashboard tests (apt-get install nodejs npm)"
        fi
        log "WARNING: node/npm not found; the dashboard tests will skip"
        return 0
    fi
    want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    log "npm ci in api/ui (package-lock.json changed or node_modules missing)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in api/ui failed"
    echo "$want" >"$stamp"
}
