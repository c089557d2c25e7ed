//! Migration from the original cowrieprocessor: reading its PostgreSQL database, and writing what
//! `cowrie-loader import-original` maps from it (from PostgreSQL or SQLite) into celeriac's tables, exactly once.
//!
//! Exactly-once keys:
//! - raw events: `raw_events` is unique on `(stream_id, source_generation, source_offset)`; an imported event gets
//!   `stream_id = "original:<hash of its payload>"`, generation 0 and the original's 0-based line index as offset, so
//!   the key is the event's content and line, the same from any copy of the original database (and the original's
//!   own duplicates of a renamed file, F5, collapse to one row). Session counters, `files` rows and the hourly rollups
//!   are computed from exactly the rows the insert wrote, as for a loaded log.
//! - analyses and detections have no natural key: `original_import_rows` maps a hash of each original row's content
//!   to the celeriac row made from it, in the same transaction.
//! - `original_imports` is the ledger: one row per run with its counts per table and how many rows it changed.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Integer, Jsonb, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};

use crate::StoreError;
use crate::ingest::{EventRow, StreamRef};

/// Prefix of the `stream_id` of every imported event and dead letter.
pub const STREAM_PREFIX: &str = "original:";

// ---------------------------------------------------------------------------------------------------------------
// Reading the original's PostgreSQL database.

#[derive(QueryableByName)]
struct RowJson {
    #[diesel(sql_type = Text)]
    row: String,
}

/// Where a paged read of an original table continues: after this value of its key column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginalKey {
    Int(i64),
    Text(String),
}

/// Reads up to `limit` rows of `select` (a `SELECT` over the original's schema) in the order of its column `key`,
/// after `after` when given, each as a JSON object (`row_to_json`: timestamps in ISO 8601, JSON columns as JSON).
/// `select` and `key` must be constants of the caller, never user input.
pub async fn read_original_rows(
    conn: &mut AsyncPgConnection,
    select: &str,
    key: &str,
    after: Option<&OriginalKey>,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let cond = match after {
        None => "TRUE".to_owned(),
        Some(OriginalKey::Int(_)) => format!("t.\"{key}\" > $2::int8"),
        Some(OriginalKey::Text(_)) => format!("t.\"{key}\" > $2::text"),
    };
    let sql = format!(
        "SELECT row_to_json(t)::text AS row FROM ({select}) t WHERE {cond} ORDER BY t.\"{key}\" LIMIT $1"
    );
    let q = diesel::sql_query(sql).bind::<BigInt, _>(limit);
    let rows: Vec<RowJson> = match after {
        None => q.load(conn).await?,
        Some(OriginalKey::Int(i)) => q.bind::<BigInt, _>(*i).load(conn).await?,
        Some(OriginalKey::Text(t)) => q.bind::<Text, _>(t.as_str()).load(conn).await?,
    };
    Ok(rows.into_iter().map(|r| r.row).collect())
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct OptText {
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
}

/// Tables of the connected database's search path.
pub async fn original_tables(conn: &mut AsyncPgConnection) -> Result<HashSet<String>, StoreError> {
    let rows: Vec<Name> = diesel::sql_query(
        "SELECT table_name::text AS name FROM information_schema.tables \
         WHERE table_schema = ANY(current_schemas(false))",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

/// `schema_state.value` for `key` (the original keeps `schema_version` there).
pub async fn original_schema_state(
    conn: &mut AsyncPgConnection,
    key: &str,
) -> Result<Option<String>, StoreError> {
    let rows: Vec<OptText> =
        diesel::sql_query("SELECT value::text AS value FROM schema_state WHERE key = $1")
            .bind::<Text, _>(key)
            .load(conn)
            .await?;
    Ok(rows.into_iter().next().and_then(|r| r.value))
}

// ---------------------------------------------------------------------------------------------------------------
// The ledger.

/// One run of the importer as recorded in `original_imports`.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct ImportRecord {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Text)]
    pub source_kind: String,
    #[diesel(sql_type = Text)]
    pub schema_version: String,
    #[diesel(sql_type = Text)]
    pub sensor: String,
    #[diesel(sql_type = Text)]
    pub outcome: String,
    #[diesel(sql_type = Jsonb)]
    pub counts: Value,
    #[diesel(sql_type = BigInt)]
    pub changed: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Records the start of a run and returns its ledger id.
pub async fn begin_import(
    conn: &mut AsyncPgConnection,
    source: &str,
    source_kind: &str,
    schema_version: &str,
    sensor: &str,
) -> Result<i64, StoreError> {
    let r: Id = diesel::sql_query(
        "INSERT INTO original_imports (source, source_kind, schema_version, sensor) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind::<Text, _>(source)
    .bind::<Text, _>(source_kind)
    .bind::<Text, _>(schema_version)
    .bind::<Text, _>(sensor)
    .get_result(conn)
    .await?;
    Ok(r.id)
}

/// Completes a run's ledger row.
pub async fn finish_import(
    conn: &mut AsyncPgConnection,
    id: i64,
    ok: bool,
    counts: &Value,
    changed: i64,
    error: Option<&str>,
) -> Result<(), StoreError> {
    diesel::sql_query(
        "UPDATE original_imports SET finished_at = now(), outcome = $2, counts = $3, changed = $4, error = $5 \
         WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .bind::<Text, _>(if ok { "ok" } else { "failed" })
    .bind::<Jsonb, _>(counts)
    .bind::<BigInt, _>(changed)
    .bind::<Nullable<Text>, _>(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every run in the ledger, oldest first.
pub async fn import_ledger(conn: &mut AsyncPgConnection) -> Result<Vec<ImportRecord>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT id, source, source_kind, schema_version, sensor, outcome, counts, changed, error \
         FROM original_imports ORDER BY id",
    )
    .load(conn)
    .await?)
}

// ---------------------------------------------------------------------------------------------------------------
// Raw events (with their sessions, files and rollups) and dead letters.

/// One event of the original's `raw_events`, parsed by the loader's own parser.
#[derive(Debug, Clone)]
pub struct ImportedEvent {
    /// `original:<content hash>`.
    pub stream_id: String,
    /// The original's `source` (the log path).
    pub source: String,
    pub inode: Option<String>,
    /// `offset` and `line` are the original's 0-based line index.
    pub row: EventRow,
}

/// A row that cannot be stored as an event: an original raw event celeriac's parser refuses, or one of the
/// original's own dead letters.
#[derive(Debug, Clone)]
pub struct ImportedDeadLetter {
    pub stream_id: String,
    pub source: String,
    pub offset: i64,
    pub sensor: String,
    pub reason: String,
    pub detail: Option<String>,
    /// The text as the original kept it.
    pub raw: String,
    /// The JSON value, when the text was JSON.
    pub payload: Option<Value>,
}

/// What one batch of events changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventsOutcome {
    pub inserted: u64,
    pub duplicates: u64,
    pub sessions_touched: u64,
    pub files_inserted: u64,
    pub dead_letters_inserted: u64,
}

#[derive(QueryableByName)]
struct Inserted {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    stream_id: String,
    #[diesel(sql_type = BigInt)]
    source_offset: i64,
}

const INSERT_EVENTS_SQL: &str = "
INSERT INTO raw_events (ingest_id, source, stream_id, source_generation, source_offset, source_line, source_inode,
                        payload, payload_hash, session_id, event_type, event_timestamp, src_ip, sensor, risk_score,
                        quarantined)
SELECT $1, source, stream_id, 0, off, off, inode, payload::jsonb, phash, session_id, event_type, ts, src_ip, sensor,
       risk, quar
FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::text[], $9::text[],
            $10::timestamptz[], $11::text[], $12::text[], $13::int4[], $14::bool[])
     AS t(source, stream_id, inode, off, payload, phash, session_id, event_type, ts, src_ip, sensor, risk, quar)
ON CONFLICT ON CONSTRAINT uq_raw_events_source_offset DO NOTHING
RETURNING id, stream_id, source_offset
";

const INSERT_DEAD_SQL: &str = "
INSERT INTO dead_letter_events (ingest_id, source, stream_id, source_generation, source_offset, source_line, sensor,
                                reason, detail, raw_line, raw_bytes, payload)
SELECT $1, t.source, t.stream_id, 0, t.off, t.off, t.sensor, t.reason, t.detail, t.raw, convert_to(t.raw, 'UTF8'),
       t.payload
FROM jsonb_to_recordset($2::jsonb)
     AS t(source text, stream_id text, off int8, sensor text, reason text, detail text, raw text, payload jsonb)
ON CONFLICT ON CONSTRAINT uq_dead_letter_source_offset DO NOTHING
";

/// Writes one batch of imported events and dead letters in one transaction: the events that are new, the session
/// counters and `files` rows computed from exactly those (celeriac's own aggregation, as for a loaded log), their
/// hourly rollups, and the dead letters that are new.
pub async fn import_events(
    conn: &mut AsyncPgConnection,
    ingest_id: &str,
    events: &[ImportedEvent],
    dead: &[ImportedDeadLetter],
) -> Result<EventsOutcome, StoreError> {
    conn.transaction::<_, StoreError, _>(async |conn| {
        let mut out = EventsOutcome::default();
        if !events.is_empty() {
            let text = |f: &dyn Fn(&ImportedEvent) -> Option<String>| -> Vec<Option<String>> {
                events.iter().map(f).collect()
            };
            let ins: Vec<Inserted> = diesel::sql_query(INSERT_EVENTS_SQL)
                .bind::<Text, _>(ingest_id)
                .bind::<Array<Text>, _>(
                    events.iter().map(|e| e.source.as_str()).collect::<Vec<_>>(),
                )
                .bind::<Array<Text>, _>(
                    events
                        .iter()
                        .map(|e| e.stream_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Nullable<Text>>, _>(text(&|e| e.inode.clone()))
                .bind::<Array<BigInt>, _>(events.iter().map(|e| e.row.offset).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(
                    events
                        .iter()
                        .map(|e| e.row.payload.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Text>, _>(
                    events
                        .iter()
                        .map(|e| e.row.payload_hash.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Nullable<Text>>, _>(text(&|e| e.row.session_id.clone()))
                .bind::<Array<Text>, _>(
                    events
                        .iter()
                        .map(|e| e.row.event_type.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<diesel::sql_types::Timestamptz>, _>(
                    events.iter().map(|e| e.row.timestamp).collect::<Vec<_>>(),
                )
                .bind::<Array<Nullable<Text>>, _>(text(&|e| e.row.src_ip.clone()))
                .bind::<Array<Text>, _>(
                    events
                        .iter()
                        .map(|e| e.row.sensor.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Integer>, _>(
                    events.iter().map(|e| e.row.risk_score).collect::<Vec<_>>(),
                )
                .bind::<Array<diesel::sql_types::Bool>, _>(
                    events.iter().map(|e| e.row.quarantined).collect::<Vec<_>>(),
                )
                .load(conn)
                .await?;
            out.inserted = ins.len() as u64;
            out.duplicates = (events.len() - ins.len()) as u64;
            let keys: HashSet<(&str, i64)> = ins
                .iter()
                .map(|r| (r.stream_id.as_str(), r.source_offset))
                .collect();
            let fresh: Vec<&ImportedEvent> = events
                .iter()
                .filter(|e| keys.contains(&(e.stream_id.as_str(), e.row.offset)))
                .collect();
            // Sessions per original source file, so each session lists the files its events came from.
            let mut by_source: BTreeMap<&str, Vec<&EventRow>> = BTreeMap::new();
            for e in &fresh {
                by_source.entry(e.source.as_str()).or_default().push(&e.row);
            }
            for (source, rows) in &by_source {
                let stream = StreamRef {
                    stream_id: String::new(),
                    first_line_hash: String::new(),
                    generation: 0,
                    source: (*source).to_owned(),
                    inode: None,
                    sensor: rows[0].sensor.clone(),
                };
                out.sessions_touched += crate::ingest::upsert_sessions(conn, &stream, rows).await?;
            }
            let rows: Vec<&EventRow> = fresh.iter().map(|e| &e.row).collect();
            out.files_inserted = crate::ingest::insert_files(conn, &rows).await?;
            add_rollups(conn, &ins.iter().map(|r| r.id).collect::<Vec<_>>()).await?;
        }
        if !dead.is_empty() {
            let arr: Vec<Value> = dead
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "source": crate::ingest::pg_safe_text(&d.source),
                        "stream_id": d.stream_id,
                        "off": d.offset,
                        "sensor": d.sensor,
                        "reason": d.reason,
                        "detail": d.detail.as_deref().map(crate::ingest::pg_safe_text),
                        "raw": crate::ingest::pg_safe_text(&d.raw),
                        "payload": d.payload,
                    })
                })
                .collect();
            out.dead_letters_inserted = diesel::sql_query(INSERT_DEAD_SQL)
                .bind::<Text, _>(ingest_id)
                .bind::<Jsonb, _>(Value::Array(arr))
                .execute(conn)
                .await? as u64;
        }
        Ok(out)
    })
    .await
}

/// The loader's rollup statement, selecting the fresh rows by id instead of by one stream's offsets.
async fn add_rollups(conn: &mut AsyncPgConnection, ids: &[i64]) -> Result<(), StoreError> {
    const BY_STREAM: &str =
        "stream_id = $1 AND source_generation = $2 AND source_offset = ANY($3::int8[])";
    if ids.is_empty() {
        return Ok(());
    }
    if !crate::rollups::ADD_SQL.contains(BY_STREAM) {
        return Err(StoreError::Migration(
            "rollups::ADD_SQL no longer selects rows by stream; update original::add_rollups"
                .into(),
        ));
    }
    let sql = crate::rollups::ADD_SQL.replacen(BY_STREAM, "id = ANY($1::int8[])", 1);
    diesel::sql_query(sql)
        .bind::<Array<BigInt>, _>(ids)
        .execute(conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// What recomputation cannot give: the original's enrichment of sessions and files.

/// What changed in `session_summaries` from the original's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionsOutcome {
    /// Sessions that had no event to recompute them from, copied as the original had them.
    pub copied: u64,
    /// Recomputed sessions that took the original's enrichment and flags.
    pub enriched: u64,
}

const SESSIONS_SQL: &str = "
WITH o AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS t(
    session_id text, sensor text, first_event_at timestamptz, last_event_at timestamptz, event_count int4,
    command_count int4, file_downloads int4, login_attempts int4, ssh_key_injections int4, unique_ssh_keys int4,
    vt_flagged bool, dshield_flagged bool, risk_score int4, source_files jsonb, enrichment jsonb,
    enrichment_at timestamptz)
),
upd AS (
  UPDATE session_summaries s SET
    enrichment = COALESCE(s.enrichment, o.enrichment),
    enrichment_at = COALESCE(s.enrichment_at, o.enrichment_at),
    vt_flagged = s.vt_flagged OR o.vt_flagged,
    dshield_flagged = s.dshield_flagged OR o.dshield_flagged,
    ssh_key_injections = GREATEST(s.ssh_key_injections, o.ssh_key_injections),
    unique_ssh_keys = GREATEST(s.unique_ssh_keys, o.unique_ssh_keys),
    updated_at = now()
  FROM o
  WHERE s.session_id = o.session_id AND (
    (s.enrichment IS NULL AND o.enrichment IS NOT NULL)
    OR (s.enrichment_at IS NULL AND o.enrichment_at IS NOT NULL)
    OR (o.vt_flagged AND NOT s.vt_flagged)
    OR (o.dshield_flagged AND NOT s.dshield_flagged)
    OR o.ssh_key_injections > s.ssh_key_injections
    OR o.unique_ssh_keys > s.unique_ssh_keys)
  RETURNING 1
),
ins AS (
  INSERT INTO session_summaries (session_id, first_event_at, last_event_at, event_count, command_count,
      file_downloads, login_attempts, ssh_key_injections, unique_ssh_keys, vt_flagged, dshield_flagged, risk_score,
      matcher, sensor, source_files, enrichment, enrichment_at)
  SELECT o.session_id, o.first_event_at, o.last_event_at, o.event_count, o.command_count, o.file_downloads,
         o.login_attempts, o.ssh_key_injections, o.unique_ssh_keys, o.vt_flagged, o.dshield_flagged, o.risk_score,
         o.sensor, o.sensor, COALESCE(o.source_files, '[]'::jsonb), o.enrichment, o.enrichment_at
  FROM o
  WHERE NOT EXISTS (SELECT 1 FROM session_summaries s WHERE s.session_id = o.session_id)
  ORDER BY o.session_id
  ON CONFLICT (session_id) DO NOTHING
  RETURNING 1
)
SELECT (SELECT count(*) FROM ins) AS copied, (SELECT count(*) FROM upd) AS enriched
";

#[derive(QueryableByName)]
struct SessionCounts {
    #[diesel(sql_type = BigInt)]
    copied: i64,
    #[diesel(sql_type = BigInt)]
    enriched: i64,
}

/// Applies a batch of the original's `session_summaries` rows (JSON objects with the columns of `SESSIONS_SQL`,
/// timestamps in RFC 3339): a session celeriac recomputed from the imported events keeps its counters and takes the
/// original's enrichment and flags where it has none; a session without any imported event is copied.
/// Must run after every raw event was imported, or a copied session would later be counted again.
pub async fn import_sessions(
    conn: &mut AsyncPgConnection,
    rows: &[Value],
) -> Result<SessionsOutcome, StoreError> {
    if rows.is_empty() {
        return Ok(SessionsOutcome::default());
    }
    let c: SessionCounts = diesel::sql_query(SESSIONS_SQL)
        .bind::<Jsonb, _>(Value::Array(rows.to_vec()))
        .get_result(conn)
        .await?;
    Ok(SessionsOutcome {
        copied: c.copied as u64,
        enriched: c.enriched as u64,
    })
}

/// What changed in `files` from the original's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilesOutcome {
    /// Rows with no event behind them in the import, copied.
    pub copied: u64,
    /// Rows celeriac made from the events that took the original's VirusTotal enrichment.
    pub enriched: u64,
}

const FILES_SQL: &str = "
WITH o AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS t(
    session_id text, shasum text, filename text, file_size int8, download_url text, vt_classification text,
    vt_description text, vt_malicious bool, vt_positives int4, vt_total int4, first_seen timestamptz,
    last_updated timestamptz, enrichment_status text)
),
up AS (
  INSERT INTO files AS f (session_id, shasum, direction, filename, file_size, download_url, sensor,
      vt_classification, vt_description, vt_malicious, vt_positives, vt_total, first_seen, last_updated,
      enrichment_status)
  SELECT o.session_id, lower(o.shasum), 'download', o.filename, o.file_size, o.download_url,
         COALESCE((SELECT s.sensor FROM session_summaries s WHERE s.session_id = o.session_id), $2),
         o.vt_classification, o.vt_description, COALESCE(o.vt_malicious, false), o.vt_positives, o.vt_total,
         o.first_seen, COALESCE(o.last_updated, now()), COALESCE(o.enrichment_status, 'pending')
  FROM o
  ORDER BY o.session_id, lower(o.shasum)
  ON CONFLICT ON CONSTRAINT uq_files_session_shasum DO UPDATE SET
    vt_classification = COALESCE(f.vt_classification, EXCLUDED.vt_classification),
    vt_description = COALESCE(f.vt_description, EXCLUDED.vt_description),
    vt_malicious = f.vt_malicious OR EXCLUDED.vt_malicious,
    vt_positives = COALESCE(f.vt_positives, EXCLUDED.vt_positives),
    vt_total = COALESCE(f.vt_total, EXCLUDED.vt_total),
    file_size = COALESCE(f.file_size, EXCLUDED.file_size),
    enrichment_status = EXCLUDED.enrichment_status,
    last_updated = now()
  WHERE f.enrichment_status = 'pending' AND EXCLUDED.enrichment_status <> 'pending'
     OR (f.file_size IS NULL AND EXCLUDED.file_size IS NOT NULL)
  RETURNING (xmax = 0) AS inserted
)
SELECT (SELECT count(*) FROM up WHERE inserted) AS copied, (SELECT count(*) FROM up WHERE NOT inserted) AS enriched
";

/// Applies a batch of the original's `files` rows (JSON objects with the columns of `FILES_SQL`): rows celeriac
/// already made from the download events take the original's enrichment when they have none; others are copied.
pub async fn import_files(
    conn: &mut AsyncPgConnection,
    rows: &[Value],
    default_sensor: &str,
) -> Result<FilesOutcome, StoreError> {
    if rows.is_empty() {
        return Ok(FilesOutcome::default());
    }
    let c: SessionCounts = diesel::sql_query(FILES_SQL)
        .bind::<Jsonb, _>(Value::Array(rows.to_vec()))
        .bind::<Text, _>(default_sensor)
        .get_result(conn)
        .await?;
    Ok(FilesOutcome {
        copied: c.copied as u64,
        enriched: c.enriched as u64,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Analyses and detections.

/// A celeriac table an original analysis or detection row is copied into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectionTable {
    LongtailAnalysis,
    LongtailDetections,
    SnowshoeDetections,
    BotnetDetections,
}

impl DetectionTable {
    pub fn name(self) -> &'static str {
        match self {
            DetectionTable::LongtailAnalysis => "longtail_analysis",
            DetectionTable::LongtailDetections => "longtail_detections",
            DetectionTable::SnowshoeDetections => "snowshoe_detections",
            DetectionTable::BotnetDetections => "botnet_detections",
        }
    }

    /// Columns a mapped row may set (every column but `id`).
    fn columns(self) -> &'static [&'static str] {
        match self {
            DetectionTable::LongtailAnalysis => &[
                "analysis_time",
                "sensor",
                "window_start",
                "window_end",
                "lookback_days",
                "confidence_score",
                "total_events_analyzed",
                "rare_command_count",
                "anomalous_sequence_count",
                "outlier_session_count",
                "emerging_pattern_count",
                "high_entropy_payload_count",
                "analysis_results",
                "statistical_summary",
                "recommendation",
                "analysis_duration_seconds",
                "memory_usage_mb",
                "data_quality_score",
                "enrichment_coverage",
                "created_at",
            ],
            DetectionTable::LongtailDetections => &[
                "analysis_id",
                "detection_type",
                "session_id",
                "event_id",
                "detection_data",
                "confidence_score",
                "severity_score",
                "timestamp",
                "source_ip",
                "created_at",
            ],
            DetectionTable::SnowshoeDetections => &[
                "detection_time",
                "sensor",
                "window_start",
                "window_end",
                "confidence_score",
                "unique_ips",
                "single_attempt_ips",
                "low_volume_ips",
                "geographic_spread",
                "indicators",
                "is_likely_snowshoe",
                "coordinated_timing",
                "recommendation",
                "analysis_metadata",
                "result",
                "created_at",
            ],
            DetectionTable::BotnetDetections => &[
                "detection_time",
                "sensor",
                "window_start",
                "window_end",
                "coordination_score",
                "is_likely_botnet",
                "credential_reuse_ips",
                "similar_command_ips",
                "coordinated_timing",
                "geographic_clustering",
                "recommendation",
                "indicators",
                "analysis_metadata",
                "result",
                "created_at",
            ],
        }
    }
}

/// One original analysis or detection row, mapped to a celeriac table.
#[derive(Debug, Clone)]
pub struct MappedRow {
    /// The original's table.
    pub original_table: &'static str,
    /// Hash of the original row's content (all columns but its id), its key across imports.
    pub content_key: String,
    pub target: DetectionTable,
    /// celeriac columns (names of [`DetectionTable`]'s columns) with JSON values PostgreSQL converts.
    pub columns: Map<String, Value>,
    /// For a detection: `(original table, content key)` of its analysis, which becomes `analysis_id`.
    pub parent: Option<(&'static str, String)>,
    /// For a detection: `(stream_id, source_offset)` of the imported raw event it names, which becomes `event_id`.
    pub event: Option<(String, i64)>,
}

/// What a batch of mapped rows changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowsOutcome {
    pub inserted: u64,
    pub already_imported: u64,
    /// Content keys of detections whose analysis was not imported (refused, not written).
    pub orphans: Vec<String>,
}

#[derive(QueryableByName)]
struct OptId {
    #[diesel(sql_type = Nullable<BigInt>)]
    id: Option<i64>,
}

/// Copies each row not copied before (by its content key), recording it in `original_import_rows`, in one
/// transaction.
pub async fn import_rows(
    conn: &mut AsyncPgConnection,
    import_id: i64,
    rows: &[MappedRow],
) -> Result<RowsOutcome, StoreError> {
    conn.transaction::<_, StoreError, _>(async |conn| {
        let mut out = RowsOutcome::default();
        for r in rows {
            if let Some(k) = r.columns.keys().find(|k| !r.target.columns().contains(&k.as_str())) {
                return Err(StoreError::Migration(format!(
                    "{} has no column {k}",
                    r.target.name()
                )));
            }
            let done: Vec<OptId> = diesel::sql_query(
                "SELECT celeriac_id AS id FROM original_import_rows WHERE original_table = $1 AND content_key = $2",
            )
            .bind::<Text, _>(r.original_table)
            .bind::<Text, _>(&r.content_key)
            .load(conn)
            .await?;
            if !done.is_empty() {
                out.already_imported += 1;
                continue;
            }
            let mut cols = r.columns.clone();
            if let Some((table, key)) = &r.parent {
                let parent: Vec<OptId> = diesel::sql_query(
                    "SELECT celeriac_id AS id FROM original_import_rows \
                     WHERE original_table = $1 AND content_key = $2",
                )
                .bind::<Text, _>(*table)
                .bind::<Text, _>(key)
                .load(conn)
                .await?;
                match parent.into_iter().next().and_then(|p| p.id) {
                    Some(id) => {
                        cols.insert("analysis_id".into(), Value::from(id));
                    }
                    None => {
                        out.orphans.push(r.content_key.clone());
                        continue;
                    }
                }
            }
            if let Some((stream_id, offset)) = &r.event {
                let ev: Vec<OptId> = diesel::sql_query(
                    "SELECT id FROM raw_events WHERE stream_id = $1 AND source_generation = 0 AND source_offset = $2",
                )
                .bind::<Text, _>(stream_id)
                .bind::<BigInt, _>(*offset)
                .load(conn)
                .await?;
                cols.insert(
                    "event_id".into(),
                    ev.into_iter().next().and_then(|e| e.id).map_or(Value::Null, Value::from),
                );
            }
            let names: Vec<String> = cols.keys().map(|k| format!("\"{k}\"")).collect();
            let table = r.target.name();
            let sql = format!(
                "INSERT INTO {table} ({cols}) SELECT {cols} FROM jsonb_populate_record(NULL::{table}, $1::jsonb) \
                 RETURNING id",
                cols = names.join(", ")
            );
            let id: Id = diesel::sql_query(sql)
                .bind::<Jsonb, _>(Value::Object(cols))
                .get_result(conn)
                .await?;
            diesel::sql_query(
                "INSERT INTO original_import_rows (original_table, content_key, celeriac_table, celeriac_id, import_id) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind::<Text, _>(r.original_table)
            .bind::<Text, _>(&r.content_key)
            .bind::<Text, _>(table)
            .bind::<BigInt, _>(id.id)
            .bind::<BigInt, _>(import_id)
            .execute(conn)
            .await?;
            out.inserted += 1;
        }
        Ok(out)
    })
    .await
}

/// A timestamp as the mapped rows carry it (RFC 3339, UTC).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[derive(QueryableByName)]
struct TableCount {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Row counts of the celeriac tables an import writes besides the ingest tables (for verifying an import):
/// the analysis and detection tables, `longtail_detections` that name an event, and the ledger's row map.
pub async fn imported_table_counts(
    conn: &mut AsyncPgConnection,
) -> Result<BTreeMap<String, i64>, StoreError> {
    let rows: Vec<TableCount> = diesel::sql_query(
        "SELECT 'longtail_analysis' AS name, count(*) AS n FROM longtail_analysis \
         UNION ALL SELECT 'longtail_detections', count(*) FROM longtail_detections \
         UNION ALL SELECT 'longtail_detections_with_event', count(*) FROM longtail_detections WHERE event_id IS NOT NULL \
         UNION ALL SELECT 'snowshoe_detections', count(*) FROM snowshoe_detections \
         UNION ALL SELECT 'botnet_detections', count(*) FROM botnet_detections \
         UNION ALL SELECT 'dead_letter_events', count(*) FROM dead_letter_events \
         UNION ALL SELECT 'files_enriched', count(*) FROM files WHERE enrichment_status <> 'pending' \
         UNION ALL SELECT 'sessions_enriched', count(*) FROM session_summaries WHERE enrichment IS NOT NULL \
         UNION ALL SELECT 'original_import_rows', count(*) FROM original_import_rows",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.name, r.n)).collect())
}

/// Runs an SQL script on a database (tests build an original cowrieprocessor database with it).
#[cfg(feature = "test-support")]
pub async fn execute_script(url: &str, sql: &str) -> Result<(), StoreError> {
    use diesel_async::SimpleAsyncConnection;
    let mut c = AsyncPgConnection::establish(url)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    c.batch_execute(sql).await?;
    Ok(())
}
