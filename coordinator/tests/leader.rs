//! Several coordinators on one broker: one leader through the fenced lease in Redis, the others standing by.
//!
//! - In process, against real Redis: a deposed leader's move steps are refused by Redis (nothing taken, nothing
//!   pushed), the next leader has a higher term and finishes the half-done move exactly once, and a follower's
//!   re-route pass moves nothing.
//! - As real processes: two `celeriac-coordinator`s and two `celeriac-worker`s; a worker dies with a job waiting
//!   in its `.dq2`, the leader takes the job into the holding list and is SIGKILLed there (a test hook holds it
//!   between the two steps of the move); the other coordinator takes the lease over, finishes the move, and the
//!   job runs exactly once (counted from the workers' task events).

mod common;

use broker::lease::{Commit, Fenced};
use celeriac_coordinator::leader::LEASE_KEY;
use celeriac_coordinator::{jobs, store::HOLDING_KEY};
use celery_proto::{Message, TaskRequest, kombu_redis};
use common::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_celeriac-coordinator");

const CONFIG: &str = "routing: { default_strategy: queue }\n";

/// The job key the coordinator processes get: the one `common::http` presents (`X-Job-Key`).
const HA_JOB_KEY: &str = "job-key-for-tests";

fn task_bytes(queue: &str) -> (String, Vec<u8>) {
    let mut req = TaskRequest::new("celeriac.ping");
    req.queue = queue.into();
    let id = req.id.clone();
    (id, req.envelope().encode())
}

#[actix_web::test]
async fn a_deposed_leader_moves_nothing_and_the_next_leader_finishes_the_move_once() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(CONFIG);
    let a = state(&db, &cfg, None).await;
    let b = state(&db, &cfg, None).await;
    let redis = a.jobs.broker_redis.clone().unwrap();

    let fa = a
        .leader
        .tick()
        .await
        .expect("the first coordinator takes the free lease");
    assert!(b.leader.tick().await.is_none(), "the second one follows");
    assert_eq!(
        (a.metrics.is_leader.get(), b.metrics.is_leader.get()),
        (1, 0)
    );
    assert_eq!(b.leader.status().role, "follower");
    assert_eq!(b.leader.status().term, fa.term);

    // Two jobs wait in a dead node's queue; the leader takes the first into the holding list (step one).
    let (id1, m1) = task_bytes("dead@h.dq2");
    let (_id2, m2) = task_bytes("dead@h.dq2");
    redis
        .lpush(&kombu_redis::queue_key("dead@h.dq2", 0), &m1)
        .await
        .unwrap();
    redis
        .lpush(&kombu_redis::queue_key("dead@h.dq2", 0), &m2)
        .await
        .unwrap();
    let raw = match redis
        .fenced_take(&fa, "dead@h.dq2", HOLDING_KEY)
        .await
        .unwrap()
    {
        Fenced::Done(Some(raw)) => raw,
        other => panic!("the leader could not take: {other:?}"),
    };
    assert_eq!(raw, m1, "oldest first");

    // The leader stalls past its lease (as if paused or cut off): Redis lets the lease go and the other
    // coordinator takes it, with a higher term.
    assert!(redis.kv_del(LEASE_KEY).await.unwrap());
    let fb = b
        .leader
        .tick()
        .await
        .expect("the follower takes the free lease");
    assert!(fb.term > fa.term, "{} then {}", fa.term, fb.term);

    // The deposed leader wakes up: Redis refuses both of its steps; nothing moves.
    assert_eq!(
        redis
            .fenced_commit(&fa, HOLDING_KEY, &raw, "celery", 0, &raw)
            .await
            .unwrap(),
        Fenced::Deposed
    );
    assert_eq!(
        redis
            .fenced_take(&fa, "dead@h.dq2", HOLDING_KEY)
            .await
            .unwrap(),
        Fenced::Deposed
    );
    assert_eq!(redis.held(HOLDING_KEY).await.unwrap(), vec![m1.clone()]);
    assert_eq!(redis.queue_len("dead@h.dq2").await.unwrap(), 1);
    assert_eq!(redis.queue_len("celery").await.unwrap(), 0);
    // It notices at its next renewal and stops counting itself leader.
    assert!(a.leader.tick().await.is_none());
    assert_eq!(a.metrics.is_leader.get(), 0);
    assert_eq!(a.metrics.leader_term.get(), fb.term as i64);
    assert_eq!(a.reroute_pass(true).await, 0, "a follower moves nothing");
    assert_eq!(redis.queue_len("dead@h.dq2").await.unwrap(), 1);

    // The new leader finishes the half-done move, once; a second finish of the same move pushes nothing.
    assert_eq!(jobs::recover_held(&b).await.unwrap(), 1);
    assert_eq!(redis.held(HOLDING_KEY).await.unwrap().len(), 0);
    assert_eq!(redis.queue_len("celery").await.unwrap(), 1);
    assert_eq!(
        redis
            .fenced_commit(&fb, HOLDING_KEY, &raw, "celery", 0, &raw)
            .await
            .unwrap(),
        Fenced::Done(Commit::AlreadyDone)
    );
    assert_eq!(jobs::recover_held(&b).await.unwrap(), 0);
    assert_eq!(redis.queue_len("celery").await.unwrap(), 1, "not twice");
    let moved = redis
        .take_to_holding("celery", "test:peek")
        .await
        .unwrap()
        .unwrap();
    let msg = Message::decode(&moved, true).unwrap();
    assert_eq!(msg.headers["id"], json!(id1));

    // The leader's pass (the never-seen scan) moves the other job; the deposed one still cannot.
    assert_eq!(b.reroute_pass(true).await, 1);
    assert_eq!(redis.queue_len("dead@h.dq2").await.unwrap(), 0);
    assert_eq!(b.metrics.is_leader.get(), 1);

    // A graceful stop hands the lease over at once.
    b.leader.release().await;
    assert_eq!(b.metrics.is_leader.get(), 0);
    let fa2 = a.leader.tick().await.expect("free again after the release");
    assert!(fa2.term > fb.term);
}

fn coordinator(
    name: &str,
    db: &testkit::RedisDb,
    cfg: &TempConfig,
    port: u16,
    pause: bool,
) -> testkit::Child {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["-b", &db.url, "--config"])
        .arg(&cfg.path)
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--inspect-interval",
            "0.5",
            "--inspect-timeout",
            "0.3",
            "--lease-ttl",
            "2",
        ])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env("CELERIAC_JOB_KEY", HA_JOB_KEY)
        .env_remove("CELERIAC_TEST_PAUSE_IN_MOVE_MS");
    if pause {
        // Hold every move between its two steps for ten minutes: the test kills this process there.
        cmd.env("CELERIAC_TEST_PAUSE_IN_MOVE_MS", "600000");
    }
    let child = testkit::Child::spawn(name, &mut cmd);
    child.wait_for_output("celeriac-coordinator listening", Duration::from_secs(30));
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_in_the_middle_of_a_move_is_replaced_and_the_job_runs_exactly_once() {
    let db = testkit::redis_db_or_skip!();
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let a = format!("a{id}@ha");
    let b = format!("b{id}@ha");
    // As in live.rs: a is preferred and stays preferred while its one slot is busy, so a second job waits in
    // its .dq2.
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
    // b also consumes the shared queue, so the job runs even if the new leader sent it there.
    let _wb = testkit::rust_worker(&db.url, &b, &[&["-Q", "work"][..], &flags].concat());

    // Every task event, to count runs.
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let redis = broker::Broker::connect(&db.url).await.unwrap();
    let shared: transport::SharedTransport = Arc::new(redis.clone());
    let mut rx = celeriac_control::EventReceiver::new(&shared).await.unwrap();
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

    // The first coordinator leads (it holds every move half way); the second one stands by.
    let (p1, p2) = (free_port(), free_port());
    let mut c1 = coordinator("coordinator-1", &db, &cfg, p1, true);
    c1.wait_for_output("gained coordinator leadership", Duration::from_secs(20));
    let c2 = coordinator("coordinator-2", &db, &cfg, p2, false);
    let addr1: std::net::SocketAddr = format!("127.0.0.1:{p1}").parse().unwrap();
    let addr2: std::net::SocketAddr = format!("127.0.0.1:{p2}").parse().unwrap();
    for (addr, node) in [(addr1, &a), (addr1, &b), (addr2, &a), (addr2, &b)] {
        let ok = eventually(Duration::from_secs(30), || async {
            worker_row(addr, node)
                .await
                .is_some_and(|w| w["alive"] == true)
        })
        .await;
        assert!(ok, "{addr} never saw {node} alive");
    }
    let page = get_text(addr2, "/metrics").await;
    assert_eq!(
        metric(&page, "celeriac_coordinator_is_leader"),
        Some(0.0),
        "{page}"
    );
    let page = get_text(addr1, "/metrics").await;
    assert_eq!(
        metric(&page, "celeriac_coordinator_is_leader"),
        Some(1.0),
        "{page}"
    );
    let term1 = metric(&page, "celeriac_coordinator_leader_term").expect("a term");

    // Jobs go in through the follower: every coordinator serves the API. Job 1 occupies a's only slot, job 2
    // waits in a's .dq2.
    let (s, v) = http(
        addr2,
        "POST",
        "/api/v1/jobs",
        Some(&json!({"task": "celeriac.sleep", "args": [30], "queue": "work"})),
    )
    .await;
    assert_eq!((s, v["node"].as_str()), (201, Some(a.as_str())), "{v}");
    let busy = eventually(Duration::from_secs(20), || async {
        worker_row(addr2, &a)
            .await
            .is_some_and(|w| w["active"] == 1)
    })
    .await;
    assert!(busy, "a never reported the sleep as active");
    let (s, v) = http(
        addr2,
        "POST",
        "/api/v1/jobs",
        Some(&json!({"task": "celeriac.add", "args": [20, 22], "queue": "work"})),
    )
    .await;
    assert_eq!((s, v["node"].as_str()), (201, Some(a.as_str())), "{v}");
    let job2 = v["id"].as_str().unwrap().to_string();
    let dq_a = format!("{a}.dq2");
    let waiting = eventually(Duration::from_secs(5), || async {
        redis.queue_len(&dq_a).await.unwrap() == 1
    })
    .await;
    assert!(waiting, "job 2 must wait in {dq_a} before the kill");

    // a dies. The leader sees it offline and takes job 2 into the holding list, where the hook holds it.
    wa.signal("KILL");
    let _ = wa.wait_timeout(Duration::from_secs(5));
    c1.wait_for_output(
        "test hook: pausing between the two steps of a move",
        Duration::from_secs(30),
    );
    assert_eq!(
        redis.held(HOLDING_KEY).await.unwrap().len(),
        1,
        "the move is half done"
    );
    assert_eq!(redis.queue_len(&dq_a).await.unwrap(), 0);

    // The leader dies in the middle of the move. The other coordinator takes the lease over and finishes it.
    c1.signal("KILL");
    assert!(
        c1.wait_timeout(Duration::from_secs(5)).is_some(),
        "coordinator 1 did not die"
    );
    c2.wait_for_output("gained coordinator leadership", Duration::from_secs(20));
    let done = wait_job_ready(addr2, &job2, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["result"], 42);
    assert_eq!(done["worker"], b.as_str(), "{done}");
    assert_eq!(done["reroutes"].as_array().map(Vec::len), Some(1), "{done}");
    assert_eq!(done["reroutes"][0]["from_node"], a.as_str(), "{done}");
    assert_eq!(
        redis.held(HOLDING_KEY).await.unwrap().len(),
        0,
        "no move left half done"
    );
    assert_eq!(redis.queue_len(&dq_a).await.unwrap(), 0);

    let page = get_text(addr2, "/metrics").await;
    assert_eq!(
        metric(&page, "celeriac_coordinator_is_leader"),
        Some(1.0),
        "{page}"
    );
    let term2 = metric(&page, "celeriac_coordinator_leader_term").expect("a term");
    assert!(term2 > term1, "{term1} then {term2}");
    assert_eq!(
        metric(&page, "celeriac_coordinator_reroutes_total"),
        Some(1.0),
        "{page}"
    );

    // Exactly once: one task-received and one task-succeeded for job 2, both from b.
    let settled = eventually(Duration::from_secs(10), || async {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(u, k, _)| *u == job2 && k == "task-succeeded")
    })
    .await;
    assert!(settled, "no task-succeeded event for job 2");
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
    watcher.abort();
}
