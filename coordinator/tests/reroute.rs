//! Re-routing against real Redis without workers: jobs waiting for an offline worker move to the next choice,
//! queues of nodes never seen are rescued after the grace period, interrupted moves are finished, and live
//! workers' queues are never touched.

mod common;

use celeriac_coordinator::{jobs, store::HOLDING_KEY};
use celery_proto::{Message, TaskRequest};
use common::*;
use serde_json::{Map, json};

const CONFIG: &str = r#"
workers:
  - name: fast
    node: "fast@*"
    queues: [{ name: work, priority: 90 }]
  - name: slow
    node: "slow@*"
    queues: [{ name: work, priority: 10 }]
routing:
  default_strategy: queue
  queues:
    work: { strategy: priority }
"#;

fn offline(state: &celeriac_coordinator::AppState, node: &str) {
    let mut m = Map::new();
    m.insert("hostname".into(), json!(node));
    m.insert("type".into(), json!("worker-offline"));
    m.insert("timestamp".into(), json!(broker::now_f64()));
    let ev = celeriac_control::Event::new(m, broker::now_f64());
    state.jobs.registry.lock().unwrap().apply_event(&ev);
}

async fn only_message(state: &celeriac_coordinator::AppState, queue: &str) -> Message {
    let got = state
        .jobs
        .broker_redis
        .as_ref()
        .unwrap()
        .take_to_holding(queue, "test:peek")
        .await
        .unwrap()
        .expect("a message");
    Message::decode(&got, true).expect("a kombu envelope")
}

#[actix_web::test]
async fn waiting_job_moves_to_the_next_choice_when_its_worker_goes_offline() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(CONFIG);
    let state = state(&db, &cfg, None).await;
    heartbeat(&state, "fast@h", 0, 2.0);
    heartbeat(&state, "slow@h", 0, 2.0);
    let req: jobs::JobRequest = serde_json::from_value(json!({
        "task": "celeriac.add", "args": [1, 2], "queue": "work", "priority": 6
    }))
    .unwrap();
    let rec = jobs::submit(&state, &req).await.unwrap();
    assert_eq!(rec.node.as_deref(), Some("fast@h"));
    // While fast@h is alive nothing moves, however long the job waits.
    assert_eq!(state.reroute_pass(true).await, 0);
    assert_eq!(
        state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .queue_len("fast@h.dq2")
            .await
            .unwrap(),
        1
    );

    offline(&state, "fast@h");
    assert_eq!(state.reroute_pass(false).await, 1);
    assert_eq!(
        state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .queue_len("fast@h.dq2")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .queue_bucket_lens("slow@h.dq2")
            .await
            .unwrap(),
        [0, 0, 1, 0],
        "priority kept"
    );
    let msg = only_message(&state, "slow@h.dq2").await;
    assert_eq!(msg.headers["id"], json!(rec.id));
    assert_eq!(msg.routing_key, "slow@h.dq2");
    let stored = state.jobs.store.job(&rec.id).await.unwrap().unwrap();
    assert_eq!(stored.node.as_deref(), Some("slow@h"));
    assert_eq!(stored.published_to.as_deref(), Some("slow@h.dq2"));
    assert_eq!(stored.reroutes.len(), 1);
    assert_eq!(stored.reroutes[0].from_node, "fast@h");
    assert_eq!(
        state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .held(HOLDING_KEY)
            .await
            .unwrap()
            .len(),
        0
    );
}

#[actix_web::test]
async fn with_every_worker_offline_the_job_goes_to_the_shared_queue_not_back() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(CONFIG);
    let state = state(&db, &cfg, None).await;
    heartbeat(&state, "fast@h", 0, 2.0);
    let req: jobs::JobRequest =
        serde_json::from_value(json!({"task": "t", "queue": "work"})).unwrap();
    let rec = jobs::submit(&state, &req).await.unwrap();
    assert_eq!(rec.published_to.as_deref(), Some("fast@h.dq2"));
    offline(&state, "fast@h");
    assert_eq!(state.reroute_pass(false).await, 1);
    assert_eq!(
        state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .queue_len("work")
            .await
            .unwrap(),
        1
    );
    let stored = state.jobs.store.job(&rec.id).await.unwrap().unwrap();
    assert_eq!(stored.published_to.as_deref(), Some("work"));
    assert_eq!(stored.node, None);
}

#[actix_web::test]
async fn never_seen_nodes_queues_are_rescued_only_in_the_stale_pass() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(CONFIG);
    let state = state(&db, &cfg, None).await;
    let mut ghost = TaskRequest::new("celeriac.ping");
    ghost.queue = "ghost@h.dq2".into();
    state
        .jobs
        .broker_redis
        .as_ref()
        .unwrap()
        .publish(&ghost.queue, 0, &ghost.envelope().encode())
        .await
        .unwrap();
    heartbeat(&state, "alive@h", 0, 2.0);
    let mut kept = TaskRequest::new("celeriac.ping");
    kept.queue = "alive@h.dq2".into();
    state
        .jobs
        .broker_redis
        .as_ref()
        .unwrap()
        .publish(&kept.queue, 0, &kept.envelope().encode())
        .await
        .unwrap();

    assert_eq!(state.reroute_pass(false).await, 0, "unknown is not offline");
    assert_eq!(state.reroute_pass(true).await, 1);
    assert_eq!(
        state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .queue_len("ghost@h.dq2")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .queue_len("alive@h.dq2")
            .await
            .unwrap(),
        1,
        "a live worker's queue is left alone"
    );
    let msg = only_message(&state, "celery").await;
    assert_eq!(msg.headers["id"], json!(ghost.id));
}

#[actix_web::test]
async fn an_interrupted_move_is_finished_at_start() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(CONFIG);
    let state = state(&db, &cfg, None).await;
    let mut req = TaskRequest::new("celeriac.ping");
    req.queue = "dead@h.dq2".into();
    state
        .jobs
        .broker_redis
        .as_ref()
        .unwrap()
        .lpush(HOLDING_KEY, &req.envelope().encode())
        .await
        .unwrap();
    state
        .jobs
        .broker_redis
        .as_ref()
        .unwrap()
        .lpush(HOLDING_KEY, b"not an envelope")
        .await
        .unwrap();
    assert_eq!(jobs::recover_held(&state).await.unwrap(), 2);
    assert_eq!(
        state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .held(HOLDING_KEY)
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .queue_len("celery")
            .await
            .unwrap(),
        2,
        "nothing is lost, even unreadable bytes"
    );
}
