//! The shared state of a running manager, handed to every HTTP handler (the API, the console and
//! the raft listener), with the handlers' shorthands for [`crate::state`]'s two ways to touch the
//! state: [`App::write`] and [`App::read`]. Background workers do not take it: each takes the
//! handles it uses (see `lib.rs`'s `start`).

use std::sync::Arc;

use op_proto::agent::AgentSettings;
use op_store::{Command, CommandResult, Store};
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::blobs::BlobStore;
use crate::blobs::replicate::Replicas;
use crate::config::Config;
use crate::downloads::DownloadGate;
use crate::error::DomainError;
use crate::heartbeat::HeartbeatBuffer;
use crate::hub::Hub;
use crate::ingest::RunIngest;
use crate::metrics::Metrics;
use crate::raft::{Cluster, Raft};
use crate::state::{self, Writer};

pub struct App {
    pub config: Config,
    pub store: Arc<Store>,
    pub raft: Raft,
    /// This manager's place in its cluster: identity, peers, forwarding, membership.
    pub cluster: Arc<Cluster>,
    pub hub: Arc<Hub>,
    pub beats: Arc<HeartbeatBuffer>,
    /// Directive acknowledgements from the agents syncing here, on their way to the store.
    pub acks: Arc<crate::acks::AckBuffer>,
    /// Where run batches go to be written (group commit).
    pub ingest: RunIngest,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    /// Proposes commands through `cluster`, counting them in `metrics`.
    pub writer: Writer,
    /// Package content on this manager's disk.
    pub blobs: Arc<BlobStore>,
    /// The cap on concurrent package downloads.
    pub downloads: DownloadGate,
    pub shutdown: CancellationToken,
    /// This manager's advertised API and raft URLs.
    pub api_url: String,
    pub raft_url: String,
    /// Output requests for the nodes syncing here and readers waiting for an answer (`output`).
    pub outputs: Arc<crate::output::OutputRequests>,
    /// This member's secrets key(s) (`crate::secrets`).
    pub secrets: Arc<crate::secrets::Keeper>,
    /// The cap on API connections open at once (`max_connections`).
    pub conn_cap: Arc<op_tls::guard::ConnCap>,
    /// Where the agents syncing here serve package chunks to peers (`crate::peers`).
    pub peer_dir: Arc<crate::peers::PeerDirectory>,
    /// The public half of the chunk ticket key, kept for the secrets key it came from.
    pub ticket_public: crate::peers::TicketPublicKey,
}

impl App {
    /// Proposes `command` through raft and waits until it is applied here. A deterministic
    /// refusal by the state machine is [`DomainError::Rejected`].
    pub async fn write(&self, command: Command) -> Result<CommandResult, DomainError> {
        self.writer.write(command).await
    }

    /// Runs a store query on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DomainError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> op_store::Result<T> + Send + 'static,
    {
        state::read(&self.store, f).await
    }

    /// What blob replication needs, for the upload and download handlers.
    pub fn replicas(&self) -> Replicas {
        Replicas {
            blobs: self.blobs.clone(),
            cluster: self.cluster.clone(),
            metrics: self.metrics.clone(),
            max_bytes: self.config.upload_max_bytes,
            stall_timeout: self.config.header_read_timeout,
        }
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
            ticket_public_key: self
                .config
                .peer_distribution
                .then(|| self.secrets.current().ok())
                .flatten()
                .map(|k| self.ticket_public.of(&k)),
        }
    }
}
