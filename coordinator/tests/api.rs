//! Management API tests through `create_app(state)` against real Redis: the error table, job submission and
//! state, SSE, explain, workers, registration tokens (create, use, rotate, revoke, expire), admin keys,
//! metrics and config reload.

mod common;

use actix_web::test;
use celeriac_coordinator::Reload;
use celeriac_coordinator::api::create_app;
use celery_proto::{ResultMeta, State};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const CONFIG: &str = r#"
workers:
  - name: fast
    node: "fast@*"
    queues: [{ name: work, priority: 90 }]
    capabilities: { cpu_cores: 8, memory_gb: 32 }
  - name: slow
    node: "slow@*"
    queues: [{ name: work, priority: 10 }]
    capabilities: { cpu_cores: 2, memory_gb: 4 }
routing:
  default_strategy: queue
  queues:
    work: { strategy: priority, when_no_worker: reject }
"#;

const ADMIN: &str = "admin-secret-for-tests";

macro_rules! call {
    ($app:expr, $req:expr) => {{
        let resp = test::call_service(&$app, $req.to_request()).await;
        let status = resp.status().as_u16();
        let body = test::read_body(resp).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, v)
    }};
}

#[actix_web::test]
async fn error_table_codes_and_statuses() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(CONFIG);
    let state = state(&db, &cfg, None).await;
    let app = test::init_service(create_app(state.clone())).await;

    let (s, v) = call!(app, test::TestRequest::get().uri("/nope"));
    assert_eq!((s, code(&v)), (404, "route_not_found"));

    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/jobs")
            .insert_header(("x-job-key", JOB_KEY))
            .insert_header(("content-type", "application/json"))
            .set_payload("{not json")
    );
    assert_eq!((s, code(&v)), (400, "bad_request"), "{v}");

    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/jobs")
            .insert_header(("x-job-key", JOB_KEY))
            .set_json(json!({"task": "t", "colour": "red"}))
    );
    assert_eq!((s, code(&v)), (400, "bad_request"), "{v}");
    assert!(v["message"].as_str().unwrap().contains("colour"), "{v}");

    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/jobs")
            .insert_header(("x-job-key", JOB_KEY))
            .set_json(json!({"task": "t", "priority": 12}))
    );
    assert_eq!((s, code(&v)), (400, "invalid_job"), "{v}");

    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/jobs")
            .insert_header(("x-job-key", JOB_KEY))
            .set_json(json!({"task": "t", "requirements": {"min_ram": 4}}))
    );
    assert_eq!((s, code(&v)), (400, "invalid_requirements"), "{v}");

    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/jobs")
            .insert_header(("x-job-key", JOB_KEY))
            .set_json(json!({"task": "t", "countdown": 1, "eta": "2030-01-01T00:00:00Z"}))
    );
    assert_eq!((s, code(&v)), (400, "invalid_job"), "{v}");

    let (s, v) = call!(app, test::TestRequest::get().uri("/api/v1/jobs/no-such-id"));
    assert_eq!((s, code(&v)), (404, "job_not_found"));

    // No worker for `work` and the queue rule says reject: 422 with the decision, and a record.
    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/jobs")
            .insert_header(("x-job-key", JOB_KEY))
            .set_json(json!({"task": "t", "queue": "work"}))
    );
    assert_eq!((s, code(&v)), (422, "routing_rejected"), "{v}");
    assert_eq!(v["details"]["decision"]["outcome"]["kind"], "rejected");
    let id = v["details"]["job_id"].as_str().unwrap().to_string();
    let (s, v) = call!(
        app,
        test::TestRequest::get().uri(&format!("/api/v1/jobs/{id}"))
    );
    assert_eq!((s, v["state"].as_str()), (200, Some("REJECTED")), "{v}");

    // Admin endpoints are off without a key.
    let (s, v) = call!(app, test::TestRequest::get().uri("/api/v1/admin/tokens"));
    assert_eq!((s, code(&v)), (403, "admin_disabled"));
}

#[actix_web::test]
async fn submit_routes_by_priority_records_and_reports_state() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(CONFIG);
    let state = state(&db, &cfg, None).await;
    let app = test::init_service(create_app(state.clone())).await;
    heartbeat(&state, "fast@h", 0, 2.0);
    heartbeat(&state, "slow@h", 0, 2.0);

    let (s, v) = call!(
        app,
        test::TestRequest::post().uri("/api/v1/jobs").insert_header(("x-job-key", JOB_KEY)).set_json(json!({
            "task": "celeriac.add", "args": [2, 3], "queue": "work", "priority": 3, "expires": 600
        }))
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["queue"], "fast@h.dq2");
    assert_eq!(v["node"], "fast@h");
    assert_eq!(v["decision"]["strategy"], "priority");
    let id = v["id"].as_str().unwrap().to_string();
    // The message is in fast@h.dq2's priority-3 list, as a Celery v2 task message.
    assert_eq!(
        state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .queue_bucket_lens("fast@h.dq2")
            .await
            .unwrap(),
        [0, 1, 0, 0]
    );

    let (s, v) = call!(
        app,
        test::TestRequest::get().uri(&format!("/api/v1/jobs/{id}"))
    );
    assert_eq!(s, 200);
    assert_eq!(v["state"], "PENDING");
    assert_eq!(v["worker"], "fast@h");
    assert_eq!(v["decision"]["outcome"]["node"], "fast@h");

    // A worker stores progress, then success: the job view follows the result backend.
    let mut meta = ResultMeta::new(
        &id,
        State::Custom("PROGRESS".into()),
        json!({"done": 1, "total": 2}),
    );
    meta.date_done = None;
    state
        .jobs
        .broker_redis
        .as_ref()
        .unwrap()
        .store_result(&id, &meta.encode(), 60)
        .await
        .unwrap();
    let (_, v) = call!(
        app,
        test::TestRequest::get().uri(&format!("/api/v1/jobs/{id}"))
    );
    assert_eq!(v["state"], "PROGRESS");
    assert_eq!(v["progress"], json!({"done": 1, "total": 2}));
    let meta = ResultMeta::new(&id, State::Success, json!(5));
    state
        .jobs
        .broker_redis
        .as_ref()
        .unwrap()
        .store_result(&id, &meta.encode(), 60)
        .await
        .unwrap();
    let (_, v) = call!(
        app,
        test::TestRequest::get().uri(&format!("/api/v1/jobs/{id}"))
    );
    assert_eq!(
        (v["state"].as_str(), v["result"].clone()),
        (Some("SUCCESS"), json!(5))
    );

    // Queue strategy: the shared queue.
    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/jobs")
            .insert_header(("x-job-key", JOB_KEY))
            .set_json(json!({"task": "celeriac.ping"}))
    );
    assert_eq!((s, v["queue"].as_str()), (201, Some("celery")), "{v}");
    assert_eq!(
        state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .queue_len("celery")
            .await
            .unwrap(),
        1
    );

    // Revoke: accepted and recorded.
    let (s, v) = call!(
        app,
        test::TestRequest::delete()
            .uri(&format!("/api/v1/jobs/{id}?terminate=true"))
            .insert_header(("x-job-key", JOB_KEY))
    );
    assert_eq!((s, v["revoked"].as_bool()), (202, Some(true)));
    let (_, v) = call!(
        app,
        test::TestRequest::get().uri(&format!("/api/v1/jobs/{id}"))
    );
    assert_eq!(v["revoked"], true);

    // Metrics: decisions by strategy and outcome, queue depth per bucket, workers, dead letters.
    for _ in 0..2 {
        state
            .jobs
            .transport
            .dead_letter(
                celery_proto::keys::DEAD_LETTERS,
                br#"{"reason": "test", "message": "{oops"}"#,
            )
            .await
            .unwrap();
    }
    let resp =
        test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    assert!(
        text.contains(r#"celeriac_coordinator_routing_decisions_total{outcome="routed",strategy="priority"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"celeriac_coordinator_queue_depth{bucket="0",queue="celery"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("\nceleriac_coordinator_dead_letters 2\n"),
        "{text}"
    );
}

#[actix_web::test]
async fn fallback_when_preferred_is_overloaded_and_explain() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(CONFIG);
    let state = state(&db, &cfg, None).await;
    let app = test::init_service(create_app(state.clone())).await;
    heartbeat(&state, "fast@h", 4, 2.0);
    heartbeat(&state, "slow@h", 0, 2.0);
    // fast@h's slots are known from a registration-free inspect reply: stats says 4.
    state.jobs.registry.lock().unwrap().apply_stats(
        &[(
            "fast@h".to_string(),
            json!({"pool": {"max-concurrency": 4}}),
        )]
        .into(),
        broker::now_f64(),
    );
    let (s, v) = call!(
        app,
        test::TestRequest::get().uri("/api/v1/routing/explain?task=x&queue=work")
    );
    assert_eq!(s, 200, "{v}");
    let d = &v["decision"];
    assert_eq!(d["outcome"]["node"], "slow@h", "{d}");
    assert!(
        d["candidates"][0]["skipped"]
            .as_str()
            .unwrap()
            .starts_with("overloaded"),
        "{d}"
    );
    // Requirements in the query: nobody has 64 GB, and the rule says reject.
    let (s, v) = call!(
        app,
        test::TestRequest::get().uri("/api/v1/routing/explain?task=x&queue=work&min_memory_gb=64")
    );
    assert_eq!(s, 200);
    assert_eq!(v["decision"]["outcome"]["kind"], "rejected", "{v}");
    let (s, v) = call!(
        app,
        test::TestRequest::get().uri("/api/v1/routing/explain?task=x&accelerator=quantum")
    );
    assert_eq!((s, code(&v)), (400, "invalid_requirements"), "{v}");

    // The workers view: Flower-like fields, capabilities from the config, routing weight from load.
    let (s, v) = call!(app, test::TestRequest::get().uri("/api/v1/workers"));
    assert_eq!(s, 200);
    let fast = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["node"] == "fast@h")
        .unwrap()
        .clone();
    assert_eq!(fast["alive"], true);
    assert_eq!(fast["active"], 4);
    assert_eq!(fast["concurrency"], 4);
    assert_eq!(fast["routing_weight"], 0.0);
    assert_eq!(fast["capabilities"]["memory_gb"], 32.0);
    assert_eq!(fast["config_entries"], json!(["fast"]));
}

#[actix_web::test]
async fn sse_streams_states_until_ready() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(CONFIG);
    let state = state(&db, &cfg, None).await;
    let app = test::init_service(create_app(state.clone())).await;
    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/jobs")
            .insert_header(("x-job-key", JOB_KEY))
            .set_json(json!({"task": "celeriac.ping"}))
    );
    assert_eq!(s, 201);
    let id = v["id"].as_str().unwrap().to_string();
    let backend = state.jobs.backend.clone();
    let writer_id = id.clone();
    let writer = actix_web::rt::spawn(async move {
        // Give the stream time to send its first frame, then store two states (each is also PUBLISHed).
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut started = ResultMeta::new(&writer_id, State::Started, json!({"hostname": "w@h"}));
        started.date_done = None;
        backend
            .store_result(&writer_id, &started.encode(), 60)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let done = ResultMeta::new(&writer_id, State::Success, json!("pong"));
        backend
            .store_result(&writer_id, &done.encode(), 60)
            .await
            .unwrap();
    });
    let resp = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&format!("/api/v1/jobs/{id}/events"))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let body = tokio::time::timeout(Duration::from_secs(30), test::read_body(resp))
        .await
        .expect("the stream ends at a ready state");
    writer.await.unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let states: Vec<String> = text
        .split("\n\n")
        .filter_map(|f| f.strip_prefix("event: state\ndata: "))
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["state"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        states.first().map(String::as_str),
        Some("PENDING"),
        "{text}"
    );
    assert_eq!(states.last().map(String::as_str), Some("SUCCESS"), "{text}");
}

#[actix_web::test]
async fn registration_tokens_create_use_rotate_revoke_expire() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(CONFIG);
    let state = state(&db, &cfg, Some(ADMIN)).await;
    let app = test::init_service(create_app(state.clone())).await;
    let admin = ("authorization", format!("Bearer {ADMIN}"));

    // Admin key checks.
    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/admin/tokens")
            .set_json(json!({"name": "mac"}))
    );
    assert_eq!((s, code(&v)), (401, "missing_admin_key"));
    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/admin/tokens")
            .insert_header(("x-admin-key", "wrong"))
            .set_json(json!({"name": "mac"}))
    );
    assert_eq!((s, code(&v)), (403, "invalid_admin_key"));

    // Create: the secret is shown once and stored only as a hash.
    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/admin/tokens")
            .insert_header(admin.clone())
            .set_json(json!({"name": "mac", "ttl_secs": 3600}))
    );
    assert_eq!(s, 201, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    let tid = v["id"].as_str().unwrap().to_string();
    let mut raw: Vec<String> = Vec::new();
    for k in state
        .jobs
        .broker_redis
        .as_ref()
        .unwrap()
        .kv_scan("celeriac:regtoken*")
        .await
        .unwrap()
    {
        raw.push(k.clone());
        let v = state
            .jobs
            .broker_redis
            .as_ref()
            .unwrap()
            .kv_get(&k)
            .await
            .unwrap()
            .unwrap();
        raw.push(String::from_utf8(v).unwrap());
    }
    assert!(
        raw.iter().all(|v| !v.contains(&token)),
        "the secret is never stored"
    );
    assert!(
        raw.iter()
            .any(|v| v.contains(&celeriac_coordinator::store::hash_token(&token))),
        "its SHA-256 is"
    );

    // Use: a worker registers with detected capabilities.
    let register = |tok: &str, node: &str| {
        test::TestRequest::post()
            .uri("/api/v1/workers/register")
            .set_json(json!({
                "token": tok, "node": node, "queues": ["work"], "concurrency": 4,
                "capabilities": {"cpu_cores": 12, "memory_gb": 36, "accelerator": "metal"}
            }))
    };
    let (s, v) = call!(app, register(&token, "mac@studio"));
    assert_eq!(s, 201, "{v}");
    let (_, v) = call!(app, test::TestRequest::get().uri("/api/v1/workers"));
    let mac = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["node"] == "mac@studio")
        .unwrap()
        .clone();
    assert_eq!(mac["registered"], true);
    assert_eq!(
        mac["alive"], false,
        "registration alone is not a sign of life"
    );
    assert_eq!(mac["capabilities"]["accelerator"], "metal");
    assert_eq!(mac["queues"], json!(["work"]));

    // Bad tokens and bad bodies.
    let (s, v) = call!(app, register("crt_bogus", "x@y"));
    assert_eq!((s, code(&v)), (401, "invalid_registration_token"));
    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/workers/register")
            .set_json(json!({"node": "x@y"}))
    );
    assert_eq!((s, code(&v)), (401, "missing_registration_token"));
    let (s, v) = call!(app, register(&token, "no-at-sign"));
    assert_eq!((s, code(&v)), (400, "bad_request"));

    // Rotate: the old token stops working, the new one works; the list shows both with the link.
    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri(&format!("/api/v1/admin/tokens/{tid}/rotate"))
            .insert_header(admin.clone())
    );
    assert_eq!(s, 201, "{v}");
    let token2 = v["token"].as_str().unwrap().to_string();
    let tid2 = v["id"].as_str().unwrap().to_string();
    assert_ne!(token, token2);
    let (s, v) = call!(app, register(&token, "mac@studio"));
    assert_eq!((s, code(&v)), (401, "registration_token_revoked"));
    let (s, _) = call!(app, register(&token2, "mac@studio"));
    assert_eq!(s, 201);
    let (_, v) = call!(
        app,
        test::TestRequest::get()
            .uri("/api/v1/admin/tokens")
            .insert_header(admin.clone())
    );
    let list = v["tokens"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .any(|t| t["id"] == tid2.as_str() && t["rotated_from"] == tid.as_str())
    );

    // Revoke.
    let (s, _) = call!(
        app,
        test::TestRequest::delete()
            .uri(&format!("/api/v1/admin/tokens/{tid2}"))
            .insert_header(admin.clone())
    );
    assert_eq!(s, 200);
    let (s, v) = call!(app, register(&token2, "mac@studio"));
    assert_eq!((s, code(&v)), (401, "registration_token_revoked"));
    let (s, v) = call!(
        app,
        test::TestRequest::delete()
            .uri("/api/v1/admin/tokens/nope")
            .insert_header(admin.clone())
    );
    assert_eq!((s, code(&v)), (404, "token_not_found"));

    // Expire: a one-second token is refused once its time has passed.
    let (_, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/admin/tokens")
            .insert_header(admin.clone())
            .set_json(json!({"name": "short", "ttl_secs": 1}))
    );
    let short = v["token"].as_str().unwrap().to_string();
    let (s, _) = call!(app, register(&short, "short@h"));
    assert_eq!(s, 201, "valid before expiry");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, v) = call!(app, register(&short, "short@h"));
    assert_eq!((s, code(&v)), (401, "registration_token_expired"));
}

#[actix_web::test]
async fn require_registration_refuses_unregistered_workers() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(&CONFIG.replace(
        "  default_strategy: queue",
        "  default_strategy: queue\n  require_registration: true",
    ));
    let state = state(&db, &cfg, Some(ADMIN)).await;
    let app = test::init_service(create_app(state.clone())).await;
    heartbeat(&state, "fast@h", 0, 2.0);
    heartbeat(&state, "slow@h", 0, 2.0);
    let issued = state
        .jobs
        .store
        .create_token("slow", 60, None)
        .await
        .unwrap();
    let (s, _) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/workers/register")
            .insert_header(("authorization", format!("Bearer {}", issued.token)))
            .set_json(json!({"node": "slow@h"}))
    );
    assert_eq!(s, 201);
    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/jobs")
            .insert_header(("x-job-key", JOB_KEY))
            .set_json(json!({"task": "t", "queue": "work"}))
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["node"], "slow@h",
        "the unregistered fast@h is refused: {v}"
    );
    assert_eq!(
        v["decision"]["candidates"][0]["skipped"],
        "not registered (routing.require_registration)"
    );
}

#[actix_web::test]
async fn config_reload_keeps_the_old_config_when_the_new_one_is_bad() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new(CONFIG);
    let state = state(&db, &cfg, Some(ADMIN)).await;
    let app = test::init_service(create_app(state.clone())).await;
    heartbeat(&state, "fast@h", 0, 2.0);

    cfg.write(&format!("{CONFIG}\nbogus_key: 1\n"));
    match state.reload_config() {
        Reload::Kept { error } => assert!(
            error.contains(":16:1: unknown field `bogus_key`"),
            "{error}"
        ),
        other => panic!("expected the reload to be refused, got {other:?}"),
    }
    // Still routing with the old config.
    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/jobs")
            .insert_header(("x-job-key", JOB_KEY))
            .set_json(json!({"task": "t", "queue": "work"}))
    );
    assert_eq!((s, v["node"].as_str()), (201, Some("fast@h")), "{v}");
    let (_, v) = call!(app, test::TestRequest::get().uri("/readyz"));
    assert!(
        v["config_reload_error"]
            .as_str()
            .unwrap()
            .contains("bogus_key")
    );
    // Through the admin API as well.
    let (s, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/admin/config/reload")
            .insert_header(("x-admin-key", ADMIN))
    );
    assert_eq!((s, code(&v)), (422, "config_invalid"));

    // A good new file: work now goes to the shared queue.
    cfg.write(&CONFIG.replace(
        "work: { strategy: priority, when_no_worker: reject }",
        "work: { strategy: queue }",
    ));
    assert_eq!(state.reload_config(), Reload::Applied);
    let (_, v) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/jobs")
            .insert_header(("x-job-key", JOB_KEY))
            .set_json(json!({"task": "t", "queue": "work"}))
    );
    assert_eq!(v["queue"], "work", "{v}");
    assert_eq!(state.jobs.config.last_error(), None);
    let (s, _) = call!(app, test::TestRequest::get().uri("/healthz"));
    assert_eq!(s, 200);
}
