//! `GET /api/v1/statistics/{sessions,threats,sensors}`: totals, timelines, top attackers, credentials, commands,
//! downloads, latest findings, and per-sensor health.

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse, get};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::{SensorStatistics, SessionStatistics, ThreatStatistics};
use crate::service::{self, scoped_query};

/// Session totals and the sessions/events/unique-IP timeline.
#[utoipa::path(get, path = "/api/v1/statistics/sessions", tag = "statistics",
    security(("api_key" = []), ("bearer" = [])),
    params(
        ("sensor" = Option<Vec<String>>, Query, description = "A sensor to include (repeatable); all when absent", explode = true),
        ("start" = Option<String>, Query, format = DateTime, description = "Window start, RFC 3339 (default: end - 7 days)"),
        ("end" = Option<String>, Query, format = DateTime, description = "Window end, RFC 3339, exclusive (default: now)"),
        ("days" = Option<i64>, Query, minimum = 1, maximum = 3660, description = "Window length in days ending at `end` (not with `start`)"),
        ("bucket_size" = Option<String>, Query, pattern = "^(hour|day)$", description = "`hour` or `day` (default `day`)"),
    ),
    responses(
        (status = 200, description = "Session statistics", body = SessionStatistics),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 404, description = "Unknown sensor", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
#[get("/statistics/sessions")]
pub async fn sessions(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    super::cached(&state, &req, || async {
        let q = scoped_query(req.query_string(), service::SESSIONS_STATS_PARAMS)?;
        state.session_statistics(&q).await
    })
    .await
}

/// Top source IPs, credentials, usernames, commands (defanged, with risk scores), downloads, and the latest
/// longtail, snowshoe and botnet findings.
#[utoipa::path(get, path = "/api/v1/statistics/threats", tag = "statistics",
    security(("api_key" = []), ("bearer" = [])),
    params(
        ("sensor" = Option<Vec<String>>, Query, description = "A sensor to include (repeatable); all when absent", explode = true),
        ("start" = Option<String>, Query, format = DateTime, description = "Window start, RFC 3339"),
        ("end" = Option<String>, Query, format = DateTime, description = "Window end, RFC 3339, exclusive"),
        ("days" = Option<i64>, Query, minimum = 1, maximum = 3660, description = "Window length in days (not with `start`)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Rows per list (default 10)"),
    ),
    responses(
        (status = 200, description = "Threat statistics", body = ThreatStatistics),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 404, description = "Unknown sensor", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
#[get("/statistics/threats")]
pub async fn threats(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    super::cached(&state, &req, || async {
        let q = scoped_query(req.query_string(), service::THREATS_PARAMS)?;
        state.threat_statistics(&q).await
    })
    .await
}

/// Per-sensor events, sessions, last ingest, dead letters and status (`ok`, `stale`, `failing`).
#[utoipa::path(get, path = "/api/v1/statistics/sensors", tag = "statistics",
    security(("api_key" = []), ("bearer" = [])),
    params(
        ("sensor" = Option<Vec<String>>, Query, description = "A sensor to include (repeatable); all when absent", explode = true),
        ("start" = Option<String>, Query, format = DateTime, description = "Window start, RFC 3339"),
        ("end" = Option<String>, Query, format = DateTime, description = "Window end, RFC 3339, exclusive"),
        ("days" = Option<i64>, Query, minimum = 1, maximum = 3660, description = "Window length in days (not with `start`)"),
    ),
    responses(
        (status = 200, description = "Sensor status", body = SensorStatistics),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 404, description = "Unknown sensor", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
#[get("/statistics/sensors")]
pub async fn sensors(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    super::cached(&state, &req, || async {
        let q = scoped_query(req.query_string(), service::SENSORS_PARAMS)?;
        state.sensor_statistics(&q).await
    })
    .await
}
