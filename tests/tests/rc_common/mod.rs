//! Helpers shared by the remote-control, events and Flower interop tests: Python workers with heartbeats,
//! the `celery` and `celeriac` command lines, a control client on a private runtime, free ports, plain HTTP.
#![allow(dead_code)]

use celeriac_control::ControlClient;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::{Child, repo_root};

/// A Python Celery worker for `tests/python/pytasks.py` that sends worker events (heartbeats) like a normal one.
pub fn python_worker_with_events(python: &Path, broker: &str, node: &str, extra: &[&str]) -> Child {
    let mut cmd = Command::new(python);
    cmd.args([
        "-m", "celery", "-A", "pytasks", "worker", "-n", node, "-l", "info", "-c", "1",
    ])
    .args(extra)
    .current_dir(repo_root().join("tests/python"))
    .env("CELERY_BROKER_URL", broker)
    .env("CELERY_RESULT_BACKEND", broker)
    .env("PYTHONUNBUFFERED", "1");
    let child = Child::spawn(&format!("python-worker-{node}"), &mut cmd);
    child.wait_for_output("ready.", Duration::from_secs(60));
    child
}

/// Output of a finished command.
pub struct Out {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

fn run(mut cmd: Command, timeout: Duration) -> Out {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let child = cmd.spawn().expect("spawn");
    let out = testkit::wait_output(child, timeout);
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `python -m celery -b <broker> <args...>` (the real Celery 5.7 command line).
pub fn celery(python: &Path, broker: &str, args: &[&str]) -> Out {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "celery", "-b", broker])
        .args(args)
        .current_dir(repo_root().join("tests/python"))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONWARNINGS", "ignore");
    run(cmd, Duration::from_secs(60))
}

/// `python -m celery -b <broker> <args...>` with `CELERY_RESULT_BACKEND=<backend>`.
pub fn celery_with(python: &Path, broker: &str, backend: &str, args: &[&str]) -> Out {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "celery", "-b", broker])
        .args(args)
        .current_dir(repo_root().join("tests/python"))
        .env("CELERY_RESULT_BACKEND", backend)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONWARNINGS", "ignore");
    run(cmd, Duration::from_secs(60))
}

/// The `celeriac` binary.
pub fn celeriac(broker: &str, args: &[&str]) -> Out {
    let mut cmd = Command::new(testkit::bin("celeriac"));
    cmd.args(["-b", broker]).args(args);
    run(cmd, Duration::from_secs(60))
}

/// Run a future on a private current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// `inspect` through the Rust control client.
pub fn inspect(
    broker: &str,
    method: &str,
    args: Value,
    dest: Option<Vec<String>>,
) -> std::collections::BTreeMap<String, Value> {
    block_on(async {
        let b = broker::Broker::connect(broker).await.expect("broker");
        ControlClient::new(std::sync::Arc::new(b))
            .inspect(method, args, dest, Duration::from_secs(2))
            .await
            .expect("inspect")
    })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `GET http://127.0.0.1:<port><path>`: (status code, body). `None` if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Parse the last line a Python snippet printed that is JSON.
pub fn py_json(out: &str) -> Value {
    out.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .unwrap_or_else(|| panic!("python printed no JSON:\n{out}"))
}

/// Keys of a JSON object, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}
