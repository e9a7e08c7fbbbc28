//! The two ways domain code touches the replicated state: [`Writer::write`] (a command through
//! raft, forwarded to the leader when this manager is a follower) and [`read`] (a store query on
//! a blocking thread, on this manager's applied state). Both answer with a [`DomainError`]; the
//! HTTP side maps it in `api/error.rs`.
//!
//! Background workers take a [`Writer`] and the `Arc<Store>` rather than the whole
//! [`crate::app::App`], so each one names what it uses and a test can hand it a real
//! single-member cluster on a temp dir.

use std::sync::Arc;

use op_store::{Command, CommandResult, Store};

use crate::error::DomainError;
use crate::metrics::Metrics;
use crate::raft::{self, Cluster};

/// Proposes commands through this manager's cluster. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
}

impl Writer {
    pub fn new(cluster: Arc<Cluster>, metrics: Arc<Metrics>) -> Writer {
        Writer { cluster, metrics }
    }

    /// Proposes `command` and waits until it is applied here. A deterministic refusal by the
    /// state machine is [`DomainError::Rejected`], the same on every member.
    pub async fn write(&self, command: Command) -> Result<CommandResult, DomainError> {
        let kind = command.kind();
        let result = self.cluster.write(command).await?;
        self.metrics.command_applied(kind);
        match result {
            CommandResult::Rejected { rejection } => Err(DomainError::Rejected(rejection)),
            other => Ok(other),
        }
    }

    /// Whether this manager leads its cluster now: the workers whose decisions must be made
    /// once (liveness, retention, the fan-out driver) act only then.
    pub fn is_leader(&self) -> bool {
        raft::is_leader(&self.cluster.raft)
    }

    /// The raft term this manager leads in, `None` when it does not lead: a worker that keeps
    /// state between looks (the notification queues) starts over when the term changes, since
    /// another leader may have acted in between.
    pub fn leading_term(&self) -> Option<u64> {
        let m = self.cluster.raft.metrics();
        let m = m.borrow();
        (m.current_leader == Some(m.id)).then_some(m.current_term)
    }

    /// Waits until everything committed so far is applied here.
    pub async fn read_barrier(&self) -> Result<(), DomainError> {
        Ok(self.cluster.read_barrier().await?)
    }
}

/// Runs a store query on a blocking thread.
pub async fn read<T, F>(store: &Arc<Store>, f: F) -> Result<T, DomainError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> op_store::Result<T> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| DomainError::QueryTask(e.to_string()))?
        .map_err(DomainError::from)
}
