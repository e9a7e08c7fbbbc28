//! The one error type of the op-manager library: why the manager could not start or stopped.
//! Request errors are [`crate::api::ApiError`], mapped to HTTP in one place.

use std::path::PathBuf;

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
