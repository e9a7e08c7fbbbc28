//! The bodies managers exchange on the raft listener besides openraft's own RPCs: joining,
//! forwarded writes, read barriers, membership changes, leadership hand-over and output requests.
//!
//! They live here rather than in `op-proto` because they carry `op-store`'s [`Command`] and
//! openraft types, and only managers of the same build exchange them; they are still a wire
//! format, pinned by fixtures in `tests/data/raft/`. Errors travel as `op_proto::ErrorBody` with
//! a non-2xx status, like the API's.

use op_store::{Command, CommandResult};
use serde::{Deserialize, Serialize};

use super::types::NodeId;

/// Header naming the sender's cluster id on every peer request, so a node of another cluster is
/// told so instead of being refused for a secret it cannot know.
pub const CLUSTER_HEADER: &str = "x-op-cluster";
/// Header naming the sender's node id (for logs, and the membership check on votes).
pub const NODE_HEADER: &str = "x-op-node";

/// Peer error codes.
pub mod code {
    /// The request lacks this cluster's secret.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// The sender belongs to another cluster.
    pub const WRONG_CLUSTER: &str = "wrong_cluster";
    /// A vote from a node that is not a member (a removed node).
    pub const NOT_A_MEMBER: &str = "not_a_member";
    /// This node is not the leader; the sender asks again once it knows the new one.
    pub const NOT_LEADER: &str = "not_leader";
    /// The request was understood but failed (the message says why).
    pub const FAILED: &str = "failed";
    /// The leader's data dir has less free space than `disk_reserve`: the write was not made.
    pub const DISK_FULL: &str = "disk_full";
    /// A blob is not on this node.
    pub const NO_BLOB: &str = "no_blob";
    /// The leader leads but its raft core did not answer in time (busy, slow disk).
    pub const OVERLOADED: &str = "overloaded";
}

/// `POST /raft/join`: a new node asks for the cluster's identity. Authenticated by an admin token
/// or by the cluster secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The id the node wants (`--node-id`); None = the leader picks the next free one.
    #[serde(default)]
    pub node_id: Option<u64>,
    /// The cluster the node's data dir already belongs to, if any (refused when it differs).
    #[serde(default)]
    pub cluster_id: Option<String>,
}

/// The answer to [`JoinRequest`]: what the node writes to `cluster.json`/`cluster.secret`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    pub cluster_id: String,
    pub node_id: u64,
    pub secret: String,
    /// The cluster's secrets key (hex), written to the joining node's `secrets.key`; absent
    /// when the member has none (a cluster from before secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_key: Option<String>,
}

impl std::fmt::Debug for JoinResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinResponse")
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// `POST /raft/write`: a follower hands a command to the leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteRequest {
    pub command: Command,
}

/// The leader's answer: the command's result and its log index, which the follower waits to
/// have applied before it answers its client (so the client reads its own write there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteResponse {
    pub index: u64,
    pub result: CommandResult,
}

/// `POST /raft/read-index`: the leader confirms it still leads (a heartbeat round with a quorum)
/// and says up to which index a reader must have applied to read linearizably.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexResponse {
    pub index: u64,
}

/// `POST /raft/campaign`: the leader asks a caught-up voter to start an election once the
/// followers' leader lease has run out (leadership transfer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignRequest {
    /// Milliseconds to wait before electing: the old leader's lease.
    pub after_ms: u64,
}

/// `POST /raft/removed`: the leader tells a node it is no longer a member, so it stops
/// campaigning and stops serving agents stale state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedNotice {
    pub node_id: NodeId,
}

/// `POST /raft/hello` answer: who is listening there. The leader asks a node before adding it,
/// so a node of another cluster (refused by its peer authentication) or a wrong address is an
/// error at once, not a learner that never catches up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub node_id: NodeId,
}

/// `POST /raft/output`: a reader's output request, handed to the other members when the node
/// does not sync with the reader's member (`crate::output`). Kept in memory for `wait_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedOutputRequest {
    pub request: crate::output::OutputRequest,
    pub wait_ms: u64,
}

/// The answer to [`ForwardedOutputRequest`]: whether the node syncs with the member that queued
/// it, so the reader's member sends the node's next requests there only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedOutputAnswer {
    pub held: bool,
}
