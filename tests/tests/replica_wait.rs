//! `CELERIAC_REDIS_WAIT_REPLICAS` end to end, on a private Redis master and replica started by the test: the CLI's
//! publish and the worker's result write wait for the replica. With the replica stopped (SIGSTOP), a publish is
//! refused with a clear error, and an `--acks-late` task whose result no replica confirmed is left unacknowledged
//! instead of acknowledged; once the replica is back, the message is delivered again after the visibility timeout,
//! its result is confirmed, and it is acknowledged.

use std::process::Command;
use std::time::Duration;
use testkit::Child;

const ENV_REPLICAS: &str = "CELERIAC_REDIS_WAIT_REPLICAS";
const ENV_TIMEOUT: &str = "CELERIAC_REDIS_WAIT_TIMEOUT_MS";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_server(name: &str, port: u16, extra: &[&str]) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--port", &port.to_string()])
        .args(extra)
        .arg("--dir")
        .arg(std::env::temp_dir());
    let c = Child::spawn(name, &mut cmd);
    c.wait_for_output("eady to accept connections", Duration::from_secs(20));
    c
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `celeriac call celeriac.add`, with or without waiting for the replica: (exit ok, stdout, stderr).
fn call(url: &str, args: &str, wait_replicas: bool, wait_result: bool) -> (bool, String, String) {
    let mut cmd = Command::new(testkit::bin("celeriac"));
    cmd.args(["-b", url, "call", "celeriac.add", "-a", args]);
    if wait_result {
        cmd.args(["--wait", "--timeout", "30"]);
    }
    if wait_replicas {
        cmd.env(ENV_REPLICAS, "1").env(ENV_TIMEOUT, "300");
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_result_no_replica_confirmed_is_not_acknowledged() {
    let have = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok();
    if !testkit::require("redis-server", have) {
        return;
    }
    let master_port = free_port();
    let replica_port = free_port();
    let _master = redis_server("rw-master", master_port, &[]);
    let replica = redis_server(
        "rw-replica",
        replica_port,
        &["--replicaof", "127.0.0.1", &master_port.to_string()],
    );
    assert!(
        testkit::wait_until(Duration::from_secs(20), || redis_cli(
            replica_port,
            &["info", "replication"]
        )
        .contains("master_link_status:up")),
        "the replica never synchronised"
    );
    let url = format!("redis://127.0.0.1:{master_port}/0");
    let mut cmd = Command::new(testkit::bin("celeriac-worker"));
    cmd.args(["-b", &url, "-n", "replicawait@%h", "--loglevel", "info"])
        .args(["--acks-late", "--visibility-timeout", "8"])
        .env(ENV_REPLICAS, "1")
        .env(ENV_TIMEOUT, "300")
        .env("NO_COLOR", "1");
    let worker = Child::spawn("rust-worker-replicawait", &mut cmd);
    worker.wait_for_output("celeriac-worker ready", Duration::from_secs(30));

    // Replica running: publish and result confirmed, the message acknowledged.
    let (ok, out, err) = call(&url, "[1, 2]", true, true);
    assert!(ok && out == "3", "{out} {err}\n{}", worker.output());
    assert!(
        testkit::wait_until(Duration::from_secs(10), || redis_cli(
            master_port,
            &["zcard", "unacked"]
        ) == "0"),
        "{}",
        worker.output()
    );

    replica.signal("STOP");
    // The CLI refuses to report a publish no replica confirmed as sent.
    // (The master took it, so the worker runs it too: a second unconfirmed task.)
    let (ok, _, err) = call(&url, "[5, 5]", true, false);
    assert!(!ok, "a publish no replica confirmed was reported as sent");
    assert!(err.contains("confirmed by 0 of 1 replicas"), "{err}");

    // A task published without waiting runs; its result is on the master, unconfirmed, so the message is kept.
    let (ok, id, err) = call(&url, "[20, 22]", false, false);
    assert!(ok, "{err}");
    let key = format!("celery-task-meta-{id}");
    assert!(
        testkit::wait_until(Duration::from_secs(20), || redis_cli(
            master_port,
            &["get", &key]
        )
        .contains("SUCCESS")),
        "{}",
        worker.output()
    );
    assert!(
        testkit::wait_until(Duration::from_secs(10), || worker
            .output()
            .matches("left unacknowledged")
            .count()
            == 2),
        "{}",
        worker.output()
    );
    assert!(
        worker.output().contains("confirmed by 0 of 1 replicas"),
        "{}",
        worker.output()
    );
    let unacked = redis_cli(master_port, &["hkeys", "unacked"]);
    assert_eq!(
        unacked.lines().count(),
        2,
        "the unconfirmed tasks' messages must stay unacked: {unacked:?}\n{}",
        worker.output()
    );

    // Replica back: the message is delivered again after the visibility timeout, its result (already SUCCESS,
    // so not written twice) is now confirmed, and the message is acknowledged.
    replica.signal("CONT");
    assert!(
        testkit::wait_until(Duration::from_secs(60), || redis_cli(
            master_port,
            &["zcard", "unacked"]
        ) == "0"),
        "the kept message was never acknowledged: {}",
        worker.output()
    );
    assert!(redis_cli(replica_port, &["get", &key]).contains("\"result\": 42"));
    // Runs: the first task once, the two unconfirmed ones at least twice each.
    let out = Command::new(testkit::bin("celeriac"))
        .args(["-b", &url, "--json", "inspect", "stats"])
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    let runs = stats
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|s| s["total"]["celeriac.add"].as_u64())
        .unwrap_or(0);
    assert!(runs >= 5, "the kept messages did not run again: {stats}");
}
