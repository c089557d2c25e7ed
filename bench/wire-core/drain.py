"""Drain benchmark, one run: N pre-published no-op tasks drained by one worker; prints one JSON line.

usage: drain.py KIND MODE N
  KIND: python-solo | python-prefork | rust | rust-baseline | redis-limit
        (rust = celeriac-worker -c $RUST_CONC, default 2; rust-baseline = the same from $BASELINE_BIN;
        redis-limit = `celeriac-bench redis-limit`: the worker's delivery path with no task work, with the worker's
        prefetch 4 x $RUST_CONC: the same pop-and-record script, batched acks and, in result mode, batched result
        writes; Redis's own limit for this procedure on this machine)
  MODE: noresult (celeriac.noop sent with ignore_result) | result (celeriac.noop, result stored)
Both workers run a task named celeriac.noop (Rust built-in; Python in tests/python/pytasks.py).
Same procedure as shared/bench/python-celery/bench_drain.py: FLUSHDB; publish N messages (Python-identical
bytes, written by celeriac-bench) with the worker stopped; start the worker; the clock starts at the first
fetch (LLEN < N) and stops when the queue and `unacked` are empty (and all N result keys exist in result mode).
After the clock stops, `verify` checks that the worker really ran celeriac.noop N times (its own inspect stats),
so a worker that only rejects the messages (an unregistered task) cannot pass for a fast one.
Worker CPU (user+sys over the process tree) and Redis CPU are read around the drain; RSS is sampled.
Redis's `INFO commandstats` is reset after publishing and read after the drain: `redis_calls_per_task` is how many
times Redis ran each command per task (commands run inside Lua scripts included; the harness's own polling, LLEN,
HLEN and EXISTS, is left out).
Environment: BENCH_REDIS_PORT (6390), CELERIAC_BIN (target/release), CELERIAC_VENV.
"""
import json
import os
import subprocess
import sys
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..'))
PORT = int(os.environ.get('BENCH_REDIS_PORT', '6390'))
URL = 'redis://127.0.0.1:%d/0' % PORT
BIN = os.environ.get('CELERIAC_BIN', os.path.join(os.environ.get('CARGO_TARGET_DIR', os.path.join(ROOT, 'target')), 'release'))
# rust-baseline: the celeriac-worker built from an earlier commit (run.sh's BASELINE_REF), run beside the current one.
BASELINE_BIN = os.environ.get('BASELINE_BIN', '')
VENV = os.environ.get('CELERIAC_VENV', os.path.expanduser('~/.cache/celeriac/venv'))
R = redis.Redis(host='127.0.0.1', port=PORT, db=0)
QUEUE = 'bench'


def children(pid):
    out = []
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                with open('/proc/%s/stat' % d) as fh:
                    if int(fh.read().rsplit(')', 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def cpu_s(pid):
    try:
        with open('/proc/%d/stat' % pid) as fh:
            f = fh.read().rsplit(')', 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')
    except OSError:
        return 0.0


def tree(pid):
    return [pid] + children(pid)


def rss_kb(pids):
    total = 0
    for p in pids:
        try:
            with open('/proc/%d/status' % p) as fh:
                for line in fh:
                    if line.startswith('VmRSS:'):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def redis_cpu():
    i = R.info('cpu')
    return i['used_cpu_sys'] + i['used_cpu_user']


def log_path(kind):
    return os.path.join(HERE, 'results', 'worker-%s.log' % kind)


def start(kind, mode="noresult", n=0):
    env = dict(os.environ, CELERY_BROKER_URL=URL, CELERY_RESULT_BACKEND=URL, PYTHONUNBUFFERED='1')
    log = open(log_path(kind), 'w')
    if kind == 'redis-limit':
        prefetch = 4 * int(os.environ.get('RUST_CONC', '2'))
        cmd = [os.path.join(BIN, 'celeriac-bench'), '-b', URL, 'redis-limit', str(n), '--queue', QUEUE,
               '--prefetch', str(prefetch)] + (['--results'] if mode == 'result' else [])
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if kind in ('rust', 'rust-baseline'):
        bin_dir = BASELINE_BIN if kind == 'rust-baseline' else BIN
        cmd = [os.path.join(bin_dir, 'celeriac-worker'), '-b', URL, '-Q', QUEUE, '-n', 'bench@%h',
               '-c', os.environ.get('RUST_CONC', '2'), '--loglevel', 'warn']
        cwd = ROOT
    else:
        pool = kind.split('-', 1)[1]
        cmd = [os.path.join(VENV, 'bin', 'celery'), '-A', 'pytasks', 'worker', '-n', 'bench@%h', '-Q', QUEUE,
               '--pool=%s' % pool, '--loglevel=WARNING']
        if pool == 'prefork':
            cmd += ['-c', '2']
        cwd = os.path.join(ROOT, 'tests', 'python')
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def main():
    kind, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    R.flushdb()
    ids_file = os.path.join(HERE, 'results', 'ids.txt')
    pub = [os.path.join(BIN, 'celeriac-bench'), '-b', URL, 'publish', str(n), '--queue', QUEUE, '--ids', ids_file]
    pub += ['--task', 'celeriac.noop'] + (['--ignore-result'] if mode == 'noresult' else [])
    subprocess.run(pub, check=True, stdout=subprocess.DEVNULL)
    assert R.llen(QUEUE) == n, R.llen(QUEUE)
    keys = ['celery-task-meta-%s' % i for i in open(ids_file).read().split()]
    load = open('/proc/loadavg').read().split()[:3]
    R.config_resetstat()
    p = start(kind, mode, n)
    t_launch = time.perf_counter()
    t_start = None
    rss_max = 0
    last = 0
    while True:
        now = time.perf_counter()
        if now - t_launch > 900:
            p.kill()
            raise TimeoutError('drain did not finish')
        ll = R.llen(QUEUE)
        if t_start is None and ll < n:
            t_start = now
            cpu0 = sum(cpu_s(x) for x in tree(p.pid))
            rcpu0 = redis_cpu()
        if t_start is not None:
            if now - last > 0.25:
                rss_max = max(rss_max, rss_kb(tree(p.pid)))
                last = now
            if ll == 0 and R.hlen('unacked') == 0:
                if mode == 'noresult' or sum(R.exists(*keys[i:i + 1000]) for i in range(0, n, 1000)) == n:
                    t_end = now
                    break
        time.sleep(0.01)
    cpu = sum(cpu_s(x) for x in tree(p.pid)) - cpu0
    rcpu = redis_cpu() - rcpu0
    rss_max = max(rss_max, rss_kb(tree(p.pid)))
    calls = {}
    for name, st in R.info('commandstats').items():
        cmd = name.split('_', 1)[1] if name.startswith('cmdstat_') else name
        if cmd not in ('llen', 'hlen', 'exists', 'info', 'config|resetstat'):
            calls[cmd] = round(st['calls'] / n, 3)
    ran = verify_limit(p, n) if kind == 'redis-limit' else verify(n, mode, keys)
    p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
    dt = t_end - t_start
    print(json.dumps({
        'bench': 'drain', 'kind': kind, 'mode': mode, 'n': n, 'seconds': round(dt, 3),
        'tasks_per_s': round(n / dt, 1), 'worker_cpu_us_per_task': round(cpu / n * 1e6, 1),
        'redis_cpu_us_per_task': round(rcpu / n * 1e6, 1), 'max_rss_mib': round(rss_max / 1024, 1),
        'loadavg_before': load, 'loadavg_after': open('/proc/loadavg').read().split()[:3],
        'verified': ran, 'redis_calls_per_task': dict(sorted(calls.items(), key=lambda kv: -kv[1])),
    }))


def verify_limit(p, n):
    """The limit loop settled every message: it exited 0 and reported N messages (its own timing is in the log)."""
    rc = p.wait(60)
    assert rc == 0, 'celeriac-bench redis-limit exited with %r (see %s)' % (rc, log_path('redis-limit'))
    out = json.loads(open(log_path('redis-limit')).read().strip().splitlines()[-1])
    assert out['n'] == n, out
    assert R.llen('celeriac:dead_letter') == 0, 'messages were dead-lettered'
    return 'redis-limit x%d' % n


def verify(n, mode, keys):
    """The drain must have run the task it names, not a rejection path: the worker's own `inspect stats` counts
    N runs of celeriac.noop, nothing was dead-lettered, and (with results) a stored result is SUCCESS."""
    from celery import Celery
    app = Celery(broker=URL, backend=URL)
    replies = app.control.inspect(timeout=3).stats() or {}
    totals = [r.get('total', {}) for name, r in replies.items() if name.startswith('bench@')]
    assert totals, 'the benchmark worker did not answer inspect stats: %r' % replies
    ran = totals[0].get('celeriac.noop', 0)
    assert ran == n, 'the worker ran celeriac.noop %d times, not %d: %r' % (ran, n, totals[0])
    assert R.llen('celeriac:dead_letter') == 0, 'messages were dead-lettered'
    if mode == 'result':
        meta = json.loads(R.get(keys[0]))
        assert meta['status'] == 'SUCCESS', meta
    return 'celeriac.noop x%d' % ran


if __name__ == '__main__':
    main()
