//! `delta --all` over a sensors file: good sensors load exactly once while a sensor whose log directory is missing
//! fails alone (named on stderr, non-zero exit, `loader_runs` rows say so); `--every` with `--metrics-port` serves
//! counting metrics and stops cleanly on SIGTERM.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use store::test_support::TestDb;

use crate::common::*;

fn loader() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cowrie-loader"))
}

fn write_sensors(path: &Path, sensors: &[(&str, &Path)]) {
    let mut text = String::from("sensors:\n");
    for (name, dir) in sensors {
        text.push_str(&format!(
            "  - name: {name}\n    logdir: {}\n    schedule: 15m\n    site: test\n",
            dir.display()
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("stdout line is JSON"))
        .collect()
}

/// The newest `event_timestamp` of a generated plain log, as Unix seconds.
fn newest_timestamp(path: &Path) -> i64 {
    read_events(path)
        .iter()
        .filter_map(|e| e["timestamp"].as_str())
        .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp())
        .max()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_loads_good_sensors_once_and_names_the_missing_one() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = TempDir::new();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let na = gen_log(&a.join("cowrie.json"), 400, 71);
    let nb = gen_log(&b.join("cowrie.json.2024-01-10"), 250, 72);
    let missing = dir.path().join("not-there");
    let sensors = dir.path().join("sensors.yaml");
    write_sensors(
        &sensors,
        &[("alpha", &a), ("bravo", &b), ("charlie", &missing)],
    );
    let status_file = dir.path().join("status.json");
    let run = || {
        loader()
            .args(["delta", "--all", "--parallel", "2", "--no-progress"])
            .arg("--status-file")
            .arg(&status_file)
            .env("DATABASE_URL", &db.url)
            .env("CELERIAC_SENSORS", &sensors)
            .output()
            .unwrap()
    };

    for (round, (want_a, want_b)) in [(na, nb), (0, 0)].into_iter().enumerate() {
        let out = run();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "round {round}: {stderr}");
        assert!(
            stderr.contains("failed sensors: charlie"),
            "round {round}: {stderr}"
        );
        assert!(stderr.contains("not-there"), "round {round}: {stderr}");
        let lines = json_lines(&out.stdout);
        assert_eq!(lines.len(), 4, "three sensors and a summary: {lines:?}");
        let of = |name: &str| {
            lines
                .iter()
                .find(|l| l["sensor"] == name)
                .unwrap_or_else(|| panic!("no status line for {name}: {lines:?}"))
                .clone()
        };
        assert_eq!(of("alpha")["events_inserted"], want_a);
        assert_eq!(of("bravo")["events_inserted"], want_b);
        assert_eq!(of("alpha")["exit_code"], 0);
        assert_eq!(of("charlie")["exit_code"], 1);
        let summary = lines.last().unwrap();
        assert_eq!(summary["summary"], true);
        assert_eq!(summary["ok"], 2);
        assert_eq!(summary["failed_sensors"], serde_json::json!(["charlie"]));
        assert_eq!(summary["events_inserted"], want_a + want_b);
        assert_eq!(summary["exit_code"], 4);
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap();
        assert_eq!(file["results"].as_array().unwrap().len(), 3);
        assert_eq!(file["results"][2]["sensor"], "charlie");
    }

    let mut c = connect(&db.url).await;
    let counts = store::inspect::table_counts(&mut c).await.unwrap();
    assert_eq!(
        counts.raw_events as u64,
        na + nb,
        "every event exactly once"
    );

    let runs = store::loader_runs::all_runs(&mut c).await.unwrap();
    assert_eq!(runs.len(), 6, "{runs:?}");
    for name in ["alpha", "bravo", "charlie"] {
        let mine: Vec<_> = runs.iter().filter(|r| r.sensor == name).collect();
        assert_eq!(mine.len(), 2, "{name}: {runs:?}");
        for r in &mine {
            assert_eq!(r.mode, "delta");
            assert!(r.finished_at >= r.started_at);
            if name == "charlie" {
                assert_eq!(r.outcome, "failed");
                assert_eq!(r.exit_code, 1);
                assert!(
                    r.error.as_deref().unwrap_or("").contains("not-there"),
                    "{r:?}"
                );
            } else {
                assert_eq!(r.outcome, "ok");
                assert_eq!(r.error, None);
            }
        }
        let loaded: Vec<i64> = mine.iter().map(|r| r.events_loaded).collect();
        let want = match name {
            "alpha" => vec![na as i64, 0],
            "bravo" => vec![nb as i64, 0],
            _ => vec![0, 0],
        };
        assert_eq!(loaded, want, "{name}");
    }

    // What the API exports from these rows.
    let health = store::loader_runs::sensor_health(&mut c).await.unwrap();
    let names: Vec<&str> = health.iter().map(|h| h.sensor.as_str()).collect();
    assert_eq!(names, ["alpha", "bravo", "charlie"]);
    assert_eq!(
        health[0].last_event_at.map(|t| t.timestamp()),
        Some(newest_timestamp(&a.join("cowrie.json")))
    );
    assert_eq!(health[0].last_run_failed, Some(false));
    assert!(health[0].last_success_at.is_some());
    assert_eq!(health[2].last_event_at, None);
    assert_eq!(health[2].last_success_at, None);
    assert_eq!(health[2].last_run_failed, Some(true));
    db.drop_db().await;
}

/// `GET /metrics` over a plain TCP connection.
fn scrape(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.1 200").then_some(body)
}

/// The value of the sample of `metric` whose labels include every one of `labels` (`name="value"` pairs).
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| labels.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_serves_counting_metrics_and_stops_on_sigterm() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = TempDir::new();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let live = logs.join("cowrie.json");
    let first = gen_log(&live, 200, 81);
    let sensors = dir.path().join("sensors.yaml");
    write_sensors(&sensors, &[("mike", &logs)]);
    let port = free_port();
    let mut child = loader()
        .args(["delta", "--all", "--every", "1s", "--metrics-port"])
        .arg(port.to_string())
        .arg("--sensors")
        .arg(&sensors)
        .env("DATABASE_URL", &db.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let wait_for = |what: &str, ok: &dyn Fn(&str) -> bool| {
        let started = Instant::now();
        loop {
            if let Some(text) = scrape(port)
                && ok(&text)
            {
                return text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "metrics never showed {what}: {:?}",
                scrape(port)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let events = |t: &str| {
        sample(
            t,
            "celeriac_loader_events_loaded_total",
            &["sensor=\"mike\""],
        )
    };
    let ok_runs = |t: &str| {
        sample(
            t,
            "celeriac_loader_runs_total",
            &["sensor=\"mike\"", "outcome=\"ok\""],
        )
        .unwrap_or(0.0)
    };
    // Two runs: the first loads the file, the second finds nothing new.
    let text = wait_for("two successful runs", &|t| ok_runs(t) >= 2.0);
    assert_eq!(events(&text), Some(first as f64));
    assert_eq!(
        sample(
            &text,
            "celeriac_loader_runs_total",
            &["sensor=\"mike\"", "outcome=\"failed\""]
        ),
        Some(0.0)
    );
    assert!(
        sample(
            &text,
            "celeriac_loader_last_success_timestamp_seconds",
            &["sensor=\"mike\""]
        )
        .unwrap_or(0.0)
            > 1.6e9
    );
    assert!(
        sample(
            &text,
            "celeriac_loader_run_duration_seconds_count",
            &["sensor=\"mike\""]
        )
        .unwrap_or(0.0)
            >= 2.0
    );

    // More lines appended to the live file: the next run loads exactly those.
    let extra_file = dir.path().join("extra.json");
    let extra = gen_log(&extra_file, 120, 82);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&live)
        .unwrap();
    f.write_all(&std::fs::read(&extra_file).unwrap()).unwrap();
    drop(f);
    wait_for("the appended events", &|t| {
        events(t) == Some((first + extra) as f64)
    });

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the loader did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped by signal"));
    let summaries = json_lines(&out.stdout)
        .into_iter()
        .filter(|l| l["summary"] == true)
        .count();
    assert!(summaries >= 3, "one summary per run");

    let mut c = connect(&db.url).await;
    let counts = store::inspect::table_counts(&mut c).await.unwrap();
    assert_eq!(counts.raw_events as u64, first + extra);
    let runs = store::loader_runs::all_runs(&mut c).await.unwrap();
    assert_eq!(runs.len(), summaries, "one loader_runs row per run");
    assert!(runs.iter().all(|r| r.outcome == "ok" && r.sensor == "mike"));
    db.drop_db().await;
}
