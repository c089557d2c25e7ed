//! Analyses as jobs, end to end: `POST /api/v1/analyses` routes a `cowrieprocessor.workers.*` task through the
//! shared routing to a real Rust worker; the SSE stream opened before the worker starts shows the job move through
//! PROGRESS to SUCCESS; `GET /api/v1/jobs/{id}` has the result; `GET /api/v1/findings/...` returns what the task
//! stored. Also: revocation of a queued job, and refusals.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::Read;
use std::time::Duration;
use testkit::{amqp_vhost_or_skip, redis_db_or_skip, rust_worker};

const WINDOW: &str = r#"{"start": "2018-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}"#;

/// Open the job's event stream and read it to its end on a thread; returns the `state` events' data.
fn read_sse(url: String, key: String) -> std::thread::JoinHandle<(String, Vec<Value>)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(180)))
        .build()
        .into();
    let mut r = agent
        .get(&url)
        .header("X-API-Key", &key)
        .call()
        .expect("SSE request");
    assert_eq!(r.status(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    std::thread::spawn(move || {
        let mut text = String::new();
        r.body_mut()
            .as_reader()
            .read_to_string(&mut text)
            .expect("read SSE");
        let states = text
            .split("\n\n")
            .filter_map(|frame| {
                let mut lines = frame.lines();
                (lines.next()? == "event: state")
                    .then(|| lines.next()?.strip_prefix("data: ").map(str::to_string))
                    .flatten()
            })
            .map(|d| serde_json::from_str(&d).expect("state JSON"))
            .collect();
        (ct, states)
    })
}

#[test]
fn an_analysis_submitted_through_the_api_runs_on_a_rust_worker_with_live_progress() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start(
        &db.url,
        &redis.url,
        &["--analyses-rate-limit", "1000/minute"],
    );
    let (key, _) = create_key(&db.url, "statistics:read,jobs:write", &[]);
    let window: Value = serde_json::from_str(WINDOW).unwrap();

    let r = post(
        &api.url("/api/v1/analyses"),
        Some(&key),
        &json!({"kind": "longtail", "sensor": null, "time_window": window, "params": {"rarity_threshold": 0.05}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["task"], "cowrieprocessor.workers.longtail_analysis");
    assert!(r.body["decision"].is_object());
    assert_eq!(
        r.header("location"),
        Some(format!("/api/v1/jobs/{id}").as_str())
    );
    let (status, job) = get(&api.url(&format!("/api/v1/jobs/{id}")), Some(&key));
    assert_eq!(
        (status, job["state"].as_str()),
        (200, Some("PENDING")),
        "{job}"
    );

    // The stream is open before any worker exists, so it sees every state the job goes through.
    let sse = read_sse(api.url(&format!("/api/v1/jobs/{id}/events")), key.clone());
    // Named like worker-config.yaml's accelerated workstation (`ml@*`), the only one the snowshoe queue (where
    // botnet goes) is routed to.
    let _worker = rust_worker(
        &redis.url,
        "ml@%h",
        &[
            "-Q",
            "celery,longtail,snowshoe",
            "-c",
            "2",
            "--database-url",
            &db.url,
        ],
    );
    let (content_type, states) = sse.join().unwrap();
    assert!(content_type.starts_with("text/event-stream"));
    let names: Vec<&str> = states
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"PENDING"), "{names:?}");
    assert_eq!(names.last(), Some(&"SUCCESS"), "{names:?}");
    let progress: Vec<&Value> = states.iter().filter(|s| s["state"] == "PROGRESS").collect();
    assert!(!progress.is_empty(), "no PROGRESS in {names:?}");
    assert!(
        progress.iter().all(|p| p["progress"]["stage"].is_string()),
        "{progress:?}"
    );
    let last = states.last().unwrap();
    assert_eq!(last["ready"], true);
    assert!(last["result"]["rare_commands"].is_array());

    // The job view and the stored finding carry the same result.
    let (_, job) = get(&api.url(&format!("/api/v1/jobs/{id}")), Some(&key));
    assert_eq!(job["state"], "SUCCESS");
    let result = &job["result"];
    let (status, list) = get(&api.url("/api/v1/findings/longtail"), Some(&key));
    assert_eq!(status, 200, "{list}");
    let findings = list["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{list}");
    let fid = findings[0]["id"].as_i64().unwrap();
    assert_eq!(findings[0]["sensor"], Value::Null);
    let (status, detail) = get(
        &api.url(&format!("/api/v1/findings/longtail/{fid}")),
        Some(&key),
    );
    assert_eq!(status, 200, "{detail}");
    let stored = &detail["result"];
    assert_eq!(stored["rare_commands"], result["rare_commands"]);
    assert_eq!(
        detail["finding"]["summary"]["total_events_analyzed"],
        result["total_events_analyzed"]
    );
    let rare = result["rare_commands"].as_array().unwrap().len();
    let rows = detail["detections"].as_array().unwrap();
    assert_eq!(
        rows.iter()
            .filter(|d| d["detection_type"] == "rare_command")
            .count(),
        rare
    );
    // The threats overview shows it as the latest longtail finding.
    let (_, threats) = get(
        &api.url(&format!("/api/v1/statistics/threats?{ALL_TIME}")),
        Some(&key),
    );
    assert_eq!(threats["latest_findings"]["longtail"]["id"], fid);

    // Botnet through the same path: capability routing to the live `ml@` worker, waited on by polling.
    let mut bid = String::new();
    let seen = testkit::wait_until(Duration::from_secs(30), || {
        let r = post(
            &api.url("/api/v1/analyses"),
            Some(&key),
            &json!({"kind": "botnet", "sensor": "lucas", "time_window": window, "params": {"credential_reuse_threshold": 2}}),
        );
        if r.status == 202 {
            bid = r.body["id"].as_str().unwrap().to_string();
        } else {
            assert_eq!(r.body["code"], "routing_rejected", "{}", r.body);
        }
        r.status == 202
    });
    assert!(seen, "the API's registry never saw the worker alive");
    let done = testkit::wait_until(Duration::from_secs(120), || {
        get(&api.url(&format!("/api/v1/jobs/{bid}")), Some(&key)).1["ready"] == true
    });
    assert!(done);
    let (_, job) = get(&api.url(&format!("/api/v1/jobs/{bid}")), Some(&key));
    assert_eq!(job["state"], "SUCCESS", "{job}");
    let (_, list) = get(&api.url("/api/v1/findings/botnet?sensor=lucas"), Some(&key));
    assert_eq!(list["findings"][0]["sensor"], "lucas");
    assert_eq!(
        list["findings"][0]["score"],
        job["result"]["coordination_score"]
    );
}

#[test]
fn a_queued_job_can_be_revoked_and_bad_submissions_are_refused_before_publishing() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start(
        &db.url,
        &redis.url,
        &[
            "--analyses-rate-limit",
            "1000/minute",
            "--statistics-rate-limit",
            "100000/minute",
        ],
    );
    let (key, _) = create_key(&db.url, "jobs:write,statistics:read", &[]);
    // One slot, kept busy by a sleeping task, so the analysis waits in the worker's reserve when it is revoked,
    // as in Celery (a revoke reaches the workers alive at that moment).
    let _worker = rust_worker(
        &redis.url,
        "revoker@%h",
        &[
            "-Q",
            "celery,longtail,snowshoe",
            "-c",
            "1",
            "--database-url",
            &db.url,
        ],
    );
    let out = std::process::Command::new(testkit::bin("celeriac"))
        .args([
            "call",
            "celeriac.sleep",
            "-a",
            "[3]",
            "-Q",
            "celery",
            "-b",
            &redis.url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = post(
        &api.url("/api/v1/analyses"),
        Some(&key),
        &json!({"kind": "snowshoe", "time_window": "30d"}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap();
    let d = delete(&api.url(&format!("/api/v1/jobs/{id}")), Some(&key));
    assert_eq!(
        (d.status, d.body["revoked"].as_bool()),
        (202, Some(true)),
        "{}",
        d.body
    );
    let (_, job) = get(&api.url(&format!("/api/v1/jobs/{id}")), Some(&key));
    assert_eq!(job["revoked"], true);
    let revoked = testkit::wait_until(Duration::from_secs(30), || {
        get(&api.url(&format!("/api/v1/jobs/{id}")), Some(&key)).1["state"] == "REVOKED"
    });
    assert!(
        revoked,
        "{}",
        get(&api.url(&format!("/api/v1/jobs/{id}")), Some(&key)).1
    );

    let cases = [
        (json!({"kind": "nope"}), 422, None),
        (json!({"kind": "longtail", "extra": 1}), 422, None),
        (
            json!({"kind": "longtail", "time_window": "7y"}),
            422,
            Some("time_window"),
        ),
        (
            json!({"kind": "botnet", "params": {"no_such_threshold": 1}}),
            422,
            Some("params"),
        ),
        (
            json!({"kind": "botnet", "priority": 12}),
            422,
            Some("priority"),
        ),
        (
            json!({"kind": "botnet", "sensor": "nowhere"}),
            404,
            Some("sensor"),
        ),
    ];
    for (body, status, param) in cases {
        let r = post(&api.url("/api/v1/analyses"), Some(&key), &body);
        assert_eq!(r.status, status, "{body} -> {}", r.body);
        assert_eq!(r.body["parameter"].as_str(), param, "{body} -> {}", r.body);
    }
    let (status, nf) = get(&api.url("/api/v1/jobs/no-such-job"), Some(&key));
    assert_eq!((status, nf["code"].as_str()), (404, Some("job_not_found")));
}

/// The API on RabbitMQ (the result backend's Redis keeps its records and rate limits): an analysis submitted
/// through it goes through RabbitMQ to a Rust worker and its result and finding come back; the cluster views read
/// the worker from its events and the queue depths from RabbitMQ.
#[test]
fn on_rabbitmq_an_analysis_runs_through_the_api_and_the_cluster_views_read_rabbitmq() {
    let vhost = amqp_vhost_or_skip!();
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start_env(
        &db.url,
        &vhost.url,
        &["--analyses-rate-limit", "1000/minute"],
        &[("CELERY_RESULT_BACKEND", redis.url.as_str())],
    );
    let (key, _) = create_key(&db.url, "statistics:read,jobs:write", &[]);
    let window: Value = serde_json::from_str(WINDOW).unwrap();
    let node = "ml@amqpapi";
    let _worker = rust_worker(
        &vhost.url,
        node,
        &[
            "-Q",
            "celery,longtail,snowshoe",
            "-c",
            "2",
            "--database-url",
            &db.url,
            "--result-backend",
            &redis.url,
        ],
    );
    let r = post(
        &api.url("/api/v1/analyses"),
        Some(&key),
        &json!({"kind": "longtail", "sensor": null, "time_window": window}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let done = testkit::wait_until(Duration::from_secs(120), || {
        get(&api.url(&format!("/api/v1/jobs/{id}")), Some(&key)).1["ready"] == true
    });
    assert!(done, "the job never finished");
    let (_, job) = get(&api.url(&format!("/api/v1/jobs/{id}")), Some(&key));
    assert_eq!(job["state"], "SUCCESS", "{job}");
    assert_eq!(job["worker"], node, "{job}");
    let (_, list) = get(&api.url("/api/v1/findings/longtail"), Some(&key));
    assert_eq!(list["findings"].as_array().map(Vec::len), Some(1), "{list}");

    let seen = testkit::wait_until(Duration::from_secs(30), || {
        get(&api.url("/api/v1/cluster/workers"), Some(&key)).1["workers"]
            .as_array()
            .is_some_and(|ws| {
                ws.iter()
                    .any(|w| w["node"] == node && w["implementation"] == "rust")
            })
    });
    assert!(seen, "the API's registry never listed {node}");
    let (s, queues) = get(&api.url("/api/v1/cluster/queues"), Some(&key));
    assert_eq!(s, 200, "{queues}");
    let longtail = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "longtail")
        .unwrap_or_else(|| panic!("longtail not among {queues}"));
    assert_eq!(longtail["total"], 0, "{queues}");
    assert_eq!(queues["dead_letters"], 0, "{queues}");
}
