//! Staged rollouts (issue 21) on the manager: what a node outside the admitted stages is sent,
//! each rollout's host states, and the leader's driver that advances or halts rollouts.
//!
//! - **Sync answer.** `op_store::ActiveRollout::filter_jobs`/`filter_packages` (pure, beside the
//!   type, so the hub needs nothing of this driver) take what a node would get without rollouts
//!   and, for each active rollout that does not admit it, put back the previous job revision or
//!   package version (or nothing when there was none).
//! - **Host states** ([`status`]): per selected host, admitted or not, has the new version or not,
//!   failed or not. A package host has it when its heartbeat reports the version installed, and
//!   failed when it reports that version failed. A job host has the new revision once its agent
//!   beat after the stage was entered (agents long-poll their desired state, so a host that beats
//!   has been answered), a once-job host once it ran it; a job host failed when a run of the new
//!   revision failed (or timed out, or was lost) since the rollout started or was resumed.
//! - **Driver** ([`run`], leader only, every `every`): a running rollout whose failures reached its
//!   `HaltOn` is halted (`HaltRollout`); one whose admitted hosts that are not NotReady all have
//!   the new version, and whose stage was entered `StepWait` ago, advances (`AdvanceRollout`).
//!   Hosts of an agent release pinned on another agent version (`agentcli agent pin`) never
//!   report the new one: they are `excluded`, shown but not waited on.
//!   Both commands hold only for the state they were decided on, so a decision of a deposed leader
//!   changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use op_proto::package::PackageState;
use op_proto::rollout::{
    RolloutHost, RolloutInfo, RolloutKind, RolloutState, RolloutStatus, admitted,
};
use op_proto::{NodeInfo, NodeStatus};
use op_store::{Command, Store};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::DomainError;
use crate::heartbeat::HeartbeatBuffer;
use crate::state::{self, Writer};

/// The host states of `info` among `nodes` (not Left), read from `store` where needed.
pub fn status(
    store: &Store,
    info: RolloutInfo,
    nodes: &[NodeInfo],
) -> Result<RolloutStatus, op_store::StoreError> {
    let mut failed_runs: HashMap<Uuid, String> = HashMap::new();
    // An agent release (issue 22): hosts pinned on another agent version never get it.
    let mut pinned: Option<(Vec<op_proto::agent_upgrade::AgentPin>, Option<String>)> = None;
    if info.kind == RolloutKind::Package && op_proto::agent_upgrade::is_reserved(&info.subject) {
        let release = match store.package_version(&info.subject, info.version)? {
            Some(v) => store
                .agent_releases()?
                .get(&v.sha256)
                .map(|r| r.version.clone()),
            None => None,
        };
        pinned = Some((store.agent_pins()?, release));
    }
    let mut once: Option<HashMap<Uuid, String>> = None;
    let selector = match info.kind {
        // The hosts the version targets (an untargeted version: every host).
        RolloutKind::Package => Some(
            store
                .package_version(&info.subject, info.version)?
                .map(|v| v.target),
        ),
        RolloutKind::Job => {
            let job = store.job(&info.subject)?;
            if let Some(j) = &job
                && j.spec.once_job
            {
                once = Some(
                    store
                        .rollout_once_targets(&info.subject, info.version)?
                        .into_iter()
                        .collect(),
                );
            }
            for (node, _host, st) in
                store.rollout_failed_runs(&info.subject, info.version, info.counted_from)?
            {
                failed_runs.insert(
                    node,
                    format!("a run of revision {} ended {st}", info.version),
                );
            }
            Some(job.map(|j| j.spec.selector()))
        }
    };
    let mut hosts = Vec::new();
    for n in nodes.iter().filter(|n| n.status != NodeStatus::Left) {
        if let Some(sel) = &selector {
            match sel {
                Some(s) if s.matches(&n.identity()) => {}
                _ => continue,
            }
        }
        let is_admitted = admitted(info.id, info.threshold, n.node_id);
        let (has_new, failed) = match info.kind {
            RolloutKind::Package => {
                let p = n.packages.iter().find(|p| p.name == info.subject);
                let has = p.is_some_and(|p| {
                    p.version == info.version && p.state == PackageState::Installed
                });
                let failed = p.and_then(|p| {
                    let about_new =
                        p.target_version == Some(info.version) || p.version == info.version;
                    let broken = p.state == PackageState::Failed || p.error.is_some();
                    (about_new && broken && !has).then(|| {
                        format!(
                            "deploy of version {} failed: {}",
                            info.version,
                            p.error.clone().unwrap_or_else(|| "failed".into())
                        )
                    })
                });
                (has, failed)
            }
            RolloutKind::Job => {
                let has = match &once {
                    Some(targets) => targets
                        .get(&n.node_id)
                        .is_some_and(|s| s == "done" || s == "failed"),
                    None => n.last_seen >= info.stage_entered_at,
                };
                (has, failed_runs.get(&n.node_id).cloned())
            }
        };
        let excluded = pinned.as_ref().and_then(|(pins, release)| {
            let pin =
                op_proto::agent_upgrade::AgentPin::applying(pins, n.node_id, &n.identity().labels)?;
            (release.as_deref() != Some(pin.version.as_str()) && !has_new)
                .then(|| format!("pinned on agent {}", pin.version))
        });
        hosts.push(RolloutHost {
            node_id: n.node_id,
            hostname: n.hostname.clone(),
            status: n.status_text().to_string(),
            admitted: is_admitted,
            has_new: is_admitted && has_new,
            failed: if is_admitted { failed } else { None },
            excluded,
        });
    }
    hosts.sort_by(|a, b| {
        b.admitted
            .cmp(&a.admitted)
            .then_with(|| a.hostname.cmp(&b.hostname))
    });
    let admitted_count = hosts.iter().filter(|h| h.admitted).count() as u64;
    let failures = hosts.iter().filter(|h| h.failed.is_some()).count() as u64;
    let excluded = hosts.iter().filter(|h| h.excluded.is_some()).count() as u64;
    Ok(RolloutStatus {
        excluded,
        selected: hosts.len() as u64,
        admitted: admitted_count,
        failures,
        halt_at: info.plan.halt_on.limit(admitted_count),
        rollout: info,
        hosts,
    })
}

/// What the driver uses.
pub struct RolloutDriver {
    pub store: Arc<Store>,
    pub writer: Writer,
    pub beats: Arc<HeartbeatBuffer>,
    pub clock: Arc<dyn Clock>,
    /// How often the leader checks the running rollouts.
    pub every: Duration,
}

/// Advances and halts rollouts every `every` until `shutdown`, on the leader only.
pub async fn run(driver: RolloutDriver, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(driver.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if !driver.writer.is_leader() {
            continue;
        }
        if let Err(e) = driver.pass().await {
            tracing::warn!(error = %e, "driving rollouts failed");
        }
    }
}

/// What the driver decided for one rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Wait,
    Advance,
    Halt { reason: String, hosts: Vec<String> },
}

/// The decision for one running rollout at `now`.
pub fn decide(st: &RolloutStatus, now: chrono::DateTime<chrono::Utc>) -> Decision {
    if st.rollout.state != RolloutState::Running {
        return Decision::Wait;
    }
    if st.failures >= st.halt_at {
        let hosts: Vec<String> = st
            .hosts
            .iter()
            .filter(|h| h.failed.is_some())
            .map(|h| h.hostname.clone())
            .collect();
        let first = st
            .hosts
            .iter()
            .find_map(|h| h.failed.as_ref().map(|f| format!("{}: {f}", h.hostname)))
            .unwrap_or_default();
        return Decision::Halt {
            reason: format!(
                "{} failed host(s) reached HaltOn {} ({first})",
                st.failures, st.rollout.plan.halt_on
            ),
            hosts,
        };
    }
    let waited = now - st.rollout.stage_entered_at
        >= chrono::Duration::seconds(st.rollout.plan.step_wait_secs as i64);
    let all_have = st
        .hosts
        .iter()
        .filter(|h| h.admitted && h.status != NodeStatus::NotReady.as_str() && h.excluded.is_none())
        .all(|h| h.has_new);
    if waited && all_have {
        Decision::Advance
    } else {
        Decision::Wait
    }
}

impl RolloutDriver {
    pub async fn pass(&self) -> Result<(), DomainError> {
        let running: Vec<RolloutInfo> = state::read(&self.store, |s| s.active_rollouts())
            .await?
            .into_iter()
            .map(|r| r.info)
            .filter(|i| i.state == RolloutState::Running)
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        let mut nodes = state::read(&self.store, |s| s.nodes()).await?;
        self.beats.overlay(&mut nodes);
        let nodes = Arc::new(nodes);
        let now = self.clock.now();
        for info in running {
            let (id, stage) = (info.id, info.stage);
            let ns = nodes.clone();
            let st = state::read(&self.store, move |s| status(s, info, &ns)).await?;
            let command = match decide(&st, now) {
                Decision::Wait => continue,
                Decision::Advance => Command::AdvanceRollout {
                    id,
                    from_stage: stage,
                    at: now,
                },
                Decision::Halt { reason, hosts } => Command::HaltRollout {
                    id,
                    reason,
                    failed_hosts: hosts,
                    at: now,
                },
            };
            self.writer.write(command).await?;
        }
        Ok(())
    }
}
