"""scripts/check-k3s-rendered.py: the project's own rules on a rendered K3s overlay (`kubectl kustomize` output),
the part neither the Kubernetes schemas nor checkov knows (run by scripts/check-manifests.sh).

    check-k3s-rendered.py RENDERED.yaml REPO_ROOT

Checks, each naming the object on failure:
- every pod (Deployment, StatefulSet, CronJob) and every container: runAsNonRoot, runAsUser 10001,
  readOnlyRootFilesystem, allowPrivilegeEscalation false, capabilities drop ALL, seccompProfile RuntimeDefault;
  cpu and memory requests and limits; an image with a pinned tag (not `latest`, not untagged);
  automountServiceAccountToken false; every writable volume an emptyDir, a PVC or read-only;
- every Secret key a pod reads is in k3s/secrets.env.template;
- every pod annotated prometheus.io/scrape has its prometheus.io/port among its container ports, and a
  NetworkPolicy admits namespace `monitoring` on that port;
- the KEDA objects (custom resources, which the Kubernetes schemas cannot validate): apiVersion keda.sh/v1alpha1,
  the ScaledObject's scaleTargetRef names a Deployment of the render, each trigger is a `redis` trigger on the
  in-cluster Redis Service whose listName is a queue the worker's profile consumes, its authenticationRef names a
  TriggerAuthentication of the render, whose secretTargetRef keys are in the Secret template; and a NetworkPolicy
  admits namespace `keda` to Redis;
- the worker's terminationGracePeriodSeconds is at least 300 (a warm shutdown finishes active tasks);
- kinds outside the Kubernetes API are exactly the KEDA kinds (the caller lets kubernetes-validate skip only them).
Prints one line per problem on stderr and a summary on stdout; exit 1 on any problem.
"""

import sys
from pathlib import Path

import yaml

KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}

problems: list[str] = []


def problem(where: str, what: str) -> None:
    problems.append(f"{where}: {what}")


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def pod_meta(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"].get("metadata") or {}
    return doc["spec"]["template"].get("metadata") or {}


def check_security(where: str, sc: dict, pod_level: bool) -> None:
    if sc.get("runAsNonRoot") is not True:
        problem(where, "runAsNonRoot is not true")
    if sc.get("runAsUser") != 10001:
        problem(where, f"runAsUser is {sc.get('runAsUser')!r}, not 10001")
    if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problem(where, "seccompProfile is not RuntimeDefault")
    if pod_level:
        return
    if sc.get("readOnlyRootFilesystem") is not True:
        problem(where, "readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problem(where, "allowPrivilegeEscalation is not false")
    if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
        problem(where, "capabilities.drop is not [ALL]")


def pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


def template_keys(root: Path) -> set[str]:
    keys = set()
    for line in (root / "k3s" / "secrets.env.template").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            keys.add(line.split("=", 1)[0])
    return keys


def selects(selector: dict, labels: dict) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        has = e["key"] in labels
        val = labels.get(e["key"])
        op = e["operator"]
        if op == "In" and (not has or val not in e["values"]):
            return False
        if op == "NotIn" and has and val in e["values"]:
            return False
        if op == "Exists" and not has:
            return False
        if op == "DoesNotExist" and has:
            return False
    return True


def admits(policies: list[dict], labels: dict, namespace: str, port: int) -> bool:
    """Some NetworkPolicy selecting a pod with `labels` admits pods of `namespace` on TCP `port`."""
    for np in policies:
        spec = np["spec"]
        if "Ingress" not in spec.get("policyTypes", []) or not selects(spec.get("podSelector") or {}, labels):
            continue
        for rule in spec.get("ingress") or []:
            ports = [p.get("port") for p in rule.get("ports") or []]
            if ports and port not in ports:
                continue
            for peer in rule.get("from") or []:
                ns = ((peer.get("namespaceSelector") or {}).get("matchLabels") or {})
                if ns.get("kubernetes.io/metadata.name") == namespace:
                    return True
    return False


def main() -> int:
    rendered, root = Path(sys.argv[1]), Path(sys.argv[2])
    docs = [d for d in yaml.safe_load_all(rendered.read_text(encoding="utf-8")) if d]
    secret_keys = template_keys(root)
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    policies = by_kind.get("NetworkPolicy", [])
    namespace = next((d["metadata"]["name"] for d in by_kind.get("Namespace", [])), "celeriac")

    worker_config = yaml.safe_load((root / "worker-config.yaml").read_text(encoding="utf-8"))
    worker_queues: set[str] = set()

    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        where = f"{kind}/{name}"
        if d["apiVersion"].split("/")[0].endswith("keda.sh"):
            if kind not in KEDA_KINDS:
                problem(where, "a KEDA kind this check does not know")
        if kind not in POD_KINDS:
            continue
        spec, meta = pod_spec(d), pod_meta(d)
        if spec.get("automountServiceAccountToken") is not False:
            problem(where, "automountServiceAccountToken is not false")
        check_security(f"{where} pod", spec.get("securityContext") or {}, pod_level=True)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        claims = {c["metadata"]["name"] for c in d["spec"].get("volumeClaimTemplates") or []}
        ports = set()
        for c in (spec.get("initContainers") or []) + spec["containers"]:
            cw = f"{where} container {c['name']}"
            check_security(cw, c.get("securityContext") or {}, pod_level=False)
            if not pinned(c["image"]):
                problem(cw, f"image {c['image']!r} has no pinned tag")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        problem(cw, f"no {r} in resources.{part}")
            for m in c.get("volumeMounts") or []:
                v = volumes.get(m["name"])
                writable_ok = m.get("readOnly") or m["name"] in claims or (v and ("emptyDir" in v or "persistentVolumeClaim" in v))
                if not writable_ok:
                    problem(cw, f"volume {m['name']} is writable but not an emptyDir or a claim")
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["key"] not in secret_keys:
                    problem(cw, f"reads Secret key {ref['key']} that k3s/secrets.env.template does not have")
            for p in c.get("ports") or []:
                ports.add(p["containerPort"])
            if name == "celeriac-worker" and "--profile" in (c.get("args") or []):
                profile = c["args"][c["args"].index("--profile") + 1]
                worker_queues = set(worker_config["profiles"][profile]["queues"])
        ann = meta.get("annotations") or {}
        if ann.get("prometheus.io/scrape") == "true":
            port = int(ann.get("prometheus.io/port", "0"))
            if port not in ports:
                problem(where, f"prometheus.io/port {port} is not a container port ({sorted(ports)})")
            elif not admits(policies, meta.get("labels") or {}, "monitoring", port):
                problem(where, f"no NetworkPolicy admits Prometheus (namespace monitoring) on port {port}")
        if name == "celeriac-worker" and spec.get("terminationGracePeriodSeconds", 30) < 300:
            problem(where, "terminationGracePeriodSeconds is below 300: a warm shutdown could be cut short")

    deployments = {d["metadata"]["name"] for d in by_kind.get("Deployment", [])}
    auths = {d["metadata"]["name"]: d for d in by_kind.get("TriggerAuthentication", [])}
    redis_labels = next((d["spec"]["template"]["metadata"]["labels"] for d in by_kind.get("StatefulSet", [])
                         if d["metadata"]["name"] == "redis"), {})
    for so in by_kind.get("ScaledObject", []):
        where = f"ScaledObject/{so['metadata']['name']}"
        if so["apiVersion"] != "keda.sh/v1alpha1":
            problem(where, f"apiVersion {so['apiVersion']} is not keda.sh/v1alpha1")
        target = so["spec"]["scaleTargetRef"]
        if target.get("kind", "Deployment") != "Deployment" or target["name"] not in deployments:
            problem(where, f"scaleTargetRef {target} names no Deployment of this render")
        lo, hi = so["spec"].get("minReplicaCount", 0), so["spec"].get("maxReplicaCount", 100)
        if not 1 <= lo <= hi:
            problem(where, f"minReplicaCount {lo} and maxReplicaCount {hi} are not 1 <= min <= max")
        listed = set()
        for i, t in enumerate(so["spec"].get("triggers") or []):
            tw = f"{where} trigger {i}"
            md = t.get("metadata") or {}
            if t.get("type") != "redis":
                problem(tw, f"type {t.get('type')!r}, not redis")
                continue
            if md.get("address") != f"redis.{namespace}.svc.cluster.local:6379":
                problem(tw, f"address {md.get('address')!r} is not the in-cluster Redis Service")
            if not str(md.get("listLength", "")).isdigit():
                problem(tw, "listLength is not a whole number")
            listed.add(md.get("listName"))
            if md.get("listName") not in worker_queues:
                problem(tw, f"listName {md.get('listName')!r} is not a queue of the worker's profile {sorted(worker_queues)}")
            ref = (t.get("authenticationRef") or {}).get("name")
            if ref not in auths:
                problem(tw, f"authenticationRef {ref!r} names no TriggerAuthentication of this render")
        if worker_queues - listed:
            problem(where, f"no trigger for the worker's queues {sorted(worker_queues - listed)}")
        if not admits(policies, redis_labels, "keda", 6379):
            problem(where, "no NetworkPolicy admits KEDA (namespace keda) to Redis on 6379")
    for name, ta in auths.items():
        for ref in ta["spec"].get("secretTargetRef") or []:
            if ref["key"] not in secret_keys:
                problem(f"TriggerAuthentication/{name}", f"key {ref['key']} is not in k3s/secrets.env.template")

    for p in problems:
        print(f"{rendered.name}: {p}", file=sys.stderr)
    pods = sum(len(by_kind.get(k, [])) for k in POD_KINDS)
    print(f"{rendered.name}: {len(docs)} objects, {pods} workloads, "
          f"{len(by_kind.get('ScaledObject', []))} ScaledObjects checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
