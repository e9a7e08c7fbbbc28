//! Membership: joining, adding, removing and leadership transfer.
//!
//! **Joining** (`op-manager --join RAFT_URL`) is two calls to any member's raft listener:
//! 1. `POST /raft/join`, authenticated by an admin token (or the cluster secret), answers the
//!    cluster id, the secret and a node id; the node writes them to its data dir
//!    ([`super::identity`]) and starts raft *uninitialized*, serving its raft listener;
//! 2. `POST /raft/members` (now with the secret) asks the leader to add it: the leader adds it as
//!    a learner, waits until it has caught up (openraft sends a snapshot when the log it needs
//!    was purged), then makes it a voter. A member that is not the leader forwards the call.
//!
//! **Removing** a follower is one `change_membership`; removing the leader first hands
//! leadership to another voter, so the cluster never waits out an election. The removed node is
//! told (`/raft/removed`) and stops campaigning; if it missed the notice, its next vote request
//! is refused as coming from a non-member, which tells it the same.
//!
//! **Transfer** (openraft 0.9 has no such call): the leader stops proposing and heartbeating,
//! waits until the target has every entry, and asks it to campaign once the followers' leader
//! lease has run out; the target then wins before any other follower's election timer fires.

use std::collections::BTreeSet;
use std::time::Duration;

use op_proto::api::AddMemberRequest;
use openraft::ChangeMembers;

use super::messages::{Hello, JoinRequest, JoinResponse, RemovedNotice, code};
use super::network::{PeerError, send_json};
use super::{Cluster, ClusterError, Member, NodeId, raft_err};
use crate::error::ManagerError;

/// How long a new member may take to catch up before it is left a learner and the add fails.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(600);
/// How long the leader waits for followers to have every entry before a transfer.
const TRANSFER_SYNC_WAIT: Duration = Duration::from_secs(5);

/// Checks that a URL given for a member is usable.
fn check_url(what: &str, url: &str) -> Result<String, ClusterError> {
    op_client::normalize_base_url(url)
        .map_err(|e| ClusterError::refused("invalid", format!("{what}: {e}")))
}

/// Turns a disabled flag back on when dropped, so a failed transfer never leaves the old leader
/// silent.
struct Restore<'a>(&'a super::Raft);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
        self.0.runtime_config().elect(true);
    }
}

impl Cluster {
    /// A node id for a joining node: the one it asks for, or the next one no member and no
    /// other joining node has.
    pub fn reserve_id(&self, wanted: Option<NodeId>) -> Result<NodeId, ClusterError> {
        let members: BTreeSet<NodeId> = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect()
        };
        let mut reserved = self
            .reserved
            .lock()
            .map_err(|_| raft_err("reserved ids poisoned"))?;
        if let Some(id) = wanted {
            if id == 0 {
                return Err(ClusterError::refused("invalid", "node ids start at 1"));
            }
            if members.contains(&id) {
                return Err(ClusterError::refused(
                    "conflict",
                    format!(
                        "node id {id} is already a member; start the node with another --node-id or none"
                    ),
                ));
            }
            reserved.insert(id);
            return Ok(id);
        }
        let next = members
            .iter()
            .chain(reserved.iter())
            .max()
            .map_or(1, |m| m + 1);
        reserved.insert(next);
        Ok(next)
    }

    /// Adds a node on this node, the leader: learner, catch-up, voter.
    pub(crate) async fn add_member_local(
        &self,
        req: &AddMemberRequest,
    ) -> Result<(), ClusterError> {
        if req.node_id == 0 {
            return Err(ClusterError::refused("invalid", "node ids start at 1"));
        }
        let member = Member {
            api_addr: check_url("api_addr", &req.api_addr)?,
            raft_addr: check_url("raft_addr", &req.raft_addr)?,
        };
        let _one = self.changing.lock().await;
        if !self.is_leader() {
            return Err(ClusterError::NotLeader);
        }
        let (known, voter) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            (
                membership.get_node(&req.node_id).cloned(),
                membership.voter_ids().any(|v| v == req.node_id),
            )
        };
        match &known {
            Some(existing) if *existing != member => {
                return Err(ClusterError::refused(
                    "conflict",
                    format!(
                        "node {} is already a member at {existing}; remove it first to add it at other addresses",
                        req.node_id
                    ),
                ));
            }
            Some(_) if voter => return Ok(()),
            Some(_) => {}
            None => {
                // Make sure a node of this cluster with this id listens there.
                let hello = self
                    .peers
                    .post::<_, Hello>(
                        &member.raft_addr,
                        "/raft/hello",
                        &serde_json::json!({}),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|e| match e {
                        // It does not hold this cluster's secret: a manager of another cluster
                        // (which, unauthenticated, says nothing more about itself).
                        PeerError::Refused { body, .. } if body.code == code::UNAUTHORIZED => {
                            ClusterError::refused(
                                code::WRONG_CLUSTER,
                                format!(
                                    "node {} refused to join: the manager at {} belongs to another cluster (it does not hold this cluster's secret); a manager's data dir belongs to one cluster (start a new member on an empty data dir with --join)",
                                    req.node_id, member.raft_addr
                                ),
                            )
                        }
                        PeerError::Refused { body, .. } => ClusterError::refused(
                            &body.code,
                            format!("node {} refused to join: {}", req.node_id, body.message),
                        ),
                        other => ClusterError::refused(
                            code::FAILED,
                            format!("node {} cannot be reached: {other}", req.node_id),
                        ),
                    })?;
                if hello.node_id != req.node_id {
                    return Err(ClusterError::refused(
                        "conflict",
                        format!(
                            "the manager at {} is node {}, not {}",
                            member.raft_addr, hello.node_id, req.node_id
                        ),
                    ));
                }
                let resp = self
                    .raft
                    .add_learner(req.node_id, member.clone(), false)
                    .await
                    .map_err(|e| membership_err(e.to_string()))?;
                tracing::info!(node = req.node_id, %member, index = resp.log_id.index, "added a learner; waiting for it to catch up");
            }
        }
        // Caught up = it has every entry up to our last one at the time it was added.
        let target = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
        let id = req.node_id;
        self.raft
            .wait(Some(CATCH_UP_LIMIT))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .is_some_and(|l| l.index >= target)
                },
                "the new member caught up",
            )
            .await
            .map_err(|e| {
                ClusterError::refused(
                    code::FAILED,
                    format!("node {id} did not catch up ({e}); it stays a learner"),
                )
            })?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await
            .map_err(|e| membership_err(e.to_string()))?;
        if let Ok(mut r) = self.reserved.lock() {
            r.remove(&id);
        }
        tracing::info!(node = id, %member, "node is now a voter");
        Ok(())
    }

    /// Removes a member on this node, the leader.
    pub(crate) async fn remove_member_local(&self, id: NodeId) -> Result<(), ClusterError> {
        let (member, voters, is_voter) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            (
                membership.get_node(&id).cloned(),
                voters.clone(),
                voters.contains(&id),
            )
        };
        let Some(member) = member else {
            return Err(ClusterError::refused(
                "not_found",
                format!("node {id} is not a member"),
            ));
        };
        if is_voter && voters.len() == 1 {
            return Err(ClusterError::refused(
                "conflict",
                "cannot remove the last voter; add another manager first",
            ));
        }
        if id == self.id() {
            // Hand over first; the new leader then removes us (the caller retries there).
            match self.transfer_leader_local(None).await {
                Ok(()) => return Err(ClusterError::NotLeader),
                Err(e) => {
                    tracing::warn!(error = %e, "leadership transfer before removing the leader failed; removing it anyway (it steps down)")
                }
            }
        }
        let _one = self.changing.lock().await;
        if !self.is_leader() {
            return Err(ClusterError::NotLeader);
        }
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| membership_err(e.to_string()))?;
        tracing::info!(node = id, %member, "removed a member");
        if id == self.id() {
            self.peers.mark_removed();
        } else {
            let notice = RemovedNotice { node_id: id };
            let sent: Result<serde::de::IgnoredAny, PeerError> = self
                .peers
                .post(
                    &member.raft_addr,
                    "/raft/removed",
                    &notice,
                    Duration::from_secs(2),
                )
                .await;
            if let Err(e) = sent {
                tracing::info!(node = id, error = %e, "could not tell the removed node; it learns at its next vote");
            }
        }
        Ok(())
    }

    /// Hands leadership from this node, the leader, to `to` (default: the voter with the most
    /// entries).
    pub(crate) async fn transfer_leader_local(
        &self,
        to: Option<NodeId>,
    ) -> Result<(), ClusterError> {
        let me = self.id();
        let (voters, matched) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
            let matched: Vec<(NodeId, u64)> = m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(id, l)| (*id, l.map_or(0, |l| l.index)))
                        .collect()
                })
                .unwrap_or_default();
            (voters, matched)
        };
        let target = match to {
            Some(t) if t == me => return Ok(()),
            Some(t) if voters.contains(&t) => t,
            Some(t) => {
                return Err(ClusterError::refused(
                    "invalid",
                    format!("node {t} is not a voter; only voters can lead"),
                ));
            }
            None => matched
                .iter()
                .filter(|(id, _)| *id != me && voters.contains(id))
                .max_by_key(|(_, idx)| *idx)
                .map(|(id, _)| *id)
                .ok_or_else(|| {
                    ClusterError::refused("conflict", "there is no other voter to lead")
                })?,
        };
        let Some(member) = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&target)
            .cloned()
        else {
            return Err(ClusterError::refused(
                "not_found",
                format!("node {target} is not a member"),
            ));
        };
        // No new entries from here on: each would renew the followers' lease.
        let _quiet = self.gate.write().await;
        if !self.is_leader() {
            return Err(ClusterError::NotLeader);
        }
        let last = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
        let others: Vec<NodeId> = voters.iter().copied().filter(|v| *v != me).collect();
        // Everyone (at least the target) has every entry, so nothing in flight renews a lease
        // and the target's log is the most complete.
        let synced = self
            .raft
            .wait(Some(TRANSFER_SYNC_WAIT))
            .metrics(
                |m| {
                    let matched = |id: &NodeId| {
                        m.replication
                            .as_ref()
                            .and_then(|r| r.get(id).cloned().flatten())
                            .is_some_and(|l| l.index >= last)
                    };
                    others.iter().all(matched)
                },
                "followers have every entry",
            )
            .await
            .is_ok();
        if !synced {
            self.raft
                .wait(Some(TRANSFER_SYNC_WAIT))
                .metrics(
                    |m| {
                        m.replication
                            .as_ref()
                            .and_then(|r| r.get(&target).cloned().flatten())
                            .is_some_and(|l| l.index >= last)
                    },
                    "the target has every entry",
                )
                .await
                .map_err(|e| {
                    ClusterError::refused(
                        code::FAILED,
                        format!("node {target} is not caught up ({e}); try again or pick another"),
                    )
                })?;
        }
        let lease = self.settings.lease();
        let restore = Restore(&self.raft);
        self.raft.runtime_config().heartbeat(false);
        self.raft.runtime_config().elect(false);
        let after = lease + self.settings.election_timeout / 4;
        let campaign = super::messages::CampaignRequest {
            after_ms: after.as_millis() as u64,
        };
        self.peers
            .post::<_, serde::de::IgnoredAny>(
                &member.raft_addr,
                "/raft/campaign",
                &campaign,
                Duration::from_secs(5),
            )
            .await
            .map_err(|e| {
                ClusterError::refused(
                    code::FAILED,
                    format!("asking node {target} to campaign: {e}"),
                )
            })?;
        tracing::info!(to = target, "handing leadership over");
        let moved = self
            .raft
            .wait(Some(after + lease * 2 + Duration::from_secs(3)))
            .metrics(|m| m.current_leader != Some(me), "leadership moved")
            .await;
        drop(restore);
        match moved {
            Ok(m) => {
                tracing::info!(from = me, to = ?m.current_leader, term = m.current_term, "leadership transferred");
                Ok(())
            }
            Err(e) => Err(ClusterError::refused(
                code::FAILED,
                format!("node {target} did not take over ({e}); this node still leads"),
            )),
        }
    }
}

fn membership_err(message: String) -> ClusterError {
    if message.contains("ForwardToLeader") || message.contains("forward request to") {
        ClusterError::NotLeader
    } else {
        ClusterError::refused(code::FAILED, message)
    }
}

/// Step 1 of joining: asks the member at `join_url` for the cluster's identity.
pub async fn request_identity(
    join_url: &str,
    token: &str,
    req: &JoinRequest,
    http: &reqwest::Client,
) -> Result<JoinResponse, ManagerError> {
    let base = op_client::normalize_base_url(join_url)
        .map_err(|e| ManagerError::Config(format!("join: {e}")))?;
    let url = format!("{base}/raft/join");
    let mut last = None;
    // The member may be starting too: a few tries before giving up.
    for attempt in 0..10u32 {
        let call = http
            .post(&url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(30))
            .json(req);
        match send_json::<JoinResponse>(&url, call).await {
            Ok(r) => return Ok(r),
            Err(PeerError::Refused { body, .. }) => {
                return Err(ManagerError::Join(format!(
                    "{url} refused: {}",
                    body.message
                )));
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(500) * (attempt + 1)).await;
            }
        }
    }
    Err(ManagerError::Join(format!(
        "{}; check --join (a member's raft URL)",
        last.map_or_else(|| "no answer".to_string(), |e| e.to_string())
    )))
}

/// Step 2 of joining: asks the member at `join_url` (or any member after a restart) to add this
/// node, and returns once it is a voter.
pub async fn request_membership(
    cluster: &Cluster,
    join_url: &str,
    me: &Member,
) -> Result<(), ManagerError> {
    let req = AddMemberRequest {
        node_id: cluster.id(),
        api_addr: me.api_addr.clone(),
        raft_addr: me.raft_addr.clone(),
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let answer: Result<serde::de::IgnoredAny, PeerError> = cluster
            .peers
            .post(
                join_url,
                "/raft/members",
                &req,
                CATCH_UP_LIMIT + Duration::from_secs(30),
            )
            .await;
        match answer {
            Ok(_) => return Ok(()),
            Err(PeerError::Refused { body, .. }) if body.code != code::NOT_LEADER => {
                return Err(ManagerError::Join(format!(
                    "{join_url} refused to add node {}: {}",
                    cluster.id(),
                    body.message
                )));
            }
            Err(e) if attempt >= 10 => {
                return Err(ManagerError::Join(format!(
                    "could not be added: {e}; the data dir keeps the cluster identity, so starting again with --join retries"
                )));
            }
            Err(e) => {
                tracing::warn!(error = %e, "asking to be added failed; trying again");
                tokio::time::sleep(Duration::from_secs(1) * attempt).await;
            }
        }
    }
}
