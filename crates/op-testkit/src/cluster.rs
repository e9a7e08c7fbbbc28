//! A cluster of real `op-manager` processes on `127.0.0.1`: the first starts a new cluster, the
//! others `--join` it. Members can be killed, paused and restarted one by one (each keeps its data
//! dir and ports), and new members can join later. Every member serves the same admin and agent
//! tokens: they are replicated state, written to files only by the first node.

use std::time::Duration;

use op_client::Client;
use op_proto::api::ClusterStatus;

use crate::{Manager, ManagerOptions, wait_until};

/// Raft timings short enough for a test to sit through many elections: leader heartbeat 100 ms,
/// election timeout 400–800 ms. Not shorter: openraft gives an append one heartbeat period, and
/// a debug build on a loaded 2-core machine needs that long for a batch of run records.
pub const FAST_RAFT: &[&str] = &[
    "--raft-heartbeat",
    "100ms",
    "--raft-election-timeout",
    "400ms",
];

/// Members of one cluster, by index (index 0 started the cluster).
pub struct Cluster {
    pub members: Vec<Manager>,
    pub admin_token: String,
    pub agent_token: String,
    /// Flags every member gets.
    args: Vec<String>,
    /// What clients of the members trust and present (TLS clusters).
    client_tls: op_client::ClientTls,
}

impl Cluster {
    /// Starts `n` managers with `args` each and waits until all are voters.
    pub async fn start(n: usize, args: &[&str]) -> Cluster {
        Cluster::start_tls(n, args, op_client::ClientTls::default()).await
    }

    /// [`Cluster::start`] for members serving TLS: `client_tls` is what test clients use.
    pub async fn start_tls(n: usize, args: &[&str], client_tls: op_client::ClientTls) -> Cluster {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let first = Manager::start_with(ManagerOptions {
            args: args.clone(),
            client_tls: client_tls.clone(),
        });
        let mut c = Cluster {
            admin_token: first.admin_token.clone(),
            agent_token: first.agent_token.clone(),
            members: vec![first],
            args,
            client_tls,
        };
        for _ in 1..n {
            c.join(&[]);
        }
        c.wait_voters(n, Duration::from_secs(60)).await;
        c
    }

    /// Starts one more manager that joins through a running member; returns its index. The call
    /// returns when it is a voter (`op-manager --join` prints its address only then).
    pub fn join(&mut self, extra: &[&str]) -> usize {
        let via = self
            .members
            .iter()
            .find(|m| m.is_running())
            .expect("a running member to join through")
            .raft_url
            .clone();
        let mut args = self.args.clone();
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend([
            "--join".to_string(),
            via,
            "--join-token".to_string(),
            self.admin_token.clone(),
        ]);
        let mut m = Manager::start_with(ManagerOptions {
            args,
            client_tls: self.client_tls.clone(),
        });
        m.admin_token = self.admin_token.clone();
        m.agent_token = self.agent_token.clone();
        self.members.push(m);
        self.members.len() - 1
    }

    /// Starts member `i` again on its data dir and ports.
    pub fn restart(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.restart();
        m.admin_token = self.admin_token.clone();
        m.agent_token = self.agent_token.clone();
    }

    /// Every member's API URL (what agents are given).
    pub fn api_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.api_url.clone()).collect()
    }

    /// Indexes of the running members.
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].is_running())
            .collect()
    }

    /// An admin client of member `i`.
    pub fn client(&self, i: usize) -> Client {
        self.members[i]
            .client()
            .with_timeout(Duration::from_secs(15))
    }

    /// Member `i`'s own view of the cluster.
    pub async fn status(&self, i: usize) -> Option<ClusterStatus> {
        self.members[i]
            .client()
            .with_timeout(Duration::from_secs(2))
            .cluster()
            .await
            .ok()
    }

    /// The index of the member that says it leads, if one does among the running members (a
    /// paused member is asked too, and does not answer).
    pub async fn leader(&self) -> Option<usize> {
        for i in self.running() {
            if let Some(s) = self.status(i).await
                && s.leader == Some(s.node_id)
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits until a running member leads; returns its index.
    pub async fn wait_leader(&self, limit: Duration) -> usize {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(l) = self.leader().await {
                return l;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no leader among the running members after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the leader counts `n` voters.
    pub async fn wait_voters(&self, n: usize, limit: Duration) {
        wait_until(limit, &format!("{n} voters"), || async {
            match self.leader().await {
                Some(l) => self
                    .status(l)
                    .await
                    .is_some_and(|s| s.members.iter().filter(|m| m.voter).count() == n),
                None => false,
            }
        })
        .await;
    }

    /// Waits until every running member has applied the leader's last log entry.
    pub async fn wait_caught_up(&self, limit: Duration) {
        wait_until(
            limit,
            "every running member applied the leader's log",
            || async {
                let Some(l) = self.leader().await else {
                    return false;
                };
                let Some(target) = self.status(l).await.and_then(|s| s.last_log_index) else {
                    return false;
                };
                for i in self.running() {
                    match self.status(i).await {
                        Some(s) if s.applied_index >= Some(target) => {}
                        _ => return false,
                    }
                }
                true
            },
        )
        .await;
    }
}
