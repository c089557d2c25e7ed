//! The HTTP routes, one file per family: `health` (health, readiness, metrics), `statistics`, `sessions`,
//! `findings`, `jobs` (analyses as jobs, their status, progress stream and revocation), `cluster` (workers, queues, their
//! event stream, dead letters, routing explain), `me` (the calling key) and `ui` (the dashboard at `/`), with the JSON
//! body and path settings and the answer cache they share. `crate::app` mounts them beside the OpenAPI document, the
//! docs page and MCP.

pub mod cluster;
pub mod dead_letters;
pub mod findings;
pub mod health;
pub mod jobs;
pub mod me;
pub mod sessions;
pub mod statistics;
pub mod ui;

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::error::ApiError;

/// The JSON body settings: 256 KiB at most; syntax errors are 400 `malformed_body`, well-formed JSON of the wrong
/// shape is 422 `invalid_body`.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(256 * 1024)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as J;
            let e = match &err {
                J::Deserialize(d) if d.is_data() => ApiError::InvalidBody {
                    parameter: None,
                    message: d.to_string(),
                },
                J::ContentType => {
                    ApiError::MalformedBody("send Content-Type: application/json".into())
                }
                other => ApiError::MalformedBody(other.to_string()),
            };
            actix_web::error::InternalError::from_response(err, e.error_response()).into()
        })
}

/// Path segments that do not parse are 400 naming the path.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        let e = ApiError::param("path", err.to_string());
        actix_web::error::InternalError::from_response(err, e.error_response()).into()
    })
}

/// Answer a read from the answer cache (`crate::cache`), keyed by the path and the exact query string; the
/// `Cache-Control` header says how long the answer may be reused.
pub async fn cached<T, F, Fut>(
    state: &crate::AppState,
    req: &HttpRequest,
    compute: F,
) -> Result<HttpResponse, ApiError>
where
    T: serde::Serialize,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let key = format!("{}?{}", req.path(), req.query_string());
    let body = state.answers.get_or_compute(key, compute).await?;
    let age = state.answers.ttl().as_secs();
    let control = if age == 0 {
        "no-store".to_string()
    } else {
        format!("private, max-age={age}")
    };
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", control))
        .body(body))
}
