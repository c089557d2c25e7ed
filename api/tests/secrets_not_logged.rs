//! No secret in any log: a whole cluster runs with distinctive test secrets everywhere a secret goes, with every
//! process logging at debug level (`RUST_LOG=debug`, so the libraries' own debug lines too), and then every line any
//! of them wrote (stdout and stderr) is searched for every secret.
//!
//! The secrets: the Redis password (a private `redis-server --requirepass`, in every broker and result-backend URL),
//! the PostgreSQL passwords in the URLs of the owner and of the least-privilege roles (`store::roles`: the loader, the
//! worker and the API each log in as their own role, so this also runs the real components under those roles), the
//! coordinator's admin key and job key, a registration token, and an API key. The flow: the loader ingests a sample,
//! a worker runs tasks, the coordinator takes a registration and a job, the API serves statistics and runs an
//! analysis, the CLI calls a task and inspects; wrong keys are presented, and the CLI and the loader are pointed at
//! unreachable servers, so error paths print their URLs too.
//!
//! The only places a secret may appear are the ones made to show it once: the stdout of `celeriac-api key create`
//! and the coordinator's HTTP answer to `POST /api/v1/admin/tokens`; neither is a log, and they are not searched.

mod common;

use common::*;
use serde_json::{Value, json};
use std::process::{Command, Output};
use std::time::Duration;
use testkit::Child;

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd).arg(arg).output().is_ok()
}

/// A distinctive secret: nothing else in a log could contain it by chance.
fn secret(what: &str) -> String {
    format!(
        "{what}Zq{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// `db_url` (`postgres://user@host:port/db`) with `user:password` in front of the host.
fn pg_url(db_url: &str, user: &str, password: &str) -> String {
    let (_, rest) = db_url.split_once("://").expect("a URL");
    let host_and_db = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    format!("postgres://{user}:{password}@{host_and_db}")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.env("RUST_LOG", "debug").output().expect("run a binary")
}

/// POST JSON with extra headers (the coordinator's keys), returning status and body.
fn post_with(url: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let mut req = ureq::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(body)
    {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_json().unwrap_or(Value::Null),
        ),
        Err(e) => panic!("POST {url}: {e}"),
    }
}

#[test]
fn no_secret_appears_in_any_log_of_a_full_run() {
    if !testkit::require("redis-server", have("redis-server", "--version")) {
        return;
    }
    let rt = runtime();
    let db = rt.block_on(store::test_support::TestDb::create());
    if !testkit::require("PostgreSQL at 127.0.0.1:5432", db.is_some()) {
        return;
    }
    let db = db.unwrap();

    let redis_pw = secret("redisPw");
    let owner_pw = secret("ownerPw");
    let loader_pw = secret("loaderPw");
    let worker_pw = secret("workerPw");
    let api_pw = secret("apiPw");
    let admin_key = secret("adminKey");
    let job_key = secret("jobKey");
    let mut secrets = vec![
        ("the Redis password", redis_pw.clone()),
        ("the owner's PostgreSQL password", owner_pw.clone()),
        ("the loader's PostgreSQL password", loader_pw.clone()),
        ("the worker's PostgreSQL password", worker_pw.clone()),
        ("the API's PostgreSQL password", api_pw.clone()),
        ("the admin key", admin_key.clone()),
        ("the job key", job_key.clone()),
    ];
    let mut logs: Vec<(String, String)> = Vec::new();

    // The least-privilege roles (this machine's PostgreSQL trusts local connections, so the passwords in the URLs
    // are carried everywhere but not checked).
    rt.block_on(async {
        let mut owner = db.connect().await;
        store::roles::apply(&mut owner).await.expect("roles");
    });
    let owner_url = pg_url(&db.url, "postgres", &owner_pw);
    let loader_url = pg_url(&db.url, store::roles::LOADER_ROLE, &loader_pw);
    let worker_url = pg_url(&db.url, store::roles::WORKER_ROLE, &worker_pw);
    let api_url = pg_url(&db.url, store::roles::API_ROLE, &api_pw);

    // A private Redis with a password.
    let port = free_port();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--port", &port.to_string(), "--requirepass", &redis_pw])
        .arg("--dir")
        .arg(std::env::temp_dir());
    let redis = Child::spawn("redis-secrets", &mut cmd);
    redis.wait_for_output("eady to accept connections", Duration::from_secs(20));
    let broker = format!("redis://:{redis_pw}@127.0.0.1:{port}/0");

    // The loader, as its role: one sample, then an unreachable PostgreSQL (the error names the URL).
    let o = run(Command::new(testkit::bin("cowrie-loader"))
        .args([
            "bulk",
            "--sensor",
            "s1",
            "--no-progress",
            "--database-url",
            &loader_url,
        ])
        .arg(sample_path("kareiva-cowrie-logs/cowrie.json.2018-05-06")));
    assert!(o.status.success(), "loader as its role:\n{}", text(&o));
    logs.push(("cowrie-loader bulk".into(), text(&o)));
    let dead_pg = format!(
        "postgres://celeriac_loader:{loader_pw}@127.0.0.1:{}/nodb",
        free_port()
    );
    let o = run(Command::new(testkit::bin("cowrie-loader"))
        .args([
            "bulk",
            "--sensor",
            "s1",
            "--no-progress",
            "--max-wait",
            "1",
            "--database-url",
            &dead_pg,
        ])
        .arg(sample_path("kareiva-cowrie-logs/cowrie.json.2018-05-06")));
    assert!(
        !o.status.success(),
        "an unreachable database fails the load"
    );
    logs.push(("cowrie-loader bulk (PostgreSQL down)".into(), text(&o)));

    // A worker, as its role, consuming every queue the flow uses.
    let mut cmd = Command::new(testkit::bin("celeriac-worker"));
    cmd.args([
        "-b",
        &broker,
        "-n",
        "secrets@%h",
        "-Q",
        "celery,longtail",
        "-c",
        "2",
        "-E",
    ])
    .args(["--database-url", &worker_url, "-l", "debug"])
    .env("RUST_LOG", "debug")
    .env_remove("CELERY_RESULT_BACKEND");
    let worker = Child::spawn("celeriac-worker", &mut cmd);
    worker.wait_for_output("celeriac-worker ready", Duration::from_secs(30));

    // The coordinator with an admin key and a job key.
    let cport = free_port();
    let coordinator_url = format!("http://127.0.0.1:{cport}");
    let mut cmd = Command::new(testkit::bin("celeriac-coordinator"));
    cmd.args(["-b", &broker, "-l", "debug", "--config"])
        .arg(testkit::repo_root().join("worker-config.yaml"))
        .args(["serve", "--bind", &format!("127.0.0.1:{cport}")])
        .env("CELERIAC_ADMIN_KEY", &admin_key)
        .env("CELERIAC_JOB_KEY", &job_key)
        .env("RUST_LOG", "debug")
        .env_remove("CELERY_RESULT_BACKEND");
    let coordinator = Child::spawn("celeriac-coordinator", &mut cmd);
    coordinator.wait_for_output("celeriac-coordinator listening", Duration::from_secs(30));

    // A registration token (its secret is in this answer, shown once), used by `register`.
    let (s, v) = post_with(
        &format!("{coordinator_url}/api/v1/admin/tokens"),
        &[("Authorization", &format!("Bearer {admin_key}"))],
        &json!({"name": "secrets-test", "ttl_secs": 600}),
    );
    assert_eq!(s, 201, "{v}");
    let token = v["token"].as_str().expect("token").to_string();
    secrets.push(("a registration token", token.clone()));
    let o = run(Command::new(testkit::bin("celeriac-coordinator"))
        .args([
            "register",
            "--url",
            &coordinator_url,
            "--node",
            "secrets@somehost",
            "-Q",
            "celery",
        ])
        .env("CELERIAC_REGISTRATION_TOKEN", &token));
    assert!(o.status.success(), "register:\n{}", text(&o));
    logs.push(("celeriac-coordinator register".into(), text(&o)));
    // Wrong keys are refused without echoing them.
    let wrong = secret("wrongKey");
    secrets.push(("a wrong key someone presented", wrong.clone()));
    for (path, header, body) in [
        ("/api/v1/admin/tokens", "X-Admin-Key", json!({"name": "x"})),
        (
            "/api/v1/jobs",
            "X-Job-Key",
            json!({"task": "celeriac.ping"}),
        ),
    ] {
        let (s, v) = post_with(
            &format!("{coordinator_url}{path}"),
            &[(header, &wrong)],
            &body,
        );
        assert_eq!(s, 403, "{path}: {v}");
        assert!(!v.to_string().contains(&wrong), "{v}");
    }
    // A job with the job key, run by the worker.
    let (s, v) = post_with(
        &format!("{coordinator_url}/api/v1/jobs"),
        &[("X-Job-Key", &job_key)],
        &json!({"task": "celeriac.add", "args": [20, 22]}),
    );
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let done = testkit::wait_until(Duration::from_secs(60), || {
        get(&format!("{coordinator_url}/api/v1/jobs/{id}"), None).1["result"] == json!(42)
    });
    assert!(done, "the coordinator's job did not finish");

    // The API as its read-only role; its key made with the owner's URL (printed once, on stdout).
    let o = run(Command::new(testkit::bin("celeriac-api"))
        .args([
            "--database-url",
            &owner_url,
            "key",
            "create",
            "--name",
            "secrets",
        ])
        .args(["--scopes", "statistics:read,jobs:write", "--json"]));
    assert!(o.status.success(), "key create:\n{}", text(&o));
    let api_key = serde_json::from_slice::<Value>(&o.stdout).expect("key JSON")["key"]
        .as_str()
        .unwrap()
        .to_string();
    secrets.push(("an API key", api_key.clone()));
    logs.push((
        "celeriac-api key create (stderr)".into(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ));
    let api = Api::start_env(&api_url, &broker, &[], &[("RUST_LOG", "debug")]);
    assert_eq!(
        get(&api.url("/api/v1/statistics/sensors"), Some(&api_key)).0,
        200
    );
    assert_eq!(
        get(&api.url("/api/v1/statistics/sensors"), Some(&wrong)).0,
        401
    );
    let r = post(
        &api.url("/api/v1/analyses"),
        Some(&api_key),
        &json!({"kind": "longtail", "sensor": null,
                "time_window": {"start": "2018-01-01T00:00:00Z", "end": "2019-01-01T00:00:00Z"}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let job = r.body["id"].as_str().unwrap().to_string();
    let mut last = Value::Null;
    let finished = testkit::wait_until(Duration::from_secs(120), || {
        last = get(&api.url(&format!("/api/v1/jobs/{job}")), Some(&api_key)).1;
        last["state"] == "SUCCESS" || last["state"] == "FAILURE"
    });
    assert!(
        finished && last["state"] == "SUCCESS",
        "the analysis (worker as its role): {last}"
    );

    // The CLI: a call, an inspect, and an unreachable broker.
    let o = run(Command::new(testkit::bin("celeriac")).args([
        "-b",
        &broker,
        "call",
        "celeriac.add",
        "-a",
        "[1, 2]",
        "--wait",
        "--timeout",
        "30",
    ]));
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "3",
        "{}",
        text(&o)
    );
    logs.push(("celeriac call".into(), text(&o)));
    let o = run(Command::new(testkit::bin("celeriac")).args(["-b", &broker, "inspect", "ping"]));
    logs.push(("celeriac inspect ping".into(), text(&o)));
    let dead = format!("redis://:{redis_pw}@127.0.0.1:{}/0", free_port());
    let o = run(Command::new(testkit::bin("celeriac")).args([
        "-b",
        &dead,
        "call",
        "celeriac.ping",
        "--wait",
        "--timeout",
        "3",
    ]));
    assert!(!o.status.success(), "an unreachable broker fails the call");
    logs.push(("celeriac call (Redis down)".into(), text(&o)));

    // Warm shutdowns, so the shutdown paths log too.
    for c in [&worker, &coordinator, &api.child] {
        c.signal("TERM");
    }
    let mut children = vec![worker, coordinator, api.child];
    for c in &mut children {
        c.wait_timeout(Duration::from_secs(30));
        logs.push((c.name.clone(), c.output()));
    }
    drop(redis);

    let mut leaks = Vec::new();
    for (process, log) in &logs {
        assert!(
            !log.is_empty() || process.contains("stderr"),
            "{process} logged nothing"
        );
        for (what, s) in &secrets {
            if let Some(at) = log.find(s.as_str()) {
                let start = log[..at]
                    .char_indices()
                    .rev()
                    .nth(150)
                    .map_or(0, |(i, _)| i);
                let end = (at + s.len() + 150).min(log.len());
                let end = (end..=log.len())
                    .find(|&i| log.is_char_boundary(i))
                    .unwrap_or(log.len());
                leaks.push(format!(
                    "{process} logged {what}: ...{}...",
                    &log[start..end]
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets in logs:\n{}", leaks.join("\n\n"));
    // The search looked at real logs: debug lines of every long-running process are there.
    let total: usize = logs.iter().map(|(_, l)| l.len()).sum();
    assert!(total > 10_000, "only {total} bytes of logs");
    rt.block_on(db.drop_db());
}
