//! Reads and writes for the analysis tasks (longtail, snowshoe, botnet).
//!
//! Sessions are selected by `first_event_at` in a half-open window `[start, end)`,
//! as the original does (spec section 3), optionally for one sensor.

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, Insertable, QueryDsl, Queryable, Selectable, SelectableHelper};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use std::collections::HashMap;

use crate::StoreError;
use crate::schema::{
    botnet_detections, longtail_analysis, longtail_detections, raw_events, session_summaries,
    snowshoe_detections,
};

/// One login attempt of a session, in log order.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginAttempt {
    pub username: Option<String>,
    pub password: Option<String>,
    pub success: bool,
    pub timestamp: DateTime<Utc>,
}

/// One file download (or upload) of a session, in log order.
#[derive(Debug, Clone, PartialEq)]
pub struct Download {
    pub url: Option<String>,
    pub shasum: Option<String>,
    /// False for `cowrie.session.file_download.failed`.
    pub succeeded: bool,
    pub timestamp: DateTime<Utc>,
}

/// A session with everything the detectors read.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub session_id: String,
    pub sensor: String,
    pub src_ip: Option<String>,
    pub first_event_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub event_count: i32,
    pub command_count: i32,
    pub login_attempts: i32,
    pub file_downloads: i32,
    pub protocol: Option<String>,
    pub client_version: Option<String>,
    pub hassh: Option<String>,
    pub duration_seconds: Option<f64>,
    /// `input` of every `cowrie.command.input` event, in log order.
    pub commands: Vec<String>,
    pub logins: Vec<LoginAttempt>,
    pub downloads: Vec<Download>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = session_summaries)]
struct SummaryRow {
    session_id: String,
    sensor: String,
    src_ip: Option<String>,
    first_event_at: DateTime<Utc>,
    last_event_at: DateTime<Utc>,
    event_count: i32,
    command_count: i32,
    login_attempts: i32,
    file_downloads: i32,
    protocol: Option<String>,
    client_version: Option<String>,
    hassh: Option<String>,
    duration_seconds: Option<f64>,
}

/// Commands, logins and downloads of one session.
type SessionDetails = (Vec<String>, Vec<LoginAttempt>, Vec<Download>);

const DETAIL_TYPES: [&str; 5] = [
    "cowrie.command.input",
    "cowrie.login.success",
    "cowrie.login.failed",
    "cowrie.session.file_download",
    "cowrie.session.file_download.failed",
];

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

/// Sessions of `sensor` (all sensors when `None`) whose first event is in `[start, end)`,
/// ordered by first event time, with their commands, logins and downloads.
pub async fn sessions_in_window(
    conn: &mut AsyncPgConnection,
    sensor: Option<&str>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<SessionRecord>, StoreError> {
    let mut q = session_summaries::table
        .filter(session_summaries::first_event_at.ge(start))
        .filter(session_summaries::first_event_at.lt(end))
        .order((
            session_summaries::first_event_at.asc(),
            session_summaries::session_id.asc(),
        ))
        .select(SummaryRow::as_select())
        .into_boxed();
    if let Some(s) = sensor {
        q = q.filter(session_summaries::sensor.eq(s.to_owned()));
    }
    let rows: Vec<SummaryRow> = q.load(conn).await?;
    let ids: Vec<String> = rows.iter().map(|r| r.session_id.clone()).collect();
    let mut details: HashMap<String, SessionDetails> = HashMap::new();
    for chunk in ids.chunks(20_000) {
        let evs: Vec<(Option<String>, String, DateTime<Utc>, Value)> = raw_events::table
            .filter(raw_events::session_id.eq_any(chunk))
            .filter(raw_events::event_type.eq_any(DETAIL_TYPES))
            .order((
                raw_events::session_id.asc(),
                raw_events::event_timestamp.asc(),
                raw_events::id.asc(),
            ))
            .select((
                raw_events::session_id,
                raw_events::event_type,
                raw_events::event_timestamp,
                raw_events::payload,
            ))
            .load(conn)
            .await?;
        for (sid, et, ts, payload) in evs {
            let Some(sid) = sid else { continue };
            let entry = details.entry(sid).or_default();
            match et.as_str() {
                "cowrie.command.input" => {
                    if let Some(i) = str_field(&payload, "input") {
                        entry.0.push(i);
                    }
                }
                "cowrie.login.success" | "cowrie.login.failed" => entry.1.push(LoginAttempt {
                    username: str_field(&payload, "username"),
                    password: str_field(&payload, "password"),
                    success: et == "cowrie.login.success",
                    timestamp: ts,
                }),
                _ => entry.2.push(Download {
                    url: str_field(&payload, "url"),
                    shasum: str_field(&payload, "shasum"),
                    succeeded: et == "cowrie.session.file_download",
                    timestamp: ts,
                }),
            }
        }
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let (commands, logins, downloads) = details.remove(&r.session_id).unwrap_or_default();
            SessionRecord {
                session_id: r.session_id,
                sensor: r.sensor,
                src_ip: r.src_ip,
                first_event_at: r.first_event_at,
                last_event_at: r.last_event_at,
                event_count: r.event_count,
                command_count: r.command_count,
                login_attempts: r.login_attempts,
                file_downloads: r.file_downloads,
                protocol: r.protocol,
                client_version: r.client_version,
                hassh: r.hassh,
                duration_seconds: r.duration_seconds,
                commands,
                logins,
                downloads,
            }
        })
        .collect())
}

/// A `longtail_analysis` row to insert.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = longtail_analysis)]
pub struct NewLongtailAnalysis {
    pub sensor: Option<String>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub lookback_days: Option<i32>,
    pub confidence_score: Option<f64>,
    pub total_events_analyzed: i32,
    pub rare_command_count: i32,
    pub anomalous_sequence_count: i32,
    pub outlier_session_count: i32,
    pub emerging_pattern_count: i32,
    pub high_entropy_payload_count: i32,
    /// `{rare_commands, anomalous_sequences, outlier_sessions, emerging_patterns, high_entropy_payloads}`.
    pub analysis_results: Value,
    pub statistical_summary: Option<Value>,
    pub recommendation: Option<String>,
    pub analysis_duration_seconds: Option<f64>,
    pub memory_usage_mb: Option<f64>,
}

/// A `longtail_detections` row to insert (its `analysis_id` is filled in).
#[derive(Debug, Clone)]
pub struct NewLongtailDetection {
    /// `rare_command`, `anomalous_sequence`, `outlier_session`, `emerging_pattern` or `high_entropy_payload`.
    pub detection_type: String,
    pub session_id: Option<String>,
    pub detection_data: Value,
    pub confidence_score: Option<f64>,
    pub severity_score: Option<f64>,
    pub timestamp: DateTime<Utc>,
    pub source_ip: Option<String>,
}

/// Stores one longtail analysis and its detections in one transaction; returns the analysis id.
pub async fn insert_longtail_analysis(
    conn: &mut AsyncPgConnection,
    analysis: &NewLongtailAnalysis,
    detections: &[NewLongtailDetection],
) -> Result<i64, StoreError> {
    conn.transaction::<_, StoreError, _>(async |conn| {
        let id: i64 = diesel::insert_into(longtail_analysis::table)
            .values(analysis)
            .returning(longtail_analysis::id)
            .get_result(conn)
            .await?;
        if !detections.is_empty() {
            let rows: Vec<_> = detections
                .iter()
                .map(|d| {
                    (
                        longtail_detections::analysis_id.eq(id),
                        longtail_detections::detection_type.eq(&d.detection_type),
                        longtail_detections::session_id.eq(d.session_id.as_ref()),
                        longtail_detections::detection_data.eq(&d.detection_data),
                        longtail_detections::confidence_score.eq(d.confidence_score),
                        longtail_detections::severity_score.eq(d.severity_score),
                        longtail_detections::timestamp.eq(d.timestamp),
                        longtail_detections::source_ip.eq(d.source_ip.as_ref()),
                    )
                })
                .collect();
            for chunk in rows.chunks(2000) {
                diesel::insert_into(longtail_detections::table)
                    .values(chunk)
                    .execute(conn)
                    .await?;
            }
        }
        Ok(id)
    })
    .await
}

fn f64_at(v: &Value, k: &str) -> f64 {
    match v.get(k) {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn bool_at(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn len_at(v: &Value, k: &str) -> i32 {
    v.get(k)
        .and_then(Value::as_array)
        .map_or(0, |a| a.len() as i32)
}

/// Stores a snowshoe result object (spec 3.2); the filter columns are taken from it.
pub async fn insert_snowshoe_detection(
    conn: &mut AsyncPgConnection,
    sensor: Option<&str>,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    result: &Value,
) -> Result<i64, StoreError> {
    let unique_ips = result
        .pointer("/indicators/volume/total_ips")
        .and_then(Value::as_i64)
        .unwrap_or(0) as i32;
    let id = diesel::insert_into(snowshoe_detections::table)
        .values((
            snowshoe_detections::sensor.eq(sensor),
            snowshoe_detections::window_start.eq(window_start),
            snowshoe_detections::window_end.eq(window_end),
            snowshoe_detections::confidence_score.eq(f64_at(result, "confidence_score")),
            snowshoe_detections::unique_ips.eq(unique_ips),
            snowshoe_detections::single_attempt_ips.eq(len_at(result, "single_attempt_ips")),
            snowshoe_detections::low_volume_ips.eq(len_at(result, "low_volume_ips")),
            snowshoe_detections::geographic_spread.eq(Some(f64_at(result, "geographic_spread"))),
            snowshoe_detections::indicators
                .eq(result.get("indicators").cloned().unwrap_or(Value::Null)),
            snowshoe_detections::is_likely_snowshoe.eq(bool_at(result, "is_likely_snowshoe")),
            snowshoe_detections::coordinated_timing.eq(bool_at(result, "coordinated_timing")),
            snowshoe_detections::recommendation.eq(str_field(result, "recommendation")),
            snowshoe_detections::analysis_metadata.eq(result.get("analysis_metadata").cloned()),
            snowshoe_detections::result.eq(result),
        ))
        .returning(snowshoe_detections::id)
        .get_result(conn)
        .await?;
    Ok(id)
}

/// Stores a botnet result object (spec 3.3); the filter columns are taken from it.
pub async fn insert_botnet_detection(
    conn: &mut AsyncPgConnection,
    sensor: Option<&str>,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    result: &Value,
) -> Result<i64, StoreError> {
    let arr = |k: &str| {
        result
            .get(k)
            .filter(|v| v.is_array())
            .cloned()
            .unwrap_or_else(|| Value::Array(vec![]))
    };
    let id = diesel::insert_into(botnet_detections::table)
        .values((
            botnet_detections::sensor.eq(sensor),
            botnet_detections::window_start.eq(window_start),
            botnet_detections::window_end.eq(window_end),
            botnet_detections::coordination_score.eq(f64_at(result, "coordination_score")),
            botnet_detections::is_likely_botnet.eq(bool_at(result, "is_likely_botnet")),
            botnet_detections::credential_reuse_ips.eq(arr("credential_reuse_ips")),
            botnet_detections::similar_command_ips.eq(arr("similar_command_ips")),
            botnet_detections::coordinated_timing.eq(bool_at(result, "coordinated_timing")),
            botnet_detections::geographic_clustering.eq(bool_at(result, "geographic_clustering")),
            botnet_detections::recommendation.eq(str_field(result, "recommendation")),
            botnet_detections::indicators
                .eq(result.get("indicators").cloned().unwrap_or(Value::Null)),
            botnet_detections::analysis_metadata.eq(result.get("analysis_metadata").cloned()),
            botnet_detections::result.eq(result),
        ))
        .returning(botnet_detections::id)
        .get_result(conn)
        .await?;
    Ok(id)
}

/// What longtail reads of one session: the summary features and the command inputs, nothing else.
#[derive(Debug, Clone, PartialEq)]
pub struct LongtailSessionRecord {
    pub session_id: String,
    pub src_ip: Option<String>,
    pub first_event_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub login_attempts: i32,
    pub file_downloads: i32,
    /// `input` of every `cowrie.command.input` event, in log order (event time, then row id).
    pub commands: Vec<String>,
}

#[derive(diesel::QueryableByName)]
struct LongtailSummaryRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    session_id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    src_ip: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    first_event_at: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    last_event_at: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    login_attempts: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    file_downloads: i32,
}

#[derive(diesel::QueryableByName)]
struct CommandRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    session_id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    input: Option<String>,
}

/// The longtail inputs of the sessions of `sensor` (all when `None`) whose first event is in `[start, end)`, in
/// session-id order: six summary columns, and the `input` text of their `cowrie.command.input` events (extracted
/// by PostgreSQL, so no other event and no whole payload leaves the database).
///
/// Two statements: the summaries (by `ix_session_summaries_first_event_at` / `_sensor_first`), then the command
/// events by `ix_raw_events_type_ts` over `[start, latest last_event_at]`, which holds every command of those
/// sessions (a session's events lie between its first and last event); rows are streamed and sessions outside the
/// set (started before `start`) are skipped as they arrive.
pub async fn longtail_sessions_in_window(
    conn: &mut AsyncPgConnection,
    sensor: Option<&str>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<LongtailSessionRecord>, StoreError> {
    use diesel::sql_types::{Nullable, Text, Timestamptz};
    use futures_util::TryStreamExt;
    let summaries: Vec<LongtailSummaryRow> = diesel::sql_query(
        "SELECT session_id, src_ip, first_event_at, last_event_at, login_attempts, file_downloads \
         FROM session_summaries WHERE first_event_at >= $1 AND first_event_at < $2 \
         AND ($3::text IS NULL OR sensor = $3) ORDER BY session_id",
    )
    .bind::<Timestamptz, _>(start)
    .bind::<Timestamptz, _>(end)
    .bind::<Nullable<Text>, _>(sensor)
    .load(conn)
    .await?;
    let Some(latest) = summaries.iter().map(|r| r.last_event_at).max() else {
        return Ok(Vec::new());
    };
    let index: HashMap<&str, usize> = summaries
        .iter()
        .enumerate()
        .map(|(i, r)| (r.session_id.as_str(), i))
        .collect();
    let mut commands: Vec<Vec<String>> = vec![Vec::new(); summaries.len()];
    {
        let mut rows = diesel::sql_query(
            "SELECT session_id, CASE WHEN jsonb_typeof(payload->'input') = 'string' THEN payload->>'input' END AS input \
             FROM raw_events \
             WHERE event_type = 'cowrie.command.input' AND event_timestamp >= $1 AND event_timestamp <= $2 \
             AND session_id IS NOT NULL ORDER BY session_id, event_timestamp, id",
        )
        .bind::<Timestamptz, _>(start)
        .bind::<Timestamptz, _>(latest)
        .load_stream::<CommandRow>(conn)
        .await?;
        while let Some(row) = rows.try_next().await? {
            if let (Some(&i), Some(input)) = (index.get(row.session_id.as_str()), row.input) {
                commands[i].push(input);
            }
        }
    }
    drop(index);
    Ok(summaries
        .into_iter()
        .zip(commands)
        .map(|(r, commands)| LongtailSessionRecord {
            session_id: r.session_id,
            src_ip: r.src_ip,
            first_event_at: r.first_event_at,
            last_event_at: r.last_event_at,
            login_attempts: r.login_attempts,
            file_downloads: r.file_downloads,
            commands,
        })
        .collect())
}
