//! Killing the loader in the middle of a large file, then running it again, leaves the
//! database equal to a single clean run.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use store::test_support::TestDb;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_in_the_middle_then_rerun_equals_one_clean_run() {
    let Some(crashed) = TestDb::create().await else {
        return;
    };
    let Some(clean) = TestDb::create().await else {
        return;
    };
    let dir = TempDir::new();
    let file = dir.path().join("cowrie.json.2024-01-10");
    let total = gen_log(&file, 20_000, 41);
    let bin = env!("CARGO_BIN_EXE_cowrie-loader");
    let run = |url: &str, pause: &str| {
        Command::new(bin)
            .args([
                "bulk",
                "--sensor",
                "k",
                "--batch-size",
                "500",
                "--pause-after-batch-ms",
                pause,
            ])
            .arg(&file)
            .env("DATABASE_URL", url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start loader")
    };

    let mut child = run(&crashed.url, "100");
    let mut c = connect(&crashed.url).await;
    let started = Instant::now();
    let at_kill = loop {
        let n = store::inspect::table_counts(&mut c)
            .await
            .unwrap()
            .raw_events;
        if n >= 1500 {
            child.kill().unwrap(); // SIGKILL: no chance to clean up
            child.wait().unwrap();
            break n;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "loader finished before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "loader made no progress"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let after_kill = store::inspect::table_counts(&mut c)
        .await
        .unwrap()
        .raw_events;
    assert!(
        (after_kill as u64) < total,
        "killed in the middle: {at_kill} / {after_kill} of {total}"
    );

    let status = run(&crashed.url, "0").wait().unwrap();
    assert!(status.success());
    let status = run(&clean.url, "0").wait().unwrap();
    assert!(status.success());

    let a = snapshot(&crashed.url).await;
    let b = snapshot(&clean.url).await;
    assert_eq!(a.counts.raw_events as u64, total);
    assert_eq!(a, b, "crashed+rerun database differs from a clean run");
    drop(c);
    crashed.drop_db().await;
    clean.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_loaders_on_the_same_file_at_once_equal_one_clean_run() {
    let Some(racy) = TestDb::create().await else {
        return;
    };
    let Some(clean) = TestDb::create().await else {
        return;
    };
    let dir = TempDir::new();
    let file = dir.path().join("cowrie.json");
    let total = gen_log(&file, 5_000, 42);
    let files = vec![file];
    let mut small = opts("bulk", "r");
    small.batch_size = 300;
    let (a, b) = tokio::join!(
        run_with(&racy.url, small.clone(), &files),
        run_with(&racy.url, small.clone(), &files)
    );
    // Between them every event was read at least once and stored exactly once.
    assert_eq!(a.events_inserted + b.events_inserted, total);
    run_with(&clean.url, small, &files).await;
    assert_eq!(snapshot(&racy.url).await, snapshot(&clean.url).await);
    racy.drop_db().await;
    clean.drop_db().await;
}
