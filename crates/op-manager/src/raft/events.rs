//! Cluster events: leader changes, role changes and membership changes are logged as events
//! (`event = "leader_changed"`, ...) and counted in `/metrics`, and a node that learns it was
//! removed stops campaigning.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::metrics::Metrics;

/// What the last look at raft's metrics showed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    leader: Option<u64>,
    term: u64,
    state: String,
    voters: Vec<u64>,
    learners: Vec<u64>,
}

fn look(cluster: &Cluster) -> Seen {
    let m = cluster.raft.metrics();
    let m = m.borrow();
    let membership = m.membership_config.membership();
    Seen {
        leader: m.current_leader,
        term: m.current_term,
        state: format!("{:?}", m.state),
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
    }
}

/// Watches `cluster`'s raft until shutdown.
pub async fn watch(cluster: Arc<Cluster>, counters: Arc<Metrics>, shutdown: CancellationToken) {
    let mut metrics = cluster.raft.metrics();
    let mut last = look(&cluster);
    let mut removed_noted = false;
    let mut was_member = last.voters.contains(&cluster.id());
    tracing::info!(event = "raft_started", node = cluster.id(), leader = ?last.leader, term = last.term, state = %last.state, voters = ?last.voters, "raft node started");
    loop {
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            // The removal flag is not part of raft's metrics.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = look(&cluster);
        if now.leader != last.leader {
            counters.leader_changed();
            match now.leader {
                Some(l) => {
                    tracing::info!(event = "leader_changed", node = cluster.id(), from = ?last.leader, to = l, term = now.term, "raft leader changed")
                }
                None => {
                    tracing::warn!(event = "leader_lost", node = cluster.id(), from = ?last.leader, term = now.term, "no raft leader")
                }
            }
        }
        if now.state != last.state {
            tracing::info!(event = "role_changed", node = cluster.id(), from = %last.state, to = %now.state, term = now.term, "raft role changed");
        }
        if now.voters != last.voters || now.learners != last.learners {
            tracing::info!(event = "membership_changed", node = cluster.id(), voters = ?now.voters, learners = ?now.learners, "cluster membership changed");
        }
        let member = now.voters.contains(&cluster.id()) || now.learners.contains(&cluster.id());
        if was_member && !member && !(now.voters.is_empty() && now.learners.is_empty()) {
            cluster.peers.mark_removed();
        }
        was_member |= member;
        if cluster.removed() && !removed_noted {
            removed_noted = true;
            // Campaigning would only raise terms the members refuse anyway.
            cluster.raft.runtime_config().elect(false);
            tracing::error!(
                event = "removed",
                node = cluster.id(),
                "this manager was removed from the cluster: it no longer serves agents or clients; stop it (and wipe its data dir before reusing it)"
            );
        }
        last = now;
    }
}
