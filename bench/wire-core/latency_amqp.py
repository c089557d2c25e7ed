"""Round-trip latency on RabbitMQ, one run: a worker idles on the queue (broker RabbitMQ, results in Redis);
`celeriac-bench latency` (Rust client) or a Python client makes N sequential calls of celeriac.noop and prints
p50/p90/p99 as one JSON line.

usage: latency_amqp.py KIND CLIENT N      KIND: rust | python-solo | python-prefork; CLIENT: rust | python
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drain import BIN, QUEUE, R  # noqa: E402
from drain import URL as REDIS_URL  # noqa: E402
from drain_amqp import AMQP, Ready, reset_vhost, start  # noqa: E402
from latency import python_client  # noqa: E402


def main():
    kind, client, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reset_vhost()
    R.flushdb()
    p = start(kind, n)
    ready = Ready()
    t0 = time.time()
    # The worker declared its queue: it is consuming (a passive declare of a missing queue fails, counted as 0,
    # so wait for the worker's consumer through the stats instead).
    from celery import Celery
    a = Celery(broker=AMQP, backend=REDIS_URL)
    while not (a.control.broadcast('ping', reply=True, limit=1, timeout=0.5) or []):
        if time.time() - t0 > 60:
            raise TimeoutError('worker not ready')
    ready()
    time.sleep(1.0)
    load = open('/proc/loadavg').read().split()[:3]
    if client == 'rust':
        out = subprocess.run([os.path.join(BIN, 'celeriac-bench'), '-b', AMQP, '--result-backend', REDIS_URL,
                              'latency', str(n), '--queue', QUEUE, '--task', 'celeriac.noop'],
                             check=True, capture_output=True, text=True).stdout
        res = json.loads(out.strip().splitlines()[-1])
    else:
        res = python_client(n, AMQP, REDIS_URL)
    p.terminate()
    p.wait(30)
    res.update({'bench': 'latency-amqp', 'kind': kind, 'client': client, 'loadavg': load})
    print(json.dumps(res))


if __name__ == '__main__':
    main()
