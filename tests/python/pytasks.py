"""Python Celery tasks used by the interop tests (the Python side of the mixed cluster).

Broker and backend come from CELERY_BROKER_URL / CELERY_RESULT_BACKEND.
"""
import os
import time

from celery import Celery

BROKER = os.environ.get('CELERY_BROKER_URL', 'redis://127.0.0.1:6379/0')
app = Celery('pytasks', broker=BROKER, backend=os.environ.get('CELERY_RESULT_BACKEND', BROKER))
app.conf.update(
    task_serializer='json',
    result_serializer='json',
    accept_content=['json'],
    enable_utc=True,
    timezone='UTC',
    broker_connection_retry_on_startup=True,
    broker_transport_options={'visibility_timeout': float(os.environ.get('VISIBILITY_TIMEOUT', '3600'))},
    worker_hijack_root_logger=False,
    result_extended=True,
)


@app.task(name='tasks.add')
def add(a, b, x=0):
    return a + b + x


@app.task(name='tasks.fail')
def fail(msg='boom'):
    raise ValueError(msg)


@app.task(name='tasks.sleep')
def sleep(seconds=1):
    time.sleep(seconds)
    return seconds


@app.task(name='tasks.whoami', bind=True)
def whoami(self, tag=None):
    return {'hostname': self.request.hostname, 'tag': tag}


@app.task(name='tasks.noop', ignore_result=True)
def noop():
    return None


@app.task(name='tasks.noop_r')
def noop_r():
    return None


@app.task(name='celeriac.add')
def shared_add(x, y):
    """Same name as the Rust built-in, so a mixed cluster can share one queue."""
    return x + y


@app.task(name='celeriac.noop')
def shared_noop():
    """Same name as the Rust built-in: the unit of the side-by-side throughput benchmark."""
    return None


@app.task(name='celeriac.echo')
def shared_echo(*args, **kwargs):
    """Same name and result as the Rust built-in, so chord bodies can run on either worker."""
    return {'args': list(args), 'kwargs': kwargs}
