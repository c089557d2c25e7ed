//! The runtime's OpenTelemetry hooks on the in-memory transport: off, a worker adds no trace headers to the
//! messages it publishes (and forwards none it received); on, its `run` span continues the trace in the task's
//! `traceparent` header and the callback it publishes carries the context of its `apply_async` span.

mod support;

use celery_proto::{Message, Signature};
use opentelemetry::trace::{SpanKind, Status, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use std::time::Duration;
use support::*;

const SIDE: &str = "side";
const TRACE: &str = "4d48bba5585ebfd3d91b5ae94b5740ac";
const CLIENT_SPAN: &str = "b42798787459ed13";

/// `celeriac.add(1, 2)` with a link callback to `celeriac.echo` routed to a queue the worker does not consume, so the
/// test reads the callback message as published.
fn add_with_callback(traceparent: Option<&str>) -> celery_proto::TaskRequest {
    let mut req = request("celeriac.add", vec![json!(1), json!(2)]);
    let mut cb = Signature::new("celeriac.echo");
    cb.options.insert("queue".into(), json!(SIDE));
    req.embed.callbacks = vec![cb.to_value()];
    if let Some(tp) = traceparent {
        req.extra_headers.insert("traceparent".into(), json!(tp));
    }
    req
}

async fn callback_message(w: &Running, parent_id: &str) -> Message {
    until("the callback is published", Duration::from_secs(60), || {
        w.broker
            .messages(SIDE)
            .iter()
            .any(|m| m.headers["parent_id"] == parent_id)
    })
    .await;
    w.broker
        .messages(SIDE)
        .into_iter()
        .find(|m| m.headers["parent_id"] == parent_id)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn tracing_off_adds_no_trace_headers() {
    let w = Running::start(config(), worker_runtime::default_registry());
    let plain = add_with_callback(None);
    let traced = add_with_callback(Some(&format!("00-{TRACE}-{CLIENT_SPAN}-01")));
    w.publish(&plain).await;
    w.publish(&traced).await;
    for req in [&plain, &traced] {
        assert_eq!(w.wait_status(&req.id, "SUCCESS").await["result"], 3);
        let cb = callback_message(&w, &req.id).await;
        assert_eq!(cb.headers["task"], "celeriac.echo");
        for h in ["traceparent", "tracestate", "baggage"] {
            assert!(
                !cb.headers.contains_key(h),
                "tracing is off but the callback has {h}: {:?}",
                cb.headers
            );
        }
    }
    w.stop().await;
}

fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name} among {:?}", names(spans)))
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| s.name.to_string()).collect()
}

fn attr(s: &SpanData, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test(start_paused = true)]
async fn tracing_on_continues_the_trace_into_callbacks() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let mut cfg = config();
    cfg.tracing = true;
    let w = Running::start(cfg, worker_runtime::default_registry());
    let req = add_with_callback(Some(&format!("00-{TRACE}-{CLIENT_SPAN}-01")));
    w.publish(&req).await;
    assert_eq!(w.wait_status(&req.id, "SUCCESS").await["result"], 3);
    let cb = callback_message(&w, &req.id).await;
    until("the run span ends", Duration::from_secs(60), || {
        exporter
            .get_finished_spans()
            .unwrap()
            .iter()
            .any(|s| s.name == "run/celeriac.add")
    })
    .await;
    let spans = exporter.get_finished_spans().unwrap();

    let run = span(&spans, "run/celeriac.add");
    assert_eq!(run.span_context.trace_id().to_string(), TRACE);
    assert_eq!(run.parent_span_id.to_string(), CLIENT_SPAN);
    assert!(run.parent_span_is_remote);
    assert_eq!(run.span_kind, SpanKind::Consumer);
    assert_eq!(attr(run, "celery.state").as_deref(), Some("SUCCESS"));
    assert_eq!(attr(run, "messaging.message.id"), Some(req.id.clone()));
    assert_eq!(run.status, Status::Unset);

    let publish = span(&spans, "apply_async/celeriac.echo");
    assert_eq!(publish.span_kind, SpanKind::Producer);
    assert_eq!(publish.span_context.trace_id().to_string(), TRACE);
    assert_eq!(publish.parent_span_id, run.span_context.span_id());
    assert_eq!(
        attr(publish, "messaging.destination").as_deref(),
        Some(SIDE)
    );

    let store = span(&spans, "store_result/celeriac.add");
    assert_eq!(store.span_kind, SpanKind::Client);
    assert_eq!(store.parent_span_id, run.span_context.span_id());
    assert_eq!(attr(store, "celery.state").as_deref(), Some("SUCCESS"));

    // The callback's header is the producer span's context, in W3C form.
    let tp = cb.headers["traceparent"]
        .as_str()
        .expect("traceparent on the callback");
    assert_eq!(
        tp,
        format!("00-{TRACE}-{}-01", publish.span_context.span_id())
    );

    // A message without a context starts a trace of its own, which its callback continues.
    let plain = add_with_callback(None);
    w.publish(&plain).await;
    w.wait_status(&plain.id, "SUCCESS").await;
    let cb = callback_message(&w, &plain.id).await;
    let tp = cb.headers["traceparent"]
        .as_str()
        .expect("traceparent")
        .to_string();
    let trace = tp.split('-').nth(1).unwrap().to_string();
    assert_ne!(trace, TRACE);
    assert_ne!(TraceId::from_hex(&trace).unwrap(), TraceId::INVALID);
    w.stop().await;
    let spans = exporter.get_finished_spans().unwrap();
    let root = spans
        .iter()
        .find(|s| s.name == "run/celeriac.add" && s.span_context.trace_id().to_string() == trace)
        .expect("the second run span");
    assert_eq!(root.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    let _ = provider.shutdown();
}
