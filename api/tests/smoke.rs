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
