//! Every API error, with its stable snake_case code and HTTP status in one table ([`ApiError::table`]).
//! Handlers only use `?`; the body is always `{"code", "message", "status"}` plus `details` when there are any.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};

use ::jobs::{JobError, JobStoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid job: {0}")]
    InvalidJob(String),
    #[error("invalid requirements: {0}")]
    InvalidRequirements(String),
    #[error("no job {0}")]
    JobNotFound(String),
    #[error("no registration token {0}")]
    TokenNotFound(String),
    #[error("routing rejected the job: {reason}")]
    RoutingRejected { reason: String, details: Value },
    #[error("this endpoint needs the admin key (Authorization: Bearer <key> or X-Admin-Key)")]
    MissingAdminKey,
    #[error("the admin key is wrong")]
    InvalidAdminKey,
    #[error("admin endpoints are disabled: no admin key is configured (CELERIAC_ADMIN_KEY)")]
    AdminDisabled,
    #[error(
        "submitting or revoking a job needs the job key or the admin key (Authorization: Bearer <key> or X-Job-Key)"
    )]
    MissingJobKey,
    #[error("the job key is wrong")]
    InvalidJobKey,
    #[error(
        "job submission is disabled: no job key or admin key is configured (CELERIAC_JOB_KEY or CELERIAC_ADMIN_KEY)"
    )]
    JobsDisabled,
    #[error("task {task:?} is not allowed on queue {queue:?}: {reason}")]
    TaskNotAllowed {
        task: String,
        queue: String,
        reason: String,
    },
    #[error("registration needs a token (Authorization: Bearer <token> or `token` in the body)")]
    MissingToken,
    #[error("the registration token is not valid")]
    InvalidToken,
    #[error("the registration token was revoked")]
    TokenRevoked,
    #[error("the registration token has expired")]
    TokenExpired,
    #[error("the broker is unavailable: {0}")]
    BrokerUnavailable(String),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("the new config was refused; the previous one stays in force: {0}")]
    ConfigRefused(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The table: code and status of every variant.
    pub fn table(&self) -> (&'static str, StatusCode) {
        use ApiError::*;
        match self {
            BadRequest(_) => ("bad_request", StatusCode::BAD_REQUEST),
            InvalidJob(_) => ("invalid_job", StatusCode::BAD_REQUEST),
            InvalidRequirements(_) => ("invalid_requirements", StatusCode::BAD_REQUEST),
            JobNotFound(_) => ("job_not_found", StatusCode::NOT_FOUND),
            TokenNotFound(_) => ("token_not_found", StatusCode::NOT_FOUND),
            RoutingRejected { .. } => ("routing_rejected", StatusCode::UNPROCESSABLE_ENTITY),
            MissingAdminKey => ("missing_admin_key", StatusCode::UNAUTHORIZED),
            InvalidAdminKey => ("invalid_admin_key", StatusCode::FORBIDDEN),
            AdminDisabled => ("admin_disabled", StatusCode::FORBIDDEN),
            MissingJobKey => ("missing_job_key", StatusCode::UNAUTHORIZED),
            InvalidJobKey => ("invalid_job_key", StatusCode::FORBIDDEN),
            JobsDisabled => ("jobs_disabled", StatusCode::FORBIDDEN),
            TaskNotAllowed { .. } => ("task_not_allowed", StatusCode::FORBIDDEN),
            MissingToken => ("missing_registration_token", StatusCode::UNAUTHORIZED),
            InvalidToken => ("invalid_registration_token", StatusCode::UNAUTHORIZED),
            TokenRevoked => ("registration_token_revoked", StatusCode::UNAUTHORIZED),
            TokenExpired => ("registration_token_expired", StatusCode::UNAUTHORIZED),
            BrokerUnavailable(_) => ("broker_unavailable", StatusCode::SERVICE_UNAVAILABLE),
            NotReady(_) => ("not_ready", StatusCode::SERVICE_UNAVAILABLE),
            ConfigRefused(_) => ("config_invalid", StatusCode::UNPROCESSABLE_ENTITY),
            Internal(_) => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    pub fn code(&self) -> &'static str {
        self.table().0
    }

    pub fn body(&self) -> Value {
        let (code, status) = self.table();
        let mut b = json!({"code": code, "message": self.to_string(), "status": status.as_u16()});
        if let ApiError::RoutingRejected { details, .. } = self {
            b["details"] = details.clone();
        }
        b
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.table().1
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(self.body())
    }
}

impl From<broker::BrokerError> for ApiError {
    fn from(e: broker::BrokerError) -> Self {
        ApiError::BrokerUnavailable(e.to_string())
    }
}

impl From<transport::TransportError> for ApiError {
    fn from(e: transport::TransportError) -> Self {
        ApiError::BrokerUnavailable(e.to_string())
    }
}

impl From<JobStoreError> for ApiError {
    fn from(e: JobStoreError) -> Self {
        match e {
            JobStoreError::Broker(b) => ApiError::BrokerUnavailable(b.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::InvalidJob(m) => ApiError::InvalidJob(m),
            JobError::InvalidRequirements(m) => ApiError::InvalidRequirements(m),
            JobError::NotFound(id) => ApiError::JobNotFound(id),
            JobError::RoutingRejected { reason, details } => {
                ApiError::RoutingRejected { reason, details }
            }
            JobError::TaskNotAllowed {
                task,
                queue,
                reason,
            } => ApiError::TaskNotAllowed {
                task,
                queue,
                reason,
            },
            JobError::BrokerUnavailable(m) => ApiError::BrokerUnavailable(m),
            JobError::Internal(m) => ApiError::Internal(m),
        }
    }
}
