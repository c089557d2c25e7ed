//! Issue 3, Flower 2.2 against a Rust worker: `/api/workers?refresh=1` lists it with stats, queues and registered
//! tasks; `/api/tasks` shows its tasks with states, args, results and runtimes; it stays online through a minute
//! of idling (heartbeats on time); headless Chromium renders the workers page with it (screenshot kept under
//! `target/artifacts/`). This is the one slow test of the suite (about 90 s).

mod rc_common;

use rc_common::{free_port, http_get, py_json};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::{
    Child, python_or_skip, redis_db_or_skip, repo_root, require, run_python, rust_worker,
    wait_until,
};

const T: Duration = Duration::from_secs(120);

fn chromium() -> Option<std::path::PathBuf> {
    let from_env = std::env::var("CELERIAC_CHROMIUM")
        .ok()
        .filter(|p| !p.is_empty())
        .map(Into::into);
    from_env
        .into_iter()
        .chain([
            "/usr/bin/chromium".into(),
            "/usr/bin/chromium-browser".into(),
        ])
        .find(|p: &std::path::PathBuf| p.exists())
}

fn get_json(port: u16, path: &str) -> Option<Value> {
    let (code, body) = http_get(port, path)?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

#[test]
fn flower_sees_and_keeps_the_rust_worker_online() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let node = "rsflower@flowerhost";
    let _rs = rust_worker(&db.url, node, &["-Q", "celery,longtail", "-c", "2"]);
    let port = free_port();
    let mut cmd = Command::new(&py);
    cmd.args([
        "-m",
        "celery",
        "-b",
        &db.url,
        "flower",
        &format!("--port={port}"),
        "--address=127.0.0.1",
    ])
    .current_dir(repo_root().join("tests/python"))
    .env("FLOWER_UNAUTHENTICATED_API", "true")
    .env("PYTHONUNBUFFERED", "1");
    let flower = Child::spawn("flower", &mut cmd);
    assert!(
        wait_until(Duration::from_secs(60), || http_get(port, "/healthcheck")
            .is_some_and(|(c, _)| c == 200)),
        "Flower did not start:\n{}",
        flower.output()
    );

    // /api/workers?refresh=1: stats, queues and registered tasks of the Rust worker.
    let mut workers = Value::Null;
    assert!(
        wait_until(T, || {
            workers = get_json(port, "/api/workers?refresh=1").unwrap_or(Value::Null);
            workers[node]["stats"].is_object() && workers[node]["registered"].is_array()
        }),
        "Flower does not list {node}: {workers}\n{}",
        flower.output()
    );
    let w = &workers[node];
    assert!(w["stats"]["total"].is_object());
    assert!(w["stats"]["broker"]["transport"] == "redis");
    assert_eq!(w["stats"]["pool"]["max-concurrency"], json!(2));
    let queues: Vec<&str> = w["active_queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert!(
        queues.contains(&"celery") && queues.contains(&"longtail"),
        "{queues:?}"
    );
    assert!(
        w["registered"]
            .as_array()
            .unwrap()
            .contains(&json!("celeriac.add"))
    );
    assert!(w["conf"]["broker_url"].is_string());
    // The worker page renders (Flower answers 404 when stats are missing or malformed).
    assert_eq!(
        http_get(port, &format!("/worker/{node}")).map(|(c, _)| c),
        Some(200)
    );

    // Flower broadcasts enable_events; tasks run after that show in /api/tasks.
    assert!(wait_until(T, || _rs
        .output()
        .contains("task events enabled by remote control")));
    let v = py_json(&run_python(
        &py,
        &db.url,
        r#"
import json
from pytasks import app
ok = app.send_task('celeriac.add', args=(2, 3))
bad = app.send_task('celeriac.fail', args=('boom',), queue='longtail')
try:
    bad.get(timeout=60)
except Exception:
    pass
print(json.dumps([ok.get(timeout=60), ok.id, bad.id]))
"#,
        T,
    ));
    assert_eq!(v[0], json!(5));
    let (ok_id, bad_id) = (
        v[1].as_str().unwrap().to_string(),
        v[2].as_str().unwrap().to_string(),
    );
    let mut tasks = Value::Null;
    assert!(
        wait_until(T, || {
            tasks = get_json(port, "/api/tasks").unwrap_or(Value::Null);
            tasks[&ok_id]["state"] == "SUCCESS" && tasks[&bad_id]["state"] == "FAILURE"
        }),
        "{tasks}"
    );
    let ok = &tasks[&ok_id];
    assert_eq!(ok["name"], json!("celeriac.add"));
    assert_eq!(ok["args"], json!("(2, 3)"));
    assert_eq!(ok["result"], json!("5"));
    assert_eq!(ok["worker"], json!(node));
    assert!(ok["runtime"].as_f64().is_some_and(|r| r >= 0.0), "{ok}");
    let bad = &tasks[&bad_id];
    assert_eq!(bad["exception"], json!("ValueError('boom')"));
    assert!(
        bad["traceback"]
            .as_str()
            .is_some_and(|t| t.contains("ValueError"))
    );

    // A minute of idling: Flower keeps the worker online (heartbeats within 2 * freq).
    let start = Instant::now();
    let mut checks = 0;
    while start.elapsed() < Duration::from_secs(60) {
        let status = get_json(port, "/api/workers?status=1").unwrap_or(Value::Null);
        assert_eq!(
            status[node],
            json!(true),
            "Flower marked {node} offline after {:?}: {status}",
            start.elapsed()
        );
        checks += 1;
        std::thread::sleep(Duration::from_secs(5));
    }
    assert!(checks >= 10);

    // Headless Chromium renders the workers page with the Rust worker online; keep the screenshot.
    let Some(chrome) = chromium() else {
        require("chromium (scripts/ensure-chromium.sh)", false);
        return;
    };
    let url = format!("http://127.0.0.1:{port}/workers");
    let chrome_args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--virtual-time-budget=8000",
    ];
    let dom = Command::new(&chrome)
        .args(chrome_args)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains(node) && dom.contains(">Online<"),
        "rendered workers page lacks {node} online:\n{dom}"
    );
    let dir = repo_root().join("target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("flower-workers.png");
    let _ = std::fs::remove_file(&png);
    let shot = Command::new(&chrome)
        .args(chrome_args)
        .arg("--window-size=1400,700")
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .expect("chromium");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&shot.stderr)
        )
    });
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "screenshot {} is not a real PNG",
        png.display()
    );
    eprintln!("Flower workers page screenshot: {}", png.display());
}
