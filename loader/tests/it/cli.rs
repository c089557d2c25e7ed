//! The binary's contract: dry runs need no database, an unreachable database gives
//! exit code 3 after `--max-wait`, and the status JSON reaches stdout and `--status-file`.

use std::process::Command;

use store::test_support::TestDb;

use crate::common::*;

fn loader() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cowrie-loader"))
}

fn status_of(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().expect("a status line")).expect("status is JSON")
}

#[test]
fn dry_run_reads_everything_and_needs_no_database() {
    let out = loader()
        .args(["bulk", "--sensor", "d", "--dry-run"])
        .arg(fixtures().join("lucasfaudman-honeypot-ai"))
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = status_of(&out);
    let expected: usize = [
        "cowrie.2023-11-30.json",
        "cowrie.2023-12-13.json",
        "cowrie.2024-01-10.json",
        "cowrie.2024-01-26.json",
        "cowrie.2024-01-28.json",
    ]
    .iter()
    .map(|f| read_events(&fixtures().join("lucasfaudman-honeypot-ai").join(f)).len())
    .sum();
    assert_eq!(s["events_read"], expected);
    assert_eq!(s["events_inserted"], 0);
    assert_eq!(s["dry_run"], true);
}

#[test]
fn unreachable_database_exits_3_after_max_wait() {
    let dir = TempDir::new();
    gen_log(&dir.path().join("cowrie.json"), 50, 61);
    let out = loader()
        .args(["delta", "--sensor", "u", "--max-wait", "1", "--logdir"])
        .arg(dir.path())
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_line_and_file_report_the_run() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = TempDir::new();
    let n = gen_log(&dir.path().join("cowrie.json"), 300, 62);
    let status_file = dir.path().join("status.json");
    let out = loader()
        .args(["delta", "--sensor", "st", "--logdir"])
        .arg(dir.path())
        .arg("--status-file")
        .arg(&status_file)
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = status_of(&out);
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap();
    for s in [&line, &file] {
        assert_eq!(s["events_inserted"], n);
        assert_eq!(s["files_processed"], 1);
        assert_eq!(s["exit_code"], 0);
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let out = loader()
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["migrations_applied"], serde_json::json!([]));
    db.drop_db().await;
}
