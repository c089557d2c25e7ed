//! The loader's dead letters (`dead_letter_events`) as something to work with: list, show, replay and resolve
//! (`cowrie-loader dead-letters`, `docs/loader.md`).
//!
//! A replay runs the stored bytes through the caller's parser again (the loader's `parse_record`: the parser may
//! have learned the line's shape since) and, when they now make an event, commits it as a one-event batch of the
//! line's own stream, generation and offset ([`crate::ingest::commit_batch`]: sessions, files and roll-ups as for
//! any event) and marks the dead letter resolved, in one transaction holding the dead letter's row lock. The
//! event's key `(stream_id, source_generation, source_offset)` is unique, so the line is stored exactly once
//! however often or concurrently it is replayed. The stream's cursor does not move (it is past the line).

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Bytea, Int4, Int8, Nullable, Text, Timestamptz};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::StoreError;
use crate::ingest::{Batch, CursorPos, EventRow, StreamRef, commit_batch};

/// One row of `dead_letter_events`, without its bytes.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct LoaderDeadLetter {
    #[diesel(sql_type = Int8)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub sensor: String,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Text)]
    pub stream_id: String,
    #[diesel(sql_type = Int4)]
    pub source_generation: i32,
    #[diesel(sql_type = Int8)]
    pub source_offset: i64,
    #[diesel(sql_type = Int8)]
    pub source_line: i64,
    #[diesel(sql_type = Text)]
    pub reason: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub detail: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Bool)]
    pub resolved: bool,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Length of the stored bytes.
    #[diesel(sql_type = Int8)]
    pub size: i64,
}

const COLUMNS: &str = "id, sensor, source, stream_id, source_generation, source_offset, source_line, reason, \
     detail, created_at, resolved, resolved_at, octet_length(raw_bytes)::int8 AS size";

#[derive(QueryableByName)]
struct Raw {
    #[diesel(sql_type = Bytea)]
    raw_bytes: Vec<u8>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = Int8)]
    n: i64,
}

/// How many dead letters match, and `limit` of them from `offset`, newest first; `all` includes resolved ones.
pub async fn list(
    conn: &mut AsyncPgConnection,
    all: bool,
    sensor: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(i64, Vec<LoaderDeadLetter>), StoreError> {
    let filter = "($1 OR NOT resolved) AND ($2::text IS NULL OR sensor = $2)";
    let count: Count = diesel::sql_query(format!(
        "SELECT count(*)::int8 AS n FROM dead_letter_events WHERE {filter}"
    ))
    .bind::<Bool, _>(all)
    .bind::<Nullable<Text>, _>(sensor)
    .get_result(conn)
    .await?;
    let rows = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM dead_letter_events WHERE {filter} ORDER BY id DESC LIMIT $3 OFFSET $4"
    ))
    .bind::<Bool, _>(all)
    .bind::<Nullable<Text>, _>(sensor)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(offset)
    .load(conn)
    .await?;
    Ok((count.n, rows))
}

/// One dead letter with its stored bytes.
pub async fn show(
    conn: &mut AsyncPgConnection,
    id: i64,
) -> Result<Option<(LoaderDeadLetter, Vec<u8>)>, StoreError> {
    let row: Option<LoaderDeadLetter> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM dead_letter_events WHERE id = $1"
    ))
    .bind::<BigInt, _>(id)
    .get_result(conn)
    .await
    .optional()?;
    let Some(row) = row else { return Ok(None) };
    let raw: Raw = diesel::sql_query("SELECT raw_bytes FROM dead_letter_events WHERE id = $1")
        .bind::<BigInt, _>(id)
        .get_result(conn)
        .await?;
    Ok(Some((row, raw.raw_bytes)))
}

/// Mark dead letters handled; returns the ids that were open and are now resolved.
pub async fn resolve(conn: &mut AsyncPgConnection, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = Int8)]
        id: i64,
    }
    let done: Vec<Id> = diesel::sql_query(
        "UPDATE dead_letter_events SET resolved = true, resolved_at = now() \
         WHERE id = ANY($1) AND NOT resolved RETURNING id",
    )
    .bind::<Array<BigInt>, _>(ids)
    .load(conn)
    .await?;
    Ok(done.into_iter().map(|r| r.id).collect())
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// The line made an event now; `inserted` is 1, or 0 when the event was already stored (then it only became
    /// resolved).
    Replayed {
        inserted: u64,
    },
    /// The parser still refuses it; nothing changed.
    StillFails {
        reason: String,
        detail: String,
    },
    /// It was resolved already; nothing changed.
    AlreadyResolved,
    NotFound,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = Text)]
    stream_id: String,
    #[diesel(sql_type = Int4)]
    source_generation: i32,
    #[diesel(sql_type = Int8)]
    source_offset: i64,
    #[diesel(sql_type = Int8)]
    source_line: i64,
    #[diesel(sql_type = Text)]
    sensor: String,
    #[diesel(sql_type = Bytea)]
    raw_bytes: Vec<u8>,
    #[diesel(sql_type = Bool)]
    resolved: bool,
    #[diesel(sql_type = Nullable<Text>)]
    first_line_hash: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    inode: Option<String>,
}

/// Run dead letter `id` through `parse` (bytes and sensor to an event, or a reason and detail) and store the
/// event exactly once (see the module comment).
pub async fn replay<F>(
    conn: &mut AsyncPgConnection,
    id: i64,
    parse: F,
) -> Result<ReplayOutcome, StoreError>
where
    F: Fn(&[u8], &str) -> Result<EventRow, (String, String)> + Send + Sync,
{
    conn.transaction::<_, StoreError, _>(async |conn| {
        let row: Option<Locked> = diesel::sql_query(
            "SELECT d.source, d.stream_id, d.source_generation, d.source_offset, d.source_line, d.sensor, \
                    d.raw_bytes, d.resolved, c.first_line_hash, c.inode \
             FROM dead_letter_events d LEFT JOIN ingest_cursors c ON c.stream_id = d.stream_id \
             WHERE d.id = $1 FOR UPDATE OF d",
        )
        .bind::<BigInt, _>(id)
        .get_result(conn)
        .await
        .optional()?;
        let Some(row) = row else {
            return Ok(ReplayOutcome::NotFound);
        };
        if row.resolved {
            return Ok(ReplayOutcome::AlreadyResolved);
        }
        let mut event = match parse(&row.raw_bytes, &row.sensor) {
            Ok(e) => e,
            Err((reason, detail)) => return Ok(ReplayOutcome::StillFails { reason, detail }),
        };
        event.offset = row.source_offset;
        event.line = row.source_line;
        let batch = Batch {
            ingest_id: format!("dead-letter-replay:{id}"),
            stream: StreamRef {
                stream_id: row.stream_id,
                first_line_hash: row.first_line_hash.unwrap_or_default(),
                generation: row.source_generation,
                source: row.source,
                inode: row.inode,
                sensor: row.sensor,
            },
            events: vec![event],
            dead_letters: Vec::new(),
            // Behind the stream's cursor, so the cursor stays where it is.
            cursor: CursorPos {
                offset: row.source_offset,
                line: row.source_line,
                finished: false,
            },
        };
        let out = commit_batch(conn, &batch).await?;
        resolve(conn, &[id]).await?;
        Ok(ReplayOutcome::Replayed {
            inserted: out.inserted,
        })
    })
    .await
}
