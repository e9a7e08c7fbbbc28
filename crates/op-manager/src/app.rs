//! The shared state of a running manager, handed to every handler and background task, and the
//! two ways they touch the state: [`App::write`] (a command through raft, forwarded to the leader
//! when this manager is a follower) and [`App::read`] (a store query on a blocking thread, on
//! this manager's applied state).

use std::sync::Arc;

use op_proto::agent::AgentSettings;
use op_store::{Command, CommandResult, Store};
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::blobs::BlobStore;
use crate::config::Config;
use crate::downloads::DownloadGate;
use crate::error::DomainError;
use crate::heartbeat::HeartbeatBuffer;
use crate::hub::Hub;
use crate::ingest::RunIngest;
use crate::metrics::Metrics;
use crate::raft::{Cluster, Raft};

pub struct App {
    pub config: Config,
    pub store: Arc<Store>,
    pub raft: Raft,
    /// This manager's place in its cluster: identity, peers, forwarding, membership.
    pub cluster: Arc<Cluster>,
    pub hub: Arc<Hub>,
    pub beats: HeartbeatBuffer,
    /// Where run batches go to be written (group commit).
    pub ingest: RunIngest,
    pub auth: Authenticator,
    pub metrics: Metrics,
    /// Package content on this manager's disk.
    pub blobs: Arc<BlobStore>,
    /// The cap on concurrent package downloads.
    pub downloads: DownloadGate,
    pub shutdown: CancellationToken,
    /// This manager's advertised API and raft URLs.
    pub api_url: String,
    pub raft_url: String,
    /// Readers of run output waiting for an agent's answer (`api::output`).
    pub outputs: crate::api::output::OutputWaiters,
}

impl App {
    /// Proposes `command` through raft and waits until it is applied here. A deterministic
    /// refusal by the state machine is [`DomainError::Rejected`].
    pub async fn write(&self, command: Command) -> Result<CommandResult, DomainError> {
        let kind = command.kind();
        let result = self.cluster.write(command).await?;
        self.metrics.command_applied(kind);
        match result {
            CommandResult::Rejected { rejection } => Err(DomainError::Rejected(rejection)),
            other => Ok(other),
        }
    }

    /// Runs a store query on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DomainError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> op_store::Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| DomainError::QueryTask(e.to_string()))?
            .map_err(DomainError::from)
    }

    /// The API URLs of every manager in the cluster. Our own entry is our current address (it can
    /// differ from the one recorded in the membership when the port was picked at start); a
    /// removed manager leaves itself out, so its agents move to the members.
    pub fn managers(&self) -> Vec<String> {
        let removed = self.cluster.removed();
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let mut out: Vec<String> = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| !(removed && **id == m.id))
            .map(|(id, node)| {
                if *id == m.id {
                    self.api_url.clone()
                } else {
                    node.api_addr.clone()
                }
            })
            .collect();
        if out.is_empty() && !removed {
            out.push(self.api_url.clone());
        }
        out
    }

    pub fn agent_settings(&self) -> AgentSettings {
        AgentSettings {
            sync_wait_secs: self.config.sync_wait.as_secs().max(1),
            run_batch_max: self.config.run_batch_max,
        }
    }
}
