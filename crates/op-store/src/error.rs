//! The one error type of `op-store`: what went wrong while opening, applying, reading or
//! snapshotting the state database. Business refusals of a command (a job that does not exist) are
//! not errors here: they are deterministic [`crate::CommandResult::Rejected`] values, because every
//! replica must reach the same answer.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stored {what} is not valid JSON: {source}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: schema version {found} is newer than this build understands ({known}); upgrade op-manager"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("store lock poisoned: a thread panicked while holding it")]
    Poisoned,
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
