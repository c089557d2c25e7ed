//! `GET /api/v1/sessions` (newest first, keyset cursor) and `GET /api/v1/sessions/{id}` (summary and events in order).

use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse, get};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::model::{SessionDetail, SessionList};
use crate::params::Query;
use crate::service::{self, scoped_query};

/// Sessions that started in the window, newest first.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", operation_id = "list_sessions",
    security(("api_key" = []), ("bearer" = [])),
    params(
        ("sensor" = Option<Vec<String>>, Query, description = "A sensor to include (repeatable)", explode = true),
        ("start" = Option<String>, Query, format = DateTime, description = "Window start, RFC 3339"),
        ("end" = Option<String>, Query, format = DateTime, description = "Window end, RFC 3339, exclusive"),
        ("days" = Option<i64>, Query, minimum = 1, maximum = 3660, description = "Window length in days (not with `start`)"),
        ("src_ip" = Option<String>, Query, min_length = 1, max_length = 64, description = "Only this source IP"),
        ("username" = Option<String>, Query, min_length = 1, max_length = 256, description = "Only sessions whose (successful, else last) username is this"),
        ("has_commands" = Option<bool>, Query, description = "Only sessions with (true) or without (false) commands"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, min_length = 1, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of sessions", body = SessionList,
            links(("first_session" = (operation_id = "get_session",
                parameters(("id" = "$response.body#/sessions/0/session_id")))))),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 404, description = "Unknown sensor", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
#[get("/sessions")]
pub async fn list(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    super::cached(&state, &req, || async {
        let q = scoped_query(req.query_string(), service::SESSION_LIST_PARAMS)?;
        state.search_sessions(&q).await
    })
    .await
}

/// One session: its summary and its events in log order.
#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "sessions", operation_id = "get_session",
    security(("api_key" = []), ("bearer" = [])),
    params(
        ("id" = String, Path, description = "Cowrie session id"),
        ("events_limit" = Option<i64>, Query, minimum = 1, maximum = 100000, description = "At most this many events (default 10000)"),
    ),
    responses(
        (status = 200, description = "The session", body = SessionDetail),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
#[get("/sessions/{id}")]
pub async fn detail(
    state: Data<AppState>,
    id: Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    super::cached(&state, &req, || async {
        let q = Query::parse(req.query_string(), service::SESSION_PARAMS)?;
        state.session_detail(&id, &q).await
    })
    .await
}
