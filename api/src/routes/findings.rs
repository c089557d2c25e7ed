//! `GET /api/v1/findings/{kind}` and `/{kind}/{id}`: the stored results of the longtail, snowshoe and botnet analyses.

use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse, get};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::{AnalysisKind, FindingDetail, FindingList};
use crate::params::Query;
use crate::service;

/// Stored findings of one analysis, newest first.
#[utoipa::path(get, path = "/api/v1/findings/{kind}", tag = "findings", operation_id = "list_findings",
    security(("api_key" = []), ("bearer" = [])),
    params(
        ("kind" = inline(AnalysisKind), Path, description = "`longtail`, `snowshoe` or `botnet`"),
        ("sensor" = Option<Vec<String>>, Query, description = "Only findings of these sensors (repeatable)", explode = true),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size (default 20)"),
        ("cursor" = Option<String>, Query, min_length = 1, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of findings", body = FindingList,
            links(("first_finding" = (operation_id = "get_finding",
                parameters(("kind" = "$request.path.kind"), ("id" = "$response.body#/findings/0/id")))))),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 404, description = "Unknown kind or sensor", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
#[get("/findings/{kind}")]
pub async fn list(
    state: Data<AppState>,
    kind: Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    super::cached(&state, &req, || async {
        let q = Query::parse(req.query_string(), service::FINDINGS_PARAMS)?;
        state.list_findings(&kind, &q).await
    })
    .await
}

/// One finding with its whole stored result (and, for longtail, its detection rows).
#[utoipa::path(get, path = "/api/v1/findings/{kind}/{id}", tag = "findings", operation_id = "get_finding",
    security(("api_key" = []), ("bearer" = [])),
    params(
        ("kind" = inline(AnalysisKind), Path, description = "`longtail`, `snowshoe` or `botnet`"),
        ("id" = String, Path, description = "The finding's id"),
    ),
    responses(
        (status = 200, description = "The finding", body = FindingDetail),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 404, description = "No such finding", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
#[get("/findings/{kind}/{id}")]
pub async fn detail(
    state: Data<AppState>,
    path: Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (kind, id) = path.into_inner();
    super::cached(&state, &req, || async {
        Query::parse(req.query_string(), &[])?;
        state.finding(&kind, &id).await
    })
    .await
}
