//! `import-original`: an original cowrieprocessor database (SQLite, and PostgreSQL in its own schema), filled by
//! the test from the real samples the way the original's loader stores them (spec sections 2.1, 2.2, 2.5), is
//! imported; events and session sums equal a `bulk` load of the same logs, detections land in their tables, and a
//! second import changes nothing (the ledger says so).

use std::collections::BTreeMap;

use cowrie_loader::import_original::{ImportOptions, ImportReport, import_original};
use serde_json::{Map, Value, json};
use store::test_support::TestDb;

use crate::common::*;

/// The original's tables (section 2.1, the columns the loader and detectors write). `{PK}`, `{JSON}`, `{TS}` differ
/// between SQLite and PostgreSQL.
const DDL: &str = "
CREATE TABLE schema_state (key VARCHAR(128) PRIMARY KEY, value VARCHAR(256));
CREATE TABLE raw_events (id {PK}, ingest_id VARCHAR(64), ingest_at {TS}, source VARCHAR(512) NOT NULL,
  source_offset BIGINT, source_inode VARCHAR(128), source_generation INTEGER NOT NULL DEFAULT 0, payload {JSON} NOT NULL,
  payload_hash VARCHAR(64), risk_score INTEGER, quarantined BOOLEAN NOT NULL DEFAULT FALSE, session_id VARCHAR(64),
  event_type VARCHAR(128), event_timestamp {TS},
  CONSTRAINT uq_raw_events_source_offset UNIQUE (source, source_inode, source_generation, source_offset));
CREATE TABLE session_summaries (session_id VARCHAR(64) PRIMARY KEY, source_ip VARCHAR(45), first_event_at {TS},
  last_event_at {TS}, event_count INTEGER NOT NULL DEFAULT 0, command_count INTEGER NOT NULL DEFAULT 0,
  file_downloads INTEGER NOT NULL DEFAULT 0, login_attempts INTEGER NOT NULL DEFAULT 0,
  ssh_key_injections INTEGER NOT NULL DEFAULT 0, unique_ssh_keys INTEGER NOT NULL DEFAULT 0,
  vt_flagged BOOLEAN NOT NULL DEFAULT FALSE, dshield_flagged BOOLEAN NOT NULL DEFAULT FALSE, risk_score INTEGER,
  matcher VARCHAR(32), source_files {JSON}, enrichment {JSON}, enrichment_at {TS}, created_at {TS}, updated_at {TS});
CREATE TABLE files (id {PK}, session_id VARCHAR(64) NOT NULL, shasum VARCHAR(64) NOT NULL, filename VARCHAR(512),
  file_size BIGINT, download_url VARCHAR(1024), vt_classification VARCHAR(128), vt_description TEXT,
  vt_malicious BOOLEAN NOT NULL DEFAULT FALSE, vt_first_seen {TS}, vt_last_analysis {TS}, vt_positives INTEGER,
  vt_total INTEGER, vt_scan_date {TS}, first_seen {TS} NOT NULL, last_updated {TS},
  enrichment_status VARCHAR(32) NOT NULL DEFAULT 'pending', UNIQUE (session_id, shasum));
CREATE TABLE dead_letter_events (id {PK}, ingest_id VARCHAR(64), source VARCHAR(512), source_offset INTEGER,
  reason VARCHAR(128) NOT NULL, payload {JSON} NOT NULL, metadata_json {JSON}, created_at {TS}, resolved BOOLEAN,
  resolved_at {TS});
CREATE TABLE longtail_analysis (id {PK}, analysis_time {TS}, window_start {TS} NOT NULL, window_end {TS} NOT NULL,
  lookback_days INTEGER, confidence_score FLOAT, total_events_analyzed INTEGER, rare_command_count INTEGER,
  anomalous_sequence_count INTEGER, outlier_session_count INTEGER, emerging_pattern_count INTEGER,
  high_entropy_payload_count INTEGER, analysis_results {JSON} NOT NULL, statistical_summary {JSON},
  recommendation TEXT, analysis_duration_seconds FLOAT, memory_usage_mb FLOAT, data_quality_score FLOAT,
  enrichment_coverage FLOAT, created_at {TS});
CREATE TABLE longtail_detections (id {PK}, analysis_id INTEGER NOT NULL REFERENCES longtail_analysis (id),
  detection_type VARCHAR(32), session_id VARCHAR(64), event_id INTEGER REFERENCES raw_events (id),
  detection_data {JSON} NOT NULL, confidence_score FLOAT, severity_score FLOAT, timestamp {TS} NOT NULL,
  source_ip VARCHAR(45), created_at {TS});
CREATE TABLE snowshoe_detections (id {PK}, detection_time {TS}, window_start {TS} NOT NULL, window_end {TS} NOT NULL,
  confidence_score VARCHAR(10), unique_ips INTEGER, single_attempt_ips INTEGER, geographic_spread VARCHAR(10),
  indicators {JSON} NOT NULL, is_likely_snowshoe BOOLEAN, coordinated_timing BOOLEAN, recommendation TEXT,
  analysis_metadata {JSON}, created_at {TS});
";

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sqlite,
    Postgres,
}

fn ddl(kind: Kind) -> String {
    let (pk, js, ts) = match kind {
        Kind::Sqlite => ("INTEGER PRIMARY KEY", "JSON", "DATETIME"),
        Kind::Postgres => ("SERIAL PRIMARY KEY", "JSONB", "TIMESTAMPTZ"),
    };
    DDL.replace("{PK}", pk)
        .replace("{JSON}", js)
        .replace("{TS}", ts)
}

/// An SQL literal. Timestamps are `Value::String`s already in the kind's format.
fn lit(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => format!("'{}'", other.to_string().replace('\'', "''")),
    }
}

/// Timestamps as each database keeps them: SQLite as SQLAlchemy's naive text, PostgreSQL as timestamptz.
fn ts(kind: Kind, t: chrono::DateTime<chrono::Utc>) -> Value {
    match kind {
        Kind::Sqlite => Value::String(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()),
        Kind::Postgres => Value::String(t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()),
    }
}

fn inserts(out: &mut String, table: &str, cols: &[&str], rows: &[Vec<Value>]) {
    for chunk in rows.chunks(300) {
        out.push_str(&format!(
            "INSERT INTO {table} ({}) VALUES ",
            cols.join(", ")
        ));
        let vals: Vec<String> = chunk
            .iter()
            .map(|r| format!("({})", r.iter().map(lit).collect::<Vec<_>>().join(", ")))
            .collect();
        out.push_str(&vals.join(", "));
        out.push_str(";\n");
    }
}

/// The original's sanitising: control characters other than tab, newline and carriage return dropped (section 2.2).
fn sanitize(v: &mut Value) {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| {
                let u = *c as u32;
                !((u <= 0x1f && !matches!(c, '\t' | '\n' | '\r')) || (0x7f..=0x9f).contains(&u))
            })
            .collect()
    };
    match v {
        Value::String(s) => *s = clean(s),
        Value::Array(a) => a.iter_mut().for_each(sanitize),
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (k, mut x) in old {
                sanitize(&mut x);
                m.insert(clean(&k), x);
            }
        }
        _ => {}
    }
}

/// The original database's content as an SQL script, built from the plain samples as the original's bulk loader
/// stores them: one raw_events row per line (0-based line index), commands overwritten by their defanged form,
/// sessions aggregated per section 2.5, files per 2.1; plus analyses, detections and a dead letter.
fn original_script(kind: Kind) -> String {
    let mut events = Vec::new();
    let mut sessions: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut files: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    let mut first_event_id_with_session = None;
    for path in plain_samples() {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut obj: Value = serde_json::from_str(line.trim()).unwrap();
            sanitize(&mut obj);
            let m = obj.as_object_mut().unwrap();
            let et = m["eventid"].as_str().unwrap().to_owned();
            let t =
                cowrie_loader::parse::parse_timestamp(m["timestamp"].as_str().unwrap()).unwrap();
            let sid = m
                .get("session")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            // Defanging overwrites what the attacker typed (the original keeps it in input_original).
            if let Some(cmd) = m.get("input").and_then(Value::as_str).map(str::to_owned) {
                let safe = format!("[defang:dangerous] {}", cmd.replace("http", "hxxp"));
                m.insert(
                    "command_analysis".into(),
                    json!({"risk_level": "dangerous", "needs_defanging": true}),
                );
                m.insert("input_safe".into(), json!(safe));
                m.insert("command_safe".into(), json!(safe));
                m.insert("input_hash".into(), json!("0".repeat(64)));
                m.insert("input_original".into(), json!(cmd));
                m.insert("command_original".into(), json!(cmd));
                m.insert("input".into(), json!(safe));
                m.insert("command".into(), json!(safe));
            }
            events.push(vec![
                json!("ing-1"),
                json!(source),
                json!(i),
                json!("4242"),
                Value::String(obj.to_string()),
                json!("f".repeat(64)),
                json!(0),
                sid.clone().map_or(Value::Null, Value::String),
                json!(et),
                ts(kind, t),
            ]);
            let Some(sid) = sid else { continue };
            if first_event_id_with_session.is_none() {
                first_event_id_with_session = Some(events.len());
            }
            let s = sessions.entry(sid.clone()).or_default();
            let add = |s: &mut Map<String, Value>, k: &str, n: i64| {
                let v = s.get(k).and_then(Value::as_i64).unwrap_or(0) + n;
                s.insert(k.into(), json!(v));
            };
            add(s, "event_count", 1);
            add(s, "command_count", et.contains("command") as i64);
            add(
                s,
                "file_downloads",
                (et.contains("file_download") || et.contains("cowrie.session.file")) as i64,
            );
            add(s, "login_attempts", et.contains("login") as i64);
            let first = s
                .get("first")
                .and_then(Value::as_i64)
                .map_or(t.timestamp_micros(), |f| f.min(t.timestamp_micros()));
            let last = s
                .get("last")
                .and_then(Value::as_i64)
                .map_or(t.timestamp_micros(), |l| l.max(t.timestamp_micros()));
            s.insert("first".into(), json!(first));
            s.insert("last".into(), json!(last));
            s.insert("source_files".into(), json!([source]));
            if et == "cowrie.session.file_download"
                && let Some(sha) = obj["shasum"].as_str().filter(|h| h.len() == 64)
            {
                files
                    .entry((sid.clone(), sha.to_lowercase()))
                    .or_insert_with(|| {
                        vec![
                            json!(sid),
                            json!(sha.to_lowercase()),
                            obj.get("outfile").cloned().unwrap_or(Value::Null),
                            obj.get("url").cloned().unwrap_or(Value::Null),
                            json!("Trojan.Linux.Mirai"),
                            json!(true),
                            json!(40),
                            json!(60),
                            ts(kind, t),
                            json!("enriched"),
                        ]
                    });
            }
        }
    }
    let micros = |v: &Value| chrono::DateTime::from_timestamp_micros(v.as_i64().unwrap()).unwrap();
    let session_rows: Vec<Vec<Value>> = sessions
        .iter()
        .enumerate()
        .map(|(i, (sid, s))| {
            vec![
                json!(sid),
                ts(kind, micros(&s["first"])),
                ts(kind, micros(&s["last"])),
                s["event_count"].clone(),
                s["command_count"].clone(),
                s["file_downloads"].clone(),
                s["login_attempts"].clone(),
                json!(i % 7 == 0),
                Value::String(s["source_files"].to_string()),
                // Enrichment only the original has (celeriac keeps it on the recomputed session).
                if i % 5 == 0 {
                    Value::String(json!({"session": {}, "virustotal": {}}).to_string())
                } else {
                    Value::Null
                },
            ]
        })
        .collect();
    let t0 = chrono::DateTime::parse_from_rfc3339("2024-01-10T00:00:00Z")
        .unwrap()
        .to_utc();
    let t1 = t0 + chrono::Duration::days(1);
    let mut sql = ddl(kind);
    sql.push_str("INSERT INTO schema_state (key, value) VALUES ('schema_version', '17');\n");
    inserts(
        &mut sql,
        "raw_events",
        &[
            "ingest_id",
            "source",
            "source_offset",
            "source_inode",
            "payload",
            "payload_hash",
            "source_generation",
            "session_id",
            "event_type",
            "event_timestamp",
        ],
        &events,
    );
    inserts(
        &mut sql,
        "session_summaries",
        &[
            "session_id",
            "first_event_at",
            "last_event_at",
            "event_count",
            "command_count",
            "file_downloads",
            "login_attempts",
            "dshield_flagged",
            "source_files",
            "enrichment",
        ],
        &session_rows,
    );
    inserts(
        &mut sql,
        "files",
        &[
            "session_id",
            "shasum",
            "filename",
            "download_url",
            "vt_classification",
            "vt_malicious",
            "vt_positives",
            "vt_total",
            "first_seen",
            "enrichment_status",
        ],
        &files.into_values().collect::<Vec<_>>(),
    );
    inserts(
        &mut sql,
        "dead_letter_events",
        &[
            "ingest_id",
            "source",
            "source_offset",
            "reason",
            "payload",
            "metadata_json",
            "created_at",
        ],
        &[vec![
            json!("ing-1"),
            json!("/var/log/cowrie/cowrie.json"),
            json!(17),
            json!("json_parsing_failed"),
            Value::String(
                json!({"malformed_content": "{\"eventid\": \"cowrie.log", "original_offset": 17})
                    .to_string(),
            ),
            Value::String(json!({"json_parsing_failed": true}).to_string()),
            ts(kind, t0),
        ]],
    );
    inserts(
        &mut sql,
        "longtail_analysis",
        &[
            "analysis_time",
            "window_start",
            "window_end",
            "lookback_days",
            "confidence_score",
            "total_events_analyzed",
            "rare_command_count",
            "analysis_results",
            "recommendation",
        ],
        &[vec![
            ts(kind, t1),
            ts(kind, t0),
            ts(kind, t1),
            json!(1),
            json!(0.8),
            json!(events.len()),
            json!(2),
            Value::String(json!({"rare_commands": [{"command": "uname -a"}]}).to_string()),
            json!("review"),
        ]],
    );
    let event_id = first_event_id_with_session.unwrap();
    inserts(
        &mut sql,
        "longtail_detections",
        &[
            "analysis_id",
            "detection_type",
            "session_id",
            "event_id",
            "detection_data",
            "confidence_score",
            "timestamp",
        ],
        &[
            vec![
                json!(1),
                json!("rare_command"),
                Value::Null,
                json!(event_id),
                Value::String(json!({"command": "uname -a"}).to_string()),
                json!(0.9),
                ts(kind, t0),
            ],
            vec![
                json!(1),
                json!("outlier_session"),
                json!("abc"),
                Value::Null,
                Value::String(json!({"cluster": -1}).to_string()),
                json!(0.7),
                ts(kind, t0),
            ],
        ],
    );
    inserts(
        &mut sql,
        "snowshoe_detections",
        &[
            "detection_time",
            "window_start",
            "window_end",
            "confidence_score",
            "unique_ips",
            "single_attempt_ips",
            "geographic_spread",
            "indicators",
            "is_likely_snowshoe",
            "coordinated_timing",
            "recommendation",
        ],
        &[
            vec![
                ts(kind, t1),
                ts(kind, t0),
                ts(kind, t1),
                json!("0.367"),
                json!(78),
                json!(40),
                json!("0.0"),
                Value::String(json!({"volume": {"low_volume_ips": 12}}).to_string()),
                json!(false),
                json!(true),
                json!("LOW CONFIDENCE"),
            ],
            // A botnet result, stored by the original in the snowshoe table.
            vec![
                ts(kind, t1),
                ts(kind, t0),
                ts(kind, t1),
                json!("0.744584"),
                json!(0),
                json!(6),
                Value::Null,
                Value::String(
                    json!({"credentials": {"credential_reuse_count": 6}, "commands": {}})
                        .to_string(),
                ),
                json!(true),
                json!(true),
                json!("MODERATE CONFIDENCE"),
            ],
        ],
    );
    sql
}

async fn import(url: &str, from: &str) -> ImportReport {
    let r = import_original(&ImportOptions {
        from: from.into(),
        database_url: url.into(),
        sensor: "fx".into(),
        batch_size: 500,
        dry_run: false,
        max_wait: std::time::Duration::from_secs(30),
    })
    .await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    r
}

/// Session sums that must agree with `bulk`: (session, events, commands, logins, downloads).
async fn session_sums(url: &str) -> Vec<(String, i32, i32, i32, i32)> {
    let mut c = connect(url).await;
    store::inspect::session_rows(&mut c)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.session_id,
                r.event_count,
                r.command_count,
                r.login_attempts,
                r.file_downloads,
            )
        })
        .collect()
}

async fn check_import(kind: Kind, from: &str, bulk_db: &TestDb) {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let first = import(&db.url, from).await;
    let t = &first.tables;
    assert!(first.changed > 0);
    assert_eq!(t["raw_events"].read, t["raw_events"].inserted, "{first:?}");
    assert_eq!(t["raw_events"].dead_letters, 0);

    // The same events, sessions, risk scores and files as `bulk` of the same logs.
    let (mut a, mut b) = (connect(&bulk_db.url).await, connect(&db.url).await);
    let ca = store::inspect::table_counts(&mut a).await.unwrap();
    let cb = store::inspect::table_counts(&mut b).await.unwrap();
    assert_eq!(ca.raw_events, cb.raw_events);
    assert_eq!(ca.session_summaries, cb.session_summaries);
    assert_eq!(
        store::inspect::event_type_counts(&mut a).await.unwrap(),
        store::inspect::event_type_counts(&mut b).await.unwrap()
    );
    assert_eq!(
        session_sums(&bulk_db.url).await,
        session_sums(&db.url).await
    );
    let risk = |rows: Vec<store::inspect::SessionRow>| -> Vec<(String, Option<i32>, String)> {
        rows.into_iter()
            .map(|r| (r.session_id, r.risk_score, r.sensor))
            .collect()
    };
    assert_eq!(
        risk(store::inspect::session_rows(&mut a).await.unwrap()),
        risk(store::inspect::session_rows(&mut b).await.unwrap()),
        "risk scores (commands restored from the original's defanging) and sensors"
    );
    assert_eq!(
        store::inspect::quarantined_counts(&mut a).await.unwrap(),
        store::inspect::quarantined_counts(&mut b).await.unwrap()
    );
    assert_eq!(
        store::inspect::file_rows(&mut a).await.unwrap(),
        store::inspect::file_rows(&mut b).await.unwrap()
    );

    // What only the original had: enrichment, detections (botnet apart), its dead letter.
    let n = store::original::imported_table_counts(&mut b)
        .await
        .unwrap();
    assert_eq!(n["longtail_analysis"], 1);
    assert_eq!(n["longtail_detections"], 2);
    assert_eq!(n["longtail_detections_with_event"], 1);
    assert_eq!(n["snowshoe_detections"], 1);
    assert_eq!(n["botnet_detections"], 1);
    assert_eq!(n["dead_letter_events"], 1);
    assert_eq!(n["files_enriched"], cb.files);
    assert!(n["sessions_enriched"] > 0);
    assert!(t["session_summaries"].enriched as i64 >= n["sessions_enriched"]);

    // A second import changes nothing, and the ledger says so.
    let before = snapshot(&db.url).await;
    let before_n = store::original::imported_table_counts(&mut b)
        .await
        .unwrap();
    let second = import(&db.url, from).await;
    assert_eq!(second.changed, 0, "{second:?}");
    for (table, c) in &second.tables {
        assert_eq!((c.inserted, c.enriched), (0, 0), "{table}: {c:?}");
    }
    assert_eq!(
        second.tables["raw_events"].already_imported,
        t["raw_events"].read
    );
    assert_eq!(snapshot(&db.url).await, before);
    assert_eq!(
        store::original::imported_table_counts(&mut b)
            .await
            .unwrap(),
        before_n
    );
    let ledger = store::original::import_ledger(&mut b).await.unwrap();
    assert_eq!(ledger.len(), 2);
    assert!(ledger.iter().all(|r| r.outcome == "ok"));
    assert_eq!(ledger[0].changed, first.changed as i64);
    assert_eq!(ledger[1].changed, 0);
    assert_eq!(ledger[1].counts["raw_events"]["inserted"], 0);
    assert_eq!(
        ledger[0].source_kind,
        if kind == Kind::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_database_imports_like_bulk_and_a_second_import_changes_nothing() {
    let Some(bulk_db) = TestDb::create().await else {
        return;
    };
    bulk(&bulk_db.url, "fx", &plain_samples()).await;

    // SQLite, as the original keeps it (timestamps and JSON as text, booleans as integers).
    let dir = TempDir::new();
    let path = dir.path().join("cowrieprocessor.sqlite");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(&original_script(Kind::Sqlite)).unwrap();
    drop(c);
    check_import(
        Kind::Sqlite,
        &format!("sqlite://{}", path.display()),
        &bulk_db,
    )
    .await;

    // PostgreSQL, in its own schema of a database this test owns.
    let Some(orig) = TestDb::create().await else {
        return;
    };
    let script = format!(
        "CREATE SCHEMA orig; SET search_path = orig;\n{}",
        original_script(Kind::Postgres)
    );
    store::original::execute_script(&orig.url, &script)
        .await
        .unwrap();
    check_import(
        Kind::Postgres,
        &format!("{}?options=-csearch_path%3Dorig", orig.url),
        &bulk_db,
    )
    .await;
    orig.drop_db().await;
    bulk_db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_originals_are_refused_with_the_reason() {
    let dir = TempDir::new();
    let opts = |from: String| ImportOptions {
        from,
        database_url: "postgres://127.0.0.1:1/none".into(),
        sensor: "fx".into(),
        batch_size: 10,
        dry_run: true,
        max_wait: std::time::Duration::from_secs(1),
    };
    // A database without the original's tables.
    let p = dir.path().join("empty.sqlite");
    rusqlite::Connection::open(&p)
        .unwrap()
        .execute_batch("CREATE TABLE x (id INTEGER);")
        .unwrap();
    let r = import_original(&opts(format!("sqlite://{}", p.display()))).await;
    assert_eq!(r.exit_code, 1);
    assert!(
        r.errors[0].contains("table schema_state is missing"),
        "{:?}",
        r.errors
    );
    // An unknown schema version.
    let p = dir.path().join("v99.sqlite");
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch(&ddl(Kind::Sqlite)).unwrap();
    c.execute_batch("INSERT INTO schema_state VALUES ('schema_version', '99');")
        .unwrap();
    drop(c);
    let r = import_original(&opts(format!("sqlite://{}", p.display()))).await;
    assert!(
        r.errors[0].contains("unknown original schema version \"99\""),
        "{:?}",
        r.errors
    );
    // A malformed payload is a dead letter, not a loss (dry run: counted, nothing written).
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch(
        "UPDATE schema_state SET value = '17';
         INSERT INTO raw_events (source, source_offset, payload) VALUES ('/l/cowrie.json', 0, '{\"eventid\": \"cowrie.se');
         INSERT INTO raw_events (source, source_offset, payload) VALUES ('/l/cowrie.json', 1, '{\"eventid\": \"cowrie.session.connect\", \"timestamp\": \"2024-01-10T00:00:00Z\", \"session\": \"a1\"}');",
    )
    .unwrap();
    drop(c);
    let r = import_original(&opts(format!("sqlite://{}", p.display()))).await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert_eq!(r.tables["raw_events"].read, 2);
    assert_eq!(r.tables["raw_events"].inserted, 1);
    assert_eq!(r.tables["raw_events"].dead_letters, 1);
    // Not a database URL at all.
    let r = import_original(&opts("mysql://x/y".into())).await;
    assert!(r.errors[0].starts_with("bad --from"), "{:?}", r.errors);
}
