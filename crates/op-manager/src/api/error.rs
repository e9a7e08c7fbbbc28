//! The one place where errors become HTTP responses: every handler returns [`ApiError`],
//! [`IntoResponse`] maps it to a status and an `op_proto::ErrorBody`, and the `From` impls below
//! map the domain's errors ([`DomainError`], a state-machine [`Rejection`], a [`ClusterError`])
//! to it. Nothing outside `api/` and `ui/` uses [`ApiError`].

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use op_proto::api::{Scope, code};
use op_proto::{API_VERSION, ErrorBody};
use op_store::{Rejection, RejectionCode, StoreError};
use uuid::Uuid;

use crate::error::DomainError;
use crate::raft::ClusterError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid credentials: send Authorization: Bearer TOKEN")]
    Unauthorized,
    #[error("{scope} tokens may not {action}; this needs {needs}")]
    Forbidden {
        scope: &'static str,
        action: &'static str,
        /// The scopes that may, e.g. "an admin token".
        needs: &'static str,
    },
    /// 403 for a reason the scope alone does not tell (another node's data, an enrolled node).
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("node {0} is not registered (or was forgotten): register again")]
    UnknownNode(Uuid),
    #[error("{message}")]
    InvalidJob {
        message: String,
        details: Vec<String>,
    },
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body stopped arriving (nothing for {secs} s)")]
    BodyTimeout { secs: u64 },
    #[error("client speaks API version {client}; this manager speaks API version {API_VERSION}")]
    ApiVersion { client: String },
    #[error("{0}")]
    Conflict(String),
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    #[error("{0}")]
    Unavailable(String),
    /// The leader's disk is (nearly) full: writes are refused until space returns.
    #[error("{0}")]
    DiskFull(String),
    /// The cluster could not say whether a change was made (the leader died while answering).
    #[error("{0}")]
    OutcomeUnknown(String),
    #[error("{0}")]
    NoLeader(String),
    /// The leader is too busy to answer in time (not a leader search).
    #[error("{0}")]
    Overloaded(String),
    #[error("this manager was removed from the cluster; use one of its members: {}", .members.join(", "))]
    Removed { members: Vec<String> },
    #[error("too many downloads in progress; retry after {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("too many failed authentications from this address; retry after {retry_after_secs} s")]
    AuthBlocked { retry_after_secs: u64 },
    #[error("the requested range starts beyond the end of the content ({size} bytes)")]
    RangeNotSatisfiable { size: u64 },
    #[error("internal error: {0}")]
    Internal(String),
    /// 502: a receiver the manager called for the client failed (`notify test`).
    #[error("{message}")]
    BadGateway { code: &'static str, message: String },
}

impl ApiError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(scope: Scope, action: &'static str, needs: &'static str) -> ApiError {
        ApiError::Forbidden {
            scope: scope.as_str(),
            action,
            needs,
        }
    }

    /// The refusal as a watch's last frame (`op_proto::watch`): what a sync call would answer.
    pub fn watch_error(&self) -> op_proto::watch::WatchError {
        let (status, code) = self.status_and_code();
        op_proto::watch::WatchError {
            status: status.as_u16(),
            code: code.to_string(),
            message: self.to_string(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, code::UNAUTHORIZED),
            ApiError::Forbidden { .. } | ApiError::Denied(_) => {
                (StatusCode::FORBIDDEN, code::FORBIDDEN)
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, code::NOT_FOUND),
            ApiError::UnknownNode(_) => (StatusCode::NOT_FOUND, "unknown_node"),
            ApiError::InvalidJob { .. } => (StatusCode::BAD_REQUEST, "invalid_job"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, code::PAYLOAD_TOO_LARGE)
            }
            ApiError::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, code::BODY_TIMEOUT),
            ApiError::ApiVersion { .. } => (StatusCode::BAD_REQUEST, "api_version_mismatch"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, code::CONFLICT),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, code::METHOD_NOT_ALLOWED)
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE),
            ApiError::DiskFull(_) => (StatusCode::SERVICE_UNAVAILABLE, "disk_full"),
            ApiError::OutcomeUnknown(_) => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
            ApiError::NoLeader(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
            ApiError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::Removed { .. } => (StatusCode::SERVICE_UNAVAILABLE, "removed"),
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, code::TOO_MANY_REQUESTS)
            }
            ApiError::AuthBlocked { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, code::TOO_MANY_AUTH_FAILURES)
            }
            ApiError::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL),
            ApiError::BadGateway { code, .. } => (StatusCode::BAD_GATEWAY, code),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(code, error = %self, "request failed");
        }
        let mut body = ErrorBody::new(code, self.to_string());
        let extra = match &self {
            ApiError::TooManyRequests { retry_after_secs }
            | ApiError::AuthBlocked { retry_after_secs } => {
                Some((header::RETRY_AFTER, retry_after_secs.to_string()))
            }
            ApiError::RangeNotSatisfiable { size } => {
                Some((header::CONTENT_RANGE, format!("bytes */{size}")))
            }
            _ => None,
        };
        if let ApiError::InvalidJob { details, .. } = self {
            body.details = details;
        }
        let mut resp = (status, Json(body)).into_response();
        if let Some((name, value)) = extra
            && let Ok(v) = HeaderValue::from_str(&value)
        {
            resp.headers_mut().insert(name, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer, Basic realm=\"op-manager\""),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        ApiError::from(&e)
    }
}

impl From<&ClusterError> for ApiError {
    fn from(e: &ClusterError) -> Self {
        match e {
            ClusterError::NoLeader { .. } | ClusterError::NotLeader => {
                ApiError::NoLeader(e.to_string())
            }
            ClusterError::OutcomeUnknown(_) => ApiError::OutcomeUnknown(e.to_string()),
            ClusterError::Overloaded { .. } => ApiError::Overloaded(e.to_string()),
            ClusterError::Refused { code, message } => {
                let message = message.clone();
                match code.as_str() {
                    "not_found" => ApiError::NotFound(message),
                    "conflict" | "wrong_cluster" => ApiError::Conflict(message),
                    "invalid" => ApiError::bad("invalid", message),
                    "disk_full" => ApiError::DiskFull(message),
                    "overloaded" => ApiError::Overloaded(message),
                    _ => ApiError::Unavailable(message),
                }
            }
            ClusterError::Raft(m) => ApiError::Unavailable(format!("raft: {m}")),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Rejected(r) => r.into(),
            DomainError::Cluster(c) => ApiError::from(&*c),
            DomainError::Store(_)
            | DomainError::QueryTask(_)
            | DomainError::UnexpectedAnswer { .. } => ApiError::Internal(e.to_string()),
            DomainError::Denied(m) => ApiError::Denied(m),
            DomainError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r.code {
            RejectionCode::NotFound => ApiError::NotFound(r.message),
            RejectionCode::Conflict => ApiError::Conflict(r.message),
            RejectionCode::Forbidden => ApiError::Denied(r.message),
            // A code from a newer member is still a refusal of the request as sent.
            RejectionCode::Invalid | RejectionCode::Unknown(_) => {
                ApiError::bad("invalid", r.message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(code: RejectionCode) -> DomainError {
        DomainError::Rejected(Rejection {
            code,
            message: "refused".into(),
        })
    }

    async fn answer(e: DomainError) -> (u16, String, String) {
        let resp = ApiError::from(e).into_response();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        (status, body.code, body.message)
    }

    /// Every kind of domain error gets the status, code and message the HTTP API has always
    /// answered with; a rejection code from a newer member is a 400 like `invalid`.
    #[tokio::test]
    async fn domain_errors_map_to_their_http_answers() {
        let store = StoreError::Poisoned;
        let store_message = format!("internal error: {store}");
        let cases = [
            (
                rejected(RejectionCode::NotFound),
                404,
                "not_found",
                "refused".to_string(),
            ),
            (
                rejected(RejectionCode::Conflict),
                409,
                "conflict",
                "refused".into(),
            ),
            (
                rejected(RejectionCode::Forbidden),
                403,
                "forbidden",
                "refused".into(),
            ),
            (
                rejected(RejectionCode::Invalid),
                400,
                "invalid",
                "refused".into(),
            ),
            (
                rejected(RejectionCode::Unknown("quota_exceeded".into())),
                400,
                "invalid",
                "refused".into(),
            ),
            (
                ClusterError::NoLeader { secs: 5 }.into(),
                503,
                "no_leader",
                ClusterError::NoLeader { secs: 5 }.to_string(),
            ),
            (
                ClusterError::Overloaded {
                    what: "the leadership check was not answered",
                    secs: 10,
                }
                .into(),
                503,
                "overloaded",
                "manager overloaded: the leadership check was not answered within 10 s; retry"
                    .into(),
            ),
            (
                ClusterError::refused("overloaded", "manager overloaded: busy").into(),
                503,
                "overloaded",
                "manager overloaded: busy".into(),
            ),
            (
                ClusterError::OutcomeUnknown("reset".into()).into(),
                503,
                "outcome_unknown",
                ClusterError::OutcomeUnknown("reset".into()).to_string(),
            ),
            (
                ClusterError::refused("disk_full", "the disk is full").into(),
                503,
                "disk_full",
                "the disk is full".into(),
            ),
            (
                ClusterError::refused("wrong_cluster", "another cluster").into(),
                409,
                "conflict",
                "another cluster".into(),
            ),
            (store.into(), 500, "internal", store_message),
            (
                DomainError::QueryTask("panicked".into()),
                500,
                "internal",
                "internal error: query task failed: panicked".into(),
            ),
            (
                DomainError::UnexpectedAnswer {
                    command: "IngestRunBatches",
                },
                500,
                "internal",
                "internal error: unexpected answer to IngestRunBatches".into(),
            ),
            (
                DomainError::Denied("not yours".into()),
                403,
                "forbidden",
                "not yours".into(),
            ),
            (
                DomainError::Unavailable("shutting down".into()),
                503,
                "unavailable",
                "shutting down".into(),
            ),
        ];
        for (error, status, code, message) in cases {
            let what = format!("{error:?}");
            assert_eq!(
                answer(error).await,
                (status, code.to_string(), message),
                "{what}"
            );
        }
    }
}
