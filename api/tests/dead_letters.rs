//! The dead letters through the API (`docs/dead-letters.md`), on real Redis and a real `celeriac-worker`: an admin
//! key lists, shows, replays, drops and purges them (a `statistics:read` key is refused every route); a replay puts
//! the original bytes, unchanged, back in their queue, once; the list pages with `limit` and `offset`, newest first;
//! bad bodies and bad offsets are named.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use testkit::{redis_db_or_skip, rust_worker, wait_until};

const T: Duration = Duration::from_secs(60);

/// `redis-cli -u URL ARGS...` (the API's tests use no Redis client library); its output lines.
fn redis_cli(url: &str, args: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("redis-cli")
        .args(["-u", url])
        .args(args)
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn admins_list_show_replay_drop_and_purge_dead_letters() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let db = rt.block_on(store::test_support::TestDb::create());
    if !testkit::require("PostgreSQL at 127.0.0.1:5432", db.is_some()) {
        return;
    }
    let db = db.unwrap();
    let api = Api::start(&db.url, &redis.url, &[]);
    api.wait_for_redis();
    let (admin, _) = create_key(&db.url, "admin", &[]);
    let (reader, _) = create_key(&db.url, "statistics:read", &[]);

    let mut w = rust_worker(&redis.url, "dl-api@test", &["-Q", "dlapi"]);
    redis_cli(&redis.url, &["RPUSH", "dlapi", "first {bad", "second {bad"]);
    let list = api.url("/api/v1/cluster/dead-letters");
    assert!(
        wait_until(T, || get(&list, Some(&admin)).1["count"] == 2),
        "{}\n{}",
        get(&list, Some(&admin)).1,
        w.output()
    );
    w.signal("TERM");
    assert!(w.wait_timeout(T).is_some(), "worker stopped");

    let (s, body) = get(&list, Some(&admin));
    assert_eq!(s, 200);
    let entries = body["entries"].as_array().unwrap().clone();
    // The two were handled concurrently, so either may be the newer.
    let by_message = |m: &str| {
        entries
            .iter()
            .find(|e| e["message"] == m)
            .unwrap_or_else(|| panic!("{m} in {body}"))
            .clone()
    };
    for e in &entries {
        assert_eq!(e["queue"], "dlapi");
        assert_eq!(e["node"], "dl-api@test");
        assert!(
            e["reason"]
                .as_str()
                .unwrap()
                .starts_with("undecodable message"),
            "{e}"
        );
        assert!(!e["id"].as_str().unwrap().is_empty());
    }
    let (first, second) = (
        by_message("first {bad")["id"].as_str().unwrap().to_string(),
        by_message("second {bad")["id"]
            .as_str()
            .unwrap()
            .to_string(),
    );

    // A statistics:read key may do none of it.
    assert_eq!(get(&list, Some(&reader)).0, 403);
    assert_eq!(get(&format!("{list}/{first}"), Some(&reader)).0, 403);
    let refused = post(
        &format!("{list}/drop"),
        Some(&reader),
        &json!({"ids": [first]}),
    );
    assert_eq!(refused.status, 403);

    // show
    let (s, one) = get(&format!("{list}/{first}"), Some(&admin));
    assert_eq!(
        (s, one["message"].as_str()),
        (200, Some("first {bad")),
        "{one}"
    );
    let (s, none) = get(&format!("{list}/no-such-id"), Some(&admin));
    assert_eq!(
        (s, none["code"].as_str()),
        (404, Some("dead_letter_not_found")),
        "{none}"
    );

    // replay: the bytes go back to their queue unchanged, once.
    let rep = post(
        &format!("{list}/replay"),
        Some(&admin),
        &json!({"ids": [first, "nope"]}),
    );
    assert_eq!(rep.status, 200, "{}", rep.body);
    assert_eq!(
        rep.body["outcomes"][0],
        json!({"id": first, "outcome": "replayed", "detail": "dlapi"})
    );
    assert_eq!(
        rep.body["outcomes"][1],
        json!({"id": "nope", "outcome": "not_found"})
    );
    assert_eq!(
        redis_cli(&redis.url, &["LRANGE", "dlapi", "0", "-1"]),
        ["first {bad"]
    );
    let again = post(
        &format!("{list}/replay"),
        Some(&admin),
        &json!({"ids": [first]}),
    );
    assert_eq!(again.body["outcomes"][0]["outcome"], "not_found");

    // drop
    let dropped = post(
        &format!("{list}/drop"),
        Some(&admin),
        &json!({"ids": [second]}),
    );
    assert_eq!(
        dropped.body["outcomes"][0]["outcome"], "dropped",
        "{}",
        dropped.body
    );
    assert_eq!(get(&list, Some(&admin)).1["count"], 0);

    // purge: an entry kept now is not older than an hour; with 0 s everything kept before now goes.
    redis_cli(&redis.url, &["RPUSH", "dlapi", "third {bad"]);
    let _w2 = rust_worker(&redis.url, "dl-api2@test", &["-Q", "dlapi"]);
    assert!(wait_until(T, || get(&list, Some(&admin)).1["count"] == 2));
    let p = post(
        &format!("{list}/purge"),
        Some(&admin),
        &json!({"older_than": "1h"}),
    );
    assert_eq!((p.status, &p.body), (200, &json!({"purged": 0})));
    std::thread::sleep(Duration::from_millis(20));
    let p = post(
        &format!("{list}/purge"),
        Some(&admin),
        &json!({"older_than": "0"}),
    );
    assert_eq!((p.status, &p.body), (200, &json!({"purged": 2})));

    // Bodies that are not what the routes take are named.
    for (path, body, code) in [
        ("replay", json!({"ids": []}), "invalid_body"),
        ("drop", json!({"ids": "x"}), "invalid_body"),
        ("drop", json!({"ids": ["a"], "extra": 1}), "invalid_body"),
        ("purge", json!({"older_than": "7y"}), "invalid_body"),
    ] {
        let bad = post(&format!("{list}/{path}"), Some(&admin), &body);
        assert_eq!(
            (bad.status, bad.body["code"].as_str()),
            (422, Some(code)),
            "{path} {body}: {}",
            bad.body
        );
    }
    let v: Value = get(&list, Some(&admin)).1;
    assert_eq!(v["count"], 0);

    // Paging: N entries kept one after another (each waited for, so each is newer than the one before), read
    // `limit=2` at a time from `offset`: disjoint pages, newest first, that together are the whole list, and
    // `count` is N on every page.
    const N: usize = 6;
    let kept: Vec<String> = (0..N).map(|i| format!("page-{i} {{bad")).collect();
    for (i, m) in kept.iter().enumerate() {
        redis_cli(&redis.url, &["RPUSH", "dlapi", m]);
        assert!(
            wait_until(T, || get(&list, Some(&admin)).1["count"] == i + 1),
            "{m} was not kept: {}",
            get(&list, Some(&admin)).1
        );
    }
    let field = |page: &Value, f: &str| -> Vec<String> {
        page["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("no entries: {page}"))
            .iter()
            .map(|e| e[f].as_str().unwrap().to_string())
            .collect()
    };
    let newest_first: Vec<String> = kept.iter().rev().cloned().collect();
    let (s, full) = get(&format!("{list}?limit=500"), Some(&admin));
    assert_eq!((s, &full["count"]), (200, &json!(N)), "{full}");
    assert_eq!(field(&full, "message"), newest_first, "{full}");
    let all_ids = field(&full, "id");
    let mut paged_ids = Vec::new();
    for offset in [0, 2, 4] {
        let (s, page) = get(&format!("{list}?limit=2&offset={offset}"), Some(&admin));
        assert_eq!(s, 200, "offset {offset}: {page}");
        assert_eq!(page["count"], N, "offset {offset}: {page}");
        assert_eq!(
            field(&page, "message"),
            newest_first[offset..offset + 2],
            "offset {offset}: {page}"
        );
        paged_ids.extend(field(&page, "id"));
    }
    let mut distinct = paged_ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), N, "the pages overlap: {paged_ids:?}");
    assert_eq!(paged_ids, all_ids, "the pages are not the whole list");
    // A last page that is short, and one past the end: empty, with the count.
    let (s, last) = get(&format!("{list}?limit=2&offset={}", N - 1), Some(&admin));
    assert_eq!(s, 200, "{last}");
    assert_eq!(field(&last, "message"), [kept[0].clone()], "{last}");
    let (s, past) = get(&format!("{list}?limit=2&offset={N}"), Some(&admin));
    assert_eq!((s, &past["count"]), (200, &json!(N)), "{past}");
    assert_eq!(past["entries"], json!([]), "{past}");
    // A bad offset is a 400 naming the parameter and what is wrong with it.
    for (offset, says) in [
        ("-1", "-1 is out of range 0 to 1000000"),
        ("1000001", "1000001 is out of range 0 to 1000000"),
        ("abc", r#""abc" is not a whole number"#),
        ("2.5", r#""2.5" is not a whole number"#),
        ("", r#""" is not a whole number"#),
        ("99999999999999999999", "is not a whole number"),
        ("1&offset=2", "given more than once"),
    ] {
        let (s, e) = get(&format!("{list}?limit=2&offset={offset}"), Some(&admin));
        assert_eq!(
            (s, e["code"].as_str(), e["parameter"].as_str()),
            (400, Some("invalid_parameter"), Some("offset")),
            "offset={offset}: {e}"
        );
        let message = e["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("`offset`") && message.contains(says),
            "offset={offset}: {e}"
        );
    }
    rt.block_on(db.drop_db());
}
