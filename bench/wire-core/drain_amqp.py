"""Drain benchmark on RabbitMQ, one run: N pre-published no-op tasks drained by one consumer; prints one JSON line.

usage: drain_amqp.py KIND MODE N
  KIND: python-solo | python-prefork | rust | bare
        rust = celeriac-worker -c $RUST_CONC (default 2); bare = `celeriac-bench bare-drain`, a lapin consumer with
        the same prefetch (8) that only acknowledges each message: what RabbitMQ itself delivers on this machine.
  MODE: noresult (celeriac.noop sent with ignore_result) | result (results stored in Redis, the common deployment)

Procedure, as drain.py does on Redis: a fresh vhost (`celeriac_bench` on the local RabbitMQ, deleted and made
again) and an empty result Redis; N messages (Python-identical, written by `celeriac-bench publish`) published
to the durable queue `bench` with no consumer; the consumer starts; the clock starts when the queue holds fewer
than N ready messages and stops when it holds none and every task has run: all N results exist (result mode),
or the worker's own `stats` counts N runs (noresult mode; asked every 20 ms once the queue is empty, so the
clock may run up to one round trip long). `bare` reports its own time from first delivery to last ack.
After the clock stops, the worker's `inspect stats` must count N runs of celeriac.noop, nothing may be
dead-lettered and a stored result must be SUCCESS, so a rejection path cannot pass for a fast worker.
CPU of the consumer's process tree and of RabbitMQ (the beam.smp of the node) is read around the drain.
Environment: BENCH_AMQP (amqp://guest:guest@127.0.0.1:5672), BENCH_REDIS_PORT (6390), CELERIAC_BIN, CELERIAC_VENV.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drain import BIN, HERE, QUEUE, R, ROOT, VENV, cpu_s, rss_kb, tree  # noqa: E402
from drain import URL as REDIS_URL  # noqa: E402

VHOST = 'celeriac_bench'
AMQP = os.environ.get('BENCH_AMQP', 'amqp://guest:guest@127.0.0.1:5672').rstrip('/') + '/' + VHOST


def ctl(*args):
    subprocess.run(['rabbitmqctl', *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def reset_vhost():
    subprocess.run(['rabbitmqctl', 'delete_vhost', VHOST], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctl('add_vhost', VHOST)
    ctl('set_permissions', '-p', VHOST, 'guest', '.*', '.*', '.*')


def rabbit_pid():
    """The beam.smp of the RabbitMQ node BENCH_AMQP points at (the machine's own)."""
    out = subprocess.run(['rabbitmqctl', 'eval', 'list_to_integer(os:getpid()).'], capture_output=True, text=True)
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


class Ready:
    """Ready-message count of a queue through a passive declare (py-amqp, as kombu reads it)."""

    def __init__(self):
        import amqp
        host = AMQP.split('@', 1)[1].split('/', 1)[0]
        self.conn = amqp.Connection(host=host, userid='guest', password='guest', virtual_host=VHOST)
        self.conn.connect()
        self.ch = self.conn.channel()

    def __call__(self, queue=QUEUE):
        try:
            return self.ch.queue_declare(queue, passive=True).message_count
        except Exception:  # noqa: BLE001 - a missing queue (dead letters) counts as empty
            self.ch = self.conn.channel()
            return 0


def start(kind, n):
    env = dict(os.environ, CELERY_BROKER_URL=AMQP, CELERY_RESULT_BACKEND=REDIS_URL, PYTHONUNBUFFERED='1')
    log = open(os.path.join(HERE, 'results', 'worker-amqp-%s.log' % kind), 'w')
    if kind == 'rust':
        cmd = [os.path.join(BIN, 'celeriac-worker'), '-b', AMQP, '--result-backend', REDIS_URL, '-Q', QUEUE,
               '-n', 'bench@%h', '-c', os.environ.get('RUST_CONC', '2'), '--loglevel', 'warn']
        cwd = ROOT
    elif kind == 'bare':
        cmd = [os.path.join(BIN, 'celeriac-bench'), '-b', AMQP, 'bare-drain', str(n), '--queue', QUEUE]
        cwd = ROOT
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    else:
        pool = kind.split('-', 1)[1]
        cmd = [os.path.join(VENV, 'bin', 'celery'), '-A', 'pytasks', 'worker', '-n', 'bench@%h', '-Q', QUEUE,
               '--pool=%s' % pool, '--loglevel=WARNING']
        if pool == 'prefork':
            cmd += ['-c', '2']
        cwd = os.path.join(ROOT, 'tests', 'python')
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def app():
    from celery import Celery
    return Celery(broker=AMQP, backend=REDIS_URL)


def runs_counted(a):
    replies = a.control.broadcast('stats', reply=True, limit=1, timeout=1.0) or []
    for r in replies:
        for name, stats in r.items():
            if name.startswith('bench@'):
                return stats.get('total', {}).get('celeriac.noop', 0)
    return 0


def main():
    kind, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reset_vhost()
    R.flushdb()
    ids_file = os.path.join(HERE, 'results', 'ids.txt')
    pub = [os.path.join(BIN, 'celeriac-bench'), '-b', AMQP, 'publish', str(n), '--queue', QUEUE, '--ids', ids_file]
    pub += ['--task', 'celeriac.noop'] + (['--ignore-result'] if mode == 'noresult' else [])
    subprocess.run(pub, check=True, stdout=subprocess.DEVNULL)
    ready = Ready()
    assert ready() == n, ready()
    keys = ['celery-task-meta-%s' % i for i in open(ids_file).read().split()]
    load = open('/proc/loadavg').read().split()[:3]
    rpid = rabbit_pid()
    a = app() if kind != 'bare' else None
    p = start(kind, n)
    t_launch = time.perf_counter()
    t_start = None
    rss_max = 0
    last = 0
    while True:
        now = time.perf_counter()
        if now - t_launch > 900:
            p.kill()
            raise TimeoutError('drain did not finish')
        left = ready()
        if t_start is None and left < n:
            t_start = now
            cpu0 = sum(cpu_s(x) for x in tree(p.pid))
            rcpu0 = cpu_s(rpid) if rpid else 0.0
        if t_start is not None:
            if now - last > 0.25:
                rss_max = max(rss_max, rss_kb(tree(p.pid)))
                last = now
            if left == 0:
                if kind == 'bare':
                    if p.poll() is not None:
                        t_end = now
                        break
                elif mode == 'result':
                    if sum(R.exists(*keys[i:i + 1000]) for i in range(0, n, 1000)) == n:
                        t_end = now
                        break
                elif runs_counted(a) >= n:
                    t_end = time.perf_counter()
                    break
        time.sleep(0.01 if left else 0.02)
    cpu = sum(cpu_s(x) for x in tree(p.pid)) - cpu0
    rcpu = (cpu_s(rpid) - rcpu0) if rpid else 0.0
    rss_max = max(rss_max, rss_kb(tree(p.pid)))
    if kind == 'bare':
        own = json.loads(p.stdout.read().strip().splitlines()[-1])
        assert own['drained'] == n, own
        dt = own['seconds']
        ran = 'acked x%d' % n
    else:
        dt = t_end - t_start
        ran = verify(a, n, mode, keys, ready)
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
    print(json.dumps({
        'bench': 'drain-amqp', 'kind': kind, 'mode': mode, 'n': n, 'seconds': round(dt, 3),
        'tasks_per_s': round(n / dt, 1),
        # The bare consumer has exited when the clock stops, so its CPU cannot be read then.
        'worker_cpu_us_per_task': None if kind == 'bare' else round(cpu / n * 1e6, 1),
        'rabbitmq_cpu_us_per_task': round(rcpu / n * 1e6, 1), 'max_rss_mib': round(rss_max / 1024, 1),
        'loadavg_before': load, 'loadavg_after': open('/proc/loadavg').read().split()[:3],
        'verified': ran,
    }))


def verify(a, n, mode, keys, ready):
    """The drain ran the task it names: the worker's own stats count N runs of celeriac.noop, nothing was
    dead-lettered, and (with results) a stored result is SUCCESS."""
    ran = runs_counted(a)
    assert ran == n, 'the worker ran celeriac.noop %d times, not %d' % (ran, n)
    assert ready('celeriac:dead_letter') == 0, 'messages were dead-lettered'
    if mode == 'result':
        meta = json.loads(R.get(keys[0]))
        assert meta['status'] == 'SUCCESS', meta
    return 'celeriac.noop x%d' % ran


if __name__ == '__main__':
    main()
