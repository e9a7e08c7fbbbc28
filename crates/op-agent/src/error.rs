//! The agent library's one error type.
//!
//! Every fallible operation of the library returns [`AgentError`]. Variants carry the context a
//! person needs to act (the path, the key, the job), and messages are lowercase and say what to do.
//! Mapping to HTTP statuses happens in one place, `api::error`; mapping to exit codes in `main.rs`.

use std::path::PathBuf;

/// Why the agent (or one of its operations) failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A configuration value was refused; the message names the key.
    #[error("config: {0}")]
    Config(String),

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("state database {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("state file {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },

    /// The state dir shows this host was enrolled as a node, but its identity is gone.
    #[error(
        "{db} {problem}, but {evidence} shows this host was enrolled as a node: its node id and \
         once-job ledger are lost, and starting as a new node could run once-jobs again. To enroll \
         it as a new node (the manager retires the old one and keeps its once-job history), run: \
         op-agent reset-identity --state-dir {}",
        state_dir.display()
    )]
    IdentityLost {
        db: PathBuf,
        problem: String,
        evidence: String,
        state_dir: PathBuf,
    },

    #[error("http server: {0}")]
    Server(std::io::Error),

    #[error("background task failed: {0}")]
    Task(String),
}

impl AgentError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        AgentError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
