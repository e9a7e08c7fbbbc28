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
use op_store::{Command, CommandResult, StatusChange, Store};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::DomainError;
use crate::heartbeat::HeartbeatBuffer;
use crate::metrics::Metrics;
use crate::state::{self, Writer};

/// What the liveness checks use.
pub struct Liveness {
    /// The applied node records.
    pub store: Arc<Store>,
    /// Proposes `SetNodeStatus`; also tells whether this manager leads.
    pub writer: Writer,
    /// Beats not flushed yet: a node seen a moment ago is not silent.
    pub beats: Arc<HeartbeatBuffer>,
    /// The time decisions are made at.
    pub clock: Arc<dyn Clock>,
    /// Silence after which a Ready or Degraded node becomes NotReady.
    pub node_timeout: Duration,
    /// Silence after which a NotReady node is forgotten (Left).
    pub forget_after: Duration,
    pub metrics: Arc<Metrics>,
}

/// Checks the nodes every quarter of `node_timeout` (between 200 ms and 5 s) until `shutdown`.
pub async fn run(liveness: Liveness, shutdown: CancellationToken) {
    // Agents of a manager that just died need a moment to reach another one, and nobody could
    // heartbeat while no manager led: count silence from when this manager began to lead.
    let mut leading_since: Option<DateTime<Utc>> = None;
    let period =
        (liveness.node_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if !liveness.writer.is_leader() {
            leading_since = None;
            continue;
        }
        let started = *leading_since.get_or_insert_with(|| liveness.clock.now());
        if let Err(e) = liveness.check(started).await {
            tracing::warn!(error = %e, "liveness check failed");
        }
    }
}

impl Liveness {
    /// One look at every node, at the clock's time: Ready or Degraded nodes silent for longer
    /// than `node_timeout` (counted from `leading_since` at the earliest) become NotReady,
    /// NotReady nodes silent for longer than `forget_after` become Left. Returns the changes the
    /// state machine applied (a change is skipped when a newer heartbeat was applied meanwhile).
    pub async fn check(
        &self,
        leading_since: DateTime<Utc>,
    ) -> Result<Vec<(Uuid, NodeStatus)>, DomainError> {
        // The status and last beat of each node, not its whole record (decoded for every node
        // every few seconds, that was a fifth of an idle manager's CPU at 5,000 agents).
        let nodes = state::read(&self.store, |s| s.nodes_seen()).await?;
        let now = self.clock.now();
        let timeout =
            chrono::Duration::from_std(self.node_timeout).unwrap_or(chrono::Duration::MAX);
        let forget = chrono::Duration::from_std(self.forget_after).unwrap_or(chrono::Duration::MAX);
        let mut changes = Vec::new();
        for node in &nodes {
            let seen = self
                .beats
                .last_seen(node.node_id)
                .map_or(node.last_seen, |b| b.max(node.last_seen));
            let silent_since = seen.max(leading_since);
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
            return Ok(Vec::new());
        }
        // The column holds milliseconds; the state machine skips a change when the record was
        // seen after `unless_seen_after`, to the nanosecond. So the few nodes that change are
        // read whole, and the change names their exact last beat.
        let ids: Vec<Uuid> = changes.iter().map(|c| c.node_id).collect();
        let records = state::read(&self.store, move |s| {
            ids.iter()
                .map(|id| s.node(*id))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
        let changes: Vec<StatusChange> = changes
            .into_iter()
            .zip(records)
            .filter_map(|(mut change, record)| {
                let record = record?;
                let seen = self
                    .beats
                    .last_seen(record.node_id)
                    .map_or(record.last_seen, |b| b.max(record.last_seen));
                change.unless_seen_after = change.unless_seen_after.max(seen);
                Some(change)
            })
            .collect();
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let CommandResult::StatusChanged { changes } = self
            .writer
            .write(Command::SetNodeStatus { at: now, changes })
            .await?
        else {
            return Ok(Vec::new());
        };
        for (id, status) in &changes {
            let host = nodes
                .iter()
                .find(|n| n.node_id == *id)
                .map_or("?", |n| n.hostname.as_str());
            tracing::info!(node = %id, hostname = host, status = status.as_str(), "node status changed");
            self.metrics.node_status_changed(*status);
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use op_store::{NodeBeat, NodeRegistration};

    use super::*;
    use crate::clock::ManualClock;
    use crate::hub::Hub;
    use crate::raft::{self, Cluster, Identity, Member, RaftSettings};

    /// A one-member cluster on `dir`: a real SQLite store, a real raft log, the real apply path.
    async fn one_member_cluster(dir: &Path) -> (Arc<Store>, Arc<Cluster>) {
        let store = Arc::new(Store::open(dir.join("state.db")).unwrap());
        let cluster = raft::open(
            Identity::new_cluster(1),
            dir,
            store.clone(),
            Arc::new(Hub::new(1 << 20)),
            RaftSettings {
                snapshot_logs: 10_000,
                heartbeat: Duration::from_millis(50),
                election_timeout: Duration::from_millis(150),
                peer_http: raft::network::http_client(None).unwrap(),
                data_dir: dir.to_path_buf(),
                disk_reserve: 0,
            },
        )
        .await
        .unwrap();
        cluster
            .initialize_alone(Member {
                api_addr: "http://127.0.0.1:9".into(),
                raft_addr: "http://127.0.0.1:9".into(),
            })
            .await
            .unwrap();
        cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .unwrap();
        (store, Arc::new(cluster))
    }

    fn registration(hostname: &str) -> Command {
        Command::RegisterNode {
            registration: Box::new(NodeRegistration {
                node_id: Uuid::now_v7(),
                hostname: hostname.into(),
                ips: vec![],
                labels: Default::default(),
                agent_version: "test".into(),
                os: String::new(),
                arch: String::new(),
                machine_id: String::new(),
                reset: None,
                capabilities: Vec::new(),
            }),
            at: DateTime::UNIX_EPOCH,
            actor: "test".into(),
            enroll: None,
        }
    }

    fn beat(node_id: Uuid, seen_at: DateTime<Utc>) -> NodeBeat {
        NodeBeat {
            node_id,
            seen_at,
            agent_version: "test".into(),
            load: None,
            running: vec![],
            packages: vec![],
            stats: Default::default(),
            degraded: None,
            clock_skew_ms: None,
        }
    }

    fn status(store: &Store, id: Uuid) -> NodeStatus {
        store.node(id).unwrap().unwrap().status
    }

    /// Node timeout and forget-after are measured on the clock liveness is given: the test moves
    /// a manual clock past each threshold (and stops just short of the first) instead of
    /// waiting, against a real store written through a real one-member raft.
    #[tokio::test]
    async fn silent_nodes_go_not_ready_then_left_by_the_given_clock() {
        let dir = tempfile::tempdir().unwrap();
        let (store, cluster) = one_member_cluster(dir.path()).await;
        let metrics = Arc::new(Metrics::new());
        let writer = Writer::new(cluster, metrics.clone());
        let mut ids = vec![];
        for host in ["quiet", "beating"] {
            let CommandResult::NodeRegistered { node, .. } =
                writer.write(registration(host)).await.unwrap()
            else {
                panic!("not registered");
            };
            ids.push(node.node_id);
        }
        let (quiet, beating) = (ids[0], ids[1]);
        let t0 = DateTime::UNIX_EPOCH;
        let clock = Arc::new(ManualClock::new(t0));
        let beats = Arc::new(HeartbeatBuffer::new(Duration::from_secs(10)));
        let liveness = Liveness {
            store: store.clone(),
            writer,
            beats: beats.clone(),
            clock: clock.clone(),
            node_timeout: Duration::from_secs(60),
            forget_after: Duration::from_secs(600),
            metrics,
        };

        // Just short of the timeout nobody changes; the beating node reports in.
        clock.advance(chrono::Duration::seconds(59));
        beats.record(beat(beating, clock.now()));
        assert_eq!(liveness.check(t0).await.unwrap(), vec![]);

        // Past it, the silent node is NotReady; the one with a recent beat is not.
        clock.advance(chrono::Duration::seconds(2));
        assert_eq!(
            liveness.check(t0).await.unwrap(),
            vec![(quiet, NodeStatus::NotReady)]
        );
        assert_eq!(status(&store, quiet), NodeStatus::NotReady);
        assert_eq!(status(&store, beating), NodeStatus::Ready);
        assert_eq!(liveness.check(t0).await.unwrap(), vec![], "decided once");

        // Past forget_after the NotReady node is forgotten; the other one has now been silent
        // for longer than the timeout too.
        clock.advance(chrono::Duration::seconds(600));
        let mut changes = liveness.check(t0).await.unwrap();
        changes.sort_by_key(|(id, _)| *id != quiet);
        assert_eq!(
            changes,
            vec![(quiet, NodeStatus::Left), (beating, NodeStatus::NotReady)]
        );
        assert_eq!(status(&store, quiet), NodeStatus::Left);
        assert_eq!(status(&store, beating), NodeStatus::NotReady);
    }
}
