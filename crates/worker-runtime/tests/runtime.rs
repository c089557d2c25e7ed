//! The worker runtime end to end on the in-memory transport, under paused tokio time: every test runs a real
//! `Worker::run()` against a `MemoryBroker` and asserts what a client or the broker would see (stored result metas,
//! acks, unacked messages, queue contents and redelivered flags, dead letters, events, request phases). Virtual time
//! is deterministic, so the time assertions below are exact up to scheduling, not wall-clock measurements.

mod support;

use celery_proto::{Envelope, Signature};
use chrono::Utc;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use support::*;
use tokio::time::Instant;
use transport::Transport;
use worker_runtime::TaskOptions;
use worker_runtime::state::Phase;
use worker_runtime::task::StopReason;

const MINUTE: Duration = Duration::from_secs(60);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Success path and ack timing
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn success_acks_early_while_the_body_still_runs() {
    let probe = Probe::new();
    let mut cfg = config();
    cfg.task_events = true;
    let broker = transport::memory::MemoryBroker::new();
    let events = Events::subscribe(&broker).await;
    let w = Running::start_on(broker, cfg, probe.registry());

    let req = request("t.block", vec![]);
    w.publish(&req).await;
    until("body started", MINUTE, || probe.has_started(&req.id)).await;
    // Early ack: the message is gone from the broker although the body has not returned.
    assert!(
        w.broker.unacked().is_empty(),
        "acked before the body finished"
    );
    assert_eq!(w.broker.acks(), 1);
    assert_eq!(w.phase(&req.id), Some(Phase::Active));
    assert_eq!(w.result(&req.id), None, "no result before the body returns");

    probe.gate.open();
    let meta = w.wait_status(&req.id, "SUCCESS").await;
    assert_eq!(meta["result"], "released");
    assert_eq!(meta["task_id"], json!(req.id));
    assert!(meta["date_done"].is_string());
    until("request untracked", MINUTE, || w.phase(&req.id).is_none()).await;
    assert_eq!(w.broker.acks(), 1, "acked exactly once");
    assert!(w.broker.unacked().is_empty());
    assert_eq!(w.state.totals().get("t.block"), Some(&1));

    until("succeeded event", MINUTE, || {
        events
            .types_for(&req.id)
            .contains(&"task-succeeded".to_string())
    })
    .await;
    assert_eq!(
        events.types_for(&req.id),
        vec!["task-received", "task-started", "task-succeeded"]
    );
    let received = &events.for_task(&req.id)[0];
    assert_eq!(received["name"], "t.block");
    assert_eq!(received["hostname"], NODE);
    assert_eq!(events.of_type("worker-online").len(), 1);
    w.stop().await;
    assert_eq!(events.of_type("worker-offline").len(), 1);
}

/// Runs `task` (a gated task, acks_late by its option or by the config) and checks the message stays unacked while
/// the body runs and is acked once after it returned.
async fn check_acks_late(cfg: worker_runtime::RuntimeConfig, probe: Probe, task: &str) {
    let mut reg = probe.registry();
    reg.register(probe.block("t.late").with_options(TaskOptions {
        acks_late: true,
        ..TaskOptions::default()
    }));
    let w = Running::start(cfg, reg);
    let req = request(task, vec![]);
    w.publish(&req).await;
    until("body started", MINUTE, || probe.has_started(&req.id)).await;
    // Let virtual time pass: still held.
    tokio::time::sleep(secs(5.0)).await;
    assert_eq!(w.broker.unacked().len(), 1, "held unacked while running");
    assert_eq!(w.broker.acks(), 0);
    assert_eq!(w.phase(&req.id), Some(Phase::Active));

    probe.gate.open();
    let meta = w.wait_status(&req.id, "SUCCESS").await;
    assert_eq!(meta["result"], "released");
    until("acked", MINUTE, || w.broker.unacked().is_empty()).await;
    assert_eq!(w.broker.acks(), 1, "acked exactly once");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn acks_late_task_option_acks_after_the_body_returns() {
    check_acks_late(config(), Probe::new(), "t.late").await;
}

#[tokio::test(start_paused = true)]
async fn acks_late_config_acks_after_the_body_returns() {
    let mut cfg = config();
    cfg.acks_late = true;
    check_acks_late(cfg, Probe::new(), "t.block").await;
}

// ---------------------------------------------------------------------------------------------------------------
// 2. ETA
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn eta_task_is_scheduled_runs_on_time_and_takes_no_prefetch_slot() {
    let probe = Probe::new();
    let mut cfg = config();
    cfg.concurrency = 1;
    cfg.prefetch_multiplier = 1;
    let w = Running::start(cfg, probe.registry());
    let t0 = Instant::now();

    let mut eta = request("t.record", vec![json!("later")]);
    eta.eta = Some(Utc::now() + chrono::Duration::seconds(10));
    let now = request("t.record", vec![json!("now")]);
    w.publish(&eta).await;
    w.publish(&now).await;

    // With a prefetch of 1, the second message is only taken because the ETA one gave its slot back.
    let meta = w.wait_status(&now.id, "SUCCESS").await;
    assert_eq!(meta["result"], "now");
    assert!(probe.start_of(&now.id).unwrap() - t0 < secs(1.0));
    assert_eq!(w.phase(&eta.id), Some(Phase::Scheduled));
    assert_eq!(
        w.broker.unacked().len(),
        1,
        "the ETA message is held unacked"
    );
    assert_eq!(w.broker.queued(QUEUE), 0);
    assert_eq!(
        w.broker.held_beyond_prefetch(),
        1,
        "the transport is told (AMQP raises basic.qos by as much)"
    );

    // Not run before its time.
    tokio::time::sleep_until(t0 + secs(9.0)).await;
    assert!(!probe.has_started(&eta.id), "ETA task ran early");
    assert_eq!(w.phase(&eta.id), Some(Phase::Scheduled));
    assert_eq!(w.result(&eta.id), None);

    let meta = w.wait_status(&eta.id, "SUCCESS").await;
    assert_eq!(meta["result"], "later");
    let ran_at = probe.start_of(&eta.id).unwrap() - t0;
    assert!(
        ran_at >= secs(9.5) && ran_at < secs(11.0),
        "ran at {ran_at:?}"
    );
    until("all acked", MINUTE, || w.broker.unacked().is_empty()).await;
    assert_eq!(w.broker.acks(), 2);
    assert_eq!(
        w.broker.held_beyond_prefetch(),
        0,
        "settled: no longer held beyond the prefetch"
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn eta_tasks_beyond_the_hold_bound_keep_their_slot_and_the_rest_waits_in_the_broker() {
    let probe = Probe::new();
    let mut cfg = config();
    cfg.concurrency = 1;
    cfg.prefetch_multiplier = 2;
    cfg.eta_hold_max = 2;
    let w = Running::start(cfg, probe.registry());
    let t0 = Instant::now();
    let mut later = Vec::new();
    for i in 0..5 {
        let mut r = request("t.record", vec![json!(format!("later {i}"))]);
        r.eta = Some(Utc::now() + chrono::Duration::seconds(10));
        w.publish(&r).await;
        later.push(r);
    }
    let now = request("t.record", vec![json!("now")]);
    w.publish(&now).await;

    // Two ETA tasks held beyond the prefetch budget (the bound), two more holding both prefetch slots: the worker
    // takes nothing more, and the fifth ETA task and the plain one wait in the broker.
    until("four scheduled", MINUTE, || {
        later
            .iter()
            .filter(|r| w.phase(&r.id) == Some(Phase::Scheduled))
            .count()
            == 4
    })
    .await;
    tokio::time::sleep(secs(1.0)).await;
    assert_eq!(w.broker.queued(QUEUE), 2, "the rest stays in the broker");
    assert_eq!(w.broker.held_beyond_prefetch(), 2);
    assert!(!probe.has_started(&now.id));

    // When they are due everything runs, the two left in the broker included.
    let meta = w.wait_status(&now.id, "SUCCESS").await;
    assert_eq!(meta["result"], "now");
    assert!(probe.start_of(&now.id).unwrap() - t0 >= secs(9.5));
    for r in &later {
        w.wait_status(&r.id, "SUCCESS").await;
    }
    until("all settled", MINUTE, || {
        w.broker.held_beyond_prefetch() == 0
    })
    .await;
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_result_larger_than_the_limit_is_stored_as_a_value_error() {
    let probe = Probe::new();
    let mut cfg = config();
    cfg.result_max_bytes = 1_000;
    let w = Running::start(cfg, probe.registry());
    let big = request("t.record", vec![json!("x".repeat(5_000))]);
    let small = request("t.record", vec![json!("fits")]);
    w.publish(&big).await;
    w.publish(&small).await;
    let meta = w.wait_status(&big.id, "FAILURE").await;
    let (exc_type, message) = exception(&meta);
    assert_eq!(exc_type, "ValueError");
    assert!(
        message.contains("--result-max-bytes 1000") && message.contains(&big.id),
        "{message}"
    );
    assert_eq!(meta["result"]["exc_module"], "builtins");
    assert_eq!(w.wait_status(&small.id, "SUCCESS").await["result"], "fits");
    w.stop().await;
}

/// A task body that panics fails like a Python task that raises: FAILURE with a RuntimeError naming the panic, the
/// message settled (acked early, or acked after the failure with acks_late), the request no longer active, and the
/// worker goes on with the next message.
#[tokio::test(start_paused = true)]
async fn a_panicking_body_fails_the_task_and_the_worker_goes_on() {
    for acks_late in [false, true] {
        let probe = Probe::new();
        let mut reg = probe.registry();
        reg.register(worker_runtime::Task::new(
            "t.panics",
            &[],
            |_ctx, (): ()| async {
                let v: Vec<u8> = Vec::new();
                if v.is_empty() {
                    panic!("index out of bounds: the analysis met an empty day");
                }
                Ok(Value::Null)
            },
        ));
        // A body that panics before it returns its future, in the call itself.
        reg.register(worker_runtime::Task::new(
            "t.panics_at_once",
            &[],
            |_ctx, (): ()| {
                let limit: Option<u32> = std::hint::black_box(None);
                let limit = limit.expect("a limit in the request");
                async move { Ok(Value::from(limit)) }
            },
        ));
        let mut cfg = config();
        cfg.acks_late = acks_late;
        let w = Running::start(cfg, reg);
        let bad = request("t.panics", vec![]);
        let at_once = request("t.panics_at_once", vec![]);
        let next = request("t.record", vec![json!("after")]);
        w.publish(&bad).await;
        w.publish(&at_once).await;
        w.publish(&next).await;
        for (req, says) in [
            (&bad, "the analysis met an empty day"),
            (&at_once, "a limit in the request"),
        ] {
            let meta = w.wait_status(&req.id, "FAILURE").await;
            let (exc_type, message) = exception(&meta);
            assert_eq!(exc_type, "RuntimeError", "acks_late={acks_late}");
            assert!(
                message.starts_with("task panicked: ") && message.contains(says),
                "{message}"
            );
        }
        assert_eq!(w.wait_status(&next.id, "SUCCESS").await["result"], "after");
        until("requests untracked", MINUTE, || {
            [&bad, &at_once, &next]
                .iter()
                .all(|r| w.phase(&r.id).is_none())
        })
        .await;
        assert!(w.broker.unacked().is_empty(), "acks_late={acks_late}");
        assert_eq!(w.broker.acks(), 3, "acks_late={acks_late}");
        assert_eq!(w.state.totals().get("t.panics"), Some(&1));
        w.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Expiry
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn expired_message_is_revoked_with_reason_expired_and_acked() {
    let probe = Probe::new();
    let mut cfg = config();
    cfg.task_events = true;
    let broker = transport::memory::MemoryBroker::new();
    let events = Events::subscribe(&broker).await;
    let w = Running::start_on(broker, cfg, probe.registry());

    let mut req = request("t.record", vec![]);
    req.expires = Some(Utc::now() - chrono::Duration::seconds(5));
    w.publish(&req).await;

    let meta = w.wait_status(&req.id, "REVOKED").await;
    assert_eq!(
        exception(&meta),
        ("TaskRevokedError".to_string(), "expired".to_string())
    );
    assert_eq!(meta["children"], Value::Null);
    assert!(!probe.has_started(&req.id), "an expired task must not run");
    until("acked", MINUTE, || w.broker.acks() == 1).await;
    assert!(w.broker.unacked().is_empty());
    until("revoked event", MINUTE, || {
        events
            .types_for(&req.id)
            .contains(&"task-revoked".to_string())
    })
    .await;
    let revoked = events
        .for_task(&req.id)
        .into_iter()
        .find(|e| e["type"] == "task-revoked")
        .unwrap();
    assert_eq!(revoked["expired"], true);
    assert_eq!(revoked["terminated"], false);
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Retries
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn retry_republishes_with_countdown_then_fails_after_max_retries() {
    let probe = Probe::new();
    let mut reg = probe.registry();
    reg.register(probe.retrying("t.retry", 2.0, 2));
    let mut cfg = config();
    cfg.task_events = true;
    let broker = transport::memory::MemoryBroker::new();
    let events = Events::subscribe(&broker).await;
    let w = Running::start_on(broker, cfg, reg);
    let req = request("t.retry", vec![]);
    w.publish(&req).await;

    // First attempt: RETRY stored, the message republished with retries=1 and an ETA, held as scheduled.
    let meta = w.wait_status(&req.id, "RETRY").await;
    assert_eq!(
        exception(&meta),
        ("ValueError".to_string(), "try #0".to_string())
    );
    assert!(meta["traceback"].as_str().unwrap().contains("ValueError"));
    until("retry scheduled", MINUTE, || {
        w.phase(&req.id) == Some(Phase::Scheduled)
    })
    .await;
    assert_eq!(probe.started.len(), 1);

    let meta = w.wait_status(&req.id, "FAILURE").await;
    assert_eq!(
        exception(&meta),
        ("ValueError".to_string(), "try #2".to_string())
    );
    let starts = probe.started.all();
    assert_eq!(
        starts.iter().map(|s| s.retries).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "max_retries=2: three attempts"
    );
    for pair in starts.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= secs(1.9) && gap < secs(3.0),
            "retry countdown 2 s, got {gap:?}"
        );
    }
    until("all acked", MINUTE, || {
        w.broker.unacked().is_empty() && w.broker.acks() == 3
    })
    .await;
    assert_eq!(w.broker.queued(QUEUE), 0, "no fourth attempt published");
    // The last attempt ran from a republished message: it kept the caller's reply queue (`rpc://` sends there).
    assert_eq!(
        w.broker.result_reply_to(&req.id).as_deref(),
        Some(req.reply_to.as_str()),
        "the result goes to the reply_to of the original message"
    );

    until("failed event", MINUTE, || {
        events
            .types_for(&req.id)
            .contains(&"task-failed".to_string())
    })
    .await;
    let received: Vec<Value> = events
        .for_task(&req.id)
        .into_iter()
        .filter(|e| e["type"] == "task-received")
        .collect();
    assert_eq!(
        received
            .iter()
            .map(|e| e["retries"].clone())
            .collect::<Vec<_>>(),
        vec![json!(0), json!(1), json!(2)]
    );
    assert!(received[0]["eta"].is_null());
    assert!(received[1]["eta"].is_string() && received[2]["eta"].is_string());
    assert_eq!(received[1]["parent_id"], json!(req.id));
    let types = events.types_for(&req.id);
    assert_eq!(types.iter().filter(|t| *t == "task-retried").count(), 2);
    assert_eq!(types.iter().filter(|t| *t == "task-failed").count(), 1);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn flaky_builtin_succeeds_after_retries() {
    let w = Running::start(config(), worker_runtime::default_registry());
    let mut req = request("celeriac.flaky", vec![]);
    req.kwargs = json!({"succeed_on": 2, "countdown": 1.5})
        .as_object()
        .unwrap()
        .clone();
    let t0 = Instant::now();
    w.publish(&req).await;
    let meta = w.wait_status(&req.id, "SUCCESS").await;
    assert_eq!(meta["result"], "ok after 2 retries");
    assert!(t0.elapsed() >= secs(2.9), "two countdowns of 1.5 s");
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Time limits
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn soft_time_limit_signals_the_body_which_fails_with_soft_time_limit_exceeded() {
    let probe = Probe::new();
    let mut reg = probe.registry();
    reg.register(probe.block("t.soft").with_options(TaskOptions {
        soft_time_limit: Some(1.0),
        ..TaskOptions::default()
    }));
    let w = Running::start(config(), reg);
    let req = request("t.soft", vec![]);
    w.publish(&req).await;

    let meta = w.wait_status(&req.id, "FAILURE").await;
    assert_eq!(exception(&meta).0, "SoftTimeLimitExceeded");
    assert_eq!(meta["result"]["exc_module"], "celery.exceptions");
    assert_eq!(
        probe.stopped.all(),
        vec![(req.id.clone(), StopReason::SoftTimeLimit)],
        "the body saw its stop signal"
    );
    let started = probe.start_of(&req.id).unwrap();
    assert!(started.elapsed() >= secs(1.0) && started.elapsed() < secs(1.5));
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn soft_time_limit_ignored_by_the_body_is_cut_off_after_a_grace_second() {
    let probe = Probe::new();
    let mut reg = probe.registry();
    reg.register(probe.stubborn("t.soft.stubborn").with_options(TaskOptions {
        soft_time_limit: Some(1.0),
        ..TaskOptions::default()
    }));
    let w = Running::start(config(), reg);
    let req = request("t.soft.stubborn", vec![]);
    w.publish(&req).await;
    let meta = w.wait_status(&req.id, "FAILURE").await;
    assert_eq!(exception(&meta).0, "SoftTimeLimitExceeded");
    let ran = probe.start_of(&req.id).unwrap().elapsed();
    assert!(
        ran >= secs(2.0) && ran < secs(2.5),
        "soft 1 s + 1 s grace, got {ran:?}"
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn hard_time_limit_fails_a_body_that_ignores_its_stop_and_frees_the_slot() {
    let probe = Probe::new();
    let mut cfg = config();
    cfg.concurrency = 1;
    let w = Running::start(cfg, probe.registry());
    // The hard limit from the message header (`timelimit: [hard, soft]`).
    let mut req = request("t.stubborn", vec![]);
    req.time_limit = (Some(json!(2)), None);
    let next = request("t.record", vec![json!(1)]);
    w.publish(&req).await;
    w.publish(&next).await;

    let meta = w.wait_status(&req.id, "FAILURE").await;
    assert_eq!(
        exception(&meta),
        (
            "TimeLimitExceeded".to_string(),
            "TimeLimitExceeded(2)".to_string()
        )
    );
    let ran = probe.start_of(&req.id).unwrap().elapsed();
    assert!(
        ran >= secs(2.0) && ran < secs(2.5),
        "hard limit 2 s, got {ran:?}"
    );
    // Concurrency 1: the next task only runs because the execution slot was given back.
    let meta = w.wait_status(&next.id, "SUCCESS").await;
    assert_eq!(meta["result"], 1);
    assert!(probe.stopped.all().is_empty());
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// 6. Revocation
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn revoked_before_delivery_is_stored_revoked_and_not_run() {
    let probe = Probe::new();
    let w = Running::start(config(), probe.registry());
    let req = request("t.record", vec![]);
    w.state.revoke(&req.id);
    w.publish(&req).await;

    let meta = w.wait_status(&req.id, "REVOKED").await;
    assert_eq!(
        exception(&meta),
        ("TaskRevokedError".to_string(), "revoked".to_string())
    );
    assert!(!probe.has_started(&req.id));
    until("acked", MINUTE, || w.broker.acks() == 1).await;
    assert!(w.broker.unacked().is_empty());
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn terminating_a_running_task_stores_revoked_terminated() {
    let probe = Probe::new();
    let mut cfg = config();
    cfg.concurrency = 1;
    let w = Running::start(cfg, probe.registry());
    let req = request("t.block", vec![]);
    w.publish(&req).await;
    until("body started", MINUTE, || probe.has_started(&req.id)).await;

    let found = w.state.requests.by_id(&req.id);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, Phase::Active);
    found[0].1.stop(StopReason::Terminated);

    let meta = w.wait_status(&req.id, "REVOKED").await;
    assert_eq!(
        exception(&meta),
        ("TaskRevokedError".to_string(), "terminated".to_string())
    );
    until("untracked", MINUTE, || w.phase(&req.id).is_none()).await;
    assert_eq!(w.broker.acks(), 1, "acked once (early)");
    assert!(w.broker.unacked().is_empty());
    // The execution slot is free again.
    let next = request("t.record", vec![json!("next")]);
    w.publish(&next).await;
    w.wait_status(&next.id, "SUCCESS").await;
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn revoke_with_terminate_through_the_pidbox() {
    let probe = Probe::new();
    let mut cfg = config();
    cfg.acks_late = true;
    let w = Running::start(cfg, probe.registry());
    let req = request("t.stubborn", vec![]);
    w.publish(&req).await;
    until("body started", MINUTE, || probe.has_started(&req.id)).await;

    let client = celeriac_control::ControlClient::new(w.transport());
    let replies = client
        .broadcast(
            "revoke",
            json!({"task_id": req.id, "terminate": true}),
            None,
            true,
            Duration::from_secs(1),
            Some(1),
        )
        .await
        .expect("control request");
    assert_eq!(
        replies,
        vec![(
            NODE.to_string(),
            json!({"ok": format!("terminate: {}", req.id)})
        )]
    );
    let meta = w.wait_status(&req.id, "REVOKED").await;
    assert_eq!(exception(&meta).1, "terminated");
    assert!(w.state.revoked_ids().contains(&req.id));
    until("acked", MINUTE, || w.broker.unacked().is_empty()).await;
    assert_eq!(w.broker.acks(), 1);

    // A later delivery of the same id is revoked without running (the id stays in the revoked set).
    let mut again = request("t.record", vec![]);
    again.id = req.id.clone();
    w.publish(&again).await;
    until("second delivery acked", MINUTE, || w.broker.acks() == 2).await;
    assert_eq!(probe.started.len(), 1);
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// 7. Rate limits
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn rate_limit_spaces_task_starts() {
    let probe = Probe::new();
    let mut reg = probe.registry();
    reg.register(probe.record("t.limited").with_options(TaskOptions {
        rate_limit: Some("2/s".into()),
        ..TaskOptions::default()
    }));
    let w = Running::start(config(), reg);
    let reqs: Vec<_> = (0..4)
        .map(|i| request("t.limited", vec![json!(i)]))
        .collect();
    let t0 = Instant::now();
    for r in &reqs {
        w.publish(r).await;
    }
    for r in &reqs {
        w.wait_status(&r.id, "SUCCESS").await;
    }
    let mut starts: Vec<Instant> = probe.started.all().iter().map(|s| s.at).collect();
    starts.sort();
    assert_eq!(starts.len(), 4);
    for pair in starts.windows(2) {
        assert!(pair[1] - pair[0] >= secs(0.49), "2/s: starts 0.5 s apart");
    }
    let spread = starts[3] - starts[0];
    assert!(
        spread >= secs(1.49) && spread < secs(2.0),
        "spread {spread:?}"
    );
    assert!(starts[0] - t0 < secs(0.5), "the first one is not delayed");
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// 8-9. Shutdown
// ---------------------------------------------------------------------------------------------------------------

/// Ids of the messages waiting in the queue, with their redelivered flag, in delivery order.
fn queue_contents(w: &Running) -> Vec<(String, bool)> {
    w.broker
        .messages(QUEUE)
        .iter()
        .map(|m| {
            let id = m.headers["id"].as_str().unwrap_or_default().to_string();
            (id, m.redelivered)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn warm_shutdown_restores_reserved_messages_and_finishes_the_active_one() {
    let probe = Probe::new();
    let mut reg = probe.registry();
    reg.register(probe.block("t.late").with_options(TaskOptions {
        acks_late: true,
        ..TaskOptions::default()
    }));
    let mut cfg = config();
    cfg.concurrency = 1;
    cfg.prefetch_multiplier = 4;
    let mut w = Running::start(cfg, reg);

    let active = request("t.late", vec![]);
    let rest: Vec<_> = (0..5)
        .map(|i| request("t.record", vec![json!(i)]))
        .collect();
    w.publish(&active).await;
    for r in &rest {
        w.publish(r).await;
    }
    // Prefetch 4: the active (acks_late) message and 3 reserved ones are held; 2 stay in the queue.
    until("prefetch full", MINUTE, || {
        probe.has_started(&active.id) && w.state.requests.count(Phase::Reserved) == 3
    })
    .await;
    tokio::time::sleep(secs(1.0)).await;
    assert_eq!(w.broker.queued(QUEUE), 2);
    assert_eq!(w.broker.unacked().len(), 4);

    w.signal(worker_runtime::Shutdown::Warm);
    until("reserved restored", MINUTE, || w.broker.queued(QUEUE) == 5).await;
    let q = queue_contents(&w);
    let restored: Vec<String> = q[..3].iter().map(|(id, _)| id.clone()).collect();
    let expected: Vec<String> = rest[..3].iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        restored, expected,
        "the reserved ones are back at the front, in the order they were delivered"
    );
    assert!(
        q[..3].iter().all(|(_, r)| *r),
        "restored messages are marked redelivered"
    );
    assert_eq!(
        q[3..].to_vec(),
        vec![(rest[3].id.clone(), false), (rest[4].id.clone(), false)],
        "untouched messages keep their place and flag"
    );
    // The active one is still held and running; the worker waits for it.
    assert_eq!(w.broker.unacked().len(), 1);
    tokio::time::sleep(secs(5.0)).await;
    assert!(!w.is_finished(), "warm shutdown waits for the active task");

    probe.gate.open();
    w.join().await.expect("run() returns cleanly");
    assert_eq!(w.status(&active.id).as_deref(), Some("SUCCESS"));
    assert!(
        w.broker.unacked().is_empty(),
        "the active message was acked"
    );
    assert_eq!(w.broker.acks(), 1);
    assert_eq!(w.broker.queued(QUEUE), 5);
    assert_eq!(probe.started.len(), 1, "no reserved task ran");
    for r in &rest {
        assert_eq!(w.result(&r.id), None);
    }
}

#[tokio::test(start_paused = true)]
async fn cold_shutdown_restores_everything_held_and_stops_the_active_task() {
    let probe = Probe::new();
    let mut cfg = config();
    cfg.concurrency = 1;
    cfg.prefetch_multiplier = 4;
    cfg.acks_late = true;
    let mut w = Running::start(cfg, probe.registry());

    let active = request("t.block", vec![]);
    let reserved: Vec<_> = (0..2)
        .map(|i| request("t.record", vec![json!(i)]))
        .collect();
    let mut scheduled = request("t.record", vec![json!("eta")]);
    scheduled.eta = Some(Utc::now() + chrono::Duration::seconds(600));
    w.publish(&active).await;
    for r in &reserved {
        w.publish(r).await;
    }
    w.publish(&scheduled).await;
    until("all held", MINUTE, || {
        probe.has_started(&active.id)
            && w.state.requests.count(Phase::Reserved) == 2
            && w.phase(&scheduled.id) == Some(Phase::Scheduled)
    })
    .await;
    assert_eq!(w.broker.unacked().len(), 4);
    assert_eq!(w.broker.queued(QUEUE), 0);

    let (_, stop) = w.state.requests.by_id(&active.id).pop().unwrap();
    assert!(!stop.is_stopped());

    w.signal(worker_runtime::Shutdown::Cold);
    w.join().await.expect("run() returns cleanly");
    // The active task was told to stop.
    assert_eq!(stop.reason(), Some(StopReason::Terminated));
    // Everything held is back, marked redelivered; nothing is left unacked and nothing was acked.
    let q = queue_contents(&w);
    let ids: BTreeSet<String> = q.iter().map(|(id, _)| id.clone()).collect();
    let expected: BTreeSet<String> = [&active, &reserved[0], &reserved[1], &scheduled]
        .iter()
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(ids, expected);
    assert!(
        q.iter().all(|(_, r)| *r),
        "restored messages are marked redelivered"
    );
    assert!(w.broker.unacked().is_empty());
    assert_eq!(w.broker.acks(), 0);

    // Let the stopped handler finish whatever it does after run() returned.
    tokio::time::sleep(secs(5.0)).await;
    assert_eq!(
        w.broker.queued(QUEUE),
        4,
        "the restored messages stay restored"
    );
    assert_eq!(w.broker.acks(), 0, "a restored message is never acked too");
    for r in [&active, &reserved[0], &reserved[1], &scheduled] {
        assert_eq!(
            w.result(&r.id),
            None,
            "a task restored for redelivery must not have a result stored"
        );
    }
    assert_eq!(probe.started.len(), 1);
}

// ---------------------------------------------------------------------------------------------------------------
// 10. Prefetch
// ---------------------------------------------------------------------------------------------------------------

/// Concurrency 1, prefetch multiplier 2, five gated tasks: the broker never holds more than 2 unacked messages.
async fn check_prefetch(acks_late: bool, expect_reserved: usize, expect_queued: usize) {
    let probe = Probe::new();
    let mut cfg = config();
    cfg.concurrency = 1;
    cfg.prefetch_multiplier = 2;
    cfg.acks_late = acks_late;
    let w = Running::start(cfg, probe.registry());
    let reqs: Vec<_> = (0..5).map(|_| request("t.block", vec![])).collect();
    for r in &reqs {
        w.publish(r).await;
    }
    until("first body started", MINUTE, || probe.started.len() == 1).await;
    // Give the consumer every chance to take more than it may.
    let mut max_unacked = 0;
    for _ in 0..50 {
        tokio::time::sleep(secs(0.1)).await;
        max_unacked = max_unacked.max(w.broker.unacked().len());
    }
    assert_eq!(w.broker.unacked().len(), 2);
    assert!(max_unacked <= 2, "held {max_unacked} unacked messages");
    assert_eq!(w.state.active_count(), 1);
    assert_eq!(w.state.requests.count(Phase::Reserved), expect_reserved);
    assert_eq!(w.broker.queued(QUEUE), expect_queued);
    assert_eq!(probe.started.len(), 1, "concurrency 1");

    probe.gate.open();
    for r in &reqs {
        w.wait_status(&r.id, "SUCCESS").await;
    }
    until("all acked", MINUTE, || w.broker.acks() == 5).await;
    assert!(w.broker.unacked().is_empty());
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn prefetch_limit_counts_unacked_messages_with_early_ack() {
    // The active message is acked at start, so two more are reserved.
    check_prefetch(false, 2, 2).await;
}

#[tokio::test(start_paused = true)]
async fn prefetch_limit_counts_unacked_messages_with_acks_late() {
    // The active message still counts: one more is reserved.
    check_prefetch(true, 1, 3).await;
}

// ---------------------------------------------------------------------------------------------------------------
// 11. Canvas: chains, link callbacks, errbacks
// ---------------------------------------------------------------------------------------------------------------

fn sig(task: &str, args: Vec<Value>, id: &str) -> Value {
    let mut s = Signature::new(task);
    s.args = args;
    s.options.insert("task_id".into(), json!(id));
    s.to_value()
}

#[tokio::test(start_paused = true)]
async fn chain_and_link_callbacks_receive_the_parent_result() {
    let w = Running::start(config(), worker_runtime::default_registry());
    let first = request("celeriac.add", vec![json!(1), json!(2)]);
    let (c1, c2, link) = ("chain-1", "chain-2", "link-1");
    let mut req = first.clone();
    // Celery sends the chain reversed: the last element runs next.
    req.embed.chain = vec![
        sig("celeriac.add", vec![json!(100)], c2),
        sig("celeriac.add", vec![json!(10)], c1),
    ];
    req.embed.callbacks = vec![sig("celeriac.echo", vec![json!("tag")], link)];
    w.publish(&req).await;

    assert_eq!(w.wait_status(&req.id, "SUCCESS").await["result"], 3);
    let m1 = w.wait_status(c1, "SUCCESS").await;
    assert_eq!(m1["result"], 13);
    assert_eq!(m1["parent_id"], json!(req.id));
    let m2 = w.wait_status(c2, "SUCCESS").await;
    assert_eq!(m2["result"], 113);
    assert_eq!(m2["parent_id"], json!(c1));
    let ml = w.wait_status(link, "SUCCESS").await;
    assert_eq!(ml["result"], json!({"args": [3, "tag"], "kwargs": {}}));
    until("all acked", MINUTE, || w.broker.acks() == 4).await;
    assert!(w.broker.unacked().is_empty());
    assert_eq!(w.broker.queued(QUEUE), 0);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn errbacks_receive_the_failed_task_id_and_the_chain_stops() {
    let w = Running::start(config(), worker_runtime::default_registry());
    let mut req = request("celeriac.fail", vec![json!("boom")]);
    req.embed.errbacks = vec![sig("celeriac.echo", vec![], "errback-1")];
    req.embed.chain = vec![sig("celeriac.echo", vec![], "never")];
    w.publish(&req).await;

    let meta = w.wait_status(&req.id, "FAILURE").await;
    assert_eq!(
        exception(&meta),
        ("ValueError".to_string(), "boom".to_string())
    );
    let eb = w.wait_status("errback-1", "SUCCESS").await;
    assert_eq!(eb["result"]["args"], json!([req.id]));
    tokio::time::sleep(secs(2.0)).await;
    assert_eq!(
        w.result("never"),
        None,
        "a failed task does not continue its chain"
    );
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// 12. Malformed input
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn malformed_messages_are_dead_lettered_and_the_worker_goes_on() {
    let w = Running::start(config(), worker_runtime::default_registry());
    w.broker.push_raw(QUEUE, b"this is not json {".to_vec());
    // A well-formed envelope that is not a task (no task name anywhere).
    let not_a_task = Envelope::new(b"{\"foo\": 1}".to_vec(), Map::new(), "", QUEUE);
    w.broker.publish(QUEUE, &not_a_task).await.unwrap();
    let valid = request("celeriac.add", vec![json!(20), json!(22)]);
    w.publish(&valid).await;

    assert_eq!(w.wait_status(&valid.id, "SUCCESS").await["result"], 42);
    until("two dead letters", MINUTE, || {
        w.broker.dead_letters(DEAD_LETTERS).len() == 2
    })
    .await;
    let dl = w.broker.dead_letters(DEAD_LETTERS);
    let reasons: Vec<&str> = dl.iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].starts_with("undecodable message"), "{reasons:?}");
    assert!(
        reasons[1].starts_with("unknown message (no task name)"),
        "{reasons:?}"
    );
    assert_eq!(dl[0]["message"], "this is not json {");
    assert_eq!(dl[0]["queue"], QUEUE);
    assert_eq!(dl[0]["node"], NODE);
    // The undecodable one had no delivery tag to settle; the other two were acked; nothing is held or requeued.
    until("acked", MINUTE, || w.broker.acks() == 2).await;
    assert!(w.broker.unacked().is_empty());
    assert_eq!(w.broker.queued(QUEUE), 0);
    assert!(!w.is_finished());
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unregistered_task_fails_with_not_registered_is_acked_and_kept_as_a_dead_letter() {
    let w = Running::start(config(), worker_runtime::default_registry());
    let req = request("nobody.knows.me", vec![json!(1)]);
    w.publish(&req).await;
    let meta = w.wait_status(&req.id, "FAILURE").await;
    assert_eq!(
        exception(&meta),
        ("NotRegistered".to_string(), "nobody.knows.me".to_string())
    );
    assert_eq!(meta["result"]["exc_module"], "celery.exceptions");
    until("acked", MINUTE, || w.broker.acks() == 1).await;
    assert!(w.broker.unacked().is_empty());
    // Also kept as a dead letter, to be replayed once a worker has the task.
    let dl = w.broker.dead_letters(DEAD_LETTERS);
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0]["reason"], "unregistered task: nobody.knows.me");
    assert_eq!(dl[0]["queue"], QUEUE);
    assert!(
        dl[0]["id"].as_str().is_some_and(|i| !i.is_empty()),
        "{dl:?}"
    );
    // Still consuming.
    let next = request("celeriac.ping", vec![]);
    w.publish(&next).await;
    assert_eq!(w.wait_status(&next.id, "SUCCESS").await["result"], "pong");
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// 13. Broker errors
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn consume_errors_are_retried_with_backoff_and_nothing_is_lost() {
    let w = Running::start(config(), worker_runtime::default_registry());
    // Let the worker start and sit in an idle consume call.
    tokio::time::sleep(secs(0.1)).await;
    w.broker.fail_next(3);
    // The idle call ends after a second; the next three calls fail, retried after 0.1 + 0.2 + 0.4 s.
    until("three failures seen", MINUTE, || w.broker.reconnects() == 3).await;
    assert!(!w.is_finished(), "the worker survives broker errors");

    let reqs: Vec<_> = (0..5)
        .map(|i| request("celeriac.add", vec![json!(i), json!(1)]))
        .collect();
    for r in &reqs {
        w.publish(r).await;
    }
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(w.wait_status(&r.id, "SUCCESS").await["result"], i + 1);
    }
    until("all acked", MINUTE, || w.broker.acks() == 5).await;
    assert!(w.broker.unacked().is_empty());
    assert_eq!(w.broker.queued(QUEUE), 0);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn ack_errors_are_retried_while_the_body_runs() {
    let probe = Probe::new();
    let mut cfg = config();
    // One prefetch slot: while the message is being acked, the consumer makes no broker call.
    cfg.concurrency = 1;
    cfg.prefetch_multiplier = 1;
    let w = Running::start(cfg, probe.registry());
    tokio::time::sleep(secs(0.1)).await;
    let req = request("t.record", vec![json!("x")]);
    let t0 = Instant::now();
    w.publish(&req).await;
    // The consumer is inside a consume call already; the next two calls are the early ack's.
    w.broker.fail_next(2);
    let meta = w.wait_status(&req.id, "SUCCESS").await;
    assert_eq!(meta["result"], "x");
    // The first failing call is the ack's (sent before the body is first polled); the second may be the ack's
    // retry or the result write, which now goes out beside it.
    assert!(w.broker.reconnects() >= 1, "the ack failure was noticed");
    assert_eq!(w.broker.acks(), 1);
    assert!(w.broker.unacked().is_empty());
    // The body started at once (the early ack is sent as it starts, as Celery's prefork pool does); the ack was
    // retried after 50 ms and 100 ms meanwhile and landed once, before the prefetch slot was given back.
    let started = probe.start_of(&req.id).unwrap() - t0;
    assert!(started < secs(0.05), "started at {started:?}");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn result_store_errors_are_retried_and_the_result_is_not_lost() {
    let probe = Probe::new();
    let mut cfg = config();
    cfg.concurrency = 1;
    cfg.prefetch_multiplier = 1;
    cfg.acks_late = true;
    let w = Running::start(cfg, probe.registry());
    let req = request("t.block", vec![]);
    w.publish(&req).await;
    until("body started", MINUTE, || probe.has_started(&req.id)).await;
    // The running acks_late message holds the only prefetch slot: the next broker calls are the result store's.
    w.broker.fail_next(3);
    let t0 = Instant::now();
    probe.gate.open();
    let meta = w.wait_status(&req.id, "SUCCESS").await;
    assert_eq!(meta["result"], "released");
    let stored = t0.elapsed();
    assert!(
        stored >= secs(0.35) && stored < secs(0.5),
        "stored after {stored:?} (50 + 100 + 200 ms of backoff)"
    );
    until("acked", MINUTE, || w.broker.unacked().is_empty()).await;
    assert_eq!(w.broker.acks(), 1);
    assert_eq!(w.broker.queued(QUEUE), 0);
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Shutdown races (regressions: requests that had not started when a shutdown began must be given back, not run)
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_message_taken_while_shutting_down_is_given_back_not_started() {
    let probe = Probe::new();
    let mut w = Running::start(config(), probe.registry());
    tokio::time::sleep(secs(0.1)).await;
    // The consumer sits in a consume call; the shutdown comes, and a message arrives before that call returns.
    w.signal(worker_runtime::Shutdown::Warm);
    let req = request("t.block", vec![]);
    w.publish(&req).await;
    w.join().await.expect("run() returns cleanly");
    // Give the handler every chance to settle (a real process may exit right after run() returns).
    tokio::time::sleep(secs(1.0)).await;
    assert!(
        !probe.has_started(&req.id),
        "a task started after the warm shutdown began"
    );
    assert_eq!(
        w.broker.acks(),
        0,
        "acked after shutdown: lost when the process exits"
    );
    assert!(w.broker.unacked().is_empty());
    let q = queue_contents(&w);
    assert_eq!(
        q,
        vec![(req.id.clone(), true)],
        "given back, marked redelivered"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_request_given_back_at_shutdown_does_not_run_afterwards() {
    let probe = Probe::new();
    let mut reg = probe.registry();
    reg.register(probe.record("t.limited").with_options(TaskOptions {
        rate_limit: Some("1/s".into()),
        ..TaskOptions::default()
    }));
    let mut w = Running::start(config(), reg);
    let reqs: Vec<_> = (0..3)
        .map(|i| request("t.limited", vec![json!(i)]))
        .collect();
    for r in &reqs {
        w.publish(r).await;
    }
    w.wait_status(&reqs[0].id, "SUCCESS").await;
    // The other two wait for the rate limit (reserved); a warm shutdown gives them back.
    assert_eq!(w.state.requests.count(Phase::Reserved), 2);
    w.signal(worker_runtime::Shutdown::Warm);
    w.join().await.expect("run() returns cleanly");
    tokio::time::sleep(secs(5.0)).await;
    assert_eq!(probe.started.len(), 1, "a given-back request ran anyway");
    assert_eq!(w.broker.queued(QUEUE), 2);
    assert_eq!(w.result(&reqs[1].id), None);
    assert_eq!(w.result(&reqs[2].id), None);
}
