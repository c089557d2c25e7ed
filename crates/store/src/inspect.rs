//! Read-only views of the ingest tables for status output, operators and tests.

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, QueryDsl, Queryable, Selectable, SelectableHelper};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;
use crate::schema::{dead_letter_events, files, ingest_cursors, raw_events, session_summaries};

pub use crate::ingest::{TableCounts, table_counts};

/// One `session_summaries` row (the columns an operator looks at).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = session_summaries)]
pub struct SessionRow {
    pub session_id: String,
    pub sensor: String,
    pub matcher: Option<String>,
    pub first_event_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub event_count: i32,
    pub command_count: i32,
    pub file_downloads: i32,
    pub login_attempts: i32,
    pub src_ip: Option<String>,
    pub protocol: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub login_success: bool,
    pub client_version: Option<String>,
    pub hassh: Option<String>,
    pub duration_seconds: Option<f64>,
    pub risk_score: Option<i32>,
}

/// All session rows, ordered by session id.
pub async fn session_rows(conn: &mut AsyncPgConnection) -> Result<Vec<SessionRow>, StoreError> {
    Ok(session_summaries::table
        .order(session_summaries::session_id.asc())
        .select(SessionRow::as_select())
        .load(conn)
        .await?)
}

/// `(event_type, count)` over `raw_events`, ordered by type.
pub async fn event_type_counts(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<(String, i64)>, StoreError> {
    use diesel::dsl::count_star;
    Ok(raw_events::table
        .group_by(raw_events::event_type)
        .select((raw_events::event_type, count_star()))
        .order(raw_events::event_type.asc())
        .load(conn)
        .await?)
}

/// `(session_id, count)` over `raw_events` (events without a session are left out).
pub async fn session_event_counts(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<(String, i64)>, StoreError> {
    use diesel::dsl::count_star;
    let rows: Vec<(Option<String>, i64)> = raw_events::table
        .filter(raw_events::session_id.is_not_null())
        .group_by(raw_events::session_id)
        .select((raw_events::session_id, count_star()))
        .order(raw_events::session_id.asc())
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(s, n)| s.map(|s| (s, n)))
        .collect())
}

/// `(session_id, shasum, direction)` of every `files` row, ordered.
pub async fn file_rows(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<(String, String, String)>, StoreError> {
    Ok(files::table
        .order((files::session_id.asc(), files::shasum.asc()))
        .select((files::session_id, files::shasum, files::direction))
        .load(conn)
        .await?)
}

/// One dead letter: `(source_line, reason, raw bytes)`, ordered by stream and offset.
pub async fn dead_letters(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<(i64, String, Vec<u8>)>, StoreError> {
    Ok(dead_letter_events::table
        .order((
            dead_letter_events::stream_id.asc(),
            dead_letter_events::source_generation.asc(),
            dead_letter_events::source_offset.asc(),
        ))
        .select((
            dead_letter_events::source_line,
            dead_letter_events::reason,
            dead_letter_events::raw_bytes,
        ))
        .load(conn)
        .await?)
}

/// Every cursor: `(stream_id, source, generation, last_offset, last_line, finished)`.
pub async fn cursors(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<(String, String, i32, i64, i64, bool)>, StoreError> {
    Ok(ingest_cursors::table
        .order(ingest_cursors::stream_id.asc())
        .select((
            ingest_cursors::stream_id,
            ingest_cursors::source,
            ingest_cursors::generation,
            ingest_cursors::last_offset,
            ingest_cursors::last_line,
            ingest_cursors::finished,
        ))
        .load(conn)
        .await?)
}

/// `payload_hash` of every event in stream order: equal lists mean equal contents.
pub async fn payload_hashes(conn: &mut AsyncPgConnection) -> Result<Vec<String>, StoreError> {
    Ok(raw_events::table
        .order((
            raw_events::stream_id.asc(),
            raw_events::source_generation.asc(),
            raw_events::source_offset.asc(),
        ))
        .select(raw_events::payload_hash)
        .load(conn)
        .await?)
}

/// `(event_type, count)` of quarantined events (risk score at or above 90), ordered by type.
pub async fn quarantined_counts(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<(String, i64)>, StoreError> {
    use diesel::dsl::count_star;
    Ok(raw_events::table
        .filter(raw_events::quarantined.eq(true))
        .group_by(raw_events::event_type)
        .select((raw_events::event_type, count_star()))
        .order(raw_events::event_type.asc())
        .load(conn)
        .await?)
}
