//! Security of the management API against real Redis: job submission and revocation need the job key or the admin
//! key (checked before the body is read, nothing published when refused), and `allowed_tasks` in
//! `worker-config.yaml` refuses tasks a queue does not allow.

mod common;

use actix_web::test;
use celeriac_coordinator::api::create_app;
use celeriac_coordinator::{AppState, Settings};
use common::*;
use serde_json::{Value, json};

const CONFIG: &str = r#"
routing:
  default_strategy: queue
  default_queue: celery
"#;

const ADMIN: &str = "admin-key-for-security-tests";

macro_rules! call {
    ($app:expr, $req:expr) => {{
        let resp = test::call_service(&$app, $req.to_request()).await;
        let status = resp.status().as_u16();
        let body = test::read_body(resp).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, v)
    }};
}

async fn state_with(db: &testkit::RedisDb, settings: Settings) -> actix_web::web::Data<AppState> {
    let broker = broker::Broker::connect(&db.url).await.expect("broker");
    actix_web::web::Data::new(AppState::new(settings, broker).await.expect("state"))
}

/// Messages waiting in `queue` (a queue never published to has none).
async fn depth(state: &AppState, queue: &str) -> u64 {
    state
        .jobs
        .transport
        .queue_len(queue)
        .await
        .expect("queue length")
        .unwrap_or(0)
}

fn post_job() -> test::TestRequest {
    test::TestRequest::post()
        .uri("/api/v1/jobs")
        .set_json(json!({"task": "celeriac.ping"}))
}

#[actix_web::test]
async fn without_any_key_configured_jobs_cannot_be_submitted_or_revoked() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(CONFIG);
    let mut settings = settings(&cfg, None);
    settings.job_key = None;
    let state = state_with(&db, settings).await;
    let app = test::init_service(create_app(state.clone())).await;

    let (s, v) = call!(app, post_job().insert_header(("x-job-key", "anything")));
    assert_eq!((s, code(&v)), (403, "jobs_disabled"), "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("CELERIAC_JOB_KEY"),
        "the message says how to enable it: {v}"
    );
    let (s, v) = call!(app, test::TestRequest::delete().uri("/api/v1/jobs/some-id"));
    assert_eq!((s, code(&v)), (403, "jobs_disabled"), "{v}");
    assert_eq!(depth(&state, "celery").await, 0);
}

#[actix_web::test]
async fn job_submission_needs_the_job_key_or_the_admin_key() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(CONFIG);
    let state = state_with(&db, settings(&cfg, Some(ADMIN))).await;
    let app = test::init_service(create_app(state.clone())).await;

    // No key: 401, before the body is looked at (this body is not even JSON).
    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/jobs")
            .insert_header(("content-type", "application/json"))
            .set_payload("{not json")
    );
    assert_eq!((s, code(&v)), (401, "missing_job_key"), "{v}");
    assert!(v["message"].as_str().unwrap().contains("X-Job-Key"), "{v}");
    let (s, v) = call!(app, post_job());
    assert_eq!((s, code(&v)), (401, "missing_job_key"), "{v}");
    assert_eq!(v["status"], 401);

    // A wrong key, in either header: 403, and the message does not echo it.
    for req in [
        post_job().insert_header(("x-job-key", "job-key-for-tests-but-wrong")),
        post_job().insert_header(("authorization", "Bearer not-the-key")),
        post_job().insert_header(("x-admin-key", "not-the-admin-key")),
    ] {
        let (s, v) = call!(app, req);
        assert_eq!((s, code(&v)), (403, "invalid_job_key"), "{v}");
        assert!(!v.to_string().contains("not-the"), "{v}");
    }
    let (s, v) = call!(app, test::TestRequest::delete().uri("/api/v1/jobs/some-id"));
    assert_eq!((s, code(&v)), (401, "missing_job_key"), "{v}");
    assert_eq!(
        depth(&state, "celery").await,
        0,
        "a refused submission publishes nothing"
    );

    // The job key and the admin key, as a bearer token or in their headers: accepted.
    let mut ids = Vec::new();
    for req in [
        post_job().insert_header(("x-job-key", JOB_KEY)),
        post_job().insert_header(("authorization", format!("Bearer {JOB_KEY}"))),
        post_job().insert_header(("authorization", format!("Bearer {ADMIN}"))),
        post_job().insert_header(("x-admin-key", ADMIN)),
    ] {
        let (s, v) = call!(app, req);
        assert_eq!(s, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(depth(&state, "celery").await, 4);

    // Revocation takes the key the same way.
    let (s, v) = call!(
        app,
        test::TestRequest::delete()
            .uri(&format!("/api/v1/jobs/{}", ids[0]))
            .insert_header(("x-job-key", "wrong"))
    );
    assert_eq!((s, code(&v)), (403, "invalid_job_key"), "{v}");
    let (s, v) = call!(
        app,
        test::TestRequest::delete()
            .uri(&format!("/api/v1/jobs/{}", ids[0]))
            .insert_header(("x-job-key", JOB_KEY))
    );
    assert_eq!(s, 202, "{v}");

    // The job key is not an admin key.
    let (s, v) = call!(
        app,
        test::TestRequest::get()
            .uri("/api/v1/admin/tokens")
            .insert_header(("authorization", format!("Bearer {JOB_KEY}")))
    );
    assert_eq!((s, code(&v)), (403, "invalid_admin_key"), "{v}");
}

const ALLOW_LIST: &str = r#"
routing:
  default_strategy: queue
  default_queue: celery
  allowed_tasks: ["celeriac.*"]
  queues:
    reports: { allowed_tasks: [cowrieprocessor.workers.longtail_analysis] }
"#;

#[actix_web::test]
async fn a_task_the_allow_list_refuses_is_neither_recorded_nor_published() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(ALLOW_LIST);
    let state = state_with(&db, settings(&cfg, None)).await;
    let app = test::init_service(create_app(state.clone())).await;
    let submit = |body: Value| {
        test::TestRequest::post()
            .uri("/api/v1/jobs")
            .insert_header(("x-job-key", JOB_KEY))
            .set_json(body)
    };

    let (s, v) = call!(app, submit(json!({"task": "os.system", "args": ["id"]})));
    assert_eq!((s, code(&v)), (403, "task_not_allowed"), "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("\"os.system\"")
            && message.contains("\"celery\"")
            && message.contains("routing.allowed_tasks allows celeriac.*"),
        "the message names the task, the queue and the list: {message}"
    );
    // The queue's own list replaces the default one.
    let (s, v) = call!(
        app,
        submit(json!({"task": "celeriac.ping", "queue": "reports"}))
    );
    assert_eq!((s, code(&v)), (403, "task_not_allowed"), "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("routing.queues.reports.allowed_tasks"),
        "{v}"
    );
    // Explain answers what a submission would get.
    let (s, v) = call!(
        app,
        test::TestRequest::get().uri("/api/v1/routing/explain?task=os.system")
    );
    assert_eq!((s, code(&v)), (403, "task_not_allowed"), "{v}");
    for q in ["celery", "reports"] {
        assert_eq!(depth(&state, q).await, 0, "{q}");
    }
    let redis = state.jobs.broker_redis.clone().unwrap();
    assert!(
        redis.kv_scan("celeriac:job:*").await.unwrap().is_empty(),
        "a refused task leaves no job record"
    );

    // Allowed tasks go through.
    let (s, v) = call!(app, submit(json!({"task": "celeriac.ping"})));
    assert_eq!(s, 201, "{v}");
    let (s, v) = call!(
        app,
        submit(json!({"task": "cowrieprocessor.workers.longtail_analysis", "queue": "reports"}))
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(depth(&state, "celery").await, 1);
    assert_eq!(depth(&state, "reports").await, 1);

    // A reload that opens the queue applies at once.
    cfg.write("routing:\n  default_strategy: queue\n  allowed_tasks: [\"celeriac.*\", \"os.*\"]\n");
    assert_eq!(state.reload_config(), celeriac_coordinator::Reload::Applied);
    let (s, v) = call!(app, submit(json!({"task": "os.system"})));
    assert_eq!(s, 201, "{v}");
}
