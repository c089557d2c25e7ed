"""Chaos soak driver (bench/chaos/run.sh starts it): a mixed cluster on a private Redis (AOF, appendfsync always)
and a private PostgreSQL: two celeriac-worker processes (rust2 reaches Redis through proxy.py) and one Python
Celery worker on the queue `chaos`, the coordinator and the API; a publisher sending `celeriac.add` at a steady
rate, each task with a link callback to the queue `chaos.ledger` that no worker consumes, so every execution leaves
one message there (its `parent_id` is the task, its `origin` the executing process); faults on a schedule; then
counts published, completed, lost, run twice and dead-lettered, and each fault's time to recover.

Everything listens on 127.0.0.1 only. Output: a JSON report on stdout's last line and in OUT/report.json.
"""
import argparse
import base64
import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--bin", required=True, help="directory with celeriac-worker, -coordinator, -api")
ap.add_argument("--python", required=True)
ap.add_argument("--celery", required=True)
ap.add_argument("--pytasks", required=True, help="directory of pytasks.py")
ap.add_argument("--pg-bin", required=True)
ap.add_argument("--duration", type=float, default=660, help="seconds of load and faults")
ap.add_argument("--rate", type=float, default=90, help="tasks published per second")
ap.add_argument("--fault-every", type=float, default=18, help="seconds between faults")
ap.add_argument("--redis-port", type=int, default=16399)
ap.add_argument("--proxy-port", type=int, default=16400)
ap.add_argument("--proxy-control", type=int, default=16401)
ap.add_argument("--pg-port", type=int, default=15433)
ap.add_argument("--coord-port", type=int, default=18082)
ap.add_argument("--api-port", type=int, default=18081)
ap.add_argument("--visibility-timeout", type=float, default=30)
ap.add_argument("--drain-timeout", type=float, default=300)
args = ap.parse_args()

OUT = args.out
os.makedirs(OUT, exist_ok=True)
HERE = os.path.dirname(os.path.abspath(__file__))
REDIS = f"redis://127.0.0.1:{args.redis_port}/0"
PROXIED = f"redis://127.0.0.1:{args.proxy_port}/0"
PG_HOME = os.path.join(OUT, "pg")
PG_DATA = os.path.join(PG_HOME, "data")
# PostgreSQL refuses to run as root: as root, its commands run as the `postgres` user in a directory it owns.
AS_PG = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
PG_URL = f"postgres://postgres@127.0.0.1:{args.pg_port}/celeriac"
QUEUE, LEDGER = "chaos", "chaos.ledger"
t0 = time.time()


def log(*a):
    print(f"[{time.time() - t0:7.1f}s]", *a, flush=True)


sys.path.insert(0, args.pytasks)
os.environ["CELERY_BROKER_URL"] = REDIS
os.environ["CELERY_RESULT_BACKEND"] = REDIS
import redis  # noqa: E402  (the venv's redis-py, kombu's client)
from celery import Celery  # noqa: E402

rdb = redis.Redis(host="127.0.0.1", port=args.redis_port, db=0, socket_timeout=5, socket_connect_timeout=2)

# ----------------------------------------------------------------------------------------------------------------
# processes
# ----------------------------------------------------------------------------------------------------------------


class Proc:
    def __init__(self, name, cmd, env=None):
        self.name, self.cmd, self.env, self.p = name, cmd, env, None
        self.pids = []

    def start(self):
        logf = open(os.path.join(OUT, f"{self.name}.log"), "ab")
        env = dict(os.environ, **(self.env or {}))
        self.p = subprocess.Popen(self.cmd, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
        self.pids.append(self.p.pid)
        ALL_PIDS[self.name].append(self.p.pid)
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.p and self.p.poll() is None:
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                pass
            self.p.wait()

    def alive(self):
        return self.p is not None and self.p.poll() is None


def redis_proc():
    d = os.path.join(OUT, "redis")
    os.makedirs(d, exist_ok=True)
    return Proc("redis", ["redis-server", "--port", str(args.redis_port), "--bind", "127.0.0.1", "--dir", d,
                          "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "yes"])


def rust_worker(n, url):
    return Proc(f"rust{n}", [os.path.join(args.bin, "celeriac-worker"), "--broker", url, "--result-backend", url,
                             "-Q", QUEUE, "-c", "4", "-n", f"rust{n}@chaos", "--acks-late",
                             "--visibility-timeout", str(args.visibility_timeout), "--heartbeat-interval", "2",
                             "--without-mingle"])


def py_worker():
    env = {"PYTHONPATH": f"{HERE}:{args.pytasks}", "VISIBILITY_TIMEOUT": str(args.visibility_timeout)}
    return Proc("py1", [args.celery, "-A", "chaos_app", "worker", "-Q", QUEUE, "-n", "py1@chaos", "-P", "solo",
                        "--without-mingle", "--without-gossip", "-l", "INFO"], env)


def coordinator():
    return Proc("coordinator", [os.path.join(args.bin, "celeriac-coordinator"), "--broker", REDIS, "--config",
                                os.path.join(HERE, "..", "..", "worker-config.yaml"), "serve", "--bind",
                                f"127.0.0.1:{args.coord_port}"])


def api():
    return Proc("api", [os.path.join(args.bin, "celeriac-api"), "--broker", REDIS, "--database-url", PG_URL,
                        "--config", os.path.join(HERE, "..", "..", "worker-config.yaml"), "serve", "--bind",
                        f"127.0.0.1:{args.api_port}"])


def pg(cmd, check=True):
    return subprocess.run([*AS_PG, os.path.join(args.pg_bin, "pg_ctl"), "-D", PG_DATA, "-w", "-t", "60",
                           "-l", os.path.join(PG_HOME, "pg.log"), "-o", f"-p {args.pg_port} -k /tmp -c listen_addresses=127.0.0.1",
                           *cmd], check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return 200 <= r.status < 300
    except Exception:
        return False


def wait_for(what, cond, timeout=120, step=0.1):
    start = time.time()
    while time.time() - start < timeout:
        try:
            if cond():
                return time.time() - start
        except Exception:
            pass
        time.sleep(step)
    log(f"!! {what}: not within {timeout}s")
    return None


# ----------------------------------------------------------------------------------------------------------------
# publisher: steady rate, one id per task, retried with the same id until the broker confirms
# ----------------------------------------------------------------------------------------------------------------

client = Celery("chaos-client", broker=REDIS, backend=REDIS)
client.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry=False,
                   broker_transport_options={"visibility_timeout": args.visibility_timeout})
LINK = {"task": "celeriac.add", "args": [0, 0], "kwargs": {}, "options": {"queue": LEDGER},
        "subtask_type": None, "immutable": True}
published = []
published_at = {}
retried_ids = set()
ALL_PIDS = collections.defaultdict(list)
pub_stats = collections.Counter()
stop_publishing = threading.Event()


def publisher():
    interval = 1.0 / args.rate
    nxt = time.time()
    with client.connection_for_write() as conn:
        producer = client.amqp.Producer(conn)
        i = 0
        while not stop_publishing.is_set():
            tid = str(uuid.uuid4())
            tries = 0
            while True:
                tries += 1
                try:
                    client.send_task("celeriac.add", args=(i, 1), task_id=tid, queue=QUEUE, link=LINK,
                                     producer=producer, retry=False)
                    break
                except Exception as e:  # the broker is down or cut: same id again
                    pub_stats["errors"] += 1
                    if tries == 1:
                        pub_stats["tasks_retried"] += 1
                        retried_ids.add(tid)
                    time.sleep(0.2)
                    try:
                        conn.ensure_connection(max_retries=1)
                    except Exception:
                        pass
                    if stop_publishing.is_set() and tries > 50:
                        log("publisher: giving up on", tid, e)
                        break
            published.append(tid)
            published_at[tid] = round(time.time() - t0, 2)
            i += 1
            nxt += interval
            delay = nxt - time.time()
            if delay > 0:
                time.sleep(delay)
            # behind (the broker was down): no sleep until the schedule is caught up, so the count is rate x time


# ----------------------------------------------------------------------------------------------------------------
# probes: a task sent to one worker's own queue (`<node>.dq2`), not linked, not counted in the load
# ----------------------------------------------------------------------------------------------------------------


def probe(node, timeout=120):
    """Seconds until a task sent now to `node`'s direct queue has a result (None: not within timeout)."""
    tid = "probe-" + str(uuid.uuid4())
    start = time.time()
    while time.time() - start < timeout:
        try:
            client.send_task("celeriac.add", args=(1, 1), task_id=tid, queue=f"{node}.dq2", retry=False)
            break
        except Exception:
            time.sleep(0.2)
    key = f"celery-task-meta-{tid}"
    while time.time() - start < timeout:
        try:
            raw = rdb.get(key)
            if raw and json.loads(raw).get("status") == "SUCCESS":
                return time.time() - start
        except Exception:
            pass
        time.sleep(0.1)
    return None


def ledger_len():
    return rdb.llen(LEDGER)


def origin_of(name):
    return f"gen{procs[name].p.pid}@" if name == "py1" else WORKERS[name][0]


def executed_by(names, since, timeout=120):
    """Seconds until each process in `names` (its current pid) has run a task whose ledger entry was pushed after the
    ledger had `since` entries (None: not within timeout). LPUSH puts new entries at the head."""
    start = time.time()
    # A Rust worker publishes its callbacks with its node name as `origin`, a Python one with `gen<pid>@<host>`;
    # entries after `since` are all new.
    want = {origin_of(n) for n in names}
    seen = since
    while time.time() - start < timeout:
        try:
            n = ledger_len()
            if n > seen:
                for raw in rdb.lrange(LEDGER, 0, n - seen - 1):
                    origin = json.loads(raw).get("headers", {}).get("origin") or ""
                    want = {w for w in want if not origin.startswith(w)}
                seen = n
            if not want:
                return time.time() - start
        except Exception:
            pass
        time.sleep(0.2)
    return None


def proxy_cmd(cmd):
    import socket
    with socket.create_connection(("127.0.0.1", args.proxy_control), timeout=5) as s:
        s.sendall(cmd.encode() + b"\n")
        return s.recv(100)


# ----------------------------------------------------------------------------------------------------------------
# the cluster
# ----------------------------------------------------------------------------------------------------------------

procs = {}
os.makedirs(PG_HOME, exist_ok=True)
if AS_PG:
    import pwd
    pw = pwd.getpwnam("postgres")
    os.chown(PG_HOME, pw.pw_uid, pw.pw_gid)
subprocess.run([*AS_PG, os.path.join(args.pg_bin, "initdb"), "-D", PG_DATA, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
               check=True, stdout=subprocess.DEVNULL)
pg(["start"])
subprocess.run([os.path.join(args.pg_bin, "createdb"), "-h", "127.0.0.1", "-p", str(args.pg_port), "-U", "postgres",
                "celeriac"], check=True)
procs["redis"] = redis_proc().start()
wait_for("redis", lambda: rdb.ping())
procs["proxy"] = Proc("proxy", [sys.executable, os.path.join(HERE, "proxy.py"), str(args.proxy_port),
                                str(args.redis_port), str(args.proxy_control)]).start()
procs["rust1"] = rust_worker(1, REDIS).start()
procs["rust2"] = rust_worker(2, PROXIED).start()
procs["py1"] = py_worker().start()
procs["coordinator"] = coordinator().start()
procs["api"] = api().start()
for node in ("rust1@chaos", "rust2@chaos", "py1@chaos"):
    log(node, "first probe", probe(node))
log("coordinator healthz", wait_for("coordinator", lambda: http_ok(f"http://127.0.0.1:{args.coord_port}/healthz")))
log("api readyz", wait_for("api", lambda: http_ok(f"http://127.0.0.1:{args.api_port}/readyz"), timeout=180))

# ----------------------------------------------------------------------------------------------------------------
# faults
# ----------------------------------------------------------------------------------------------------------------

WORKERS = {"rust1": ("rust1@chaos", lambda: rust_worker(1, REDIS)),
           "rust2": ("rust2@chaos", lambda: rust_worker(2, PROXIED)),
           "py1": ("py1@chaos", py_worker)}


def kill_worker(name, down=2.0):
    node, make = WORKERS[name]
    procs[name].kill()
    time.sleep(down)
    since = ledger_len()
    procs[name] = make().start()
    return executed_by([name], since)


def restart_redis(down=2.0):
    procs["redis"].kill()
    time.sleep(down)
    procs["redis"] = redis_proc().start()
    start = time.time()
    wait_for("redis", lambda: rdb.ping(), timeout=60)
    # every worker runs tasks again
    r = executed_by(["rust1", "rust2", "py1"], ledger_len())
    return None if r is None else time.time() - start


def restart_pg(down=2.0):
    pg(["stop", "-m", "immediate"], check=False)
    time.sleep(down)
    start = time.time()
    pg(["start"])
    r = wait_for("api readyz after pg", lambda: http_ok(f"http://127.0.0.1:{args.api_port}/readyz"), timeout=120)
    return None if r is None else time.time() - start


def kill_coordinator(down=1.0):
    procs["coordinator"].kill()
    time.sleep(down)
    procs["coordinator"] = coordinator().start()
    return wait_for("coordinator", lambda: http_ok(f"http://127.0.0.1:{args.coord_port}/healthz"))


def net(kind, down=8.0):
    proxy_cmd(kind)
    time.sleep(down)
    since = ledger_len()
    proxy_cmd("heal")
    return executed_by(["rust2"], since)


SCHEDULE = [
    ("kill -9 rust1", lambda: kill_worker("rust1")),
    ("redis kill -9 + restart", restart_redis),
    ("kill -9 py1", lambda: kill_worker("py1")),
    ("net cut rust2<->redis 8s", lambda: net("cut")),
    ("kill -9 rust2", lambda: kill_worker("rust2")),
    ("postgres immediate stop + start", restart_pg),
    ("kill -9 coordinator", kill_coordinator),
    ("net blackhole rust2<->redis 8s", lambda: net("blackhole")),
]

pub_thread = threading.Thread(target=publisher, daemon=True)
pub_thread.start()
faults = []
k = 0
deadline = t0 + args.duration + (time.time() - t0)
time.sleep(min(args.fault_every, 10))
while time.time() < deadline:
    name, action = SCHEDULE[k % len(SCHEDULE)]
    at = time.time() - t0
    log(f"fault {k + 1}: {name}")
    try:
        rec = action()
    except Exception as e:
        log(f"fault {k + 1} raised {e!r}")
        rec = None
    faults.append({"n": k + 1, "fault": name, "at_s": round(at, 1),
                   "recovered_s": None if rec is None else round(rec, 2)})
    log(f"   recovered in {rec}")
    k += 1
    rest = args.fault_every - (time.time() - t0 - at)
    if rest > 0:
        time.sleep(rest)
stop_publishing.set()
pub_thread.join(timeout=120)
load_end = open("/proc/loadavg").read().split()[:3]
log(f"published {len(published)}; draining")

# ----------------------------------------------------------------------------------------------------------------
# drain and count
# ----------------------------------------------------------------------------------------------------------------


def pending():
    n = sum(rdb.llen(k) for k in (QUEUE, QUEUE + "\x06\x163", QUEUE + "\x06\x166", QUEUE + "\x06\x169"))
    return n + rdb.hlen("unacked")


ids = set(published)


def done_count():
    c = 0
    for i in range(0, len(published), 2000):
        chunk = published[i:i + 2000]
        vals = rdb.mget([f"celery-task-meta-{t}" for t in chunk])
        c += sum(1 for v in vals if v is not None)
    return c


drain_start = time.time()
quiet, last_done = 0, -1
while time.time() - drain_start < args.drain_timeout:
    try:
        p = pending()
        d = done_count()
    except Exception as e:
        log("drain:", e)
        time.sleep(1)
        continue
    if p == 0 and d >= len(ids):
        break
    if p == 0 and d == last_done:
        quiet += 1
        if quiet >= 15:  # nothing pending and no new result for 30 s: what is missing will not come
            break
    else:
        quiet = 0
    last_done = d
    time.sleep(2)
log(f"drained in {time.time() - drain_start:.0f}s (pending {pending()})")

status = collections.Counter()
have_result = set()
for i in range(0, len(published), 2000):
    chunk = published[i:i + 2000]
    for t, v in zip(chunk, rdb.mget([f"celery-task-meta-{t}" for t in chunk])):
        if v is not None:
            st = json.loads(v).get("status")
            status[st] += 1
            if st == "SUCCESS":
                have_result.add(t)

runs = collections.Counter()
origins = collections.Counter()
ledger_total = 0
for key in (LEDGER, LEDGER + "\x06\x163", LEDGER + "\x06\x166", LEDGER + "\x06\x169"):
    n = rdb.llen(key)
    for i in range(0, n, 5000):
        for raw in rdb.lrange(key, i, i + 4999):
            ledger_total += 1
            h = json.loads(raw).get("headers", {})
            parent = h.get("parent_id")
            if parent in ids:
                runs[parent] += 1
                origins[h.get("origin") or "?"] += 1

executed = have_result | set(runs)
lost = sorted(ids - executed)
twice = {t: c for t, c in runs.items() if c > 1}
dead = rdb.llen("celeriac:dead_letter")
py_pids = {f"gen{pid}" for pid in ALL_PIDS["py1"]}
by_worker = collections.Counter()
for o, c in origins.items():
    by_worker["py1@chaos" if o.split("@")[0] in py_pids else o] += c

report = {
    "duration_s": round(time.time() - t0, 1),
    "load_s": args.duration,
    "rate_per_s": args.rate,
    "published": len(published),
    "unique_ids": len(ids),
    "publish_errors": pub_stats["errors"],
    "publishes_retried": pub_stats["tasks_retried"],
    "completed": len(executed),
    "result_states": dict(status),
    "lost": len(lost),
    "lost_ids": lost[:20],
    "lost_detail": [{"id": t, "published_at_s": published_at.get(t), "publish_retried": t in retried_ids,
                     "last_fault_before": max((f for f in faults if f["at_s"] <= published_at.get(t, 0)),
                                              key=lambda f: f["at_s"], default=None)} for t in lost[:20]],
    "retried_ids_lost": len(set(lost) & retried_ids),
    "executions_in_ledger": sum(runs.values()),
    "run_twice_or_more": len(twice),
    "extra_runs": sum(c - 1 for c in twice.values()),
    "executions_by_origin": dict(by_worker),
    "dead_letters": dead,
    "faults": faults,
    "fault_count": len(faults),
    "load_average_end": load_end,
}

for name in list(procs):
    if name != "redis":
        procs[name].kill(signal.SIGTERM if name in ("rust1", "rust2", "py1") else signal.SIGKILL)
procs["redis"].kill()
pg(["stop", "-m", "fast"], check=False)
with open(os.path.join(OUT, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
print(json.dumps(report))
