//! The agent ↔ manager protocol (DESIGN.md section 5.1).
//!
//! - `POST /v1/agent/register` with [`RegisterRequest`] → [`RegisterResponse`].
//! - `POST /v1/agent/sync?index=N&wait=30s` with a [`Heartbeat`] body → [`DesiredState`]. The call
//!   returns at once when the manager's state index differs from N, else when something for this
//!   node changes or the wait ends. It carries the full desired state, so a reconnect can never miss
//!   an update. (DESIGN sketched a GET; a POST lets the heartbeat ride in the body.)
//! - `POST /v1/agent/runs` with a [`RunBatch`] → [`RunBatchAck`]; idempotent by run id.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::JobSpec;
use crate::node::{AgentStats, LoadInfo, RunningRun};
use crate::package::{InstalledPackage, PackageRef};
use crate::run::{RunRecord, Trigger};

/// Longest wait a sync call may ask for.
pub const MAX_SYNC_WAIT_SECS: u64 = 120;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub api_version: u32,
    pub node_id: Uuid,
    pub hostname: String,
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub arch: String,
    /// An app-specific hash of the host's machine id (`/etc/machine-id`), never the id itself;
    /// empty when the host has none. With the hostname it tells a rebuilt state on the same
    /// machine (same id) from a clone (a new id), see [`IdentityReset`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub machine_id: String,
    /// Present at the first registration after `op-agent reset-identity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<IdentityReset>,
    /// What this agent does beyond the protocol of release 0.1.0, e.g.
    /// [`CAPABILITY_DIRECTIVE_ACK`]. The manager stores them with the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// The agent acknowledges every run directive in the sync call after the one that delivered it
/// ([`Heartbeat::received`]): the manager may report a host that does not `unresponsive` instead
/// of waiting for the invocation's whole deadline.
pub const CAPABILITY_DIRECTIVE_ACK: &str = "directive-ack";

/// The operator reset this agent's identity (`op-agent reset-identity`): it enrolls as a new
/// node, and the manager retires the node it replaces and carries its once-job history over.
/// The predecessor is a live node with the same hostname and the same non-empty machine id
/// (and, when the old state was readable, the node id named here). A clone has a new machine id
/// or hostname, so it starts with no history and retires nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityReset {
    /// The node id of the state that was reset, when it could still be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_node_id: Option<Uuid>,
}

/// A once-job revision the manager has a result (or a start) of for this node: the agent writes
/// it into its once-job ledger before it runs any once-job, so a revision never runs twice on a
/// host, even after its state was rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnceOutcome {
    pub job: String,
    pub revision: u64,
    /// `running`, `done` or `failed` (the manager's once-target state).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub node_id: Uuid,
    /// The API URLs of every manager in the cluster.
    pub managers: Vec<String>,
    pub settings: AgentSettings,
    /// The node's own credential, issued when it registered with the shared enrollment token.
    /// The agent keeps it (`node.token` in its state dir) and presents it from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_token: Option<String>,
    /// The once-job revisions this node (or the node it replaced) started or finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub once_history: Vec<OnceOutcome>,
    /// The nodes this registration retired (after `op-agent reset-identity`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<Uuid>,
    /// The hash ([`crate::facts::Facts::hash`]) of the facts the manager holds for this node, ""
    /// when none. Present: this manager takes facts, and the agent sends its own in the next
    /// heartbeat when their hash differs. Absent (older managers): the agent sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts_hash: Option<String>,
}

/// Settings the manager hands to every agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSettings {
    /// How long a sync call parks when nothing changes. The agent's heartbeat period.
    pub sync_wait_secs: u64,
    /// Most run records per `POST /v1/agent/runs`.
    pub run_batch_max: usize,
    /// The fleet's chunk-ticket public key (ed25519, hex), to check the tickets of nodes that
    /// fetch package chunks from this one (issue 26). Absent when peer distribution is off, the
    /// cluster has no secrets key, or the manager predates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_public_key: Option<String>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            sync_wait_secs: 10,
            run_batch_max: 500,
            ticket_public_key: None,
        }
    }
}

/// Query of a sync call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncQuery {
    /// The `index` of the last desired state the agent applied (0 at start).
    #[serde(default)]
    pub index: u64,
    /// Seconds to park when nothing changed.
    #[serde(default)]
    pub wait: Option<u64>,
}

/// The body of every sync call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub node_id: Uuid,
    pub agent_version: String,
    #[serde(default)]
    pub load: Option<LoadInfo>,
    #[serde(default)]
    pub running: Vec<RunningRun>,
    #[serde(default)]
    pub packages: Vec<InstalledPackage>,
    #[serde(default)]
    pub stats: AgentStats,
    /// Set while the agent is degraded: why (a full state disk, a stalled scheduler or
    /// executor). The manager shows the node `Degraded` with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// The agent's clock when it sent this beat. Against the manager's receive time it gives the
    /// node's clock skew ([`crate::NodeInfo::clock_skew_ms`]); absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    /// The run ids of the run directives in the last desired state this agent applied: its
    /// acknowledgement that they reached it (an agent with [`CAPABILITY_DIRECTIVE_ACK`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub received: Vec<Uuid>,
    /// The host's facts, sent only when their hash differs from the one the manager last
    /// acknowledged ([`DesiredState::facts_hash`], [`RegisterResponse::facts_hash`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<crate::facts::Facts>,
    /// Where this agent serves package chunks to peers (its API's base URL), sent while it
    /// serves them and the manager hands out chunk tickets (packages from peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_url: Option<String>,
}

/// One job an agent must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredJob {
    pub revision: u64,
    pub spec: JobSpec,
}

/// Everything a node must be doing, computed for that node by the manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Pass back as `index` on the next sync.
    pub index: u64,
    /// The jobs this node runs after host selection. A once-job appears only while this node is a
    /// pending target of its current revision.
    pub jobs: Vec<DesiredJob>,
    #[serde(default)]
    pub packages: Vec<PackageRef>,
    #[serde(default)]
    pub directives: Vec<Directive>,
    #[serde(default)]
    pub managers: Vec<String>,
    #[serde(default)]
    pub settings: Option<AgentSettings>,
    /// The manager's clock when this sync request arrived. With its own clock when it sent the
    /// request, the agent knows how far apart the two clocks are (to within the network latency,
    /// however long the call was parked), so a directive's `not_after`, which is on the manager's
    /// clock, holds on a host whose clock is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    /// On a watch (`crate::watch`): the `sent_at` of the beat whose arrival `received_at` is. An
    /// answer on a watch is not the reply to a request the agent just sent (it may come long
    /// after a beat, or sit in a stopped agent's socket), so the agent pairs the two clocks'
    /// readings of that one beat instead of its own clock at arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beat_sent_at: Option<DateTime<Utc>>,
    /// Set on a light answer, sent only to an agent that asked for one (`partial=1` on the sync
    /// call): it carries only `directives` (output requests), the rest is empty and not a
    /// change. An agent that does not ask always gets the full state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub directives_only: bool,
    /// The values of the secrets this node's jobs (and run directives) name in their `Env`
    /// (`secret:NAME`), resolved by the manager for this node alone. The agent keeps them in
    /// memory only: its cached job set holds the `secret:NAME` references. A secret the manager
    /// cannot resolve (no key on that member) is absent, and runs that need it fail.
    #[serde(default, skip_serializing_if = "crate::secret::SecretValues::is_empty")]
    pub secrets: crate::secret::SecretValues,
    /// The labels the manager selected `jobs` by: the agent's own merged with the manager-set
    /// ones (`agentcli label`). The agent checks job selections against these. Absent (older
    /// managers, light answers): the agent's own labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// The pauses and maintenance windows in force and whether this node drains (issue 23):
    /// the agent holds the fires they cover. Absent (older managers, light answers): unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds: Option<crate::holds::Holds>,
    /// The hash of the facts the manager holds for this node ("" when none): the agent sends its
    /// facts again when its own hash differs. Absent (older managers, light answers): unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts_hash: Option<String>,
    /// The declared version and watchdog deadline of the agent release (the reserved package
    /// `op-agent-OS-ARCH`) in `packages`, when there is one (issue 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_release: Option<crate::agent_upgrade::AgentRelease>,
}

/// A one-off order for this node, carried by the sync channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Directive {
    /// Run a job (or an ad-hoc command wrapped in a job) now. The manager picks the run id, so a
    /// directive received twice runs once.
    Run(Box<RunDirective>),
    /// Stop a run in progress.
    Kill { run_id: Uuid },
    /// Send the run's output file from `offset` to the manager at `reply_to`
    /// (`POST /v1/agent/output`): how `agentcli logs --follow/--full` and the console read output
    /// that is not in the run record's tail. A request received twice is answered once. Output
    /// requests are not replicated: the member the agent syncs with holds them in memory.
    UploadOutput {
        request_id: Uuid,
        run_id: Uuid,
        offset: u64,
        reply_to: String,
    },
}

/// Largest piece of output one upload carries.
pub const OUTPUT_CHUNK_MAX: usize = 256 * 1024;

/// The answer to [`Directive::UploadOutput`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputChunk {
    pub request_id: Uuid,
    pub run_id: Uuid,
    pub node_id: Uuid,
    pub offset: u64,
    /// The bytes from `offset`, base64 (output need not be UTF-8); at most [`OUTPUT_CHUNK_MAX`].
    pub data: String,
    /// Bytes of the output file when it was read.
    pub size: u64,
    /// The run has ended: once `offset + len(data) == size`, there is no more output.
    pub finished: bool,
    /// Why no output could be read (the file was removed by retention, say).
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDirective {
    pub invocation_id: Uuid,
    pub run_id: Uuid,
    pub revision: u64,
    pub spec: JobSpec,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub trigger: Trigger,
    /// Do not start after this instant (the caller has given up on this host), on the manager's
    /// clock (see [`DesiredState::received_at`]).
    pub not_after: DateTime<Utc>,
    /// The fire of a `RunOn` job this run is (issue 23): the run is recorded as a `cron` run
    /// with this `planned_at`, so fires are counted alike wherever they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_at: Option<DateTime<Utc>>,
    /// Do not start after this instant either (manager's clock): for a fire, the end of the
    /// acknowledgement window, after which the leader gives the fire to another host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_by: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBatch {
    pub node_id: Uuid,
    pub runs: Vec<RunRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunBatchAck {
    /// Records stored now.
    pub accepted: usize,
    /// Records the manager already had (a redelivery).
    pub duplicates: usize,
    /// Records the manager will never store (a job never selected for this node, a malformed
    /// record). The agent takes them out of its outbox, logs why, and does not send them again;
    /// the rest of the batch is stored as usual.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedRun>,
}

/// One run record of a batch that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRun {
    pub run_id: Uuid,
    pub reason: String,
}
