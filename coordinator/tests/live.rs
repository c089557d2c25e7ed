//! The coordinator with real parts: real Redis, real Rust workers (`celeriac-worker`) and a real Python Celery
//! worker (`tests/python/pytasks.py`), the real HTTP server from `serve`, discovery through events and inspect.
//!
//! Needs `cargo build -p celeriac-worker` first (scripts/test.sh builds every binary).

mod common;

use celeriac_coordinator::{AppState, serve};
use common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

struct Running {
    addr: std::net::SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(db: &testkit::RedisDb, cfg: &TempConfig) -> Running {
        let broker = broker::Broker::connect(&db.url).await.expect("broker");
        let state = Arc::new(
            AppState::new(settings(cfg, None), broker)
                .await
                .expect("state"),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let st = state.clone();
        let server = tokio::spawn(async move {
            serve(st, listener, rx).await.expect("coordinator runs");
        });
        Running {
            addr,
            state,
            stop,
            server,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        http(self.addr, "GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        http(self.addr, "POST", path, Some(&body)).await
    }

    async fn worker(&self, node: &str) -> Option<Value> {
        worker_row(self.addr, node).await
    }

    async fn wait_alive(&self, node: &str) {
        let ok = eventually(Duration::from_secs(30), || async {
            self.worker(node).await.is_some_and(|w| w["alive"] == true)
        })
        .await;
        assert!(
            ok,
            "{node} never showed up alive: {:?}",
            self.get("/api/v1/workers").await
        );
    }

    async fn wait_ready(&self, id: &str) -> Value {
        wait_job_ready(self.addr, id, Duration::from_secs(60)).await
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
    }
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_routes_to_the_preferred_workers_dq2_python_and_rust() {
    let python = testkit::python_or_skip!();
    let db = testkit::redis_db_or_skip!();
    let id = short_id();
    let py = format!("py{id}@coord");
    let rs = format!("rs{id}@coord");
    let cfg = TempConfig::new(&format!(
        r#"
workers:
  - name: python
    node: "{py}"
    queues: [{{ name: mixed, priority: 90 }}]
  - name: rust
    node: "{rs}"
    queues: [{{ name: mixed, priority: 50 }}, {{ name: rustonly, priority: 50 }}]
routing:
  default_strategy: priority
"#
    ));
    let _rust = testkit::rust_worker(
        &db.url,
        &rs,
        &[
            "-Q",
            "mixed",
            "-c",
            "2",
            "--heartbeat-interval",
            "1",
            "--result-extended",
        ],
    );
    let _python = testkit::python_worker(
        &python,
        &db.url,
        &py,
        &["-Q", &format!("mixed,{py}.dq2"), "-c", "1"],
    );
    let coord = Running::start(&db, &cfg).await;
    coord.wait_alive(&py).await;
    coord.wait_alive(&rs).await;
    let pyrow = coord.worker(&py).await.unwrap();
    assert!(
        pyrow["queues"]
            .as_array()
            .unwrap()
            .contains(&json!("mixed")),
        "inspect active_queues reached the registry: {pyrow}"
    );

    // `mixed`: the Python worker is preferred (90 > 50), so the job goes to its .dq2 and runs there.
    let (s, v) = coord
        .post(
            "/api/v1/jobs",
            json!({"task": "celeriac.add", "args": [2, 3], "queue": "mixed", "priority": 3}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["queue"], format!("{py}.dq2"), "{v}");
    let job = v["id"].as_str().unwrap().to_string();
    let done = coord.wait_ready(&job).await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["result"], 5);
    assert_eq!(
        done["worker"],
        py.as_str(),
        "ran on the preferred worker: {done}"
    );

    // `rustonly`: only the Rust worker serves it.
    let (s, v) = coord
        .post(
            "/api/v1/jobs",
            json!({"task": "celeriac.add", "args": [40, 2], "queue": "rustonly"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["queue"], format!("{rs}.dq2"), "{v}");
    let done = coord.wait_ready(v["id"].as_str().unwrap()).await;
    assert_eq!(
        (done["state"].clone(), done["result"].clone()),
        (json!("SUCCESS"), json!(42)),
        "{done}"
    );
    assert_eq!(done["worker"], rs.as_str(), "{done}");
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_waiting_in_a_killed_workers_dq2_is_rerouted_and_runs_once() {
    let db = testkit::redis_db_or_skip!();
    let id = short_id();
    let a = format!("a{id}@coord");
    let b = format!("b{id}@coord");
    // The threshold lets the preferred worker stay preferred while its one slot is busy, so the second job
    // waits in its .dq2 (the "all busy, queue for the preferred" situation, made deterministic).
    let cfg = TempConfig::new(&format!(
        r#"
workers:
  - name: a
    node: "{a}"
    queues: [{{ name: work, priority: 90 }}]
  - name: b
    node: "{b}"
    queues: [{{ name: work, priority: 50 }}]
routing:
  default_strategy: priority
  overload_threshold: 2.0
"#
    ));
    let flags = [
        "-c",
        "1",
        "--prefetch-multiplier",
        "1",
        "--acks-late",
        "--heartbeat-interval",
        "1",
        "-E",
        "--result-extended",
    ];
    let mut wa = testkit::rust_worker(
        &db.url,
        &a,
        &[&["-Q", &format!("idle{id}a")][..], &flags].concat(),
    );
    let _wb = testkit::rust_worker(
        &db.url,
        &b,
        &[&["-Q", &format!("idle{id}b")][..], &flags].concat(),
    );

    // Watch every task event, to count runs.
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let broker: transport::SharedTransport =
        Arc::new(broker::Broker::connect(&db.url).await.unwrap());
    let mut rx = celeriac_control::EventReceiver::new(&broker).await.unwrap();
    let sink = seen.clone();
    let watcher = tokio::spawn(async move {
        while let Some(ev) = rx.next().await {
            if let Some(u) = ev.uuid() {
                sink.lock().unwrap().push((
                    u.to_string(),
                    ev.event_type().to_string(),
                    ev.hostname().to_string(),
                ));
            }
        }
    });

    let coord = Running::start(&db, &cfg).await;
    coord.wait_alive(&a).await;
    coord.wait_alive(&b).await;

    // Job 1 occupies a's only slot.
    let (s, v) = coord
        .post(
            "/api/v1/jobs",
            json!({"task": "celeriac.sleep", "args": [30], "queue": "work"}),
        )
        .await;
    assert_eq!((s, v["node"].as_str()), (201, Some(a.as_str())), "{v}");
    let busy = eventually(Duration::from_secs(20), || async {
        coord.worker(&a).await.is_some_and(|w| w["active"] == 1)
    })
    .await;
    assert!(busy, "a never reported the sleep as active");

    // Job 2 is routed to a as well and waits in a.dq2 (with late acks and one prefetch slot, a holds one
    // message at a time).
    let (s, v) = coord
        .post(
            "/api/v1/jobs",
            json!({"task": "celeriac.add", "args": [20, 22], "queue": "work"}),
        )
        .await;
    assert_eq!((s, v["node"].as_str()), (201, Some(a.as_str())), "{v}");
    let job2 = v["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dq_a = format!("{a}.dq2");
    assert_eq!(
        coord
            .state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .queue_len(&dq_a)
            .await
            .unwrap(),
        1,
        "job 2 must be waiting in {dq_a} before the kill"
    );

    // a dies; after 2 x freq without heartbeats (and no inspect reply) it is offline and job 2 moves to b.
    wa.signal("KILL");
    let _ = wa.wait_timeout(Duration::from_secs(5));
    let done = coord.wait_ready(&job2).await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["result"], 42);
    assert_eq!(done["worker"], b.as_str(), "{done}");
    assert_eq!(done["reroutes"][0]["from_node"], a.as_str(), "{done}");
    assert_eq!(
        done["reroutes"][0]["to_queue"],
        format!("{b}.dq2"),
        "{done}"
    );
    assert_eq!(
        coord
            .state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .queue_len(&dq_a)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        coord
            .state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .held(celeriac_coordinator::store::HOLDING_KEY)
            .await
            .unwrap()
            .len(),
        0,
        "no move left half done"
    );

    // Exactly once: one task-received and one task-succeeded for job 2, both from b; a never saw it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events: Vec<(String, String, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(u, _, _)| *u == job2)
        .cloned()
        .collect();
    let count = |kind: &str| events.iter().filter(|(_, k, _)| k == kind).count();
    assert_eq!(count("task-received"), 1, "{events:?}");
    assert_eq!(count("task-succeeded"), 1, "{events:?}");
    assert!(events.iter().all(|(_, _, h)| *h == b), "{events:?}");
    assert!(coord.state.metrics.reroutes.get() >= 1);
    watcher.abort();
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_profile_gives_queues_and_concurrency_seen_through_inspect() {
    let db = testkit::redis_db_or_skip!();
    let node = format!("prof{}@coord", short_id());
    let cfg = TempConfig::new(
        "profiles:\n  io_bound: { queues: [enrichment, reports], concurrency: 3 }\n",
    );
    let mut cmd = std::process::Command::new(testkit::bin("celeriac-worker"));
    cmd.args([
        "-b",
        &db.url,
        "-n",
        &node,
        "--profile",
        "io_bound",
        "--heartbeat-interval",
        "1",
    ])
    .env("CELERIAC_CONFIG", &cfg.path)
    .env("NO_COLOR", "1");
    let worker = testkit::Child::spawn("profile-worker", &mut cmd);
    worker.wait_for_output("celeriac-worker ready", Duration::from_secs(30));
    let coord = Running::start(&db, &cfg).await;
    coord.wait_alive(&node).await;
    let ok = eventually(Duration::from_secs(20), || async {
        coord.worker(&node).await.is_some_and(|w| {
            let mut queues: Vec<String> =
                serde_json::from_value(w["queues"].clone()).unwrap_or_default();
            queues.sort();
            w["concurrency"] == 3 && queues == ["enrichment", "reports"]
        })
    })
    .await;
    assert!(ok, "{:?}", coord.worker(&node).await);
    coord.stop().await;
}
