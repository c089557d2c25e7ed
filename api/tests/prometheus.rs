//! The monitoring files against a real Prometheus: Debian's `prometheus` server scrapes a real worker,
//! coordinator, API and loader started here, loads `deploy/prometheus/alerts.yml`, and every PromQL expression of
//! the Grafana dashboards (`deploy/grafana/dashboards/*.json`) and of the alert rules is asked of it.
//! A dashboard panel must return at least one series; an alert rule must evaluate without error and every metric it
//! names must exist (an alert on a healthy cluster rightly returns nothing).
//! So no panel or alert can refer to a metric that no process exports.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testkit::{Child, redis_db_or_skip};

/// Debian's Prometheus server (`apt install prometheus`, which scripts/check-manifests.sh does on a fresh machine).
fn prometheus_bin() -> Option<PathBuf> {
    let found = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    testkit::require(
        "the Prometheus server (Debian package prometheus)",
        found.is_some(),
    )
    .then(|| found.unwrap())
}

/// A URL query component, percent-encoded.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Ask the Prometheus HTTP API; returns its `data` on `status: success`, or the error text.
fn prom(base: &str, path_and_query: &str) -> Result<Value, String> {
    let (status, body) = get(&format!("{base}{path_and_query}"), None);
    if status == 200 && body["status"] == "success" {
        Ok(body["data"].clone())
    } else {
        Err(format!("HTTP {status}: {body}"))
    }
}

/// Instant query; the result vector (or an error).
fn query(base: &str, expr: &str) -> Result<Vec<Value>, String> {
    let data = prom(base, &format!("/api/v1/query?query={}", encode(expr)))?;
    match data["resultType"].as_str() {
        Some("vector") | Some("matrix") => {
            Ok(data["result"].as_array().cloned().unwrap_or_default())
        }
        // A scalar is one value: count it as a series.
        Some("scalar") => Ok(vec![data["result"].clone()]),
        other => Err(format!("unexpected result type {other:?}")),
    }
}

/// The metric names an expression refers to: every identifier starting with a prefix our processes export.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names: Vec<String> = expr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("celeriac_") || t.starts_with("process_") || *t == "up")
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Grafana's variables, as a query with every value selected would see them.
fn expand_grafana_vars(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$instance", ".*")
}

/// `(dashboard file, panel title, expr)` for every target of every dashboard.
fn dashboard_exprs(dir: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    for f in files {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let panels = d["panels"].as_array().expect("panels");
        assert!(!panels.is_empty(), "{name} has no panels");
        for p in panels {
            let targets = p["targets"].as_array().expect("targets");
            assert!(
                !targets.is_empty(),
                "{name}: panel {} has no query",
                p["title"]
            );
            for t in targets {
                out.push((
                    name.clone(),
                    p["title"].as_str().unwrap_or("").to_string(),
                    t["expr"].as_str().expect("expr").to_string(),
                ));
            }
        }
    }
    out
}

/// The coordinator's job key in this test (job submission needs one).
const COORDINATOR_JOB_KEY: &str = "prometheus-test-job-key";

#[test]
fn prometheus_scrapes_every_process_and_every_dashboard_and_alert_expression_has_data() {
    let redis = redis_db_or_skip!();
    let Some(prometheus) = prometheus_bin() else {
        return;
    };
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let root = testkit::repo_root();
    let dir = tempdir();

    // The processes, each with its metrics endpoint on a free port.
    let worker_port = free_port();
    let worker_metrics = worker_port.to_string();
    let _worker = testkit::rust_worker(
        &redis.url,
        "ml@%h",
        &[
            "-Q",
            "celery,longtail,snowshoe",
            "-c",
            "2",
            "-E",
            "--database-url",
            &db.url,
            "--metrics-port",
            &worker_metrics,
        ],
    );
    let coordinator_port = free_port();
    let mut cmd = Command::new(testkit::bin("celeriac-coordinator"));
    cmd.args(["-b", &redis.url, "--config"])
        .arg(root.join("worker-config.yaml"))
        .args(["serve", "--bind", &format!("127.0.0.1:{coordinator_port}")])
        .env("CELERIAC_JOB_KEY", COORDINATOR_JOB_KEY);
    let coordinator = Child::spawn("celeriac-coordinator", &mut cmd);
    coordinator.wait_for_output("celeriac-coordinator listening", Duration::from_secs(30));
    let api = Api::start(
        &db.url,
        &redis.url,
        &["--analyses-rate-limit", "1000/minute"],
    );
    let loader = Loader::start(&db.url, &dir);

    // Traffic, so that labelled series exist: API requests of several kinds, an analysis through the API (a job, a
    // routing decision, an analysis task on the worker), a job through the coordinator, plain tasks.
    let (key, _) = create_key(&db.url, "statistics:read,jobs:write", &[]);
    assert_eq!(get(&api.url("/healthz"), None).0, 200);
    assert_eq!(
        get(&api.url("/api/v1/statistics/sensors"), Some(&key)).0,
        200
    );
    assert_eq!(get(&api.url("/api/v1/statistics/sensors"), None).0, 401);
    let r = post(
        &api.url("/api/v1/analyses"),
        Some(&key),
        &json!({"kind": "longtail", "sensor": null, "time_window": {"start": "2018-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let job = r.body["id"].as_str().unwrap().to_string();
    let finished = testkit::wait_until(Duration::from_secs(120), || {
        let (_, j) = get(&api.url(&format!("/api/v1/jobs/{job}")), Some(&key));
        j["state"] == "SUCCESS" || j["state"] == "FAILURE"
    });
    assert!(finished, "the analysis did not finish");
    let status = ureq::post(&format!("http://127.0.0.1:{coordinator_port}/api/v1/jobs"))
        .header("Authorization", format!("Bearer {COORDINATOR_JOB_KEY}"))
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(json!({"task": "celeriac.add", "args": [2, 3]}))
        .map(|r| r.status().as_u16());
    assert!(matches!(status, Ok(201)), "{status:?}");

    // Prometheus: a config like deploy/prometheus/prometheus.yml (same job names, the same rule file), scraping every
    // second.
    let rules = root.join("deploy/prometheus/alerts.yml");
    let prom_port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n\
         \x20 - job_name: celeriac-worker\n    static_configs:\n      - targets: ['127.0.0.1:{worker_port}']\n\
         \x20 - job_name: celeriac-coordinator\n    static_configs:\n      - targets: ['127.0.0.1:{coordinator_port}']\n\
         \x20 - job_name: celeriac-api\n    static_configs:\n      - targets: ['127.0.0.1:{api_port}']\n\
         \x20 - job_name: cowrie-loader\n    static_configs:\n      - targets: ['127.0.0.1:{loader_port}']\n",
        rules = rules.display(),
        api_port = api.port,
        loader_port = loader.port,
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let mut cmd = Command::new(&prometheus);
    cmd.arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let _prometheus = Child::spawn("prometheus", &mut cmd);
    let base = format!("http://127.0.0.1:{prom_port}");

    // Every target up, and a few scrapes in (rates need two samples).
    let up = testkit::wait_until(Duration::from_secs(60), || {
        query(&base, "up == 1").map(|v| v.len()).unwrap_or(0) == 4
    });
    assert!(up, "not every target is up: {:?}", query(&base, "up"));
    std::thread::sleep(Duration::from_secs(5));

    let mut problems = Vec::new();
    for (file, title, expr) in dashboard_exprs(&root.join("deploy/grafana/dashboards")) {
        match query(&base, &expand_grafana_vars(&expr)) {
            Ok(v) if !v.is_empty() => {}
            Ok(_) => problems.push(format!("{file} / {title}: no series for {expr}")),
            Err(e) => problems.push(format!("{file} / {title}: {expr}: {e}")),
        }
    }

    // The rules as the server loaded them: all of alerts.yml, each evaluated without error.
    let loaded = testkit::wait_until(Duration::from_secs(20), || {
        prom(&base, "/api/v1/rules").is_ok_and(|d| {
            d["groups"].as_array().is_some_and(|g| {
                g.iter()
                    .flat_map(|g| g["rules"].as_array().unwrap().iter())
                    .all(|r| r["lastEvaluation"] != "0001-01-01T00:00:00Z")
            })
        })
    });
    assert!(loaded, "the rules were never evaluated");
    let data = prom(&base, "/api/v1/rules").unwrap();
    let rules: Vec<Value> = data["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect();
    let in_file = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    let alerts_in_file = in_file.matches("- alert:").count();
    assert_eq!(
        rules.len(),
        alerts_in_file,
        "the server loaded another number of rules than alerts.yml has"
    );
    for r in &rules {
        let name = r["name"].as_str().unwrap_or("");
        if r["health"] != "ok" {
            problems.push(format!(
                "alert {name}: health {} ({})",
                r["health"], r["lastError"]
            ));
        }
        let expr = r["query"].as_str().unwrap_or("");
        let names = metric_names(expr);
        if names.is_empty() {
            problems.push(format!("alert {name}: names no metric: {expr}"));
        }
        for m in names {
            match query(&base, &format!("count({{__name__=\"{m}\"}})")) {
                Ok(v) if !v.is_empty() => {}
                _ => problems.push(format!("alert {name}: no series of {m}")),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// A fresh directory under the system temp dir, removed with the process (good enough for one test).
fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("celeriac-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `cowrie-loader delta --all --every` over a sensors file of one sensor, serving its metrics.
struct Loader {
    _child: Child,
    port: u16,
}

impl Loader {
    fn start(database_url: &str, dir: &Path) -> Loader {
        let logdir = dir.join("logs-kareiva");
        std::fs::create_dir_all(&logdir).unwrap();
        std::fs::copy(
            sample_path("kareiva-cowrie-logs/cowrie.json.2018-05-06"),
            logdir.join("cowrie.json"),
        )
        .unwrap();
        let sensors = dir.join("sensors.yaml");
        std::fs::write(
            &sensors,
            format!(
                "sensors:\n  - name: kareiva-live\n    logdir: {}\n",
                logdir.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let mut cmd = Command::new(testkit::bin("cowrie-loader"));
        cmd.args([
            "--database-url",
            database_url,
            "delta",
            "--all",
            "--sensors",
        ])
        .arg(&sensors)
        .args([
            "--every",
            "1m",
            "--metrics-port",
            &port.to_string(),
            "--no-progress",
        ]);
        let child = Child::spawn("cowrie-loader", &mut cmd);
        let ok = testkit::wait_until(Duration::from_secs(30), || {
            get(&format!("http://127.0.0.1:{port}/metrics"), None).0 == 200
        });
        assert!(
            ok,
            "cowrie-loader did not serve /metrics:\n{}",
            child.output()
        );
        Loader {
            _child: child,
            port,
        }
    }
}
