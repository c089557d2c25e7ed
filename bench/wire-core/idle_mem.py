"""Idle RSS of a worker 5 s after it is ready; prints one JSON line.  usage: idle_mem.py KIND"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drain import QUEUE, R, rss_kb, start, tree  # noqa: E402

kind = sys.argv[1]
R.flushdb()
p = start(kind)
t0 = time.time()
while not R.smembers('_kombu.binding.%s' % QUEUE):
    if time.time() - t0 > 60:
        raise TimeoutError('worker not ready')
    time.sleep(0.05)
ready = time.time() - t0
time.sleep(5)
rss = rss_kb(tree(p.pid))
p.terminate()
p.wait(30)
print(json.dumps({'bench': 'idle_mem', 'kind': kind, 'ready_s': round(ready, 2), 'rss_mib': round(rss / 1024, 1),
                  'loadavg': open('/proc/loadavg').read().split()[:3]}))
