//! The one place where agent errors become HTTP statuses and bodies.
//!
//! `/v1` endpoints answer with `ErrorBody` (`{"code","message"}`); the seed's `/api/opAgent`
//! answers with the seed envelope (`{"Code":"ERROR","Message",...}`) so old callers can parse it.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use op_proto::ErrorBody;
use op_proto::api::{SeedEnvelope, code};

use crate::invoke::InvokeError;

/// An API failure, independent of the response format.
#[derive(Debug)]
pub enum ApiError {
    /// No credential, or a wrong one.
    Unauthorized(String),
    /// Too many failed authentications from the caller's address (op_tls::auth_failures).
    AuthBlocked {
        retry_after_secs: u64,
    },
    BadRequest(String),
    NotFound(String),
    Conflict(String),
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &str) {
        match self {
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, m),
            ApiError::AuthBlocked { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                code::TOO_MANY_AUTH_FAILURES,
                "too many failed authentications from this address; try again after Retry-After seconds",
            ),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, code::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, code::NOT_FOUND, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, code::CONFLICT, m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL, m),
        }
    }

    /// The response in the seed envelope format.
    pub fn seed(self) -> Response {
        let (status, _, message) = self.parts();
        let resp = (status, Json(SeedEnvelope::error(message))).into_response();
        self.with_headers(resp)
    }

    /// Headers a refusal carries beside its body: how long to wait after a 429.
    fn with_headers(&self, mut resp: Response) -> Response {
        if let ApiError::AuthBlocked { retry_after_secs } = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let resp = (status, Json(ErrorBody::new(code, message))).into_response();
        self.with_headers(resp)
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        let message = e.to_string();
        match e {
            InvokeError::NotFound(_) => ApiError::NotFound(message),
            InvokeError::Inactive { .. } => ApiError::Conflict(message),
            InvokeError::Params(_) => ApiError::BadRequest(message),
            InvokeError::ShuttingDown => ApiError::Unavailable(message),
        }
    }
}

impl From<crate::AgentError> for ApiError {
    fn from(e: crate::AgentError) -> Self {
        tracing::error!(error = %e, "request failed");
        ApiError::Internal(e.to_string())
    }
}
