#!/usr/bin/env bash
# scripts/pg-backup.sh: back up, restore and verify celeriac's PostgreSQL.
#
#   scripts/pg-backup.sh backup  [--database-url URL] [--out DIR]
#   scripts/pg-backup.sh restore --from DIR [--database-url URL] [--maintenance-db NAME] [--no-verify]
#   scripts/pg-backup.sh verify  --from DIR [--database-url URL]
#   scripts/pg-backup.sh help
#
# backup   writes DIR/celeriac.dump (pg_dump custom format) and DIR/manifest.tsv:
#          per table its row count and a checksum of its rows, per sequence its
#          value, and the dump's SHA-256. The dump and the manifest come from one
#          snapshot (pg_dump --snapshot), so they agree even while the loader writes.
#          DIR defaults to ./celeriac-backup-<UTC time>; an existing backup is never
#          overwritten.
# restore  checks the dump against the manifest's SHA-256, creates the database
#          named by the URL (through the maintenance database, default postgres)
#          when it does not exist, refuses one that already has tables, restores
#          with pg_restore in one transaction (--no-owner --no-privileges: the
#          objects belong to the URL's user), then runs verify.
# verify   compares the manifest with the database named by the URL (and the dump's
#          SHA-256 when the dump is there) and names every table that differs.
#
# The URL is --database-url, else DATABASE_URL (postgres://user:pass@host:5432/db).
# A row's checksum is the md5 of its text form (with fixed TimeZone, DateStyle,
# IntervalStyle, extra_float_digits and bytea_output); a table's checksum is the
# sum of the first 64 bits of those, so row order does not matter and the
# database computes it in one pass without holding the rows.
#
# Needs: psql, pg_dump (backup), pg_restore (restore), sha256sum or shasum.
# PSQL, PG_DUMP and PG_RESTORE name other binaries (for example
# /usr/lib/postgresql/16/bin/pg_dump); pg_dump must be at least the server's
# major version.
#
# Exit status: 0 done (verify: everything matches), 1 error (a missing tool, an
# unreachable database, a damaged backup, a non-empty target), 2 usage,
# 3 verify found differences.
set -euo pipefail

prog="${0##*/}"

say() { printf '%s: %s\n' "$prog" "$*"; }
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}
usage_error() {
    printf '%s: %s (see %s help)\n' "$prog" "$*" "$prog" >&2
    exit 2
}

usage() {
    # The header comment, up to the first line that is not a comment.
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

psql_bin="${PSQL:-psql}"
pg_dump_bin="${PG_DUMP:-pg_dump}"
pg_restore_bin="${PG_RESTORE:-pg_restore}"

# need TOOL WHAT: the tool must be runnable, or say what it is for and where it comes from.
need() {
    command -v "$1" >/dev/null 2>&1 ||
        die "$1 not found (needed to $2); install the PostgreSQL client tools of the server's major version or newer (Debian: apt-get install postgresql-client; macOS: brew install libpq) or name the binary with ${3:-PATH}"
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | awk '{ print $1 }'
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | awk '{ print $1 }'
    else
        die "neither sha256sum nor shasum found (needed to checksum the dump); install coreutils"
    fi
}

need_sha() {
    command -v sha256sum >/dev/null 2>&1 || command -v shasum >/dev/null 2>&1 ||
        die "neither sha256sum nor shasum found (needed to checksum the dump); install coreutils"
}

# redact URL: the URL with its password replaced by ****.
redact() { printf '%s\n' "$1" | sed -E 's#^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*):[^@/]*@#\1:****@#'; }

# The session settings that fix the text form of timestamps, intervals, floats and bytea.
settings_sql() {
    cat <<'SQL'
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 1;
SET bytea_output = 'hex';
SQL
}

# The manifest's body: one line per table and per sequence outside the system
# schemas, tab-separated, sorted by name.
manifest_sql() {
    cat <<'SQL'
SELECT kind, name, a, b FROM (
    SELECT 'table' AS kind,
           format('%s.%s', n.nspname, c.relname) AS name,
           (xpath('/row/n/text()', q))[1]::text AS a,
           (xpath('/row/s/text()', q))[1]::text AS b
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN LATERAL query_to_xml(format(
        'SELECT count(*) AS n, coalesce(sum((''x'' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0) AS s FROM %I.%I t',
        n.nspname, c.relname), false, true, '') AS q
    WHERE c.relkind = 'r'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\_toast%'
      AND n.nspname NOT LIKE 'pg\_temp%'
    UNION ALL
    SELECT 'sequence',
           format('%s.%s', schemaname, sequencename),
           coalesce(last_value::text, 'unset'),
           '-'
    FROM pg_sequences
    WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
) m
ORDER BY name COLLATE "C", kind COLLATE "C";
SQL
}

# psql_run URL ARGS...: psql without .psqlrc, stopping at the first error, rows as tab-separated text.
psql_run() {
    local url="$1"
    shift
    PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-10}" "$psql_bin" -X -q -w -v ON_ERROR_STOP=1 -At -F "$(printf '\t')" -d "$url" "$@"
}

# url_db URL: the database name in the URL's path.
url_db() { printf '%s\n' "$1" | sed -E -n 's#^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*/([^?]*).*$#\1#p'; }
# url_with_db URL NAME: the URL naming another database.
url_with_db() { printf '%s\n' "$1" | sed -E "s#^([a-zA-Z][a-zA-Z0-9+.-]*://[^/]*)/[^?]*#\\1/$2#"; }

database_url=""
out_dir=""
from_dir=""
maintenance_db="postgres"
verify_after=1

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --database-url) [ $# -ge 2 ] || usage_error "$1 needs a value"; database_url="$2"; shift ;;
            --database-url=*) database_url="${1#*=}" ;;
            --out) [ $# -ge 2 ] || usage_error "$1 needs a value"; out_dir="$2"; shift ;;
            --out=*) out_dir="${1#*=}" ;;
            --from) [ $# -ge 2 ] || usage_error "$1 needs a value"; from_dir="$2"; shift ;;
            --from=*) from_dir="${1#*=}" ;;
            --maintenance-db) [ $# -ge 2 ] || usage_error "$1 needs a value"; maintenance_db="$2"; shift ;;
            --maintenance-db=*) maintenance_db="${1#*=}" ;;
            --no-verify) verify_after=0 ;;
            *) usage_error "unknown argument: $1" ;;
        esac
        shift
    done
    [ -n "$database_url" ] || database_url="${DATABASE_URL:-}"
    [ -n "$database_url" ] || usage_error "no database: pass --database-url URL or set DATABASE_URL"
    case "$database_url" in
        postgres://* | postgresql://*) ;;
        *) usage_error "the database URL must start with postgres:// or postgresql:// (got $(redact "$database_url"))" ;;
    esac
}

need_from() {
    [ -n "$from_dir" ] || usage_error "$1 needs --from DIR (a directory written by backup)"
    [ -f "$from_dir/manifest.tsv" ] || die "$from_dir/manifest.tsv not found: not a backup directory, or the backup did not finish"
    head -n 1 "$from_dir/manifest.tsv" | grep -q '^# celeriac pg-backup manifest 1$' ||
        die "$from_dir/manifest.tsv is not a celeriac pg-backup manifest (version 1)"
}

# manifest_value KEY: a header value of the manifest.
manifest_value() { awk -F '\t' -v k="# $1" '$1 == k { print $2; exit }' "$from_dir/manifest.tsv"; }

check_dump() {
    local want got
    [ -f "$from_dir/celeriac.dump" ] || die "$from_dir/celeriac.dump not found"
    want="$(manifest_value dump_sha256)"
    got="$(sha256_of "$from_dir/celeriac.dump")"
    [ "$want" = "$got" ] ||
        die "$from_dir/celeriac.dump does not match the manifest (SHA-256 $got, the manifest says $want): the dump was changed or damaged after the backup"
}

cmd_backup() {
    local stamp server_num server_major dump_version dump_major tmp rc sha
    need "$psql_bin" "read the row counts and checksums" PSQL
    need "$pg_dump_bin" "write the dump" PG_DUMP
    need_sha
    stamp="$(date -u '+%Y%m%dT%H%M%SZ')"
    [ -n "$out_dir" ] || out_dir="celeriac-backup-$stamp"
    [ ! -e "$out_dir/manifest.tsv" ] || die "$out_dir already holds a backup; pick another --out"
    mkdir -p "$out_dir"

    server_num="$(psql_run "$database_url" -c 'SHOW server_version_num')" ||
        die "cannot connect to $(redact "$database_url")"
    server_major=$((server_num / 10000))
    dump_version="$("$pg_dump_bin" --version)"
    dump_major="$(printf '%s\n' "$dump_version" | sed -E -n 's/.* ([0-9]+)(\.[0-9]+)*( .*)?$/\1/p')"
    if [ -n "$dump_major" ] && [ "$dump_major" -lt "$server_major" ]; then
        die "$dump_version cannot dump a PostgreSQL $server_major server; install the version $server_major client (postgresql-client-$server_major) and set PG_DUMP"
    fi

    tmp="$(mktemp -d "${TMPDIR:-/tmp}/pg-backup.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    # One psql session exports its snapshot, runs pg_dump on it (\!), then
    # counts and checksums in the same snapshot, so the manifest describes the
    # dump exactly, whatever was written meanwhile.
    export PGB_PG_DUMP="$pg_dump_bin" PGB_URL="$database_url" PGB_DUMP="$out_dir/celeriac.dump.partial"
    export PGB_DUMP_ERR="$tmp/pg_dump.err" PGB_DUMP_RC="$tmp/pg_dump.rc"
    {
        settings_sql
        printf '%s\n' 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;'
        printf '%s\n' 'SELECT pg_export_snapshot() AS pgb_snapshot \gset'
        printf '%s\n' '\setenv PGB_SNAPSHOT :pgb_snapshot'
        # shellcheck disable=SC2016
        printf '%s\n' '\! "$PGB_PG_DUMP" --snapshot="$PGB_SNAPSHOT" --format=custom --no-password --file="$PGB_DUMP" "$PGB_URL" 2>"$PGB_DUMP_ERR"; echo $? >"$PGB_DUMP_RC"'
        manifest_sql
        printf '%s\n' 'COMMIT;'
    } | psql_run "$database_url" >"$tmp/body.tsv" 2>"$tmp/psql.err" || {
        cat "$tmp/psql.err" >&2
        die "reading $(redact "$database_url") failed"
    }
    rc="$(cat "$PGB_DUMP_RC" 2>/dev/null || echo missing)"
    if [ "$rc" != 0 ]; then
        cat "$PGB_DUMP_ERR" >&2 2>/dev/null || true
        rm -f "$PGB_DUMP"
        die "pg_dump failed (exit status $rc)"
    fi
    mv "$PGB_DUMP" "$out_dir/celeriac.dump"
    sha="$(sha256_of "$out_dir/celeriac.dump")"
    {
        printf '# celeriac pg-backup manifest 1\n'
        printf '# created_at\t%s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')"
        printf '# database\t%s\n' "$(redact "$database_url")"
        printf '# server_version_num\t%s\n' "$server_num"
        printf '# pg_dump\t%s\n' "$dump_version"
        printf '# dump_sha256\t%s\n' "$sha"
        printf '# columns\tkind\tname\trows or value\tchecksum\n'
        cat "$tmp/body.tsv"
    } >"$tmp/manifest.tsv"
    # The manifest comes last: a directory with a manifest holds a finished backup.
    mv "$tmp/manifest.tsv" "$out_dir/manifest.tsv"
    say "backup of $(redact "$database_url") in $out_dir: $(grep -c '^table' "$out_dir/manifest.tsv") tables, $(grep -c '^sequence' "$out_dir/manifest.tsv") sequences, dump $(wc -c <"$out_dir/celeriac.dump" | tr -d ' ') bytes"
}

# compare EXPECTED ACTUAL: print differences, one line each; exit status 3 when there are any.
compare() {
    awk -F '\t' '
        FNR == NR { if ($0 !~ /^#/ && NF >= 4) { want[$1 " " $2] = $3 "\t" $4; order[++n] = $1 " " $2 } next }
        { if (NF >= 4) have[$1 " " $2] = $3 "\t" $4 }
        END {
            bad = 0
            for (i = 1; i <= n; i++) {
                k = order[i]
                if (!(k in have)) { print "MISSING " k ": in the backup, not in the database"; bad++; continue }
                if (want[k] != have[k]) {
                    split(want[k], w, "\t"); split(have[k], h, "\t")
                    if (k ~ /^table / && w[1] == h[1])
                        print "DIFFERS " k ": rows " w[1] " in both, checksum " w[2] " in the backup, " h[2] " in the database"
                    else if (k ~ /^table /)
                        print "DIFFERS " k ": rows " w[1] " in the backup, " h[1] " in the database"
                    else
                        print "DIFFERS " k ": value " w[1] " in the backup, " h[1] " in the database"
                    bad++
                }
                delete have[k]
            }
            for (k in have) { print "EXTRA " k ": in the database, not in the backup"; bad++ }
            exit bad > 0 ? 3 : 0
        }' "$1" "$2"
}

cmd_verify() {
    local tmp rc=0 tables sequences
    need_from verify
    need "$psql_bin" "read the row counts and checksums" PSQL
    if [ -f "$from_dir/celeriac.dump" ]; then
        need_sha
        check_dump
    fi
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/pg-backup.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    {
        settings_sql
        printf '%s\n' 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;'
        manifest_sql
        printf '%s\n' 'COMMIT;'
    } | psql_run "$database_url" >"$tmp/actual.tsv" 2>"$tmp/psql.err" || {
        cat "$tmp/psql.err" >&2
        die "reading $(redact "$database_url") failed"
    }
    compare "$from_dir/manifest.tsv" "$tmp/actual.tsv" >"$tmp/diff.txt" || rc=$?
    tables="$(grep -c '^table' "$from_dir/manifest.tsv" || true)"
    sequences="$(grep -c '^sequence' "$from_dir/manifest.tsv" || true)"
    if [ "$rc" -eq 0 ]; then
        say "verify: $(redact "$database_url") matches the backup in $from_dir ($tables tables, $sequences sequences: row counts, checksums and sequence values)"
        return 0
    fi
    [ "$rc" -eq 3 ] || die "comparing the manifest failed (awk exit status $rc)"
    cat "$tmp/diff.txt" >&2
    printf '%s: verify FAILED: %s difference(s) between %s and the backup in %s\n' \
        "$prog" "$(wc -l <"$tmp/diff.txt" | tr -d ' ')" "$(redact "$database_url")" "$from_dir" >&2
    exit 3
}

cmd_restore() {
    local db admin exists tables
    need_from restore
    need "$psql_bin" "create and check the target database" PSQL
    need "$pg_restore_bin" "restore the dump" PG_RESTORE
    need_sha
    check_dump
    db="$(url_db "$database_url")"
    [ -n "$db" ] || die "the URL names no database ($(redact "$database_url")); restore goes into the database named in its path"
    admin="$(url_with_db "$database_url" "$maintenance_db")"
    exists="$(psql_run "$admin" -v db="$db" <<'SQL'
SELECT count(*) FROM pg_database WHERE datname = :'db';
SQL
    )" || die "cannot connect to the maintenance database $(redact "$admin") (pass --maintenance-db NAME, or create the target database yourself)"
    if [ "$exists" = 0 ]; then
        psql_run "$admin" -v db="$db" <<'SQL' || die "cannot create database $db; create it yourself (CREATE DATABASE) and run restore again"
CREATE DATABASE :"db";
SQL
        say "created database $db"
    else
        tables="$(psql_run "$database_url" -c "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'")" ||
            die "cannot connect to $(redact "$database_url")"
        [ "$tables" = 0 ] ||
            die "database $db already has $tables tables, views or sequences; restore only goes into a fresh database (drop it, or restore under another name and switch DATABASE_URL)"
    fi
    say "restoring $from_dir/celeriac.dump into $(redact "$database_url")"
    "$pg_restore_bin" --exit-on-error --single-transaction --no-owner --no-privileges --no-password \
        --dbname="$database_url" "$from_dir/celeriac.dump" ||
        die "pg_restore failed; nothing was restored (one transaction); the database $db is left empty"
    say "restored"
    if [ "$verify_after" -eq 1 ]; then
        cmd_verify
    fi
}

cmd="${1:-}"
[ $# -eq 0 ] || shift
case "$cmd" in
    backup) parse_args "$@"; cmd_backup ;;
    restore) parse_args "$@"; cmd_restore ;;
    verify) parse_args "$@"; cmd_verify ;;
    help | -h | --help) usage ;;
    "") usage >&2; exit 2 ;;
    *) usage_error "unknown command: $cmd" ;;
esac
