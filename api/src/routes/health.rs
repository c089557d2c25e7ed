//! `/healthz` (the process answers), `/readyz` (PostgreSQL answers; Redis and the replica are reported), `/metrics`
//! (the API's own series, and the sensors' health read from PostgreSQL at scrape time).

use actix_web::web::Data;
use actix_web::{HttpResponse, get};
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::Health;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Object)))]
#[get("/healthz")]
pub async fn healthz(state: Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({"status": "ok", "uptime_seconds": state.started.elapsed().as_secs()}))
}

/// Ready to serve: PostgreSQL answers. Redis and the replica are reported; while they are down the API still serves
/// statistics (`status: degraded`).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready", body = Health),
              (status = 503, description = "PostgreSQL does not answer", body = ErrorBody)))]
#[get("/readyz")]
pub async fn readyz(state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.health().await {
        Ok(h) => Ok(HttpResponse::Ok().json(h)),
        Err(e) => Err(ApiError::NotReady(e.to_string())),
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Metrics", body = String, content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(state: Data<AppState>) -> HttpResponse {
    let mut body = state.metrics.render();
    // The sensors' and loaders' health from PostgreSQL (a few index probes per sensor); left out while the
    // database does not answer, which the API's own series and the readiness probe report.
    match state
        .db
        .read(&|c| Box::pin(store::loader_runs::sensor_health(c)))
        .await
    {
        Ok((rows, _)) => body.push_str(&crate::metrics::render_sensor_health(&rows)),
        Err(e) => tracing::warn!(error = %e, "sensor health for /metrics unavailable"),
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}
