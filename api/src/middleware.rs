//! One middleware in front of every route: it authenticates the key, checks the scope and the rate limit of the
//! route's class, puts the [`Caller`] in the request, adds the rate-limit headers, and records the request metrics.
//!
//! Which route needs what is one table ([`access`]), so a new route cannot forget authentication by accident: any
//! path under `/api/` or `/mcp` needs a key unless the table says otherwise.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{HttpMessage, ResponseError};
use std::time::Instant;

use crate::AppState;
use crate::auth::{self, Caller, Scope};
use crate::error::ApiError;
use crate::limits::RouteClass;

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key (health, metrics, docs, the OpenAPI document).
    Public,
    /// A key with this scope; counted in this class.
    Key(Option<Scope>, RouteClass),
}

/// The access table.
pub fn access(method: &Method, path: &str) -> Access {
    let public = matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/docs" | "/docs/"
    ) || path.starts_with("/docs/");
    if public {
        return Access::Public;
    }
    if path == "/mcp" || path.starts_with("/mcp/") {
        // Each tool checks its own scope; a submission from a tool also counts in `analyses`.
        return Access::Key(None, RouteClass::Statistics);
    }
    if path == "/api/v1/analyses" && method == Method::POST {
        return Access::Key(Some(Scope::JobsWrite), RouteClass::Analyses);
    }
    if path == "/api/v1/cluster/dead-letters" || path.starts_with("/api/v1/cluster/dead-letters/") {
        // Whole task messages, arguments included; replay, drop and purge change the cluster.
        return Access::Key(Some(Scope::Admin), RouteClass::Statistics);
    }
    if path.starts_with("/api/v1/jobs/") && method == Method::DELETE {
        return Access::Key(Some(Scope::JobsWrite), RouteClass::Statistics);
    }
    if path.starts_with("/api/") {
        return Access::Key(Some(Scope::StatisticsRead), RouteClass::Statistics);
    }
    Access::Public
}

/// Authenticate a presented secret: the cache, else the primary database.
pub async fn authenticate(state: &AppState, secret: &str) -> Result<Caller, ApiError> {
    let hash = auth::hash_secret(secret);
    if let Some(verdict) = state.keys.get(&hash) {
        return verdict;
    }
    let h = hash.clone();
    let row = state
        .db
        .read_primary(&move |c| {
            let h = h.clone();
            Box::pin(async move { store::api_keys::key_by_hash(c, &h).await })
        })
        .await?;
    state.keys.put(&hash, row.as_ref());
    auth::judge(row.as_ref(), chrono::Utc::now())
}

/// The middleware.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req
        .app_data::<Data<AppState>>()
        .cloned()
        .expect("app state");
    let method = req.method().clone();
    let mut headers = None;
    if let Access::Key(scope, class) = access(&method, req.path()) {
        let verdict = async {
            let secret = auth::presented_key(req.headers()).ok_or(ApiError::MissingKey)?;
            let caller = authenticate(&state, &secret).await?;
            if let Some(scope) = scope {
                caller.require(scope)?;
            }
            let h = state
                .limiter
                .check(&caller.key_id, &caller.limits, class)
                .await?;
            Ok::<_, ApiError>((caller, h))
        }
        .await;
        match verdict {
            Ok((caller, h)) => {
                req.extensions_mut().insert(caller);
                headers = h;
            }
            Err(e) => {
                let res = req.into_response(e.error_response());
                record(&state, &res, &method, started);
                return Ok(res);
            }
        }
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    if let Some(h) = headers {
        let hs = res.headers_mut();
        for (name, value) in [("ratelimit-policy", h.policy), ("ratelimit", h.state)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                hs.insert(HeaderName::from_static(name), v);
            }
        }
    }
    record(&state, &res, &method, started);
    Ok(res)
}

fn record(state: &AppState, res: &ServiceResponse<BoxBody>, method: &Method, started: Instant) {
    // The route pattern, not the path: ids must not become label values.
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let status = res.status().as_u16().to_string();
    state
        .metrics
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    state
        .metrics
        .latency
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_table() {
        let get = Method::GET;
        for p in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/docs/",
            "/docs/index.css",
            "/",
            "/ui/app.js",
        ] {
            assert_eq!(access(&get, p), Access::Public, "{p}");
        }
        assert_eq!(
            access(&get, "/api/v1/statistics/sessions"),
            Access::Key(Some(Scope::StatisticsRead), RouteClass::Statistics)
        );
        assert_eq!(
            access(&get, "/api/v1/anything-new"),
            Access::Key(Some(Scope::StatisticsRead), RouteClass::Statistics)
        );
        assert_eq!(
            access(&Method::POST, "/api/v1/analyses"),
            Access::Key(Some(Scope::JobsWrite), RouteClass::Analyses)
        );
        assert_eq!(
            access(&Method::DELETE, "/api/v1/jobs/abc"),
            Access::Key(Some(Scope::JobsWrite), RouteClass::Statistics)
        );
        for p in [
            "/api/v1/cluster/dead-letters",
            "/api/v1/cluster/dead-letters/abc",
            "/api/v1/cluster/dead-letters/replay",
        ] {
            assert_eq!(
                access(&get, p),
                Access::Key(Some(Scope::Admin), RouteClass::Statistics)
            );
        }
        assert_eq!(
            access(&Method::POST, "/mcp"),
            Access::Key(None, RouteClass::Statistics)
        );
    }
}
