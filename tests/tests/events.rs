//! Issue 3, events and metrics: `celery events --dump` (Python) shows a Rust worker's events, `celeriac events
//! --dump` shows a Python worker's, the Rust `EventReceiver` + `ClusterState` track a worker from online to
//! offline, `enable_events`/`disable_events` switch task events, garbage on the event channel is dropped, and
//! `--metrics-port` serves Prometheus counters. Each test owns a Redis database (testkit::RedisDb).

mod rc_common;

use celeriac_control::{ClusterState, EventReceiver};
use rc_common::{block_on, celery, free_port, http_get, py_json, python_worker_with_events};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::{
    Child, python_or_skip, redis_db_or_skip, repo_root, run_python, rust_worker, wait_until,
};

const T: Duration = Duration::from_secs(120);

fn send(py: &std::path::Path, url: &str, code: &str) -> serde_json::Value {
    py_json(&run_python(py, url, code, T))
}

#[test]
fn celery_events_dump_shows_rust_worker_events() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let mut cmd = Command::new(&py);
    cmd.args(["-m", "celery", "-b", &db.url, "events", "--dump"])
        .current_dir(repo_root().join("tests/python"))
        .env("PYTHONUNBUFFERED", "1");
    let dump = Child::spawn("celery-events-dump", &mut cmd);
    dump.wait_for_output("starting capture", Duration::from_secs(60));
    let mut rs = rust_worker(&db.url, "rsev@evhost", &["-E", "--heartbeat-interval", "1"]);
    let v = send(
        &py,
        &db.url,
        r#"
import json
from pytasks import app
ok = app.send_task('celeriac.add', args=(2, 3))
bad = app.send_task('celeriac.fail', args=('boom',))
try:
    bad.get(timeout=60)
except Exception:
    pass
print(json.dumps([ok.get(timeout=60), ok.id, bad.id]))
"#,
    );
    assert_eq!(v[0], json!(5));
    let (ok_id, bad_id) = (v[1].as_str().unwrap(), v[2].as_str().unwrap());
    dump.wait_for_output("rsev@evhost [", T);
    dump.wait_for_output(
        &format!("task succeeded: celeriac.add({ok_id}) args=(2, 3) kwargs={{}}"),
        T,
    );
    dump.wait_for_output(&format!("task failed: celeriac.fail({bad_id})"), T);
    dump.wait_for_output("] heartbeat: active=", T);
    let out = dump.output();
    for want in [
        "] started: active=0",
        "] heartbeat: active=",
        "sw_ident=rs-celeriac",
        "freq=1.0",
        &format!("task received: celeriac.add({ok_id}) args=(2, 3) kwargs={{}}"),
        &format!("task started: celeriac.add({ok_id})"),
        "result=5, runtime=",
        "exception=ValueError('boom')",
    ] {
        assert!(
            out.contains(want),
            "celery events --dump lacks {want:?}:\n{out}"
        );
    }
    rs.signal("TERM");
    assert!(
        rs.wait_timeout(Duration::from_secs(30))
            .is_some_and(|s| s.success())
    );
    dump.wait_for_output("rsev@evhost [", T);
    dump.wait_for_output("] shutdown: active=0", T);
}

#[test]
fn celeriac_events_dump_shows_python_worker_events() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _pw = python_worker_with_events(&py, &db.url, "pyev@evhost", &["-E"]);
    let mut cmd = Command::new(testkit::bin("celeriac"));
    cmd.args(["-b", &db.url, "events", "--dump", "--duration", "90"]);
    let dump = Child::spawn("celeriac-events-dump", &mut cmd);
    dump.wait_for_output("starting capture", Duration::from_secs(30));
    // The wake-up `heartbeat` broadcast makes the Python worker answer at once.
    dump.wait_for_output("pyev@evhost [", T);
    let v = send(
        &py,
        &db.url,
        "import json\nfrom pytasks import app\nr = app.send_task('tasks.add', args=(2, 3))\nprint(json.dumps([r.get(timeout=60), r.id]))",
    );
    assert_eq!(v[0], json!(5));
    let id = v[1].as_str().unwrap();
    dump.wait_for_output(
        &format!("task succeeded: tasks.add({id}) args=(2, 3) kwargs={{}}"),
        T,
    );
    dump.wait_for_output("] heartbeat: active=", T);
    let out = dump.output();
    for want in [
        "sw_ident=py-celery",
        &format!("task received: tasks.add({id})"),
        "result=5, runtime=",
    ] {
        assert!(
            out.contains(want),
            "celeriac events --dump lacks {want:?}:\n{out}"
        );
    }
    // The JSON stream is one event per line, task.multi batches split.
    let o = rc_common::celeriac(&db.url, &["--json", "events", "--count", "2"]);
    assert!(o.ok, "{}\n{}", o.stdout, o.stderr);
    let lines: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|e| e["hostname"] == "pyev@evhost" && e["type"].is_string())
    );
    // The default view: a worker table built from the events (ClusterState).
    let o = rc_common::celeriac(&db.url, &["events", "--duration", "3"]);
    assert!(o.ok, "{}\n{}", o.stdout, o.stderr);
    let last_table = o.stdout.rsplit("worker ").next().unwrap_or("");
    assert!(
        last_table.contains("pyev@evhost")
            && last_table.contains("ONLINE")
            && last_table.contains("py-celery"),
        "{}",
        o.stdout
    );
}

/// The library the coordinator reuses: EventReceiver + ClusterState follow a Rust worker's life, task events
/// follow enable_events/disable_events, and garbage on the event channel is counted and dropped.
#[test]
fn event_receiver_tracks_rust_worker_and_event_switches() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let mut rs = rust_worker(&db.url, "rsstate@evhost", &["--heartbeat-interval", "1"]);
    block_on(async {
        let broker = broker::Broker::connect(&db.url).await.unwrap();
        let transport: transport::SharedTransport = std::sync::Arc::new(broker.clone());
        let mut rx = EventReceiver::new(&transport).await.unwrap();
        let control = celeriac_control::ControlClient::new(transport.clone());
        let mut state = ClusterState::default();
        let node = "rsstate@evhost";
        // Heartbeats arrive with the real fields.
        let until = |deadline: Instant| tokio::time::Instant::from_std(deadline);
        let deadline = Instant::now() + T;
        while state
            .workers
            .get(node)
            .is_none_or(|w| w.last_heartbeat.is_none())
        {
            let ev = tokio::time::timeout_at(until(deadline), rx.next())
                .await
                .expect("heartbeat in time")
                .unwrap();
            state.apply(&ev);
        }
        let w = &state.workers[node];
        assert!(w.alive(broker::now_f64()));
        assert_eq!(w.freq, 1.0);
        assert_eq!(w.sw_ident.as_deref(), Some("rs-celeriac"));
        assert_eq!(w.sw_sys.as_deref(), Some("Linux"));
        assert_eq!(w.loadavg.len(), 3);

        // Garbage on the channel is dropped and counted; the stream goes on.
        let garbage_channel = format!("/{}.celeryev/worker.heartbeat", db.db);
        broker
            .publish_fanout(&garbage_channel, b"{{{ not json")
            .await
            .unwrap();
        broker
            .publish_fanout(
                &garbage_channel,
                br#"{"body": "W10=", "properties": {"body_encoding": "base64"}}"#,
            )
            .await
            .unwrap();

        // Task events are off by default; enable_events switches them on for the next task.
        let run_add = |x: i64| {
            let py = py.clone();
            let url = db.url.clone();
            tokio::task::spawn_blocking(move || {
                send(
                    &py,
                    &url,
                    &format!(
                        "import json\nfrom pytasks import app\nr = app.send_task('celeriac.add', args=({x}, 1))\nprint(json.dumps([r.get(timeout=60), r.id]))"
                    ),
                )
            })
        };
        let first = run_add(1).await.unwrap();
        let r = control
            .inspect(
                "enable_events",
                json!({}),
                Some(vec![node.into()]),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        assert_eq!(r[node], json!({"ok": "task events enabled"}));
        let second = run_add(2).await.unwrap();
        let second_id = second[1].as_str().unwrap().to_string();
        let deadline = Instant::now() + T;
        let mut kinds_for_first = 0;
        loop {
            let ev = tokio::time::timeout_at(until(deadline), rx.next())
                .await
                .expect("task events in time")
                .unwrap();
            if ev.uuid() == first[1].as_str() {
                kinds_for_first += 1;
            }
            state.apply(&ev);
            if ev.uuid() == Some(second_id.as_str()) && ev.event_type() == "task-succeeded" {
                assert_eq!(ev.str("result"), Some("3"));
                assert_eq!(
                    ev.routing_key, "task.multi",
                    "task events are batched like Celery's"
                );
                assert!(ev.get("runtime").and_then(|r| r.as_f64()).is_some());
                break;
            }
        }
        assert_eq!(kinds_for_first, 0, "no task events while disabled");
        assert!(
            rx.bad_messages() >= 2,
            "garbage counted: {}",
            rx.bad_messages()
        );
        let t = &state.tasks[&second_id];
        assert_eq!(t.state, "SUCCESS");
        assert_eq!(t.name.as_deref(), Some("celeriac.add"));
        assert_eq!(t.args.as_deref(), Some("(2, 1)"));
        // The next heartbeat counts the two tasks.
        let deadline = Instant::now() + T;
        while state.workers[node].processed < 2 {
            let ev = tokio::time::timeout_at(until(deadline), rx.next())
                .await
                .expect("heartbeat in time")
                .unwrap();
            state.apply(&ev);
        }
        // disable_events: the next task sends none.
        let r = control
            .inspect(
                "disable_events",
                json!({}),
                Some(vec![node.into()]),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        assert_eq!(r[node], json!({"ok": "task events disabled"}));
        let third = run_add(3).await.unwrap();
        let third_id = third[1].as_str().unwrap().to_string();
        // Wait for two more heartbeats after the result; no task event of the third task may show up.
        let mut beats = 0;
        let deadline = Instant::now() + T;
        while beats < 2 {
            let ev = tokio::time::timeout_at(until(deadline), rx.next())
                .await
                .expect("heartbeats")
                .unwrap();
            assert_ne!(
                ev.uuid(),
                Some(third_id.as_str()),
                "task event sent while disabled: {ev:?}"
            );
            if ev.event_type() == "worker-heartbeat" && ev.hostname() == node {
                beats += 1;
            }
            state.apply(&ev);
        }
        // Shutdown: worker-offline makes it not alive.
        rs.signal("TERM");
        let deadline = Instant::now() + T;
        loop {
            let ev = tokio::time::timeout_at(until(deadline), rx.next())
                .await
                .expect("offline in time")
                .unwrap();
            state.apply(&ev);
            if ev.event_type() == "worker-offline" && ev.hostname() == node {
                break;
            }
        }
        assert!(!state.workers[node].alive(broker::now_f64()));
        rx.close().await;
    });
    assert!(
        rs.wait_timeout(Duration::from_secs(30))
            .is_some_and(|s| s.success())
    );
}

/// `--metrics-port`: Prometheus text with tasks by name and state, runtime histogram, prefetch, reconnects.
#[test]
fn metrics_endpoint_counts_tasks() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let port = free_port();
    let port_s = port.to_string();
    let _rs = rust_worker(&db.url, "rsmetrics@evhost", &["--metrics-port", &port_s]);
    let v = send(
        &py,
        &db.url,
        r#"
import json
from pytasks import app
a = app.send_task('celeriac.add', args=(2, 3)).get(timeout=60)
try:
    app.send_task('celeriac.fail', args=('x',)).get(timeout=60)
except Exception:
    pass
print(json.dumps(a))
"#,
    );
    assert_eq!(v, json!(5));
    let mut body = String::new();
    assert!(
        wait_until(T, || {
            body = http_get(port, "/metrics")
                .map(|(_, b)| b)
                .unwrap_or_default();
            body.contains(r#"celeriac_worker_tasks_total{state="FAILURE",task="celeriac.fail"} 1"#)
        }),
        "{body}"
    );
    for want in [
        r#"celeriac_worker_tasks_total{state="SUCCESS",task="celeriac.add"} 1"#,
        r#"celeriac_worker_tasks_total{state="STARTED",task="celeriac.add"} 1"#,
        r#"celeriac_worker_task_runtime_seconds_count{task="celeriac.add"} 1"#,
        "celeriac_worker_prefetch_in_use 0",
        "celeriac_worker_broker_reconnects_total 0",
        "celeriac_worker_task_events_enabled 0",
    ] {
        assert!(body.contains(want), "metrics lack {want:?}:\n{body}");
    }
    assert_eq!(http_get(port, "/nope").map(|(c, _)| c), Some(404));
    // The Python CLI still sees the worker (metrics do not get in the way).
    let o = celery(&py, &db.url, &["inspect", "ping", "-d", "rsmetrics@evhost"]);
    assert!(o.stdout.contains("rsmetrics@evhost: OK"), "{}", o.stdout);
}
