//! Ingest writes: one batch of parsed events, its dead letters and its cursor
//! advance, committed in a single transaction.
//!
//! Exactly-once rests on two things that live here:
//! - `raw_events` and `dead_letter_events` are unique on
//!   `(stream_id, source_generation, source_offset)`, and session counters and `files`
//!   are computed from exactly the rows the insert wrote
//!   (`INSERT … ON CONFLICT DO NOTHING RETURNING`), so a line read twice changes nothing;
//! - the cursor row moves in the same transaction as the rows it covers, so a crash
//!   either keeps both or neither.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Bytea, Float8, Integer, Nullable, Text, Timestamptz};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::StoreError;
use crate::schema::ingest_cursors;

/// Which log stream (file content) a batch belongs to.
#[derive(Debug, Clone)]
pub struct StreamRef {
    /// Content identity: `<sensor>:<hash of the first line>`.
    pub stream_id: String,
    /// Hash of the first line, hex.
    pub first_line_hash: String,
    /// Bumped when the file was truncated below the cursor.
    pub generation: i32,
    /// Path the stream was read under this time.
    pub source: String,
    /// Inode (as text) of the file read.
    pub inode: Option<String>,
    /// Sensor name stamped on every row.
    pub sensor: String,
}

/// A downloaded or uploaded file seen in an event.
#[derive(Debug, Clone, Default)]
pub struct FileRef {
    pub shasum: String,
    pub direction: String,
    pub filename: Option<String>,
    pub outfile: Option<String>,
    pub url: Option<String>,
}

/// One parsed Cowrie event ready for `raw_events`.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub offset: i64,
    pub line: i64,
    /// The JSON object as text; PostgreSQL stores it as JSONB.
    pub payload: String,
    pub payload_hash: String,
    pub session_id: Option<String>,
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    pub src_ip: Option<String>,
    pub protocol: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_version: Option<String>,
    pub hassh: Option<String>,
    pub duration_seconds: Option<f64>,
    pub file: Option<FileRef>,
    /// The event's own `sensor` when non-empty, else the loader's `--sensor`.
    pub sensor: String,
    /// The original loader's event risk score (0 to 100).
    pub risk_score: i32,
    /// Risk score at or above the original's quarantine threshold (90).
    pub quarantined: bool,
}

/// One line that could not be stored as an event.
#[derive(Debug, Clone)]
pub struct DeadLetterRow {
    pub offset: i64,
    pub line: i64,
    pub reason: String,
    pub detail: Option<String>,
    pub raw: Vec<u8>,
    /// The parsed object, when the line was JSON but not an acceptable event.
    pub payload: Option<String>,
}

/// Where the cursor stands after a batch.
#[derive(Debug, Clone, Copy)]
pub struct CursorPos {
    /// Next unread byte of the decompressed stream.
    pub offset: i64,
    /// Next unread line (0-based).
    pub line: i64,
    /// The whole file was read and it cannot grow (compressed files).
    pub finished: bool,
}

/// A batch: events and dead letters of one stream, and the cursor position after them.
#[derive(Debug, Clone)]
pub struct Batch {
    pub ingest_id: String,
    pub stream: StreamRef,
    pub events: Vec<EventRow>,
    pub dead_letters: Vec<DeadLetterRow>,
    pub cursor: CursorPos,
}

/// What committing a batch changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub inserted: u64,
    pub duplicates: u64,
    pub dead_letters_inserted: u64,
    pub sessions_touched: u64,
    pub files_inserted: u64,
}

/// A stored cursor.
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = ingest_cursors)]
pub struct Cursor {
    pub stream_id: String,
    pub source: String,
    pub inode: Option<String>,
    pub generation: i32,
    pub last_offset: i64,
    pub last_line: i64,
    pub finished: bool,
}

/// Reads the cursor of one stream, if any.
pub async fn load_cursor(
    conn: &mut AsyncPgConnection,
    stream_id: &str,
) -> Result<Option<Cursor>, StoreError> {
    use diesel::SelectableHelper;
    Ok(ingest_cursors::table
        .filter(ingest_cursors::stream_id.eq(stream_id))
        .select(Cursor::as_select())
        .first(conn)
        .await
        .optional()?)
}

#[cfg(feature = "bench")]
#[derive(QueryableByName)]
struct CommitCounts {
    #[diesel(sql_type = BigInt)]
    inserted: i64,
    #[diesel(sql_type = BigInt)]
    sessions: i64,
    #[diesel(sql_type = BigInt)]
    files: i64,
    #[diesel(sql_type = diesel::sql_types::Array<BigInt>)]
    offsets: Vec<i64>,
}

#[cfg(feature = "bench")]
const INSERT_EVENTS_SQL: &str = r#"
WITH src AS (
  SELECT * FROM unnest(
    $1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
    $13::text[], $14::float8[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[],
    $26::text[], $27::int4[], $28::bool[]
  ) AS t(off, line, payload, phash, session_id, event_type, ts, src_ip, protocol,
         username, password, client_version, hassh, duration, f_shasum, f_direction,
         f_filename, f_outfile, f_url, ev_sensor, risk, quar)
),
ins AS (
  INSERT INTO raw_events (ingest_id, source, stream_id, source_generation, source_offset,
                          source_line, source_inode, payload, payload_hash, session_id,
                          event_type, event_timestamp, src_ip, sensor, risk_score, quarantined)
  SELECT $20, $21, $22, $23, off, line, $24, payload::jsonb, phash, session_id,
         event_type, ts, src_ip, ev_sensor, risk, quar
  FROM src
  ON CONFLICT ON CONSTRAINT uq_raw_events_source_offset DO NOTHING
  RETURNING source_offset
),
fresh AS (
  SELECT src.* FROM src JOIN ins ON ins.source_offset = src.off
),
agg AS (
  SELECT session_id,
    min(ts) AS first_at,
    max(ts) AS last_at,
    count(*)::int4 AS n,
    (count(*) FILTER (WHERE event_type LIKE '%command%'))::int4 AS ncmd,
    (count(*) FILTER (WHERE event_type LIKE '%file_download%'
                         OR event_type LIKE 'cowrie.session.file%'))::int4 AS nfile,
    (count(*) FILTER (WHERE event_type LIKE '%login%'))::int4 AS nlogin,
    (array_agg(src_ip ORDER BY ts, off) FILTER (WHERE src_ip IS NOT NULL))[1] AS src_ip,
    (array_agg(protocol ORDER BY ts, off) FILTER (WHERE protocol IS NOT NULL))[1] AS protocol,
    (array_agg(username ORDER BY ts, off)
        FILTER (WHERE event_type = 'cowrie.login.success'))[1] AS username,
    (array_agg(password ORDER BY ts, off)
        FILTER (WHERE event_type = 'cowrie.login.success'))[1] AS password,
    bool_or(event_type = 'cowrie.login.success') AS login_success,
    (array_agg(client_version ORDER BY ts, off)
        FILTER (WHERE client_version IS NOT NULL))[1] AS client_version,
    (array_agg(hassh ORDER BY ts, off) FILTER (WHERE hassh IS NOT NULL))[1] AS hassh,
    max(duration) AS duration,
    (array_agg(ev_sensor ORDER BY ts, off))[1] AS sensor,
    max(risk) AS risk
  FROM fresh
  WHERE session_id IS NOT NULL
  GROUP BY session_id
),
sess AS (
  INSERT INTO session_summaries AS s (
    session_id, first_event_at, last_event_at, event_count, command_count, file_downloads,
    login_attempts, matcher, sensor, src_ip, protocol, username, password, login_success,
    client_version, hassh, duration_seconds, source_files, risk_score)
  SELECT session_id, first_at, last_at, n, ncmd, nfile, nlogin, sensor, sensor, src_ip, protocol,
         username, password, login_success, client_version, hassh, duration,
         jsonb_build_array($21::text), risk
  FROM agg
  ON CONFLICT (session_id) DO UPDATE SET
    first_event_at = LEAST(s.first_event_at, EXCLUDED.first_event_at),
    last_event_at = GREATEST(s.last_event_at, EXCLUDED.last_event_at),
    event_count = s.event_count + EXCLUDED.event_count,
    command_count = s.command_count + EXCLUDED.command_count,
    file_downloads = s.file_downloads + EXCLUDED.file_downloads,
    login_attempts = s.login_attempts + EXCLUDED.login_attempts,
    src_ip = COALESCE(s.src_ip, EXCLUDED.src_ip),
    protocol = COALESCE(s.protocol, EXCLUDED.protocol),
    username = CASE WHEN s.login_success THEN s.username ELSE EXCLUDED.username END,
    password = CASE WHEN s.login_success THEN s.password ELSE EXCLUDED.password END,
    login_success = s.login_success OR EXCLUDED.login_success,
    client_version = COALESCE(s.client_version, EXCLUDED.client_version),
    hassh = COALESCE(s.hassh, EXCLUDED.hassh),
    duration_seconds = GREATEST(s.duration_seconds, EXCLUDED.duration_seconds),
    risk_score = GREATEST(s.risk_score, EXCLUDED.risk_score),
    source_files = CASE WHEN s.source_files @> EXCLUDED.source_files THEN s.source_files
                        ELSE s.source_files || EXCLUDED.source_files END,
    updated_at = now()
  RETURNING 1
),
fil AS (
  INSERT INTO files (session_id, shasum, direction, filename, outfile, download_url,
                     src_ip, sensor, first_seen)
  SELECT DISTINCT ON (session_id, lower(f_shasum))
         session_id, lower(f_shasum), f_direction, f_filename, f_outfile, f_url,
         src_ip, ev_sensor, ts
  FROM fresh
  WHERE f_shasum IS NOT NULL AND session_id IS NOT NULL
  ORDER BY session_id, lower(f_shasum), ts
  ON CONFLICT ON CONSTRAINT uq_files_session_shasum DO NOTHING
  RETURNING 1
)
SELECT (SELECT count(*) FROM ins) AS inserted,
       (SELECT count(*) FROM sess) AS sessions,
       (SELECT count(*) FROM fil) AS files,
       (SELECT coalesce(array_agg(source_offset), '{}') FROM ins) AS offsets
"#;

const INSERT_DEAD_SQL: &str = r#"
INSERT INTO dead_letter_events (ingest_id, source, stream_id, source_generation,
    source_offset, source_line, sensor, reason, detail, raw_line, raw_bytes, payload)
SELECT $1, $2, $3, $4, off, line, $5, reason, detail, raw_line, raw_bytes, payload::jsonb
FROM unnest($6::int8[], $7::int8[], $8::text[], $9::text[], $10::text[], $11::bytea[],
            $12::text[]) AS t(off, line, reason, detail, raw_line, raw_bytes, payload)
ON CONFLICT ON CONSTRAINT uq_dead_letter_source_offset DO NOTHING
"#;

const UPSERT_CURSOR_SQL: &str = r#"
INSERT INTO ingest_cursors AS c (stream_id, sensor, source, inode, first_line_hash, generation,
    last_offset, last_line, finished, last_ingest_at, last_ingest_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), $10)
ON CONFLICT (stream_id) DO UPDATE SET
    source = EXCLUDED.source,
    inode = EXCLUDED.inode,
    generation = EXCLUDED.generation,
    last_offset = EXCLUDED.last_offset,
    last_line = EXCLUDED.last_line,
    finished = EXCLUDED.finished,
    last_ingest_at = now(),
    last_ingest_id = EXCLUDED.last_ingest_id
WHERE (c.generation, c.last_offset) <= (EXCLUDED.generation, EXCLUDED.last_offset)
"#;

/// Text that PostgreSQL accepts in a `text` column (no NUL).
pub fn pg_safe_text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{2400}")
    } else {
        s.to_owned()
    }
}

/// Commits one batch: events (with session counters and files), dead letters and
/// the cursor, in one transaction.
///
/// The events are inserted with `RETURNING source_offset`; session counters are then
/// aggregated here from exactly the rows that were inserted and upserted in one
/// statement, and `files` rows are inserted with `ON CONFLICT DO NOTHING`.
pub async fn commit_batch(
    conn: &mut AsyncPgConnection,
    batch: &Batch,
) -> Result<BatchOutcome, StoreError> {
    conn.transaction::<_, StoreError, _>(async |conn| {
        let mut out = BatchOutcome::default();
        if !batch.events.is_empty() {
            let inserted = insert_events_returning(conn, batch).await?;
            out.inserted = inserted.len() as u64;
            out.duplicates = (batch.events.len() - inserted.len()) as u64;
            let fresh: Vec<&EventRow> = batch
                .events
                .iter()
                .filter(|e| inserted.contains(&e.offset))
                .collect();
            out.sessions_touched = upsert_sessions(conn, &batch.stream, &fresh).await?;
            out.files_inserted = insert_files(conn, &fresh).await?;
            let offsets: Vec<i64> = fresh.iter().map(|e| e.offset).collect();
            crate::rollups::add_inserted(
                conn,
                &batch.stream.stream_id,
                batch.stream.generation,
                &offsets,
            )
            .await?;
        }
        out.dead_letters_inserted = insert_dead_letters(conn, batch).await?;
        save_cursor(conn, &batch.stream, batch.cursor, &batch.ingest_id).await?;
        Ok(out)
    })
    .await
}

/// The same effect as [`commit_batch`], with the session counters computed by
/// PostgreSQL in a single statement (kept for the insert-strategy benchmark).
#[cfg(feature = "bench")]
pub async fn commit_batch_sql_aggregate(
    conn: &mut AsyncPgConnection,
    batch: &Batch,
) -> Result<BatchOutcome, StoreError> {
    conn.transaction::<_, StoreError, _>(async |conn| commit_in_tx(conn, batch).await)
        .await
}

#[derive(QueryableByName)]
struct OffsetRow {
    #[diesel(sql_type = BigInt)]
    source_offset: i64,
}

async fn insert_events_returning(
    conn: &mut AsyncPgConnection,
    batch: &Batch,
) -> Result<std::collections::HashSet<i64>, StoreError> {
    let ev = &batch.events;
    let st = &batch.stream;
    let rows: Vec<OffsetRow> = diesel::sql_query(
        "INSERT INTO raw_events (ingest_id, source, stream_id, source_generation, source_offset, \
         source_line, source_inode, payload, payload_hash, session_id, event_type, \
         event_timestamp, src_ip, sensor, risk_score, quarantined) \
         SELECT $1, $2, $3, $4, off, line, $5, payload::jsonb, phash, session_id, event_type, \
                ts, src_ip, sensor, risk, quar \
         FROM unnest($6::int8[], $7::int8[], $8::text[], $9::text[], $10::text[], $11::text[], \
                     $12::timestamptz[], $13::text[], $14::text[], $15::int4[], $16::bool[]) \
              AS t(off, line, payload, phash, session_id, event_type, ts, src_ip, sensor, risk, quar) \
         ON CONFLICT ON CONSTRAINT uq_raw_events_source_offset DO NOTHING \
         RETURNING source_offset",
    )
    .bind::<Text, _>(&batch.ingest_id)
    .bind::<Text, _>(&st.source)
    .bind::<Text, _>(&st.stream_id)
    .bind::<Integer, _>(st.generation)
    .bind::<Nullable<Text>, _>(st.inode.as_deref())
    .bind::<Array<BigInt>, _>(ev.iter().map(|e| e.offset).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(ev.iter().map(|e| e.line).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(ev.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(
        ev.iter()
            .map(|e| e.payload_hash.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Text>>, _>(
        ev.iter()
            .map(|e| e.session_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(ev.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(ev.iter().map(|e| e.timestamp).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(ev.iter().map(|e| e.src_ip.as_deref()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(ev.iter().map(|e| e.sensor.as_str()).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(ev.iter().map(|e| e.risk_score).collect::<Vec<_>>())
    .bind::<Array<Bool>, _>(ev.iter().map(|e| e.quarantined).collect::<Vec<_>>())
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.source_offset).collect())
}

/// Per-session aggregate of one batch's inserted events (spec section 2.5 counters).
#[derive(Default)]
struct SessionAgg<'a> {
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    n: i32,
    ncmd: i32,
    nfile: i32,
    nlogin: i32,
    sensor: Option<&'a str>,
    src_ip: Option<&'a str>,
    protocol: Option<&'a str>,
    username: Option<&'a str>,
    password: Option<&'a str>,
    login_success: bool,
    client_version: Option<&'a str>,
    hassh: Option<&'a str>,
    duration: Option<f64>,
    risk: i32,
}

fn aggregate<'a>(events: &[&'a EventRow]) -> Vec<(&'a str, SessionAgg<'a>)> {
    // "First" means first by (timestamp, offset), as in the SQL variant.
    let mut sorted: Vec<&EventRow> = events
        .iter()
        .copied()
        .filter(|e| e.session_id.is_some())
        .collect();
    sorted.sort_by_key(|e| (e.timestamp, e.offset));
    let mut order: Vec<&str> = Vec::new();
    let mut map: std::collections::HashMap<&str, SessionAgg> = std::collections::HashMap::new();
    for e in sorted {
        let sid = e.session_id.as_deref().unwrap_or_default();
        let a = map.entry(sid).or_insert_with(|| {
            order.push(sid);
            SessionAgg::default()
        });
        let et = e.event_type.as_str();
        a.first = Some(a.first.map_or(e.timestamp, |f| f.min(e.timestamp)));
        a.last = Some(a.last.map_or(e.timestamp, |l| l.max(e.timestamp)));
        a.n += 1;
        a.ncmd += i32::from(et.contains("command"));
        a.nfile += i32::from(et.contains("file_download") || et.starts_with("cowrie.session.file"));
        a.nlogin += i32::from(et.contains("login"));
        a.sensor = a.sensor.or(Some(e.sensor.as_str()));
        a.src_ip = a.src_ip.or(e.src_ip.as_deref());
        a.protocol = a.protocol.or(e.protocol.as_deref());
        if et == "cowrie.login.success" && !a.login_success {
            a.login_success = true;
            a.username = e.username.as_deref();
            a.password = e.password.as_deref();
        }
        a.client_version = a.client_version.or(e.client_version.as_deref());
        a.hassh = a.hassh.or(e.hassh.as_deref());
        a.risk = a.risk.max(e.risk_score);
        a.duration = match (a.duration, e.duration_seconds) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
    }
    // Upsert in session-id order: concurrent loaders then lock rows in the same order.
    order.sort_unstable();
    order
        .into_iter()
        .map(|sid| (sid, map.remove(sid).unwrap_or_default()))
        .collect()
}

const UPSERT_SESSIONS_SQL: &str = r#"
INSERT INTO session_summaries AS s (
  session_id, first_event_at, last_event_at, event_count, command_count, file_downloads,
  login_attempts, matcher, sensor, src_ip, protocol, username, password, login_success,
  client_version, hassh, duration_seconds, source_files, risk_score)
SELECT session_id, first_at, last_at, n, ncmd, nfile, nlogin, sensor, sensor, src_ip, protocol,
       username, password, login_success, client_version, hassh, duration,
       jsonb_build_array($1::text), risk
FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[], $5::int4[], $6::int4[], $7::int4[],
            $8::int4[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
            $14::bool[], $15::text[], $16::text[], $17::float8[], $18::int4[])
  AS t(session_id, first_at, last_at, n, ncmd, nfile, nlogin, sensor, src_ip, protocol,
       username, password, login_success, client_version, hassh, duration, risk)
ON CONFLICT (session_id) DO UPDATE SET
  first_event_at = LEAST(s.first_event_at, EXCLUDED.first_event_at),
  last_event_at = GREATEST(s.last_event_at, EXCLUDED.last_event_at),
  event_count = s.event_count + EXCLUDED.event_count,
  command_count = s.command_count + EXCLUDED.command_count,
  file_downloads = s.file_downloads + EXCLUDED.file_downloads,
  login_attempts = s.login_attempts + EXCLUDED.login_attempts,
  src_ip = COALESCE(s.src_ip, EXCLUDED.src_ip),
  protocol = COALESCE(s.protocol, EXCLUDED.protocol),
  username = CASE WHEN s.login_success THEN s.username ELSE EXCLUDED.username END,
  password = CASE WHEN s.login_success THEN s.password ELSE EXCLUDED.password END,
  login_success = s.login_success OR EXCLUDED.login_success,
  client_version = COALESCE(s.client_version, EXCLUDED.client_version),
  hassh = COALESCE(s.hassh, EXCLUDED.hassh),
  duration_seconds = GREATEST(s.duration_seconds, EXCLUDED.duration_seconds),
  risk_score = GREATEST(s.risk_score, EXCLUDED.risk_score),
  source_files = CASE WHEN s.source_files @> EXCLUDED.source_files THEN s.source_files
                      ELSE s.source_files || EXCLUDED.source_files END,
  updated_at = now()
"#;

pub(crate) async fn upsert_sessions(
    conn: &mut AsyncPgConnection,
    stream: &StreamRef,
    fresh: &[&EventRow],
) -> Result<u64, StoreError> {
    let aggs = aggregate(fresh);
    if aggs.is_empty() {
        return Ok(0);
    }
    let col = |f: &dyn Fn(&SessionAgg) -> Option<String>| -> Vec<Option<String>> {
        aggs.iter().map(|(_, a)| f(a)).collect()
    };
    let n = diesel::sql_query(UPSERT_SESSIONS_SQL)
        .bind::<Text, _>(&stream.source)
        .bind::<Array<Text>, _>(aggs.iter().map(|(s, _)| *s).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(
            aggs.iter()
                .map(|(_, a)| a.first.unwrap_or_default())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Timestamptz>, _>(
            aggs.iter()
                .map(|(_, a)| a.last.unwrap_or_default())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Integer>, _>(aggs.iter().map(|(_, a)| a.n).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(aggs.iter().map(|(_, a)| a.ncmd).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(aggs.iter().map(|(_, a)| a.nfile).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(aggs.iter().map(|(_, a)| a.nlogin).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            aggs.iter()
                .map(|(_, a)| a.sensor.unwrap_or(&stream.sensor))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(col(&|a| a.src_ip.map(str::to_owned)))
        .bind::<Array<Nullable<Text>>, _>(col(&|a| a.protocol.map(str::to_owned)))
        .bind::<Array<Nullable<Text>>, _>(col(&|a| a.username.map(pg_safe_text)))
        .bind::<Array<Nullable<Text>>, _>(col(&|a| a.password.map(pg_safe_text)))
        .bind::<Array<Bool>, _>(
            aggs.iter()
                .map(|(_, a)| a.login_success)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(col(&|a| a.client_version.map(pg_safe_text)))
        .bind::<Array<Nullable<Text>>, _>(col(&|a| a.hassh.map(str::to_owned)))
        .bind::<Array<Nullable<Float8>>, _>(
            aggs.iter().map(|(_, a)| a.duration).collect::<Vec<_>>(),
        )
        .bind::<Array<Integer>, _>(aggs.iter().map(|(_, a)| a.risk).collect::<Vec<_>>())
        .execute(conn)
        .await?;
    Ok(n as u64)
}

pub(crate) async fn insert_files(
    conn: &mut AsyncPgConnection,
    fresh: &[&EventRow],
) -> Result<u64, StoreError> {
    let files: Vec<(&EventRow, &FileRef)> = fresh
        .iter()
        .filter(|e| e.session_id.is_some())
        .filter_map(|e| e.file.as_ref().map(|f| (*e, f)))
        .collect();
    if files.is_empty() {
        return Ok(0);
    }
    let n = diesel::sql_query(
        "INSERT INTO files (session_id, shasum, direction, filename, outfile, download_url, \
         src_ip, sensor, first_seen) \
         SELECT DISTINCT ON (session_id, shasum) session_id, shasum, direction, filename, \
                outfile, url, src_ip, sensor, ts \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::timestamptz[]) \
              AS t(session_id, shasum, direction, filename, outfile, url, src_ip, sensor, ts) \
         ORDER BY session_id, shasum, ts \
         ON CONFLICT ON CONSTRAINT uq_files_session_shasum DO NOTHING",
    )
    .bind::<Array<Text>, _>(
        files
            .iter()
            .map(|(e, _)| e.session_id.as_deref().unwrap_or_default())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        files
            .iter()
            .map(|(_, f)| f.shasum.to_ascii_lowercase())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        files
            .iter()
            .map(|(_, f)| f.direction.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Text>>, _>(
        files
            .iter()
            .map(|(_, f)| f.filename.as_deref().map(pg_safe_text))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Text>>, _>(
        files
            .iter()
            .map(|(_, f)| f.outfile.as_deref().map(pg_safe_text))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Text>>, _>(
        files
            .iter()
            .map(|(_, f)| f.url.as_deref().map(pg_safe_text))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Text>>, _>(
        files
            .iter()
            .map(|(e, _)| e.src_ip.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        files
            .iter()
            .map(|(e, _)| e.sensor.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Timestamptz>, _>(files.iter().map(|(e, _)| e.timestamp).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(n as u64)
}

async fn insert_dead_letters(
    conn: &mut AsyncPgConnection,
    batch: &Batch,
) -> Result<u64, StoreError> {
    if batch.dead_letters.is_empty() {
        return Ok(0);
    }
    let st = &batch.stream;
    let dl = &batch.dead_letters;
    let n = diesel::sql_query(INSERT_DEAD_SQL)
        .bind::<Text, _>(&batch.ingest_id)
        .bind::<Text, _>(&st.source)
        .bind::<Text, _>(&st.stream_id)
        .bind::<Integer, _>(st.generation)
        .bind::<Text, _>(&st.sensor)
        .bind::<Array<BigInt>, _>(dl.iter().map(|d| d.offset).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(dl.iter().map(|d| d.line).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(dl.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            dl.iter()
                .map(|d| d.detail.as_deref().map(pg_safe_text))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Text>, _>(
            dl.iter()
                .map(|d| pg_safe_text(&String::from_utf8_lossy(&d.raw)))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Bytea>, _>(dl.iter().map(|d| d.raw.as_slice()).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            dl.iter().map(|d| d.payload.as_deref()).collect::<Vec<_>>(),
        )
        .execute(conn)
        .await?;
    Ok(n as u64)
}

#[cfg(feature = "bench")]
async fn commit_in_tx(
    conn: &mut AsyncPgConnection,
    batch: &Batch,
) -> Result<BatchOutcome, StoreError> {
    let st = &batch.stream;
    let mut out = BatchOutcome::default();
    if !batch.events.is_empty() {
        let ev = &batch.events;
        let col = |f: &dyn Fn(&EventRow) -> Option<String>| -> Vec<Option<String>> {
            ev.iter().map(f).collect()
        };
        let file_col = |f: &dyn Fn(&FileRef) -> Option<String>| -> Vec<Option<String>> {
            ev.iter().map(|e| e.file.as_ref().and_then(f)).collect()
        };
        let q = diesel::sql_query(INSERT_EVENTS_SQL)
            .bind::<Array<BigInt>, _>(ev.iter().map(|e| e.offset).collect::<Vec<_>>())
            .bind::<Array<BigInt>, _>(ev.iter().map(|e| e.line).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(ev.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(
                ev.iter()
                    .map(|e| e.payload_hash.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Nullable<Text>>, _>(col(&|e| e.session_id.clone()))
            .bind::<Array<Text>, _>(ev.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
            .bind::<Array<Timestamptz>, _>(ev.iter().map(|e| e.timestamp).collect::<Vec<_>>())
            .bind::<Array<Nullable<Text>>, _>(col(&|e| e.src_ip.clone()))
            .bind::<Array<Nullable<Text>>, _>(col(&|e| e.protocol.clone()))
            .bind::<Array<Nullable<Text>>, _>(col(&|e| e.username.as_deref().map(pg_safe_text)))
            .bind::<Array<Nullable<Text>>, _>(col(&|e| e.password.as_deref().map(pg_safe_text)))
            .bind::<Array<Nullable<Text>>, _>(col(&|e| {
                e.client_version.as_deref().map(pg_safe_text)
            }))
            .bind::<Array<Nullable<Text>>, _>(col(&|e| e.hassh.clone()))
            .bind::<Array<Nullable<Float8>>, _>(
                ev.iter().map(|e| e.duration_seconds).collect::<Vec<_>>(),
            )
            .bind::<Array<Nullable<Text>>, _>(file_col(&|f| Some(f.shasum.clone())))
            .bind::<Array<Nullable<Text>>, _>(file_col(&|f| Some(f.direction.clone())))
            .bind::<Array<Nullable<Text>>, _>(file_col(&|f| {
                f.filename.as_deref().map(pg_safe_text)
            }))
            .bind::<Array<Nullable<Text>>, _>(file_col(&|f| f.outfile.as_deref().map(pg_safe_text)))
            .bind::<Array<Nullable<Text>>, _>(file_col(&|f| f.url.as_deref().map(pg_safe_text)))
            .bind::<Text, _>(&batch.ingest_id)
            .bind::<Text, _>(&st.source)
            .bind::<Text, _>(&st.stream_id)
            .bind::<Integer, _>(st.generation)
            .bind::<Nullable<Text>, _>(st.inode.as_deref())
            .bind::<Text, _>(&st.sensor)
            .bind::<Array<Text>, _>(ev.iter().map(|e| e.sensor.as_str()).collect::<Vec<_>>())
            .bind::<Array<Integer>, _>(ev.iter().map(|e| e.risk_score).collect::<Vec<_>>())
            .bind::<Array<Bool>, _>(ev.iter().map(|e| e.quarantined).collect::<Vec<_>>());
        let counts: CommitCounts = q.get_result(conn).await?;
        out.inserted = counts.inserted as u64;
        out.duplicates = ev.len() as u64 - out.inserted;
        out.sessions_touched = counts.sessions as u64;
        out.files_inserted = counts.files as u64;
        crate::rollups::add_inserted(conn, &st.stream_id, st.generation, &counts.offsets).await?;
    }
    out.dead_letters_inserted = insert_dead_letters(conn, batch).await?;
    save_cursor(conn, st, batch.cursor, &batch.ingest_id).await?;
    Ok(out)
}

/// Inserts only the `raw_events` rows of a batch with the same `unnest` statement shape
/// as [`commit_batch`], without sessions, files or cursor (benchmarks compare with it).
#[cfg(feature = "bench")]
pub async fn insert_raw_events_only(
    conn: &mut AsyncPgConnection,
    batch: &Batch,
) -> Result<u64, StoreError> {
    let ev = &batch.events;
    let st = &batch.stream;
    let n = diesel::sql_query(
        "INSERT INTO raw_events (ingest_id, source, stream_id, source_generation, source_offset, \
         source_line, payload, payload_hash, session_id, event_type, event_timestamp, src_ip, sensor) \
         SELECT $1, $2, $3, $4, off, line, payload::jsonb, phash, session_id, event_type, ts, src_ip, sensor \
         FROM unnest($5::int8[], $6::int8[], $7::text[], $8::text[], $9::text[], $10::text[], \
                     $11::timestamptz[], $12::text[], $13::text[]) \
              AS t(off, line, payload, phash, session_id, event_type, ts, src_ip, sensor) \
         ON CONFLICT ON CONSTRAINT uq_raw_events_source_offset DO NOTHING",
    )
    .bind::<Text, _>(&batch.ingest_id)
    .bind::<Text, _>(&st.source)
    .bind::<Text, _>(&st.stream_id)
    .bind::<Integer, _>(st.generation)
    .bind::<Array<BigInt>, _>(ev.iter().map(|e| e.offset).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(ev.iter().map(|e| e.line).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(ev.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(ev.iter().map(|e| e.payload_hash.as_str()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(ev.iter().map(|e| e.session_id.as_deref()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(ev.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(ev.iter().map(|e| e.timestamp).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(ev.iter().map(|e| e.src_ip.as_deref()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(ev.iter().map(|e| e.sensor.as_str()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(n as u64)
}

/// Writes the cursor of a stream (only forwards: a lower generation/offset is ignored).
pub async fn save_cursor(
    conn: &mut AsyncPgConnection,
    st: &StreamRef,
    pos: CursorPos,
    ingest_id: &str,
) -> Result<(), StoreError> {
    diesel::sql_query(UPSERT_CURSOR_SQL)
        .bind::<Text, _>(&st.stream_id)
        .bind::<Text, _>(&st.sensor)
        .bind::<Text, _>(&st.source)
        .bind::<Nullable<Text>, _>(st.inode.as_deref())
        .bind::<Text, _>(&st.first_line_hash)
        .bind::<Integer, _>(st.generation)
        .bind::<BigInt, _>(pos.offset)
        .bind::<BigInt, _>(pos.line)
        .bind::<Bool, _>(pos.finished)
        .bind::<Text, _>(ingest_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Row counts of the ingest tables, for status output and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounts {
    pub raw_events: i64,
    pub session_summaries: i64,
    pub files: i64,
    pub dead_letter_events: i64,
    pub ingest_cursors: i64,
}

/// Counts the rows of the ingest tables.
pub async fn table_counts(conn: &mut AsyncPgConnection) -> Result<TableCounts, StoreError> {
    use crate::schema::*;
    Ok(TableCounts {
        raw_events: raw_events::table.count().get_result(conn).await?,
        session_summaries: session_summaries::table.count().get_result(conn).await?,
        files: files::table.count().get_result(conn).await?,
        dead_letter_events: dead_letter_events::table.count().get_result(conn).await?,
        ingest_cursors: ingest_cursors::table.count().get_result(conn).await?,
    })
}

/// Payload hashes of every event already stored for a stream (all generations).
/// Used to deduplicate by content after a truncation, when offsets no longer line up.
pub async fn stream_payload_hashes(
    conn: &mut AsyncPgConnection,
    stream_id: &str,
) -> Result<std::collections::HashSet<String>, StoreError> {
    use crate::schema::raw_events;
    let v: Vec<String> = raw_events::table
        .filter(raw_events::stream_id.eq(stream_id))
        .select(raw_events::payload_hash)
        .load(conn)
        .await?;
    Ok(v.into_iter().collect())
}
