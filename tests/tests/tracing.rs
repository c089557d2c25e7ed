//! Issue 13, OpenTelemetry: a Python client instrumented with `opentelemetry-instrumentation-celery` calls
//! `celeriac.add` with a link callback on a Rust worker exporting by OTLP; a test receiver built from
//! `opentelemetry-proto` (`tests/python/otlp_receiver.py`) gets the client's and the worker's spans in one trace,
//! parent to child: client span, `apply_async/celeriac.add` (Python), `run/celeriac.add` (Rust), its
//! `store_result` and `apply_async/celeriac.echo`, then `run/celeriac.echo`; a second callback, `py.echo`, runs on
//! an instrumented Python worker (`tests/python/otel_worker.py`), which continues the Rust worker's publish span.
//! The `celeriac` CLI's publish span is continued by the worker the same way.

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use testkit::{
    Child, bin, py_json, python_or_skip, redis_db_or_skip, repo_root, require, run_python,
    wait_until,
};

const T: Duration = Duration::from_secs(120);

fn has_otel(py: &std::path::Path) -> bool {
    Command::new(py)
        .args([
            "-c",
            "import opentelemetry.instrumentation.celery, opentelemetry.sdk, \
             opentelemetry.exporter.otlp.proto.http, opentelemetry.proto",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// The receiver, listening on a free port; its spans go to `out`.
fn receiver(py: &std::path::Path, out: &std::path::Path) -> (Child, u16) {
    let mut cmd = Command::new(py);
    cmd.arg(repo_root().join("tests/python/otlp_receiver.py"))
        .arg(out)
        .env("PYTHONUNBUFFERED", "1");
    let child = Child::spawn("otlp-receiver", &mut cmd);
    child.wait_for_output("listening on ", Duration::from_secs(30));
    let port = child
        .output()
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("receiver port");
    (child, port)
}

fn spans(out: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("receiver line"))
        .collect()
}

/// The one span with this name in this trace.
fn one<'a>(spans: &'a [Value], trace: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = spans
        .iter()
        .filter(|s| s["trace_id"] == trace && s["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {name} in trace {trace}; all spans:\n{}",
        serde_json::to_string_pretty(spans).unwrap()
    );
    found[0]
}

fn parent_is(child: &Value, parent: &Value) {
    assert_eq!(
        child["parent_span_id"], parent["span_id"],
        "{} should be the child of {}",
        child["name"], parent["name"]
    );
}

const CLIENT: &str = r#"
import json, os
from celery import Celery
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor

provider = TracerProvider(resource=Resource.create({"service.name": "python-client"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=os.environ["RECEIVER"] + "/v1/traces")))
trace.set_tracer_provider(provider)
CeleryInstrumentor().instrument()
app = Celery(broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])

# Registered here only so the instrumentation ends its publish span (it looks the task up by name after publishing);
# the Rust worker runs them.
@app.task(name="celeriac.add")
def add(x, y):
    raise RuntimeError("runs in the Rust worker")

@app.task(name="celeriac.echo")
def echo(*args, **kwargs):
    raise RuntimeError("runs in the Rust worker")

with trace.get_tracer("test-client").start_as_current_span("client-request") as root:
    callback = echo.s("tag")
    callback.freeze()
    on_python = app.signature("py.echo", args=("py",), queue="pyq")
    on_python.freeze()
    r = add.apply_async((2, 3), link=[callback, on_python])
    ctx = root.get_span_context()
result = r.get(timeout=60)
linked = app.AsyncResult(callback.id).get(timeout=60)
on_python = app.AsyncResult(on_python.id).get(timeout=60)
provider.shutdown()
print(json.dumps({"trace_id": format(ctx.trace_id, "032x"), "root": format(ctx.span_id, "016x"),
                  "result": result, "linked": linked, "on_python": on_python}))
"#;

#[test]
fn a_python_trace_continues_through_a_rust_worker_and_its_callback() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    if !require(
        "opentelemetry-instrumentation-celery, opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http and \
         opentelemetry-proto in the Python venv",
        has_otel(&py),
    ) {
        return;
    }
    let dir = testkit::bin_dir().join("test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!(
        "otlp-spans-{}.jsonl",
        uuid::Uuid::new_v4().simple()
    ));
    let (_receiver, port) = receiver(&py, &out);
    let endpoint = format!("http://127.0.0.1:{port}");

    let mut cmd = Command::new(bin("celeriac-worker"));
    cmd.args([
        "-b",
        &db.url,
        "-n",
        "otel@tracehost",
        "--loglevel",
        "info",
        "--without-mingle",
    ])
    .env("NO_COLOR", "1")
    .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
    .env_remove("OTEL_SERVICE_NAME")
    .env_remove("OTEL_SDK_DISABLED")
    .env_remove("OTEL_TRACES_EXPORTER");
    let mut worker = Child::spawn("rust-worker-otel", &mut cmd);
    worker.wait_for_output("celeriac-worker ready", Duration::from_secs(30));

    // An instrumented Python worker on its own queue, for the callback the Rust worker sends it.
    let mut cmd = Command::new(&py);
    cmd.args([
        "-m",
        "celery",
        "-A",
        "otel_worker",
        "worker",
        "--pool",
        "solo",
        "-Q",
        "pyq",
        "-n",
        "pyotel@tracehost",
        "-l",
        "info",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
    ])
    .current_dir(repo_root().join("tests/python"))
    .env("CELERY_BROKER_URL", &db.url)
    .env("CELERY_RESULT_BACKEND", &db.url)
    .env("RECEIVER", &endpoint)
    .env("PYTHONUNBUFFERED", "1");
    let mut py_worker = Child::spawn("python-worker-otel", &mut cmd);
    py_worker.wait_for_output("ready.", Duration::from_secs(60));

    // The Python client.
    let code = format!("import os\nos.environ['RECEIVER'] = {endpoint:?}\n{CLIENT}");
    let v = py_json(&run_python(&py, &db.url, &code, T));
    assert_eq!(v["result"], 5);
    assert_eq!(v["linked"]["args"], serde_json::json!([5, "tag"]));
    assert_eq!(v["on_python"]["args"], serde_json::json!([5, "py"]));
    let trace = v["trace_id"].as_str().unwrap().to_string();

    // The CLI, as a client of its own.
    let cli = Command::new(bin("celeriac"))
        .args([
            "-b",
            &db.url,
            "call",
            "celeriac.add",
            "--args",
            "[20, 22]",
            "--wait",
        ])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env_remove("OTEL_SERVICE_NAME")
        .output()
        .expect("celeriac call");
    assert!(
        cli.status.success(),
        "celeriac call failed: {}",
        String::from_utf8_lossy(&cli.stderr)
    );

    // A warm shutdown flushes the worker's last spans.
    worker.signal("TERM");
    py_worker.signal("TERM");
    assert!(
        py_worker.wait_timeout(Duration::from_secs(60)).is_some(),
        "the Python worker did not stop"
    );
    assert!(
        worker.wait_timeout(Duration::from_secs(60)).is_some(),
        "the worker did not stop"
    );
    let want = |s: &[Value]| s.iter().filter(|s| s["trace_id"] == trace.as_str()).count() >= 9;
    assert!(
        wait_until(Duration::from_secs(30), || want(&spans(&out))),
        "the receiver did not get the trace's spans:\n{}",
        serde_json::to_string_pretty(&spans(&out)).unwrap()
    );
    let all = spans(&out);

    let root = one(&all, &trace, "client-request");
    assert_eq!(root["span_id"], v["root"]);
    let publish = one(&all, &trace, "apply_async/celeriac.add");
    assert_eq!(publish["service"], "python-client");
    assert_eq!(publish["kind"], "SPAN_KIND_PRODUCER");
    parent_is(publish, root);

    let run = one(&all, &trace, "run/celeriac.add");
    assert_eq!(run["service"], "celeriac-worker");
    assert_eq!(run["kind"], "SPAN_KIND_CONSUMER");
    assert_eq!(run["attributes"]["celery.state"], "SUCCESS");
    parent_is(run, publish);

    let store = one(&all, &trace, "store_result/celeriac.add");
    assert_eq!(store["service"], "celeriac-worker");
    parent_is(store, run);

    let link = one(&all, &trace, "apply_async/celeriac.echo");
    assert_eq!(link["service"], "celeriac-worker");
    assert_eq!(link["kind"], "SPAN_KIND_PRODUCER");
    parent_is(link, run);

    let linked_run = one(&all, &trace, "run/celeriac.echo");
    assert_eq!(linked_run["service"], "celeriac-worker");
    parent_is(linked_run, link);

    // The Python worker continues the Rust worker's publish span.
    let to_python = one(&all, &trace, "apply_async/py.echo");
    assert_eq!(to_python["service"], "celeriac-worker");
    parent_is(to_python, run);
    let python_run = one(&all, &trace, "run/py.echo");
    assert_eq!(python_run["service"], "python-worker");
    assert_eq!(python_run["kind"], "SPAN_KIND_CONSUMER");
    parent_is(python_run, to_python);

    // The CLI's publish started a trace of its own, continued by the worker.
    let cli_publish = all
        .iter()
        .find(|s| s["service"] == "celeriac" && s["name"] == "apply_async/celeriac.add")
        .unwrap_or_else(|| {
            panic!(
                "no publish span from the CLI:\n{}",
                serde_json::to_string_pretty(&all).unwrap()
            )
        });
    assert_eq!(cli_publish["parent_span_id"], "");
    let cli_trace = cli_publish["trace_id"].as_str().unwrap();
    assert_ne!(cli_trace, trace);
    parent_is(one(&all, cli_trace, "run/celeriac.add"), cli_publish);
}
