//! API keys and rate limits against the real binary, PostgreSQL and Redis: every 401 and 403 a key can earn, both
//! ways of presenting a key, the public routes, the statistics and analyses limits with their headers, one limit
//! shared by two API processes through Redis, and what happens without Redis (reads fail open, submissions fail
//! closed, nothing hangs).

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use testkit::redis_db_or_skip;

fn sessions_url(api: &Api) -> String {
    api.url(&format!("/api/v1/statistics/sessions?{ALL_TIME}"))
}

fn analysis() -> serde_json::Value {
    json!({"kind": "longtail", "time_window": "7d"})
}

fn code(r: &Reply) -> (u16, Option<&str>) {
    (r.status, r.body["code"].as_str())
}

#[test]
fn keys_are_checked_scoped_and_presented_either_way() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let Some(psql_bin) = psql_or_skip() else {
        return;
    };
    let api = Api::start(&db.url, &redis.url, &[]);
    let url = sessions_url(&api);

    // No key, an unknown key, a malformed Authorization header.
    assert_eq!(code(&get_full(&url, None)), (401, Some("missing_api_key")));
    assert_eq!(
        code(&get_full(&url, Some("cak_0000"))),
        (401, Some("invalid_api_key"))
    );
    assert_eq!(
        code(&get_bearer(&url, "cak_0000")),
        (401, Some("invalid_api_key"))
    );

    // A good key works as X-API-Key and as a bearer token, with the same answer.
    let (key, key_id) = create_key(&db.url, "statistics:read", &[]);
    let by_header = get_full(&url, Some(&key));
    assert_eq!(by_header.status, 200, "{}", by_header.body);
    let by_bearer = get_bearer(&url, &key);
    assert_eq!(by_bearer.status, 200, "{}", by_bearer.body);
    assert_eq!(by_header.body, by_bearer.body);
    assert!(by_bearer.header("ratelimit").is_some());

    // Revoked through the CLI: refused at once (the harness turns the key cache off).
    common::revoke_key(&db.url, &key_id);
    assert_eq!(
        code(&get_full(&url, Some(&key))),
        (401, Some("api_key_revoked"))
    );
    assert_eq!(
        code(&get_bearer(&url, &key)),
        (401, Some("api_key_revoked"))
    );

    // Expired: the CLI only makes keys that live at least a day, so move the expiry into the past in SQL.
    let (short, short_id) = create_key(&db.url, "statistics:read", &["--ttl-days", "1"]);
    assert_eq!(get_full(&url, Some(&short)).status, 200);
    let updated = psql(
        &psql_bin,
        &db.url,
        &format!(
            "UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = '{short_id}' RETURNING id"
        ),
    );
    assert!(updated.contains(&short_id), "{updated}");
    assert_eq!(
        code(&get_full(&url, Some(&short))),
        (401, Some("api_key_expired"))
    );
    let listed = std::process::Command::new(testkit::bin("celeriac-api"))
        .args(["--database-url", &db.url, "key", "list", "--json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let status_of = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .map(|k| k["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status_of(&key_id).as_deref(), Some("revoked"));
    assert_eq!(status_of(&short_id).as_deref(), Some("expired"));
    assert!(!String::from_utf8_lossy(&serde_json::to_vec(&listed).unwrap()).contains(&short));

    // A read-only key may read but not submit or revoke jobs.
    let (reader, _) = create_key(&db.url, "statistics:read", &[]);
    let r = post(&api.url("/api/v1/analyses"), Some(&reader), &analysis());
    assert_eq!(code(&r), (403, Some("missing_scope")), "{}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("jobs:write"));
    let r = delete(&api.url("/api/v1/jobs/x"), Some(&reader));
    assert_eq!(code(&r), (403, Some("missing_scope")), "{}", r.body);
    // And a jobs:write-only key may not read statistics.
    let (writer, _) = create_key(&db.url, "jobs:write", &[]);
    let r = get_full(&url, Some(&writer));
    assert_eq!(code(&r), (403, Some("missing_scope")), "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("statistics:read")
    );

    // The public routes need no key.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/"] {
        let r = get_full(&api.url(path), None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(r.header("ratelimit").is_none(), "{path} counted a limit");
    }
    let (_, openapi) = get(&api.url("/openapi.json"), None);
    assert!(openapi["paths"]["/api/v1/analyses"].is_object());

    // Refusals are counted by status in the request metrics.
    let m = api.metrics();
    let unauthorized: f64 = m
        .lines()
        .filter(|l| {
            l.starts_with("celeriac_api_http_requests_total") && l.contains("status=\"401\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(unauthorized >= 6.0, "{m}");
}

/// The five answers of a 5/minute key carry the draft headers, with the remaining count going down; the sixth is
/// 429 with `Retry-After`. A key without its own limit gets the class default from `--statistics-rate-limit`.
#[test]
fn statistics_limit_sends_headers_then_429() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start(
        &db.url,
        &redis.url,
        &["--statistics-rate-limit", "3/minute"],
    );
    let url = sessions_url(&api);
    let (key, _) = create_key(&db.url, "statistics:read", &["--rate-limit", "5/minute"]);
    for i in 0..5u64 {
        let r = get_full(&url, Some(&key));
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"statistics\";q=5;w=60"),
            "request {i}"
        );
        let state = r.header("ratelimit").expect("RateLimit header");
        let rest = state
            .strip_prefix("\"statistics\";r=")
            .unwrap_or_else(|| panic!("RateLimit: {state}"));
        let (remaining, reset) = rest.split_once(";t=").expect(state);
        let remaining: u64 = remaining.parse().expect(state);
        let reset: u64 = reset.parse().expect(state);
        assert_eq!(remaining, 4 - i, "RateLimit: {state}");
        // GCRA: each request pushes the full-quota time 12 s further out (less the time since the first).
        assert!(
            (12 * (i + 1) - 5..=12 * (i + 1)).contains(&reset),
            "RateLimit: {state}"
        );
    }
    let r = get_full(&url, Some(&key));
    assert_eq!(code(&r), (429, Some("rate_limited")), "{}", r.body);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=12).contains(&retry), "Retry-After: {retry}");
    assert!(
        r.body["message"].as_str().unwrap().contains("5/minute"),
        "{}",
        r.body
    );
    // Another key has its own bucket, with the default of this API (3/minute).
    let (other, _) = create_key(&db.url, "statistics:read", &[]);
    for _ in 0..3 {
        let r = get_full(&url, Some(&other));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"statistics\";q=3;w=60")
        );
    }
    assert_eq!(
        code(&get_full(&url, Some(&other))),
        (429, Some("rate_limited"))
    );
    // Two 429s, both counted.
    let m = api.metrics();
    assert_eq!(
        metric(
            &m,
            "celeriac_api_rate_limit_rejections_total{class=\"statistics\"}"
        ),
        Some(2.0),
        "{m}"
    );
}

/// Two API processes on the same database and Redis enforce one limit between them: alternating requests with a
/// 6/hour key get exactly 6 answers in total, not 6 each (per hour, so no request comes back during the test,
/// however slow the machine is).
#[test]
fn the_limit_is_shared_by_two_api_processes() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let a = Api::start(&db.url, &redis.url, &[]);
    let b = Api::start(&db.url, &redis.url, &["--no-migrate"]);
    let (key, _) = create_key(&db.url, "statistics:read", &["--rate-limit", "6/hour"]);
    let mut allowed = [0u32; 2];
    let mut refused = [0u32; 2];
    for i in 0..16 {
        let (which, api) = if i % 2 == 0 { (0, &a) } else { (1, &b) };
        let r = get_full(&sessions_url(api), Some(&key));
        match r.status {
            200 => allowed[which] += 1,
            429 => {
                assert!(r.header("retry-after").is_some());
                refused[which] += 1;
            }
            other => panic!("request {i} answered {other}: {}", r.body),
        }
    }
    assert_eq!(
        allowed[0] + allowed[1],
        6,
        "allowed per process: {allowed:?}"
    );
    assert_eq!(allowed, [3, 3], "alternating requests share one bucket");
    assert_eq!(refused, [5, 5]);
    let rejections = |api: &Api| {
        metric(
            &api.metrics(),
            "celeriac_api_rate_limit_rejections_total{class=\"statistics\"}",
        )
        .unwrap_or(0.0)
    };
    assert_eq!(rejections(&a), 5.0);
    assert_eq!(rejections(&b), 5.0);
    // The bucket lives in the test's own Redis database, under the key's id.
    let out = std::process::Command::new("redis-cli")
        .args(["-u", &redis.url, "--raw", "KEYS", "celeriac:ratelimit:*"])
        .output()
        .expect("redis-cli");
    let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with(":statistics"), "{keys:?}");
}

/// Job submissions have their own class (default 5/minute): the sixth within a minute is 429, and reads of the same
/// key are not affected.
#[test]
fn the_sixth_analysis_within_a_minute_is_refused() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start(&db.url, &redis.url, &[]);
    api.wait_for_redis();
    let (key, _) = create_key(&db.url, "jobs:write,statistics:read", &[]);
    let url = api.url("/api/v1/analyses");
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = post(&url, Some(&key), &analysis());
        assert_eq!(r.status, 202, "submission {i}: {}", r.body);
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"analyses\";q=5;w=60"),
            "submission {i}"
        );
        ids.push(r.body["id"].as_str().expect("job id").to_string());
    }
    let r = post(&url, Some(&key), &analysis());
    assert_eq!(code(&r), (429, Some("rate_limited")), "{}", r.body);
    assert!(
        r.header("retry-after")
            .is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1))
    );
    // Reads count in the other class.
    let r = get_full(&sessions_url(&api), Some(&key));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("ratelimit-policy")
            .is_some_and(|p| p.starts_with("\"statistics\";q=100"))
    );
    // The accepted jobs are real: each can be read back.
    for id in &ids {
        let (status, body) = get(&api.url(&format!("/api/v1/jobs/{id}")), Some(&key));
        assert_eq!(status, 200, "{id}: {body}");
    }
    let m = api.metrics();
    assert_eq!(
        metric(
            &m,
            "celeriac_api_rate_limit_rejections_total{class=\"analyses\"}"
        ),
        Some(1.0),
        "{m}"
    );
}

/// With nothing listening where Redis should be, statistics answer (fail open, counted), submissions are refused
/// with 503 (fail closed), `/readyz` says Redis is unavailable, and no request waits long.
#[test]
fn without_redis_reads_fail_open_and_submissions_fail_closed() {
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let nowhere = format!("redis://127.0.0.1:{}/0", free_port());
    let api = Api::start(&db.url, &nowhere, &[]);
    let (key, _) = create_key(&db.url, "statistics:read,jobs:write", &[]);
    let url = sessions_url(&api);
    for _ in 0..3 {
        let r = get_full(&url, Some(&key));
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body["total_sessions"].as_i64().unwrap() > 0);
        assert!(
            r.header("ratelimit").is_none(),
            "no limit state without Redis"
        );
    }
    let r = post(&api.url("/api/v1/analyses"), Some(&key), &analysis());
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        matches!(
            r.body["code"].as_str(),
            Some("rate_limiter_unavailable" | "broker_unavailable")
        ),
        "{}",
        r.body
    );
    // Keys are still checked without Redis.
    assert_eq!(code(&get_full(&url, None)), (401, Some("missing_api_key")));
    let (status, body) = get(&api.url("/readyz"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert!(
        body["redis"].as_str().unwrap().starts_with("unavailable"),
        "{body}"
    );
    let m = api.metrics();
    assert_eq!(
        metric(
            &m,
            "celeriac_api_rate_limiter_errors_total{action=\"open\",class=\"statistics\"}"
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "celeriac_api_rate_limiter_errors_total{action=\"closed\",class=\"analyses\"}"
        ),
        Some(1.0),
        "{m}"
    );
    // The background connect gives up its first attempt (with the connection manager's own retries) and says so.
    api.child
        .wait_for_output("Redis unavailable", Duration::from_secs(15));
}

/// Redis stops answering, then dies, under a running API: reads still answer quickly (the limiter gives up after
/// 250 ms; a dead server refuses at once), submissions are refused with 503, and once Redis answers again the limits
/// apply again.
#[test]
fn when_redis_hangs_or_dies_requests_do_not_hang() {
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let Some(redis_server) = which("redis-server") else {
        testkit::require("redis-server", false);
        return;
    };
    let port = free_port();
    let start_redis = || {
        let mut cmd = std::process::Command::new(&redis_server);
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let child = testkit::Child::spawn("redis-server", &mut cmd);
        child.wait_for_output("Ready to accept connections", Duration::from_secs(10));
        child
    };
    let mut server = start_redis();
    let broker = format!("redis://127.0.0.1:{port}/0");
    let api = Api::start(&db.url, &broker, &[]);
    api.wait_for_redis();
    let (key, _) = create_key(&db.url, "statistics:read,jobs:write", &[]);
    let url = sessions_url(&api);
    let limited = || {
        let r = get_full(&url, Some(&key));
        assert_eq!(r.status, 200, "{}", r.body);
        r.header("ratelimit").is_some()
    };
    assert!(limited());
    let open_count = || {
        metric(
            &api.metrics(),
            "celeriac_api_rate_limiter_errors_total{action=\"open\",class=\"statistics\"}",
        )
        .unwrap_or(0.0)
    };
    let quick_reads_and_refused_submission = |what: &str| {
        for _ in 0..3 {
            let r = get_full(&url, Some(&key));
            assert_eq!(r.status, 200, "{what}: {}", r.body);
            assert!(r.header("ratelimit").is_none(), "{what}: limited anyway");
        }
        let r = post(&api.url("/api/v1/analyses"), Some(&key), &analysis());
        assert_eq!(r.status, 503, "{what}: {}", r.body);
        assert_eq!(
            r.body["code"], "rate_limiter_unavailable",
            "{what}: {}",
            r.body
        );
    };

    // Hung: the server takes connections but never answers.
    server.signal("STOP");
    quick_reads_and_refused_submission("Redis stopped (SIGSTOP)");
    assert_eq!(open_count(), 3.0);
    server.signal("CONT");
    let back = testkit::wait_until(Duration::from_secs(20), limited);
    assert!(
        back,
        "limits did not come back after SIGCONT:\n{}",
        api.child.output()
    );

    // Dead: connections are refused. (Polling for the recovery above may itself have been let through open while
    // the limiter waited out its one-second pause after a failure, so count from here.)
    let before = open_count();
    server.signal("KILL");
    server
        .wait_timeout(Duration::from_secs(5))
        .expect("redis-server exits");
    quick_reads_and_refused_submission("Redis killed");
    assert_eq!(open_count(), before + 3.0);

    drop(server);
    let _server = start_redis();
    let back = testkit::wait_until(Duration::from_secs(20), limited);
    assert!(
        back,
        "limits did not come back with Redis:\n{}",
        api.child.output()
    );
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.exists())
}
