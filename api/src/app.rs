//! The application: the REST routes (`crate::routes`), the OpenAPI document and docs page (`crate::docs`), MCP
//! (`crate::mcp`) and the dashboard, behind the auth/limit/metrics middleware, with the JSON error mapping for
//! unknown paths and methods. It sits above all of them: the document describes the routes, and the fallback answers
//! 405 from the document.

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::error::ApiError;
use crate::routes::{
    self, cluster, dead_letters, findings, health, jobs, me, sessions, statistics, ui,
};
use crate::{AppState, docs, mcp, middleware};

/// The application: routes, the auth/limit/metrics middleware, JSON and path error mapping.
pub fn create_app(
    state: web::Data<AppState>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new()
        .app_data(state)
        .app_data(routes::json_config())
        .app_data(routes::path_config())
        .wrap(actix_web::middleware::from_fn(middleware::guard))
        .wrap(actix_web::middleware::Compress::default())
        .configure(configure)
}

/// Mount every route.
fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(docs::openapi_json)
        .service(docs::swagger())
        .service(mcp::service())
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
