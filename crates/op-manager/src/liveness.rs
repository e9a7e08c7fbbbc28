//! Node liveness: the leader (only it, so there is one decision) marks a node NotReady when it
//! has not been seen for `node_timeout` (whether it was Ready or Degraded: a Degraded node is one
//! that still heartbeats but reports a fault, set and cleared by its beats), and Left (forgotten) when NotReady for longer than
//! `forget_after`. Decisions
//! travel as one `SetNodeStatus` command; each change holds only if no newer heartbeat was
//! applied in between. A node becomes Ready again through its next heartbeat or registration.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use op_proto::NodeStatus;
use op_store::{Command, CommandResult, StatusChange};

use crate::app::App;
use crate::raft;

pub async fn run(app: Arc<App>) {
    // Agents of a manager that just died need a moment to reach another one, and nobody could
    // heartbeat while no manager led: count silence from when this manager began to lead.
    let mut leading_since: Option<DateTime<Utc>> = None;
    let period =
        (app.config.node_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = app.shutdown.cancelled() => return,
        }
        if !raft::is_leader(&app.raft) {
            leading_since = None;
            continue;
        }
        let started = *leading_since.get_or_insert_with(Utc::now);
        if let Err(e) = check(&app, started).await {
            tracing::warn!(error = %e, "liveness check failed");
        }
    }
}

async fn check(app: &App, started: DateTime<Utc>) -> Result<(), crate::error::DomainError> {
    let nodes = app.read(|s| s.nodes()).await?;
    let now = Utc::now();
    let timeout =
        chrono::Duration::from_std(app.config.node_timeout).unwrap_or(chrono::Duration::MAX);
    let forget =
        chrono::Duration::from_std(app.config.forget_after).unwrap_or(chrono::Duration::MAX);
    let mut changes = Vec::new();
    for node in &nodes {
        let seen = app
            .beats
            .last_seen(node.node_id)
            .map_or(node.last_seen, |b| b.max(node.last_seen));
        let silent_since = seen.max(started);
        let age = now - silent_since;
        let status = match node.status {
            NodeStatus::Ready | NodeStatus::Degraded if age > timeout => NodeStatus::NotReady,
            NodeStatus::NotReady if now - seen > forget => NodeStatus::Left,
            _ => continue,
        };
        changes.push(StatusChange {
            node_id: node.node_id,
            status,
            unless_seen_after: seen,
        });
    }
    if changes.is_empty() {
        return Ok(());
    }
    if let CommandResult::StatusChanged { changes } = app
        .write(Command::SetNodeStatus { at: now, changes })
        .await?
    {
        for (id, status) in changes {
            let host = nodes
                .iter()
                .find(|n| n.node_id == id)
                .map_or("?", |n| n.hostname.as_str());
            tracing::info!(node = %id, hostname = host, status = status.as_str(), "node status changed");
            app.metrics.node_status_changed(status);
        }
    }
    Ok(())
}
