//! Everything openraft: the type configuration, the log store (`raft.db`), the state machine
//! (delegating to `op-store`), the peer network, and [`Cluster`], this manager's handle on its
//! cluster.
//!
//! The manager always runs raft; a single manager is a one-member cluster. A new data dir either
//! starts a new cluster (its first node calls `initialize` with itself, once) or joins an
//! existing one (`--join`: the node gets the cluster's identity from a member, starts raft
//! uninitialized and asks to be added; see [`membership`]).
//!
//! [`Cluster::write`] is the one place writes go. On the leader it proposes the command; on a
//! follower it forwards the command to the leader over the raft listener (`/raft/write`) and
//! returns the leader's answer once the entry is applied locally too, so a client reads its own
//! write on the member it asked. [`Cluster::read_barrier`] makes reads linearizable the same way
//! (a read index from the leader, then waiting to have applied it).

pub mod events;
pub mod identity;
pub mod log_store;
pub mod membership;
pub mod messages;
pub mod network;
pub mod recover;
pub mod refusal;
pub mod secrets_key;
pub mod server;
pub mod state_machine;
pub mod types;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use op_proto::api::{AddMemberRequest, TransferLeaderRequest};
use op_store::{Command, CommandResult, Store};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{Config, SnapshotPolicy};
use reqwest::Method;
use tokio::sync::{Mutex, RwLock};

pub use crate::error::ClusterError;
pub use identity::Identity;
pub use types::{Member, NodeId, Raft};

use crate::error::ManagerError;
use crate::hub::Hub;
use messages::{ReadIndexResponse, WriteRequest, WriteResponse, code};
use network::{PeerError, Peers};

/// How long a write or read waits for a leader to exist (an election takes a few seconds).
pub const LEADER_WAIT: Duration = Duration::from_secs(20);
/// How long the leader waits for a proposal to commit before telling the client the outcome
/// is unknown (a leader that lost its majority keeps trying).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a follower waits to apply an entry the leader acknowledged before answering anyway.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// Pause between attempts while no leader is known.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long a leader keeps asking a majority to confirm it before a linearizable read fails.
const QUORUM_WAIT: Duration = Duration::from_secs(5);
/// How long one leadership check may wait for this node's raft core to answer.
const LEADERSHIP_CHECK_WAIT: Duration = Duration::from_secs(10);

/// Raft timing and log-compaction settings, and the peer client.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// Build a snapshot (and purge the log) after this many entries.
    pub snapshot_logs: u64,
    /// Leader heartbeat period.
    pub heartbeat: Duration,
    /// Shortest election timeout; the longest is twice this.
    pub election_timeout: Duration,
    /// The client for every request to peers (mutual TLS when TLS is on).
    pub peer_http: reqwest::Client,
    /// The data dir, whose free space is checked before each write.
    pub data_dir: PathBuf,
    /// Free bytes the data dir keeps: below, writes are refused (0: no check).
    pub disk_reserve: u64,
}

impl RaftSettings {
    /// How long followers refuse to vote after hearing from the leader (openraft uses the
    /// longest election timeout).
    pub fn lease(&self) -> Duration {
        self.election_timeout * 2
    }

    fn config(&self) -> Result<Config, ManagerError> {
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        Config {
            cluster_name: "op-agent".into(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_timeout),
            election_timeout_max: ms(self.election_timeout * 2),
            // Run batches are large entries, and openraft gives an append one heartbeat period
            // before it counts as lost and is sent again: keep each append small enough to be
            // sent, written durably and acknowledged well within that.
            max_payload_entries: 16,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            max_in_snapshot_log_to_keep: 100,
            install_snapshot_timeout: 10_000,
            ..Config::default()
        }
        .validate()
        .map_err(|e| ManagerError::Raft(e.to_string()))
    }
}

/// The raft side of [`ClusterError`] (defined in `error.rs`, beside the other errors).
impl ClusterError {
    /// The error code a peer sends for this error.
    pub fn code(&self) -> &str {
        match self {
            ClusterError::NotLeader | ClusterError::NoLeader { .. } => code::NOT_LEADER,
            ClusterError::Overloaded { .. } => code::OVERLOADED,
            ClusterError::Refused { code, .. } => code,
            _ => code::FAILED,
        }
    }
}

/// What is asked of the leader.
#[derive(Debug, Clone)]
enum Op {
    Write(Box<Command>),
    ReadIndex,
    AddMember(AddMemberRequest),
    RemoveMember(NodeId),
    TransferLeader(Option<NodeId>),
}

/// What the leader answered.
#[derive(Debug)]
enum Answer {
    Write(WriteResponse),
    ReadIndex(u64),
    Done,
}

/// This manager's handle on its cluster.
pub struct Cluster {
    pub raft: Raft,
    pub identity: Identity,
    pub peers: Peers,
    pub settings: RaftSettings,
    /// The log store's committed index + 1 (0 = nothing committed yet).
    committed: Arc<AtomicU64>,
    /// Where the append handler leaves the entries' JSON for the log to store as it is.
    pub received: log_store::Received,
    /// Held shared by every local proposal; a leadership transfer holds it exclusively so no
    /// entry refreshes the followers' lease while the new leader campaigns.
    gate: RwLock<()>,
    /// One membership change at a time.
    changing: Mutex<()>,
    /// Node ids handed to joining nodes that are not members yet.
    reserved: std::sync::Mutex<BTreeSet<NodeId>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Opens the log and state machine in `data_dir` and starts the raft node (not initialized: see
/// [`Cluster::initialize_alone`]).
pub async fn open(
    identity: Identity,
    data_dir: &Path,
    store: Arc<Store>,
    hub: Arc<Hub>,
    settings: RaftSettings,
) -> Result<Cluster, ManagerError> {
    let config = settings.config()?;
    let log_path = data_dir.join("raft.db");
    let log_store = log_store::LogStore::open(&log_path).map_err(|e| ManagerError::Sqlite {
        path: log_path.clone(),
        source: e,
    })?;
    let committed = log_store.committed_handle();
    let received = log_store.received();
    let encoded = log_store.encoded();
    let sm =
        state_machine::StateMachine::new(store, hub, data_dir.join("snapshots")).map_err(|e| {
            ManagerError::Io {
                path: data_dir.join("snapshots"),
                source: e,
            }
        })?;
    let peers = Peers::new(
        identity.cluster_id.clone(),
        identity.secret.clone(),
        identity.node_id,
        settings.peer_http.clone(),
    );
    let raft = Raft::new(
        identity.node_id,
        Arc::new(config),
        network::Network::new(peers.clone(), encoded),
        log_store,
        sm,
    )
    .await
    .map_err(|e| ManagerError::Raft(e.to_string()))?;
    Ok(Cluster {
        raft,
        identity,
        peers,
        settings,
        committed,
        received,
        gate: RwLock::new(()),
        changing: Mutex::new(()),
        reserved: std::sync::Mutex::new(BTreeSet::new()),
    })
}

/// True when this node is the leader (background writers run only there).
pub fn is_leader(raft: &Raft) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.current_leader == Some(m.id)
}

/// Bytes available to this process on the filesystem holding `dir` (`None` if unknown).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available().saturating_mul(st.fragment_size()))
}

fn raft_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Raft(e.to_string())
}

impl Cluster {
    pub fn id(&self) -> NodeId {
        self.identity.node_id
    }

    pub fn is_leader(&self) -> bool {
        is_leader(&self.raft)
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Option<(NodeId, Member)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let member = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, member))
    }

    /// The highest log index known to be committed here.
    pub fn committed_index(&self) -> Option<u64> {
        self.committed.load(Ordering::SeqCst).checked_sub(1)
    }

    /// True once this node learned it was removed from the cluster.
    pub fn removed(&self) -> bool {
        self.peers.removed()
    }

    /// Makes a brand-new data dir a one-member cluster. Only ever on the first start of a new
    /// cluster's first node: initializing a node that has (or will get) a log would create a
    /// second cluster (openraft#1031).
    pub async fn initialize_alone(&self, me: Member) -> Result<(), ManagerError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ManagerError::Raft(e.to_string()))?;
        if !initialized {
            self.raft
                .initialize(BTreeMap::from([(self.id(), me)]))
                .await
                .map_err(|e| ManagerError::Raft(e.to_string()))?;
            tracing::info!(node_id = self.id(), cluster_id = %self.identity.cluster_id, "initialized a new one-member raft cluster");
        }
        Ok(())
    }

    /// Waits until some member is the leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<(), ManagerError> {
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is elected")
            .await
            .map_err(|e| ManagerError::Raft(format!("no raft leader: {e}")))?;
        Ok(())
    }

    /// True when this node is the only voter (a single manager). Waits (briefly) for raft to
    /// publish the membership it loaded: right after start the metrics still show none.
    pub async fn alone(&self) -> bool {
        let loaded = self
            .raft
            .wait(Some(Duration::from_secs(5)))
            .metrics(
                |m| {
                    m.membership_config
                        .membership()
                        .voter_ids()
                        .next()
                        .is_some()
                },
                "membership loaded",
            )
            .await;
        let Ok(m) = loaded else {
            return false;
        };
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        voters == [self.id()]
    }

    /// Proposes `command` (on the leader, wherever that is) and returns its result once it is
    /// applied here.
    pub async fn write(&self, command: Command) -> Result<CommandResult, ClusterError> {
        match self.on_leader(Op::Write(Box::new(command))).await? {
            Answer::Write(w) => Ok(w.result),
            other => Err(raft_err(format!("unexpected answer {other:?}"))),
        }
    }

    /// Returns once this node has applied everything committed before the call: a read after it
    /// sees every write acknowledged before the read began (linearizable).
    pub async fn read_barrier(&self) -> Result<(), ClusterError> {
        match self.on_leader(Op::ReadIndex).await? {
            Answer::ReadIndex(index) => {
                self.wait_applied(index, LEADER_WAIT).await?;
                Ok(())
            }
            other => Err(raft_err(format!("unexpected answer {other:?}"))),
        }
    }

    /// Adds a running node holding this cluster's identity: learner, catch-up, voter.
    pub async fn add_member(&self, req: AddMemberRequest) -> Result<(), ClusterError> {
        self.on_leader(Op::AddMember(req)).await.map(|_| ())
    }

    /// Removes a member; removing the leader first hands leadership to another voter.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), ClusterError> {
        self.on_leader(Op::RemoveMember(id)).await.map(|_| ())
    }

    /// Hands leadership to `to` (or the most up-to-date other voter).
    pub async fn transfer_leader(&self, to: Option<NodeId>) -> Result<(), ClusterError> {
        self.on_leader(Op::TransferLeader(to)).await.map(|_| ())
    }

    async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ClusterError> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "entry applied here")
            .await
            .map(|_| ())
            .map_err(|e| raft_err(format!("this manager did not apply index {index}: {e}")))
    }

    /// Runs `op` on the leader: here when this node leads, else over the raft listener of the
    /// leader it knows, trying again while leadership moves (up to [`LEADER_WAIT`]).
    async fn on_leader(&self, op: Op) -> Result<Answer, ClusterError> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let result = match self.leader() {
                Some((id, _)) if id == self.id() => self.local(&op).await,
                Some((_, member)) => self.remote(&member, &op).await,
                None => Err(ClusterError::NotLeader),
            };
            match result {
                Err(ClusterError::NotLeader) => {}
                Ok(Answer::Write(w)) if !self.is_leader() => {
                    // Read-your-writes on this member: answer once the entry is applied here.
                    if let Err(e) = self.wait_applied(w.index, APPLY_WAIT).await {
                        tracing::warn!(error = %e, "answering a forwarded write before applying it here");
                    }
                    return Ok(Answer::Write(w));
                }
                other => return other,
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::NoLeader {
                    secs: LEADER_WAIT.as_secs(),
                });
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// `op` on this node, which believes it is the leader.
    async fn local(&self, op: &Op) -> Result<Answer, ClusterError> {
        match op {
            Op::Write(command) => self
                .write_local((**command).clone())
                .await
                .map(Answer::Write),
            Op::ReadIndex => self.read_index_local().await.map(Answer::ReadIndex),
            Op::AddMember(req) => self.add_member_local(req).await.map(|()| Answer::Done),
            Op::RemoveMember(id) => self.remove_member_local(*id).await.map(|()| Answer::Done),
            Op::TransferLeader(to) => self.transfer_leader_local(*to).await.map(|()| Answer::Done),
        }
    }

    /// `op` on the leader `member`, over its raft listener.
    async fn remote(&self, member: &Member, op: &Op) -> Result<Answer, ClusterError> {
        let base = member.raft_addr.as_str();
        let result = match op {
            Op::Write(command) => self
                .peers
                .post::<_, WriteResponse>(
                    base,
                    "/raft/write",
                    &WriteRequest {
                        command: (**command).clone(),
                    },
                    WRITE_TIMEOUT + Duration::from_secs(5),
                )
                .await
                .map(Answer::Write),
            Op::ReadIndex => self
                .peers
                .post::<_, ReadIndexResponse>(
                    base,
                    "/raft/read-index",
                    &serde_json::json!({}),
                    Duration::from_secs(10),
                )
                .await
                .map(|r| Answer::ReadIndex(r.index)),
            Op::AddMember(req) => self
                .peers
                .post::<_, serde::de::IgnoredAny>(
                    base,
                    "/raft/members",
                    req,
                    membership::CATCH_UP_LIMIT + Duration::from_secs(30),
                )
                .await
                .map(|_| Answer::Done),
            Op::RemoveMember(id) => {
                let (url, req) =
                    self.peers
                        .request(Method::DELETE, base, &format!("/raft/members/{id}"));
                network::send_json::<serde::de::IgnoredAny>(
                    &url,
                    req.timeout(Duration::from_secs(60)),
                )
                .await
                .map(|_| Answer::Done)
            }
            Op::TransferLeader(to) => self
                .peers
                .post::<_, serde::de::IgnoredAny>(
                    base,
                    "/raft/leader",
                    &TransferLeaderRequest { to: *to },
                    Duration::from_secs(60),
                )
                .await
                .map(|_| Answer::Done),
        };
        result.map_err(|e| match e {
            // Not sent: the leader is gone or moved; ask again once we know better.
            PeerError::Unreachable { .. } => ClusterError::NotLeader,
            PeerError::Refused { body, .. } if body.code == code::NOT_LEADER => {
                ClusterError::NotLeader
            }
            PeerError::Refused { body, .. } => ClusterError::Refused {
                code: body.code,
                message: body.message,
            },
            // A read asks nothing of anyone: ask again.
            PeerError::NoAnswer { .. } if matches!(op, Op::ReadIndex) => ClusterError::NotLeader,
            PeerError::NoAnswer { message, .. } => ClusterError::OutcomeUnknown(message),
        })
    }

    /// Proposes `command` on this node, the leader.
    pub(crate) async fn write_local(
        &self,
        command: Command,
    ) -> Result<WriteResponse, ClusterError> {
        // openraft stops for good on a storage error (a full disk included): refuse the write
        // while there is still room, so raft never meets the full disk and writes resume by
        // themselves once space returns.
        if let Some(full) = self.disk_full() {
            return Err(ClusterError::refused(code::DISK_FULL, full));
        }
        let _gate = self.gate.read().await;
        match tokio::time::timeout(WRITE_TIMEOUT, self.raft.client_write(command)).await {
            Ok(Ok(resp)) => Ok(WriteResponse {
                index: resp.log_id.index,
                result: resp.data,
            }),
            // Only answered for an entry never appended, or one truncated because another
            // leader won: either way it was not committed, so proposing again is safe.
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(ClusterError::NotLeader)
            }
            Ok(Err(e)) => Err(raft_err(e)),
            // Alone, no majority can be lost: the log or the state machine is slow (a starved
            // or disk-bound manager). The entry may still commit.
            Err(_) if self.is_leader() && self.sole_voter() => Err(ClusterError::Overloaded {
                what: "the write was not committed (it may still be made)",
                secs: WRITE_TIMEOUT.as_secs(),
            }),
            Err(_) => Err(ClusterError::OutcomeUnknown(format!(
                "not committed within {} s; the cluster may have lost its majority",
                WRITE_TIMEOUT.as_secs()
            ))),
        }
    }

    /// True when the membership this node knows has it as the only voter.
    fn sole_voter(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        voters == [self.id()]
    }

    /// Why writes are refused now, when the data dir's filesystem has less free space than
    /// `disk_reserve`.
    pub fn disk_full(&self) -> Option<String> {
        let reserve = self.settings.disk_reserve;
        if reserve == 0 {
            return None;
        }
        let free = free_bytes(&self.settings.data_dir)?;
        (free < reserve).then(|| {
            format!(
                "the manager's disk is full: {free} bytes free in {} (disk_reserve keeps {reserve}); \
                 writes are refused until space is freed, then resume on their own",
                self.settings.data_dir.display()
            )
        })
    }

    /// Confirms leadership with a quorum and returns the index a linearizable read must see.
    ///
    /// Confirming leadership takes one heartbeat round answered by a majority, each answer
    /// within one heartbeat interval. A round that misses it (followers slow for a moment under
    /// load, a follower paused) is asked again until [`QUORUM_WAIT`]: only a leader cut off
    /// from its majority for that long answers with the error.
    pub(crate) async fn read_index_local(&self) -> Result<u64, ClusterError> {
        let deadline = tokio::time::Instant::now() + QUORUM_WAIT;
        loop {
            let round =
                tokio::time::timeout(LEADERSHIP_CHECK_WAIT, self.raft.get_read_log_id()).await;
            match round {
                Ok(Ok((read, _applied))) => return Ok(read.map_or(0, |l| l.index)),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                    return Err(ClusterError::NotLeader);
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, "leadership not confirmed by a majority yet; asking again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(Err(e)) => return Err(raft_err(e)),
                // The core did not answer at all (a quorum lost answers QuorumNotEnough). While
                // the metrics still name this node the leader, it is busy, not deposed: say so
                // rather than search for another leader (which ended as "no raft leader").
                Err(_) if self.is_leader() => {
                    return Err(ClusterError::Overloaded {
                        what: "the leadership check was not answered",
                        secs: LEADERSHIP_CHECK_WAIT.as_secs(),
                    });
                }
                Err(_) => return Err(ClusterError::NotLeader),
            }
        }
    }
}
