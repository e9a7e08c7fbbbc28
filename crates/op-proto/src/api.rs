//! Request and response bodies shared by the manager's and the agent's HTTP APIs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::JobSpec;
use crate::run::RunStatus;

/// The API version of this build. A peer with another version gets a 400 naming both.
pub const API_VERSION: u32 = 1;
/// Header every client sends with its API version.
pub const API_VERSION_HEADER: &str = "x-op-api-version";
/// Header asking a manager to answer a read from its own applied state (`1`), which may lag the
/// leader, instead of the default linearizable read. The query flag `?stale` means the same.
pub const STALE_READ_HEADER: &str = "x-op-stale";

/// The error body of every `/v1` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable machine-readable code (`not_found`, `invalid_job`, `unauthorized`, ...).
    pub code: String,
    /// One line for a person: what was wrong and what to do.
    pub message: String,
    /// Further lines, for example every error of a task file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// The `code` of an [`ErrorBody`]: one vocabulary for the manager's and the agent's APIs, so a
/// client (or a script) reads the same word for the same refusal from either daemon. Routes may
/// add finer codes of their own (`invalid_job`, `malformed_json`, ...); these are the shared ones.
pub mod code {
    /// 400: the request itself is wrong.
    pub const BAD_REQUEST: &str = "bad_request";
    /// 401: no credential, or one that is not valid.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 403: a valid credential that may not do this.
    pub const FORBIDDEN: &str = "forbidden";
    /// 404.
    pub const NOT_FOUND: &str = "not_found";
    /// 405.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// 408: the request body stopped arriving.
    pub const BODY_TIMEOUT: &str = "body_timeout";
    /// 409: the state does not allow it now.
    pub const CONFLICT: &str = "conflict";
    /// 413.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// 429.
    pub const TOO_MANY_REQUESTS: &str = "too_many_requests";
    /// 429: too many failed authentications from this address; wait `Retry-After` seconds.
    pub const TOO_MANY_AUTH_FAILURES: &str = "too_many_auth_failures";
    /// 500.
    pub const INTERNAL: &str = "internal";
    /// 503.
    pub const UNAVAILABLE: &str = "unavailable";
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code: code.into(),
            message: message.into(),
            details: Vec::new(),
        }
    }
}

/// The seed's response envelope, kept for `POST /api/opAgent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedEnvelope {
    #[serde(rename = "Code")]
    pub code: String,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "Details")]
    pub details: serde_json::Value,
}

impl SeedEnvelope {
    pub fn ok(message: impl Into<String>, details: serde_json::Value) -> SeedEnvelope {
        SeedEnvelope {
            code: "OK".into(),
            message: message.into(),
            details,
        }
    }

    pub fn error(message: impl Into<String>) -> SeedEnvelope {
        SeedEnvelope {
            code: "ERROR".into(),
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }
}

/// A job as the manager stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub spec: JobSpec,
    /// Bumped on every save, enable and disable.
    pub revision: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Token name of the last writer.
    #[serde(default)]
    pub updated_by: String,
}

/// A job with what the manager computes for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    #[serde(flatten)]
    pub record: JobRecord,
    /// The next fire times (empty for once and API jobs).
    #[serde(default)]
    pub next_fires: Vec<DateTime<Utc>>,
    /// The latest judged fires of a cron job, newest first (issue 20): how many hosts ran,
    /// missed, started late or skipped each, and the hosts with a problem. Absent until the
    /// leader judged a fire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_fires: Vec<crate::judged::JudgedFire>,
}

/// Hosts a once-job revision was assigned to at save time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnceSelection {
    /// `hostname` of every selected node.
    pub selected: Vec<TargetHost>,
    /// Listed hosts (hostnames or IPs) that match no known node.
    pub unknown: Vec<String>,
    /// Listed hosts that are known but not Ready (they were not selected).
    pub not_ready: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHost {
    pub node_id: Uuid,
    pub hostname: String,
    pub ips: String,
}

/// The answer to a job save.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveJobResponse {
    pub name: String,
    pub revision: u64,
    pub created: bool,
    pub next_fires: Vec<DateTime<Utc>>,
    #[serde(default)]
    pub once: Option<OnceSelection>,
}

/// State of one once-job target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// A host that joined after the save (`NewHosts`), not yet let start: `NewHostsAtOnce`
    /// late hosts are still pending or running.
    Waiting,
    Pending,
    Running,
    Done,
    Failed,
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Waiting => "waiting",
            TargetState::Pending => "pending",
            TargetState::Running => "running",
            TargetState::Done => "done",
            TargetState::Failed => "failed",
        }
    }
}

/// One row of `GET /v1/jobs/NAME/once`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnceTarget {
    pub job: String,
    pub revision: u64,
    pub node_id: Uuid,
    pub hostname: String,
    pub state: TargetState,
    #[serde(default)]
    pub run_id: Option<Uuid>,
    pub updated_at: DateTime<Utc>,
    /// The host joined after the save (`NewHosts`); false for the hosts selected at the save.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

/// Query of `GET /v1/runs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// A hostname, an IP or a node id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    /// Runs that started at or after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// The latest N runs per node (the seed's `logs JOB HOST LIMIT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_node: Option<u32>,
    /// Cap on the total number of rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<Uuid>,
    /// Only runs whose revision is this one (once-job versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// Token scopes live with the policies that narrow them.
pub use crate::policy::Scope;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub name: String,
    pub scope: Scope,
    /// Seconds until the token expires; none = never.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// A token creation with a policy (`agentcli token create --job/--host/--verbs`). The manager
/// reads every token creation in this form; a [`CreateTokenRequest`] is the same body without
/// `policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicyTokenRequest {
    pub name: String,
    pub scope: Scope,
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::TokenPolicy>,
}

impl From<CreateTokenRequest> for CreatePolicyTokenRequest {
    fn from(r: CreateTokenRequest) -> Self {
        CreatePolicyTokenRequest {
            name: r.name,
            scope: r.scope,
            expires_in_secs: r.expires_in_secs,
            policy: None,
        }
    }
}

/// A token as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked: bool,
    /// The node an agent credential belongs to (issued at enrollment); `None` for every other
    /// token, including the shared agent enrollment token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<uuid::Uuid>,
    /// What the token may do beside its scope (never more than the scope); `None` = all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::TokenPolicy>,
}

impl TokenInfo {
    /// `revoked`, `expired` (at `now`; an expiry at `now` has passed, as the manager checks it)
    /// or `active`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// The answer to a token creation: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub info: TokenInfo,
    pub secret: String,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: u64,
    pub at: DateTime<Utc>,
    /// The token name that made the change.
    pub actor: String,
    /// What was done (`job.save`, `job.delete`, `token.create`, ...).
    pub action: String,
    /// What it was done to (a job name, a token name, ...).
    pub target: String,
    #[serde(default)]
    pub detail: String,
}

/// A cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    pub id: u64,
    pub api_addr: String,
    pub raft_addr: String,
    pub voter: bool,
    #[serde(default)]
    pub matched_index: Option<u64>,
    /// Entries the leader has that this member has not acknowledged yet (only on the leader's
    /// answer; None elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster_id: String,
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub state: String,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// The highest log index this member knows to be committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_index: Option<u64>,
    pub members: Vec<ClusterMember>,
}

/// `POST /v1/cluster/members` (admin): add a running manager that holds this cluster's identity
/// (normally a node started with `op-manager --join` does this itself). It joins as a learner,
/// catches up, and becomes a voter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub node_id: u64,
    /// The member's API URL (agents and the CLI).
    pub api_addr: String,
    /// The member's raft URL (peers only).
    pub raft_addr: String,
}

/// `POST /v1/cluster/leader` (admin): hand leadership to another voter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferLeaderRequest {
    /// The voter to become leader; None = the most up-to-date other voter.
    #[serde(default)]
    pub to: Option<u64>,
}

/// `GET /v1/version` on the manager and the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub api_version: u32,
    pub component: String,
}

/// Parameters of an invocation, as a JSON object of strings.
pub type Params = BTreeMap<String, String>;

/// The body of `POST /v1/nodes/KEY/labels` (`agentcli label NODE k=v k-`): manager-set labels to
/// set and to remove. They are kept apart from the agent's own labels, survive its
/// registrations, and win over an agent label of the same key. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRequest {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Keys of manager-set labels to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}
