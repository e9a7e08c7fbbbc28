//! The manager's own errors, free of HTTP: [`ManagerError`] (why the manager could not start or
//! stopped), [`ClusterError`] (why a raft operation did not happen) and [`DomainError`] (why a
//! write, a read or a background step failed). Request
//! handlers answer with [`crate::api::ApiError`]; `api/error.rs` is the one place that maps a
//! [`DomainError`] to an HTTP status, error code and message.

use std::path::PathBuf;
use std::sync::Arc;

use op_store::{Rejection, StoreError};

/// Why a domain operation failed: what the workers (liveness, fan-out, ingest, replication) and
/// [`crate::app::App::write`]/[`crate::app::App::read`] return. Cheap to clone, so one failed
/// group-commit write can answer every batch it carried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DomainError {
    /// The state machine refused the command: deterministic, the same answer on every member.
    #[error("{}", .0.message)]
    Rejected(Rejection),
    /// The command did not get through raft (no leader, outcome unknown, ...).
    #[error(transparent)]
    Cluster(#[from] Arc<ClusterError>),
    /// A query of the applied state failed.
    #[error(transparent)]
    Store(#[from] Arc<StoreError>),
    /// The blocking thread of a query did not return (it panicked or was cancelled).
    #[error("query task failed: {0}")]
    QueryTask(String),
    /// The state machine answered a command with a result of another kind.
    #[error("unexpected answer to {command}")]
    UnexpectedAnswer { command: &'static str },
    /// The caller may not act for this subject (e.g. an agent credential for another node).
    #[error("{0}")]
    Denied(String),
    /// The manager cannot do it now; retrying later (or elsewhere) can succeed.
    #[error("{0}")]
    Unavailable(String),
}

impl From<ClusterError> for DomainError {
    fn from(e: ClusterError) -> Self {
        DomainError::Cluster(Arc::new(e))
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        DomainError::Store(Arc::new(e))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state store: {0}")]
    Store(#[from] op_store::StoreError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("{what}: {source}")]
    Listen {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    #[error("joining the cluster: {0}")]
    Join(String),
    #[error("recover: {0}")]
    Recover(String),
}

/// Why a cluster operation did not happen (or might not have).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "no raft leader within {secs} s: a majority of the managers may be down or unreachable"
    )]
    NoLeader { secs: u64 },
    #[error(
        "the change reached the leader but no answer came back ({0}); it may or may not have been made"
    )]
    OutcomeUnknown(String),
    #[error("{message}")]
    Refused { code: String, message: String },
    #[error("raft: {0}")]
    Raft(String),
    /// This node is not the leader (any more); [`crate::raft::Cluster`] retries on the leader.
    #[error("this manager is not the raft leader")]
    NotLeader,
    /// This node leads, but its raft core did not answer in time (starved of CPU, or a slow
    /// disk under the log): not a leader search, and not worth one.
    #[error("manager overloaded: {what} within {secs} s; retry")]
    Overloaded { what: &'static str, secs: u64 },
}

impl ClusterError {
    pub fn refused(code: &str, message: impl Into<String>) -> ClusterError {
        ClusterError::Refused {
            code: code.to_string(),
            message: message.into(),
        }
    }
}
