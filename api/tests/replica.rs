//! The read replica, for real: a private PostgreSQL primary (`initdb` in a temp dir, the samples loaded by the real
//! `cowrie-loader`), a streaming replica made from it with `pg_basebackup -R -X stream`, and `celeriac-api` reading
//! from the replica. Stopping the replica sends reads to the primary (same numbers, counted, logged, gauge at 0);
//! starting it again brings them back within the probe interval.
//!
//! The machine's own server is not used: its `pg_hba.conf` need not allow replication, and a base backup of it would
//! copy every other test's database. Every process and directory made here is removed by a guard, even on failure.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::redis_db_or_skip;

/// The PostgreSQL server binaries (`initdb`, `pg_ctl`, `pg_basebackup`, `psql`): `CELERIAC_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian), else the directory of `pg_ctl` on the `PATH`.
fn pg_bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "pg_basebackup", "psql"]
            .iter()
            .all(|b| d.join(b).exists())
    };
    if let Some(d) = std::env::var_os("CELERIAC_PG_BIN").map(PathBuf::from) {
        return has_all(&d).then_some(d);
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_all(d))
        .collect();
    debian.sort();
    if let Some((_, d)) = debian.pop() {
        return Some(d);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| has_all(d))
}

/// Private PostgreSQL clusters under one temp directory. The server refuses to run as root, so when the tests do,
/// every server command runs as the `postgres` OS user (`runuser`). Dropping it stops every server and removes the
/// directory.
struct Clusters {
    base: PathBuf,
    bin: PathBuf,
    as_root: bool,
    /// Data directories made so far (each stopped on drop).
    made: Vec<PathBuf>,
}

impl Clusters {
    fn new(bin: PathBuf) -> Clusters {
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let base = std::env::temp_dir().join(format!(
            "celeriac-replica-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&base).expect("temp dir");
        let c = Clusters {
            base,
            bin,
            as_root,
            made: Vec::new(),
        };
        if as_root {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&c.base)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown postgres {}", c.base.display());
        }
        c
    }

    /// A server command (`initdb`, `pg_ctl`, ...) as the right OS user; panics with its output when it fails.
    fn run(&self, tool: &str, args: &[&str]) -> String {
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            Command::new(self.bin.join(tool))
        };
        // Run from a directory the postgres user may enter.
        cmd.args(args)
            .current_dir(&self.base)
            .env("PGCONNECT_TIMEOUT", "5");
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        let out = testkit::wait_output(child, Duration::from_secs(120));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{tool} {args:?} failed ({:?}):\n{text}\n{}",
            out.status,
            self.logs()
        );
        text
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    fn s(p: &Path) -> &str {
        p.to_str().expect("utf-8 path")
    }

    /// `initdb` a primary that allows streaming replication from 127.0.0.1.
    fn init_primary(&mut self, name: &str) -> PathBuf {
        let dir = self.dir(name);
        self.made.push(dir.clone());
        self.run(
            "initdb",
            &[
                "-D",
                Self::s(&dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let conf = format!(
            "\n# celeriac replica test\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\nfsync = off\nsynchronous_commit = off\n\
             shared_buffers = 16MB\nmax_connections = 60\n",
            Self::s(&self.base)
        );
        append(&dir.join("postgresql.conf"), &conf);
        append(
            &dir.join("pg_hba.conf"),
            "\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n",
        );
        dir
    }

    /// `pg_basebackup` from the primary on `port` into a standby that streams from it (`-R`).
    fn base_backup(&mut self, name: &str, port: u16) -> PathBuf {
        let dir = self.dir(name);
        self.made.push(dir.clone());
        self.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-D",
                Self::s(&dir),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        dir
    }

    fn log_of(dir: &Path) -> PathBuf {
        dir.with_extension("log")
    }

    /// `pg_ctl start` on `port`, waiting until it accepts connections.
    fn start(&self, dir: &Path, port: u16) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                Self::s(dir),
                "-l",
                Self::s(&Self::log_of(dir)),
                "-o",
                &format!("-p {port}"),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// `pg_ctl stop -m fast`, waiting until it is down.
    fn stop(&self, dir: &Path) {
        self.run(
            "pg_ctl",
            &["-D", Self::s(dir), "-m", "fast", "-w", "-t", "60", "stop"],
        );
    }

    /// Run SQL with `psql` on `port` (database `db`).
    fn psql(&self, port: u16, db: &str, sql: &str) -> String {
        psql(
            &self.bin.join("psql"),
            &format!("postgres://postgres@127.0.0.1:{port}/{db}"),
            sql,
        )
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for d in &self.made {
            let log = Self::log_of(d);
            if let Ok(text) = std::fs::read_to_string(&log) {
                let tail: String = text
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                s.push_str(&format!("---- {} ----\n{tail}\n", log.display()));
            }
        }
        s
    }
}

impl Drop for Clusters {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for dir in &self.made {
            if dir.join("postmaster.pid").exists() {
                let mut cmd = if self.as_root {
                    let mut c = Command::new("runuser");
                    c.args(["-u", "postgres", "--"])
                        .arg(self.bin.join("pg_ctl"));
                    c
                } else {
                    Command::new(self.bin.join("pg_ctl"))
                };
                let _ = cmd
                    .args([
                        "-D",
                        Self::s(dir),
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        "30",
                        "stop",
                    ])
                    .current_dir(&self.base)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(text.as_bytes()).expect("append");
}

/// The reads compared between the replica and the primary.
const READS: [&str; 4] = [
    "/api/v1/statistics/sessions",
    "/api/v1/statistics/threats",
    "/api/v1/statistics/sensors",
    "/api/v1/sessions",
];

/// Every read once: `(source, body without window.source)` each.
fn read_all(api: &Api, key: &str) -> Vec<(String, Value)> {
    READS
        .iter()
        .map(|path| {
            let r = get_full(&api.url(&format!("{path}?{ALL_TIME}")), Some(key));
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            let mut body = r.body;
            let source = body["window"]["source"]
                .as_str()
                .unwrap_or_else(|| panic!("{path} has no window.source: {body}"))
                .to_string();
            body["window"]
                .as_object_mut()
                .expect("window")
                .remove("source");
            (source, body)
        })
        .collect()
}

fn source_of(api: &Api, key: &str) -> String {
    let (status, body) = get(
        &api.url(&format!("/api/v1/statistics/sessions?{ALL_TIME}")),
        Some(key),
    );
    assert_eq!(status, 200, "{body}");
    body["window"]["source"].as_str().unwrap_or("").to_string()
}

#[test]
fn reads_use_the_replica_fall_back_to_the_primary_and_come_back() {
    let redis = redis_db_or_skip!();
    let Some(bin) = pg_bin_dir() else {
        testkit::require(
            "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup, psql; the `postgresql` package)",
            false,
        );
        return;
    };
    let t0 = Instant::now();
    let mut pg = Clusters::new(bin);
    if pg.as_root
        && !testkit::require(
            "runuser and a `postgres` OS user (the server does not run as root)",
            Command::new("runuser")
                .args(["-u", "postgres", "--", "true"])
                .status()
                .is_ok_and(|s| s.success()),
        )
    {
        return;
    }

    // The primary, with the samples loaded by the real loader, and its streaming replica.
    let primary_port = free_port();
    let primary = pg.init_primary("primary");
    pg.start(&primary, primary_port);
    pg.psql(primary_port, "postgres", "CREATE DATABASE celeriac");
    let primary_url = format!("postgres://postgres@127.0.0.1:{primary_port}/celeriac");
    load_samples(&primary_url);
    let sessions_on_primary = pg.psql(
        primary_port,
        "celeriac",
        "SELECT count(*) FROM session_summaries",
    );
    assert_ne!(sessions_on_primary, "0");
    let replica_port = free_port();
    let replica = pg.base_backup("replica", primary_port);
    pg.start(&replica, replica_port);
    assert_eq!(
        pg.psql(replica_port, "celeriac", "SELECT pg_is_in_recovery()"),
        "t"
    );
    assert_eq!(
        pg.psql(
            replica_port,
            "celeriac",
            "SELECT count(*) FROM session_summaries"
        ),
        sessions_on_primary
    );
    let streaming = testkit::wait_until(Duration::from_secs(15), || {
        pg.psql(
            primary_port,
            "postgres",
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
        ) == "1"
    });
    assert!(streaming, "the replica does not stream\n{}", pg.logs());
    let replica_url = format!("postgres://postgres@127.0.0.1:{replica_port}/celeriac");
    eprintln!("primary and replica ready in {:?}", t0.elapsed());

    let api = Api::start(
        &primary_url,
        &redis.url,
        &[
            "--database-read-url",
            &replica_url,
            "--replica-probe-interval",
            "0.5",
        ],
    );
    // A key made on the primary after the backup streams to the replica; look-ups use the primary anyway.
    let (key, _) = create_key(&primary_url, "statistics:read", &[]);
    let (_, ready) = get(&api.url("/readyz"), None);
    assert_eq!(ready["replica"], "ok", "{ready}");

    // Reads go to the replica, and really reach it.
    let on_replica = read_all(&api, &key);
    for (path, (source, _)) in READS.iter().zip(&on_replica) {
        assert_eq!(source, "replica", "{path}");
    }
    assert!(
        on_replica[0].1["total_sessions"].as_i64().unwrap() > 0,
        "{}",
        on_replica[0].1
    );
    let api_backends = |port: u16| {
        pg.psql(
            port,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'celeriac' AND pid <> pg_backend_pid()",
        )
    };
    assert_ne!(
        api_backends(replica_port),
        "0",
        "no API connection on the replica"
    );
    let m = api.metrics();
    assert_eq!(metric(&m, "celeriac_api_db_replica_up"), Some(1.0), "{m}");
    assert_eq!(
        metric(&m, "celeriac_api_db_replica_fallbacks_total"),
        Some(0.0),
        "{m}"
    );

    // The replica stops: reads still answer, at once, from the primary, with the same numbers.
    pg.stop(&replica);
    let on_primary = read_all(&api, &key);
    for (i, path) in READS.iter().enumerate() {
        assert_eq!(on_primary[i].0, "primary", "{path}");
        assert_eq!(
            on_primary[i].1, on_replica[i].1,
            "{path}: replica and primary differ"
        );
    }
    let m = api.metrics();
    assert!(
        metric(&m, "celeriac_api_db_replica_fallbacks_total").is_some_and(|n| n >= 4.0),
        "{m}"
    );
    assert_eq!(metric(&m, "celeriac_api_db_replica_up"), Some(0.0), "{m}");
    api.child.wait_for_output(
        "read replica is down; reads fall back to the primary",
        Duration::from_secs(5),
    );
    let (status, ready) = get(&api.url("/readyz"), None);
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(
        ready["replica"].as_str().unwrap().starts_with("down"),
        "{ready}"
    );
    // Still primary a few probes later (the probe does not flap it back while the replica is down).
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(source_of(&api, &key), "primary");

    // The replica comes back: within a few probe intervals reads go to it again.
    pg.start(&replica, replica_port);
    let t = Instant::now();
    let back = testkit::wait_until(Duration::from_secs(15), || {
        source_of(&api, &key) == "replica"
    });
    assert!(
        back,
        "reads did not return to the replica\n{}",
        api.child.output()
    );
    eprintln!(
        "reads back on the replica {:?} after it started",
        t.elapsed()
    );
    let after = read_all(&api, &key);
    for (i, path) in READS.iter().enumerate() {
        assert_eq!(after[i].0, "replica", "{path}");
        assert_eq!(after[i].1, on_replica[i].1, "{path}");
    }
    let m = api.metrics();
    assert_eq!(metric(&m, "celeriac_api_db_replica_up"), Some(1.0), "{m}");
    api.child
        .wait_for_output("read replica answers again", Duration::from_secs(5));
    let (_, ready) = get(&api.url("/readyz"), None);
    assert_eq!(ready["replica"], "ok", "{ready}");
    eprintln!("whole test {:?}", t0.elapsed());
}
