//! Everything openraft: the type configuration, the log store (`raft.db`), the state machine
//! (delegating to `op-store`), the HTTP network, and starting a node.
//!
//! The manager always runs raft; a single manager is a one-member cluster initialized on first
//! start (and only then: `initialize` is called only when the log is empty). The cluster issue
//! adds members with `add_learner`/`change_membership` and forwards follower writes to the leader;
//! [`write`] is the one place that will need the forwarding.

pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use op_store::{Command, CommandResult, Store};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config, SnapshotPolicy};

pub use types::{Member, NodeId, Raft};

use crate::error::ManagerError;
use crate::hub::Hub;

/// Raft timing and log-compaction settings.
#[derive(Debug, Clone, Copy)]
pub struct RaftSettings {
    /// Build a snapshot (and purge the log) after this many entries.
    pub snapshot_logs: u64,
}

/// Opens the log and state machine in `data_dir` and starts the raft node; initializes a
/// one-member cluster when the log is empty.
pub async fn start(
    node_id: NodeId,
    member: Member,
    data_dir: &Path,
    store: Arc<Store>,
    hub: Arc<Hub>,
    settings: RaftSettings,
) -> Result<Raft, ManagerError> {
    let config = Config {
        cluster_name: "op-agent".into(),
        // JSON over HTTP between hosts: slower than openraft's in-process defaults assume.
        heartbeat_interval: 250,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        // Run batches are large entries: keep replication messages and the kept log small.
        max_payload_entries: 64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_logs),
        max_in_snapshot_log_to_keep: 100,
        install_snapshot_timeout: 10_000,
        ..Config::default()
    }
    .validate()
    .map_err(|e| ManagerError::Raft(e.to_string()))?;
    let log_path = data_dir.join("raft.db");
    let log_store = log_store::LogStore::open(&log_path).map_err(|e| ManagerError::Sqlite {
        path: log_path.clone(),
        source: e,
    })?;
    let sm =
        state_machine::StateMachine::new(store, hub, data_dir.join("snapshots")).map_err(|e| {
            ManagerError::Io {
                path: data_dir.join("snapshots"),
                source: e,
            }
        })?;
    let raft = Raft::new(
        node_id,
        Arc::new(config),
        network::Network::new(),
        log_store,
        sm,
    )
    .await
    .map_err(|e| ManagerError::Raft(e.to_string()))?;
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| ManagerError::Raft(e.to_string()))?;
    if !initialized {
        let members = BTreeMap::from([(node_id, member)]);
        raft.initialize(members)
            .await
            .map_err(|e| ManagerError::Raft(e.to_string()))?;
        tracing::info!(node_id, "initialized a new one-member raft cluster");
    }
    Ok(raft)
}

/// Waits until some member is the leader (at once for a restarted single member, after an
/// election timeout otherwise).
pub async fn wait_for_leader(raft: &Raft, timeout: Duration) -> Result<(), ManagerError> {
    raft.wait(Some(timeout))
        .metrics(|m| m.current_leader.is_some(), "a leader is elected")
        .await
        .map_err(|e| ManagerError::Raft(format!("no raft leader: {e}")))?;
    Ok(())
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("this manager is not the raft leader (leader: {leader:?})")]
    NotLeader {
        leader: Option<NodeId>,
        leader_api: Option<String>,
    },
    #[error("raft: {0}")]
    Raft(String),
}

/// Proposes `command` and waits until it is committed and applied here.
pub async fn write(raft: &Raft, command: Command) -> Result<CommandResult, WriteError> {
    match raft.client_write(command).await {
        Ok(resp) => Ok(resp.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(WriteError::NotLeader {
                leader: f.leader_id,
                leader_api: f.leader_node.map(|n| n.api_addr),
            })
        }
        Err(e) => Err(WriteError::Raft(e.to_string())),
    }
}

/// True when this node is the leader (background writers run only there).
pub fn is_leader(raft: &Raft) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.current_leader == Some(m.id)
}
