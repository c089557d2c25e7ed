//! `scripts/mac-worker.sh` on Linux against a real Redis database: `start` joins the cluster (the `celeriac` CLI's
//! `inspect ping` finds the node, a task sent to its queue runs), `status` says running (0) and, after `stop`, not
//! running (3), `logs` shows the worker's own log, and `stop` is a warm shutdown (a sleep task running at the time
//! completes and its result is stored, and the process is gone); `start` without a broker URL is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use testkit::{redis_db_or_skip, wait_until};

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A temporary XDG state and config home; the worker the script started there is killed at the end if still running.
struct Home(PathBuf);

impl Home {
    fn new() -> Home {
        let p =
            std::env::temp_dir().join(format!("mac-worker-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(p.join("config/celeriac")).unwrap();
        std::fs::create_dir_all(p.join("state")).unwrap();
        Home(p)
    }

    fn pidfile(&self) -> PathBuf {
        self.0.join("state/celeriac/mac-worker.pid")
    }

    fn logfile(&self) -> PathBuf {
        self.0.join("state/celeriac/mac-worker.log")
    }

    fn recorded_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pidfile())
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Run the script with this home, the built worker, and no broker settings from the caller's environment.
    fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(testkit::repo_root().join("scripts/mac-worker.sh"))
            .args(args)
            .env("XDG_STATE_HOME", self.0.join("state"))
            .env("XDG_CONFIG_HOME", self.0.join("config"))
            .env("CELERIAC_WORKER_BIN", testkit::bin("celeriac-worker"))
            .env_remove("CELERY_BROKER_URL")
            .env_remove("CELERY_RESULT_BACKEND")
            .env_remove("CELERIAC_QUEUES")
            .env_remove("CELERIAC_NODENAME")
            .output()
            .expect("running mac-worker.sh")
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if let Some(pid) = self.recorded_pid()
            && alive(pid)
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.logfile())
        {
            eprintln!("---- {} ----\n{log}", self.logfile().display());
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The process exists and is not a zombie (an orphaned worker may wait to be reaped).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn celeriac(broker: &str, args: &[&str]) -> Output {
    Command::new(testkit::bin("celeriac"))
        .arg("-b")
        .arg(broker)
        .args(args)
        .output()
        .expect("running celeriac")
}

fn meta(db: &testkit::RedisDb, id: &str) -> Option<serde_json::Value> {
    let raw: Option<String> = redis::cmd("GET")
        .arg(format!("celery-task-meta-{id}"))
        .query(&mut db.conn())
        .unwrap();
    raw.map(|r| serde_json::from_str(&r).unwrap())
}

fn write_env(home: &Path, lines: &[String]) {
    std::fs::write(
        home.join("config/celeriac/worker.env"),
        lines.join("\n") + "\n",
    )
    .unwrap();
}

#[test]
fn start_status_logs_and_warm_stop() {
    let redis = redis_db_or_skip!();
    let home = Home::new();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let queue = format!("mw_{}", &suffix[..8]);
    let host = Command::new("hostname").output().unwrap();
    let host = String::from_utf8_lossy(&host.stdout).trim().to_string();
    let node = format!("mw{}@{host}", &suffix[..8]);
    // Settings come from the env file, as on a workstation (%h expanded by the worker).
    write_env(
        &home.0,
        &[
            format!("CELERY_BROKER_URL={}", redis.url),
            format!("CELERIAC_QUEUES={queue}"),
            format!("CELERIAC_NODENAME=mw{}@%h", &suffix[..8]),
            "CELERIAC_CONCURRENCY=2".to_string(),
        ],
    );

    let s = home.script(&["status"]);
    assert_eq!(
        s.status.code(),
        Some(3),
        "status before start: {}",
        text(&s)
    );

    let s = home.script(&["start"]);
    assert!(s.status.success(), "start: {}", text(&s));
    let pid = home.recorded_pid().expect("start records a pid");
    assert!(alive(pid), "the recorded pid {pid} is not running");

    let s = home.script(&["status"]);
    assert_eq!(s.status.code(), Some(0), "status: {}", text(&s));
    assert!(
        String::from_utf8_lossy(&s.stdout).contains(&format!("running (pid {pid})")),
        "{}",
        text(&s)
    );

    // A second start does not start a second worker.
    let s = home.script(&["start"]);
    assert!(s.status.success(), "second start: {}", text(&s));
    assert!(
        String::from_utf8_lossy(&s.stdout).contains("already running"),
        "{}",
        text(&s)
    );
    assert_eq!(home.recorded_pid(), Some(pid));

    // It joined the cluster: inspect ping finds the node by name.
    let mut last = String::new();
    let found = wait_until(Duration::from_secs(30), || {
        let o = celeriac(&redis.url, &["inspect", "ping", "-d", &node]);
        last = text(&o);
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&node)
    });
    assert!(found, "inspect ping did not find {node}: {last}");

    // A task sent to its queue runs there.
    let o = celeriac(
        &redis.url,
        &[
            "call",
            "celeriac.add",
            "-a",
            "[2, 3]",
            "-Q",
            &queue,
            "--wait",
            "--timeout",
            "60",
        ],
    );
    assert!(o.status.success(), "call add: {}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "5",
        "{}",
        text(&o)
    );

    // Warm shutdown: a sleep task running when `stop` is called completes and its result is stored.
    let o = celeriac(
        &redis.url,
        &["call", "celeriac.sleep", "-a", "[5]", "-Q", &queue],
    );
    assert!(o.status.success(), "call sleep: {}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let running = wait_until(Duration::from_secs(30), || {
        let o = celeriac(&redis.url, &["inspect", "active", "-d", &node]);
        String::from_utf8_lossy(&o.stdout).contains(&id)
    });
    assert!(running, "task {id} never showed up in inspect active");
    assert!(
        meta(&redis, &id).is_none(),
        "the sleep finished before stop was called"
    );

    let s = home.script(&["stop"]);
    assert!(s.status.success(), "stop: {}", text(&s));
    assert!(
        String::from_utf8_lossy(&s.stdout).contains("stopped"),
        "{}",
        text(&s)
    );
    assert!(
        !String::from_utf8_lossy(&s.stdout).contains("SIGQUIT"),
        "stop had to fall back to a cold shutdown: {}",
        text(&s)
    );
    let m =
        meta(&redis, &id).expect("the running task's result was stored before the worker exited");
    assert_eq!(m["status"], "SUCCESS", "{m}");
    assert_eq!(m["result"].as_f64(), Some(5.0), "{m}");
    assert!(!alive(pid), "pid {pid} still runs after stop");
    assert!(!home.pidfile().exists(), "stop left the pidfile");

    let s = home.script(&["status"]);
    assert_eq!(s.status.code(), Some(3), "status after stop: {}", text(&s));
    assert!(
        String::from_utf8_lossy(&s.stdout).contains("not running"),
        "{}",
        text(&s)
    );

    // The log is the worker's own: ready, the shutdown request, stopped.
    let s = home.script(&["logs"]);
    assert!(s.status.success(), "logs: {}", text(&s));
    let log = String::from_utf8_lossy(&s.stdout);
    for needle in [
        "celeriac-worker ready",
        "shutdown requested",
        "celeriac-worker stopped",
        node.as_str(),
    ] {
        assert!(log.contains(needle), "logs lacks {needle:?}:\n{log}");
    }

    // Stopping again is harmless.
    let s = home.script(&["stop"]);
    assert!(s.status.success(), "second stop: {}", text(&s));
    assert!(
        String::from_utf8_lossy(&s.stdout).contains("not running"),
        "{}",
        text(&s)
    );
}

#[test]
fn start_without_a_broker_url_is_refused() {
    let home = Home::new();
    write_env(&home.0, &["CELERIAC_QUEUES=celery".to_string()]);
    let s = home.script(&["start"]);
    assert_eq!(s.status.code(), Some(1), "{}", text(&s));
    assert!(
        String::from_utf8_lossy(&s.stderr).contains("CELERY_BROKER_URL is not set"),
        "{}",
        text(&s)
    );
    assert!(
        home.recorded_pid().is_none(),
        "a pid was recorded without a worker"
    );
    let s = home.script(&["logs"]);
    assert_eq!(s.status.code(), Some(1), "logs without a log: {}", text(&s));
    let s = home.script(&["frobnicate"]);
    assert_eq!(s.status.code(), Some(2), "{}", text(&s));
}
