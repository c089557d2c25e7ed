//! `scripts/pg-backup.sh` against the real PostgreSQL: the real Cowrie samples loaded by `cowrie-loader`, backed up,
//! restored into a fresh database and verified (row counts checked independently of the script too); a tampered
//! row makes verify fail naming its table; a write during the backup is in neither the dump nor the manifest (one
//! snapshot); a changed dump and a missing tool are refused with a clear message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The plain real samples (the compressed copies hold the same events).
fn samples() -> Vec<PathBuf> {
    let root = testkit::shared_dir().join("fixtures/cowrie");
    let mut v = Vec::new();
    for dir in ["kareiva-cowrie-logs", "lucasfaudman-honeypot-ai"] {
        for e in std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{}: {e}", root.join(dir).display()))
        {
            let p = e.unwrap().path();
            let n = p.to_string_lossy().to_string();
            if n.contains(".json") && !n.ends_with(".gz") && !n.ends_with(".bz2") {
                v.push(p);
            }
        }
    }
    v.sort();
    assert!(v.len() >= 7, "expected the real samples, found {v:?}");
    v
}

fn script() -> PathBuf {
    testkit::repo_root().join("scripts/pg-backup.sh")
}

/// bash by absolute path, so a test can run the script with a PATH that lacks the PostgreSQL tools.
fn bash() -> PathBuf {
    ["/bin/bash", "/usr/bin/bash"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("bash")
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bash());
    cmd.arg(script()).args(args).env_remove("DATABASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running pg-backup.sh")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn psql(url: &str, sql: &str) -> String {
    let o = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-w",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("psql");
    assert!(o.status.success(), "psql {sql}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A database the script creates; dropped at the end even when the test fails.
struct Target {
    name: String,
    url: String,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-w",
                "-d",
                &store::test_support::admin_url(),
                "-c",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The manifest's table lines: name -> (rows, checksum).
fn manifest_tables(dir: &Path) -> BTreeMap<String, (u64, String)> {
    std::fs::read_to_string(dir.join("manifest.tsv"))
        .expect("manifest.tsv")
        .lines()
        .filter(|l| l.starts_with("table\t"))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "manifest line {l:?}");
            (f[1].to_string(), (f[2].parse().unwrap(), f[3].to_string()))
        })
        .collect()
}

/// Every table of the public schema with its row count, counted here (not by the script).
fn counts(url: &str) -> BTreeMap<String, u64> {
    let tables = psql(
        url,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    );
    tables
        .lines()
        .map(|t| {
            let n = psql(url, &format!("SELECT count(*) FROM public.\"{t}\""));
            (format!("public.{t}"), n.parse().unwrap())
        })
        .collect()
}

#[test]
fn backup_restore_verify_round_trip_and_tampering_is_named() {
    if !testkit::require(
        "pg_dump, pg_restore and psql (postgresql-client)",
        ["pg_dump", "pg_restore", "psql"].iter().all(|t| {
            Command::new(t)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        }),
    ) {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let src = rt.block_on(store::test_support::TestDb::create());
    if !testkit::require("PostgreSQL at 127.0.0.1:5432", src.is_some()) {
        return;
    }
    let src = src.unwrap();

    // The real samples, loaded by the real loader.
    let out = Command::new(testkit::bin("cowrie-loader"))
        .args([
            "bulk",
            "--sensor",
            "samples",
            "--no-progress",
            "--database-url",
            &src.url,
        ])
        .args(samples())
        .output()
        .unwrap();
    assert!(out.status.success(), "loader: {}", text(&out));
    let status: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .expect("status line"),
    )
    .unwrap();
    let inserted = status["events_inserted"].as_u64().unwrap();
    assert!(inserted > 0, "the loader inserted nothing: {status}");

    // A table the backup's own write (below) goes to.
    psql(&src.url, "CREATE TABLE pgb_probe (note text)");

    let dir =
        Dir(std::env::temp_dir().join(format!("pg-backup-test-{}", uuid::Uuid::new_v4().simple())));
    let dir_s = dir.0.to_string_lossy().to_string();

    // pg_dump behind a wrapper that commits a row from another session first: the snapshot was taken before it,
    // so neither the dump nor the manifest may contain it.
    std::fs::create_dir_all(&dir.0).unwrap();
    let tools = Dir(
        std::env::temp_dir().join(format!("pg-backup-tools-{}", uuid::Uuid::new_v4().simple()))
    );
    std::fs::create_dir_all(&tools.0).unwrap();
    let wrapper = tools.0.join("pg_dump_after_a_write");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" != --version ]; then psql -X -q -w -d '{}' -c \"INSERT INTO pgb_probe VALUES ('written during the backup')\" || exit 9; fi\nexec pg_dump \"$@\"\n",
            src.url
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let backup_dir = format!("{dir_s}/b");
    let b = run(
        &["backup", "--out", &backup_dir],
        &[
            ("DATABASE_URL", src.url.as_str()),
            ("PG_DUMP", wrapper.to_str().unwrap()),
        ],
    );
    assert!(b.status.success(), "backup: {}", text(&b));
    let backup = PathBuf::from(&backup_dir);
    assert!(backup.join("celeriac.dump").is_file());
    assert_eq!(
        psql(&src.url, "SELECT count(*) FROM pgb_probe"),
        "1",
        "the wrapper's write did not happen"
    );

    // The manifest lists every table with the row count counted here, before the write, as the snapshot saw it.
    let manifest = manifest_tables(&backup);
    let mut at_backup = counts(&src.url);
    *at_backup.get_mut("public.pgb_probe").unwrap() = 0;
    let manifest_counts: BTreeMap<String, u64> =
        manifest.iter().map(|(k, (n, _))| (k.clone(), *n)).collect();
    assert_eq!(manifest_counts, at_backup, "manifest against counts");
    assert_eq!(manifest["public.raw_events"].0, inserted);
    assert!(manifest["public.session_summaries"].0 > 0);

    // The source now differs from its backup by that one row: verify names the table.
    let v = run(
        &["verify", "--from", &backup_dir, "--database-url", &src.url],
        &[],
    );
    assert_eq!(
        v.status.code(),
        Some(3),
        "verify against the changed source: {}",
        text(&v)
    );
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(err.contains("public.pgb_probe"), "{}", text(&v));
    assert!(!err.contains("public.raw_events"), "{}", text(&v));

    // Restore into a database that does not exist yet.
    let admin = store::test_support::admin_url();
    let base = admin.rsplit_once('/').unwrap().0;
    let name = format!("celeriac_test_{}", uuid::Uuid::new_v4().simple());
    let target = Target {
        url: format!("{base}/{name}"),
        name,
    };
    let r = run(
        &[
            "restore",
            "--from",
            &backup_dir,
            "--database-url",
            &target.url,
        ],
        &[],
    );
    assert!(r.status.success(), "restore: {}", text(&r));
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("matches the backup"),
        "{}",
        text(&r)
    );
    // Identical row counts, counted here; and the script's own verify agrees.
    assert_eq!(counts(&target.url), at_backup);
    let v = run(
        &["verify", "--from", &backup_dir],
        &[("DATABASE_URL", target.url.as_str())],
    );
    assert!(v.status.success(), "verify: {}", text(&v));

    // A second restore into the now non-empty database is refused.
    let again = run(
        &[
            "restore",
            "--from",
            &backup_dir,
            "--database-url",
            &target.url,
        ],
        &[],
    );
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("fresh database"),
        "{}",
        text(&again)
    );

    // One changed field of one row: verify fails and names that table only.
    psql(
        &target.url,
        "UPDATE session_summaries SET command_count = command_count + 1 \
         WHERE session_id = (SELECT min(session_id) FROM session_summaries)",
    );
    let v = run(
        &[
            "verify",
            "--from",
            &backup_dir,
            "--database-url",
            &target.url,
        ],
        &[],
    );
    assert_eq!(
        v.status.code(),
        Some(3),
        "verify after tampering: {}",
        text(&v)
    );
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(
        err.contains("DIFFERS table public.session_summaries"),
        "{}",
        text(&v)
    );
    assert_eq!(err.matches("DIFFERS").count(), 1, "{}", text(&v));

    // A dump changed after the backup is refused before anything is compared.
    let mut dump = std::fs::read(backup.join("celeriac.dump")).unwrap();
    dump.push(0);
    std::fs::write(backup.join("celeriac.dump"), dump).unwrap();
    let v = run(
        &[
            "verify",
            "--from",
            &backup_dir,
            "--database-url",
            &target.url,
        ],
        &[],
    );
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("does not match the manifest"),
        "{}",
        text(&v)
    );

    drop(target);
    rt.block_on(src.drop_db());
}

#[test]
fn missing_tools_and_bad_arguments_are_named() {
    let empty = Dir(
        std::env::temp_dir().join(format!("pg-backup-empty-{}", uuid::Uuid::new_v4().simple()))
    );
    std::fs::create_dir_all(&empty.0).unwrap();
    let url = "postgres://postgres@127.0.0.1:5432/never_used";
    let out = empty.0.join("out");
    let out_s = out.to_str().unwrap();

    // No PostgreSQL client on PATH at all.
    let o = run(
        &["backup", "--database-url", url, "--out", out_s],
        &[("PATH", empty.0.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("psql not found"),
        "{}",
        text(&o)
    );

    // pg_dump named but absent.
    let o = run(
        &["backup", "--database-url", url, "--out", out_s],
        &[("PG_DUMP", "/nonexistent/pg_dump")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/nonexistent/pg_dump not found") && err.contains("PG_DUMP"),
        "{}",
        text(&o)
    );
    assert!(!out.join("manifest.tsv").exists());

    // pg_restore named but absent.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("manifest.tsv"),
        "# celeriac pg-backup manifest 1\n",
    )
    .unwrap();
    let o = run(
        &["restore", "--from", out_s, "--database-url", url],
        &[("PG_RESTORE", "/nonexistent/pg_restore")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/nonexistent/pg_restore not found"),
        "{}",
        text(&o)
    );

    // No database named, an unknown command, a directory that is no backup.
    let o = run(&["backup"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("DATABASE_URL"),
        "{}",
        text(&o)
    );
    let o = run(&["frobnicate"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = run(
        &[
            "verify",
            "--from",
            empty.0.to_str().unwrap(),
            "--database-url",
            url,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a backup directory"),
        "{}",
        text(&o)
    );
}
