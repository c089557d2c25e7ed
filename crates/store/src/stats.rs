//! Read-only statistics over the ingest and analysis tables, for `celeriac-api`.
//!
//! Every query takes a [`Scope`]: a half-open time window `[start, end)` and a sensor list (empty = all sensors).
//! Session figures select sessions by `first_event_at` (as the analyses do); event figures select events by
//! `event_timestamp`. The definitions are the API's contract and are written in `docs/api.md`.
//!
//! Event figures over whole hours come from the hourly rollups the loader maintains (`rollups`); only the partial
//! hours at a window's edges are counted in `raw_events`, so a 7-day aggregate reads a few thousand rollup rows, not a
//! million events.
//!
//! Queries bind every parameter (an empty sensor list or a NULL filter switches a condition off), so each runs as
//! one statement with no session state: safe behind PgBouncer in transaction mode.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Double, Integer, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;

use crate::StoreError;
use crate::rollups::HourSplit;

/// Which data a statistic covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    /// Sensors to include; empty means every sensor.
    pub sensors: Vec<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Totals over the sessions that started in the scope.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct SessionTotals {
    #[diesel(sql_type = BigInt)]
    pub total_sessions: i64,
    #[diesel(sql_type = BigInt)]
    pub unique_ips: i64,
    #[diesel(sql_type = BigInt)]
    pub login_attempts: i64,
    #[diesel(sql_type = BigInt)]
    pub successful_logins: i64,
    #[diesel(sql_type = BigInt)]
    pub sessions_with_commands: i64,
    #[diesel(sql_type = BigInt)]
    pub file_downloads: i64,
    #[diesel(sql_type = Nullable<Double>)]
    pub avg_session_seconds: Option<f64>,
}

const SENSOR_S: &str = "(cardinality($3::text[]) = 0 OR sensor = ANY($3::text[]))";

/// The partial edge hours of a window, read from `raw_events` (`$1` start, `$2` end, `$5`/`$6` the whole hours'
/// bounds of [`HourSplit`]); the whole hours come from the `stats_*_hours` rollups.
const EDGES: &str = "((event_timestamp >= $1 AND event_timestamp < $5) OR (event_timestamp >= $6 AND event_timestamp < $2))";

/// Totals of the sessions that started in the scope.
///
/// Grouped per source IP first, so the distinct IPs come from a hash aggregate instead of the sort that
/// `count(DISTINCT src_ip)` does (21 to 14 ms for 28,500 sessions, `docs/benchmarks.md`).
pub async fn session_totals(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
) -> Result<SessionTotals, StoreError> {
    let sql = format!(
        "SELECT coalesce(sum(n), 0)::int8 AS total_sessions,
                count(src_ip)::int8 AS unique_ips,
                coalesce(sum(login_attempts), 0)::int8 AS login_attempts,
                coalesce(sum(successful_logins), 0)::int8 AS successful_logins,
                coalesce(sum(sessions_with_commands), 0)::int8 AS sessions_with_commands,
                coalesce(sum(file_downloads), 0)::int8 AS file_downloads,
                (sum(duration_sum) / nullif(sum(durations), 0))::float8 AS avg_session_seconds
         FROM (SELECT src_ip, count(*) AS n, sum(login_attempts) AS login_attempts,
                      count(*) FILTER (WHERE login_success) AS successful_logins,
                      count(*) FILTER (WHERE command_count > 0) AS sessions_with_commands,
                      sum(file_downloads) AS file_downloads,
                      sum(duration_seconds) AS duration_sum, count(duration_seconds) AS durations
               FROM session_summaries
               WHERE first_event_at >= $1 AND first_event_at < $2 AND {SENSOR_S}
               GROUP BY src_ip) per_ip"
    );
    Ok(diesel::sql_query(sql)
        .bind::<Timestamptz, _>(scope.start)
        .bind::<Timestamptz, _>(scope.end)
        .bind::<Array<Text>, _>(&scope.sensors)
        .get_result(conn)
        .await?)
}

/// Width of a timeline bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketSize {
    Hour,
    Day,
}

impl BucketSize {
    pub fn as_str(self) -> &'static str {
        match self {
            BucketSize::Hour => "hour",
            BucketSize::Day => "day",
        }
    }
    pub fn seconds(self) -> i64 {
        match self {
            BucketSize::Hour => 3600,
            BucketSize::Day => 86_400,
        }
    }
}

/// One bucket of the timeline (UTC bucket start).
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineRow {
    pub bucket: DateTime<Utc>,
    pub sessions: i64,
    pub events: i64,
    pub unique_ips: i64,
}

/// The UTC bucket of the time in `column`, for the bucket size bound as `$4` (`hour` or `day`).
fn bucket_sql(column: &str) -> String {
    format!("date_bin(('1 ' || $4)::interval, {column}, timestamptz '2000-01-01 00:00:00+00')")
}

#[derive(QueryableByName)]
struct BucketCounts {
    #[diesel(sql_type = Timestamptz)]
    bucket: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    ips: i64,
}

/// Sessions (by start), distinct source IPs of those sessions, and events (by time) per bucket; every bucket of
/// the scope is present, empty ones with zeros, so a chart has no holes.
pub async fn timeline(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    size: BucketSize,
) -> Result<Vec<TimelineRow>, StoreError> {
    // `date_bin` from a UTC midnight is `date_trunc(.., 'UTC')` for hours and days, without the per-row time zone
    // conversion (half the cost of the events query); sessions are grouped per bucket and IP first (hash, no sort).
    let sessions: Vec<BucketCounts> = diesel::sql_query(format!(
        "SELECT bucket, sum(n)::int8 AS n, count(src_ip)::int8 AS ips
         FROM (SELECT {} AS bucket, src_ip, count(*) AS n
               FROM session_summaries
               WHERE first_event_at >= $1 AND first_event_at < $2 AND {SENSOR_S}
               GROUP BY 1, 2) per_ip
         GROUP BY 1",
        bucket_sql("first_event_at")
    ))
    .bind::<Timestamptz, _>(scope.start)
    .bind::<Timestamptz, _>(scope.end)
    .bind::<Array<Text>, _>(&scope.sensors)
    .bind::<Text, _>(size.as_str())
    .load(conn)
    .await?;
    let split = HourSplit::new(scope.start, scope.end);
    let events: Vec<BucketCounts> = diesel::sql_query(format!(
        "SELECT bucket, sum(n)::int8 AS n, 0::int8 AS ips
         FROM (SELECT {} AS bucket, events AS n FROM stats_event_hours
               WHERE hour >= $5 AND hour < $6 AND {SENSOR_S}
               UNION ALL
               SELECT {} AS bucket, count(*) AS n FROM raw_events
               WHERE {EDGES} AND {SENSOR_S}
               GROUP BY 1) per_bucket
         GROUP BY 1",
        bucket_sql("hour"),
        bucket_sql("event_timestamp")
    ))
    .bind::<Timestamptz, _>(scope.start)
    .bind::<Timestamptz, _>(scope.end)
    .bind::<Array<Text>, _>(&scope.sensors)
    .bind::<Text, _>(size.as_str())
    .bind::<Timestamptz, _>(split.hours_from)
    .bind::<Timestamptz, _>(split.hours_to)
    .load(conn)
    .await?;
    let mut rows = Vec::new();
    let step = size.seconds();
    let first = bucket_start(scope.start, size);
    let mut t = first;
    while t < scope.end {
        rows.push(TimelineRow {
            bucket: t,
            sessions: 0,
            events: 0,
            unique_ips: 0,
        });
        t += chrono::Duration::seconds(step);
    }
    let index = |b: DateTime<Utc>| ((b - first).num_seconds() / step) as usize;
    for s in sessions {
        if let Some(r) = rows.get_mut(index(s.bucket)) {
            r.sessions = s.n;
            r.unique_ips = s.ips;
        }
    }
    for e in events {
        if let Some(r) = rows.get_mut(index(e.bucket)) {
            r.events = e.n;
        }
    }
    Ok(rows)
}

/// The start of the UTC bucket that holds `t`.
pub fn bucket_start(t: DateTime<Utc>, size: BucketSize) -> DateTime<Utc> {
    let secs = t.timestamp();
    let step = size.seconds();
    DateTime::from_timestamp(secs - secs.rem_euclid(step), 0).unwrap_or(t)
}

/// A source IP and what it did in the scope (sessions that started in it).
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct IpRow {
    #[diesel(sql_type = Text)]
    pub ip: String,
    #[diesel(sql_type = BigInt)]
    pub sessions: i64,
    #[diesel(sql_type = BigInt)]
    pub events: i64,
    #[diesel(sql_type = Timestamptz)]
    pub first_seen: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub last_seen: DateTime<Utc>,
}

/// Source IPs by number of sessions (then events, then IP).
pub async fn top_source_ips(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    limit: i64,
) -> Result<Vec<IpRow>, StoreError> {
    Ok(diesel::sql_query(format!(
        "SELECT src_ip AS ip, count(*)::int8 AS sessions, coalesce(sum(event_count), 0)::int8 AS events,
                min(first_event_at) AS first_seen, max(last_event_at) AS last_seen
         FROM session_summaries
         WHERE first_event_at >= $1 AND first_event_at < $2 AND {SENSOR_S} AND src_ip IS NOT NULL
         GROUP BY src_ip
         ORDER BY sessions DESC, events DESC, ip
         LIMIT $4"
    ))
    .bind::<Timestamptz, _>(scope.start)
    .bind::<Timestamptz, _>(scope.end)
    .bind::<Array<Text>, _>(&scope.sensors)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// A username and password pair tried in login events of the scope.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct CredentialRow {
    #[diesel(sql_type = Nullable<Text>)]
    pub username: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub password: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = BigInt)]
    pub successes: i64,
}

const LOGIN_EVENTS: &str = "event_type IN ('cowrie.login.success', 'cowrie.login.failed')";

/// A username tried in login events of the scope.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct UsernameRow {
    #[diesel(sql_type = Nullable<Text>)]
    pub username: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = BigInt)]
    pub successes: i64,
}

/// Credentials by attempts (then successes, username, password) and usernames by attempts (then successes,
/// username), from `cowrie.login.*` events, at most `limit` of each.
///
/// One statement reads the login events once: the usernames are sums over the (username, password) groups.
pub async fn top_credentials_and_usernames(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    limit: i64,
) -> Result<(Vec<CredentialRow>, Vec<UsernameRow>), StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        part: i32,
        #[diesel(sql_type = Nullable<Text>)]
        username: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        password: Option<String>,
        #[diesel(sql_type = BigInt)]
        attempts: i64,
        #[diesel(sql_type = BigInt)]
        successes: i64,
    }
    let split = HourSplit::new(scope.start, scope.end);
    let rows: Vec<Row> = diesel::sql_query(format!(
        "WITH pairs AS MATERIALIZED (
             SELECT username, password, sum(attempts)::int8 AS attempts, sum(successes)::int8 AS successes
             FROM (SELECT username, password, attempts, successes FROM stats_login_hours
                   WHERE hour >= $5 AND hour < $6 AND {SENSOR_S}
                   UNION ALL
                   SELECT payload->>'username', payload->>'password', 1::int8,
                          (event_type = 'cowrie.login.success')::int::int8
                   FROM raw_events
                   WHERE {EDGES} AND {SENSOR_S} AND {LOGIN_EVENTS}) logins
             GROUP BY 1, 2),
         users AS (
             SELECT username, sum(attempts)::int8 AS attempts, sum(successes)::int8 AS successes
             FROM pairs GROUP BY 1)
         SELECT * FROM (
             (SELECT 0 AS part, username, password, attempts, successes FROM pairs
              ORDER BY attempts DESC, successes DESC, username, password LIMIT $4)
             UNION ALL
             (SELECT 1 AS part, username, NULL::text AS password, attempts, successes FROM users
              ORDER BY attempts DESC, successes DESC, username LIMIT $4)) top
         ORDER BY part, attempts DESC, successes DESC, username, password"
    ))
    .bind::<Timestamptz, _>(scope.start)
    .bind::<Timestamptz, _>(scope.end)
    .bind::<Array<Text>, _>(&scope.sensors)
    .bind::<BigInt, _>(limit)
    .bind::<Timestamptz, _>(split.hours_from)
    .bind::<Timestamptz, _>(split.hours_to)
    .load(conn)
    .await?;
    let (mut credentials, mut usernames) = (Vec::new(), Vec::new());
    for r in rows {
        if r.part == 0 {
            credentials.push(CredentialRow {
                username: r.username,
                password: r.password,
                attempts: r.attempts,
                successes: r.successes,
            });
        } else {
            usernames.push(UsernameRow {
                username: r.username,
                attempts: r.attempts,
                successes: r.successes,
            });
        }
    }
    Ok((credentials, usernames))
}

/// A command line as typed (`input` of `cowrie.command.input`), how often, and its highest event risk score.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct CommandRow {
    #[diesel(sql_type = Text)]
    pub command: String,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
    #[diesel(sql_type = Nullable<Integer>)]
    pub risk_score: Option<i32>,
}

/// Commands by count (then text).
pub async fn top_commands(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    limit: i64,
) -> Result<Vec<CommandRow>, StoreError> {
    let split = HourSplit::new(scope.start, scope.end);
    Ok(diesel::sql_query(format!(
        "SELECT command, sum(n)::int8 AS count, max(risk) AS risk_score
         FROM (SELECT command, count AS n, max_risk AS risk FROM stats_command_hours
               WHERE hour >= $5 AND hour < $6 AND {SENSOR_S}
               UNION ALL
               SELECT payload->>'input', 1::int8, risk_score
               FROM raw_events
               WHERE {EDGES} AND {SENSOR_S}
                 AND event_type = 'cowrie.command.input' AND payload ? 'input') cmds
         GROUP BY 1
         ORDER BY count DESC, command
         LIMIT $4"
    ))
    .bind::<Timestamptz, _>(scope.start)
    .bind::<Timestamptz, _>(scope.end)
    .bind::<Array<Text>, _>(&scope.sensors)
    .bind::<BigInt, _>(limit)
    .bind::<Timestamptz, _>(split.hours_from)
    .bind::<Timestamptz, _>(split.hours_to)
    .load(conn)
    .await?)
}

/// A downloaded file (by URL and SHA-256) and in how many sessions it was fetched.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct DownloadRow {
    #[diesel(sql_type = Nullable<Text>)]
    pub url: Option<String>,
    #[diesel(sql_type = Text)]
    pub sha256: String,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

/// Downloads first seen in the scope, by count (then SHA-256, URL).
pub async fn downloads(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    limit: i64,
) -> Result<Vec<DownloadRow>, StoreError> {
    Ok(diesel::sql_query(format!(
        "SELECT download_url AS url, shasum AS sha256, count(*)::int8 AS count
         FROM files
         WHERE first_seen >= $1 AND first_seen < $2 AND {SENSOR_S} AND direction = 'download'
         GROUP BY 1, 2
         ORDER BY count DESC, sha256, url
         LIMIT $4"
    ))
    .bind::<Timestamptz, _>(scope.start)
    .bind::<Timestamptz, _>(scope.end)
    .bind::<Array<Text>, _>(&scope.sensors)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// Every sensor the database knows, sorted: the sensors of the data (a Cowrie event's own `sensor`, or the loader's
/// `--sensor` when the event has none) and the loader's `--sensor` namespaces (ingest cursors).
pub async fn known_sensors(conn: &mut AsyncPgConnection) -> Result<Vec<String>, StoreError> {
    #[derive(QueryableByName)]
    struct S {
        #[diesel(sql_type = Text)]
        sensor: String,
    }
    let rows: Vec<S> = diesel::sql_query(format!(
        "{SENSOR_NAMES} SELECT sensor FROM names ORDER BY 1"
    ))
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.sensor).collect())
}

/// `WITH RECURSIVE ... names(sensor)`: distinct sensors of `session_summaries` by a loose index scan (one index probe
/// per sensor, not a scan of every session), plus the cursors' namespaces.
const SENSOR_NAMES: &str = "WITH RECURSIVE data AS (
        SELECT min(sensor) AS sensor FROM session_summaries
        UNION ALL
        SELECT (SELECT min(s.sensor) FROM session_summaries s WHERE s.sensor > data.sensor)
        FROM data WHERE data.sensor IS NOT NULL
    ), names AS (
        SELECT sensor FROM data WHERE sensor IS NOT NULL
        UNION SELECT sensor FROM ingest_cursors
    )";

/// One sensor's figures: events and sessions in the scope, all-time first and last event, the last time its data
/// arrived (its newest session update, or its loader namespace's newest cursor), and unresolved dead letters of its
/// loader namespace (all, and those created since `recent_since`).
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct SensorRow {
    #[diesel(sql_type = Text)]
    pub sensor: String,
    #[diesel(sql_type = BigInt)]
    pub events: i64,
    #[diesel(sql_type = BigInt)]
    pub sessions: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub first_event_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_event_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_ingest_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = BigInt)]
    pub dead_letters: i64,
    #[diesel(sql_type = BigInt)]
    pub recent_dead_letters: i64,
}

/// One row per known sensor (restricted to the scope's sensors when it names any).
pub async fn sensors(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    recent_since: DateTime<Utc>,
) -> Result<Vec<SensorRow>, StoreError> {
    let split = HourSplit::new(scope.start, scope.end);
    Ok(diesel::sql_query(format!(
        "{SENSOR_NAMES}
         SELECT n.sensor,
                ((SELECT coalesce(sum(events), 0) FROM stats_event_hours h
                   WHERE h.sensor = n.sensor AND h.hour >= $5 AND h.hour < $6)
                 + (SELECT count(*) FROM raw_events r
                    WHERE r.sensor = n.sensor AND {EDGES}))::int8 AS events,
                (SELECT count(*) FROM session_summaries s
                  WHERE s.sensor = n.sensor AND s.first_event_at >= $1 AND s.first_event_at < $2)::int8 AS sessions,
                (SELECT min(event_timestamp) FROM raw_events r WHERE r.sensor = n.sensor) AS first_event_at,
                (SELECT max(event_timestamp) FROM raw_events r WHERE r.sensor = n.sensor) AS last_event_at,
                GREATEST(
                    (SELECT max(last_ingest_at) FROM ingest_cursors c WHERE c.sensor = n.sensor),
                    (SELECT max(updated_at) FROM session_summaries s WHERE s.sensor = n.sensor)
                ) AS last_ingest_at,
                (SELECT count(*) FROM dead_letter_events d
                  WHERE d.sensor = n.sensor AND NOT d.resolved)::int8 AS dead_letters,
                (SELECT count(*) FROM dead_letter_events d
                  WHERE d.sensor = n.sensor AND NOT d.resolved AND d.created_at >= $4)::int8 AS recent_dead_letters
         FROM names n
         WHERE cardinality($3::text[]) = 0 OR n.sensor = ANY($3::text[])
         ORDER BY n.sensor"
    ))
    .bind::<Timestamptz, _>(scope.start)
    .bind::<Timestamptz, _>(scope.end)
    .bind::<Array<Text>, _>(&scope.sensors)
    .bind::<Timestamptz, _>(recent_since)
    .bind::<Timestamptz, _>(split.hours_from)
    .bind::<Timestamptz, _>(split.hours_to)
    .load(conn)
    .await?)
}

/// One `session_summaries` row as the API shows it.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct SessionSummary {
    #[diesel(sql_type = Text)]
    pub session_id: String,
    #[diesel(sql_type = Text)]
    pub sensor: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub src_ip: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub first_event_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub last_event_at: DateTime<Utc>,
    #[diesel(sql_type = Integer)]
    pub event_count: i32,
    #[diesel(sql_type = Integer)]
    pub command_count: i32,
    #[diesel(sql_type = Integer)]
    pub login_attempts: i32,
    #[diesel(sql_type = Integer)]
    pub file_downloads: i32,
    #[diesel(sql_type = Bool)]
    pub login_success: bool,
    #[diesel(sql_type = Nullable<Text>)]
    pub username: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub password: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub protocol: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub client_version: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub hassh: Option<String>,
    #[diesel(sql_type = Nullable<Double>)]
    pub duration_seconds: Option<f64>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub risk_score: Option<i32>,
}

const SESSION_COLUMNS: &str =
    "session_id, sensor, src_ip, first_event_at, last_event_at, event_count,
    command_count, login_attempts, file_downloads, login_success, username, password, protocol,
    client_version, hassh, duration_seconds, risk_score";

/// Filters of the session listing, besides the scope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionFilter {
    pub src_ip: Option<String>,
    pub username: Option<String>,
    pub has_commands: Option<bool>,
    /// Keyset cursor: the `(first_event_at, session_id)` of the last row already seen.
    pub after: Option<(DateTime<Utc>, String)>,
}

/// Sessions that started in the scope, newest first (ties by session id, descending), at most `limit`.
pub async fn list_sessions(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    filter: &SessionFilter,
    limit: i64,
) -> Result<Vec<SessionSummary>, StoreError> {
    let (after_t, after_id) = match &filter.after {
        Some((t, id)) => (Some(*t), Some(id.as_str())),
        None => (None, None),
    };
    Ok(diesel::sql_query(format!(
        "SELECT {SESSION_COLUMNS}
         FROM session_summaries
         WHERE first_event_at >= $1 AND first_event_at < $2 AND {SENSOR_S}
           AND ($4::text IS NULL OR src_ip = $4)
           AND ($5::text IS NULL OR username = $5)
           AND ($6::bool IS NULL OR (command_count > 0) = $6)
           AND ($7::timestamptz IS NULL OR (first_event_at, session_id) < ($7, $8::text))
         ORDER BY first_event_at DESC, session_id DESC
         LIMIT $9"
    ))
    .bind::<Timestamptz, _>(scope.start)
    .bind::<Timestamptz, _>(scope.end)
    .bind::<Array<Text>, _>(&scope.sensors)
    .bind::<Nullable<Text>, _>(filter.src_ip.as_deref())
    .bind::<Nullable<Text>, _>(filter.username.as_deref())
    .bind::<Nullable<Bool>, _>(filter.has_commands)
    .bind::<Nullable<Timestamptz>, _>(after_t)
    .bind::<Nullable<Text>, _>(after_id)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// One session's summary.
pub async fn session(
    conn: &mut AsyncPgConnection,
    session_id: &str,
) -> Result<Option<SessionSummary>, StoreError> {
    let mut rows: Vec<SessionSummary> = diesel::sql_query(format!(
        "SELECT {SESSION_COLUMNS} FROM session_summaries WHERE session_id = $1"
    ))
    .bind::<Text, _>(session_id)
    .load(conn)
    .await?;
    Ok(rows.pop())
}

/// One stored event of a session.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct SessionEvent {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Timestamptz)]
    pub timestamp: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Jsonb)]
    pub payload: Value,
    #[diesel(sql_type = Nullable<Integer>)]
    pub risk_score: Option<i32>,
}

/// A session's events in log order (time, then position in the stream), at most `limit`.
pub async fn session_events(
    conn: &mut AsyncPgConnection,
    session_id: &str,
    limit: i64,
) -> Result<Vec<SessionEvent>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT id, event_timestamp AS timestamp, event_type, payload, risk_score
         FROM raw_events WHERE session_id = $1
         ORDER BY event_timestamp, source_offset, id
         LIMIT $2",
    )
    .bind::<Text, _>(session_id)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// Which detector a finding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    Longtail,
    Snowshoe,
    Botnet,
}

impl FindingKind {
    pub const ALL: [FindingKind; 3] = [
        FindingKind::Longtail,
        FindingKind::Snowshoe,
        FindingKind::Botnet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Longtail => "longtail",
            FindingKind::Snowshoe => "snowshoe",
            FindingKind::Botnet => "botnet",
        }
    }

    /// `SELECT` list giving a [`FindingRow`] (without or with the whole result).
    fn select(self, with_result: bool) -> String {
        let (table, time, score, positive, counts, result) = match self {
            FindingKind::Longtail => (
                "longtail_analysis",
                "analysis_time",
                "confidence_score",
                "(rare_command_count + anomalous_sequence_count + outlier_session_count) > 0",
                "jsonb_build_object('total_events_analyzed', total_events_analyzed,
                    'rare_command_count', rare_command_count,
                    'anomalous_sequence_count', anomalous_sequence_count,
                    'outlier_session_count', outlier_session_count,
                    'emerging_pattern_count', emerging_pattern_count,
                    'high_entropy_payload_count', high_entropy_payload_count)",
                "analysis_results",
            ),
            FindingKind::Snowshoe => (
                "snowshoe_detections",
                "detection_time",
                "confidence_score",
                "is_likely_snowshoe",
                "jsonb_build_object('unique_ips', unique_ips, 'single_attempt_ips', single_attempt_ips,
                    'low_volume_ips', low_volume_ips, 'coordinated_timing', coordinated_timing,
                    'geographic_spread', geographic_spread, 'indicators', indicators)",
                "result",
            ),
            FindingKind::Botnet => (
                "botnet_detections",
                "detection_time",
                "coordination_score",
                "is_likely_botnet",
                "jsonb_build_object('credential_reuse_ips', jsonb_array_length(credential_reuse_ips),
                    'similar_command_ips', jsonb_array_length(similar_command_ips),
                    'coordinated_timing', coordinated_timing,
                    'geographic_clustering', geographic_clustering, 'indicators', indicators)",
                "result",
            ),
        };
        let result = if with_result {
            result.to_string()
        } else {
            "NULL::jsonb".to_string()
        };
        format!(
            "SELECT id, {time} AS detected_at, sensor, window_start, window_end, {score}::float8 AS score,
                    ({positive}) AS positive, {counts} AS summary, recommendation, {result} AS result
             FROM {table}"
        )
    }
}

/// One stored analysis result.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct FindingRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Timestamptz)]
    pub detected_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    pub sensor: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub window_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub window_end: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Double>)]
    pub score: Option<f64>,
    #[diesel(sql_type = Bool)]
    pub positive: bool,
    #[diesel(sql_type = Jsonb)]
    pub summary: Value,
    #[diesel(sql_type = Nullable<Text>)]
    pub recommendation: Option<String>,
    /// The whole stored result (only from [`finding`]).
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub result: Option<Value>,
}

/// Findings of one detector, newest first, for the given sensors (empty = any, including all-sensor runs), with ids
/// below `before_id` when given.
pub async fn findings(
    conn: &mut AsyncPgConnection,
    kind: FindingKind,
    sensors: &[String],
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<FindingRow>, StoreError> {
    Ok(diesel::sql_query(format!(
        "{} WHERE (cardinality($1::text[]) = 0 OR sensor = ANY($1::text[]))
              AND ($2::int8 IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
        kind.select(false)
    ))
    .bind::<Array<Text>, _>(sensors)
    .bind::<Nullable<BigInt>, _>(before_id)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// One finding with its whole stored result.
pub async fn finding(
    conn: &mut AsyncPgConnection,
    kind: FindingKind,
    id: i64,
) -> Result<Option<FindingRow>, StoreError> {
    let mut rows: Vec<FindingRow> =
        diesel::sql_query(format!("{} WHERE id = $1", kind.select(true)))
            .bind::<BigInt, _>(id)
            .load(conn)
            .await?;
    Ok(rows.pop())
}

/// One longtail detection row (rare command, anomalous sequence, outlier session) of an analysis.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct LongtailDetection {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub detection_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub session_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub source_ip: Option<String>,
    #[diesel(sql_type = Jsonb)]
    pub detection_data: Value,
}

/// The detection rows of one longtail analysis, in id order, at most `limit`.
pub async fn longtail_detections(
    conn: &mut AsyncPgConnection,
    analysis_id: i64,
    limit: i64,
) -> Result<Vec<LongtailDetection>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT id, detection_type, session_id, source_ip, detection_data
         FROM longtail_detections WHERE analysis_id = $1 ORDER BY id LIMIT $2",
    )
    .bind::<BigInt, _>(analysis_id)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// Run `SELECT 1` (a health probe).
pub async fn ping(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    diesel::sql_query("SELECT 1").execute(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_start_truncates_to_utc_hour_and_day() {
        let t = DateTime::parse_from_rfc3339("2024-05-06T13:45:12Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            bucket_start(t, BucketSize::Hour).to_rfc3339(),
            "2024-05-06T13:00:00+00:00"
        );
        assert_eq!(
            bucket_start(t, BucketSize::Day).to_rfc3339(),
            "2024-05-06T00:00:00+00:00"
        );
    }
}
