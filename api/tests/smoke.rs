//! The API binary starts, answers health and readiness without a key, and refuses statistics without one.

mod common;

use common::*;
use testkit::redis_db_or_skip;

#[test]
fn health_needs_no_key_and_statistics_need_one() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start(&db.url, &redis.url, &[]);
    let (status, body) = get(&api.url("/healthz"), None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = get(&api.url("/readyz"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database"], "ok");
    let r = get_full(&api.url("/api/v1/statistics/sessions"), None);
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (401, Some("missing_api_key"))
    );
    let r = get_full(&api.url("/api/v1/statistics/sessions"), Some("cak_wrong"));
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (key, _) = create_key(&db.url, "statistics:read", &[]);
    let r = get_full(
        &api.url(&format!("/api/v1/statistics/sessions?{ALL_TIME}")),
        Some(&key),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["total_sessions"].as_i64().unwrap() > 0);
    assert!(
        r.header("ratelimit-policy")
            .is_some_and(|p| p.contains("q=100"))
    );
}

#[test]
fn answers_are_cached_for_their_ttl() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    // A later `--answer-cache-secs` overrides the harness's 0.
    let api = Api::start(&db.url, &redis.url, &["--answer-cache-secs", "300"]);
    let (key, _) = create_key(&db.url, "statistics:read", &[]);
    let url = api.url(&format!("/api/v1/statistics/sensors?{ALL_TIME}"));
    let first = get_full(&url, Some(&key));
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("cache-control"), Some("private, max-age=300"));
    // New data arrives: within the TTL the same question gets the same answer, a different one a fresh answer.
    let out = std::process::Command::new(testkit::bin("cowrie-loader"))
        .args([
            "bulk",
            "--sensor",
            "late",
            "--no-progress",
            "--database-url",
            &db.url,
        ])
        .arg(sample_path(
            "kareiva-cowrie-logs/cowrie.json.2018-06-16.tail300",
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = get_full(&url, Some(&key));
    assert_eq!(again.body, first.body, "a cached answer");
    let fresh = get_full(&format!("{url}&days_unused=1"), Some(&key));
    assert_eq!(
        fresh.status, 400,
        "the cache does not skip validation: {}",
        fresh.body
    );
    let other = get_full(
        &api.url("/api/v1/statistics/sensors?start=2018-01-01T00:00:00Z&end=2025-01-01T00:00:01Z"),
        Some(&key),
    );
    assert_eq!(other.status, 200);
    assert_ne!(
        other.body["sensors"], first.body["sensors"],
        "a new question is answered from the database"
    );
    // Errors are not cached, and a key is still needed.
    assert_eq!(get_full(&url, None).status, 401);
}

#[test]
fn the_dashboard_is_also_served_on_the_ui_address() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let ui = format!("127.0.0.1:{}", free_port());
    let api = Api::start(&db.url, &redis.url, &["--ui-bind", &ui]);
    let main = get_full(&api.url("/"), None);
    let second = get_full(&format!("http://{ui}/"), None);
    assert_eq!((main.status, second.status), (200, 200));
    assert_eq!(second.body, main.body, "the same page on both addresses");
    assert!(second.body.as_str().unwrap_or_default().contains("<html"));
    let (key, _) = create_key(&db.url, "statistics:read", &[]);
    let (status, _) = get(
        &format!("http://{ui}/api/v1/statistics/sensors"),
        Some(&key),
    );
    assert_eq!(status, 200, "the API answers there too, with the same keys");
    assert_eq!(
        get(&format!("http://{ui}/api/v1/statistics/sensors"), None).0,
        401
    );
}
