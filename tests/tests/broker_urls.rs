//! Broker URLs against real private Redis servers started by the test: a password, TLS (`rediss://` with a
//! test CA, also used by a Python Celery client) and Sentinel (`redis+sentinel://`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use testkit::{Child, python_or_skip, run_python, rust_worker};

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd).arg(arg).output().is_ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_server(name: &str, args: &[String]) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(args)
        .arg("--dir")
        .arg(std::env::temp_dir());
    let c = Child::spawn(name, &mut cmd);
    c.wait_for_output("eady to accept connections", Duration::from_secs(20));
    c
}

fn call(url: &str, args: &str) -> (bool, String, String) {
    let out = Command::new(testkit::bin("celeriac"))
        .args([
            "-b",
            url,
            "call",
            "celeriac.add",
            "-a",
            args,
            "--wait",
            "--timeout",
            "30",
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn password_in_the_url() {
    if !testkit::require("redis-server", have("redis-server", "--version")) {
        return;
    }
    let port = free_port();
    let _r = redis_server(
        "redis-auth",
        &[
            "--port".into(),
            port.to_string(),
            "--requirepass".into(),
            "s3cret".into(),
        ],
    );
    let url = format!("redis://:s3cret@127.0.0.1:{port}/0");
    let w = rust_worker(&url, "auth@%h", &[]);
    assert_eq!(call(&url, "[40, 2]").1, "42");
    assert!(
        !w.output().contains("s3cret"),
        "the password must not be logged"
    );

    // A wrong password is a clear, final error, not an endless retry.
    let out = Command::new(testkit::bin("celeriac-worker"))
        .args([
            "-b",
            &format!("redis://:wrong@127.0.0.1:{port}/0"),
            "-n",
            "bad@%h",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("wrongpass") || err.contains("auth") || err.contains("password"),
        "{err}"
    );
}

fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=celeriac-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[test]
fn tls_rediss_with_a_private_ca_python_and_rust() {
    if !testkit::require(
        "redis-server and openssl",
        have("redis-server", "--version") && have("openssl", "version"),
    ) {
        return;
    }
    let py = python_or_skip!();
    let dir = std::env::temp_dir().join(format!("celeriac-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let port = free_port();
    let d = |f: &str| dir.join(f).display().to_string();
    let _r = redis_server(
        "redis-tls",
        &[
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            d("server.crt"),
            "--tls-key-file".into(),
            d("server.key"),
            "--tls-ca-cert-file".into(),
            d("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
    );
    let url = format!(
        "rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={}",
        d("ca.crt")
    );
    let _w = rust_worker(&url, "tls@%h", &[]);
    assert_eq!(call(&url, "[1, 2]").1, "3");
    // Python Celery over the same TLS connection calls the Rust worker.
    let out = run_python(
        &py,
        &url,
        "from pytasks import app\nprint(app.send_task('celeriac.add', args=(20, 22)).get(timeout=30))",
        Duration::from_secs(60),
    );
    assert_eq!(out.trim().lines().last(), Some("42"));
    // Without the CA the certificate is refused.
    let (ok, _, err) = call(&format!("rediss://127.0.0.1:{port}/0"), "[1, 1]");
    assert!(!ok, "an unknown CA must be refused");
    assert!(
        err.to_lowercase().contains("certificate") || err.to_lowercase().contains("tls"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sentinel_finds_the_master() {
    if !testkit::require("redis-server", have("redis-server", "--version")) {
        return;
    }
    let master_port = free_port();
    let _m = redis_server("redis-master", &["--port".into(), master_port.to_string()]);
    let sentinel_port = free_port();
    let conf = std::env::temp_dir().join(format!("sentinel-{sentinel_port}.conf"));
    std::fs::write(
        &conf,
        format!("port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\nsentinel down-after-milliseconds mymaster 5000\n"),
    )
    .unwrap();
    let mut cmd = Command::new("redis-server");
    cmd.arg(&conf).arg("--sentinel");
    let s = Child::spawn("redis-sentinel", &mut cmd);
    s.wait_for_output("monitor master mymaster", Duration::from_secs(20));
    let url = format!("redis+sentinel://127.0.0.1:{sentinel_port}/mymaster/0");
    let _w = rust_worker(&url, "sentinel@%h", &[]);
    assert_eq!(call(&url, "[5, 6]").1, "11");
    // The task really went through the master the sentinel named.
    let direct = format!("redis://127.0.0.1:{master_port}/0");
    let out = Command::new("redis-cli")
        .args(["-u", &direct, "--scan", "--pattern", "celery-task-meta-*"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    let _ = std::fs::remove_file(&conf);
}

/// One plain HTTP/1.0 request to a local server: the status and the body.
fn http(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// Submit `celeriac.add` through a coordinator and wait for its result through the same coordinator: `Some(sum)`
/// when the job ran, `None` when submitting or reading failed.
fn coordinator_add(port: u16, key: &str, a: i64, b: i64) -> Option<i64> {
    let (status, body) = http(
        port,
        "POST",
        "/api/v1/jobs",
        &format!("X-Job-Key: {key}\r\n"),
        &format!(r#"{{"task": "celeriac.add", "args": [{a}, {b}], "queue": "celery"}}"#),
    );
    if status != 201 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let id = v["id"].as_str()?.to_string();
    let mut result = None;
    testkit::wait_until(Duration::from_secs(30), || {
        let (_, body) = http(port, "GET", &format!("/api/v1/jobs/{id}"), "", "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if v["state"] == "SUCCESS" {
            result = v["result"].as_i64();
        }
        v["ready"] == true
    });
    result
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Submit a botnet analysis of the last day (an empty window in the test's empty database: a clean, quick result)
/// through a `celeriac-api` and follow it through the same API until it is ready: `Ok(job id)` when it ended in
/// SUCCESS, `Err(what happened)` otherwise.
fn api_analysis(port: u16, key: &str) -> Result<String, String> {
    let auth = format!("X-API-Key: {key}\r\n");
    let (status, body) = http(
        port,
        "POST",
        "/api/v1/analyses",
        &auth,
        r#"{"kind": "botnet", "sensor": null, "time_window": "1d"}"#,
    );
    if status != 202 {
        return Err(format!("submission: {status} {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let id = v["id"].as_str().ok_or(body.clone())?.to_string();
    let mut last = serde_json::Value::Null;
    testkit::wait_until(Duration::from_secs(30), || {
        let (_, body) = http(port, "GET", &format!("/api/v1/jobs/{id}"), &auth, "");
        last = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        last["ready"] == true
    });
    if last["state"] == "SUCCESS" {
        Ok(id)
    } else {
        Err(format!("job {id}: {last}"))
    }
}

/// The API's `/readyz`: its status and the body.
fn api_ready(port: u16) -> (u16, serde_json::Value) {
    let (status, body) = http(port, "GET", "/readyz", "", "");
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// Sentinel failover: a private master, a replica and three sentinels started by the test. The master is killed,
/// the sentinels promote the replica, and the running worker, coordinator and API on `redis+sentinel://` follow it
/// (they ask the sentinels every second): a task sent after the failover runs, and its result is on the new
/// master; a job submitted through the coordinator after the failover runs and the coordinator reads its result,
/// and the coordinator still holds (or retook) its leader lease, now on the new master; an analysis submitted
/// through the API after the failover is recorded and published on the new master, runs on the worker, the API
/// reports it finished, and the API's `/readyz` reports Redis ok.
#[test]
fn a_running_worker_follows_a_sentinel_failover() {
    if !testkit::require("redis-server", have("redis-server", "--version")) {
        return;
    }
    let master_port = free_port();
    let replica_port = free_port();
    let mut master = redis_server("redis-master", &["--port".into(), master_port.to_string()]);
    let _replica = redis_server(
        "redis-replica",
        &[
            "--port".into(),
            replica_port.to_string(),
            "--replicaof".into(),
            "127.0.0.1".into(),
            master_port.to_string(),
        ],
    );
    assert!(
        testkit::wait_until(Duration::from_secs(20), || redis_cli(
            replica_port,
            &["info", "replication"]
        )
        .contains("master_link_status:up")),
        "the replica never synchronised"
    );
    let mut sentinels = Vec::new();
    let mut confs = Vec::new();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    for port in &ports {
        let conf = std::env::temp_dir().join(format!("sentinel-failover-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor failmaster 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds failmaster 1000\nsentinel failover-timeout failmaster 5000\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf).arg("--sentinel");
        let s = Child::spawn(&format!("redis-sentinel-{port}"), &mut cmd);
        s.wait_for_output("monitor master failmaster", Duration::from_secs(20));
        sentinels.push(s);
        confs.push(conf);
    }
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let url = format!("redis+sentinel://{}/failmaster/0", hosts.join(","));
    // PostgreSQL for the API (its keys, migrations) and the analysis the worker runs for it: an empty database.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(store::test_support::TestDb::create());
    if !testkit::require("PostgreSQL at 127.0.0.1:5432", db.is_some()) {
        return;
    }
    let db = db.unwrap();
    let w = rust_worker(&url, "failover@%h", &["--database-url", &db.url]);
    assert_eq!(call(&url, "[1, 2]").1, "3");
    // A coordinator on the same Sentinel URL (its own config: the default queue only).
    let coord_port = free_port();
    let coord_conf = std::env::temp_dir().join(format!("sentinel-coordinator-{coord_port}.yaml"));
    std::fs::write(&coord_conf, "routing: { default_strategy: queue }\n").unwrap();
    let mut cmd = Command::new(testkit::bin("celeriac-coordinator"));
    cmd.args(["-b", &url, "--config"])
        .arg(&coord_conf)
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{coord_port}"),
            "--inspect-interval",
            "0.5",
        ])
        .env("CELERIAC_JOB_KEY", "sentinel-job-key")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    let coord = Child::spawn("coordinator-sentinel", &mut cmd);
    coord.wait_for_output("gained coordinator leadership", Duration::from_secs(30));
    assert_eq!(
        coordinator_add(coord_port, "sentinel-job-key", 2, 3),
        Some(5),
        "{}",
        coord.output()
    );
    // The API on the same Sentinel URL, its result backend the same servers named by another Sentinel URL (the
    // sentinels in the other order, so it is a connection of its own that has to follow too), and the
    // coordinator's routing (analyses go to the default queue, which the worker consumes).
    let api_port = free_port();
    let backend = format!(
        "redis+sentinel://{}/failmaster/0",
        hosts.iter().rev().cloned().collect::<Vec<_>>().join(",")
    );
    let mut cmd = Command::new(testkit::bin("celeriac-api"));
    cmd.args([
        "--database-url",
        &db.url,
        "-b",
        &url,
        "--result-backend",
        &backend,
    ])
    .arg("--config")
    .arg(&coord_conf)
    .args([
        "serve",
        "--bind",
        &format!("127.0.0.1:{api_port}"),
        "--http-workers",
        "2",
        "--analyses-rate-limit",
        "1000/minute",
        "--answer-cache-secs",
        "0",
    ])
    .env_remove("DATABASE_READ_URL")
    .env("NO_COLOR", "1")
    .env("RUST_LOG", "info");
    let api = Child::spawn("api-sentinel", &mut cmd);
    assert!(
        testkit::wait_until(Duration::from_secs(30), || api_ready(api_port).1["redis"]
            == "ok"),
        "the API never reached Redis through the sentinels: {:?}\n{}",
        api_ready(api_port),
        api.output()
    );
    let out = Command::new(testkit::bin("celeriac-api"))
        .args([
            "--database-url",
            &db.url,
            "key",
            "create",
            "--name",
            "sentinel",
        ])
        .args(["--scopes", "statistics:read,jobs:write", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let api_key = key["key"].as_str().unwrap().to_string();
    // Before the failover the API's analyses run (its cluster watch may not have seen the worker yet: retried).
    let mut analysis = Err(String::new());
    testkit::wait_until(Duration::from_secs(60), || {
        analysis = api_analysis(api_port, &api_key);
        analysis.is_ok()
    });
    assert!(analysis.is_ok(), "{analysis:?}\n{}", api.output());

    master.signal("KILL");
    let _ = master.wait_timeout(Duration::from_secs(5));
    assert!(
        testkit::wait_until(Duration::from_secs(30), || redis_cli(
            ports[0],
            &["sentinel", "get-master-addr-by-name", "failmaster"]
        )
        .contains(&replica_port.to_string())),
        "the sentinels never promoted the replica"
    );
    // The CLI asks the sentinels afresh; the worker must have moved to the new master to run the task.
    let mut last = (false, String::new(), String::new());
    let followed = testkit::wait_until(Duration::from_secs(60), || {
        last = call(&url, "[20, 22]");
        last.1 == "42"
    });
    assert!(
        followed,
        "no result after the failover: {last:?}\n{}",
        w.output()
    );
    assert!(
        w.output().contains("Redis master changed"),
        "{}",
        w.output()
    );
    let on_new = redis_cli(replica_port, &["--scan", "--pattern", "celery-task-meta-*"]);
    assert!(!on_new.trim().is_empty(), "no result on the new master");

    // The coordinator followed too: a job submitted through it runs, its result is read back through it, and
    // its /readyz answers (it pings Redis).
    let mut sum = None;
    let went_on = testkit::wait_until(Duration::from_secs(60), || {
        sum = coordinator_add(coord_port, "sentinel-job-key", 40, 2);
        sum == Some(42)
    });
    assert!(
        went_on,
        "the coordinator did not go on after the failover: {sum:?}\n{}",
        coord.output()
    );
    assert_eq!(http(coord_port, "GET", "/readyz", "", "").0, 200);
    assert!(
        coord.output().contains("Redis master changed"),
        "{}",
        coord.output()
    );
    // Its leader lease is on the new master now (renewed there, or taken again with a new term).
    assert!(
        testkit::wait_until(Duration::from_secs(10), || !redis_cli(
            replica_port,
            &["get", "celeriac:coordinator:leader"]
        )
        .trim()
        .is_empty()),
        "no leader lease on the new master"
    );

    // The API followed too: an analysis submitted through it after the failover is recorded and published on the
    // new master, runs on the worker (its result is on the new master), and the API reports it finished; its
    // /readyz answers and reports Redis ok.
    let mut analysis = Err(String::new());
    let went_on = testkit::wait_until(Duration::from_secs(60), || {
        analysis = api_analysis(api_port, &api_key);
        analysis.is_ok()
    });
    assert!(
        went_on,
        "the API did not go on after the failover: {analysis:?}\n{}",
        api.output()
    );
    let id = analysis.unwrap();
    for key in [
        format!("celeriac:job:{id}"),
        format!("celery-task-meta-{id}"),
    ] {
        assert_eq!(
            redis_cli(replica_port, &["exists", &key]).trim(),
            "1",
            "{key} is not on the new master"
        );
    }
    let (status, ready) = api_ready(api_port);
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["redis"], "ok", "{ready}\n{}", api.output());
    assert!(
        api.output().contains("Redis master changed"),
        "{}",
        api.output()
    );
    drop(api);
    drop(w);
    rt.block_on(db.drop_db());
    let _ = std::fs::remove_file(&coord_conf);
    for c in confs {
        let _ = std::fs::remove_file(c);
    }
}
