//! The API's error shape: `{"error": {"code", "message", "field"}}`. 4xx bodies say what to fix;
//! 5xx bodies are opaque and the cause is logged once, here.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_shared::model::FieldError;
use serde_json::json;

/// Every error an endpoint can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a field is wrong.
    #[error("{0}")]
    Invalid(FieldError),
    /// 400: the body is not JSON.
    #[error("{0}")]
    BadJson(String),
    /// 401.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// 403.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 413.
    #[error("request body is too large (limits: HERALD_MAX_EVENT_BYTES per event, HERALD_MAX_BULK_BYTES per bulk request)")]
    TooLarge,
    /// 429.
    #[error("too many events for this key (HERALD_INTAKE_RATE_LIMIT_PER_S); retry after Retry-After seconds")]
    RateLimited {
        /// Seconds until a retry may succeed.
        retry_after_secs: u64,
    },
    /// 503: the broker could not take the message.
    #[error("the message broker is unavailable; nothing was accepted, retry later")]
    BrokerUnavailable(#[source] herald_shared::amqp::BrokerError),
    /// 503: Redis is unreachable (keys, configuration and history live there), or the archive
    /// is, for a read of archived history.
    #[error("the store (Redis, or the archive for older history) is unavailable; nothing was changed, retry later")]
    StoreUnavailable(#[source] herald_shared::store::StoreError),
    /// 500.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Invalid(e)
    }
}

impl From<herald_shared::store::StoreError> for ApiError {
    fn from(e: herald_shared::store::StoreError) -> Self {
        match &e {
            herald_shared::store::StoreError::Redis(r) if crate::keys::is_unreachable(r) => {
                ApiError::StoreUnavailable(e)
            }
            // The archive (PostgreSQL) down or slow: only reads of archived history fail.
            herald_shared::store::StoreError::Archive(_) => ApiError::StoreUnavailable(e),
            _ => ApiError::Internal(anyhow::Error::new(e).context("redis")),
        }
    }
}

impl From<herald_shared::store::sessions::SessionError> for ApiError {
    fn from(e: herald_shared::store::sessions::SessionError) -> Self {
        use herald_shared::store::sessions::SessionError;
        match e {
            SessionError::Store(e) => e.into(),
            e @ SessionError::Serialise { .. } => {
                ApiError::Internal(anyhow::Error::new(e).context("portal session"))
            }
        }
    }
}

impl From<herald_shared::amqp::BrokerError> for ApiError {
    fn from(e: herald_shared::amqp::BrokerError) -> Self {
        ApiError::BrokerUnavailable(e)
    }
}

impl From<herald_shared::amqp::PublishError> for ApiError {
    fn from(e: herald_shared::amqp::PublishError) -> Self {
        match e {
            herald_shared::amqp::PublishError::Broker(e) => ApiError::BrokerUnavailable(e),
            // A message that does not serialise is a bug: a 500, logged with its cause.
            other => ApiError::Internal(other.into()),
        }
    }
}

impl ApiError {
    /// A 400 about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid(FieldError::new(field, message))
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_field"),
            ApiError::BadJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::BrokerUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable")
            }
            ApiError::StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The error object without the envelope (bulk results embed it).
    pub fn body(&self) -> serde_json::Value {
        let (_, code) = self.parts();
        let field = match self {
            ApiError::Invalid(e) => Some(e.field.clone()),
            ApiError::BadJson(_) | ApiError::TooLarge => Some("body".to_string()),
            _ => None,
        };
        json!({"code": code, "message": self.to_string(), "field": field})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.parts();
        match &self {
            ApiError::Internal(e) => tracing::error!(error = format!("{e:#}"), "request failed"),
            ApiError::BrokerUnavailable(e) => {
                tracing::warn!(error = %e, "refusing intake: broker unavailable")
            }
            ApiError::StoreUnavailable(e) => {
                tracing::warn!(error = %e, "refusing a request: Redis unavailable")
            }
            _ => {}
        }
        let mut response = (status, Json(json!({"error": self.body()}))).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(1).to_string()) {
                response.headers_mut().insert("retry-after", v);
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("5"));
        }
        response
    }
}
