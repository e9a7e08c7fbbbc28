//! The vocabulary of state changes: every [`Command`] is one raft log entry, and its
//! [`CommandResult`] is what `apply` answered.
//!
//! Commands carry everything `apply` needs to be deterministic: the time (`at`), ids and secrets'
//! hashes are chosen by the manager that proposes the command, never by the replica applying it.
//! The serde form of both enums is a persisted format (raft log entries and snapshots hold it), so
//! variants and fields are only ever added, with `#[serde(default)]` on new fields; fixture files in
//! `tests/data/commands/` pin the form.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use op_proto::agent::RunBatchAck;
use op_proto::api::{JobRecord, SaveJobResponse, Scope, TokenInfo};
use op_proto::events::{NotifyRule, NotifyRuleInfo};
use op_proto::incidents::FireKey;
use op_proto::invoke::{InvocationKind, InvocationOptions};
use op_proto::node::{AgentStats, LoadInfo, RunningRun};
use op_proto::package::{InstalledPackage, PackageVersion};
use op_proto::{JobSpec, NodeInfo, NodeStatus, RunRecord};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One change of the manager's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Names the cluster; applied once, right after the first member initialized it.
    InitCluster {
        cluster_id: String,
        at: DateTime<Utc>,
    },
    /// Creates or replaces a job and bumps its revision. For an enabled once-job, the Ready nodes
    /// its selector matches at this point of the log become its pending targets.
    SaveJob {
        spec: Box<JobSpec>,
        at: DateTime<Utc>,
        actor: String,
    },
    DeleteJob {
        name: String,
        at: DateTime<Utc>,
        actor: String,
    },
    /// Enables or disables a job; bumps the revision when the state changes.
    SetJobEnabled {
        name: String,
        enabled: bool,
        at: DateTime<Utc>,
        actor: String,
    },
    /// An agent announced itself: creates or updates the node, which becomes Ready.
    RegisterNode {
        /// Boxed: the largest field of any command, and most commands are much smaller.
        registration: Box<NodeRegistration>,
        at: DateTime<Utc>,
        actor: String,
        /// Enrollment: the node's own credential, issued because the agent registered with the
        /// shared enrollment token. Refused when the node already holds a live credential.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        enroll: Option<NewToken>,
    },
    /// Coalesced heartbeats of many nodes: last_seen and reported state. A NotReady node that
    /// beats becomes Ready.
    Heartbeats { beats: Vec<NodeBeat> },
    /// Liveness decisions of the leader. Each change holds only if the node was not seen after
    /// `unless_seen_after`, so a heartbeat applied in between wins.
    SetNodeStatus {
        at: DateTime<Utc>,
        changes: Vec<StatusChange>,
    },
    /// An operator forgets a node: it becomes Left and drops out of selections.
    ForgetNode {
        node_id: Uuid,
        at: DateTime<Utc>,
        actor: String,
    },
    /// Manager-set labels of a node (`agentcli label`): `set` merged in, `remove` taken out.
    /// Checked by the proposer; the node's desired state follows its new identity.
    SetNodeLabels {
        node_id: Uuid,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
        at: DateTime<Utc>,
        actor: String,
    },
    /// The facts a node's agent probed (OS, CPUs, memory, disks, ...), sent when they changed.
    /// Checked by the proposer; the node's desired state follows its new identity.
    SetNodeFacts {
        node_id: Uuid,
        facts: Box<op_proto::facts::Facts>,
        at: DateTime<Utc>,
    },
    /// A batch of run records from one node; idempotent by run id.
    IngestRuns {
        node_id: Uuid,
        at: DateTime<Utc>,
        runs: Vec<RunRecord>,
    },
    /// Run batches of several nodes in one entry: the manager coalesces the batches that arrive
    /// while its previous write is in flight (group commit), so a fleet answering at once costs
    /// a few log entries, not one per agent. Each batch is applied as `IngestRuns` would.
    IngestRunBatches {
        at: DateTime<Utc>,
        batches: Vec<NodeRuns>,
    },
    /// Retention: deletes the same rows on every replica.
    Prune {
        now: DateTime<Utc>,
        limits: RetentionLimits,
    },
    CreateToken {
        token: NewToken,
        at: DateTime<Utc>,
        actor: String,
    },
    RevokeToken {
        id: String,
        at: DateTime<Utc>,
        actor: String,
    },
    /// A package version whose blob the proposing manager has stored (by `sha256`). It becomes the
    /// package's current version. The version number is chosen by apply, deterministically:
    /// `max(highest version ever + 1, unix seconds of at)`.
    AddPackageVersion {
        name: String,
        sha256: String,
        size: u64,
        /// None = the deploy dir of the package's newest version, else "" (the agent's default).
        #[serde(default)]
        deploy_dir: Option<String>,
        at: DateTime<Utc>,
        actor: String,
        /// The hosts this version goes to; absent (entries written before targeting existed, or
        /// an upload without --host/--exclude/--label) = every host. Not inherited.
        #[serde(default, skip_serializing_if = "op_proto::package::is_everywhere")]
        target: op_proto::HostSelector,
    },
    /// Moves a package's current version; None = the newest version older than the current one.
    RollbackPackage {
        name: String,
        #[serde(default)]
        version: Option<u64>,
        at: DateTime<Utc>,
        actor: String,
    },
    /// Deletes one version. Refused while it is current or while any node reports it installed.
    /// Its blob file is removed later by each manager's blob GC, once no version refers to it.
    DeletePackageVersion {
        name: String,
        version: u64,
        at: DateTime<Utc>,
        actor: String,
    },
    /// A fan-out invocation: its targets (chosen by the proposer from the Ready nodes), their run
    /// ids, and the targets released at once. Released targets become directives of their nodes.
    CreateInvocation {
        invocation: Box<NewInvocation>,
        at: DateTime<Utc>,
        actor: String,
    },
    /// The leader's rollout decisions for one invocation: targets to release (next batch or
    /// concurrency slot), released targets past their deadline (now `unreachable`), a reason to
    /// stop releasing (the pending targets are cancelled), and whether it is finished. Each part
    /// holds only where the state still allows it, so a stale decision changes nothing.
    AdvanceInvocation {
        id: Uuid,
        at: DateTime<Utc>,
        #[serde(default)]
        release: Vec<Uuid>,
        #[serde(default)]
        expire: Vec<Uuid>,
        #[serde(default)]
        stop: Option<String>,
        #[serde(default)]
        finish: bool,
    },
    /// An operator cancels an invocation: pending targets are cancelled and running ones get a
    /// kill directive.
    CancelInvocation {
        id: Uuid,
        at: DateTime<Utc>,
        actor: String,
    },
    /// Written by releases up to 0.1.0 to ask a node for a piece of a run's output file; no
    /// longer written (output requests stay in the memory of the member the node syncs with)
    /// and applied as nothing, so an old log still replays. Kept so such logs decode.
    RequestOutput {
        request_id: Uuid,
        node_id: Uuid,
        run_id: Uuid,
        offset: u64,
        reply_to: String,
        at: DateTime<Utc>,
    },
    /// Creates or replaces a notification rule (checked at the API; its structure again here).
    /// A rule holds no credential, only the paths of files each manager reads (DESIGN 13.6).
    PutNotifyRule {
        rule: Box<NotifyRule>,
        at: DateTime<Utc>,
        actor: String,
    },
    RemoveNotifyRule {
        name: String,
        at: DateTime<Utc>,
        actor: String,
    },
    /// The leader closes fires whose results are in (every selected host reported, or the event
    /// window passed): their failures become `run.failed` / `run.recovered` events.
    CloseFires {
        at: DateTime<Utc>,
        fires: Vec<FireToClose>,
    },
    /// The leader flushes the batched node and package changes into events (the event window
    /// after the batch's first change passed).
    FlushEvents { at: DateTime<Utc> },
    /// Agents acknowledged run directives (batched by the member they sync with): those
    /// targets no longer become `unresponsive`, and have their whole deadline.
    AcknowledgeDirectives {
        at: DateTime<Utc>,
        acks: Vec<DirectiveAck>,
    },
    /// The leader's delivery worker: `rule`'s receiver accepted event `event_id`, so every event
    /// the rule matched up to it is acknowledged and never sent again. The position never moves
    /// backwards; the command is ignored when the rule is gone.
    NotifyDelivered {
        rule: String,
        event_id: u64,
        at: DateTime<Utc>,
    },
    /// The leader's delivery worker: sending event `event_id` through `rule` failed, for the
    /// `failures`-th time in a row. Committed when the error changes and at most every few
    /// seconds otherwise (a dead receiver does not flood the log). Ignored when the rule is gone
    /// or the event is already acknowledged.
    NotifyFailed {
        rule: String,
        event_id: u64,
        failures: u32,
        error: String,
        at: DateTime<Utc>,
    },
    /// The leader judged job fires past their grace (issue 20) and found these runs past their
    /// `MaxDuration`: kept as each job's latest judged fires, and turned into `run.missed`,
    /// `run.late`, `run.skipped` and `run.overrunning` events.
    JudgeFires {
        at: DateTime<Utc>,
        #[serde(default)]
        fires: Vec<op_proto::judged::JudgedFire>,
        #[serde(default)]
        overrunning: Vec<op_proto::judged::OverrunningRun>,
        /// The nodes whose clock is off by more than the leader's threshold, when that set
        /// changed (`None`: unchanged).
        #[serde(default)]
        skewed: Option<Vec<op_proto::judged::SkewedHost>>,
    },
    /// Creates or replaces a secret (issue 24). The proposing manager encrypted the value; only
    /// the ciphertext travels in the log, snapshots and backups.
    SetSecret {
        name: String,
        sealed: SealedSecret,
        at: DateTime<Utc>,
        actor: String,
    },
    RemoveSecret {
        name: String,
        at: DateTime<Utc>,
        actor: String,
    },
    /// A key rotation: every secret's ciphertext replaced by its value sealed under the new key.
    /// Refused unless it names exactly the secrets stored, so none stays under the old key.
    RekeySecrets {
        sealed: BTreeMap<String, SealedSecret>,
        at: DateTime<Utc>,
        actor: String,
        /// Each secret's nonce as the rotation read it: a secret set again meanwhile (another
        /// nonce) refuses the rotation, so it never writes back an older value.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        replaces: BTreeMap<String, String>,
    },
    /// A pause (issue 23): replaces any pause of the same scope. Checked by the proposer.
    Pause { pause: op_proto::holds::Pause },
    /// Removes the pause of exactly this scope.
    Resume {
        scope: op_proto::holds::HoldScope,
        at: DateTime<Utc>,
        actor: String,
    },
    /// Creates or replaces a maintenance window. Checked by the proposer (it opens again).
    SetWindow { window: op_proto::holds::Window },
    RemoveWindow {
        name: String,
        at: DateTime<Utc>,
        actor: String,
    },
    /// Drains (`Some`) or undrains (`None`) a node: no new runs start on it while drained.
    SetNodeDrain {
        node_id: Uuid,
        drain: Option<op_proto::holds::Drain>,
        at: DateTime<Utc>,
        actor: String,
    },
    /// A staged rollout (issue 21): applies `change` (an `AddPackageVersion` or a `SaveJob`) and,
    /// in the same entry, starts a rollout of the version or revision it made. Any unfinished
    /// rollout of the same package or job is superseded; hosts outside the first stage keep what
    /// was fully rolled out before.
    StartRollout {
        rollout: NewRollout,
        change: Box<Command>,
    },
    /// The leader moves a rollout from stage `from_stage` to the next (or finishes it after its
    /// last stage). Holds only while the rollout runs at `from_stage`; the next stage's threshold
    /// is derived here from the hosts selected at this point of the log.
    AdvanceRollout {
        id: Uuid,
        from_stage: usize,
        at: DateTime<Utc>,
    },
    /// The leader halts a running rollout whose failures reached its `HaltOn` (with
    /// `AutoRollback` it is rolled back: nobody is admitted any more).
    HaltRollout {
        id: Uuid,
        reason: String,
        #[serde(default)]
        failed_hosts: Vec<String>,
        at: DateTime<Utc>,
    },
    /// An operator pauses, resumes, aborts or promotes a rollout.
    RolloutAction {
        id: Uuid,
        action: op_proto::rollout::RolloutAction,
        at: DateTime<Utc>,
        actor: String,
    },
    /// Records the declared version and deadline of an agent release (issue 22), by the sha256
    /// of its content; proposed before the release's `AddPackageVersion`.
    SetAgentRelease {
        sha256: String,
        release: op_proto::agent_upgrade::AgentRelease,
        at: DateTime<Utc>,
        actor: String,
    },
    /// Pins (`Some`) or unpins (`None`) hosts on an agent version: `node:<id>` or `label:k=v`.
    SetAgentPin {
        target: String,
        version: Option<String>,
        at: DateTime<Utc>,
        actor: String,
    },
    /// Sets (`Some`) or clears (`None`) a package's default rollout: what an upload of it
    /// without `--rollout` is staged by (issue 21).
    SetPackageRollout {
        name: String,
        plan: Option<op_proto::rollout::RolloutPlan>,
        at: DateTime<Utc>,
        actor: String,
    },
}

/// A rollout to start: its id (chosen by the proposer) and its checked plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRollout {
    pub id: Uuid,
    pub plan: op_proto::rollout::RolloutPlan,
}

/// A secret's value sealed with the cluster's secrets key (an AEAD; the name is its associated
/// data). Hex of the nonce and of the ciphertext with its tag; `key_id` names the key (the first
/// bytes of its SHA-256), so a member with another key knows it cannot open it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub key_id: String,
    pub nonce: String,
    pub ciphertext: String,
}

impl Command {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::InitCluster { .. } => "init_cluster",
            Command::SaveJob { .. } => "save_job",
            Command::DeleteJob { .. } => "delete_job",
            Command::SetJobEnabled { .. } => "set_job_enabled",
            Command::RegisterNode { .. } => "register_node",
            Command::Heartbeats { .. } => "heartbeats",
            Command::SetNodeStatus { .. } => "set_node_status",
            Command::ForgetNode { .. } => "forget_node",
            Command::SetNodeLabels { .. } => "set_node_labels",
            Command::SetNodeFacts { .. } => "set_node_facts",
            Command::IngestRuns { .. } => "ingest_runs",
            Command::IngestRunBatches { .. } => "ingest_run_batches",
            Command::Prune { .. } => "prune",
            Command::CreateToken { .. } => "create_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::AddPackageVersion { .. } => "add_package_version",
            Command::RollbackPackage { .. } => "rollback_package",
            Command::DeletePackageVersion { .. } => "delete_package_version",
            Command::CreateInvocation { .. } => "create_invocation",
            Command::AdvanceInvocation { .. } => "advance_invocation",
            Command::CancelInvocation { .. } => "cancel_invocation",
            Command::RequestOutput { .. } => "request_output",
            Command::PutNotifyRule { .. } => "put_notify_rule",
            Command::RemoveNotifyRule { .. } => "remove_notify_rule",
            Command::CloseFires { .. } => "close_fires",
            Command::FlushEvents { .. } => "flush_events",
            Command::AcknowledgeDirectives { .. } => "acknowledge_directives",
            Command::NotifyDelivered { .. } => "notify_delivered",
            Command::NotifyFailed { .. } => "notify_failed",
            Command::JudgeFires { .. } => "judge_fires",
            Command::SetSecret { .. } => "set_secret",
            Command::RemoveSecret { .. } => "remove_secret",
            Command::RekeySecrets { .. } => "rekey_secrets",
            Command::Pause { .. } => "pause",
            Command::Resume { .. } => "resume",
            Command::SetWindow { .. } => "set_window",
            Command::RemoveWindow { .. } => "remove_window",
            Command::SetNodeDrain { .. } => "set_node_drain",
            Command::StartRollout { .. } => "start_rollout",
            Command::AdvanceRollout { .. } => "advance_rollout",
            Command::HaltRollout { .. } => "halt_rollout",
            Command::RolloutAction { .. } => "rollout_action",
            Command::SetAgentRelease { .. } => "set_agent_release",
            Command::SetAgentPin { .. } => "set_agent_pin",
            Command::SetPackageRollout { .. } => "set_package_rollout",
        }
    }
}

/// One fire the leader closes, with the hosts it selected (empty when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FireToClose {
    pub fire: FireKey,
    #[serde(default)]
    pub selected: Vec<String>,
}

/// What an agent tells about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
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
    /// The agent's app-specific machine id; empty when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub machine_id: String,
    /// Set at the first registration after `op-agent reset-identity`: the node replaces a live
    /// node of the same hostname and machine id, which is retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<op_proto::agent::IdentityReset>,
    /// What the agent registered it can do ([`op_proto::agent::RegisterRequest::capabilities`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// The run directives one node's agent acknowledged having received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectiveAck {
    pub node_id: Uuid,
    pub run_ids: Vec<Uuid>,
}

/// The latest heartbeat of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeBeat {
    pub node_id: Uuid,
    pub seen_at: DateTime<Utc>,
    pub agent_version: String,
    #[serde(default)]
    pub load: Option<LoadInfo>,
    #[serde(default)]
    pub running: Vec<RunningRun>,
    #[serde(default)]
    pub packages: Vec<InstalledPackage>,
    #[serde(default)]
    pub stats: AgentStats,
    /// The agent's reported fault: the node is Degraded while it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// The agent's clock minus the manager's, in milliseconds (`NodeInfo::clock_skew_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub node_id: Uuid,
    pub status: NodeStatus,
    /// The change is skipped when the node's `last_seen` is later than this.
    pub unless_seen_after: DateTime<Utc>,
}

/// Ended rollouts kept by default, newest first.
pub const DEFAULT_ROLLOUTS_KEPT: u64 = 1000;
/// Ended rollouts are kept 90 days by default.
pub const DEFAULT_ROLLOUT_MAX_AGE_SECS: u64 = 90 * 86_400;

/// How much history to keep. Each limit of 0 disables that rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionLimits {
    /// Runs kept per (job, node), newest first.
    pub runs_per_job_node: u32,
    /// Runs older than this many seconds are deleted.
    pub run_max_age_secs: u64,
    /// Total bytes of stored run records; the oldest go first.
    pub run_max_bytes: u64,
    /// Audit entries older than this many seconds are deleted.
    pub audit_max_age_secs: u64,
    /// Most audit entries kept.
    pub audit_max_entries: u64,
    /// Left nodes, and once-job targets of old revisions, are deleted after this many seconds.
    pub history_max_age_secs: u64,
    /// Most ended rollouts (finished or superseded) kept, newest first. Absent in entries written
    /// before it existed: 0, so they replay as they applied.
    #[serde(default)]
    pub rollouts_kept: u64,
    /// Ended rollouts older than this many seconds (since their last change) are deleted.
    #[serde(default)]
    pub rollout_max_age_secs: u64,
}

impl Default for RetentionLimits {
    fn default() -> Self {
        RetentionLimits {
            runs_per_job_node: 100,
            run_max_age_secs: 7 * 86_400,
            run_max_bytes: 1 << 30,
            audit_max_age_secs: 90 * 86_400,
            audit_max_entries: 100_000,
            history_max_age_secs: 30 * 86_400,
            rollouts_kept: DEFAULT_ROLLOUTS_KEPT,
            rollout_max_age_secs: DEFAULT_ROLLOUT_MAX_AGE_SECS,
        }
    }
}

/// The run records one node sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRuns {
    pub node_id: Uuid,
    pub runs: Vec<RunRecord>,
}

/// A fan-out invocation to create. Everything that depends on the moment (the targets, their run
/// ids, the first release) is decided by the proposer and travels here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInvocation {
    pub id: Uuid,
    pub kind: InvocationKind,
    /// The job as it runs: a saved job's spec at `revision`, or the ad-hoc command's.
    pub spec: JobSpec,
    pub revision: u64,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub options: InvocationOptions,
    /// In batch order.
    pub targets: Vec<NewTarget>,
    /// Selected hosts that are unknown or not Ready: reported `unreachable` from the start.
    #[serde(default)]
    pub unreachable: Vec<MissingHost>,
    /// Run ids of the targets released at once.
    #[serde(default)]
    pub release: Vec<Uuid>,
    /// The invocation this one retries (its hosts that did not succeed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<Uuid>,
    /// The fire of a `RunOn` job this invocation runs (issue 23): its runs are `cron` runs of
    /// that fire (`planned_at`), and a host must start it within its acknowledgement window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire: Option<DateTime<Utc>>,
}

/// One host an invocation runs on, with the run id the manager picked for it (so a directive
/// received twice runs once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTarget {
    pub node_id: Uuid,
    pub hostname: String,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    pub run_id: Uuid,
    /// 0-based rolling batch.
    #[serde(default)]
    pub batch: u32,
}

/// A selected host that cannot run the invocation, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingHost {
    pub host: String,
    pub reason: String,
}

/// A token to create. The proposer generated the id and the secret; only the secret's SHA-256
/// (hex) travels in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub secret_sha256: String,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Set for a node's own agent credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<Uuid>,
    /// The token's policy (checked by the proposer), stored as JSON beside the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<op_proto::policy::TokenPolicy>,
}

/// A stored token, with the hash the manager verifies against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub info: TokenInfo,
    pub secret_sha256: String,
}

/// What `Prune` deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    pub runs_by_count: u64,
    pub runs_by_age: u64,
    pub runs_by_bytes: u64,
    pub audit: u64,
    pub once_targets: u64,
    pub nodes: u64,
    /// Finished invocations (with their targets).
    #[serde(default)]
    pub invocations: u64,
    /// Ended (finished or superseded) rollouts.
    #[serde(default)]
    pub rollouts: u64,
}

impl PruneReport {
    pub fn runs(&self) -> u64 {
        self.runs_by_count + self.runs_by_age + self.runs_by_bytes
    }
}

/// Why a command changed nothing. Deterministic, so every replica answers the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: RejectionCode,
    pub message: String,
}

/// The kind of a [`Rejection`], sent as its snake_case string (`"not_found"`, ...).
///
/// A code this build does not know decodes as [`RejectionCode::Unknown`], keeping the string, so
/// a member one release behind still decodes a newer member's answer during a rolling upgrade and
/// passes it on unchanged (DESIGN 13.7).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum RejectionCode {
    /// The command names something that does not exist.
    NotFound,
    /// The command contradicts the current state (a duplicate, a finished invocation).
    Conflict,
    /// The command is not allowed for its subject (e.g. a node's package state of another node).
    Forbidden,
    /// The command's content is invalid.
    Invalid,
    /// A code from a newer release.
    Unknown(String),
}

impl RejectionCode {
    pub fn as_str(&self) -> &str {
        match self {
            RejectionCode::NotFound => "not_found",
            RejectionCode::Conflict => "conflict",
            RejectionCode::Forbidden => "forbidden",
            RejectionCode::Invalid => "invalid",
            RejectionCode::Unknown(code) => code,
        }
    }
}

impl From<String> for RejectionCode {
    fn from(code: String) -> Self {
        match code.as_str() {
            "not_found" => RejectionCode::NotFound,
            "conflict" => RejectionCode::Conflict,
            "forbidden" => RejectionCode::Forbidden,
            "invalid" => RejectionCode::Invalid,
            _ => RejectionCode::Unknown(code),
        }
    }
}

impl From<RejectionCode> for String {
    fn from(code: RejectionCode) -> Self {
        match code {
            RejectionCode::Unknown(code) => code,
            known => known.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for RejectionCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets callers and tests compare a code with its wire string.
impl PartialEq<&str> for RejectionCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Rejection {
    fn new(code: RejectionCode, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Rejection {
        Rejection::new(RejectionCode::NotFound, message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Rejection {
        Rejection::new(RejectionCode::Conflict, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Rejection {
        Rejection::new(RejectionCode::Forbidden, message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Rejection {
        Rejection::new(RejectionCode::Invalid, message)
    }
}

#[cfg(test)]
mod rejection_tests {
    use super::*;

    #[test]
    fn known_codes_keep_their_wire_strings() {
        for (code, wire) in [
            (RejectionCode::NotFound, "not_found"),
            (RejectionCode::Conflict, "conflict"),
            (RejectionCode::Forbidden, "forbidden"),
            (RejectionCode::Invalid, "invalid"),
        ] {
            let r = Rejection::new(code.clone(), "m");
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!(r#"{{"code":"{wire}","message":"m"}}"#));
            let back: Rejection = serde_json::from_str(&json).unwrap();
            assert_eq!(back.code, code);
        }
    }

    /// An older member decodes a code a newer one sends, and writes it back unchanged.
    #[test]
    fn an_unknown_code_decodes_and_round_trips() {
        let json = r#"{"result":"rejected","rejection":{"code":"quota_exceeded","message":"too many jobs"}}"#;
        let decoded: CommandResult = serde_json::from_str(json).unwrap();
        let CommandResult::Rejected { rejection } = &decoded else {
            panic!("{decoded:?}");
        };
        assert_eq!(
            rejection.code,
            RejectionCode::Unknown("quota_exceeded".into())
        );
        assert_eq!(rejection.message, "too many jobs");
        assert_eq!(serde_json::to_string(&decoded).unwrap(), json);
    }
}

/// The answer of `apply` to one log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CommandResult {
    /// Entries without a command (blank, membership) and commands with nothing to report.
    Done,
    ClusterInitialized {
        cluster_id: String,
    },
    JobSaved {
        response: Box<SaveJobResponse>,
    },
    Job {
        job: Box<JobRecord>,
    },
    JobDeleted {
        name: String,
        revision: u64,
    },
    NodeRegistered {
        node: Box<NodeInfo>,
        created: bool,
        /// The once-job revisions this node started or finished, as the manager knows them
        /// (including those carried over from a node it replaced).
        #[serde(default)]
        once_history: Vec<op_proto::agent::OnceOutcome>,
        /// The nodes this registration retired (identity reset).
        #[serde(default)]
        replaced: Vec<Uuid>,
    },
    HeartbeatsRecorded {
        updated: usize,
        unknown: Vec<Uuid>,
    },
    StatusChanged {
        changes: Vec<(Uuid, NodeStatus)>,
    },
    /// The node with its labels as set.
    NodeLabelled {
        node: Box<NodeInfo>,
    },
    /// The node's facts were stored (`changed`: they differed from what was held).
    NodeFactsSet {
        node_id: Uuid,
        changed: bool,
    },
    NodeForgotten {
        node_id: Uuid,
    },
    RunsIngested {
        ack: RunBatchAck,
    },
    /// One acknowledgement per batch of an `IngestRunBatches`, in order.
    RunBatchesIngested {
        acks: Vec<RunBatchAck>,
        /// Older runs deleted to keep each (job, node) pair at the retention count.
        #[serde(default)]
        trimmed: u64,
    },
    Pruned {
        report: PruneReport,
    },
    Token {
        info: TokenInfo,
    },
    /// The package version that is now current (after an upload or a rollback).
    Package {
        version: Box<PackageVersion>,
    },
    PackageVersionDeleted {
        name: String,
        version: u64,
        sha256: String,
    },
    InvocationCreated {
        id: Uuid,
    },
    /// What an `AdvanceInvocation` or `CancelInvocation` changed.
    InvocationAdvanced {
        released: usize,
        expired: usize,
        cancelled: usize,
        finished: bool,
    },
    Rejected {
        rejection: Rejection,
    },
    /// The notification rule as saved.
    NotifyRule {
        rule: Box<NotifyRuleInfo>,
        created: bool,
    },
    /// The secret as stored (never its value).
    Secret {
        info: op_proto::secret::SecretInfo,
        created: bool,
    },
    /// The node with its drain as set (issue 23).
    NodeDrained {
        node: Box<NodeInfo>,
    },
    /// The rollout as it is after the command (issue 21).
    Rollout {
        rollout: Box<op_proto::rollout::RolloutInfo>,
    },
}
