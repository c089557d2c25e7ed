//! The HTTP routes, one file per family: `health` (health, readiness, metrics), `statistics`, `sessions`,
//! `findings`, `jobs` (analyses as jobs, their status, progress stream and revocation), `cluster` (workers, queues, their
//! event stream, dead letters, routing explain), `me` (the calling key), `docs` (OpenAPI and the docs page) and `ui` (the dashboard at `/`). [`configure`] mounts them with the middleware and the JSON error mapping.

pub mod cluster;
pub mod dead_letters;
pub mod docs;
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

/// Mount every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(docs::openapi_json)
        .service(docs::swagger())
        .service(crate::mcp::service())
        .service(ui::index)
        .service(ui::asset)
        .service(
            web::scope("/api/v1")
                .service(statistics::sessions)
                .service(statistics::threats)
                .service(statistics::sensors)
                .service(sessions::list)
                .service(sessions::detail)
                .service(findings::list)
                .service(findings::detail)
                .service(jobs::submit)
                .service(jobs::status)
                .service(jobs::events)
                .service(jobs::revoke)
                .service(cluster::workers)
                .service(cluster::queues)
                .service(cluster::stream)
                .service(dead_letters::list)
                .service(dead_letters::replay)
                .service(dead_letters::drop_ids)
                .service(dead_letters::purge)
                .service(dead_letters::show)
                .service(cluster::explain)
                .service(me::me),
        )
        .default_service(web::to(not_found));
}

/// An unknown path is 404; a path of the OpenAPI document asked with a method it does not list is 405 with `Allow`.
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

async fn not_found(req: HttpRequest) -> HttpResponse {
    if let Some(allow) = allowed_methods(req.path())
        && !allow.split(", ").any(|m| m == req.method().as_str())
    {
        let mut r = ApiError::MethodNotAllowed(req.method().to_string()).error_response();
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allow) {
            r.headers_mut().insert(actix_web::http::header::ALLOW, v);
        }
        return r;
    }
    ApiError::RouteNotFound(format!("{} {}", req.method(), req.path())).error_response()
}

/// The methods the OpenAPI document lists for the path template `path` matches (`GET, DELETE`), if any.
fn allowed_methods(path: &str) -> Option<String> {
    use actix_web::dev::ResourceDef;
    use utoipa::OpenApi;
    static ROUTES: std::sync::LazyLock<Vec<(ResourceDef, String)>> =
        std::sync::LazyLock::new(|| {
            let doc = crate::openapi::ApiDoc::openapi();
            doc.paths
                .paths
                .iter()
                .map(|(template, item)| {
                    let methods = [
                        ("GET", &item.get),
                        ("PUT", &item.put),
                        ("POST", &item.post),
                        ("DELETE", &item.delete),
                        ("OPTIONS", &item.options),
                        ("HEAD", &item.head),
                        ("PATCH", &item.patch),
                        ("TRACE", &item.trace),
                    ];
                    let listed: Vec<&str> = methods
                        .into_iter()
                        .filter(|(_, op)| op.is_some())
                        .map(|(m, _)| m)
                        .collect();
                    (ResourceDef::new(template.as_str()), listed.join(", "))
                })
                .collect()
        });
    ROUTES
        .iter()
        .find(|(def, _)| def.is_match(path))
        .map(|(_, allow)| allow.clone())
}
