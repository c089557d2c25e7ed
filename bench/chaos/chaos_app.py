"""The Python worker's app in the chaos soak: tests/python/pytasks.py's app (celeriac.add is registered on both
sides) with at-least-once settings: acks after the task ran, a worker-direct queue for probes."""
from pytasks import app  # noqa: F401

app.conf.task_acks_late = True
app.conf.task_reject_on_worker_lost = True
app.conf.worker_direct = True
app.conf.worker_prefetch_multiplier = 4
