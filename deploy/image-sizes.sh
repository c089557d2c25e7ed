#!/usr/bin/env bash
# deploy/image-sizes.sh: build each runtime image's file system without a Docker engine, run its binaries in it,
# and report its size as base plus binaries (docs/deployment.md, "Sizes").
#
#   deploy/image-sizes.sh            # release build, then one root file system per image under $OUT
#   OUT=/tmp/rootfs deploy/image-sizes.sh
#
# The runtime base of every image is gcr.io/distroless/base-nossl-debian12:nonroot plus libgcc_s.so.1 from the
# builder (deploy/Dockerfile.*). Distroless builds that base from Debian 12 packages: base-files, netbase, tzdata and
# the CA bundle (its "static" image) and libc6 (base/config.bzl: BASE_NOSSL_PACKAGES). This script unpacks the same
# packages, as Debian 12 ships them today, into a directory with `dpkg-deb -x`: whole packages, so the base measured
# here is a little larger than distroless's (which keeps only the CA bundle of ca-certificates).
# Then, per image, it copies the binaries the Dockerfile copies, stripped as the image build strips them
# (CARGO_PROFILE_RELEASE_STRIP=symbols there, `strip --strip-all` here), checks that they need no shared library
# the base lacks, and runs each one inside the file system with chroot as uid 10001 on a read-only bind mount.
# It exits non-zero if an image reaches 50 MB (50,000,000 bytes) or a binary does not run.
# Needs: Debian 12 (the packages must be bookworm's, as in the image), root (chroot, mount), apt-get, dpkg-deb.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
source "$ROOT/scripts/lib.sh"
cargo_env
OUT=${OUT:-$HOME/.cache/celeriac/image-rootfs}
LIMIT=50000000

[ "$(id -u)" = 0 ] || die "needs root (chroot and a read-only bind mount)"
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || die "the base packages must be Debian 12's (bookworm); this is ${PRETTY_NAME:-unknown}"

log "building the release binaries"
cargo build --release --locked -q -p celeriac-api -p celeriac-worker -p celeriac-cli -p celeriac-coordinator -p cowrie-loader
BIN="$CARGO_TARGET_DIR/release"

rm -rf "$OUT"
mkdir -p "$OUT/debs" "$OUT/base"
log "unpacking distroless base-nossl-debian12's packages from Debian 12"
(cd "$OUT/debs" && apt-get download -q -o APT::Sandbox::User=root base-files netbase tzdata ca-certificates libc6 >/dev/null)
for deb in "$OUT"/debs/*.deb; do
    dpkg-deb -x "$deb" "$OUT/base"
done
# What the Dockerfiles add to the base: libgcc_s (unwinding; every Rust binary links it), into /usr/lib, which is on
# the dynamic loader's default search path on every Debian architecture.
install -m 0644 "$(readlink -f "$(gcc -print-file-name=libgcc_s.so.1)")" "$OUT/base/usr/lib/libgcc_s.so.1"
# distroless's passwd/group give uid 65532 (nonroot); the images run as 10001, which needs no entry.
base_bytes=$(du -sb "$OUT/base" | cut -f1)

# image -> the binaries its Dockerfile copies
declare -A IMAGES=(
    [celeriac-api]="celeriac-api"
    [celeriac-coordinator]="celeriac-coordinator"
    [celeriac-worker]="celeriac-worker celeriac"
    [celeriac-loader]="cowrie-loader"
)
# what the base provides: libc6's libraries and libgcc_s
allowed="libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libgcc_s.so.1 ld-linux-x86-64.so.2"

# Start the image's service inside its file system (read-only, uid 10001, the host's network, so the machine's Redis
# and PostgreSQL on 127.0.0.1 serve as the cluster's) and ask the image's HEALTHCHECK command whether it is up.
serve_and_probe() {
    local image=$1 fs=$2 redis="redis://127.0.0.1:6379/14" serve=() probe=() envs=() pid ok=1
    case "$image" in
        celeriac-api)
            serve=(/usr/local/bin/celeriac-api --broker "$redis" --database-url "${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/celeriac}" serve --bind 127.0.0.1:18081)
            probe=(/usr/local/bin/celeriac-api healthcheck --port 18081) ;;
        celeriac-coordinator)
            envs=(CELERIAC_CONFIG=/etc/celeriac/worker-config.yaml)
            serve=(/usr/local/bin/celeriac-coordinator --broker "$redis" serve --bind 127.0.0.1:18082)
            probe=(/usr/local/bin/celeriac-coordinator healthcheck --port 18082) ;;
        celeriac-worker)
            envs=(CELERIAC_METRICS_PORT=19808)
            serve=(/usr/local/bin/celeriac-worker --broker "$redis" -Q image-check -n image-check@%h --metrics-port 19808)
            probe=(/usr/local/bin/celeriac-worker --healthcheck) ;;
        *) return 0 ;;
    esac
    mkdir -p "$fs/etc/celeriac"
    cp "$ROOT/worker-config.yaml" "$fs/etc/celeriac/worker-config.yaml"
    mount --bind "$fs" "$fs" && mount -o remount,bind,ro "$fs"
    # chroot passes the environment on, as the image's ENV lines would.
    env "${envs[@]}" chroot --userspec=10001:10001 "$fs" "${serve[@]}" >"$OUT/$image.log" 2>&1 &
    pid=$!
    for _ in $(seq 60); do
        if env "${envs[@]}" chroot --userspec=10001:10001 "$fs" "${probe[@]}" >/dev/null 2>&1; then ok=0; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    umount "$fs"
    if [ "$ok" = 0 ]; then
        log "$image: served from a read-only root as uid 10001; its HEALTHCHECK command passed"
    else
        log "$image: its service did not pass its HEALTHCHECK in the image's file system (log: $OUT/$image.log)"
        tail -5 "$OUT/$image.log" >&2
    fi
    return "$ok"
}

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1000000 }'; }
failed=0
printf '| image | base | binaries | total | under 50 MB |\n|---|---|---|---|---|\n' >"$OUT/sizes.md"
for image in celeriac-api celeriac-coordinator celeriac-worker celeriac-loader; do
    fs="$OUT/$image"
    cp -a "$OUT/base" "$fs"
    mkdir -p "$fs/usr/local/bin"
    bin_bytes=0
    parts=""
    for b in ${IMAGES[$image]}; do
        install -m 0555 "$BIN/$b" "$fs/usr/local/bin/$b"
        strip --strip-all "$fs/usr/local/bin/$b"
        size=$(stat -c %s "$fs/usr/local/bin/$b")
        bin_bytes=$((bin_bytes + size))
        parts="${parts:+$parts + }$(mb "$size") MB ($b)"
        for lib in $(readelf -d "$fs/usr/local/bin/$b" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
            case " $allowed " in
                *" $lib "*) ;;
                *) log "$image: $b needs $lib, which the base does not have"; failed=1 ;;
            esac
        done
        # Run it in the image's file system, read-only, as the images' user.
        mount --bind "$fs" "$fs" && mount -o remount,bind,ro "$fs"
        if out=$(chroot --userspec=10001:10001 "$fs" "/usr/local/bin/$b" --version 2>&1); then
            log "$image: $b runs in the base as uid 10001 on a read-only root: $out"
        else
            log "$image: $b does not run in the base: $out"
            failed=1
        fi
        umount "$fs"
    done
    serve_and_probe "$image" "$fs" || failed=1
    total=$((base_bytes + bin_bytes))
    ok=yes
    [ "$total" -lt "$LIMIT" ] || { ok=no; failed=1; }
    printf '| `%s` | %s MB | %s | %s MB | %s |\n' "$image" "$(mb "$base_bytes")" "$parts" "$(mb "$total")" "$ok" \
        >>"$OUT/sizes.md"
done
echo "# $(date -u +%FT%TZ) $(git -C "$ROOT" rev-parse --short HEAD) base packages:" \
    "$(cd "$OUT/debs" && ls ./*.deb | sed 's|^\./||' | tr '\n' ' ')"
cat "$OUT/sizes.md"
exit "$failed"
