#!/usr/bin/env python3
"""Seed bench/fuzz/corpus/<target>/ from the shared fixtures (nothing is copied into the repository).

Redis captures (*.raw) are kombu JSON envelopes as they are; RabbitMQ captures (JSON with `message.headers`,
`message.properties` and `message.body_b64`) become kombu envelopes for the envelope/task/event/pidbox targets and
`headers JSON + NUL + body` for amqp_message; Cowrie logs give one seed per line; worker-config.yaml files as they are.
"""
import base64, glob, hashlib, json, os, sys

fixtures, repo, out = sys.argv[1], sys.argv[2], sys.argv[3]
counts = {}


def put(target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
    counts[target] = counts.get(target, 0) + 1


def amqp_messages():
    for path in sorted(glob.glob(os.path.join(fixtures, "celery-wire-amqp", "*", "*.json"))):
        try:
            doc = json.load(open(path))
        except (ValueError, UnicodeDecodeError):
            continue
        stack = [doc]
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                if "body_b64" in v and isinstance(v.get("body_b64"), str):
                    yield path, v
                stack.extend(v.values())
            elif isinstance(v, list):
                stack.extend(v)


for path in sorted(glob.glob(os.path.join(fixtures, "celery-wire", "*", "*.raw"))):
    raw = open(path, "rb").read()
    base = os.path.basename(path)
    put("envelope", raw)
    if base.startswith("a"):
        put("task_message", raw)
    if "event" in path:
        put("event", raw)
    if "remote-control" in path:
        put("pidbox", raw)

for path, m in amqp_messages():
    body = base64.b64decode(m["body_b64"])
    headers = m.get("headers") or {}
    props = dict(m.get("properties") or {})
    env = {
        "body": m["body_b64"],
        "content-encoding": m.get("content_encoding", "utf-8"),
        "content-type": m.get("content_type", "application/json"),
        "headers": headers,
        "properties": {**props, "body_encoding": "base64", "delivery_info": {"exchange": "", "routing_key": "celery"},
                       "delivery_tag": "seed"},
    }
    raw = json.dumps(env).encode()
    put("envelope", raw)
    if "task-messages" in path:
        put("task_message", raw)
    if "events" in path:
        put("event", raw)
    if "remote-control" in path:
        put("pidbox", raw)
    put("amqp_message", json.dumps(headers).encode() + b"\0" + body)

for path in sorted(glob.glob(os.path.join(fixtures, "cowrie", "*", "*"))):
    if path.endswith((".gz", ".bz2", ".md")):
        continue
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            if i >= 400:
                break
            line = line.strip()
            if line and len(line) < 60000:
                put("cowrie_line", line)

for path in [os.path.join(repo, "worker-config.yaml"), *glob.glob(os.path.join(repo, "k3s", "**", "worker-config*.yaml"), recursive=True)]:
    if os.path.exists(path):
        put("worker_config", open(path, "rb").read())

print(json.dumps(counts, sort_keys=True))
