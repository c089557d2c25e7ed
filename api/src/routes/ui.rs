//! The operators' dashboard (issue 11): one page at `/` and its assets at `/ui/*`, all embedded in the
//! binary with `include_str!` (no CDN, no build step at run time). uPlot is vendored from the npm registry by
//! `api/ui/vendor.mjs` into `api/ui/vendor/` (pinned by `api/ui/package-lock.json`; `api/tests/dashboard.rs`
//! checks the vendored files equal what `npm ci` installs). The page calls the REST API with the key the person
//! typed, kept in the browser's `sessionStorage`; these routes themselves need no key (the access table treats
//! every path outside `/api/` and `/mcp` as public).

use actix_web::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use actix_web::{HttpResponse, get, web};

use crate::error::ApiError;

/// Every embedded asset: name under `/ui/`, content type, bytes.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/vendor/uPlot.min.css"),
    ),
];

const INDEX: &str = include_str!("../../ui/index.html");

/// Scripts and styles only from this origin; API calls only to it.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The dashboard page.
#[get("/")]
pub async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header((CONTENT_SECURITY_POLICY, CSP))
        .body(INDEX)
}

/// An asset of the page.
#[get("/ui/{name:.*}")]
pub async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    let (_, ct, body) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ApiError::RouteNotFound(format!("GET /ui/{name}")))?;
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, *ct))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(*body))
}
