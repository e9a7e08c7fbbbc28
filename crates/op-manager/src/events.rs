//! The leader's event timer (issue 19): events are derived in the state machine
//! (`op_store`'s `apply::events`), but only when the leader commits that a fire's results are in
//! (`CloseFires`) or that a batch of node changes is complete (`FlushEvents`). This worker makes
//! those two decisions, once a second, on the leader only; the commands carry the leader's time,
//! so grouping never depends on a member's clock.
//!
//! A fire closes when every host it selected has reported, or `window` after its first result.
//! The selection is what the state says now: the live nodes a cron job's selector matches, a
//! once-job revision's targets, an invocation's targets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use op_proto::NodeStatus;
use op_proto::incidents::FireKey;
use op_store::{Command, FireToClose, Store};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::error::DomainError;
use crate::state::{self, Writer};

/// What the event timer uses.
pub struct EventTimer {
    /// The applied incident state, jobs, nodes and invocations.
    pub store: Arc<Store>,
    /// Commits the decisions; also tells whether this manager leads.
    pub writer: Writer,
    /// The time decisions are made at.
    pub clock: Arc<dyn Clock>,
    /// How long a fire's results and a batch of node changes are collected at most.
    pub window: Duration,
}

/// How often the leader looks.
const PERIOD: Duration = Duration::from_millis(500);

/// Looks every half second until `shutdown`.
pub async fn run(timer: EventTimer, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if !timer.writer.is_leader() {
            continue;
        }
        if let Err(e) = timer.check().await {
            tracing::warn!(error = %e, "event timer failed");
        }
    }
}

impl EventTimer {
    /// One look: commits `CloseFires` for the fires that are complete or past the window, and
    /// `FlushEvents` when the node/package batch is past the window.
    pub async fn check(&self) -> Result<(), DomainError> {
        let now = self.clock.now();
        let window = chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX);
        let (open, flush_due) = state::read(&self.store, move |s| {
            s.with_incidents(|incidents| {
                let open: Vec<(FireKey, DateTime<Utc>, usize)> = incidents
                    .open_fires()
                    .map(|(k, first, reported)| (k.clone(), first, reported))
                    .collect();
                (open, incidents.flush_due(now, window))
            })
        })
        .await?;
        let mut fires = Vec::new();
        // A cron job's selection is the same for all its open fires (a fire a second of a
        // busy job): looked up once per look, not once per fire.
        // Only a fire that closes gets a copy of its selection: a busy job has thousands open.
        let mut by_job: HashMap<String, Arc<Vec<String>>> = HashMap::new();
        for (fire, first, reported) in open {
            let selected = match &fire {
                FireKey::Cron { job, .. } => match by_job.get(job) {
                    Some(selected) => selected.clone(),
                    None => {
                        let selected = Arc::new(self.selection(&fire).await?);
                        by_job.insert(job.clone(), selected.clone());
                        selected
                    }
                },
                // A run on one agent stands alone: nothing to look up.
                FireKey::Run { .. } => Arc::default(),
                _ => Arc::new(self.selection(&fire).await?),
            };
            let complete = match &fire {
                FireKey::Run { .. } => reported >= 1,
                _ => !selected.is_empty() && reported >= selected.len(),
            };
            if complete || first + window <= now {
                fires.push(FireToClose {
                    fire,
                    selected: selected.as_ref().clone(),
                });
            }
        }
        if !fires.is_empty() {
            self.writer
                .write(Command::CloseFires { at: now, fires })
                .await?;
        }
        if flush_due {
            self.writer.write(Command::FlushEvents { at: now }).await?;
        }
        Ok(())
    }

    /// The host names `fire` selected, as the state says now (empty when unknown).
    async fn selection(&self, fire: &FireKey) -> Result<Vec<String>, DomainError> {
        let fire = fire.clone();
        state::read(&self.store, move |s| {
            Ok(match fire {
                FireKey::Cron { job, .. } => match s.job(&job)? {
                    Some(record) => {
                        let selector = record.spec.selector();
                        s.nodes()?
                            .into_iter()
                            .filter(|n| {
                                n.status != NodeStatus::Left && selector.matches(&n.identity())
                            })
                            .map(|n| n.hostname)
                            .collect()
                    }
                    None => Vec::new(),
                },
                FireKey::Once { job, revision } => s
                    .once_targets(&job, Some(revision))?
                    .into_iter()
                    .map(|t| t.hostname)
                    .collect(),
                FireKey::Invocation { invocation_id, .. } => s
                    .invocation(invocation_id, false)?
                    .map(|(_, targets)| targets.into_iter().map(|t| t.hostname).collect())
                    .unwrap_or_default(),
                FireKey::Run { .. } => Vec::new(),
            })
        })
        .await
    }
}
