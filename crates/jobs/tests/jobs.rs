//! `jobs::Jobs` against real Redis, without HTTP: submission to a shared queue and to a live worker's `.dq2`,
//! rejection recorded with its decision, views, revocation, and the watch stream until a ready state.

use celery_proto::{Message, ResultMeta, State};
use futures_util::StreamExt as _;
use jobs::{ConfigHandle, JobError, JobRequest, JobUpdate, Jobs};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

const CONFIG: &str = r#"
workers:
  - name: fast
    node: "fast@*"
    queues: [{ name: work, priority: 90 }]
routing:
  default_strategy: queue
  queues:
    work: { strategy: priority, when_no_worker: reject }
"#;

async fn jobs(db: &testkit::RedisDb) -> Jobs {
    let broker = broker::Broker::connect(&db.url).await.expect("broker");
    let config = routing::WorkerConfig::from_yaml_str(CONFIG, "test").expect("config");
    let handle = ConfigHandle::fixed(
        config,
        std::path::Path::new("/nonexistent/worker-config.yaml"),
    );
    Jobs::new(
        broker.clone(),
        broker,
        Arc::new(handle),
        Duration::from_secs(600),
        10.0,
    )
}

fn request(v: Value) -> JobRequest {
    serde_json::from_value(v).expect("a job request")
}

fn heartbeat(jobs: &Jobs, node: &str) {
    let mut m = Map::new();
    for (k, v) in [
        ("hostname", json!(node)),
        ("freq", json!(2.0)),
        ("active", json!(0)),
        ("timestamp", json!(broker::now_f64())),
        ("type", json!("worker-heartbeat")),
    ] {
        m.insert(k.into(), v);
    }
    let ev = celeriac_control::Event::new(m, broker::now_f64());
    jobs.registry.lock().unwrap().apply_event(&ev);
}

#[tokio::test]
async fn submit_records_then_publishes_and_the_view_shows_it() {
    let db = testkit::redis_db_or_skip!();
    let jobs = jobs(&db).await;
    let rec = jobs
        .submit(&request(
            json!({"task": "celeriac.add", "args": [1, 2], "priority": 3}),
        ))
        .await
        .unwrap();
    assert_eq!(rec.published_to.as_deref(), Some("celery"));
    assert_eq!(rec.decision.outcome.kind(), "shared_queue");
    assert_eq!(jobs.store.job(&rec.id).await.unwrap().as_ref(), Some(&rec));
    let raw = jobs
        .broker_redis
        .as_ref()
        .unwrap()
        .take_to_holding("celery", "test:peek")
        .await
        .unwrap()
        .expect("published");
    let msg = Message::decode(&raw, true).unwrap();
    assert_eq!(msg.headers["id"], json!(rec.id));
    assert_eq!(msg.priority, 3);

    let view = jobs.view(&rec.id).await.unwrap();
    assert_eq!((view.state.as_str(), view.ready), ("PENDING", false));
    assert_eq!(view.task.as_deref(), Some("celeriac.add"));
    assert_eq!(view.decision.as_ref(), Some(&rec.decision));

    let done = ResultMeta::new(&rec.id, State::Success, json!(3));
    jobs.backend
        .store_result(&rec.id, &done.encode(), 60)
        .await
        .unwrap();
    let view = jobs.view(&rec.id).await.unwrap();
    assert_eq!((view.state.as_str(), view.ready), ("SUCCESS", true));
    assert_eq!(view.result, Some(json!(3)));
}

#[tokio::test]
async fn a_live_worker_gets_the_job_on_its_dq2_and_without_one_it_is_rejected_and_recorded() {
    let db = testkit::redis_db_or_skip!();
    let jobs = jobs(&db).await;
    let work = request(json!({"task": "t", "queue": "work"}));

    let err = jobs.submit(&work).await.unwrap_err();
    let JobError::RoutingRejected { reason, details } = err else {
        panic!("expected a rejection, got {err:?}");
    };
    assert!(!reason.is_empty());
    assert_eq!(details["decision"]["outcome"]["kind"], "rejected");
    let id = details["job_id"].as_str().unwrap();
    assert_eq!(jobs.view(id).await.unwrap().state, "REJECTED");

    heartbeat(&jobs, "fast@h");
    let rec = jobs.submit(&work).await.unwrap();
    assert_eq!(rec.node.as_deref(), Some("fast@h"));
    assert_eq!(rec.published_to.as_deref(), Some("fast@h.dq2"));
    assert_eq!(
        jobs.broker_redis
            .as_ref()
            .unwrap()
            .queue_len("fast@h.dq2")
            .await
            .unwrap(),
        1
    );
    let explain = routing::Job {
        task: "t".into(),
        queue: Some("work".into()),
        requirements: Default::default(),
    };
    assert_eq!(jobs.decide(&explain).outcome.node(), Some("fast@h"));
}

#[tokio::test]
async fn bad_requests_and_unknown_ids_are_typed_errors() {
    let db = testkit::redis_db_or_skip!();
    let jobs = jobs(&db).await;
    assert!(matches!(
        jobs.submit(&request(json!({"task": "t", "priority": 12})))
            .await,
        Err(JobError::InvalidJob(_))
    ));
    assert!(matches!(
        jobs.submit(&request(json!({"task": "t", "requirements": {"bogus": 1}})))
            .await,
        Err(JobError::InvalidRequirements(_))
    ));
    assert!(matches!(
        jobs.view("nope").await,
        Err(JobError::NotFound(_))
    ));
    assert!(matches!(
        jobs.revoke("nope", false, None).await,
        Err(JobError::NotFound(_))
    ));
    assert!(matches!(
        jobs.watch("nope").await,
        Err(JobError::NotFound(_))
    ));
}

#[tokio::test]
async fn revoke_marks_the_record() {
    let db = testkit::redis_db_or_skip!();
    let jobs = jobs(&db).await;
    let rec = jobs.submit(&request(json!({"task": "t"}))).await.unwrap();
    jobs.revoke(&rec.id, true, Some("SIGKILL")).await.unwrap();
    assert!(jobs.view(&rec.id).await.unwrap().revoked);
    assert!(jobs.store.job(&rec.id).await.unwrap().unwrap().revoked);
}

#[tokio::test]
async fn watch_yields_each_stored_state_and_ends_after_a_ready_one() {
    let db = testkit::redis_db_or_skip!();
    let jobs = jobs(&db).await;
    let rec = jobs.submit(&request(json!({"task": "t"}))).await.unwrap();
    let stream = jobs.watch(&rec.id).await.unwrap();
    let backend = jobs.backend.clone();
    let id = rec.id.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut progress = ResultMeta::new(
            &id,
            State::Custom("PROGRESS".into()),
            json!({"done": 1, "hostname": "w@h"}),
        );
        progress.date_done = None;
        backend
            .store_result(&id, &progress.encode(), 60)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let done = ResultMeta::new(&id, State::Success, json!("ok"));
        backend.store_result(&id, &done.encode(), 60).await.unwrap();
    });
    let updates: Vec<JobUpdate> = tokio::time::timeout(Duration::from_secs(20), stream.collect())
        .await
        .expect("the stream ends at a ready state");
    writer.await.unwrap();
    let views: Vec<_> = updates
        .iter()
        .filter_map(|u| match u {
            JobUpdate::View(v) => Some(v),
            JobUpdate::KeepAlive => None,
        })
        .collect();
    let states: Vec<&str> = views.iter().map(|v| v.state.as_str()).collect();
    assert_eq!(states.first(), Some(&"PENDING"), "{states:?}");
    assert_eq!(states.last(), Some(&"SUCCESS"), "{states:?}");
    assert!(states.contains(&"PROGRESS"), "{states:?}");
    let progress = views.iter().find(|v| v.state == "PROGRESS").unwrap();
    assert_eq!(progress.worker.as_deref(), Some("w@h"));
    assert_eq!(views.last().unwrap().result, Some(json!("ok")));
}

#[tokio::test]
async fn queue_depths_count_waiting_messages_per_bucket_and_unacked_ones() {
    let db = testkit::redis_db_or_skip!();
    let jobs = jobs(&db).await;
    for priority in [0, 9, 9] {
        let mut req = celery_proto::TaskRequest::new("celeriac.noop");
        req.priority = priority;
        jobs.transport
            .publish("celery", &req.envelope())
            .await
            .expect("publish");
    }
    // A consumer takes one (the priority-0 message) and holds it unacknowledged.
    let got = jobs
        .transport
        .consume(&["celery".to_string()], 1, Duration::ZERO)
        .await
        .expect("consume");
    assert_eq!(got.len(), 1);
    let depths = jobs.queue_depths().await.expect("depths");
    let celery = depths.iter().find(|q| q.name == "celery").expect("celery");
    assert_eq!(celery.buckets, vec![(0, 0), (3, 0), (6, 0), (9, 2)]);
    assert_eq!((celery.total, celery.unacked), (2, 1));
    let work = depths.iter().find(|q| q.name == "work").expect("work");
    assert_eq!((work.total, work.unacked), (0, 0));
    jobs.transport
        .ack(got[0].tag.as_deref().unwrap())
        .await
        .expect("ack");
    let depths = jobs.queue_depths().await.expect("depths");
    assert_eq!(
        depths.iter().find(|q| q.name == "celery").unwrap().unacked,
        0
    );
}
