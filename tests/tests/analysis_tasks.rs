//! Issue 6 end to end: the real Cowrie samples loaded by `cowrie-loader` into a fresh PostgreSQL database, the
//! analyses run as Celery tasks on `celeriac-worker`, called by a Python Celery client with `send_task`, and the
//! results compared with the original tool's golden outputs. Also: progress, the incremental re-run, storage,
//! and bad windows.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use testkit::{python_or_skip, redis_db_or_skip, run_python, rust_worker};

const SAMPLES: [&str; 7] = [
    "kareiva-cowrie-logs/cowrie.json.2018-05-06",
    "kareiva-cowrie-logs/cowrie.json.2018-06-12",
    "lucasfaudman-honeypot-ai/cowrie.2023-11-30.json",
    "lucasfaudman-honeypot-ai/cowrie.2023-12-13.json",
    "lucasfaudman-honeypot-ai/cowrie.2024-01-10.json",
    "lucasfaudman-honeypot-ai/cowrie.2024-01-26.json",
    "lucasfaudman-honeypot-ai/cowrie.2024-01-28.json",
];

fn golden(name: &str) -> Value {
    let p = testkit::shared_dir()
        .join("fixtures/cowrie/golden")
        .join(name);
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

fn py_json(out: &str) -> Value {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("null");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("python printed no JSON ({e}):\n{out}"))
}

/// A fresh database with the real samples loaded by the real loader.
fn loaded_db(rt: &tokio::runtime::Runtime) -> Option<store::test_support::TestDb> {
    let db = rt.block_on(store::test_support::TestDb::create());
    if !testkit::require("PostgreSQL at 127.0.0.1:5432", db.is_some()) {
        return None;
    }
    let db = db.unwrap();
    let shared = testkit::shared_dir().join("fixtures/cowrie");
    let out = Command::new(testkit::bin("cowrie-loader"))
        .args([
            "bulk",
            "--sensor",
            "samples",
            "--no-progress",
            "--database-url",
            &db.url,
        ])
        .args(SAMPLES.iter().map(|s| shared.join(s)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loader failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(db)
}

const WINDOW: &str = r#"{"start": "2018-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}"#;

#[test]
fn python_calls_longtail_and_gets_the_original_results_with_progress() {
    let redis = redis_db_or_skip!();
    let py = python_or_skip!();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = loaded_db(&rt) else { return };
    let mut w = rust_worker(
        &redis.url,
        "analysis@%h",
        &["-c", "2", "--database-url", &db.url],
    );
    let code = format!(
        r#"
import json, time
from pytasks import app
window = json.loads('{WINDOW}')
def run(**kwargs):
    r = app.send_task('cowrieprocessor.workers.longtail_analysis', args=(None, window), kwargs=kwargs)
    seen = []
    while not r.ready():
        if r.state == 'PROGRESS' and r.info and r.info.get('stage') not in [s.get('stage') for s in seen]:
            seen.append(r.info)
        time.sleep(0.005)
    return r.get(timeout=120), seen
# The original's full shape (per-session lists of the rare commands) on request, twice; then the default compact one.
first, progress = run(include_sessions=True)
second, _ = run(include_sessions=True)
compact, _ = run()
print(json.dumps({{'first': first, 'second': second, 'compact': compact, 'progress': progress}}))
"#
    );
    let out = run_python(&py, &redis.url, &code, Duration::from_secs(300));
    let v = py_json(&out);
    let g = golden("longtail_real_samples.json");
    let first = &v["first"];
    assert_eq!(
        first["total_sessions_analyzed"],
        g["total_sessions_analyzed"]
    );
    assert_eq!(first["total_events_analyzed"], g["total_events_analyzed"]);
    // The same rare commands with the same frequencies and sessions.
    let rare = |list: &Value, sessions_key: &str| -> BTreeMap<String, (u64, Vec<String>)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let mut ids: Vec<String> = match sessions_key {
                    "session_ids" => r["session_ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap().to_string())
                        .collect(),
                    _ => r["sessions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s["session_id"].as_str().unwrap().to_string())
                        .collect(),
                };
                ids.sort();
                (
                    r["command"].as_str().unwrap().to_string(),
                    (r["frequency"].as_u64().unwrap(), ids),
                )
            })
            .collect()
    };
    assert_eq!(
        rare(&first["rare_commands"], "sessions"),
        rare(&g["rare_commands"], "session_ids")
    );
    // The same outlier sessions.
    let mut ours: Vec<&str> = first["outlier_sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["session_id"].as_str().unwrap())
        .collect();
    ours.sort();
    let mut theirs: Vec<&str> = g["outlier_session_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    theirs.sort();
    assert_eq!(ours, theirs);
    assert_eq!(first["anomalous_sequences"], g["anomalous_sequences"]);
    // Progress reached the Python client as AsyncResult.info.
    let stages: Vec<&str> = v["progress"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["stage"].as_str())
        .collect();
    assert!(
        !stages.is_empty(),
        "no PROGRESS state seen; worker log:\n{}",
        w.output()
    );
    // The second run reuses every cached day and gives the same answer.
    let inc = &v["second"]["incremental"];
    assert!(inc["days_total"].as_u64().unwrap() > 0);
    assert_eq!(inc["days_reused"], inc["days_total"], "{inc}");
    assert_eq!(inc["days_recomputed"], json!(0));
    assert_eq!(first["incremental"]["days_reused"], json!(0));
    for key in [
        "rare_commands",
        "outlier_sessions",
        "total_sessions_analyzed",
        "total_events_analyzed",
    ] {
        assert_eq!(
            v["second"][key], first[key],
            "{key} differs between the fresh and the incremental run"
        );
    }
    // By default the per-session lists are left out; each rare command keeps its count of sessions.
    let compact = &v["compact"];
    assert_eq!(compact["session_lists_included"], json!(false), "{compact}");
    let full_rare = first["rare_commands"].as_array().unwrap();
    let compact_rare = compact["rare_commands"].as_array().unwrap();
    assert_eq!(compact_rare.len(), full_rare.len());
    for (c, f) in compact_rare.iter().zip(full_rare) {
        assert_eq!(c["command"], f["command"]);
        assert!(c.get("sessions").is_none(), "{c}");
        assert_eq!(
            c["session_count"].as_u64(),
            Some(f["sessions"].as_array().unwrap().len() as u64),
            "{c}"
        );
    }
    // Two rows for three runs: the second (same window and parameters, no day changed) is the cached window result,
    // not a new row; the compact one has other parameters, so it was computed and stored.
    assert_eq!(
        v["second"]["incremental"]["window_reused"],
        json!(true),
        "{inc}"
    );
    assert_ne!(compact["incremental"]["window_reused"], json!(true));
    let counts = rt.block_on(async {
        use diesel_async::RunQueryDsl;
        let mut conn = db.connect().await;
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let a: N = diesel::sql_query("SELECT count(*) AS n FROM longtail_analysis")
            .get_result(&mut conn)
            .await
            .unwrap();
        let d: N = diesel::sql_query("SELECT count(*) AS n FROM longtail_detections")
            .get_result(&mut conn)
            .await
            .unwrap();
        (a.n, d.n)
    });
    assert_eq!(counts.0, 2);
    assert!(counts.1 > 0);
    w.signal("TERM");
    w.wait_timeout(Duration::from_secs(20));
    rt.block_on(db.drop_db());
}

#[test]
fn snowshoe_and_botnet_match_the_original_scores() {
    let redis = redis_db_or_skip!();
    let py = python_or_skip!();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = loaded_db(&rt) else { return };
    let _w = rust_worker(
        &redis.url,
        "scores@%h",
        &["-c", "2", "--database-url", &db.url],
    );
    let code = format!(
        r#"
import json
from pytasks import app
window = json.loads('{WINDOW}')
s = app.send_task('cowrieprocessor.workers.snowshoe_detection', args=(None, window), kwargs={{'window_hours': 24}}).get(timeout=120)
b = app.send_task('cowrieprocessor.workers.botnet_detection', args=(None, window), kwargs={{'window_hours': 24}}).get(timeout=120)
errors = {{}}
for name, args, kwargs in [('bad_window', (None, '7 parsecs'), {{}}), ('bad_kwarg', (None, '1d'), {{'no_such_threshold': 1}})]:
    try:
        app.send_task('cowrieprocessor.workers.snowshoe_detection', args=args, kwargs=kwargs).get(timeout=60)
        errors[name] = 'no error'
    except Exception as e:
        errors[name] = type(e).__name__
empty = app.send_task('cowrieprocessor.workers.botnet_detection', args=('nobody', '1d')).get(timeout=60)
print(json.dumps({{'snowshoe': s, 'botnet': b, 'errors': errors, 'empty': empty}}))
"#
    );
    let v = py_json(&run_python(
        &py,
        &redis.url,
        &code,
        Duration::from_secs(300),
    ));
    let g = golden("snowshoe_botnet_real_samples.json");
    let close =
        |a: &Value, b: &Value, tol: f64| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= tol;
    for key in ["is_likely_snowshoe", "coordinated_timing", "recommendation"] {
        assert_eq!(v["snowshoe"][key], g["snowshoe"][key], "snowshoe {key}");
    }
    assert!(close(
        &v["snowshoe"]["confidence_score"],
        &g["snowshoe"]["confidence_score"],
        1e-6
    ));
    assert!(close(
        &v["snowshoe"]["geographic_spread"],
        &g["snowshoe"]["geographic_spread"],
        1e-6
    ));
    for key in [
        "is_likely_botnet",
        "coordinated_timing",
        "geographic_clustering",
        "recommendation",
    ] {
        assert_eq!(v["botnet"][key], g["botnet"][key], "botnet {key}");
    }
    // The golden documents its own run-to-run spread of 1.6e-4 on this score.
    assert!(close(
        &v["botnet"]["coordination_score"],
        &g["botnet"]["coordination_score"],
        1e-3
    ));
    assert_eq!(
        v["errors"],
        json!({"bad_window": "ValueError", "bad_kwarg": "TypeError"})
    );
    assert_eq!(
        v["empty"]["is_likely_botnet"],
        json!(false),
        "an empty window gives a clean empty result"
    );
    assert!(v["snowshoe"]["detection_id"].as_i64().is_some());
    rt.block_on(db.drop_db());
}
