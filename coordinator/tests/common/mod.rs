//! Shared setup for the coordinator tests: a claimed Redis database, a config file of the test's own, and the
//! application state built the way `run` builds it.

#![allow(dead_code)]

use actix_web::web::Data;
use celeriac_coordinator::{AppState, Settings};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// A config file owned by one test (removed on drop).
pub struct TempConfig {
    pub path: PathBuf,
}

impl TempConfig {
    pub fn new(yaml: &str) -> TempConfig {
        let dir = testkit::bin_dir().join("test-configs");
        std::fs::create_dir_all(&dir).expect("config dir");
        let path = dir.join(format!("wc-{}.yaml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, yaml).expect("write config");
        TempConfig { path }
    }

    pub fn write(&self, yaml: &str) {
        std::fs::write(&self.path, yaml).expect("write config");
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The job key every test coordinator is started with ([`http`] sends it as `X-Job-Key`).
pub const JOB_KEY: &str = "job-key-for-tests";

pub fn settings(config: &TempConfig, admin: Option<&str>) -> Settings {
    let mut s = Settings::new(config.path.clone());
    s.admin_key = admin.map(str::to_string);
    s.job_key = Some(JOB_KEY.to_string());
    s.inspect_interval = Duration::from_millis(500);
    s.inspect_timeout = Duration::from_millis(300);
    s.reroute_interval = Duration::from_millis(300);
    s.stale_grace = Duration::from_secs(3600);
    s
}

pub async fn state(
    db: &testkit::RedisDb,
    config: &TempConfig,
    admin: Option<&str>,
) -> Data<AppState> {
    let broker = broker::Broker::connect(&db.url).await.expect("broker");
    Data::new(
        AppState::new(settings(config, admin), broker)
            .await
            .expect("state"),
    )
}

/// Feed the registry a heartbeat as a worker would send it.
pub fn heartbeat(state: &AppState, node: &str, active: u64, freq: f64) {
    let mut m = Map::new();
    for (k, v) in [
        ("hostname", json!(node)),
        ("freq", json!(freq)),
        ("active", json!(active)),
        ("processed", json!(0)),
        ("loadavg", json!([0.1, 0.1, 0.1])),
        ("sw_ident", json!("py-celery")),
        ("timestamp", json!(broker::now_f64())),
        ("type", json!("worker-heartbeat")),
    ] {
        m.insert(k.into(), v);
    }
    let ev = celeriac_control::Event::new(m, broker::now_f64());
    state.jobs.registry.lock().unwrap().apply_event(&ev);
}

/// Poll an async condition every 100 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

/// A minimal HTTP/1.1 client for the real server: one request per connection, JSON in and out, with the tests'
/// job key as `X-Job-Key`.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Job-Key: {JOB_KEY}\r\n"
    );
    if body.is_some() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&payload);
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The coordinator's row for `node` in `GET /api/v1/workers`, if listed.
pub async fn worker_row(addr: std::net::SocketAddr, node: &str) -> Option<Value> {
    let (_, v) = http(addr, "GET", "/api/v1/workers", None).await;
    v["workers"]
        .as_array()?
        .iter()
        .find(|w| w["node"] == node)
        .cloned()
}

/// `GET /api/v1/jobs/{id}` once it is ready; panics with the last view after `timeout`.
pub async fn wait_job_ready(addr: std::net::SocketAddr, id: &str, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (_, v) = http(addr, "GET", &format!("/api/v1/jobs/{id}"), None).await;
        if v["ready"] == true {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} did not finish: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET path` as text (the metrics page).
pub async fn get_text(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of an unlabelled metric on a metrics page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A free port on 127.0.0.1 for a coordinator process to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
