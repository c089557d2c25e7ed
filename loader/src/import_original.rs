//! `cowrie-loader import-original`: copies an original cowrieprocessor database (SQLite or PostgreSQL) into
//! celeriac's schema, exactly once.
//!
//! This module owns reading the original's SQLite files (the only user of rusqlite) and mapping every original row
//! to celeriac's; the original's PostgreSQL is read, and celeriac is written, through `store::original`.
//! Raw events go through the loader's own parser ([`crate::parse::parse_record`]) after the original's defanging is
//! undone, so events, sessions, files and risk scores come out as `bulk` would make them from the same logs.
//! Everything is read in pages of `--batch-size` rows, ordered by key, never a whole table at once.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use store::original::{
    DetectionTable, ImportedDeadLetter, ImportedEvent, MappedRow, OriginalKey, STREAM_PREFIX,
};

use crate::parse::{hash_hex, parse_record};
use crate::status::exit;

/// The original's newest schema version (`CURRENT_SCHEMA_VERSION` of cowrieprocessor).
pub const NEWEST_ORIGINAL_SCHEMA: i64 = 17;

/// Tables the import cannot do without.
const REQUIRED_TABLES: [&str; 3] = ["schema_state", "raw_events", "session_summaries"];

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// `sqlite:///path/to/db.sqlite` or `postgres://…` of the original database.
    pub from: String,
    /// celeriac's database.
    pub database_url: String,
    /// Sensor for events whose `sensor` is empty (as `bulk --sensor`).
    pub sensor: String,
    pub batch_size: usize,
    /// Read and map everything, write nothing.
    pub dry_run: bool,
    pub max_wait: Duration,
}

/// Counters of one original table.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TableCounts {
    /// Rows read from the original.
    pub read: u64,
    /// Rows written to celeriac by this run.
    pub inserted: u64,
    /// Rows already there from an earlier import.
    pub already_imported: u64,
    /// Existing celeriac rows that took the original's enrichment.
    pub enriched: u64,
    /// Rows kept as dead letters (with the reason) instead.
    pub dead_letters: u64,
    /// Rows that could not be imported at all (each named in `errors`).
    pub refused: u64,
}

/// The JSON line `import-original` prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub mode: &'static str,
    pub source: String,
    pub source_kind: String,
    pub schema_version: String,
    pub sensor: String,
    pub dry_run: bool,
    /// Ledger id (`original_imports.id`) of this run.
    pub import_id: Option<i64>,
    pub tables: BTreeMap<&'static str, TableCounts>,
    /// Original tables that were absent (nothing to import from them).
    pub tables_absent: Vec<&'static str>,
    /// Rows this run inserted or updated in celeriac; 0 means it changed nothing.
    pub changed: u64,
    pub errors: Vec<String>,
    pub exit_code: i32,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("bad --from: {0}")]
    BadUrl(String),
    #[error("cannot open the original database: {0}")]
    Open(String),
    #[error("not an original cowrieprocessor database: {0}")]
    NotOriginal(String),
    #[error(
        "unknown original schema version {0:?}: this importer knows versions 1 to {NEWEST_ORIGINAL_SCHEMA}"
    )]
    UnknownVersion(String),
    #[error("reading the original database: {0}")]
    Read(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{1}")]
    Schema(i32, String),
}

impl ImportError {
    fn exit_code(&self) -> i32 {
        match self {
            ImportError::Store(e) if e.is_retryable() => exit::DB_UNAVAILABLE,
            ImportError::Schema(code, _) => *code,
            _ => exit::FAILURE,
        }
    }
}

// -------------------------------------------------------------------------------------------------------------
// The original database.

enum Source {
    Sqlite(rusqlite::Connection),
    Postgres(store::PgPool),
}

impl Source {
    fn open(from: &str) -> Result<(Source, &'static str), ImportError> {
        if let Some(rest) = from.strip_prefix("sqlite://") {
            // sqlite:///abs/path -> /abs/path ; sqlite://rel/path -> rel/path
            let path = std::path::Path::new(rest);
            if !path.is_file() {
                return Err(ImportError::Open(format!("{rest}: no such file")));
            }
            let c = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| ImportError::Open(format!("{rest}: {e}")))?;
            Ok((Source::Sqlite(c), "sqlite"))
        } else if from.starts_with("postgres://") || from.starts_with("postgresql://") {
            Ok((
                Source::Postgres(store::build_pool(from, 1, Duration::from_secs(10))),
                "postgres",
            ))
        } else {
            Err(ImportError::BadUrl(format!(
                "{} (expected sqlite:///path/to/db.sqlite or postgres://…)",
                transport::redact_url(from)
            )))
        }
    }

    async fn tables(&self) -> Result<HashSet<String>, ImportError> {
        match self {
            Source::Sqlite(c) => {
                let mut st = c
                    .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
                    .map_err(|e| ImportError::Open(e.to_string()))?;
                let names = st
                    .query_map([], |r| r.get::<_, String>(0))
                    .and_then(|rows| rows.collect::<Result<HashSet<_>, _>>())
                    .map_err(|e| ImportError::Open(e.to_string()))?;
                Ok(names)
            }
            Source::Postgres(p) => {
                let mut c = p.get().await.map_err(store::StoreError::from)?;
                Ok(store::original::original_tables(&mut c).await?)
            }
        }
    }

    async fn schema_version(&self) -> Result<Option<String>, ImportError> {
        match self {
            Source::Sqlite(c) => {
                let v = c
                    .query_row(
                        "SELECT CAST(value AS TEXT) FROM schema_state WHERE key = 'schema_version'",
                        [],
                        |r| r.get::<_, Option<String>>(0),
                    )
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })
                    .map_err(|e| ImportError::Read(e.to_string()))?;
                Ok(v)
            }
            Source::Postgres(p) => {
                let mut c = p.get().await.map_err(store::StoreError::from)?;
                Ok(store::original::original_schema_state(&mut c, "schema_version").await?)
            }
        }
    }

    /// One page of `select` ordered by `key`, after `after`.
    async fn page(
        &self,
        select: &str,
        key: &str,
        after: Option<&OriginalKey>,
        limit: usize,
    ) -> Result<Vec<Map<String, Value>>, ImportError> {
        match self {
            Source::Sqlite(c) => sqlite_page(c, select, key, after, limit)
                .map_err(|e| ImportError::Read(e.to_string())),
            Source::Postgres(p) => {
                let mut c = p.get().await.map_err(store::StoreError::from)?;
                let rows =
                    store::original::read_original_rows(&mut c, select, key, after, limit as i64)
                        .await?;
                rows.iter()
                    .map(|r| match serde_json::from_str(r) {
                        Ok(Value::Object(m)) => Ok(m),
                        _ => Err(ImportError::Read(format!("row_to_json gave {r}"))),
                    })
                    .collect()
            }
        }
    }
}

fn sqlite_page(
    c: &rusqlite::Connection,
    select: &str,
    key: &str,
    after: Option<&OriginalKey>,
    limit: usize,
) -> rusqlite::Result<Vec<Map<String, Value>>> {
    use rusqlite::types::ValueRef;
    let cond = if after.is_some() {
        format!("t.\"{key}\" > ?2")
    } else {
        "1".into()
    };
    let sql = format!("SELECT * FROM ({select}) t WHERE {cond} ORDER BY t.\"{key}\" LIMIT ?1");
    let mut st = c.prepare(&sql)?;
    let names: Vec<String> = st.column_names().map(str::to_owned).collect();
    let limit = limit as i64;
    let mut rows = match after {
        None => st.query(rusqlite::params![limit])?,
        Some(OriginalKey::Int(i)) => st.query(rusqlite::params![limit, i])?,
        Some(OriginalKey::Text(t)) => st.query(rusqlite::params![limit, t])?,
    };
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut m = Map::new();
        for (i, n) in names.iter().enumerate() {
            let v = match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(x) => Value::from(x),
                ValueRef::Real(x) => {
                    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
                }
                ValueRef::Text(t) | ValueRef::Blob(t) => {
                    Value::String(String::from_utf8_lossy(t).into_owned())
                }
            };
            m.insert(n.clone(), v);
        }
        out.push(m);
    }
    Ok(out)
}

// -------------------------------------------------------------------------------------------------------------
// Value helpers (SQLite keeps timestamps and JSON as text, booleans as 0/1; PostgreSQL's row_to_json has real types).

/// JSON text with object keys sorted at every level: the same value from SQLite's text or PostgreSQL's JSONB.
pub fn canonical_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

fn content_key(v: &Value) -> String {
    hash_hex(canonical_json(v).as_bytes())
}

/// A JSON column: SQLite's text parsed, PostgreSQL's value as is.
fn json_col(v: Option<&Value>) -> Result<Value, String> {
    match v {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::String(s)) => {
            serde_json::from_str(s).map_err(|e| format!("malformed JSON {s:.80?}: {e}"))
        }
        Some(other) => Ok(other.clone()),
    }
}

/// A timestamp column: ISO 8601 with any offset, or SQLite's naive `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC).
pub fn ts_col(v: Option<&Value>) -> Result<Option<DateTime<Utc>>, String> {
    let s = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim(),
        Some(other) => return Err(format!("not a timestamp: {other}")),
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok(Some(t.with_timezone(&Utc)));
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(Some(t.and_utc()));
        }
    }
    Err(format!("unparsable timestamp {s:?}"))
}

fn ts_json(v: Option<&Value>) -> Result<Value, String> {
    Ok(ts_col(v)?.map_or(Value::Null, |t| Value::String(store::original::rfc3339(t))))
}

fn bool_col(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Bool(b)) => Value::Bool(*b),
        Some(Value::Number(n)) => Value::Bool(n.as_i64().unwrap_or(0) != 0),
        Some(Value::String(s)) => Value::Bool(matches!(s.as_str(), "1" | "true" | "t" | "True")),
        _ => Value::Null,
    }
}

/// A number column; the original keeps some scores as text (`snowshoe_detections.confidence_score`).
fn num_col(v: Option<&Value>) -> Result<Value, String> {
    match v {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::Number(n)) => Ok(Value::Number(n.clone())),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Value::Null),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("not a number: {s:?}")),
        Some(other) => Err(format!("not a number: {other}")),
    }
}

fn int_col(v: Option<&Value>) -> Result<Value, String> {
    match num_col(v)? {
        Value::Number(n) => Ok(Value::from(n.as_f64().unwrap_or(0.0).round() as i64)),
        other => Ok(other),
    }
}

fn text_col(v: Option<&Value>) -> Value {
    match v {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Number(n)) => Value::String(n.to_string()),
        _ => Value::Null,
    }
}

// -------------------------------------------------------------------------------------------------------------
// Row mappings.

/// Keys the original's defanging adds to a command event (spec section 2.2); removed on import.
const DEFANG_KEYS: [&str; 6] = [
    "input_safe",
    "command_safe",
    "input_hash",
    "input_original",
    "command_original",
    "command_analysis",
];

/// Undoes the original's defanging: `input`/`command` get back what the attacker typed (`*_original`), and the
/// keys the original added are removed. Returns whether anything changed.
pub fn undo_defang(obj: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    for (field, orig) in [("input", "input_original"), ("command", "command_original")] {
        if let Some(v) = obj.get(orig).cloned() {
            obj.insert(field.into(), v);
        }
    }
    for k in DEFANG_KEYS {
        changed |= obj.remove(k).is_some();
    }
    changed
}

/// Maps one original `raw_events` row (`id`, `source`, `source_offset`, `source_inode`, `payload`).
#[allow(clippy::result_large_err)]
fn map_event(row: &Map<String, Value>, sensor: &str) -> Result<ImportedEvent, ImportedDeadLetter> {
    let id = row.get("id").and_then(Value::as_i64).unwrap_or_default();
    let source = row
        .get("source")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let offset = row
        .get("source_offset")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let inode = match text_col(row.get("source_inode")) {
        Value::String(s) => Some(s),
        _ => None,
    };
    let dead = |key: String, reason: &str, detail: String, raw: String, payload: Option<Value>| {
        ImportedDeadLetter {
            stream_id: format!("{STREAM_PREFIX}{key}"),
            source: source.clone(),
            offset,
            sensor: sensor.to_owned(),
            reason: reason.to_owned(),
            detail: Some(format!("cowrieprocessor raw_events id {id}: {detail}")),
            raw,
            payload,
        }
    };
    let value = match row.get("payload") {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v) => v,
            Err(e) => {
                return Err(dead(
                    hash_hex(s.as_bytes()),
                    "json_parse_error",
                    e.to_string(),
                    s.clone(),
                    None,
                ));
            }
        },
        Some(v) => v.clone(),
        None => Value::Null,
    };
    let key = content_key(&value);
    let Value::Object(mut obj) = value.clone() else {
        return Err(dead(
            key,
            "not_an_object",
            "payload is not a JSON object".into(),
            value.to_string(),
            Some(value),
        ));
    };
    undo_defang(&mut obj);
    let text = Value::Object(obj).to_string();
    match parse_record(text.as_bytes(), sensor) {
        Ok(mut ev) => {
            ev.offset = offset;
            ev.line = offset;
            Ok(ImportedEvent {
                stream_id: format!("{STREAM_PREFIX}{key}"),
                source,
                inode,
                row: ev,
            })
        }
        Err(r) => Err(dead(
            key,
            r.reason,
            r.detail,
            text,
            r.payload.and_then(|p| serde_json::from_str(&p).ok()),
        )),
    }
}

/// Maps one original `dead_letter_events` row to a celeriac dead letter.
fn map_dead_letter(row: &Map<String, Value>, sensor: &str) -> Result<ImportedDeadLetter, String> {
    let payload = json_col(row.get("payload"))?;
    let mut keyed = Map::new();
    for k in [
        "ingest_id",
        "source",
        "source_offset",
        "reason",
        "created_at",
    ] {
        keyed.insert(k.into(), text_col(row.get(k)));
    }
    keyed.insert("payload".into(), payload.clone());
    let raw = match payload.get("malformed_content") {
        Some(Value::String(s)) => s.clone(),
        _ => payload.to_string(),
    };
    Ok(ImportedDeadLetter {
        stream_id: format!("{STREAM_PREFIX}dlq:{}", content_key(&Value::Object(keyed))),
        source: row
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        offset: row
            .get("source_offset")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        sensor: sensor.to_owned(),
        reason: row
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned(),
        detail: Some(format!(
            "cowrieprocessor dead_letter_events id {}; metadata {}",
            row.get("id").cloned().unwrap_or(Value::Null),
            json_col(row.get("metadata_json")).unwrap_or(Value::Null)
        )),
        raw,
        payload: Some(payload),
    })
}

fn map_session(row: &Map<String, Value>, sensor: &str) -> Result<Value, String> {
    let first = ts_json(row.get("first_event_at"))?;
    let last = ts_json(row.get("last_event_at"))?;
    let created = ts_json(row.get("created_at"))?;
    let pick = |a: &Value, b: &Value| if a.is_null() { b.clone() } else { a.clone() };
    let first_ = pick(&pick(&first, &last), &created);
    let last_ = pick(&pick(&last, &first), &created);
    if first_.is_null() {
        return Err("no first_event_at, last_event_at or created_at".into());
    }
    let matcher = row
        .get("matcher")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(sensor);
    Ok(serde_json::json!({
        "session_id": text_col(row.get("session_id")),
        "sensor": matcher,
        "first_event_at": first_,
        "last_event_at": last_,
        "event_count": int_col(row.get("event_count"))?,
        "command_count": int_col(row.get("command_count"))?,
        "file_downloads": int_col(row.get("file_downloads"))?,
        "login_attempts": int_col(row.get("login_attempts"))?,
        "ssh_key_injections": int_col(row.get("ssh_key_injections"))?,
        "unique_ssh_keys": int_col(row.get("unique_ssh_keys"))?,
        "vt_flagged": bool_col(row.get("vt_flagged")),
        "dshield_flagged": bool_col(row.get("dshield_flagged")),
        "risk_score": int_col(row.get("risk_score"))?,
        "source_files": json_col(row.get("source_files"))?,
        "enrichment": json_col(row.get("enrichment"))?,
        "enrichment_at": ts_json(row.get("enrichment_at"))?,
    }))
}

fn map_file(row: &Map<String, Value>) -> Result<Value, String> {
    let first_seen = ts_json(row.get("first_seen"))?;
    if first_seen.is_null() {
        return Err("no first_seen".into());
    }
    Ok(serde_json::json!({
        "session_id": text_col(row.get("session_id")),
        "shasum": text_col(row.get("shasum")),
        "filename": text_col(row.get("filename")),
        "file_size": int_col(row.get("file_size"))?,
        "download_url": text_col(row.get("download_url")),
        "vt_classification": text_col(row.get("vt_classification")),
        "vt_description": text_col(row.get("vt_description")),
        "vt_malicious": bool_col(row.get("vt_malicious")),
        "vt_positives": int_col(row.get("vt_positives"))?,
        "vt_total": int_col(row.get("vt_total"))?,
        "first_seen": first_seen,
        "last_updated": ts_json(row.get("last_updated"))?,
        "enrichment_status": text_col(row.get("enrichment_status")),
    }))
}

fn mapped(
    original_table: &'static str,
    target: DetectionTable,
    columns: Map<String, Value>,
    parent: Option<(&'static str, String)>,
    event: Option<(String, i64)>,
) -> MappedRow {
    let mut keyed = columns.clone();
    if let Some((_, k)) = &parent {
        keyed.insert("~parent".into(), Value::String(k.clone()));
    }
    if let Some((s, o)) = &event {
        keyed.insert("~event".into(), Value::String(format!("{s}@{o}")));
    }
    MappedRow {
        original_table,
        content_key: content_key(&Value::Object(keyed)),
        target,
        columns,
        parent,
        event,
    }
}

fn map_longtail_analysis(row: &Map<String, Value>) -> Result<MappedRow, String> {
    let mut c = Map::new();
    for k in ["analysis_time", "window_start", "window_end", "created_at"] {
        c.insert(k.into(), ts_json(row.get(k))?);
    }
    for k in ["window_start", "window_end"] {
        if c[k].is_null() {
            return Err(format!("no {k}"));
        }
    }
    for k in [
        "lookback_days",
        "total_events_analyzed",
        "rare_command_count",
        "anomalous_sequence_count",
        "outlier_session_count",
        "emerging_pattern_count",
        "high_entropy_payload_count",
    ] {
        let v = int_col(row.get(k))?;
        c.insert(
            k.into(),
            if v.is_null() && k != "lookback_days" {
                Value::from(0)
            } else {
                v
            },
        );
    }
    for k in [
        "confidence_score",
        "analysis_duration_seconds",
        "memory_usage_mb",
        "data_quality_score",
        "enrichment_coverage",
    ] {
        c.insert(k.into(), num_col(row.get(k))?);
    }
    let results = json_col(row.get("analysis_results"))?;
    c.insert(
        "analysis_results".into(),
        if results.is_null() {
            Value::Object(Map::new())
        } else {
            results
        },
    );
    c.insert(
        "statistical_summary".into(),
        json_col(row.get("statistical_summary"))?,
    );
    c.insert("recommendation".into(), text_col(row.get("recommendation")));
    drop_nulls(&mut c, &["analysis_time", "created_at"]);
    Ok(mapped(
        "longtail_analysis",
        DetectionTable::LongtailAnalysis,
        c,
        None,
        None,
    ))
}

/// Leaves out null values of columns that have a default, so the default applies.
fn drop_nulls(c: &mut Map<String, Value>, defaulted: &[&str]) {
    for k in defaulted {
        if c.get(*k).is_some_and(Value::is_null) {
            c.remove(*k);
        }
    }
}

fn map_longtail_detection(
    row: &Map<String, Value>,
    analysis_keys: &BTreeMap<i64, String>,
    sensor: &str,
) -> Result<MappedRow, String> {
    let aid = row
        .get("analysis_id")
        .and_then(Value::as_i64)
        .ok_or("no analysis_id")?;
    let parent = analysis_keys
        .get(&aid)
        .cloned()
        .ok_or_else(|| format!("its analysis {aid} is not in longtail_analysis"))?;
    let mut c = Map::new();
    c.insert("detection_type".into(), text_col(row.get("detection_type")));
    if c["detection_type"].is_null() {
        return Err("no detection_type".into());
    }
    c.insert("session_id".into(), text_col(row.get("session_id")));
    let data = json_col(row.get("detection_data"))?;
    c.insert(
        "detection_data".into(),
        if data.is_null() {
            Value::Object(Map::new())
        } else {
            data
        },
    );
    c.insert(
        "confidence_score".into(),
        num_col(row.get("confidence_score"))?,
    );
    c.insert("severity_score".into(), num_col(row.get("severity_score"))?);
    c.insert("timestamp".into(), ts_json(row.get("timestamp"))?);
    if c["timestamp"].is_null() {
        return Err("no timestamp".into());
    }
    c.insert("source_ip".into(), text_col(row.get("source_ip")));
    c.insert("created_at".into(), ts_json(row.get("created_at"))?);
    drop_nulls(&mut c, &["created_at"]);
    // The raw event it names, as imported (same key as map_event).
    let event = match row.get("event_payload") {
        Some(Value::Null) | None => None,
        Some(p) => {
            let v = json_col(Some(p)).unwrap_or_else(|_| p.clone());
            let ev = Map::from_iter([
                ("id".to_owned(), Value::from(0)),
                ("payload".to_owned(), v),
                (
                    "source_offset".to_owned(),
                    row.get("event_source_offset")
                        .cloned()
                        .unwrap_or(Value::Null),
                ),
            ]);
            map_event(&ev, sensor)
                .ok()
                .map(|e| (e.stream_id, e.row.offset))
        }
    };
    Ok(mapped(
        "longtail_detections",
        DetectionTable::LongtailDetections,
        c,
        Some(("longtail_analysis", parent)),
        event,
    ))
}

/// The original stores botnet results in `snowshoe_detections` too; their indicators name credentials and commands.
fn is_botnet(indicators: &Value) -> bool {
    indicators.get("credentials").is_some() || indicators.get("commands").is_some()
}

fn map_snowshoe(row: &Map<String, Value>) -> Result<MappedRow, String> {
    let mut common = Map::new();
    for k in ["detection_time", "window_start", "window_end", "created_at"] {
        common.insert(k.into(), ts_json(row.get(k))?);
    }
    for k in ["window_start", "window_end"] {
        if common[k].is_null() {
            return Err(format!("no {k}"));
        }
    }
    let indicators = json_col(row.get("indicators"))?;
    let indicators = if indicators.is_null() {
        Value::Object(Map::new())
    } else {
        indicators
    };
    let metadata = json_col(row.get("analysis_metadata"))?;
    let score = num_col(row.get("confidence_score"))?;
    let score = if score.is_null() {
        Value::from(0.0)
    } else {
        score
    };
    let likely = bool_col(row.get("is_likely_snowshoe"));
    let likely = if likely.is_null() {
        Value::Bool(false)
    } else {
        likely
    };
    let timing = bool_col(row.get("coordinated_timing"));
    let timing = if timing.is_null() {
        Value::Bool(false)
    } else {
        timing
    };
    // The whole original row, so nothing the columns cannot hold is lost.
    let mut result = row.clone();
    result.remove("id");
    result.insert("indicators".into(), indicators.clone());
    result.insert("analysis_metadata".into(), metadata.clone());
    let mut c = common;
    c.insert("indicators".into(), indicators.clone());
    c.insert("analysis_metadata".into(), metadata);
    c.insert("recommendation".into(), text_col(row.get("recommendation")));
    c.insert("coordinated_timing".into(), timing);
    c.insert("result".into(), Value::Object(result));
    let target = if is_botnet(&indicators) {
        c.insert("coordination_score".into(), score);
        c.insert("is_likely_botnet".into(), likely);
        c.insert(
            "geographic_clustering".into(),
            Value::Bool(
                indicators
                    .pointer("/geographic/is_clustered")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            ),
        );
        DetectionTable::BotnetDetections
    } else {
        c.insert("confidence_score".into(), score);
        c.insert("is_likely_snowshoe".into(), likely);
        c.insert("unique_ips".into(), int_col(row.get("unique_ips"))?);
        c.insert(
            "single_attempt_ips".into(),
            int_col(row.get("single_attempt_ips"))?,
        );
        c.insert(
            "low_volume_ips".into(),
            Value::from(
                indicators
                    .pointer("/volume/low_volume_ips")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            ),
        );
        c.insert(
            "geographic_spread".into(),
            num_col(row.get("geographic_spread"))?,
        );
        drop_nulls(&mut c, &["unique_ips", "single_attempt_ips"]);
        DetectionTable::SnowshoeDetections
    };
    drop_nulls(&mut c, &["detection_time", "created_at"]);
    Ok(mapped("snowshoe_detections", target, c, None, None))
}

// -------------------------------------------------------------------------------------------------------------
// The run.

/// What the original calls each table, the `SELECT` read from it, and its key column.
const EVENTS_SELECT: &str =
    "SELECT id, source, source_offset, source_inode, payload FROM raw_events";
const DETECTIONS_SELECT: &str = "SELECT d.*, r.payload AS event_payload, r.source_offset AS event_source_offset \
     FROM longtail_detections d LEFT JOIN raw_events r ON r.id = d.event_id";

fn key_of(row: &Map<String, Value>, key: &str) -> Option<OriginalKey> {
    match row.get(key)? {
        Value::Number(n) => n.as_i64().map(OriginalKey::Int),
        Value::String(s) => Some(OriginalKey::Text(s.clone())),
        _ => None,
    }
}

struct Run<'a> {
    opts: &'a ImportOptions,
    src: Source,
    pool: Option<store::PgPool>,
    import_id: i64,
    ingest_id: String,
    report: ImportReport,
}

impl Run<'_> {
    async fn conn(&self) -> Result<store::PooledConn<'_>, ImportError> {
        let pool = self.pool.as_ref().expect("a pool when not a dry run");
        Ok(pool.get().await.map_err(store::StoreError::from)?)
    }

    fn refuse(&mut self, table: &'static str, what: String) {
        self.report.tables.entry(table).or_default().refused += 1;
        self.report.errors.push(format!("{table}: {what}"));
    }

    /// Pages through one original table, handing each page to `f`.
    async fn pages(
        &mut self,
        table: &'static str,
        select: &str,
        key: &str,
        mut f: impl AsyncFnMut(&mut Self, Vec<Map<String, Value>>) -> Result<(), ImportError>,
    ) -> Result<(), ImportError> {
        let mut after: Option<OriginalKey> = None;
        loop {
            let page = self
                .src
                .page(select, key, after.as_ref(), self.opts.batch_size)
                .await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(
                key_of(last, key)
                    .ok_or_else(|| ImportError::Read(format!("{table}: a row without {key}")))?,
            );
            self.report.tables.entry(table).or_default().read += page.len() as u64;
            let n = page.len();
            f(self, page).await?;
            if n < self.opts.batch_size {
                return Ok(());
            }
        }
    }

    async fn raw_events(&mut self) -> Result<(), ImportError> {
        self.pages("raw_events", EVENTS_SELECT, "id", async |run, page| {
            let (mut evs, mut dead) = (Vec::new(), Vec::new());
            for row in &page {
                match map_event(row, &run.opts.sensor) {
                    Ok(e) => evs.push(e),
                    Err(d) => dead.push(d),
                }
            }
            let c = run.report.tables.entry("raw_events").or_default();
            if run.opts.dry_run {
                c.inserted += evs.len() as u64;
                c.dead_letters += dead.len() as u64;
                return Ok(());
            }
            let o = {
                let mut conn = run.conn().await?;
                store::original::import_events(&mut conn, &run.ingest_id, &evs, &dead).await?
            };
            let c = run.report.tables.entry("raw_events").or_default();
            c.inserted += o.inserted;
            c.already_imported += o.duplicates + (dead.len() as u64 - o.dead_letters_inserted);
            c.dead_letters += o.dead_letters_inserted;
            run.report.changed += o.inserted + o.dead_letters_inserted;
            Ok(())
        })
        .await
    }

    async fn dead_letters(&mut self) -> Result<(), ImportError> {
        self.pages(
            "dead_letter_events",
            "SELECT * FROM dead_letter_events",
            "id",
            async |run, page| {
                let mut dead = Vec::new();
                for row in &page {
                    match map_dead_letter(row, &run.opts.sensor) {
                        Ok(d) => dead.push(d),
                        Err(e) => run.refuse(
                            "dead_letter_events",
                            format!("id {}: {e}", row.get("id").cloned().unwrap_or_default()),
                        ),
                    }
                }
                if run.opts.dry_run {
                    run.report
                        .tables
                        .entry("dead_letter_events")
                        .or_default()
                        .inserted += dead.len() as u64;
                    return Ok(());
                }
                let o = {
                    let mut conn = run.conn().await?;
                    store::original::import_events(&mut conn, &run.ingest_id, &[], &dead).await?
                };
                let c = run.report.tables.entry("dead_letter_events").or_default();
                c.inserted += o.dead_letters_inserted;
                c.already_imported += dead.len() as u64 - o.dead_letters_inserted;
                run.report.changed += o.dead_letters_inserted;
                Ok(())
            },
        )
        .await
    }

    async fn sessions(&mut self) -> Result<(), ImportError> {
        self.pages(
            "session_summaries",
            "SELECT * FROM session_summaries",
            "session_id",
            async |run, page| {
                let mut rows = Vec::new();
                for row in &page {
                    match map_session(row, &run.opts.sensor) {
                        Ok(v) => rows.push(v),
                        Err(e) => run.refuse(
                            "session_summaries",
                            format!("session {}: {e}", text_col(row.get("session_id"))),
                        ),
                    }
                }
                if run.opts.dry_run {
                    return Ok(());
                }
                let o = {
                    let mut conn = run.conn().await?;
                    store::original::import_sessions(&mut conn, &rows).await?
                };
                let c = run.report.tables.entry("session_summaries").or_default();
                c.inserted += o.copied;
                c.enriched += o.enriched;
                c.already_imported += rows.len() as u64 - o.copied;
                run.report.changed += o.copied + o.enriched;
                Ok(())
            },
        )
        .await
    }

    async fn files(&mut self) -> Result<(), ImportError> {
        self.pages("files", "SELECT * FROM files", "id", async |run, page| {
            let mut rows = Vec::new();
            for row in &page {
                match map_file(row) {
                    Ok(v) => rows.push(v),
                    Err(e) => run.refuse(
                        "files",
                        format!("id {}: {e}", row.get("id").cloned().unwrap_or_default()),
                    ),
                }
            }
            if run.opts.dry_run {
                return Ok(());
            }
            let o = {
                let mut conn = run.conn().await?;
                store::original::import_files(&mut conn, &rows, &run.opts.sensor).await?
            };
            let c = run.report.tables.entry("files").or_default();
            c.inserted += o.copied;
            c.enriched += o.enriched;
            c.already_imported += rows.len() as u64 - o.copied;
            run.report.changed += o.copied + o.enriched;
            Ok(())
        })
        .await
    }

    async fn write_rows(
        &mut self,
        table: &'static str,
        rows: Vec<MappedRow>,
    ) -> Result<(), ImportError> {
        if self.opts.dry_run {
            self.report.tables.entry(table).or_default().inserted += rows.len() as u64;
            return Ok(());
        }
        let o = {
            let mut conn = self.conn().await?;
            store::original::import_rows(&mut conn, self.import_id, &rows).await?
        };
        let c = self.report.tables.entry(table).or_default();
        c.inserted += o.inserted;
        c.already_imported += o.already_imported;
        self.report.changed += o.inserted;
        for k in o.orphans {
            self.refuse(table, format!("row {k}: its analysis was not imported"));
        }
        Ok(())
    }

    async fn longtail(&mut self) -> Result<BTreeMap<i64, String>, ImportError> {
        // Original analysis id -> content key, for the detections (ids only: small).
        let mut keys = BTreeMap::new();
        self.pages(
            "longtail_analysis",
            "SELECT * FROM longtail_analysis",
            "id",
            async |run, page| {
                let mut rows = Vec::new();
                for row in &page {
                    let id = row.get("id").and_then(Value::as_i64).unwrap_or_default();
                    match map_longtail_analysis(row) {
                        Ok(m) => {
                            keys.insert(id, m.content_key.clone());
                            rows.push(m);
                        }
                        Err(e) => run.refuse("longtail_analysis", format!("id {id}: {e}")),
                    }
                }
                run.write_rows("longtail_analysis", rows).await
            },
        )
        .await?;
        Ok(keys)
    }

    async fn longtail_detections(
        &mut self,
        keys: &BTreeMap<i64, String>,
    ) -> Result<(), ImportError> {
        self.pages(
            "longtail_detections",
            DETECTIONS_SELECT,
            "id",
            async |run, page| {
                let mut rows = Vec::new();
                for row in &page {
                    match map_longtail_detection(row, keys, &run.opts.sensor) {
                        Ok(m) => rows.push(m),
                        Err(e) => run.refuse(
                            "longtail_detections",
                            format!("id {}: {e}", row.get("id").cloned().unwrap_or_default()),
                        ),
                    }
                }
                run.write_rows("longtail_detections", rows).await
            },
        )
        .await
    }

    async fn snowshoe(&mut self) -> Result<(), ImportError> {
        self.pages(
            "snowshoe_detections",
            "SELECT * FROM snowshoe_detections",
            "id",
            async |run, page| {
                let mut rows = Vec::new();
                for row in &page {
                    match map_snowshoe(row) {
                        Ok(m) => rows.push(m),
                        Err(e) => run.refuse(
                            "snowshoe_detections",
                            format!("id {}: {e}", row.get("id").cloned().unwrap_or_default()),
                        ),
                    }
                }
                run.write_rows("snowshoe_detections", rows).await
            },
        )
        .await
    }
}

/// Checks that `tables` and `version` are an original cowrieprocessor database this importer knows.
pub fn check_original(tables: &HashSet<String>, version: Option<&str>) -> Result<(), ImportError> {
    for t in REQUIRED_TABLES {
        if !tables.contains(t) {
            return Err(ImportError::NotOriginal(format!("table {t} is missing")));
        }
    }
    let Some(v) = version else {
        return Err(ImportError::NotOriginal(
            "schema_state has no schema_version".into(),
        ));
    };
    if v.starts_with("celeriac") {
        return Err(ImportError::NotOriginal(format!(
            "schema version {v:?} is celeriac's own: this is already a celeriac database"
        )));
    }
    match v.trim().parse::<i64>() {
        Ok(n) if (1..=NEWEST_ORIGINAL_SCHEMA).contains(&n) => Ok(()),
        _ => Err(ImportError::UnknownVersion(v.to_owned())),
    }
}

/// The optional tables, in import order (each after what it refers to).
const OPTIONAL_TABLES: [&str; 5] = [
    "dead_letter_events",
    "files",
    "longtail_analysis",
    "longtail_detections",
    "snowshoe_detections",
];

/// Runs an import; the report is complete (with its exit code) whatever happens.
pub async fn import_original(opts: &ImportOptions) -> ImportReport {
    let mut report = ImportReport {
        mode: "import-original",
        source: transport::redact_url(&opts.from),
        sensor: opts.sensor.clone(),
        dry_run: opts.dry_run,
        ..ImportReport::default()
    };
    match run(opts, &mut report).await {
        Ok(()) => {
            report.exit_code = if report.errors.is_empty() {
                exit::OK
            } else {
                exit::PARTIAL
            };
        }
        Err(e) => {
            report.errors.push(e.to_string());
            report.exit_code = e.exit_code();
        }
    }
    report
}

async fn run(opts: &ImportOptions, report: &mut ImportReport) -> Result<(), ImportError> {
    let (src, kind) = Source::open(&opts.from)?;
    report.source_kind = kind.into();
    let tables = src.tables().await?;
    if let Some(t) = REQUIRED_TABLES.iter().find(|t| !tables.contains(**t)) {
        return Err(ImportError::NotOriginal(format!("table {t} is missing")));
    }
    let version = src.schema_version().await?;
    report.schema_version = version.clone().unwrap_or_default();
    check_original(&tables, version.as_deref())?;
    report.tables_absent = OPTIONAL_TABLES
        .into_iter()
        .filter(|t| !tables.contains(*t))
        .collect();

    let pool = if opts.dry_run {
        None
    } else {
        crate::engine::ensure_schema(&opts.database_url, opts.max_wait)
            .await
            .map_err(|(code, msg)| ImportError::Schema(code, msg))?;
        Some(store::build_pool(
            &opts.database_url,
            2,
            Duration::from_secs(10),
        ))
    };
    let import_id = match &pool {
        Some(p) => {
            let mut c = p.get().await.map_err(store::StoreError::from)?;
            let id = store::original::begin_import(
                &mut c,
                &report.source,
                kind,
                &report.schema_version,
                &opts.sensor,
            )
            .await?;
            report.import_id = Some(id);
            id
        }
        None => 0,
    };
    let mut run = Run {
        opts,
        src,
        pool,
        import_id,
        ingest_id: format!("import-original:{}", uuid::Uuid::now_v7()),
        report: std::mem::take(report),
    };
    let result = async {
        // Events first: sessions and files are recomputed from them, then take what only the original has.
        run.raw_events().await?;
        if tables.contains("dead_letter_events") {
            run.dead_letters().await?;
        }
        run.sessions().await?;
        if tables.contains("files") {
            run.files().await?;
        }
        let keys = if tables.contains("longtail_analysis") {
            run.longtail().await?
        } else {
            BTreeMap::new()
        };
        if tables.contains("longtail_detections") {
            run.longtail_detections(&keys).await?;
        }
        if tables.contains("snowshoe_detections") {
            run.snowshoe().await?;
        }
        Ok::<(), ImportError>(())
    }
    .await;
    *report = std::mem::take(&mut run.report);
    if let Some(pool) = &run.pool {
        let counts = serde_json::to_value(&report.tables).unwrap_or(Value::Null);
        let err = match &result {
            Err(e) => Some(e.to_string()),
            Ok(()) if !report.errors.is_empty() => Some(report.errors.join("; ")),
            Ok(()) => None,
        };
        let mut c = pool.get().await.map_err(store::StoreError::from)?;
        store::original::finish_import(
            &mut c,
            import_id,
            result.is_ok() && report.errors.is_empty(),
            &counts,
            report.changed as i64,
            err.as_deref(),
        )
        .await?;
    }
    result
}

// -------------------------------------------------------------------------------------------------------------
// The command line.

/// Arguments of `cowrie-loader import-original`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The original database: `sqlite:///path/to/db.sqlite` or `postgres://user@host/db`.
    #[arg(long = "from", value_name = "URL")]
    pub from: String,
    /// Sensor name for events whose `sensor` is empty (use the `--sensor` the cron will use with `delta`).
    #[arg(long)]
    pub sensor: String,
    /// Rows read and written per transaction.
    #[arg(long, default_value_t = 2000)]
    pub batch_size: usize,
    /// Read and map everything and report what would be imported, write nothing (needs no celeriac database).
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to keep retrying while celeriac's PostgreSQL is unreachable at start.
    #[arg(long, default_value_t = 60)]
    pub max_wait: u64,
}

/// Runs `import-original`, prints its JSON line and returns the exit code.
pub async fn run_cli(database_url: &str, args: ImportArgs) -> i32 {
    let opts = ImportOptions {
        from: args.from,
        database_url: database_url.to_owned(),
        sensor: args.sensor,
        batch_size: args.batch_size.max(1),
        dry_run: args.dry_run,
        max_wait: Duration::from_secs(args.max_wait),
    };
    let report = import_original(&opts).await;
    for e in &report.errors {
        eprintln!("cowrie-loader: import-original: {e}");
    }
    println!(
        "{}",
        serde_json::to_string(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    );
    report.exit_code
}
