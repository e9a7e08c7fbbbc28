//! How the raft listener refuses a request: a status and an `op_proto::ErrorBody` with a peer
//! error code (`messages::code`). Shared by the raft routes (`server.rs`) and the blob transfer
//! routes (`blobs::replicate`), which are served on the same listener.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use op_proto::ErrorBody;

use super::messages::code;
use crate::error::ClusterError;

/// A refusal on the raft listener: a status and an `ErrorBody`.
#[derive(Debug)]
pub struct PeerRefusal {
    status: StatusCode,
    body: ErrorBody,
}

impl PeerRefusal {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> PeerRefusal {
        PeerRefusal {
            status,
            body: ErrorBody::new(code, message),
        }
    }
}

impl IntoResponse for PeerRefusal {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<ClusterError> for PeerRefusal {
    fn from(e: ClusterError) -> Self {
        let status = match &e {
            ClusterError::NotLeader
            | ClusterError::NoLeader { .. }
            | ClusterError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ClusterError::Refused { code, .. } if code == "not_found" => StatusCode::NOT_FOUND,
            ClusterError::Refused { code, .. } if code == "conflict" => StatusCode::CONFLICT,
            ClusterError::Refused { code, .. } if code == "invalid" => StatusCode::BAD_REQUEST,
            ClusterError::Refused { code: c, .. } if c == code::DISK_FULL => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        PeerRefusal::new(status, e.code(), e.to_string())
    }
}
