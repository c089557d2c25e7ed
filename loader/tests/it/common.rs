//! Shared helpers: fixture paths, temporary directories, running the engine, reading files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cowrie_loader::engine::{Engine, IngestOptions, expand_logdir};
use cowrie_loader::generate::{CowrieFormat, GenOptions, generate_file};
use cowrie_loader::status::Stats;

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/cowrie"
    ))
}

/// The plain real samples.
pub fn plain_samples() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in ["kareiva-cowrie-logs", "lucasfaudman-honeypot-ai"] {
        for e in std::fs::read_dir(fixtures().join(dir)).expect("fixtures dir") {
            let p = e.unwrap().path();
            let n = p.to_string_lossy().to_string();
            if !n.ends_with(".gz") && !n.ends_with(".bz2") {
                v.push(p);
            }
        }
    }
    v.sort();
    assert_eq!(v.len(), 8, "expected 8 plain samples");
    v
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(format!(
            "cowrie-loader-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn opts(mode: &str, sensor: &str) -> IngestOptions {
    IngestOptions {
        mode: mode.into(),
        sensor: sensor.into(),
        batch_size: 500,
        max_wait: Duration::from_secs(60),
        ..IngestOptions::default()
    }
}

pub async fn run_with(url: &str, o: IngestOptions, paths: &[PathBuf]) -> Stats {
    let pool = store::build_pool(url, 2, Duration::from_secs(5));
    let mut e = Engine::new(Some(pool), o);
    let code = e.run(paths).await;
    assert_eq!(code, 0, "loader failed: {:?}", e.stats);
    e.stats
}

pub async fn bulk(url: &str, sensor: &str, paths: &[PathBuf]) -> Stats {
    run_with(url, opts("bulk", sensor), paths).await
}

pub async fn delta(url: &str, sensor: &str, dir: &Path) -> Stats {
    let files = expand_logdir(dir).unwrap();
    run_with(url, opts("delta", sensor), &files).await
}

pub fn gen_opts(events: u64, seed: u64, format: CowrieFormat) -> GenOptions {
    GenOptions {
        events,
        format,
        seed,
        start: DateTime::parse_from_rfc3339("2024-01-10T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
        sensor: String::new(),
    }
}

/// Writes generated events and returns how many lines were written.
pub fn gen_log(path: &Path, events: u64, seed: u64) -> u64 {
    generate_file(path, &gen_opts(events, seed, CowrieFormat::V2))
        .unwrap()
        .events
}

/// The JSON objects of a plain file, one per non-empty line.
pub fn read_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("sample line is JSON"))
        .collect()
}

pub fn count_by<F: Fn(&serde_json::Value) -> Option<String>>(
    evs: &[serde_json::Value],
    key: F,
) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for e in evs {
        if let Some(k) = key(e) {
            *m.entry(k).or_insert(0) += 1;
        }
    }
    m
}

pub fn eventid(e: &serde_json::Value) -> Option<String> {
    e["eventid"].as_str().map(str::to_owned)
}

pub fn session(e: &serde_json::Value) -> Option<String> {
    e["session"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A snapshot of everything a re-run must not change.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub counts: store::inspect::TableCounts,
    pub sessions: Vec<store::inspect::SessionRow>,
    pub hashes: Vec<String>,
    pub files: Vec<(String, String, String)>,
}

pub async fn snapshot(url: &str) -> Snapshot {
    let mut c = connect(url).await;
    Snapshot {
        counts: store::inspect::table_counts(&mut c).await.unwrap(),
        sessions: store::inspect::session_rows(&mut c).await.unwrap(),
        hashes: store::inspect::payload_hashes(&mut c).await.unwrap(),
        files: store::inspect::file_rows(&mut c).await.unwrap(),
    }
}

pub async fn connect(url: &str) -> store::PooledConnOwned {
    store::build_pool(url, 1, Duration::from_secs(5))
        .get_owned()
        .await
        .expect("connect")
}
