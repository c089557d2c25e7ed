"""A Celery app for a Python worker instrumented with opentelemetry-instrumentation-celery (the trace test): its
spans go by OTLP/HTTP to RECEIVER; `py.echo` returns its arguments.

Run: RECEIVER=http://127.0.0.1:PORT celery -A otel_worker worker --pool solo -Q pyq
(solo: the instrumentation is set up at import, in the one process that runs the tasks).
"""

import os

from celery import Celery
from celery.signals import worker_shutdown
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

provider = TracerProvider(resource=Resource.create({"service.name": "python-worker"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=os.environ["RECEIVER"] + "/v1/traces")))
trace.set_tracer_provider(provider)
CeleryInstrumentor().instrument()

app = Celery(
    "otel_worker",
    broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("CELERY_RESULT_BACKEND"),
)


@worker_shutdown.connect(weak=False)
def _flush(**_):
    provider.shutdown()


@app.task(name="py.echo")
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}
