//! OpenTelemetry for published tasks, as Python's `opentelemetry-instrumentation-celery` does it for
//! `apply_async`: a producer span `apply_async/<task>` under the caller's current context, whose W3C context
//! (`traceparent`, and `tracestate`/`baggage` when there are any) goes into the message's headers, where a Rust or
//! Python worker continues it. Only the `opentelemetry` API; the binary installs the provider and the propagator
//! (`crates/telemetry`). Used only when the client was built [`crate::Client::with_tracing`].

use celery_proto::TaskRequest;
use opentelemetry::global::{self, BoxedSpan};
use opentelemetry::propagation::Injector;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use serde_json::{Map, Value};

/// The instrumentation scope's name on the client's spans.
pub const SCOPE: &str = "celeriac.client";

struct HeaderWriter<'a>(&'a mut Map<String, Value>);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), Value::String(value));
    }
}

/// Start the producer span for `req` and write its context into `req`'s headers.
pub(crate) fn start_publish(req: &mut TaskRequest) -> BoxedSpan {
    let tracer = global::tracer(SCOPE);
    let cx = Context::current();
    let span = tracer
        .span_builder(format!("apply_async/{}", req.name))
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("celery.action", "apply_async"),
            KeyValue::new("messaging.message.id", req.id.clone()),
            KeyValue::new("celery.task_name", req.name.clone()),
            KeyValue::new("messaging.destination", req.queue.clone()),
        ])
        .start_with_context(&tracer, &cx);
    let span_cx = cx.with_remote_span_context(span.span_context().clone());
    global::get_text_map_propagator(|p| {
        p.inject_context(&span_cx, &mut HeaderWriter(&mut req.extra_headers))
    });
    span
}

/// End the producer span, with an error status when the publish failed.
pub(crate) fn end_publish(mut span: BoxedSpan, error: Option<String>) {
    if let Some(e) = error {
        span.set_status(Status::error(e));
    }
    span.end();
}
