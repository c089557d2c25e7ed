//! The coordinator on RabbitMQ (issue 12): real RabbitMQ (a private vhost), real Rust workers, the Redis result
//! backend keeping the job records. Jobs are routed to a worker's `<node>.dq2` as Celery declares it on AMQP
//! (bound to `C.dq2`); when that worker is killed, the job waiting in its queue is taken unacknowledged,
//! published to the next worker with a confirm, then acknowledged: it runs once, on the other worker.
//!
//! Needs `cargo build -p celeriac-worker` first (scripts/test.sh builds every binary).

mod common;

use celeriac_coordinator::{AppState, Connections, serve};
use common::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_jobs_go_to_a_workers_dq2_and_move_when_it_dies() {
    let vhost = testkit::amqp_vhost_or_skip!();
    let db = testkit::redis_db_or_skip!();
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let a = format!("a{id}@amqp");
    let b = format!("b{id}@amqp");
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
        "--result-backend",
        db.url.as_str(),
    ];
    let mut wa = testkit::rust_worker(
        &vhost.url,
        &a,
        &[&["-Q", &format!("idle{id}a")][..], &flags].concat(),
    );
    let _wb = testkit::rust_worker(
        &vhost.url,
        &b,
        &[&["-Q", &format!("idle{id}b")][..], &flags].concat(),
    );

    // Every task event on the vhost, to count runs.
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let events = Connections::connect(&vhost.url).await.expect("RabbitMQ");
    let mut rx = celeriac_control::EventReceiver::new(&events.transport)
        .await
        .unwrap();
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

    // The coordinator: broker RabbitMQ, records in the Redis result backend.
    let mut s = settings(&cfg, None);
    s.result_backend = Some(db.url.clone());
    let conns = Connections::connect(&vhost.url).await.expect("RabbitMQ");
    assert!(conns.broker_redis.is_none());
    let state = Arc::new(AppState::new(s, conns).await.expect("state"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let st = state.clone();
    let server = tokio::spawn(async move {
        serve(st, listener, stop_rx)
            .await
            .expect("coordinator runs");
    });
    for node in [&a, &b] {
        let alive = eventually(Duration::from_secs(30), || async {
            worker_row(addr, node)
                .await
                .is_some_and(|w| w["alive"] == true)
        })
        .await;
        assert!(alive, "{node} never showed up alive");
    }

    // Job 1 occupies a's only slot; job 2 is routed to a too and waits in a.dq2.
    let (code, v) = http(
        addr,
        "POST",
        "/api/v1/jobs",
        Some(&json!({"task": "celeriac.sleep", "args": [6], "queue": "work"})),
    )
    .await;
    assert_eq!((code, v["node"].as_str()), (201, Some(a.as_str())), "{v}");
    assert_eq!(v["queue"], format!("{a}.dq2"), "{v}");
    let busy = eventually(Duration::from_secs(20), || async {
        worker_row(addr, &a).await.is_some_and(|w| w["active"] == 1)
    })
    .await;
    assert!(busy, "a never reported the sleep as active");
    let (code, v) = http(
        addr,
        "POST",
        "/api/v1/jobs",
        Some(&json!({"task": "celeriac.add", "args": [20, 22], "queue": "work"})),
    )
    .await;
    assert_eq!((code, v["node"].as_str()), (201, Some(a.as_str())), "{v}");
    let job2 = v["id"].as_str().unwrap().to_string();
    let dq_a = format!("{a}.dq2");
    let waiting = eventually(Duration::from_secs(5), || async {
        state.jobs.transport.queue_len(&dq_a).await.unwrap() == Some(1)
    })
    .await;
    assert!(waiting, "job 2 must be waiting in {dq_a} before the kill");
    // The queue depths the API and metrics show come from RabbitMQ.
    let depths = state.jobs.queue_depths().await.unwrap();
    let d = depths
        .iter()
        .find(|d| d.name == dq_a)
        .expect("a.dq2 listed");
    assert_eq!((d.total, d.direct), (1, true));

    // a dies: RabbitMQ gives back what it held (job 1, acks late), and once a is offline the coordinator moves
    // both jobs to b.
    wa.signal("KILL");
    let _ = wa.wait_timeout(Duration::from_secs(5));
    let done = wait_job_ready(addr, &job2, Duration::from_secs(90)).await;
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
        state.jobs.transport.queue_len(&dq_a).await.unwrap(),
        Some(0)
    );
    assert!(state.metrics.reroutes.get() >= 1);

    // Exactly once: job 2 was received and succeeded once, on b; a never saw it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ev: Vec<(String, String, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(u, _, _)| *u == job2)
        .cloned()
        .collect();
    let count = |kind: &str| ev.iter().filter(|(_, k, _)| k == kind).count();
    assert_eq!(count("task-received"), 1, "{ev:?}");
    assert_eq!(count("task-succeeded"), 1, "{ev:?}");
    assert!(ev.iter().all(|(_, _, h)| *h == b), "{ev:?}");
    watcher.abort();
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

/// Without a Redis result backend the coordinator on RabbitMQ has nowhere for its records: it says so.
#[tokio::test]
async fn on_rabbitmq_the_coordinator_needs_a_redis_result_backend() {
    let vhost = testkit::amqp_vhost_or_skip!();
    let cfg = TempConfig::new("workers: []\n");
    let conns = Connections::connect(&vhost.url).await.expect("RabbitMQ");
    let err = AppState::new(settings(&cfg, None), conns)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("--result-backend"), "{err}");
}
