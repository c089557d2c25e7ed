//! Shared setup of the API's live tests: a fresh PostgreSQL database with the real Cowrie samples loaded by the real
//! `cowrie-loader` under two sensors, the real `celeriac-api` binary on a free port, keys made by its own CLI, and a
//! small HTTP client.

#![allow(dead_code)]

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use testkit::Child;

/// The samples, by the sensor name they are loaded under.
pub const SAMPLES: [(&str, &[&str]); 2] = [
    (
        "kareiva",
        &[
            "kareiva-cowrie-logs/cowrie.json.2018-05-06",
            "kareiva-cowrie-logs/cowrie.json.2018-06-12",
        ],
    ),
    (
        "lucas",
        &[
            "lucasfaudman-honeypot-ai/cowrie.2023-11-30.json",
            "lucasfaudman-honeypot-ai/cowrie.2023-12-13.json",
            "lucasfaudman-honeypot-ai/cowrie.2024-01-10.json",
            "lucasfaudman-honeypot-ai/cowrie.2024-01-26.json",
            "lucasfaudman-honeypot-ai/cowrie.2024-01-28.json",
        ],
    ),
];

/// A window that holds every sample.
pub const ALL_TIME: &str = "start=2018-01-01T00:00:00Z&end=2025-01-01T00:00:00Z";

/// The absolute path of a sample file.
pub fn sample_path(rel: &str) -> std::path::PathBuf {
    testkit::shared_dir().join("fixtures/cowrie").join(rel)
}

/// A fresh database with every sample loaded (`None` when PostgreSQL is missing outside CI).
pub fn loaded_db(rt: &tokio::runtime::Runtime) -> Option<store::test_support::TestDb> {
    let db = rt.block_on(store::test_support::TestDb::create());
    if !testkit::require("PostgreSQL at 127.0.0.1:5432", db.is_some()) {
        return None;
    }
    let db = db.unwrap();
    for (sensor, files) in SAMPLES {
        let out = Command::new(testkit::bin("cowrie-loader"))
            .args([
                "bulk",
                "--sensor",
                sensor,
                "--no-progress",
                "--database-url",
                &db.url,
            ])
            .args(files.iter().map(|f| sample_path(f)))
            .output()
            .expect("run cowrie-loader");
        assert!(
            out.status.success(),
            "loader failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(db)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `celeriac-api`.
pub struct Api {
    pub child: Child,
    pub base: String,
    pub port: u16,
}

impl Api {
    /// Start the binary against `database_url` and `broker`, with `extra` flags after `serve`, and wait for `/healthz`.
    pub fn start(database_url: &str, broker: &str, extra: &[&str]) -> Api {
        Api::start_env(database_url, broker, extra, &[])
    }

    pub fn start_env(
        database_url: &str,
        broker: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Api {
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(testkit::bin("celeriac-api"));
        cmd.args(["--database-url", database_url, "--broker", broker])
            .arg("--config")
            .arg(testkit::repo_root().join("worker-config.yaml"))
            .args([
                "serve",
                "--bind",
                &bind,
                "--key-cache-secs",
                "0",
                "--http-workers",
                "2",
            ])
            .args(extra)
            // Tests see every change at once unless they turn the answer cache on themselves.
            .args(if extra.contains(&"--answer-cache-secs") {
                &[][..]
            } else {
                &["--answer-cache-secs", "0"][..]
            })
            .env_remove("DATABASE_READ_URL")
            .env_remove("CELERY_RESULT_BACKEND");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = Child::spawn("celeriac-api", &mut cmd);
        let base = format!("http://{bind}");
        let ok = testkit::wait_until(Duration::from_secs(30), || {
            get(&format!("{base}/healthz"), None).0 == 200
        });
        assert!(
            ok,
            "celeriac-api did not answer /healthz:\n{}",
            child.output()
        );
        Api { child, base, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// `celeriac-api key create ... --json` against `database_url`: the secret and the key's id.
pub fn create_key(database_url: &str, scopes: &str, extra: &[&str]) -> (String, String) {
    let out = Command::new(testkit::bin("celeriac-api"))
        .args([
            "--database-url",
            database_url,
            "key",
            "create",
            "--name",
            "test",
            "--scopes",
            scopes,
            "--json",
        ])
        .args(extra)
        .output()
        .expect("run celeriac-api key create");
    assert!(
        out.status.success(),
        "key create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("key JSON");
    (
        v["key"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

/// `celeriac-api key revoke ID`.
pub fn revoke_key(database_url: &str, id: &str) {
    let out = Command::new(testkit::bin("celeriac-api"))
        .args(["--database-url", database_url, "key", "revoke", id])
        .output()
        .expect("run celeriac-api key revoke");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Requests give up after 20 s: no endpoint should take that long on the samples, and a request that waits on a
/// dead or frozen Redis (its client's response timeout is 30 s) shows up as a failure (status 0), not a slow pass.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// A response: status, headers (lower-case names), body as JSON (or `Value::String` of the text when not JSON).
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    match r {
        Err(e) => Reply {
            status: 0,
            headers: Vec::new(),
            body: Value::String(e.to_string()),
        },
        Ok(mut r) => {
            let status = r.status().as_u16();
            let headers = r
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Reply {
                status,
                headers,
                body,
            }
        }
    }
}

/// GET with an optional key; `(status, body)`.
pub fn get(url: &str, key: Option<&str>) -> (u16, Value) {
    let r = get_full(url, key);
    (r.status, r.body)
}

pub fn get_full(url: &str, key: Option<&str>) -> Reply {
    let mut req = agent().get(url);
    if let Some(k) = key {
        req = req.header("X-API-Key", k);
    }
    reply(req.call())
}

/// POST JSON with an optional key.
pub fn post(url: &str, key: Option<&str>, body: &Value) -> Reply {
    let mut req = agent().post(url);
    if let Some(k) = key {
        req = req.header("X-API-Key", k);
    }
    reply(req.send_json(body))
}

/// DELETE with an optional key.
pub fn delete(url: &str, key: Option<&str>) -> Reply {
    let mut req = agent().delete(url);
    if let Some(k) = key {
        req = req.header("X-API-Key", k);
    }
    reply(req.call())
}

/// The venv with the official MCP client and schemathesis (`CELERIAC_API_VENV`, default
/// `~/.cache/celeriac/venv-api`, made by `scripts/test.sh`); `None` (a loud failure under CI) when missing.
pub fn api_venv() -> Option<std::path::PathBuf> {
    let venv = std::env::var("CELERIAC_API_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/celeriac/venv-api")
        });
    let ok = venv.join("bin/python").exists() && venv.join("bin/schemathesis").exists();
    testkit::require(
        "the API tools venv (mcp, schemathesis; scripts/test.sh makes it)",
        ok,
    )
    .then_some(venv)
}

/// Load every sample into the (migrated or empty) database at `database_url` with the real `cowrie-loader`.
pub fn load_samples(database_url: &str) {
    for (sensor, files) in SAMPLES {
        let out = Command::new(testkit::bin("cowrie-loader"))
            .args([
                "bulk",
                "--sensor",
                sensor,
                "--no-progress",
                "--database-url",
                database_url,
            ])
            .args(files.iter().map(|f| sample_path(f)))
            .output()
            .expect("run cowrie-loader");
        assert!(
            out.status.success(),
            "loader failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The `psql` client, or `None` (a loud failure under CI) when it is missing.
pub fn psql_or_skip() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("psql"))
        .find(|p| p.exists());
    if testkit::require("the psql client", found.is_some()) {
        found
    } else {
        None
    }
}

/// Run one SQL statement with `psql` against `database_url`; its unaligned output.
pub fn psql(psql: &std::path::Path, database_url: &str, sql: &str) -> String {
    let out = Command::new(psql)
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            database_url,
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// GET with `Authorization: Bearer <key>`.
pub fn get_bearer(url: &str, key: &str) -> Reply {
    reply(
        agent()
            .get(url)
            .header("Authorization", format!("Bearer {key}"))
            .call(),
    )
}

/// The value of one sample in a Prometheus text exposition (`name` with its labels exactly as printed, e.g.
/// `celeriac_api_rate_limit_rejections_total{class="statistics"}`); `None` when it is absent.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Api {
    /// `/metrics` as text.
    pub fn metrics(&self) -> String {
        match get(&self.url("/metrics"), None) {
            (200, Value::String(s)) => s,
            (status, body) => panic!("/metrics answered {status}: {body}"),
        }
    }

    /// Wait until `/readyz` reports Redis connected (job submissions need it).
    pub fn wait_for_redis(&self) {
        let ok = testkit::wait_until(Duration::from_secs(15), || {
            get(&self.url("/readyz"), None).1["redis"] == "ok"
        });
        assert!(ok, "the API did not reach Redis:\n{}", self.child.output());
    }
}
