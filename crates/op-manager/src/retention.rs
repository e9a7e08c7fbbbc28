//! Retention: the leader issues a `Prune` command every `prune_interval`, and early when the
//! run records ingested since the last prune reach a tenth of the byte budget, so disk use stays
//! bounded however fast runs arrive. The command carries the time and limits, so every replica
//! deletes the same rows.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use op_store::{Command, CommandResult, RetentionLimits};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::state::Writer;

/// What the retention worker uses.
pub struct Retention {
    pub writer: Writer,
    /// Asks for an early prune, and is told when one happened.
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub limits: RetentionLimits,
    /// `prune_interval`.
    pub every: Duration,
}

pub async fn run(retention: Retention, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(retention.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = retention.hub.prune_wanted() => {}
            _ = shutdown.cancelled() => return,
        }
        if !retention.writer.is_leader() {
            continue;
        }
        retention.prune_once().await;
    }
}

impl Retention {
    async fn prune_once(&self) {
        let command = Command::Prune {
            now: Utc::now(),
            limits: self.limits,
        };
        match self.writer.write(command).await {
            Ok(CommandResult::Pruned { report }) => {
                self.hub.pruned();
                self.metrics.pruned(report.runs());
                if report != Default::default() {
                    tracing::info!(?report, "retention pruned history");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention prune failed"),
        }
    }
}
