"""ETA tasks held in memory, one run: N `celeriac.noop` tasks with an ETA a day ahead are published (with the
worker stopped); the worker starts; after SETTLE seconds its RSS is read and Redis tells how many messages it took
(kombu's `unacked`) and how many are still waiting in the queue; then SIGTERM, and the warm shutdown is timed until
every message is back in the queue. Prints one JSON line.

usage: eta_hold.py KIND N [SETTLE]
  KIND: rust (celeriac-worker, default --eta-hold-max 10000) | rust-unbounded (--eta-hold-max 1000000000)
        | python-solo
Environment as drain.py (BENCH_REDIS_PORT, CELERIAC_BIN, CELERIAC_VENV).
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drain import BIN, HERE, QUEUE, R, ROOT, URL, VENV, rss_kb, tree  # noqa: E402


def start(kind):
    env = dict(os.environ, CELERY_BROKER_URL=URL, CELERY_RESULT_BACKEND=URL, PYTHONUNBUFFERED='1')
    log = open(os.path.join(HERE, 'results', 'worker-eta-%s.log' % kind), 'w')
    if kind.startswith('rust'):
        cmd = [os.path.join(BIN, 'celeriac-worker'), '-b', URL, '-Q', QUEUE, '-n', 'eta@%h', '-c', '2',
               '--loglevel', 'warn']
        if kind == 'rust-unbounded':
            cmd += ['--eta-hold-max', '1000000000']
        cwd = ROOT
    else:
        cmd = [os.path.join(VENV, 'bin', 'celery'), '-A', 'pytasks', 'worker', '-n', 'eta@%h', '-Q', QUEUE,
               '--pool=solo', '--loglevel=WARNING']
        cwd = os.path.join(ROOT, 'tests', 'python')
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def main():
    kind, n = sys.argv[1], int(sys.argv[2])
    settle = float(sys.argv[3]) if len(sys.argv) > 3 else 15.0
    R.flushdb()
    pub = [os.path.join(BIN, 'celeriac-bench'), '-b', URL, 'publish', str(n), '--queue', QUEUE,
           '--task', 'celeriac.noop', '--countdown', '86400']
    subprocess.run(pub, check=True, stdout=subprocess.DEVNULL)
    assert R.llen(QUEUE) == n, R.llen(QUEUE)
    load = open('/proc/loadavg').read().split()[:3]
    p = start(kind)
    time.sleep(settle)
    rss = rss_kb(tree(p.pid))
    held, waiting = R.hlen('unacked'), R.llen(QUEUE)
    t0 = time.perf_counter()
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(300)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    shutdown = time.perf_counter() - t0
    back = R.llen(QUEUE)
    print(json.dumps({
        'bench': 'eta-hold', 'kind': kind, 'n': n, 'settle_s': settle, 'rss_mib': round(rss / 1024, 1),
        'held': held, 'waiting_in_redis': waiting,
        'kib_per_held': round(rss / held, 1) if held else None,
        'warm_shutdown_s': round(shutdown, 2), 'back_in_queue': back, 'unacked_after': R.hlen('unacked'),
        'loadavg': load,
    }))
    assert back == n, 'the warm shutdown gave back %d of %d' % (back, n)


if __name__ == '__main__':
    main()
