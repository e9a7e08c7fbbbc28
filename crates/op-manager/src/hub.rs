//! The agent sync hub: who must be woken when the applied state changes, and each node's desired
//! state computed from one shared, cached view.
//!
//! The state machine calls [`Hub::applied`] after every applied batch. A change that can alter some
//! node's desired state (jobs, registrations, once-job targets) or node status bumps a local
//! sequence number on a `watch` channel; parked sync calls wake, fetch the view (rebuilt once per
//! sequence number, not once per agent) and return only if *their* node's index moved. Heartbeat
//! flushes and run ingestion that touch no target do not bump it, so 10,000 parked agents are not
//! woken every few seconds.
//!
//! Packages ride in the same view: every node must hold the current version of every package, so
//! an upload or rollback is a change for all nodes.
//!
//! Directives (ad-hoc runs and kills of invocations) are part of each node's desired state: a
//! release bumps the node's own index, so only that node's parked sync wakes. Invocation progress
//! (a host's result, a release, an expiry) bumps a second watch channel that waiting NDJSON streams
//! and the leader's fan-out driver follow; it never wakes agents.
//!
//! The view is rebuilt whole only when jobs or packages changed. A change that concerns some nodes only (a
//! registration, a status change, a once-job target moving) re-reads just those nodes, so a storm
//! of 10,000 agents registering after a restart costs 10,000 small reads, not 10,000 full ones.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use op_proto::NodeStatus;
use op_proto::agent::{DesiredJob, Directive};
use op_proto::api::JobRecord;
use op_proto::hosts::{HostIdentity, HostSelector};
use op_proto::package::PackageRef;
use op_store::{Changes, Store, StoreError};
use tokio::sync::{Mutex, Notify, watch};
use uuid::Uuid;

/// A node as the hub needs it.
#[derive(Debug, Clone)]
pub struct CachedNode {
    pub identity: HostIdentity,
    pub status: NodeStatus,
    /// Log index of the last change of this node's own desired state.
    pub desired_index: u64,
}

/// Everything needed to answer any node's sync, as of one sequence number.
#[derive(Debug, Default)]
pub struct DesiredCache {
    pub seq: u64,
    /// The quiet sequence this cache was built at (see [`Hub::applied`]).
    quiet: u64,
    /// Log index of the last change that concerned every node.
    pub desired_index: u64,
    jobs: Arc<Vec<(JobRecord, HostSelector)>>,
    nodes: HashMap<Uuid, CachedNode>,
    pending: HashMap<Uuid, HashSet<(String, u64)>>,
    /// The current version of every package; every node holds all of them.
    packages: Arc<Vec<PackageRef>>,
    directives: HashMap<Uuid, Vec<Directive>>,
}

fn by_node(list: Vec<(Uuid, Directive)>) -> HashMap<Uuid, Vec<Directive>> {
    let mut out: HashMap<Uuid, Vec<Directive>> = HashMap::new();
    for (node, d) in list {
        out.entry(node).or_default().push(d);
    }
    out
}

impl DesiredCache {
    fn build(seq: u64, quiet: u64, view: op_store::DesiredView) -> DesiredCache {
        let mut pending: HashMap<Uuid, HashSet<(String, u64)>> = HashMap::new();
        for (node, job, revision) in view.pending {
            pending.entry(node).or_default().insert((job, revision));
        }
        DesiredCache {
            seq,
            quiet,
            desired_index: view.desired_index,
            jobs: Arc::new(
                view.jobs
                    .into_iter()
                    .map(|j| {
                        let selector = j.spec.selector();
                        (j, selector)
                    })
                    .collect(),
            ),
            nodes: view.nodes.into_iter().map(cached).collect(),
            pending,
            packages: Arc::new(view.packages),
            directives: by_node(view.directives),
        }
    }

    /// A copy of `self` with the records of `part`'s nodes replaced.
    fn refreshed(
        &self,
        seq: u64,
        quiet: u64,
        ids: &BTreeSet<Uuid>,
        part: op_store::NodesView,
    ) -> DesiredCache {
        let mut nodes = self.nodes.clone();
        let mut pending = self.pending.clone();
        let mut directives = self.directives.clone();
        for id in ids {
            nodes.remove(id);
            pending.remove(id);
            directives.remove(id);
        }
        directives.extend(by_node(part.directives));
        nodes.extend(part.nodes.into_iter().map(cached));
        for (node, job, revision) in part.pending {
            pending.entry(node).or_default().insert((job, revision));
        }
        DesiredCache {
            seq,
            quiet,
            desired_index: self.desired_index,
            jobs: self.jobs.clone(),
            nodes,
            pending,
            packages: self.packages.clone(),
            directives,
        }
    }

    /// The directives (ad-hoc runs, kills) this node must receive now.
    pub fn directives_for(&self, id: Uuid) -> Vec<Directive> {
        self.directives.get(&id).cloned().unwrap_or_default()
    }

    pub fn node(&self, id: Uuid) -> Option<&CachedNode> {
        self.nodes.get(&id)
    }

    /// The index an agent passes back: it moves whenever this node's desired state may change.
    pub fn index_for(&self, id: Uuid) -> u64 {
        let own = self.nodes.get(&id).map_or(0, |n| n.desired_index);
        self.desired_index.max(own)
    }

    /// The jobs this node must hold: enabled jobs whose selector matches it, and once-jobs only
    /// while it is a pending target of their current revision.
    pub fn jobs_for(&self, id: Uuid) -> Vec<DesiredJob> {
        let Some(node) = self.nodes.get(&id) else {
            return Vec::new();
        };
        let pending = self.pending.get(&id);
        self.jobs
            .iter()
            .filter(|(job, selector)| {
                if job.spec.once_job {
                    pending.is_some_and(|p| p.contains(&(job.spec.name.clone(), job.revision)))
                } else {
                    selector.matches(&node.identity)
                }
            })
            .map(|(job, _)| DesiredJob {
                revision: job.revision,
                spec: job.spec.clone(),
            })
            .collect()
    }
}

impl DesiredCache {
    /// The packages every node must hold: the current version of each.
    pub fn packages(&self) -> Vec<PackageRef> {
        self.packages.as_ref().clone()
    }
}

fn cached((n, index): (op_proto::NodeInfo, u64)) -> (Uuid, CachedNode) {
    (
        n.node_id,
        CachedNode {
            identity: n.identity(),
            status: n.status,
            desired_index: index,
        },
    )
}

/// What changed since the view was last built.
#[derive(Debug, Default)]
struct Dirty {
    full: bool,
    nodes: BTreeSet<Uuid>,
}

#[derive(Debug)]
pub struct Hub {
    dirty: std::sync::Mutex<Dirty>,
    seq: watch::Sender<u64>,
    /// Bumped for changes that alter some node's desired state without anything for the node to
    /// act on (a directive that ended): the next view refreshes those nodes, nobody is woken.
    quiet: AtomicU64,
    /// Bumped when any invocation's progress changed (see the module doc).
    invocations: watch::Sender<u64>,
    tokens_seq: AtomicU64,
    cache: Mutex<Option<Arc<DesiredCache>>>,
    /// Bytes of run records stored since the last prune, and the level that triggers one early.
    ingested_bytes: AtomicU64,
    prune_threshold: u64,
    prune_now: Notify,
    /// A package version was deleted: blob GC should run now rather than at its next tick.
    blob_gc_now: Notify,
    /// A package version was added (or the whole state replaced): check that every referenced
    /// blob is here.
    blob_sync_now: Notify,
}

impl Hub {
    pub fn new(prune_threshold: u64) -> Hub {
        Hub {
            dirty: std::sync::Mutex::new(Dirty {
                full: true,
                nodes: BTreeSet::new(),
            }),
            seq: watch::Sender::new(1),
            quiet: AtomicU64::new(0),
            invocations: watch::Sender::new(1),
            tokens_seq: AtomicU64::new(1),
            cache: Mutex::new(None),
            ingested_bytes: AtomicU64::new(0),
            prune_threshold,
            prune_now: Notify::new(),
            blob_gc_now: Notify::new(),
            blob_sync_now: Notify::new(),
        }
    }

    /// Called by the state machine after each applied batch.
    pub fn applied(&self, changes: &Changes) {
        if changes.desired() || !changes.nodes.is_empty() {
            // Record what is dirty BEFORE bumping the sequence: a reader that sees the new
            // sequence must also find its cause.
            if let Ok(mut d) = self.dirty.lock() {
                d.full |= changes.desired_all;
                d.nodes.extend(changes.desired_nodes.iter().copied());
                d.nodes.extend(changes.nodes.iter().copied());
            }
            self.seq.send_modify(|s| *s += 1);
        }
        if !changes.directives_ended.is_empty() {
            if let Ok(mut d) = self.dirty.lock() {
                d.nodes.extend(changes.directives_ended.iter().copied());
            }
            self.quiet.fetch_add(1, Ordering::SeqCst);
        }
        if changes.tokens {
            self.tokens_seq.fetch_add(1, Ordering::SeqCst);
        }
        if changes.blobs_released {
            self.blob_gc_now.notify_one();
        }
        if !changes.invocations.is_empty() {
            self.invocations.send_modify(|s| *s += 1);
        }
        if changes.blobs_added {
            self.blob_sync_now.notify_one();
        }
        if changes.run_bytes > 0 {
            let total = self
                .ingested_bytes
                .fetch_add(changes.run_bytes, Ordering::Relaxed)
                + changes.run_bytes;
            if self.prune_threshold > 0 && total >= self.prune_threshold {
                self.prune_now.notify_one();
            }
        }
    }

    /// Called after a snapshot replaced the whole state.
    pub fn reset(&self) {
        if let Ok(mut d) = self.dirty.lock() {
            d.full = true;
        }
        self.seq.send_modify(|s| *s += 1);
        self.invocations.send_modify(|s| *s += 1);
        self.tokens_seq.fetch_add(1, Ordering::SeqCst);
        self.blob_sync_now.notify_one();
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.seq.subscribe()
    }

    /// Changes whenever some invocation progressed (created, advanced, a host's result).
    pub fn subscribe_invocations(&self) -> watch::Receiver<u64> {
        self.invocations.subscribe()
    }

    pub fn tokens_seq(&self) -> u64 {
        self.tokens_seq.load(Ordering::SeqCst)
    }

    /// Resolves when enough run bytes arrived that retention should run before its next tick.
    pub async fn prune_wanted(&self) {
        self.prune_now.notified().await;
    }

    /// Resolves when a package version was deleted, so its blob may be garbage now.
    pub async fn blob_gc_wanted(&self) {
        self.blob_gc_now.notified().await;
    }

    /// Resolves when a package version was added or a snapshot installed: this manager may now
    /// lack a blob the store refers to.
    pub async fn blob_sync_wanted(&self) {
        self.blob_sync_now.notified().await;
    }

    /// Called by retention after a prune.
    pub fn pruned(&self) {
        self.ingested_bytes.store(0, Ordering::Relaxed);
    }

    /// The desired-state view for the current sequence number, rebuilt at most once per change.
    pub async fn view(&self, store: &Arc<Store>) -> Result<Arc<DesiredCache>, StoreError> {
        let mut cache = self.cache.lock().await;
        // Read the sequence before the store: a change applied meanwhile leaves the cache tagged
        // older than its content, which only costs one extra rebuild.
        let seq = *self.seq.borrow();
        let quiet = self.quiet.load(Ordering::SeqCst);
        if let Some(c) = cache.as_ref().filter(|c| c.seq == seq && c.quiet == quiet) {
            return Ok(c.clone());
        }
        let dirty = match self.dirty.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => Dirty {
                full: true,
                nodes: BTreeSet::new(),
            },
        };
        let store = store.clone();
        let result = match cache.as_ref() {
            Some(old) if !dirty.full => {
                let ids: Vec<Uuid> = dirty.nodes.iter().copied().collect();
                tokio::task::spawn_blocking(move || store.desired_nodes(&ids))
                    .await
                    .map_err(|_| StoreError::Poisoned)
                    .and_then(|r| r)
                    .map(|part| old.refreshed(seq, quiet, &dirty.nodes, part))
            }
            _ => tokio::task::spawn_blocking(move || store.desired_view())
                .await
                .map_err(|_| StoreError::Poisoned)
                .and_then(|r| r)
                .map(|view| DesiredCache::build(seq, quiet, view)),
        };
        let built = match result {
            Ok(b) => Arc::new(b),
            Err(e) => {
                // What we took is lost: the next caller rebuilds everything.
                if let Ok(mut d) = self.dirty.lock() {
                    d.full = true;
                }
                return Err(e);
            }
        };
        *cache = Some(built.clone());
        Ok(built)
    }
}
