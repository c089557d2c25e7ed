//! The API's response and request bodies. Each is `Serialize` + `ToSchema`, so the OpenAPI document is generated
//! from exactly what the handlers send.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// The data a statistic covers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WindowInfo {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The sensors included; empty means all.
    pub sensors: Vec<String>,
    /// Which database answered: `replica` or `primary`.
    pub source: String,
}

/// One bucket of the timeline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TimelineBucket {
    /// Start of the UTC hour or day.
    pub bucket: DateTime<Utc>,
    /// Sessions that started in the bucket.
    pub sessions: i64,
    /// Events logged in the bucket.
    pub events: i64,
    /// Distinct source IPs of the sessions that started in the bucket.
    pub unique_ips: i64,
}

/// `GET /api/v1/statistics/sessions`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionStatistics {
    pub window: WindowInfo,
    /// Sessions that started in the window.
    pub total_sessions: i64,
    /// Distinct source IPs of those sessions.
    pub unique_ips: i64,
    /// Login events (`cowrie.login.success` and `.failed`) of those sessions.
    pub login_attempts: i64,
    /// Sessions with at least one successful login.
    pub successful_logins: i64,
    pub sessions_with_commands: i64,
    /// File download and upload events of those sessions.
    pub file_downloads: i64,
    /// Mean session duration, for sessions whose `cowrie.session.closed` was logged.
    pub avg_session_seconds: Option<f64>,
    /// `hour` or `day`.
    pub bucket_size: String,
    pub timeline: Vec<TimelineBucket>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceIp {
    pub ip: String,
    pub sessions: i64,
    pub events: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Credential {
    pub username: Option<String>,
    pub password: Option<String>,
    pub attempts: i64,
    pub successes: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Username {
    pub username: Option<String>,
    pub attempts: i64,
    pub successes: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Command {
    /// The command defanged for display (`[defang:<level>] ...` when it is risky), as the original shows it.
    pub command: String,
    pub count: i64,
    /// The original's command risk score, 0 to 100.
    pub risk_score: u32,
    /// `safe`, `moderate` or `dangerous`.
    pub risk_level: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Download {
    pub url: Option<String>,
    pub sha256: String,
    /// Sessions that fetched it.
    pub count: i64,
}

/// A stored analysis result, summarised.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FindingSummary {
    pub id: i64,
    /// `longtail`, `snowshoe` or `botnet`.
    pub kind: String,
    pub detected_at: DateTime<Utc>,
    /// The sensor analysed; null for all sensors.
    pub sensor: Option<String>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// Confidence (longtail, snowshoe) or coordination score (botnet).
    pub score: Option<f64>,
    /// Longtail: anything rare or anomalous found; snowshoe/botnet: judged likely.
    pub positive: bool,
    /// The detector's headline numbers and indicators.
    #[schema(value_type = Object)]
    pub summary: Value,
    pub recommendation: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LatestFindings {
    pub longtail: Option<FindingSummary>,
    pub snowshoe: Option<FindingSummary>,
    pub botnet: Option<FindingSummary>,
}

/// `GET /api/v1/statistics/threats`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ThreatStatistics {
    pub window: WindowInfo,
    pub top_source_ips: Vec<SourceIp>,
    pub top_credentials: Vec<Credential>,
    pub top_usernames: Vec<Username>,
    pub top_commands: Vec<Command>,
    pub downloads: Vec<Download>,
    pub latest_findings: LatestFindings,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SensorStatus {
    pub sensor: String,
    /// Events in the window.
    pub events: i64,
    /// Sessions that started in the window.
    pub sessions: i64,
    pub first_event_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub last_ingest_at: Option<DateTime<Utc>>,
    /// Unresolved dead letters of this sensor's logs.
    pub dead_letters: i64,
    /// `ok`, `stale` (no ingest for the stale time) or `failing` (dead letters added recently).
    pub status: String,
}

/// `GET /api/v1/statistics/sensors`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SensorStatistics {
    pub window: WindowInfo,
    /// Seconds without ingest after which a sensor is `stale`.
    pub stale_after_seconds: u64,
    pub sensors: Vec<SensorStatus>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionSummary {
    pub session_id: String,
    pub sensor: String,
    pub src_ip: Option<String>,
    pub first_event_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub event_count: i32,
    pub command_count: i32,
    pub login_attempts: i32,
    pub file_downloads: i32,
    pub login_success: bool,
    /// The successful login's username, else the last one tried.
    pub username: Option<String>,
    pub password: Option<String>,
    pub protocol: Option<String>,
    pub client_version: Option<String>,
    pub hassh: Option<String>,
    pub duration_seconds: Option<f64>,
    pub risk_score: Option<i32>,
}

/// `GET /api/v1/sessions`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionList {
    pub window: WindowInfo,
    pub sessions: Vec<SessionSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionEvent {
    pub id: i64,
    pub timestamp: DateTime<Utc>,
    pub event_type: String,
    /// The event's risk score as the loader computed it.
    pub risk_score: Option<i32>,
    /// For `cowrie.command.input`: the command defanged for display.
    pub command_safe: Option<String>,
    /// The Cowrie event as logged.
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// `GET /api/v1/sessions/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionDetail {
    pub session: SessionSummary,
    pub events: Vec<SessionEvent>,
    /// True when the session has more events than were returned.
    pub events_truncated: bool,
}

/// `GET /api/v1/findings/{kind}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FindingList {
    pub kind: String,
    pub findings: Vec<FindingSummary>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Detection {
    pub id: i64,
    /// `rare_command`, `anomalous_sequence` or `outlier_session`.
    pub detection_type: String,
    pub session_id: Option<String>,
    pub source_ip: Option<String>,
    #[schema(value_type = Object)]
    pub detection_data: Value,
}

/// `GET /api/v1/findings/{kind}/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FindingDetail {
    pub finding: FindingSummary,
    /// The whole stored result object (the task's return value); null when none was stored.
    #[schema(value_type = Option<Object>)]
    pub result: Value,
    /// Longtail only: its detection rows (rare commands, anomalous sequences, outlier sessions).
    pub detections: Option<Vec<Detection>>,
}

/// Which analysis to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnalysisKind {
    Longtail,
    Snowshoe,
    Botnet,
}

impl AnalysisKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisKind::Longtail => "longtail",
            AnalysisKind::Snowshoe => "snowshoe",
            AnalysisKind::Botnet => "botnet",
        }
    }

    /// The task the original Python tool names for it.
    pub fn task(self) -> &'static str {
        match self {
            AnalysisKind::Longtail => "cowrieprocessor.workers.longtail_analysis",
            AnalysisKind::Snowshoe => "cowrieprocessor.workers.snowshoe_detection",
            AnalysisKind::Botnet => "cowrieprocessor.workers.botnet_detection",
        }
    }

    pub fn parse(s: &str) -> Option<AnalysisKind> {
        [
            AnalysisKind::Longtail,
            AnalysisKind::Snowshoe,
            AnalysisKind::Botnet,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// `POST /api/v1/analyses`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisRequest {
    pub kind: AnalysisKind,
    /// One sensor, or null/absent for all sensors.
    #[serde(default)]
    pub sensor: Option<String>,
    /// `"7d"`, `"24h"`, `"90m"`, `"2w"` (ending now) or `{"start": iso, "end": iso}`; default `"7d"`.
    #[serde(default)]
    #[schema(schema_with = time_window_schema)]
    pub time_window: Option<Value>,
    /// The detector's thresholds (for example `rarity_threshold`, `credential_reuse_threshold`); unknown ones are refused.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// Celery priority 0 to 9 (lower first on Redis).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<i64>,
}

impl AnalysisRequest {
    /// The fields a submission takes.
    pub const FIELDS: [&str; 5] = ["kind", "sensor", "time_window", "params", "priority"];

    /// Parse a submission. A body of the wrong shape is 422 `invalid_body` with a message that names the field
    /// (serde alone says "unknown variant" without saying of what); the values the service checks further
    /// (`sensor`, `time_window`, `params`, `priority`) are also named in `parameter` there.
    pub fn from_json(body: Value) -> Result<AnalysisRequest, crate::ApiError> {
        let invalid = |message: String| crate::ApiError::InvalidBody {
            parameter: None,
            message,
        };
        let Value::Object(fields) = &body else {
            return Err(invalid(format!(
                "the body must be a JSON object, got {body}"
            )));
        };
        for (k, v) in fields {
            let v = v.clone();
            let checked = match k.as_str() {
                "kind" => serde_json::from_value::<AnalysisKind>(v).map(drop),
                "sensor" => serde_json::from_value::<Option<String>>(v).map(drop),
                "params" => serde_json::from_value::<Map<String, Value>>(v).map(drop),
                "priority" => serde_json::from_value::<Option<i64>>(v).map(drop),
                "time_window" => Ok(()),
                _ => {
                    return Err(invalid(format!(
                        "unknown field `{k}` (known: {})",
                        Self::FIELDS.join(", ")
                    )));
                }
            };
            checked.map_err(|e| invalid(format!("{k}: {e}")))?;
        }
        serde_json::from_value(body).map_err(|e| invalid(e.to_string()))
    }
}

/// `time_window`: a length ending now, or an explicit window.
fn time_window_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    let time = |d: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some(d))
    };
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9]+[mhdw]$"))
                .description(Some("Minutes, hours, days or weeks ending now, at most ten years")),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("start", time("ISO 8601"))
                .property("end", time("ISO 8601; default now"))
                .required("start"),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "`\"7d\"`, `\"24h\"`, `\"90m\"`, `\"2w\"` (ending now) or `{\"start\": iso, \"end\": iso}`; default `\"7d\"`.",
        ))
        .build()
        .into()
}

/// The answer to a submission.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobAccepted {
    pub id: String,
    pub kind: String,
    pub task: String,
    /// The Celery queue it was published to (a shared queue or a worker's `<node>.dq2`).
    pub queue: Option<String>,
    /// The worker chosen, when routing picked one.
    pub node: Option<String>,
    /// The routing decision, with the reason for every candidate.
    #[schema(value_type = Object)]
    pub decision: Value,
    /// Where to follow it: the status URL and the SSE stream.
    pub status_url: String,
    pub events_url: String,
}

/// `GET /api/v1/jobs/{id}`: the job's record and its state in the result backend.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobStatus {
    pub id: String,
    pub task: Option<String>,
    pub queue: Option<String>,
    pub published_to: Option<String>,
    /// Celery state: PENDING, RECEIVED, STARTED, PROGRESS, RETRY, SUCCESS, FAILURE, REVOKED (or REJECTED by routing).
    pub state: String,
    /// True in SUCCESS, FAILURE and REVOKED.
    pub ready: bool,
    /// The task's return value (when ready): any JSON, or the exception `{exc_type, exc_message, exc_module}`.
    pub result: Option<Value>,
    pub traceback: Option<String>,
    pub date_done: Option<String>,
    /// The task's last progress report (`stage`, `current`, `total`, ...), while it runs.
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Value>,
    pub worker: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub decision: Option<Value>,
    #[schema(value_type = Vec<Object>)]
    pub reroutes: Vec<Value>,
    pub revoked: bool,
}

/// One event of `GET /api/v1/jobs/{id}/events` as an event-stream parser reads it (the `: keep-alive` comments in
/// between are not events).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobEvent {
    #[schema(inline)]
    pub event: JobEventType,
    /// JSON text: for `state` the job as `GET /api/v1/jobs/{id}` shows it, for `error` `{"message": ...}`.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// `state` (a new state of the job) or `error` (it could not be read).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobEventType {
    State,
    Error,
}

/// One event of `GET /api/v1/cluster/stream` as an event-stream parser reads it (the `: keep-alive` comments in
/// between are not events).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterEvent {
    #[schema(inline)]
    pub event: ClusterEventType,
    /// JSON text: for `workers` the body of `GET /api/v1/cluster/workers`, for `queues` that of
    /// `GET /api/v1/cluster/queues`, for `error` an error body.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// `workers`, `queues` (what changed) or `error` (Redis could not be read).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterEventType {
    Workers,
    Queues,
    Error,
}

/// `DELETE /api/v1/jobs/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobRevoked {
    pub id: String,
    pub revoked: bool,
    pub terminate: bool,
}

/// `GET /healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when an optional part is down.
    pub status: String,
    pub database: String,
    pub replica: String,
    pub redis: String,
}
