#!/usr/bin/env bash
# scripts/mac-worker.sh: start and stop a native celeriac-worker on a
# workstation (an M4 Mac, a GPU box) that joins the cluster on demand.
#
#   scripts/mac-worker.sh start | stop | status | logs [-f] | help
#
# Self-contained (needs no other file of the repository) and written for the
# bash 3.2 that macOS ships, so it can be copied to a workstation as is.
#
# Settings, from the environment or from
# ${XDG_CONFIG_HOME:-$HOME/.config}/celeriac/worker.env (KEY=value lines, sourced):
#   CELERY_BROKER_URL     required: the cluster's Redis, e.g. redis://:PASSWORD@storage.lan:30379/0
#   CELERY_RESULT_BACKEND optional, default: the broker URL
#   DATABASE_URL          optional: PostgreSQL for the analysis tasks
#   CELERIAC_QUEUES       queues to consume (default celery,longtail)
#   CELERIAC_NODENAME     node name (default mac@%h; %h is the host name)
#   CELERIAC_CONCURRENCY  -c N (default: the worker's own default)
#   CELERIAC_PROFILE      --profile NAME from worker-config.yaml (default: none)
#   CELERIAC_CONFIG       worker-config.yaml for --profile
#   CELERIAC_LOGLEVEL     --loglevel (default info)
#   CELERIAC_WORKER_BIN   the binary (default: celeriac-worker on PATH, then
#                         target/release and target/debug of this checkout)
#   CELERIAC_STOP_TIMEOUT seconds to wait after SIGTERM before SIGQUIT (default 60)
#   CELERIAC_START_TIMEOUT seconds `start` waits for the worker to say it is
#                         ready (connected to the broker; default 30)
#
# Files: ${XDG_STATE_HOME:-$HOME/.local/state}/celeriac/mac-worker.pid and mac-worker.log.
# `start` runs the worker under nohup in the background (not with its own
# --detach, so that its first error messages still reach the log), records its
# pid and waits until the worker logs "celeriac-worker ready".
# `stop` sends SIGTERM (warm shutdown: active tasks finish, reserved ones go
# back to the queue), waits up to CELERIAC_STOP_TIMEOUT seconds, then sends
# SIGQUIT (cold shutdown).
# Exit status: 0 done; 1 error (no broker URL, no binary, the worker exited at
# once); 2 usage; `status`: 3 not running; `start`: 4 the worker runs but was
# not ready within CELERIAC_START_TIMEOUT (it keeps retrying the broker: look at
# `logs`, then `stop` it or wait).
set -euo pipefail

prog="$(basename "$0")"
state_dir="${XDG_STATE_HOME:-$HOME/.local/state}/celeriac"
pidfile="$state_dir/mac-worker.pid"
logfile="$state_dir/mac-worker.log"
envfile="${XDG_CONFIG_HOME:-$HOME/.config}/celeriac/worker.env"

say() { printf '%s: %s\n' "$prog" "$*"; }
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}

usage() {
    # The header comment, up to the first line that is not a comment.
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

load_env() {
    if [ -f "$envfile" ]; then
        set -a
        # shellcheck disable=SC1090
        . "$envfile"
        set +a
    fi
}

find_worker() {
    if [ -n "${CELERIAC_WORKER_BIN:-}" ]; then
        [ -x "$CELERIAC_WORKER_BIN" ] || die "CELERIAC_WORKER_BIN=$CELERIAC_WORKER_BIN is not an executable file"
        printf '%s\n' "$CELERIAC_WORKER_BIN"
        return
    fi
    if command -v celeriac-worker >/dev/null 2>&1; then
        command -v celeriac-worker
        return
    fi
    local here root candidate
    here="$(cd "$(dirname "$0")" && pwd)"
    root="$(cd "$here/.." && pwd)"
    for candidate in \
        "${CARGO_TARGET_DIR:-$root/target}/release/celeriac-worker" \
        "$HOME/.cache/celeriac-target/release/celeriac-worker" \
        "${CARGO_TARGET_DIR:-$root/target}/debug/celeriac-worker" \
        "$HOME/.cache/celeriac-target/debug/celeriac-worker"; do
        if [ -x "$candidate" ]; then
            printf '%s\n' "$candidate"
            return
        fi
    done
    die "celeriac-worker not found; build it with 'cargo build --release -p celeriac-worker' (or 'cargo install --path workers') or set CELERIAC_WORKER_BIN"
}

# alive PID: the process exists and is not a zombie (a worker whose parent
# shell is gone may stay a zombie until someone reaps it; it is not running).
alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state="$(ps -o stat= -p "$1" 2>/dev/null || true)"
    case "$state" in
        Z*) return 1 ;;
    esac
    return 0
}

# running_pid: print the recorded pid if that process is alive and is a
# celeriac-worker (its command line names the binary); remove a stale pidfile.
running_pid() {
    local pid args name
    [ -f "$pidfile" ] || return 1
    pid="$(head -n 1 "$pidfile" | tr -dc '0-9')"
    name="$(sed -n 2p "$pidfile")"
    if [ -n "$pid" ] && alive "$pid"; then
        args="$(ps -p "$pid" -o args= 2>/dev/null || true)"
        case "$args" in
            *celeriac-worker* | *"${name:-celeriac-worker}"*)
                printf '%s\n' "$pid"
                return 0
                ;;
        esac
    fi
    rm -f "$pidfile"
    return 1
}

# wait_gone PID SECONDS: true once PID has exited.
wait_gone() {
    local pid="$1" left="$2"
    while alive "$pid"; do
        [ "$left" -gt 0 ] || return 1
        sleep 1
        left=$((left - 1))
    done
}

cmd_start() {
    local pid worker args offset waited timeout
    if pid="$(running_pid)"; then
        say "already running (pid $pid), log $logfile"
        return 0
    fi
    load_env
    [ -n "${CELERY_BROKER_URL:-}" ] ||
        die "CELERY_BROKER_URL is not set; export it or put it in $envfile (e.g. CELERY_BROKER_URL=redis://:PASSWORD@storage.lan:30379/0)"
    export CELERY_BROKER_URL
    [ -z "${CELERY_RESULT_BACKEND:-}" ] || export CELERY_RESULT_BACKEND
    [ -z "${DATABASE_URL:-}" ] || export DATABASE_URL
    [ -z "${CELERIAC_CONFIG:-}" ] || export CELERIAC_CONFIG
    worker="$(find_worker)"

    args=(-n "${CELERIAC_NODENAME:-mac@%h}" -Q "${CELERIAC_QUEUES:-celery,longtail}" -E
        --loglevel "${CELERIAC_LOGLEVEL:-info}")
    if [ -n "${CELERIAC_CONCURRENCY:-}" ]; then args+=(-c "$CELERIAC_CONCURRENCY"); fi
    if [ -n "${CELERIAC_PROFILE:-}" ]; then args+=(--profile "$CELERIAC_PROFILE"); fi

    mkdir -p "$state_dir"
    touch "$logfile"
    offset="$(wc -c <"$logfile" | tr -d ' ')"
    printf '\n==== %s: %s %s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$worker" "${args[*]}" >>"$logfile"
    # Job control on: without it bash starts background commands with SIGINT
    # and SIGQUIT ignored, and `stop` could not do a cold shutdown. It also puts
    # the worker in its own process group, away from the terminal's Ctrl-C.
    set -m
    NO_COLOR=1 nohup "$worker" "${args[@]}" >>"$logfile" 2>&1 </dev/null &
    pid=$!
    set +m
    printf '%s\n%s\n' "$pid" "$(basename "$worker")" >"$pidfile"
    # A worker that rejects its flags exits at once; one that cannot reach the
    # broker keeps retrying and is not ready.
    timeout="${CELERIAC_START_TIMEOUT:-30}"
    waited=0
    while ! tail -c +"$((offset + 1))" "$logfile" | grep -q 'celeriac-worker ready'; do
        if ! alive "$pid"; then
            rm -f "$pidfile"
            printf '%s: error: celeriac-worker exited right after starting; last log lines:\n' "$prog" >&2
            tail -n 20 "$logfile" >&2
            exit 1
        fi
        if [ "$waited" -ge "$timeout" ]; then
            printf '%s: warning: celeriac-worker (pid %s) is running but not ready after %ss (is the broker reachable?); last log lines:\n' "$prog" "$pid" "$timeout" >&2
            tail -n 5 "$logfile" >&2
            printf '%s: it keeps retrying; follow it with `%s logs -f`, or `%s stop`\n' "$prog" "$prog" "$prog" >&2
            exit 4
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "started celeriac-worker (pid $pid) as ${CELERIAC_NODENAME:-mac@%h} on queues ${CELERIAC_QUEUES:-celery,longtail}, log $logfile"
}

cmd_stop() {
    local pid timeout
    timeout="${CELERIAC_STOP_TIMEOUT:-60}"
    if ! pid="$(running_pid)"; then
        say "not running"
        return 0
    fi
    say "SIGTERM to pid $pid (warm shutdown, waiting up to ${timeout}s for active tasks)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$timeout"; then
        say "still running after ${timeout}s; SIGQUIT (cold shutdown)"
        kill -QUIT "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 15; then
            die "pid $pid did not exit after SIGQUIT; look at $logfile, then 'kill -9 $pid' if you must (its reserved tasks return after the visibility timeout)"
        fi
    fi
    rm -f "$pidfile"
    say "stopped"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        say "running (pid $pid), log $logfile"
        return 0
    fi
    say "not running"
    return 3
}

cmd_logs() {
    [ -f "$logfile" ] || die "no log yet at $logfile"
    if [ "${1:-}" = "-f" ]; then
        tail -n 100 -f "$logfile"
    else
        tail -n 100 "$logfile"
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    logs) cmd_logs "${2:-}" ;;
    help | -h | --help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
