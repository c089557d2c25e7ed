#!/usr/bin/env bash
# scripts/check-manifests.sh: check that every YAML file under k3s/ parses and
# that every document in it has apiVersion, kind and metadata.name; and the
# Prometheus configuration and alert rules in deploy/prometheus/ with the real
# promtool (`check config`, and the alerts' unit tests with `test rules`).
#
# Uses the project venv (scripts/python-env.sh) and installs PyYAML into it
# when missing; installs Debian's `prometheus` (for promtool) when missing.
# For k3s/: syntax and shape only, no cluster, no schema validation.
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

"$py" - "$root"/k3s/*.yaml <<'PY'
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
            if "resources" not in doc:
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

if ! command -v promtool >/dev/null 2>&1; then
    _apt_install prometheus
fi
promtool check config "$root/deploy/prometheus/prometheus.yml" >&2 || die "promtool check config failed"
(cd "$root/deploy/prometheus" && promtool test rules alerts_test.yml) >&2 || die "the alert rules' unit tests failed"
log "prometheus: config valid, alert rule tests pass"
