//! The dead letters, for admins (`docs/dead-letters.md`): `GET /api/v1/cluster/dead-letters` (newest first),
//! `GET /api/v1/cluster/dead-letters/{id}`, and `POST .../replay`, `.../drop`, `.../purge`. They hold whole task
//! messages, arguments included, so every route needs the admin scope (the access table in `middleware.rs`). The
//! work is `jobs::DeadLetters`, the same code as `celeriac dead-letters`.

use actix_web::web::{Data, Json, Path};
use actix_web::{HttpRequest, HttpResponse, get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::params::Query;

/// At most this many ids in one replay or drop.
pub const MAX_IDS: usize = 100;

/// One message a worker could not process and kept.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterEntry {
    /// Stable id (for show, replay, drop).
    pub id: String,
    /// Why it was kept (for example `undecodable message: ...`, `unregistered task: ...`).
    pub reason: String,
    /// The queue it came from (where replay sends it).
    pub queue: Option<String>,
    /// The worker that kept it.
    pub node: Option<String>,
    /// When (ISO 8601, UTC).
    pub time: Option<String>,
    /// The message as received (lossy UTF-8).
    pub message: String,
    /// The exact bytes in base64, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_base64: Option<String>,
    /// Its size in bytes.
    pub size: usize,
}

impl From<jobs::DeadLetter> for DeadLetterEntry {
    fn from(d: jobs::DeadLetter) -> DeadLetterEntry {
        DeadLetterEntry {
            id: d.id,
            reason: d.reason,
            queue: d.queue,
            node: d.node,
            time: d.time,
            message: d.message,
            message_base64: d.message_base64,
            size: d.size,
        }
    }
}

/// The dead-letter store: how many entries it holds and `limit` of them from `offset`, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetters {
    pub count: u64,
    pub entries: Vec<DeadLetterEntry>,
}

/// `POST /api/v1/cluster/dead-letters/replay` and `.../drop`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterIds {
    /// 1 to 100 ids.
    pub ids: Vec<String>,
}

/// What happened to one id.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterOutcome {
    pub id: String,
    /// `replayed`, `dropped`, `not_found` or `failed`.
    pub outcome: String,
    /// The queue it was replayed to, or why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The outcome of each id, in the order given.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterOutcomes {
    pub outcomes: Vec<DeadLetterOutcome>,
}

/// `POST /api/v1/cluster/dead-letters/purge`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterPurge {
    /// Remove entries older than this: a whole number with `s`, `m`, `h`, `d` or `w` (`7d`).
    pub older_than: String,
}

/// How many entries a purge removed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterPurged {
    pub purged: u64,
}

fn body<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::InvalidBody {
        parameter: None,
        message: e.to_string(),
    })
}

fn ids(v: Value) -> Result<Vec<String>, ApiError> {
    let DeadLetterIds { ids } = body(v)?;
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(ApiError::InvalidBody {
            parameter: Some("ids".into()),
            message: format!("give 1 to {MAX_IDS} ids"),
        });
    }
    Ok(ids)
}

fn outcomes(out: Vec<jobs::dead_letters::Outcome>) -> DeadLetterOutcomes {
    DeadLetterOutcomes {
        outcomes: out
            .into_iter()
            .map(|o| DeadLetterOutcome {
                id: o.id,
                outcome: o.outcome.to_string(),
                detail: o.detail,
            })
            .collect(),
    }
}

/// The dead letters, newest first (admin keys only: they hold whole task messages, arguments included).
#[utoipa::path(get, path = "/api/v1/cluster/dead-letters", tag = "cluster",
    security(("api_key" = []), ("bearer" = [])),
    params(
        ("limit" = Option<i64>, Query, description = "How many entries (1-500, default 50)"),
        ("offset" = Option<i64>, Query, description = "Skip this many of the newest (0-1000000, default 0)"),
    ),
    responses(
        (status = 200, description = "The count and the entries", body = DeadLetters),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks admin", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody),
    ))]
#[get("/cluster/dead-letters")]
pub async fn list(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let q = Query::parse(req.query_string(), &["limit", "offset"])?;
    let limit = q.int("limit", 1, 500, 50)? as usize;
    let offset = q.int("offset", 0, 1_000_000, 0)? as usize;
    let (count, entries) = state
        .jobs()?
        .dead_letter_store()
        .list(offset, limit)
        .await?;
    let entries = entries.into_iter().map(DeadLetterEntry::from).collect();
    Ok(HttpResponse::Ok().json(DeadLetters { count, entries }))
}

/// One dead letter with its whole message (admin).
#[utoipa::path(get, path = "/api/v1/cluster/dead-letters/{id}", tag = "cluster",
    security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The dead letter's id")),
    responses(
        (status = 200, description = "The entry", body = DeadLetterEntry),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks admin", body = ErrorBody),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody),
    ))]
#[get("/cluster/dead-letters/{id}")]
pub async fn show(
    state: Data<AppState>,
    id: Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    Query::parse(req.query_string(), &[])?;
    match state.jobs()?.dead_letter_store().show(&id).await? {
        Some(d) => Ok(HttpResponse::Ok().json(DeadLetterEntry::from(d))),
        None => Err(ApiError::DeadLetterNotFound(id.into_inner())),
    }
}

/// Republish each entry's original message, unchanged, to the queue it came from, and remove the entry (admin).
#[utoipa::path(post, path = "/api/v1/cluster/dead-letters/replay", tag = "cluster",
    security(("api_key" = []), ("bearer" = [])),
    request_body = DeadLetterIds,
    responses(
        (status = 200, description = "The outcome of each id (`replayed`, `not_found`, `failed`)", body = DeadLetterOutcomes),
        (status = 400, description = "The body is not JSON, or a bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks admin", body = ErrorBody),
        (status = 422, description = "Not 1 to 100 ids", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody),
    ))]
#[post("/cluster/dead-letters/replay")]
pub async fn replay(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Json<Value>,
) -> Result<HttpResponse, ApiError> {
    Query::parse(req.query_string(), &[])?;
    let ids = ids(payload.into_inner())?;
    let out = state.jobs()?.dead_letter_store().replay(&ids).await?;
    Ok(HttpResponse::Ok().json(outcomes(out)))
}

/// Remove entries (admin).
#[utoipa::path(post, path = "/api/v1/cluster/dead-letters/drop", tag = "cluster",
    security(("api_key" = []), ("bearer" = [])),
    request_body = DeadLetterIds,
    responses(
        (status = 200, description = "The outcome of each id (`dropped`, `not_found`)", body = DeadLetterOutcomes),
        (status = 400, description = "The body is not JSON, or a bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks admin", body = ErrorBody),
        (status = 422, description = "Not 1 to 100 ids", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody),
    ))]
#[post("/cluster/dead-letters/drop")]
pub async fn drop_ids(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Json<Value>,
) -> Result<HttpResponse, ApiError> {
    Query::parse(req.query_string(), &[])?;
    let ids = ids(payload.into_inner())?;
    let out = state.jobs()?.dead_letter_store().drop_ids(&ids).await?;
    Ok(HttpResponse::Ok().json(outcomes(out)))
}

/// Remove every entry older than an age (admin).
#[utoipa::path(post, path = "/api/v1/cluster/dead-letters/purge", tag = "cluster",
    security(("api_key" = []), ("bearer" = [])),
    request_body = DeadLetterPurge,
    responses(
        (status = 200, description = "How many entries were removed", body = DeadLetterPurged),
        (status = 400, description = "The body is not JSON, or a bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks admin", body = ErrorBody),
        (status = 422, description = "`older_than` is not an age", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody),
    ))]
#[post("/cluster/dead-letters/purge")]
pub async fn purge(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Json<Value>,
) -> Result<HttpResponse, ApiError> {
    Query::parse(req.query_string(), &[])?;
    let DeadLetterPurge { older_than } = body(payload.into_inner())?;
    let age = transport::parse_age(&older_than).map_err(|e| ApiError::InvalidBody {
        parameter: Some("older_than".into()),
        message: e,
    })?;
    let purged = state
        .jobs()?
        .dead_letter_store()
        .purge_older_than(age)
        .await?;
    Ok(HttpResponse::Ok().json(DeadLetterPurged { purged }))
}
