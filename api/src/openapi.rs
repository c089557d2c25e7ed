//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the models' `ToSchema`.
//! `celeriac-api openapi` prints it; `/openapi.json` serves it.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "celeriac API",
        description = "Statistics over Cowrie honeypot data, stored findings, and analyses run as Celery jobs. \
Every /api/v1 route needs an API key (X-API-Key or Authorization: Bearer). Errors are {code, message, status, parameter?}.",
        license(name = "Apache-2.0")
    ),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
        routes::statistics::sessions,
        routes::statistics::threats,
        routes::statistics::sensors,
        routes::sessions::list,
        routes::sessions::detail,
        routes::findings::list,
        routes::findings::detail,
        routes::jobs::submit,
        routes::jobs::status,
        routes::jobs::events,
        routes::jobs::revoke,
        routes::cluster::workers,
        routes::cluster::queues,
        routes::cluster::stream,
        routes::dead_letters::list,
        routes::dead_letters::show,
        routes::dead_letters::replay,
        routes::dead_letters::drop_ids,
        routes::dead_letters::purge,
        routes::cluster::explain,
        routes::me::me,
    ),
    modifiers(&Security),
    tags(
        (name = "statistics", description = "Totals, timelines, top attackers, per-sensor health"),
        (name = "sessions", description = "Sessions and their events"),
        (name = "findings", description = "Stored results of the longtail, snowshoe and botnet analyses"),
        (name = "analyses", description = "Analyses submitted as Celery jobs, with live progress"),
        (name = "cluster", description = "Live workers (Rust and Python), queue depths, routing decisions"),
        (name = "keys", description = "The calling API key: scopes and limits"),
        (name = "health", description = "Health, readiness, metrics (no key)"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for p in [
            "/api/v1/statistics/sessions",
            "/api/v1/statistics/threats",
            "/api/v1/statistics/sensors",
            "/api/v1/sessions",
            "/api/v1/sessions/{id}",
            "/api/v1/findings/{kind}",
            "/api/v1/findings/{kind}/{id}",
            "/api/v1/analyses",
            "/api/v1/jobs/{id}",
            "/api/v1/jobs/{id}/events",
            "/api/v1/cluster/workers",
            "/api/v1/cluster/queues",
            "/api/v1/cluster/stream",
            "/api/v1/cluster/dead-letters",
            "/api/v1/cluster/dead-letters/{id}",
            "/api/v1/cluster/dead-letters/replay",
            "/api/v1/cluster/dead-letters/drop",
            "/api/v1/cluster/dead-letters/purge",
            "/api/v1/routing/explain",
            "/api/v1/me",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p} missing");
        }
        assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    }
}
