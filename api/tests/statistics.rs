//! The statistics endpoints on the real Cowrie samples loaded by the real `cowrie-loader`, compared with an
//! independent computation over the same log files (`python/independent_stats.py`: JSON lines in, no database);
//! plus the session listing's cursor pagination and one session's events.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use testkit::redis_db_or_skip;

const START: &str = "2018-01-01T00:00:00Z";
const END: &str = "2025-01-01T00:00:00Z";

fn independent(start: &str, end: &str) -> Value {
    let script = testkit::repo_root().join("api/tests/python/independent_stats.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args([start, end]);
    for (sensor, files) in SAMPLES {
        let paths: Vec<String> = files
            .iter()
            .map(|f| sample_path(f).display().to_string())
            .collect();
        cmd.arg(format!("{sensor}={}", paths.join(",")));
    }
    let out = cmd.output().expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the script")
}

fn sensor_query(sensor: &str) -> String {
    if sensor == "*" {
        String::new()
    } else {
        format!("&sensor={sensor}")
    }
}

#[test]
fn statistics_equal_an_independent_computation_over_the_log_files() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start(
        &db.url,
        &redis.url,
        &["--statistics-rate-limit", "100000/minute"],
    );
    let (key, _) = create_key(&db.url, "statistics:read", &[]);
    // All of it (whole hours: the rollups alone), then a window cut mid-hour through both sensors' busy hours
    // (rollups for the whole hours, raw events for the edges).
    for (start, end) in [
        (START, END),
        ("2018-06-12T10:20:00Z", "2024-01-10T02:10:00Z"),
    ] {
        compare_with_independent(&api, &key, start, end);
    }
}

fn compare_with_independent(api: &Api, key: &str, start: &str, end: &str) {
    let window = format!("start={start}&end={end}");
    let want = independent(start, end);
    let mut totals = BTreeMap::new();
    let mut sensors: Vec<String> = want.as_object().unwrap().keys().cloned().collect();
    sensors.sort();
    // The kareiva logs name their own sensor; the lucas ones do not, so the loader's --sensor names them.
    assert_eq!(sensors, ["*", "920497a79896", "lucas"]);
    for sensor in sensors.iter().map(String::as_str) {
        let w = &want[sensor];
        let (status, s) = get(
            &api.url(&format!(
                "/api/v1/statistics/sessions?{window}{}",
                sensor_query(sensor)
            )),
            Some(key),
        );
        assert_eq!(status, 200, "{s}");
        for k in [
            "total_sessions",
            "unique_ips",
            "login_attempts",
            "successful_logins",
            "sessions_with_commands",
            "file_downloads",
        ] {
            assert_eq!(s[k], w[k], "{k} for sensor {sensor}");
        }
        let (a, b) = (
            s["avg_session_seconds"].as_f64().unwrap(),
            w["avg_session_seconds"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-6,
            "avg_session_seconds {a} vs {b} for {sensor}"
        );
        let tl = s["timeline"].as_array().unwrap();
        let sum = |k: &str| tl.iter().map(|b| b[k].as_i64().unwrap()).sum::<i64>();
        assert_eq!(
            sum("sessions"),
            w["total_sessions"].as_i64().unwrap(),
            "timeline sessions, {sensor}"
        );
        assert_eq!(
            sum("events"),
            w["events"].as_i64().unwrap(),
            "timeline events, {sensor}"
        );
        assert!(
            tl.windows(2)
                .all(|p| p[0]["bucket"].as_str() < p[1]["bucket"].as_str())
        );
        totals.insert(sensor, s["total_sessions"].as_i64().unwrap());

        let (status, t) = get(
            &api.url(&format!(
                "/api/v1/statistics/threats?{window}&limit=1000{}",
                sensor_query(sensor)
            )),
            Some(key),
        );
        assert_eq!(status, 200, "{t}");
        let ips: BTreeMap<String, (i64, i64)> = t["top_source_ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["ip"].as_str().unwrap().to_string(),
                    (
                        r["sessions"].as_i64().unwrap(),
                        r["events"].as_i64().unwrap(),
                    ),
                )
            })
            .collect();
        let want_ips: BTreeMap<String, (i64, i64)> = w["ips"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(ip, v)| {
                (
                    ip.clone(),
                    (
                        v["sessions"].as_i64().unwrap(),
                        v["events"].as_i64().unwrap(),
                    ),
                )
            })
            .collect();
        assert_eq!(ips, want_ips, "top_source_ips for {sensor}");
        let sessions_desc: Vec<i64> = t["top_source_ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["sessions"].as_i64().unwrap())
            .collect();
        assert!(
            sessions_desc.windows(2).all(|p| p[0] >= p[1]),
            "ordered by sessions"
        );

        let creds: BTreeSet<(String, String, i64, i64)> = t["top_credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["username"].to_string(),
                    r["password"].to_string(),
                    r["attempts"].as_i64().unwrap(),
                    r["successes"].as_i64().unwrap(),
                )
            })
            .collect();
        let want_creds: BTreeSet<(String, String, i64, i64)> = w["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r[0].to_string(),
                    r[1].to_string(),
                    r[2].as_i64().unwrap(),
                    r[3].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(creds, want_creds, "top_credentials for {sensor}");

        // Commands are shown defanged, so compare the counts, and the text of those that needed no defanging.
        let mut counts: Vec<i64> = t["top_commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["count"].as_i64().unwrap())
            .collect();
        let want_cmds = w["commands"].as_object().unwrap();
        let mut want_counts: Vec<i64> = want_cmds.values().map(|v| v.as_i64().unwrap()).collect();
        counts.sort_unstable();
        want_counts.sort_unstable();
        assert_eq!(counts, want_counts, "command counts for {sensor}");
        for r in t["top_commands"].as_array().unwrap() {
            let text = r["command"].as_str().unwrap();
            if !text.starts_with("[defang:") {
                assert_eq!(
                    want_cmds.get(text).and_then(Value::as_i64),
                    r["count"].as_i64(),
                    "{text:?}"
                );
                assert_eq!(r["risk_level"], "safe");
            } else {
                assert_ne!(r["risk_level"], "safe");
            }
        }
    }
    assert_eq!(totals["*"], totals["920497a79896"] + totals["lucas"]);
    assert_ne!(totals["920497a79896"], totals["lucas"]);

    let (status, s) = get(
        &api.url(&format!("/api/v1/statistics/sensors?{window}")),
        Some(key),
    );
    assert_eq!(status, 200, "{s}");
    let rows = s["sensors"].as_array().unwrap();
    // The data's two sensors, and the loader namespace "kareiva" whose events carry their own name.
    let names: Vec<&str> = rows.iter().map(|r| r["sensor"].as_str().unwrap()).collect();
    assert_eq!(names, ["920497a79896", "kareiva", "lucas"], "{s}");
    for r in rows {
        let sensor = r["sensor"].as_str().unwrap();
        let (events, sessions) = match want.get(sensor) {
            Some(w) => (w["events"].clone(), w["total_sessions"].clone()),
            None => (0.into(), 0.into()),
        };
        assert_eq!(r["events"], events, "{sensor} events");
        assert_eq!(r["sessions"], sessions, "{sensor} sessions");
        assert_eq!(r["dead_letters"], 0);
        // Loaded just now, no dead letters: ok.
        assert_eq!(r["status"], "ok", "{r}");
        assert!(r["last_ingest_at"].is_string());
    }

    // Unknown sensor: 404 naming the parameter.
    let r = get_full(
        &api.url("/api/v1/statistics/sessions?sensor=nope"),
        Some(key),
    );
    assert_eq!(
        (
            r.status,
            r.body["code"].as_str(),
            r.body["parameter"].as_str()
        ),
        (404, Some("unknown_sensor"), Some("sensor"))
    );
}

#[test]
fn sessions_page_through_every_session_and_one_session_shows_its_events() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start(
        &db.url,
        &redis.url,
        &["--statistics-rate-limit", "100000/minute"],
    );
    let (key, _) = create_key(&db.url, "statistics:read", &[]);
    let (_, totals) = get(
        &api.url(&format!(
            "/api/v1/statistics/sessions?{ALL_TIME}&sensor=lucas"
        )),
        Some(&key),
    );
    let total = totals["total_sessions"].as_i64().unwrap();
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut last: Option<(String, String)> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("/api/v1/sessions?{ALL_TIME}&sensor=lucas&limit=40");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = get(&api.url(&url), Some(&key));
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for s in page["sessions"].as_array().unwrap() {
            let k = (
                s["first_event_at"].as_str().unwrap().to_string(),
                s["session_id"].as_str().unwrap().to_string(),
            );
            if let Some(prev) = &last {
                assert!(k < *prev, "newest first, strictly: {k:?} after {prev:?}");
            }
            last = Some(k);
            assert_eq!(s["sensor"], "lucas");
            assert!(
                seen.insert(s["session_id"].as_str().unwrap().to_string()),
                "a session came twice"
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, total);
    assert!(pages > 1);

    // Filters.
    let (_, with_cmds) = get(
        &api.url(&format!(
            "/api/v1/sessions?{ALL_TIME}&has_commands=true&limit=1000"
        )),
        Some(&key),
    );
    let with_cmds = with_cmds["sessions"].as_array().unwrap();
    assert!(!with_cmds.is_empty());
    assert!(
        with_cmds
            .iter()
            .all(|s| s["command_count"].as_i64().unwrap() > 0)
    );

    // One session with commands: its events in order, with the count of its summary.
    let s = &with_cmds[0];
    let id = s["session_id"].as_str().unwrap();
    let ip = s["src_ip"].as_str().unwrap();
    let (status, by_ip) = get(
        &api.url(&format!(
            "/api/v1/sessions?{ALL_TIME}&src_ip={ip}&limit=1000"
        )),
        Some(&key),
    );
    assert_eq!(status, 200);
    assert!(
        by_ip["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["src_ip"] == ip)
    );
    let (status, d) = get(&api.url(&format!("/api/v1/sessions/{id}")), Some(&key));
    assert_eq!(status, 200, "{d}");
    let events = d["events"].as_array().unwrap();
    assert_eq!(
        events.len() as i64,
        d["session"]["event_count"].as_i64().unwrap()
    );
    assert!(
        events
            .windows(2)
            .all(|p| p[0]["timestamp"].as_str() <= p[1]["timestamp"].as_str())
    );
    assert!(events.iter().all(|e| e["payload"]["session"] == id));
    // The loader counts every cowrie.command.* event (input, failed, success) as a command.
    let commands = events
        .iter()
        .filter(|e| {
            e["event_type"]
                .as_str()
                .unwrap()
                .starts_with("cowrie.command.")
        })
        .count();
    assert_eq!(
        commands as i64,
        d["session"]["command_count"].as_i64().unwrap()
    );
    let cmds: Vec<&Value> = events
        .iter()
        .filter(|e| e["event_type"] == "cowrie.command.input")
        .collect();
    assert!(!cmds.is_empty());
    assert!(
        cmds.iter()
            .all(|e| e["command_safe"].is_string() && e["risk_score"].is_number())
    );
    let (status, nf) = get(&api.url("/api/v1/sessions/no-such-session"), Some(&key));
    assert_eq!(
        (status, nf["code"].as_str()),
        (404, Some("session_not_found"))
    );
    let (status, bad) = get(&api.url("/api/v1/sessions?cursor=zzz"), Some(&key));
    assert_eq!((status, bad["parameter"].as_str()), (400, Some("cursor")));
}
