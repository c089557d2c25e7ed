//! The `celeriac-coordinator` binary: `check-config` reports line and column, and a running coordinator reloads
//! its config on SIGHUP and on file change, keeps the old one when the new one is bad, and stops on SIGTERM.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_celeriac-coordinator");

#[test]
fn check_config_reports_line_and_column() {
    let cfg = TempConfig::new("workers:\n  - name: a\n    queus: [x]\n");
    let out = Command::new(BIN)
        .args(["check-config"])
        .arg(&cfg.path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":3:5: workers[0]: unknown field `queus`"),
        "{err}"
    );

    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../worker-config.yaml");
    let out = Command::new(BIN)
        .args(["check-config", shipped])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("general, io_bound, ml_accelerated"));
}

#[test]
fn reloads_on_sighup_and_file_change_and_keeps_the_old_config_when_bad() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new("routing: { default_strategy: queue }\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(BIN);
    cmd.args(["-b", &db.url, "--config"])
        .arg(&cfg.path)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    let mut child = testkit::Child::spawn("coordinator", &mut cmd);
    child.wait_for_output("celeriac-coordinator listening", Duration::from_secs(30));

    // A bad file is noticed by the watcher and refused.
    cfg.write("routing: { default_strategy: fastest }\n");
    child.wait_for_output("reload refused", Duration::from_secs(10));
    assert!(
        child.output().contains("unknown variant `fastest`"),
        "{}",
        child.output()
    );

    // SIGHUP re-reads it (still bad, still refused); a good file is applied.
    child.signal("HUP");
    child.wait_for_output("SIGHUP: reloading worker-config", Duration::from_secs(10));
    cfg.write("routing: { default_strategy: priority }\n");
    child.signal("HUP");
    child.wait_for_output("worker-config reloaded", Duration::from_secs(10));

    child.signal("TERM");
    let status = child
        .wait_timeout(Duration::from_secs(15))
        .expect("stops on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", child.output());
}

#[test]
fn token_cli_and_worker_registration_cli() {
    let db = testkit::redis_db_or_skip!();
    let cfg = TempConfig::new("routing: { default_strategy: queue }\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(BIN);
    cmd.args(["-b", &db.url, "--config"])
        .arg(&cfg.path)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("NO_COLOR", "1");
    let child = testkit::Child::spawn("coordinator-tokens", &mut cmd);
    child.wait_for_output("celeriac-coordinator listening", Duration::from_secs(30));
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["-b", &db.url])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["token", "create", "--name", "mac", "--ttl-secs", "600"]);
    assert!(ok, "{err}");
    let issued: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = issued["token"].as_str().unwrap().to_string();
    let id = issued["id"].as_str().unwrap().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let register = [
        "register",
        "--url",
        &url,
        "--token",
        &token,
        "--node",
        "mac@studio",
        "-Q",
        "enrichment",
        "-c",
        "4",
        "--labels",
        "fast-disk",
    ];
    let (ok, out, err) = run(&register);
    assert!(ok, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["registered"]["node"], "mac@studio");
    assert!(
        answer["registered"]["capabilities"]["cpu_cores"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(
        answer["registered"]["capabilities"]["labels"][0],
        "fast-disk"
    );
    let (ok, out, _) = run(&["token", "list"]);
    assert!(
        ok && out.contains(&id) && out.contains("revoked=false"),
        "{out}"
    );
    let (ok, _, err) = run(&["token", "revoke", &id]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&register);
    assert!(!ok);
    assert!(err.contains("registration_token_revoked"), "{err}");
    drop(child);
}
