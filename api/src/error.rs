//! Every error the API answers, with its stable snake_case code and HTTP status in one table ([`ApiError::table`]).
//!
//! The body is always `{"code", "message", "status"}`, plus `parameter` when one request parameter is at fault and
//! `details` when there is more to say. Handlers only use `?`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter is malformed or out of range.
    #[error("parameter `{parameter}`: {message}")]
    InvalidParameter { parameter: String, message: String },
    /// A query parameter this endpoint does not take.
    #[error("unknown parameter `{0}`")]
    UnknownParameter(String),
    /// `start`/`end`/`days` do not make a window.
    #[error("parameter `{parameter}`: {message}")]
    InvalidWindow { parameter: String, message: String },
    /// The request body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    MalformedBody(String),
    /// The body is JSON but not what the endpoint takes (wrong type, unknown field, bad value).
    #[error("{message}")]
    InvalidBody {
        parameter: Option<String>,
        message: String,
    },
    #[error("unknown sensor {0:?} (parameter `sensor`)")]
    UnknownSensor(String),
    #[error("no session {0}")]
    SessionNotFound(String),
    #[error("no {kind} finding {id}")]
    FindingNotFound { kind: String, id: String },
    #[error("no job {0}")]
    JobNotFound(String),
    #[error("no dead letter {0}")]
    DeadLetterNotFound(String),
    #[error("no route {0}")]
    RouteNotFound(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("routing rejected the job: {reason}")]
    RoutingRejected { reason: String, details: Value },
    /// `allowed_tasks` in `worker-config.yaml` does not allow the job's task on its queue.
    #[error("task {task:?} is not allowed on queue {queue:?}: {reason}")]
    TaskNotAllowed {
        task: String,
        queue: String,
        reason: String,
    },
    #[error("this endpoint needs an API key (X-API-Key: <key> or Authorization: Bearer <key>)")]
    MissingKey,
    #[error("the API key is not valid")]
    InvalidKey,
    #[error("the API key was revoked")]
    KeyRevoked,
    #[error("the API key has expired")]
    KeyExpired,
    #[error("the API key lacks the scope `{0}`")]
    MissingScope(&'static str),
    #[error("MCP accepts browser requests only from localhost origins (DNS-rebinding protection)")]
    OriginNotAllowed,
    #[error("rate limit exceeded for {class}: {policy}; retry in {retry_after} s")]
    RateLimited {
        class: &'static str,
        policy: String,
        retry_after: u64,
    },
    #[error("the rate limiter (Redis) is unavailable, so job submission is refused: {0}")]
    RateLimiterUnavailable(String),
    #[error("the database is unavailable: {0}")]
    DatabaseUnavailable(String),
    #[error("the database did not answer in time (statement timeout)")]
    DatabaseTimeout,
    #[error("the broker is unavailable: {0}")]
    BrokerUnavailable(String),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code (see the table in docs/api.md).
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// The request parameter at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ApiError {
    /// The table: code and status of every variant.
    pub fn table(&self) -> (&'static str, StatusCode) {
        use ApiError::*;
        match self {
            InvalidParameter { .. } => ("invalid_parameter", StatusCode::BAD_REQUEST),
            UnknownParameter(_) => ("unknown_parameter", StatusCode::BAD_REQUEST),
            InvalidWindow { .. } => ("invalid_window", StatusCode::BAD_REQUEST),
            MalformedBody(_) => ("malformed_body", StatusCode::BAD_REQUEST),
            InvalidBody { .. } => ("invalid_body", StatusCode::UNPROCESSABLE_ENTITY),
            UnknownSensor(_) => ("unknown_sensor", StatusCode::NOT_FOUND),
            SessionNotFound(_) => ("session_not_found", StatusCode::NOT_FOUND),
            FindingNotFound { .. } => ("finding_not_found", StatusCode::NOT_FOUND),
            JobNotFound(_) => ("job_not_found", StatusCode::NOT_FOUND),
            DeadLetterNotFound(_) => ("dead_letter_not_found", StatusCode::NOT_FOUND),
            RouteNotFound(_) => ("route_not_found", StatusCode::NOT_FOUND),
            MethodNotAllowed(_) => ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED),
            RoutingRejected { .. } => ("routing_rejected", StatusCode::UNPROCESSABLE_ENTITY),
            TaskNotAllowed { .. } => ("task_not_allowed", StatusCode::FORBIDDEN),
            MissingKey => ("missing_api_key", StatusCode::UNAUTHORIZED),
            InvalidKey => ("invalid_api_key", StatusCode::UNAUTHORIZED),
            KeyRevoked => ("api_key_revoked", StatusCode::UNAUTHORIZED),
            KeyExpired => ("api_key_expired", StatusCode::UNAUTHORIZED),
            MissingScope(_) => ("missing_scope", StatusCode::FORBIDDEN),
            OriginNotAllowed => ("origin_not_allowed", StatusCode::FORBIDDEN),
            RateLimited { .. } => ("rate_limited", StatusCode::TOO_MANY_REQUESTS),
            RateLimiterUnavailable(_) => {
                ("rate_limiter_unavailable", StatusCode::SERVICE_UNAVAILABLE)
            }
            DatabaseUnavailable(_) => ("database_unavailable", StatusCode::SERVICE_UNAVAILABLE),
            DatabaseTimeout => ("database_timeout", StatusCode::SERVICE_UNAVAILABLE),
            BrokerUnavailable(_) => ("broker_unavailable", StatusCode::SERVICE_UNAVAILABLE),
            NotReady(_) => ("not_ready", StatusCode::SERVICE_UNAVAILABLE),
            Internal(_) => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    pub fn code(&self) -> &'static str {
        self.table().0
    }

    pub fn parameter(&self) -> Option<&str> {
        match self {
            ApiError::InvalidParameter { parameter, .. }
            | ApiError::InvalidWindow { parameter, .. } => Some(parameter),
            ApiError::UnknownParameter(p) => Some(p),
            ApiError::InvalidBody { parameter, .. } => parameter.as_deref(),
            ApiError::UnknownSensor(_) => Some("sensor"),
            _ => None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (code, status) = self.table();
        ErrorBody {
            code: code.to_string(),
            message: self.to_string(),
            status: status.as_u16(),
            parameter: self.parameter().map(str::to_string),
            details: match self {
                ApiError::RoutingRejected { details, .. } => Some(details.clone()),
                _ => None,
            },
        }
    }

    /// Shorthand for [`ApiError::InvalidParameter`].
    pub fn param(parameter: &str, message: impl Into<String>) -> ApiError {
        ApiError::InvalidParameter {
            parameter: parameter.to_string(),
            message: message.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.table().1
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        if let ApiError::RateLimited { retry_after, .. } = self {
            r.insert_header(("Retry-After", retry_after.to_string()));
        }
        r.json(self.body())
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        let text = e.to_string();
        if text.contains("statement timeout") || text.contains("canceling statement") {
            return ApiError::DatabaseTimeout;
        }
        match e {
            store::StoreError::Unavailable(m) => ApiError::DatabaseUnavailable(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<broker::BrokerError> for ApiError {
    fn from(e: broker::BrokerError) -> Self {
        ApiError::BrokerUnavailable(e.to_string())
    }
}

impl From<jobs::JobError> for ApiError {
    fn from(e: jobs::JobError) -> Self {
        use jobs::JobError as J;
        match e {
            J::InvalidJob(m) => ApiError::InvalidBody {
                parameter: None,
                message: m,
            },
            J::InvalidRequirements(m) => ApiError::InvalidBody {
                parameter: Some("requirements".into()),
                message: m,
            },
            J::NotFound(id) => ApiError::JobNotFound(id),
            J::RoutingRejected { reason, details } => ApiError::RoutingRejected { reason, details },
            J::TaskNotAllowed {
                task,
                queue,
                reason,
            } => ApiError::TaskNotAllowed {
                task,
                queue,
                reason,
            },
            J::BrokerUnavailable(m) => ApiError::BrokerUnavailable(m),
            J::Internal(m) => ApiError::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_snake_case_and_bodies_name_the_parameter() {
        let samples = [
            ApiError::param("limit", "must be 1 to 1000"),
            ApiError::UnknownParameter("foo".into()),
            ApiError::UnknownSensor("x".into()),
            ApiError::KeyRevoked,
            ApiError::MissingScope("jobs:write"),
            ApiError::RateLimited {
                class: "statistics",
                policy: "100/minute".into(),
                retry_after: 3,
            },
        ];
        for e in &samples {
            let code = e.code();
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
        }
        let b = ApiError::param("limit", "must be 1 to 1000").body();
        assert_eq!(b.parameter.as_deref(), Some("limit"));
        assert_eq!(b.status, 400);
        assert!(b.message.contains("`limit`"));
        assert_eq!(ApiError::UnknownSensor("x".into()).body().status, 404);
        let r = ApiError::RateLimited {
            class: "statistics",
            policy: "100/minute".into(),
            retry_after: 3,
        }
        .error_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers().get("retry-after").unwrap(), "3");
    }
}
