//! Fan-out invocations through the manager (DESIGN.md sections 5.4 and 6): run a saved job, or an
//! ad-hoc command, on many hosts now and see every host's answer as it arrives.
//!
//! - `POST /v1/jobs/NAME/run` and `POST /v1/exec` take an [`InvokeRequest`]: a host selection,
//!   parameters (jobs) or a command (exec), and the rollout options (batches, concurrency,
//!   stop-on-failure, per-host deadline).
//! - With `wait` the answer is an NDJSON stream of [`InvocationEvent`]s, one JSON object per line:
//!   `accepted` first, then one `result` per host as it finishes (hosts that are unknown or not
//!   Ready come at once, as `unreachable`), `progress` lines while nothing else happens for a
//!   while, and a final `summary`. Without `wait` the answer is [`InvocationAccepted`] (HTTP 202).
//! - `GET /v1/invocations/ID` gives an [`InvocationView`]: progress and every host's result.
//!
//! The types here are the wire contract only; selecting hosts, batching and the deadline rules are
//! the manager's (`op-manager`'s `fanout` module), executing a directive is the agent's.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::hosts::{HostIdentity, HostPattern, HostSelector};
use crate::run::{RunRecord, RunStatus};

/// The job name every ad-hoc command (`POST /v1/exec`) runs under. One shared name keeps the
/// history of ad-hoc runs bounded by the same per-job retention as every other job, on the
/// manager and on the agents; the invocation id tells the runs apart. Saving a job under this name
/// is refused.
pub const ADHOC_JOB: &str = "adhoc";

/// Content type of a waiting invocation's answer.
pub const NDJSON: &str = "application/x-ndjson";

/// Seconds a host gets, after its directive is released, to deliver its result when the request
/// names no `deadline`; a job's `Timeout` is added to it.
pub const DEFAULT_DEADLINE_SECS: u64 = 60;
/// Longest accepted `deadline` and `batch_wait`: one day.
pub const MAX_WAIT_SECS: u64 = 86_400;

/// A rolling batch size: a number of hosts, or a percentage of the targeted hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Count(u32),
    Percent(u32),
}

impl BatchSize {
    /// Parses `10` or `10%`.
    pub fn parse(text: &str) -> Result<BatchSize, String> {
        let t = text.trim();
        let bad = || format!("batch {text:?} is not a host count (10) or a percentage (10%)");
        let size = match t.strip_suffix('%') {
            Some(p) => {
                let p: u32 = p.trim().parse().map_err(|_| bad())?;
                if !(1..=100).contains(&p) {
                    return Err(format!("batch {text:?}: a percentage must be 1%..100%"));
                }
                BatchSize::Percent(p)
            }
            None => BatchSize::Count(t.parse().map_err(|_| bad())?),
        };
        if size == BatchSize::Count(0) {
            return Err("batch must be at least 1 host".into());
        }
        Ok(size)
    }

    /// Hosts per batch for `total` targets: at least 1, a percentage rounded up.
    pub fn hosts(self, total: usize) -> usize {
        let n = match self {
            BatchSize::Count(n) => n as usize,
            BatchSize::Percent(p) => (total * p as usize).div_ceil(100),
        };
        n.max(1)
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Count(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// On the wire a batch size is a number (`2`) or a string (`"2"`, `"10%"`).
impl Serialize for BatchSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BatchSize::Count(n) => s.serialize_u32(*n),
            BatchSize::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for BatchSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Num(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        BatchSize::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The body of `POST /v1/jobs/NAME/run` and `POST /v1/exec`. Every field is optional except the
/// exec's `command`; unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeRequest {
    /// Hosts by exact hostname or IP. A listed host that is unknown or not Ready is reported
    /// `unreachable` at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Host patterns (hostname, IP, CIDR, glob) a host may match instead of `hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub white: Vec<HostPattern>,
    /// Host patterns that exclude a host whatever else matches it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub black: Vec<HostPattern>,
    /// Labels a host must all carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Every host (narrowed by `black` and `labels`). A job run without any selection uses the
    /// job's own; an exec must select explicitly.
    #[serde(default, skip_serializing_if = "is_false")]
    pub all: bool,
    /// Job parameters (`/v1/jobs/NAME/run` only), checked against the job before anything runs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// The command of an exec (`/v1/exec` only), run as `bash -c COMMAND`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The exec's Timeout in seconds: the process tree is killed after it (exec only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// The user the exec runs as (exec only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    /// Stream the results (true) or return the invocation id at once (false). Absent: the job's
    /// SynFlag decides for a job run; an exec waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// Most hosts running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Rolling batches: hosts per batch; a batch starts when the previous one has finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSize>,
    /// Seconds between the end of a batch and the start of the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_wait: Option<u64>,
    /// Stop starting hosts once this many have failed (hosts already running finish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<u32>,
    /// Seconds each host has, from its start, to deliver its result; then it is `unreachable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl InvokeRequest {
    /// True when the request selects hosts at all.
    pub fn has_selection(&self) -> bool {
        self.all || !self.hosts.is_empty() || !self.white.is_empty() || !self.labels.is_empty()
    }
}

/// A request's host selection, parsed: `hosts` entries must each name one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Specific entries (hostname or IP), reported when they match no Ready node.
    pub named: Vec<HostPattern>,
    /// Pattern entries; with `named` they form the white list (empty + `all` = every host).
    pub white: Vec<HostPattern>,
    pub black: Vec<HostPattern>,
    pub labels: BTreeMap<String, String>,
}

impl Selection {
    /// Parses the selection fields of a request. An entry of `hosts` must be a hostname or an IP
    /// (patterns belong in `white`).
    pub fn from_request(req: &InvokeRequest) -> Result<Selection, String> {
        let mut named = Vec::with_capacity(req.hosts.len());
        for h in &req.hosts {
            let p = HostPattern::parse(h).map_err(|e| e.to_string())?;
            if !p.is_specific() {
                return Err(format!(
                    "hosts entry {h:?} is a pattern; put globs and CIDRs in `white`"
                ));
            }
            named.push(p);
        }
        // `white` and `black` were read through serde, which accepts stored data as it was
        // written; a request is input, so its entries meet every rule of `HostPattern::parse`.
        for p in req.white.iter().chain(&req.black) {
            HostPattern::parse(p.as_str()).map_err(|e| e.to_string())?;
        }
        Ok(Selection {
            named,
            white: req.white.clone(),
            black: req.black.clone(),
            labels: req.labels.clone(),
        })
    }

    pub fn matches(&self, host: &HostIdentity) -> bool {
        let white: Vec<HostPattern> = self.named.iter().chain(&self.white).cloned().collect();
        HostSelector {
            white,
            black: self.black.clone(),
            labels: self.labels.clone(),
        }
        .matches(host)
    }
}

/// Whether an invocation runs a saved job or an ad-hoc command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvocationKind {
    Job,
    Exec,
}

impl InvocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationKind::Job => "job",
            InvocationKind::Exec => "exec",
        }
    }
}

/// The rollout options of an invocation, resolved when it is created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationOptions {
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// The batch size as requested.
    #[serde(default)]
    pub batch: Option<BatchSize>,
    /// Hosts per batch, resolved against the targeted hosts (none = one batch).
    #[serde(default)]
    pub batch_hosts: Option<u32>,
    #[serde(default)]
    pub batch_wait_secs: u64,
    #[serde(default)]
    pub max_failures: Option<u32>,
    pub deadline_secs: u64,
    /// Seconds a released host's agent has to acknowledge its directive; one that does not is
    /// `unresponsive` and the invocation stops waiting for it. `None` (invocations made before
    /// acknowledgements existed): every host has the whole deadline. Agents that do not
    /// acknowledge directives (older releases) always have the whole deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_secs: Option<u64>,
}

/// Where one host of an invocation stands, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Waiting for its batch or a concurrency slot.
    Pending,
    /// Its directive is out; no result yet.
    Running,
    Ok,
    Failed,
    Timeout,
    Killed,
    Skipped,
    Lost,
    /// Not connected, not Ready, unknown, or no result within the deadline.
    Unreachable,
    /// Never started: the invocation was cancelled or stopped on failures first.
    Cancelled,
    /// Connected, but its agent did not acknowledge the directive within the invocation's
    /// `ack_secs` (stopped, hung, or its connection is dead while the socket looks open).
    Unresponsive,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Pending => "pending",
            HostStatus::Running => "running",
            HostStatus::Ok => "ok",
            HostStatus::Failed => "failed",
            HostStatus::Timeout => "timeout",
            HostStatus::Killed => "killed",
            HostStatus::Skipped => "skipped",
            HostStatus::Lost => "lost",
            HostStatus::Unreachable => "unreachable",
            HostStatus::Cancelled => "cancelled",
            HostStatus::Unresponsive => "unresponsive",
        }
    }

    pub fn parse(s: &str) -> Option<HostStatus> {
        Some(match s {
            "pending" => HostStatus::Pending,
            "running" => HostStatus::Running,
            "ok" => HostStatus::Ok,
            "failed" => HostStatus::Failed,
            "timeout" => HostStatus::Timeout,
            "killed" => HostStatus::Killed,
            "skipped" => HostStatus::Skipped,
            "lost" => HostStatus::Lost,
            "unreachable" => HostStatus::Unreachable,
            "cancelled" => HostStatus::Cancelled,
            "unresponsive" => HostStatus::Unresponsive,
            _ => return None,
        })
    }

    /// The host status a final run status gives.
    pub fn of_run(status: RunStatus) -> HostStatus {
        match status {
            RunStatus::Running => HostStatus::Running,
            RunStatus::Ok => HostStatus::Ok,
            RunStatus::Failed => HostStatus::Failed,
            RunStatus::Timeout => HostStatus::Timeout,
            RunStatus::Killed => HostStatus::Killed,
            RunStatus::Skipped => HostStatus::Skipped,
            RunStatus::Lost => HostStatus::Lost,
            // Only cron fires are missed; an invocation's host never reports it. Were one to,
            // it never started, like a skip.
            RunStatus::Missed => HostStatus::Skipped,
        }
    }

    /// True once the host will not change any more.
    pub fn is_final(self) -> bool {
        !matches!(self, HostStatus::Pending | HostStatus::Running)
    }

    /// True for a final status that counts against `max_failures`: everything but ok and
    /// cancelled (a host that did not do what was asked failed the rollout).
    pub fn is_failure(self) -> bool {
        self.is_final() && !matches!(self, HostStatus::Ok | HostStatus::Cancelled)
    }
}

/// One host's result (or progress) within an invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostResult {
    /// The hostname, or the entry as listed when it matched no node.
    pub host: String,
    #[serde(default)]
    pub node_id: Option<Uuid>,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub run_id: Option<Uuid>,
    /// 0-based rolling batch.
    #[serde(default)]
    pub batch: u32,
    pub status: HostStatus,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    /// Why the host did not succeed, in one line.
    #[serde(default)]
    pub error: Option<String>,
    /// The output tail of the run.
    #[serde(default)]
    pub output: String,
    #[serde(default)]
    pub output_truncated: bool,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// A result that arrived after the host was already reported `unreachable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late: Option<Box<RunRecord>>,
}

impl HostResult {
    /// Milliseconds from start to end, when both are known.
    pub fn duration_ms(&self) -> Option<i64> {
        Some((self.ended_at? - self.started_at?).num_milliseconds())
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Counts of host statuses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub invocation_id: Uuid,
    pub job: String,
    pub total: u32,
    pub ok: u32,
    pub failed: u32,
    pub timeout: u32,
    pub killed: u32,
    pub skipped: u32,
    pub lost: u32,
    pub unreachable: u32,
    pub cancelled: u32,
    /// Hosts whose agent did not acknowledge the directive in time.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unresponsive: u32,
    /// Hosts not finished yet (only in a view of a running invocation).
    #[serde(default)]
    pub pending: u32,
    #[serde(default)]
    pub running: u32,
    /// Milliseconds from the request to the last result.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Why hosts were left out: stopped after failures, or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl Summary {
    /// Counts `statuses` into a summary.
    pub fn count(
        invocation_id: Uuid,
        job: &str,
        statuses: impl IntoIterator<Item = HostStatus>,
    ) -> Summary {
        let mut s = Summary {
            invocation_id,
            job: job.to_string(),
            ..Summary::default()
        };
        for st in statuses {
            s.total += 1;
            *match st {
                HostStatus::Pending => &mut s.pending,
                HostStatus::Running => &mut s.running,
                HostStatus::Ok => &mut s.ok,
                HostStatus::Failed => &mut s.failed,
                HostStatus::Timeout => &mut s.timeout,
                HostStatus::Killed => &mut s.killed,
                HostStatus::Skipped => &mut s.skipped,
                HostStatus::Lost => &mut s.lost,
                HostStatus::Unreachable => &mut s.unreachable,
                HostStatus::Cancelled => &mut s.cancelled,
                HostStatus::Unresponsive => &mut s.unresponsive,
            } += 1;
        }
        s
    }

    /// True when every host succeeded.
    pub fn all_ok(&self) -> bool {
        self.ok == self.total
    }

    /// Hosts that did not succeed and are finished.
    pub fn not_ok(&self) -> u32 {
        self.total - self.ok - self.pending - self.running
    }
}

/// The answer to an invocation that does not wait (HTTP 202), and the first event of one that does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationAccepted {
    pub invocation_id: Uuid,
    pub job: String,
    pub kind: InvocationKind,
    /// Hosts that will run it (their hostnames), in batch order.
    pub hosts: Vec<String>,
    /// Listed or matched hosts that are unknown or not Ready, reported `unreachable` at once.
    pub unreachable: Vec<String>,
    pub batches: u32,
    /// Where to read progress and results.
    pub url: String,
    /// Selected hosts the caller's token policy may not target: not run there (docs/security.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// Sent while a waiting invocation has had nothing else to say for a while, so the caller sees
/// it is alive (and proxies do not cut an idle connection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub invocation_id: Uuid,
    pub done: u32,
    pub running: u32,
    pub pending: u32,
    /// Hostnames of the hosts still awaited (running first), at most [`Progress::AWAITING_MAX`];
    /// `running + pending` says how many there are in all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awaiting: Vec<String>,
}

impl Progress {
    /// How many awaited hosts a progress event names: enough to spot a stuck one, small enough
    /// for a fleet-wide exec.
    pub const AWAITING_MAX: usize = 20;
}

/// One line of a waiting invocation's NDJSON answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum InvocationEvent {
    Accepted(InvocationAccepted),
    Result(Box<HostResult>),
    Progress(Progress),
    Summary(Summary),
}

/// An invocation's state as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvocationState {
    Running,
    Finished,
}

/// `GET /v1/invocations/ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationView {
    pub invocation_id: Uuid,
    pub job: String,
    pub kind: InvocationKind,
    pub revision: u64,
    /// The command as written (before parameter substitution).
    pub command: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub options: InvocationOptions,
    pub state: InvocationState,
    pub created_at: DateTime<Utc>,
    /// Token name of the caller.
    pub created_by: String,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    pub hosts: Vec<HostResult>,
    pub summary: Summary,
    /// The invocation this one retries (`POST /v1/invocations/ID/retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<Uuid>,
}

/// The body of `POST /v1/invocations/ID/retry`: run a finished invocation again, with the same
/// job (same revision) or command and the same parameters and rollout options, on just the hosts
/// that ended with one of `statuses`. The answer is that of a run or exec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Final statuses whose hosts run again (not `ok`, `pending` or `running`). Empty: every
    /// host that did not succeed ([`HostStatus::is_failure`]: failed, timeout, killed, skipped,
    /// lost, unreachable, unresponsive); cancelled hosts only when asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<HostStatus>,
    /// Stream the results (default) or return the new invocation id at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
}

impl RetryRequest {
    /// Whether a host that ended with `status` runs again.
    pub fn selects(&self, status: HostStatus) -> bool {
        if self.statuses.is_empty() {
            status.is_failure()
        } else {
            self.statuses.contains(&status)
        }
    }
}

/// One row of `GET /v1/invocations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationBrief {
    pub invocation_id: Uuid,
    pub job: String,
    pub kind: InvocationKind,
    pub state: InvocationState,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    pub summary: Summary,
}

/// Query of `GET /v1/invocations`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Newest first; default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes() {
        assert_eq!(BatchSize::parse("2").unwrap(), BatchSize::Count(2));
        assert_eq!(BatchSize::parse(" 10% ").unwrap(), BatchSize::Percent(10));
        for bad in ["0", "0%", "101%", "x", "-1", "2.5", "%"] {
            assert!(BatchSize::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(BatchSize::Count(2).hosts(5), 2);
        assert_eq!(BatchSize::Percent(10).hosts(5), 1);
        assert_eq!(BatchSize::Percent(10).hosts(25), 3);
        assert_eq!(BatchSize::Percent(100).hosts(7), 7);
        assert_eq!(BatchSize::Count(9).hosts(0), 9);
    }

    #[test]
    fn batch_size_wire_forms() {
        let r: InvokeRequest = serde_json::from_str(r#"{"batch": 2}"#).unwrap();
        assert_eq!(r.batch, Some(BatchSize::Count(2)));
        let r: InvokeRequest = serde_json::from_str(r#"{"batch": "25%"}"#).unwrap();
        assert_eq!(r.batch, Some(BatchSize::Percent(25)));
        assert_eq!(serde_json::to_value(BatchSize::Percent(25)).unwrap(), "25%");
        assert_eq!(serde_json::to_value(BatchSize::Count(3)).unwrap(), 3);
        assert!(serde_json::from_str::<InvokeRequest>(r#"{"batch": "0"}"#).is_err());
        assert!(serde_json::from_str::<InvokeRequest>(r#"{"bacth": 1}"#).is_err());
    }

    #[test]
    fn hosts_entries_must_be_specific() {
        let req = InvokeRequest {
            hosts: vec!["web-1".into(), "10.0.0.1".into()],
            ..InvokeRequest::default()
        };
        let sel = Selection::from_request(&req).unwrap();
        assert_eq!(sel.named.len(), 2);
        let glob = InvokeRequest {
            hosts: vec!["web-*".into()],
            ..InvokeRequest::default()
        };
        assert!(
            Selection::from_request(&glob)
                .unwrap_err()
                .contains("white")
        );
    }

    #[test]
    fn selection_is_a_union_narrowed_by_black_and_labels() {
        let host = |name: &str, ip: &str| HostIdentity {
            hostname: name.into(),
            ips: vec![ip.parse().unwrap()],
            labels: BTreeMap::new(),
            facts: None,
        };
        let req = InvokeRequest {
            hosts: vec!["a".into()],
            white: vec![HostPattern::parse("10.0.1.0/24").unwrap()],
            black: vec![HostPattern::parse("c").unwrap()],
            ..InvokeRequest::default()
        };
        let sel = Selection::from_request(&req).unwrap();
        assert!(sel.matches(&host("a", "10.0.0.1")));
        assert!(sel.matches(&host("b", "10.0.1.7")));
        assert!(!sel.matches(&host("c", "10.0.1.8")));
        assert!(!sel.matches(&host("d", "10.0.2.1")));
        // `all` alone: an empty white list.
        let all = Selection::from_request(&InvokeRequest {
            all: true,
            ..InvokeRequest::default()
        })
        .unwrap();
        assert!(all.matches(&host("z", "1.2.3.4")));
    }

    #[test]
    fn summary_counts() {
        let s = Summary::count(
            Uuid::nil(),
            "j",
            [
                HostStatus::Ok,
                HostStatus::Ok,
                HostStatus::Failed,
                HostStatus::Unreachable,
                HostStatus::Running,
            ],
        );
        assert_eq!(
            (s.total, s.ok, s.failed, s.unreachable, s.running),
            (5, 2, 1, 1, 1)
        );
        assert_eq!(s.not_ok(), 2);
        assert!(!s.all_ok());
        assert!(HostStatus::Unreachable.is_failure());
        assert!(!HostStatus::Cancelled.is_failure());
        assert!(!HostStatus::Running.is_failure());
    }

    #[test]
    fn events_are_tagged_lines() {
        let e = InvocationEvent::Progress(Progress {
            invocation_id: Uuid::nil(),
            done: 1,
            running: 2,
            pending: 3,
            awaiting: vec!["web-01".into()],
        });
        let line = serde_json::to_string(&e).unwrap();
        assert!(line.starts_with(r#"{"event":"progress""#), "{line}");
        assert_eq!(serde_json::from_str::<InvocationEvent>(&line).unwrap(), e);
    }
}
