#!/usr/bin/env bash
# Coverage-guided fuzzing of celeriac's decoders with cargo-fuzz (libFuzzer), on the stable toolchain.
#
#   bench/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default 300 s, every target)
#
# Needs `cargo install cargo-fuzz`. cargo-fuzz's sanitizer flags need nightly; without one, RUSTC_BOOTSTRAP=1 with
# `-s none` builds with coverage instrumentation only (libFuzzer itself is built by libfuzzer-sys with the machine's
# C++ compiler). Seeds come from the shared fixtures at run time ($CELERIAC_SHARED/fixtures); the corpus grows in
# bench/fuzz/corpus/<target>, crashes land in bench/fuzz/artifacts/<target>, and one line per target (executions,
# coverage at start, at three quarters of the executions and at the end, corpus size, crashes) goes to
# bench/fuzz/results/summary.tsv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
shared="${CELERIAC_SHARED:-$repo/../shared}"
secs="${1:-300}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(envelope task_message amqp_message event pidbox cowrie_line worker_config)
fi
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/celeriac-fuzz-target}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 1; }

cd "$here"
python3 "$here/seed.py" "$shared/fixtures" "$repo" "$here/corpus"
cargo fuzz build -s none -O --fuzz-dir "$here"
mkdir -p "$here/results"
summary="$here/results/summary.tsv"
[ -f "$summary" ] || printf 'date\ttarget\tseconds\texecs\texec_per_s\tcov_start\tcov_3/4\tcov_end\tft_end\tcorpus_end\tcrashes\tloadavg\n' >"$summary"
for t in "${targets[@]}"; do
    log="$here/results/$t.log"
    mkdir -p "$here/artifacts/$t"
    echo "== $t for ${secs}s"
    # -s none: no sanitizer; -rss_limit_mb and -malloc_limit_mb turn unbounded allocations into findings too.
    set +e
    cargo fuzz run -s none -O --fuzz-dir "$here" "$t" "$here/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=65536 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$here/artifacts/$t/" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov0=$(grep -m1 'INITED' "$log" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || true)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov1=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || true)
    ft1=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || true)
    corp=$(echo "$last" | grep -o 'corp: [0-9]*' | grep -o '[0-9]*' || true)
    # Coverage when three quarters of the executions were done: how much the last quarter still found.
    cov34=$(grep -E '^#[0-9]+' "$log" | awk -v lim="$(( ${execs:-0} * 3 / 4 ))" \
        '{ n = substr($1, 2) + 0; if (n <= lim) for (i = 1; i < NF; i++) if ($i == "cov:") c = $(i + 1) } END { print c }')
    crashes=$(find "$here/artifacts/$t" -type f | wc -l)
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "$secs" "${execs:-?}" "${eps:-?}" \
        "${cov0:-?}" "${cov34:-?}" "${cov1:-?}" "${ft1:-?}" "${corp:-?}" "$crashes" "$load" >>"$summary"
    echo "   rc=$rc execs=${execs:-?} cov ${cov0:-?} -> ${cov1:-?} crashes=$crashes (log: $log)"
done
column -t -s $'\t' "$summary"
