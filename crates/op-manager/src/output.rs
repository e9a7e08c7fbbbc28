//! Requests for a run's output file, held in memory on the member the node's agent syncs with.
//!
//! The full output of a run lives in a file on its agent, and agents take no inbound
//! connections, so a reader's request rides the agent's long-poll as a
//! `Directive::UploadOutput` and the agent posts the piece back to the member that asked
//! (`reply_to`). A request is worth nothing once its reader stops waiting, so it is never
//! replicated: `agentcli logs --follow` asks twice a second, and a raft write per poll would wake
//! the node with its full desired state each time (how it once worked).
//!
//! [`OutputRequests`] owns both ends on one member:
//! - the readers waiting here for an agent's answer ([`OutputRequests::wait_for`]), each removed
//!   (with its request, if no sync took it yet) when the reader stops waiting;
//! - per node, the requests to hand to its next sync answer ([`OutputRequests::offer`]) and a
//!   [`Notify`] that wakes its parked sync. A request is handed out once ([`OutputRequests::take`])
//!   and forgotten at its reader's deadline at the latest.
//!
//! It also knows which nodes sync with this member ([`OutputRequests::attach`]), so the reader's
//! member hands a request to itself when it holds the node's sync and forwards it otherwise
//! (`api/output.rs`, over the raft listener's authenticated peer path): to the member that last
//! said it holds the node ([`OutputRequests::member_of`]), else to every other member. It leaves
//! HTTP and peers to those callers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use op_proto::agent::{Directive, OutputChunk};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

/// How long after its last sync call ended a node still counts as syncing with this member: an
/// agent calls again at once after each answer, so only a failing or moving agent leaves a gap.
const SYNC_GRACE: Duration = Duration::from_secs(5);

/// One request for a piece of a run's output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRequest {
    pub request_id: Uuid,
    pub node_id: Uuid,
    pub run_id: Uuid,
    pub offset: u64,
    /// The API URL of the member whose reader waits for the answer.
    pub reply_to: String,
}

impl OutputRequest {
    fn directive(&self) -> Directive {
        Directive::UploadOutput {
            request_id: self.request_id,
            run_id: self.run_id,
            offset: self.offset,
            reply_to: self.reply_to.clone(),
        }
    }
}

/// What this member holds for one node.
#[derive(Debug, Default)]
struct NodeQueue {
    /// Wakes the node's parked sync when a request arrives.
    wake: Arc<Notify>,
    /// Requests not handed out yet, each with the instant its reader stops waiting.
    pending: Vec<(OutputRequest, Instant)>,
    /// Sync calls of this node in progress here.
    syncs: usize,
    /// When the last one ended.
    last_sync: Option<Instant>,
}

impl NodeQueue {
    fn holds_sync(&self, now: Instant) -> bool {
        self.syncs > 0 || self.last_sync.is_some_and(|t| now - t < SYNC_GRACE)
    }
}

type Waiters = HashMap<Uuid, (Uuid, oneshot::Sender<OutputChunk>)>;

/// The output requests and readers of one member (see the module doc).
#[derive(Debug, Default)]
pub struct OutputRequests {
    /// Readers waiting here, by request id, with the node that must answer.
    waiters: Mutex<Waiters>,
    nodes: Mutex<HashMap<Uuid, NodeQueue>>,
    /// For nodes syncing with another member: that member's raft URL, as it last told us.
    members: Mutex<HashMap<Uuid, String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OutputRequests {
    /// Registers a reader of `request`'s answer. Dropping the [`Waiter`] forgets the reader and
    /// the request, if no sync took it yet.
    pub fn wait_for(&self, request: &OutputRequest) -> Waiter<'_> {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(request.request_id, (request.node_id, tx));
        Waiter {
            requests: self,
            request_id: request.request_id,
            node_id: request.node_id,
            answer: Some(rx),
        }
    }

    /// Hands `chunk` to its reader; false when nobody waits for it (any more).
    pub fn deliver(&self, chunk: OutputChunk) -> bool {
        let mut waiters = lock(&self.waiters);
        match waiters.get(&chunk.request_id) {
            // Only the node that was asked may answer.
            Some((node, _)) if *node == chunk.node_id => {}
            _ => return false,
        }
        let (_, tx) = waiters
            .remove(&chunk.request_id)
            .expect("the waiter was just found");
        tx.send(chunk).is_ok()
    }

    /// Queues `request` for its node's next sync answer here, until `ttl` has passed, and wakes
    /// the node's parked sync.
    pub fn offer(&self, request: OutputRequest, ttl: Duration) {
        let now = Instant::now();
        let mut nodes = lock(&self.nodes);
        sweep(&mut nodes, now);
        let queue = nodes.entry(request.node_id).or_default();
        if queue
            .pending
            .iter()
            .any(|(r, _)| r.request_id == request.request_id)
        {
            return;
        }
        queue.pending.push((request, now + ttl));
        queue.wake.notify_waiters();
    }

    /// True when `node` syncs with this member (a call in progress, or one that just ended).
    pub fn holds(&self, node: Uuid) -> bool {
        lock(&self.nodes)
            .get(&node)
            .is_some_and(|q| q.holds_sync(Instant::now()))
    }

    /// Marks a sync call of `node` in progress until the [`Attached`] is dropped; its `wake` is
    /// notified when a request for the node arrives.
    pub fn attach(&self, node: Uuid) -> Attached<'_> {
        let mut nodes = lock(&self.nodes);
        let queue = nodes.entry(node).or_default();
        queue.syncs += 1;
        Attached {
            requests: self,
            node,
            wake: queue.wake.clone(),
        }
    }

    /// True when a request waits for `node`.
    pub fn has_pending(&self, node: Uuid) -> bool {
        let now = Instant::now();
        lock(&self.nodes)
            .get(&node)
            .is_some_and(|q| q.pending.iter().any(|(_, until)| *until > now))
    }

    /// The requests waiting for `node`, as directives, handed out once.
    pub fn take(&self, node: Uuid) -> Vec<Directive> {
        let now = Instant::now();
        let mut nodes = lock(&self.nodes);
        let Some(queue) = nodes.get_mut(&node) else {
            return Vec::new();
        };
        std::mem::take(&mut queue.pending)
            .into_iter()
            .filter(|(_, until)| *until > now)
            .map(|(r, _)| r.directive())
            .collect()
    }

    /// The member (raft URL) `node` was last found syncing with, if another member said so.
    pub fn member_of(&self, node: Uuid) -> Option<String> {
        lock(&self.members).get(&node).cloned()
    }

    /// What member `base` answered about `node`: it holds the node's sync, or it does not (any
    /// more), which sends the node's next request to every member again.
    pub fn learn_member(&self, node: Uuid, base: &str, held: bool) {
        let mut members = lock(&self.members);
        if held {
            members.insert(node, base.to_string());
        } else if members.get(&node).is_some_and(|m| m == base) {
            members.remove(&node);
        }
    }

    /// Requests queued here and readers waiting here (for tests and metrics).
    pub fn counts(&self) -> (usize, usize) {
        let pending = lock(&self.nodes).values().map(|q| q.pending.len()).sum();
        (pending, lock(&self.waiters).len())
    }

    fn withdraw(&self, node: Uuid, request_id: Uuid) {
        lock(&self.waiters).remove(&request_id);
        if let Some(q) = lock(&self.nodes).get_mut(&node) {
            q.pending.retain(|(r, _)| r.request_id != request_id);
        }
    }
}

/// Drops expired requests, and the queues of nodes that neither sync here nor wait for anything.
fn sweep(nodes: &mut HashMap<Uuid, NodeQueue>, now: Instant) {
    nodes.retain(|_, q| {
        q.pending.retain(|(_, until)| *until > now);
        !q.pending.is_empty() || q.holds_sync(now)
    });
}

/// A reader waiting for an agent's answer (see [`OutputRequests::wait_for`]).
#[derive(Debug)]
pub struct Waiter<'a> {
    requests: &'a OutputRequests,
    request_id: Uuid,
    node_id: Uuid,
    answer: Option<oneshot::Receiver<OutputChunk>>,
}

impl Waiter<'_> {
    /// The agent's answer, or None when it did not come within `wait` or `stop` fired first.
    pub async fn answer(
        &mut self,
        wait: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Option<OutputChunk> {
        let rx = self.answer.take()?;
        tokio::select! {
            c = rx => c.ok(),
            _ = tokio::time::sleep(wait) => None,
            _ = stop => None,
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.requests.withdraw(self.node_id, self.request_id);
    }
}

/// A sync call of one node in progress on this member (see [`OutputRequests::attach`]).
#[derive(Debug)]
pub struct Attached<'a> {
    requests: &'a OutputRequests,
    node: Uuid,
    /// Notified when a request for the node arrives.
    pub wake: Arc<Notify>,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        if let Some(q) = lock(&self.requests.nodes).get_mut(&self.node) {
            q.syncs = q.syncs.saturating_sub(1);
            q.last_sync = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(node_id: Uuid) -> OutputRequest {
        OutputRequest {
            request_id: Uuid::now_v7(),
            node_id,
            run_id: Uuid::now_v7(),
            offset: 7,
            reply_to: "http://127.0.0.1:1".into(),
        }
    }

    #[test]
    fn a_request_is_handed_out_once_and_forgotten_with_its_reader() {
        let requests = OutputRequests::default();
        let node = Uuid::now_v7();
        let r = request(node);
        let waiter = requests.wait_for(&r);
        requests.offer(r.clone(), Duration::from_secs(10));
        requests.offer(r.clone(), Duration::from_secs(10));
        assert!(requests.has_pending(node));
        assert_eq!(requests.take(node), vec![r.directive()]);
        assert!(requests.take(node).is_empty(), "handed out once");
        assert_eq!(requests.counts(), (0, 1));

        let other = request(node);
        let waiter2 = requests.wait_for(&other);
        requests.offer(other, Duration::from_secs(10));
        drop(waiter2);
        drop(waiter);
        assert_eq!(requests.counts(), (0, 0), "readers gone, nothing kept");
    }

    #[test]
    fn an_expired_request_is_not_handed_out() {
        let requests = OutputRequests::default();
        let node = Uuid::now_v7();
        requests.offer(request(node), Duration::ZERO);
        assert!(!requests.has_pending(node));
        assert!(requests.take(node).is_empty());
    }

    #[test]
    fn only_the_asked_node_answers() {
        let requests = OutputRequests::default();
        let node = Uuid::now_v7();
        let r = request(node);
        let mut waiter = requests.wait_for(&r);
        let chunk = |node_id| OutputChunk {
            request_id: r.request_id,
            run_id: r.run_id,
            node_id,
            offset: 7,
            data: String::new(),
            size: 7,
            finished: true,
            error: None,
        };
        assert!(!requests.deliver(chunk(Uuid::now_v7())));
        assert!(requests.deliver(chunk(node)));
        assert!(!requests.deliver(chunk(node)), "answered once");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let got = rt.block_on(waiter.answer(Duration::from_secs(1), std::future::pending()));
        assert_eq!(got.map(|c| c.node_id), Some(node));
    }

    #[test]
    fn the_member_a_node_syncs_with_is_remembered_until_it_says_otherwise() {
        let requests = OutputRequests::default();
        let node = Uuid::now_v7();
        requests.learn_member(node, "http://b", false);
        assert_eq!(requests.member_of(node), None);
        requests.learn_member(node, "http://b", true);
        requests.learn_member(node, "http://c", false);
        assert_eq!(requests.member_of(node).as_deref(), Some("http://b"));
        requests.learn_member(node, "http://b", false);
        assert_eq!(requests.member_of(node), None);
    }

    #[test]
    fn a_node_is_held_while_it_syncs_and_shortly_after() {
        let requests = OutputRequests::default();
        let node = Uuid::now_v7();
        assert!(!requests.holds(node));
        let attached = requests.attach(node);
        assert!(requests.holds(node));
        drop(attached);
        assert!(requests.holds(node), "within the grace after a call");
    }
}
