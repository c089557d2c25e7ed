//! Several coordinators on RabbitMQ, the leader lease in the Redis result backend: real RabbitMQ (a private vhost),
//! real `celeriac-coordinator` and `celeriac-worker` processes.
//!
//! On RabbitMQ a move has no holding list: the leader takes the message unacknowledged from the offline worker's
//! `.dq2`, checks its lease (a `GET`), publishes the message to its new queue with a confirm, and only then
//! acknowledges it. The test
//!
//! 1. starts two coordinators: one takes the lease (the key in Redis names it, the metrics say 1 and 0), the other
//!    serves reads (`/readyz`, the view of a job submitted to the leader);
//! 2. kills a worker with two jobs in its `.dq2`; the leader publishes the first to the other worker and is
//!    SIGKILLed before acknowledging it (held there by the test-only `CELERIAC_TEST_PAUSE_AFTER_PUBLISH_MS`); the
//!    follower takes the lease within a few seconds and moves both messages again: no job is lost, the one
//!    published before the kill runs twice (the documented "delivered twice, never lost"), and every copy
//!    published runs exactly once;
//! 3. with a third coordinator standing by, the new leader is SIGSTOPped with a message taken and its lease not yet
//!    checked (`CELERIAC_TEST_PAUSE_IN_MOVE_MS`); the third one takes the lease, and once SIGCONTed the deposed
//!    leader logs that it lost leadership, its lease check refuses the move, it publishes nothing and gives the
//!    message back to the `.dq2`, from where the new leader moves it, once.
//!
//! Needs `cargo build -p celeriac-worker` first (scripts/test.sh builds every binary).

mod common;

use celeriac_coordinator::Connections;
use celeriac_coordinator::leader::LEASE_KEY;
use celery_proto::TaskRequest;
use common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_celeriac-coordinator");

/// Every coordinator's `--lease-ttl`; they try or renew the lease every 0.5 s.
const LEASE_TTL_SECS: &str = "2";
/// A killed or stopped leader must be replaced within this long: the lease, one try, and slack for a loaded machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(6);

const GAINED: &str = "gained coordinator leadership";
const LOST: &str = "lost coordinator leadership";
const REFUSED: &str = "move refused: this coordinator's lease is no longer current";
const MOVED: &str = "re-routed a job waiting for an offline worker";
const HOOK_TAKEN: &str = "test hook: pausing with a message taken";
const HOOK_PUBLISHED: &str = "test hook: pausing after publishing a moved message";

/// A `celeriac-coordinator serve` process on RabbitMQ with the Redis result backend, with one test hook set.
fn coordinator(
    name: &str,
    broker: &str,
    backend: &str,
    cfg: &TempConfig,
    port: u16,
    hook: Option<(&str, &str)>,
) -> testkit::Child {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["-b", broker, "--result-backend", backend, "--config"])
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
            LEASE_TTL_SECS,
        ])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env("CELERIAC_JOB_KEY", JOB_KEY)
        .env_remove("CELERIAC_TEST_PAUSE_IN_MOVE_MS")
        .env_remove("CELERIAC_TEST_PAUSE_AFTER_PUBLISH_MS");
    if let Some((var, ms)) = hook {
        cmd.env(var, ms);
    }
    let child = testkit::Child::spawn(name, &mut cmd);
    child.wait_for_output("celeriac-coordinator listening", Duration::from_secs(30));
    child
}

/// The lines of a process's log containing `needle`, and with `id` only those about that job.
fn lines(child: &testkit::Child, needle: &str, id: Option<&str>) -> usize {
    let job = id.map(|i| format!("id={i}"));
    child
        .output()
        .lines()
        .filter(|l| l.contains(needle) && job.as_ref().is_none_or(|j| l.contains(j.as_str())))
        .count()
}

/// The lease as Redis holds it: `(term, token)`.
async fn lease(redis: &broker::Broker) -> Option<(u64, String)> {
    let raw = redis.kv_get(LEASE_KEY).await.expect("Redis")?;
    let text = String::from_utf8(raw).expect("lease text");
    let (term, token) = text.split_once(':')?;
    Some((term.parse().expect("term"), token.to_string()))
}

async fn is_leader(addr: SocketAddr) -> Option<f64> {
    metric(
        &get_text(addr, "/metrics").await,
        "celeriac_coordinator_is_leader",
    )
}

/// Ready messages in `queue` (a passive declare; a queue not declared yet counts 0).
async fn depth(t: &transport::SharedTransport, queue: &str) -> u64 {
    t.queue_len(queue).await.expect("RabbitMQ").unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_a_dead_leaders_moves_are_redone_and_a_deposed_leader_publishes_nothing() {
    let vhost = testkit::amqp_vhost_or_skip!();
    let db = testkit::redis_db_or_skip!();
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let a = format!("a{id}@amqpha");
    let b = format!("b{id}@amqpha");
    let d = format!("d{id}@amqpha");
    // a is preferred for `work` and stays preferred while its one slot is busy, so a second job waits in its .dq2;
    // b takes what is moved. d is not in the config: it only has to be seen alive, then die (part 3).
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
    let worker = |node: &str, c: &str| {
        let q = format!("idle{id}{}", &node[..1]);
        testkit::rust_worker(
            &vhost.url,
            node,
            &[&["-c", c, "-Q", &q][..], &flags].concat(),
        )
    };
    let mut wa = worker(&a, "1");
    // b runs both copies of a job moved twice side by side.
    let _wb = worker(&b, "4");
    let mut wd = worker(&d, "1");

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
    // How many events of `kind` b sent for `job`.
    let runs = |job: &str, kind: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(u, k, h)| u == job && k == kind && *h == b)
            .count()
    };
    let t = Connections::connect(&vhost.url)
        .await
        .expect("RabbitMQ")
        .transport;
    let redis = broker::Broker::connect(&db.url).await.expect("Redis");

    // 1. Two coordinators: the first takes the lease, the second stands by and serves reads.
    let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let (a1, a2, a3) = (addr(p1), addr(p2), addr(p3));
    let mut c1 = coordinator(
        "amqp-coordinator-1",
        &vhost.url,
        &db.url,
        &cfg,
        p1,
        Some(("CELERIAC_TEST_PAUSE_AFTER_PUBLISH_MS", "600000")),
    );
    c1.wait_for_output(GAINED, Duration::from_secs(20));
    let c2 = coordinator(
        "amqp-coordinator-2",
        &vhost.url,
        &db.url,
        &cfg,
        p2,
        Some(("CELERIAC_TEST_PAUSE_IN_MOVE_MS", "5000")),
    );
    for (at, node) in [(a1, &a), (a1, &b), (a1, &d), (a2, &a), (a2, &b), (a2, &d)] {
        let ok = eventually(Duration::from_secs(30), || async {
            worker_row(at, node)
                .await
                .is_some_and(|w| w["alive"] == true)
        })
        .await;
        assert!(ok, "{at} never saw {node} alive");
    }
    let (term1, token1) = lease(&redis).await.expect("a lease in Redis");
    assert!(
        c1.output().contains(&format!("token={token1}")),
        "the lease {term1}:{token1} is not coordinator 1's:\n{}",
        c1.output()
    );
    assert_eq!(lines(&c2, GAINED, None), 0, "{}", c2.output());
    assert_eq!(
        (is_leader(a1).await, is_leader(a2).await),
        (Some(1.0), Some(0.0))
    );
    assert_eq!(
        metric(
            &get_text(a1, "/metrics").await,
            "celeriac_coordinator_leader_term"
        ),
        Some(term1 as f64)
    );
    let (code, v) = http(a2, "GET", "/readyz", None).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("ready")), "{v}");

    // 2. Job 1 occupies a's only slot, job 2 waits in a.dq2; submitted to the leader, read on the follower.
    let (code, v) = http(
        a1,
        "POST",
        "/api/v1/jobs",
        Some(&json!({"task": "celeriac.sleep", "args": [8], "queue": "work"})),
    )
    .await;
    assert_eq!((code, v["node"].as_str()), (201, Some(a.as_str())), "{v}");
    let job1 = v["id"].as_str().unwrap().to_string();
    let busy = eventually(Duration::from_secs(20), || async {
        worker_row(a2, &a).await.is_some_and(|w| w["active"] == 1)
    })
    .await;
    assert!(busy, "a never reported the sleep as active");
    let (code, v) = http(
        a1,
        "POST",
        "/api/v1/jobs",
        Some(&json!({"task": "celeriac.add", "args": [20, 22], "queue": "work"})),
    )
    .await;
    assert_eq!((code, v["node"].as_str()), (201, Some(a.as_str())), "{v}");
    let job2 = v["id"].as_str().unwrap().to_string();
    let dq_a = format!("{a}.dq2");
    let waiting = eventually(Duration::from_secs(5), || async {
        depth(&t, &dq_a).await == 1
    })
    .await;
    assert!(waiting, "job 2 must be waiting in {dq_a} before the kill");
    let (code, v) = http(a2, "GET", &format!("/api/v1/jobs/{job2}"), None).await;
    assert_eq!((code, v["id"].as_str()), (200, Some(job2.as_str())), "{v}");
    assert_eq!(v["published_to"], dq_a.as_str(), "{v}");

    // a dies (job 1 goes back to a.dq2 with its connection). The leader takes both jobs, publishes one to b and is
    // held before acknowledging it: it is killed there.
    wa.signal("KILL");
    let _ = wa.wait_timeout(Duration::from_secs(5));
    c1.wait_for_output(HOOK_PUBLISHED, Duration::from_secs(30));
    assert_eq!(lines(&c1, MOVED, None), 1, "{}", c1.output());
    let killed = Instant::now();
    c1.signal("KILL");
    assert!(
        c1.wait_timeout(Duration::from_secs(5)).is_some(),
        "coordinator 1 did not die"
    );
    c2.wait_for_output(GAINED, Duration::from_secs(20));
    let takeover_kill = killed.elapsed();
    assert!(
        takeover_kill <= TAKEOVER_BOUND,
        "took {takeover_kill:?} to replace the killed leader"
    );
    let (term2, token2) = lease(&redis).await.expect("a lease in Redis");
    assert!(term2 > term1, "{term1} then {term2}");
    assert!(
        c2.output().contains(&format!("token={token2}")),
        "{}",
        c2.output()
    );

    // The new leader moves both messages again: the one published before the kill came back unacknowledged.
    let redone = eventually(Duration::from_secs(60), || async {
        metric(
            &get_text(a2, "/metrics").await,
            "celeriac_coordinator_reroutes_total",
        ) == Some(2.0)
    })
    .await;
    assert!(redone, "coordinator 2 did not move both:\n{}", c2.output());
    assert_eq!(depth(&t, &dq_a).await, 0);
    let moves = |job: &str| lines(&c1, MOVED, Some(job)) + lines(&c2, MOVED, Some(job));
    let (m1, m2) = (moves(&job1), moves(&job2));
    assert_eq!(m1 + m2, 3, "one move before the kill, two after");
    for (job, m) in [(&job1, m1), (&job2, m2)] {
        assert!((1..=2).contains(&m), "job {job} moved {m} times");
    }
    // Every copy published runs, each once, on b: nothing lost, at most twice per job.
    let ran = eventually(Duration::from_secs(60), || async {
        runs(&job1, "task-succeeded") == m1 && runs(&job2, "task-succeeded") == m2
    })
    .await;
    assert!(
        ran,
        "runs do not match the moves: {:?}",
        seen.lock().unwrap()
    );
    for (job, m) in [(&job1, m1), (&job2, m2)] {
        assert_eq!(runs(job, "task-received"), m, "{:?}", seen.lock().unwrap());
    }
    // Besides b, only a sent events: for job 1, which it was running when it was killed, and never a success.
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(u, _, h)| (*u == job1 || *u == job2) && *h != b)
            .all(|(u, k, h)| *u == job1 && *h == a && k != "task-succeeded"),
        "{:?}",
        seen.lock().unwrap()
    );
    let done = wait_job_ready(a2, &job2, Duration::from_secs(30)).await;
    assert_eq!(
        (&done["state"], &done["result"]),
        (&json!("SUCCESS"), &json!(42)),
        "{done}"
    );
    assert_eq!(done["worker"], b.as_str(), "{done}");

    // 3. A third coordinator stands by; it must have seen d alive to re-route d's queue.
    let c3 = coordinator("amqp-coordinator-3", &vhost.url, &db.url, &cfg, p3, None);
    let ok = eventually(Duration::from_secs(30), || async {
        worker_row(a3, &d).await.is_some_and(|w| w["alive"] == true)
    })
    .await;
    assert!(ok, "coordinator 3 never saw {d} alive");
    assert_eq!(is_leader(a3).await, Some(0.0));
    wd.signal("KILL");
    let _ = wd.wait_timeout(Duration::from_secs(5));
    for at in [a2, a3] {
        let ok = eventually(Duration::from_secs(30), || async {
            worker_row(at, &d)
                .await
                .is_some_and(|w| w["alive"] == false)
        })
        .await;
        assert!(ok, "{at} never saw {d} offline");
    }

    // A job waits in the dead d's queue (published there directly, without a record: it goes to the default
    // queue `celery`, which nothing consumes, so its messages can be counted).
    let dq_d = format!("{d}.dq2");
    let mut req = TaskRequest::new("celeriac.add");
    req.args = vec![json!(1), json!(2)];
    req.queue = dq_d.clone();
    let job3 = req.id.clone();
    let hooks_before = lines(&c2, HOOK_TAKEN, None);
    t.publish(&dq_d, &req.envelope()).await.expect("publish");

    // The leader takes it and is held before checking its lease: it is stopped there (a long pause, a frozen VM).
    let taken = testkit::wait_until(Duration::from_secs(30), || {
        lines(&c2, HOOK_TAKEN, None) > hooks_before
    });
    assert!(taken, "coordinator 2 did not take job 3:\n{}", c2.output());
    c2.signal("STOP");
    let stopped = Instant::now();
    c3.wait_for_output(GAINED, Duration::from_secs(20));
    let takeover_stop = stopped.elapsed();
    assert!(
        takeover_stop <= TAKEOVER_BOUND,
        "took {takeover_stop:?} to replace the stopped leader"
    );
    let (term3, token3) = lease(&redis).await.expect("a lease in Redis");
    assert!(term3 > term2, "{term2} then {term3}");
    assert!(
        c3.output().contains(&format!("token={token3}")),
        "{}",
        c3.output()
    );
    // The stopped process still holds the message unacknowledged: nobody can move it yet.
    assert_eq!((depth(&t, &dq_d).await, depth(&t, "celery").await), (0, 0));

    // It wakes up deposed: it says so, its lease check refuses the move, it publishes nothing and gives the message
    // back; the new leader moves it.
    c2.signal("CONT");
    c2.wait_for_output(LOST, Duration::from_secs(20));
    c2.wait_for_output(REFUSED, Duration::from_secs(20));
    let moved = eventually(Duration::from_secs(30), || async {
        depth(&t, "celery").await == 1 && depth(&t, &dq_d).await == 0
    })
    .await;
    assert!(
        moved,
        "job 3 was not moved by the new leader.\ncoordinator 2:\n{}\ncoordinator 3:\n{}",
        c2.output(),
        c3.output()
    );
    assert_eq!(lines(&c2, MOVED, Some(&job3)), 0, "{}", c2.output());
    assert_eq!(lines(&c3, MOVED, Some(&job3)), 1, "{}", c3.output());
    assert!(
        c3.output().lines().any(|l| l.contains(MOVED)
            && l.contains(&format!("id={job3}"))
            && l.contains("to=celery")),
        "{}",
        c3.output()
    );
    assert_eq!(depth(&t, "celery").await, 1, "published once");
    assert_eq!(
        (is_leader(a2).await, is_leader(a3).await),
        (Some(0.0), Some(1.0))
    );
    // The deposed coordinator goes on serving reads.
    let (code, v) = http(a2, "GET", &format!("/api/v1/jobs/{job2}"), None).await;
    assert_eq!((code, v["state"].as_str()), (200, Some("SUCCESS")), "{v}");
    // Part 2's moves were not repeated.
    assert_eq!((moves(&job1), moves(&job2)), (m1, m2));

    // `work` is named by the config and declared by no one: every metrics scrape above asked its depth, and
    // RabbitMQ answered with a 404 channel close. That is "no such queue", not an error: lapin's error line for it
    // stays out of the coordinators' logs (`broker_amqp::QuietNotFound`).
    assert_eq!(t.queue_len("work").await.expect("RabbitMQ"), None);
    let page = get_text(a3, "/metrics").await;
    assert_eq!(
        metric(&page, "celeriac_coordinator_is_leader"),
        Some(1.0),
        "{page}"
    );
    assert!(
        !page
            .lines()
            .any(|l| l.contains("queue_depth{") && l.contains("queue=\"work\"")),
        "a missing queue has no depth series: {page}"
    );
    for c in [&c2, &c3] {
        assert!(!c.output().contains("NOT_FOUND"), "{}", c.output());
    }

    eprintln!(
        "observed: killed leader replaced after {takeover_kill:?}, stopped leader after {takeover_stop:?}; \
         job 1 moved and run {m1} time(s), job 2 {m2} time(s); terms {term1} -> {term2} -> {term3}"
    );
    watcher.abort();
}
