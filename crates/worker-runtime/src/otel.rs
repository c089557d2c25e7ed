//! OpenTelemetry traces in the worker, as Python's `opentelemetry-instrumentation-celery` makes them: the W3C
//! context (`traceparent`, `tracestate`, `baggage`) is read from the task message's headers, the task runs inside a
//! consumer span `run/<task>` that continues it, every message the worker publishes for it (link callbacks,
//! errbacks, the next step of a chain, a retry) gets its own producer span `apply_async/<task>` whose context goes
//! into that message's headers, and result writes get a client span `store_result/<task>`.
//!
//! Only the `opentelemetry` API is used here, through its global tracer provider and propagator, which the binary
//! installs (`crates/telemetry`). When [`crate::RuntimeConfig::tracing`] is off the executor holds no [`Tracing`]
//! and none of this runs: no span is made and no header is added (a received `traceparent` is not forwarded either).

use celery_proto::{Message, State, TaskMessage, TaskRequest};
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use serde_json::{Map, Value};

/// The instrumentation scope's name on every span the runtime makes.
pub const SCOPE: &str = "celeriac.worker";

/// The tracer, made once when the worker starts with tracing on.
pub(crate) struct Tracing {
    tracer: BoxedTracer,
}

/// The received headers as a propagation carrier (string values only, as W3C headers are).
struct HeaderReader<'a>(&'a Map<String, Value>);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Headers of a message about to be published.
struct HeaderWriter<'a>(&'a mut Map<String, Value>);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), Value::String(value));
    }
}

impl Tracing {
    pub(crate) fn new() -> Tracing {
        Tracing {
            tracer: global::tracer(SCOPE),
        }
    }

    /// Start the `run/<task>` span, the child of the context in the message's headers (a root when there is none);
    /// the context returned holds it, for [`opentelemetry::context::FutureExt::with_context`].
    pub(crate) fn start_run(&self, req: &TaskMessage, msg: &Message, node: &str) -> Context {
        let parent = global::get_text_map_propagator(|p| p.extract(&HeaderReader(&req.headers)));
        let mut attributes = vec![
            KeyValue::new("celery.action", "run"),
            KeyValue::new("celery.task_name", req.name.clone()),
            KeyValue::new("messaging.message.id", req.id.clone()),
            KeyValue::new("celery.hostname", node.to_string()),
        ];
        if !msg.routing_key.is_empty() {
            attributes.push(KeyValue::new(
                "messaging.destination",
                msg.routing_key.clone(),
            ));
        }
        if req.retries > 0 {
            attributes.push(KeyValue::new("celery.retries", i64::from(req.retries)));
        }
        let span = self
            .tracer
            .span_builder(format!("run/{}", req.name))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }

    /// Start an `apply_async/<task>` producer span under the current context (the run span) and write its context
    /// into the request's headers; end the returned span once the message is published.
    pub(crate) fn start_publish(&self, next: &mut TaskRequest) -> global::BoxedSpan {
        let cx = Context::current();
        let span = self
            .tracer
            .span_builder(format!("apply_async/{}", next.name))
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("celery.action", "apply_async"),
                KeyValue::new("messaging.message.id", next.id.clone()),
                KeyValue::new("celery.task_name", next.name.clone()),
                KeyValue::new("messaging.destination", next.queue.clone()),
            ])
            .start_with_context(&self.tracer, &cx);
        let span_cx = cx.with_remote_span_context(span.span_context().clone());
        global::get_text_map_propagator(|p| {
            p.inject_context(&span_cx, &mut HeaderWriter(&mut next.extra_headers))
        });
        span
    }

    /// Start a `store_result/<task>` client span under the current context; end it once the result is written.
    pub(crate) fn start_store(&self, task: &str, id: &str, state: &State) -> global::BoxedSpan {
        self.tracer
            .span_builder(format!("store_result/{task}"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("celery.action", "store_result"),
                KeyValue::new("celery.task_name", task.to_string()),
                KeyValue::new("messaging.message.id", id.to_string()),
                KeyValue::new("celery.state", state.to_string()),
            ])
            .start_with_context(&self.tracer, &Context::current())
    }
}

/// How a request ended, as the run span records it.
pub(crate) struct RunEnd {
    /// `celery.state`: SUCCESS, FAILURE, RETRY, REJECTED or REVOKED.
    pub state: &'static str,
    /// A failure's exception, which makes the span's status an error.
    pub error: Option<String>,
    /// `celery.retry.reason` of a retry.
    pub retry_reason: Option<String>,
}

/// Record how the request ended on the current (run) span, as the Python instrumentation does: `celery.state`, an
/// error status with the exception for a failure, `celery.retry.reason` for a retry.
pub(crate) fn note_run_end(end: RunEnd) {
    let cx = Context::current();
    let span = cx.span();
    if let Some(error) = end.error {
        span.set_status(Status::error(error));
    }
    if let Some(reason) = end.retry_reason {
        span.set_attribute(KeyValue::new("celery.retry.reason", reason));
    }
    span.set_attribute(KeyValue::new("celery.state", end.state));
}
