//! `GET /api/v1/me`: the calling key itself (id, name, scopes, expiry, rate limits), so a client such as the
//! dashboard can tell what it may do before it tries (the analyses form is disabled without `jobs:write`).

use actix_web::web::ReqData;
use actix_web::{HttpRequest, HttpResponse, get};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Caller, Scope};
use crate::error::{ApiError, ErrorBody};
use crate::params::Query;

/// The calling key's own rate limits, when it carries any (else the server's defaults apply).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeLimits {
    /// For example `1000/minute`; null when the server's default applies.
    pub statistics: Option<String>,
    pub analyses: Option<String>,
}

/// `GET /api/v1/me`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Me {
    pub key_id: String,
    pub name: String,
    /// `statistics:read`, `jobs:write`, `admin`.
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub limits: MeLimits,
    /// True when the key may submit and revoke analyses (`jobs:write` or `admin`).
    pub can_submit_analyses: bool,
}

impl Me {
    pub fn of(caller: &Caller) -> Me {
        Me {
            key_id: caller.key_id.clone(),
            name: caller.name.clone(),
            scopes: caller
                .scopes
                .iter()
                .map(|s| s.as_str().to_string())
                .collect(),
            expires_at: caller.expires_at,
            limits: MeLimits {
                statistics: caller.limits.statistics.as_ref().map(|p| p.text()),
                analyses: caller.limits.analyses.as_ref().map(|p| p.text()),
            },
            can_submit_analyses: caller.has(Scope::JobsWrite),
        }
    }
}

/// The calling key: its id, name, scopes, expiry and own rate limits.
#[utoipa::path(get, path = "/api/v1/me", tag = "keys", operation_id = "me",
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The calling key", body = Me),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
#[get("/me")]
pub async fn me(caller: ReqData<Caller>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Query::parse(req.query_string(), &[])?;
    Ok(HttpResponse::Ok().json(Me::of(&caller)))
}
