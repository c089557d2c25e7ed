//! Analyses as jobs: `POST /api/v1/analyses` submits a `cowrieprocessor.workers.*` task through the shared routing
//! (`jobs` crate, the coordinator's own), `GET /api/v1/jobs/{id}` reads its state, `GET /api/v1/jobs/{id}/events`
//! streams it as server-sent events until a ready state, `DELETE /api/v1/jobs/{id}` revokes it.

use actix_web::web::{Bytes, Data, Json, Path, ReqData};
use actix_web::{HttpRequest, HttpResponse, delete, get, post};
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::Arc;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::model::{AnalysisRequest, JobAccepted, JobEvent, JobRevoked, JobStatus};
use crate::params::Query;
use crate::service::job_status;

/// Submit an analysis; it runs on a worker chosen by `worker-config.yaml`'s routing.
#[utoipa::path(post, path = "/api/v1/analyses", tag = "analyses",
    security(("api_key" = []), ("bearer" = [])),
    request_body = AnalysisRequest,
    responses(
        (status = 202, description = "Accepted: follow `status_url` or `events_url`", body = JobAccepted,
            headers(("Location" = String, description = "`status_url`")),
            links(
                ("status" = (operation_id = "status", parameters(("id" = "$response.body#/id")))),
                ("events" = (operation_id = "events", parameters(("id" = "$response.body#/id")))),
                ("revoke" = (operation_id = "revoke", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks jobs:write", body = ErrorBody),
        (status = 404, description = "Unknown sensor", body = ErrorBody),
        (status = 422, description = "Bad kind, window, parameter, priority; or routing found no worker", body = ErrorBody),
        (status = 429, description = "Rate limited (analyses class)", body = ErrorBody),
        (status = 503, description = "Redis or the rate limiter unavailable", body = ErrorBody),
    ))]
#[post("/analyses")]
pub async fn submit(
    state: Data<AppState>,
    caller: ReqData<Caller>,
    req: HttpRequest,
    body: Json<Value>,
) -> Result<HttpResponse, ApiError> {
    Query::parse(req.query_string(), &[])?;
    let body = AnalysisRequest::from_json(body.into_inner())?;
    let accepted = state.submit_analysis(&caller, &body).await?;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", accepted.status_url.clone()))
        .json(accepted))
}

/// A job's state, progress, result or error.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "analyses",
    security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The job (Celery task) id")),
    responses(
        (status = 200, description = "The job", body = JobStatus),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody),
    ))]
#[get("/jobs/{id}")]
pub async fn status(
    state: Data<AppState>,
    id: Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    Query::parse(req.query_string(), &[])?;
    Ok(HttpResponse::Ok().json(state.job(&id).await?))
}

/// Server-sent events: `event: state` with the job (as `GET /jobs/{id}` shows it) now and at every stored change
/// (PROGRESS included), until a ready state; `: keep-alive` comments every 15 s in between.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "analyses",
    security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The job (Celery task) id")),
    responses(
        (status = 200, description = "An event stream of `state` events (the schema is that of one event)", body = JobEvent, content_type = "text/event-stream"),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody),
    ))]
#[get("/jobs/{id}/events")]
pub async fn events(
    state: Data<AppState>,
    id: Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    Query::parse(req.query_string(), &[])?;
    let jobs = state.jobs()?;
    // Not found is an HTTP error, not an empty stream.
    jobs.view(&id).await?;
    let updates = jobs.watch(&id).await?;
    let open = StreamGauge::new(state.clone().into_inner());
    let stream = updates.map(move |u| {
        let _open = &open;
        let frame = match u {
            jobs::JobUpdate::View(v) => match job_status(&v).and_then(|s| {
                serde_json::to_string(&s).map_err(|e| ApiError::Internal(e.to_string()))
            }) {
                Ok(json) => format!("event: state\ndata: {json}\n\n"),
                Err(e) => format!(
                    "event: error\ndata: {}\n\n",
                    serde_json::json!({"message": e.to_string()})
                ),
            },
            jobs::JobUpdate::KeepAlive => ": keep-alive\n\n".to_string(),
        };
        Ok::<_, actix_web::Error>(Bytes::from(frame))
    });
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", "text/event-stream"))
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}

/// Counts an open stream in the `sse_streams` gauge for as long as it lives.
pub(crate) struct StreamGauge(Arc<AppState>);

impl StreamGauge {
    pub(crate) fn new(state: Arc<AppState>) -> StreamGauge {
        state.metrics.sse_streams.inc();
        StreamGauge(state)
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.metrics.sse_streams.dec();
    }
}

/// Revoke a job (`terminate=true` also stops it if it already runs).
#[utoipa::path(delete, path = "/api/v1/jobs/{id}", tag = "analyses",
    security(("api_key" = []), ("bearer" = [])),
    params(
        ("id" = String, Path, description = "The job (Celery task) id"),
        ("terminate" = Option<bool>, Query, description = "Also stop it if it runs (SIGTERM)"),
    ),
    responses(
        (status = 202, description = "Revoked", body = JobRevoked),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks jobs:write", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody),
    ))]
#[delete("/jobs/{id}")]
pub async fn revoke(
    state: Data<AppState>,
    id: Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = Query::parse(req.query_string(), &["terminate"])?;
    let terminate = q.bool("terminate")?.unwrap_or(false);
    Ok(HttpResponse::Accepted().json(state.revoke_job(&id, terminate).await?))
}
