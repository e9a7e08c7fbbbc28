//! Node records: what the manager knows about each agent.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::hosts::HostIdentity;
use crate::package::InstalledPackage;
use crate::run::Trigger;

/// Liveness as the manager sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Seen within `node_timeout`.
    Ready,
    /// Seen within `node_timeout`, but its agent reports a fault that keeps it from its work (a
    /// full state disk, a stalled scheduler or executor); [`NodeInfo::degraded`] says which. Data
    /// stored before this status existed never holds it, so it decodes unchanged.
    Degraded,
    /// Not seen for longer than `node_timeout`.
    NotReady,
    /// Forgotten by an operator or after `forget_after`; kept only for history.
    Left,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "Ready",
            NodeStatus::Degraded => "Degraded",
            NodeStatus::NotReady => "NotReady",
            NodeStatus::Left => "Left",
        }
    }

    /// Heard from within `node_timeout` (Ready or Degraded): it takes jobs, runs and directives.
    pub fn is_live(self) -> bool {
        matches!(self, NodeStatus::Ready | NodeStatus::Degraded)
    }

    /// The status an agent's heartbeat implies: Degraded when it reports a fault.
    pub fn of_beat(degraded: Option<&str>) -> NodeStatus {
        if degraded.is_some() {
            NodeStatus::Degraded
        } else {
            NodeStatus::Ready
        }
    }
}

/// Host load, read by the agent from /proc.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadInfo {
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub cpus: u32,
    pub mem_total_kb: u64,
    pub mem_available_kb: u64,
}

/// A run in progress on a node, reported with every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningRun {
    pub run_id: Uuid,
    pub job: String,
    pub trigger: Trigger,
    pub started_at: DateTime<Utc>,
}

/// Counters an agent reports so that nothing it drops or skips is silent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStats {
    /// Finished runs waiting in the outbox.
    pub outbox_depth: u64,
    /// Finished runs dropped because the outbox hit its byte budget.
    pub dropped_runs: u64,
    /// Cron fires missed while the agent was down or busy.
    pub lost_fires: u64,
    /// Fires skipped because the previous run was still alive.
    pub skipped_fires: u64,
    /// Fires refused because the agent could not record the run first (its state disk full).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused_fires: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Everything the manager stores about one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: Uuid,
    pub hostname: String,
    pub ips: Vec<IpAddr>,
    /// The agent's own labels, as its config gives them (replaced at every registration).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Labels set on the manager (`agentcli label NODE k=v`), kept across registrations; merged
    /// over `labels` (the manager's value wins) wherever hosts are selected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub manager_labels: BTreeMap<String, String>,
    pub agent_version: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub arch: String,
    /// The app-specific machine id the agent registered with (see
    /// [`crate::agent::RegisterRequest::machine_id`]); empty when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub machine_id: String,
    pub status: NodeStatus,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    #[serde(default)]
    pub load: Option<LoadInfo>,
    #[serde(default)]
    pub running: Vec<RunningRun>,
    #[serde(default)]
    pub packages: Vec<InstalledPackage>,
    #[serde(default)]
    pub stats: AgentStats,
    /// Why the node is Degraded, as its agent last reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// The agent's clock minus the manager's, in milliseconds, as of its last beat (the network
    /// delay makes it a little small); `None` until an agent that reports its clock syncs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_ms: Option<i64>,
    /// What the node's agent registered it can do (see
    /// [`crate::agent::RegisterRequest::capabilities`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Set by `agentcli drain`: no new runs start on the node until `undrain` (issue 23).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<crate::holds::Drain>,
    /// What the node's agent probed about its machine ([`crate::facts::Facts`]), as last
    /// reported; `None` until an agent that reports facts synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<crate::facts::Facts>,
}

impl NodeInfo {
    /// The status as `get nodes` and the console show it: `Draining` for a Ready node that is
    /// drained, else the status itself.
    pub fn status_text(&self) -> &'static str {
        if self.drain.is_some() && self.status == NodeStatus::Ready {
            "Draining"
        } else {
            self.status.as_str()
        }
    }

    pub fn identity(&self) -> HostIdentity {
        HostIdentity {
            hostname: self.hostname.clone(),
            ips: self.ips.clone(),
            labels: self.all_labels(),
            facts: self.facts.clone(),
        }
    }

    /// The short FACTS view (`ubuntu 22.04, 2 cpus, 7.7 GiB`); empty when none were reported.
    pub fn facts_text(&self) -> String {
        self.facts.as_ref().map(|f| f.summary()).unwrap_or_default()
    }

    /// The agent's labels with the manager's merged over them (the manager's value wins): the
    /// labels every host selection sees.
    pub fn all_labels(&self) -> BTreeMap<String, String> {
        let mut all = self.labels.clone();
        all.extend(
            self.manager_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        all
    }

    /// `k=v` of every label, a manager-set one marked `k=v*`, by key.
    pub fn labels_text(&self) -> Vec<String> {
        self.all_labels()
            .iter()
            .map(|(k, v)| {
                let star = if self.manager_labels.contains_key(k) {
                    "*"
                } else {
                    ""
                };
                format!("{k}={v}{star}")
            })
            .collect()
    }

    /// The clock skew as `get nodes -o wide` and the console show it: `+0.3s`, `-12s`; empty when
    /// the agent does not report its clock.
    pub fn clock_skew_text(&self) -> String {
        self.clock_skew_ms.map(skew_text).unwrap_or_default()
    }

    /// The IPs joined with ',' (the seed's HOSTIPS cell).
    pub fn ip_string(&self) -> String {
        join_ips(&self.ips)
    }
}

/// A clock offset in milliseconds, signed, in seconds: tenths below 10 s, whole seconds above.
pub fn skew_text(ms: i64) -> String {
    let sign = if ms < 0 { '-' } else { '+' };
    let abs = ms.unsigned_abs();
    if abs < 9_950 {
        let tenths = (abs + 50) / 100;
        format!("{sign}{}.{}s", tenths / 10, tenths % 10)
    } else {
        format!("{sign}{}s", (abs + 500) / 1000)
    }
}

/// IPs as the seed printed them: joined with ','.
pub fn join_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::skew_text;

    #[test]
    fn skew_is_shown_in_signed_seconds() {
        assert_eq!(skew_text(0), "+0.0s");
        assert_eq!(skew_text(300), "+0.3s");
        assert_eq!(skew_text(-950), "-1.0s");
        assert_eq!(skew_text(9_949), "+9.9s");
        assert_eq!(skew_text(-12_400), "-12s");
        assert_eq!(skew_text(3_600_000), "+3600s");
    }
}
