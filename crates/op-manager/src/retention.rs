//! Retention: the leader issues a `Prune` command every `prune_interval`, and early when the
//! run records ingested since the last prune reach a tenth of the byte budget, so disk use stays
//! bounded however fast runs arrive. The command carries the time and limits, so every replica
//! deletes the same rows.

use std::sync::Arc;

use chrono::Utc;
use op_store::{Command, CommandResult};

use crate::app::App;
use crate::raft;

pub async fn run(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.config.prune_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = app.hub.prune_wanted() => {}
            _ = app.shutdown.cancelled() => return,
        }
        if !raft::is_leader(&app.raft) {
            continue;
        }
        prune_once(&app).await;
    }
}

pub async fn prune_once(app: &App) {
    let command = Command::Prune {
        now: Utc::now(),
        limits: app.config.retention,
    };
    match app.write(command).await {
        Ok(CommandResult::Pruned { report }) => {
            app.hub.pruned();
            app.metrics.pruned(report.runs());
            if report != Default::default() {
                tracing::info!(?report, "retention pruned history");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "retention prune failed"),
    }
}
