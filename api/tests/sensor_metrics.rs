//! The sensors' health on `/metrics`, read from PostgreSQL at scrape time: after real `cowrie-loader delta --all`
//! runs, each sensor's newest event, newest successful loader run and whether its newest run failed appear with the
//! sensor's label and the values the database holds.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use testkit::redis_db_or_skip;

fn loader_all(database_url: &str, sensors: &Path) -> std::process::Output {
    Command::new(testkit::bin("cowrie-loader"))
        .args([
            "--database-url",
            database_url,
            "delta",
            "--all",
            "--no-progress",
            "--sensors",
        ])
        .arg(sensors)
        .output()
        .expect("run cowrie-loader")
}

/// The newest timestamp of a generated plain log, as Unix seconds with milliseconds.
fn newest(path: &Path) -> f64 {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| {
            chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str()?)
                .ok()
                .map(|t| t.timestamp_millis() as f64 / 1000.0)
        })
        .fold(f64::MIN, f64::max)
}

#[test]
fn sensor_and_loader_health_come_from_the_database() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let db = rt.block_on(store::test_support::TestDb::create());
    if !testkit::require("PostgreSQL at 127.0.0.1:5432", db.is_some()) {
        return;
    }
    let db = db.unwrap();
    let dir = std::env::temp_dir().join(format!("celeriac-sensor-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let good = dir.join("good");
    std::fs::create_dir_all(&good).unwrap();
    let log = good.join("cowrie.json");
    let out = Command::new(testkit::bin("cowrie-loader"))
        .args([
            "generate",
            "--events",
            "300",
            "--seed",
            "9",
            "--start",
            "2024-03-01T00:00:00Z",
            "--out",
        ])
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let broken = dir.join("broken-logs");
    let sensors = dir.join("sensors.yaml");
    std::fs::write(
        &sensors,
        format!(
            "sensors:\n  - name: gen\n    logdir: {}\n  - name: broken\n    logdir: {}\n",
            good.display(),
            broken.display()
        ),
    )
    .unwrap();
    let before = chrono::Utc::now().timestamp() as f64 - 1.0;
    let out = loader_all(&db.url, &sensors);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let api = Api::start(&db.url, &redis.url, &[]);
    let text = api.metrics();
    let now = chrono::Utc::now().timestamp() as f64 + 1.0;
    let last_event = |t: &str, s: &str| {
        metric(
            t,
            &format!("celeriac_sensor_last_event_timestamp_seconds{{sensor=\"{s}\"}}"),
        )
    };
    let last_success = |t: &str, s: &str| {
        metric(
            t,
            &format!("celeriac_loader_last_success_timestamp_seconds{{sensor=\"{s}\"}}"),
        )
    };
    let failed = |t: &str, s: &str| {
        metric(
            t,
            &format!("celeriac_loader_last_run_failed{{sensor=\"{s}\"}}"),
        )
    };

    assert_eq!(last_event(&text, "gen"), Some(newest(&log)), "{text}");
    let ok_at = last_success(&text, "gen").expect("gen has a successful run");
    assert!(
        before <= ok_at && ok_at <= now,
        "{before} <= {ok_at} <= {now}"
    );
    assert_eq!(failed(&text, "gen"), Some(0.0));
    assert_eq!(failed(&text, "broken"), Some(1.0));
    assert_eq!(last_event(&text, "broken"), None);
    assert_eq!(last_success(&text, "broken"), None);
    // The API's own series are still there, under their prefix.
    assert!(text.contains("celeriac_api_db_replica_up"), "{text}");

    // The broken sensor's directory appears with logs: its newest run now succeeded.
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(&log, broken.join("cowrie.json")).unwrap();
    let out = loader_all(&db.url, &sensors);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = api.metrics();
    assert_eq!(failed(&text, "broken"), Some(0.0));
    assert!(last_success(&text, "broken").is_some_and(|t| t >= ok_at));
    assert_eq!(last_event(&text, "broken"), Some(newest(&log)));

    let _ = std::fs::remove_dir_all(&dir);
    rt.block_on(db.drop_db());
}
