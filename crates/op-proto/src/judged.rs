//! Judged fires (issue 20): what the leader's judgement of a job fire ([`crate::expect`]) commits,
//! and what `agentcli analysis jobs` and the console read back.
//!
//! A [`JudgedFire`] is the verdict of one job fire on every host it selected, kept small for a
//! large fleet: counts per outcome for every host, and names only for the hosts with a problem
//! (missed, late, skipped, overrunning, failed), at most [`MAX_JUDGED_HOSTS`] of them. The
//! counts are the truth; the names are what an event lists. [`OverrunningRun`] is a run alive
//! longer than its job's `MaxDuration`, reported while it runs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::analysis::thousands;
use crate::expect::{FireSummary, HostVerdict, Outcome, OutcomeKind};

/// Most problem hosts one judged fire names (its counts cover every host).
pub const MAX_JUDGED_HOSTS: usize = 1_000;

/// Judged fires kept per job, newest first.
pub const KEPT_FIRES: usize = 5;

/// One host with a problem in a judged fire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgedHost {
    pub host: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `missed`, `late`, `skipped`, `overrunning` or `failed` ([`OutcomeKind::as_str`]).
    pub outcome: String,
    /// Why a fire was missed (`NotReady`, `no run`, the agent's reason); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// One job fire, judged on every host the job selected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgedFire {
    pub job: String,
    pub fire: DateTime<Utc>,
    /// The fire's time as the job's zone shows it (`03:00`, or `03:00:07` off the minute).
    pub fire_label: String,
    /// Hosts expected to run it (selected and not excluded).
    pub expected: u64,
    /// Hosts per outcome, by [`OutcomeKind::as_str`]; outcomes without a host are absent.
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    /// Missed hosts per reason.
    #[serde(default)]
    pub missed_by_reason: BTreeMap<String, u64>,
    /// The hosts with a problem, sorted by name, at most [`MAX_JUDGED_HOSTS`].
    #[serde(default)]
    pub hosts: Vec<JudgedHost>,
    /// The sentences `analysis jobs` prints ([`FireSummary::sentences`]); empty when all went well.
    #[serde(default)]
    pub sentences: Vec<String>,
}

/// Outcomes a judged fire names its hosts for.
const PROBLEMS: &[OutcomeKind] = &[
    OutcomeKind::Missed,
    OutcomeKind::Late,
    OutcomeKind::Skipped,
    OutcomeKind::Overrunning,
    OutcomeKind::Failed,
];

impl JudgedFire {
    /// The judged fire of `verdicts` (as `expect::judge_fire` returned them, none `Pending`).
    /// `host` gives a node's name and labels; `sentences` are [`FireSummary::sentences`] in the
    /// job's zone, `fire_label` the fire's time in it.
    pub fn new(
        summary: &FireSummary,
        fire_label: String,
        sentences: Vec<String>,
        verdicts: &[HostVerdict],
        host: impl Fn(Uuid) -> (String, BTreeMap<String, String>),
    ) -> JudgedFire {
        let mut hosts: Vec<JudgedHost> = verdicts
            .iter()
            .filter(|v| PROBLEMS.contains(&v.outcome.kind()))
            .map(|v| {
                let (name, labels) = host(v.node_id);
                JudgedHost {
                    host: name,
                    labels,
                    outcome: v.outcome.kind().as_str().to_string(),
                    reason: match &v.outcome {
                        Outcome::Missed { reason } => reason.to_string(),
                        _ => String::new(),
                    },
                }
            })
            .collect();
        hosts.sort_by(|a, b| a.host.cmp(&b.host));
        hosts.truncate(MAX_JUDGED_HOSTS);
        JudgedFire {
            job: summary.job.clone(),
            fire: summary.fire,
            fire_label,
            expected: summary.expected() as u64,
            counts: summary
                .counts
                .iter()
                .map(|(k, n)| (k.as_str().to_string(), *n as u64))
                .collect(),
            missed_by_reason: summary
                .missed_by_reason
                .iter()
                .map(|(r, n)| (r.to_string(), *n as u64))
                .collect(),
            hosts,
            sentences,
        }
    }

    /// Hosts with outcome `kind` (all of them, not only those named).
    pub fn count(&self, kind: OutcomeKind) -> u64 {
        self.counts.get(kind.as_str()).copied().unwrap_or(0)
    }

    /// The named hosts with outcome `kind`.
    pub fn hosts_of(&self, kind: OutcomeKind) -> impl Iterator<Item = &JudgedHost> {
        self.hosts
            .iter()
            .filter(move |h| h.outcome == kind.as_str())
    }

    /// `9 NotReady, 3 no run`.
    pub fn reasons(&self) -> String {
        self.missed_by_reason
            .iter()
            .map(|(r, n)| format!("{} {r}", thousands(*n as usize)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A run alive longer than its job's `MaxDuration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrunningRun {
    pub run_id: Uuid,
    pub job: String,
    pub host: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub started_at: DateTime<Utc>,
    /// The job's `MaxDuration`, seconds.
    pub max_duration_secs: u64,
}

/// A node whose clock differs from the managers' by more than the leader's threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkewedHost {
    pub host: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The agent's clock minus the manager's, milliseconds (`NodeInfo::clock_skew_ms`).
    pub skew_ms: i64,
}
