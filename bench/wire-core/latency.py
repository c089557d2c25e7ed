"""Round-trip latency, one run: a worker idles on the queue; `celeriac-bench latency` (Rust client) or a Python
client makes N sequential calls of celeriac.noop and prints p50/p90/p99 as one JSON line.

usage: latency.py KIND CLIENT N      KIND as in drain.py; CLIENT: rust | python
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drain import BIN, HERE, QUEUE, R, ROOT, URL, VENV, start  # noqa: E402


def python_client(n, broker, backend):
    """N sequential `send_task('celeriac.noop').get()` from a Python client (after 50 warm-up calls): p50/p90/p99."""
    code = (
        "import json, time\n"
        "from pytasks import app\n"
        "s = []\n"
        "for i in range(%d + 50):\n"
        "    t = time.perf_counter(); app.send_task('celeriac.noop', queue='%s').get(timeout=30)\n"
        "    if i >= 50: s.append((time.perf_counter() - t) * 1e6)\n"
        "s.sort(); q = lambda f: s[round((len(s) - 1) * f)]\n"
        "print(json.dumps({'n': len(s), 'p50_us': q(.5), 'p90_us': q(.9), 'p99_us': q(.99), 'max_us': s[-1]}))\n"
    ) % (n, QUEUE)
    env = dict(os.environ, CELERY_BROKER_URL=broker, CELERY_RESULT_BACKEND=backend)
    out = subprocess.run([os.path.join(VENV, 'bin', 'python'), '-c', code], cwd=os.path.join(ROOT, 'tests', 'python'),
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    kind, client, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    R.flushdb()
    p = start(kind)
    t0 = time.time()
    while not R.smembers('_kombu.binding.%s' % QUEUE):
        if time.time() - t0 > 60:
            raise TimeoutError('worker not ready')
        time.sleep(0.05)
    time.sleep(1.0)
    load = open('/proc/loadavg').read().split()[:3]
    if client == 'rust':
        out = subprocess.run([os.path.join(BIN, 'celeriac-bench'), '-b', URL, 'latency', str(n), '--queue', QUEUE, '--task', 'celeriac.noop'],
                             check=True, capture_output=True, text=True).stdout
        res = json.loads(out.strip().splitlines()[-1])
    else:
        res = python_client(n, URL, URL)
    p.terminate()
    p.wait(30)
    res.update({'bench': 'latency', 'kind': kind, 'client': client, 'loadavg': load})
    print(json.dumps(res))


if __name__ == '__main__':
    main()
