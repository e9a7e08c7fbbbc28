//! The agent sync hub: who must be woken when the applied state changes, and each node's desired
//! state computed from one shared, cached view.
//!
//! The state machine calls [`Hub::applied`] after every applied batch. Two kinds of change wake
//! parked sync calls, and each wakes only those it concerns:
//! - a change of the jobs or packages (or a snapshot) can alter every node's desired state: it bumps the
//!   `seq` watch channel that every parked call listens to, and the next reader reads the jobs
//!   and pending once-job targets again, once (not once per agent). The node records are not
//!   read again for a job change; only a snapshot rebuilds the whole view;
//! - a change that concerns some nodes only (a registration, a status change, a once-job target
//!   moving) wakes just those nodes' parked calls through their [`Notify`], and the next reader
//!   re-reads just those nodes and updates them in place.
//!
//! Packages ride in the same view: every node must hold the current version of every package, so
//! an upload or rollback is a change for all nodes, like a job change.
//! Staged rollouts (issue 21) ride there too: the view holds the active rollouts, and a node
//! outside a rollout's admitted stages is answered the previous job revision or package version
//! (`op_store::ActiveRollout::filter_jobs`/`filter_packages`); every threshold change is a change for all
//! nodes.
//!
//! Directives (ad-hoc runs and kills of invocations) are part of each node's desired state: a
//! release bumps the node's own index, so only that node's parked sync wakes. A directive that
//! ended changes what the node is sent without anything for it to act on: the node is re-read on
//! the next refresh and nobody is woken. Invocation progress (a host's result, a release, an
//! expiry) bumps a second watch channel that waiting NDJSON streams and the leader's fan-out driver
//! follow; it never wakes agents.
//!
//! So a storm of 10,000 agents registering after a restart costs 10,000 small reads and 10,000
//! wake-ups, not 10,000 × 10,000: an earlier version woke every parked call for every
//! registration and rebuilt the view as a full copy for each, which made the ramp to 10,000
//! agents quadratic in CPU and left the manager at 1.3 GB RSS (`op-bench propagation`,
//! BENCHMARKS.md). Heartbeat flushes and run ingestion that touch no target wake no one.
//!
//! **Invariant:** a reader never answers from a view older than a change it was woken for. Changes
//! are recorded as dirty *before* `dirty_gen` moves and before anyone is woken; a reader
//! refreshes whenever the view was built before the current `dirty_gen`, and a refresh records
//! the generation it read *before* taking the dirty set.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use op_proto::NodeStatus;
use op_proto::agent::{DesiredJob, Directive};
use op_proto::api::JobRecord;
use op_proto::hosts::{HostIdentity, HostSelector};
use op_proto::package::PackageRef;
use op_store::{Changes, Store, StoreError};
use tokio::sync::{Mutex, Notify, watch};
use uuid::Uuid;

/// What a parked sync call checks when it wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    /// The index the agent passes back: it moves whenever this node's desired state may change.
    pub index: u64,
    pub status: NodeStatus,
}

/// What a sync call answers for one node, read from one view.
#[derive(Debug)]
pub struct NodeDesired {
    pub state: NodeState,
    pub jobs: Vec<DesiredJob>,
    pub packages: Vec<PackageRef>,
    pub directives: Vec<Directive>,
    /// The labels `jobs` were selected by (the agent's own and manager-set).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The node is drained (`agentcli drain`): its agent starts no new runs.
    pub draining: bool,
    /// The hash of the facts `jobs` were selected by ("" when none were reported).
    pub facts_hash: String,
}

/// A node as the hub needs it.
#[derive(Debug, Clone)]
struct CachedNode {
    identity: HostIdentity,
    status: NodeStatus,
    /// Log index of the last change of this node's own desired state.
    desired_index: u64,
    /// Once-jobs (name, revision) this node is a pending target of.
    pending: HashSet<(String, u64)>,
    /// Live directives (ad-hoc runs, kills) for this node.
    directives: Vec<Directive>,
    draining: bool,
}

/// Everything needed to answer any node's sync.
#[derive(Debug, Default)]
struct DesiredCache {
    /// The `dirty_gen` this view includes every change up to.
    built_gen: u64,
    /// Log index of the last change that concerned every node.
    desired_index: u64,
    jobs: Vec<(JobRecord, HostSelector)>,
    nodes: HashMap<Uuid, CachedNode>,
    /// The current version of every package with its targeting (an empty selector: every node).
    packages: Vec<(PackageRef, HostSelector)>,
    /// The rollouts deciding what each node gets (issue 21; `crate::rollouts`).
    rollouts: Vec<op_store::ActiveRollout>,
}

impl DesiredCache {
    fn build(built_gen: u64, view: op_store::DesiredView) -> DesiredCache {
        let mut cache = DesiredCache {
            built_gen,
            desired_index: view.desired_index,
            jobs: view
                .jobs
                .into_iter()
                .map(|j| {
                    let selector = j.spec.selector();
                    (j, selector)
                })
                .collect(),
            nodes: HashMap::new(),
            packages: view.packages,
            rollouts: view.rollouts,
        };
        cache.put(view.nodes, view.pending, view.directives);
        cache
    }

    /// Replaces the jobs, the packages and every node's pending targets; the node records stay.
    fn set_jobs(&mut self, view: op_store::JobsView) {
        self.desired_index = view.desired_index;
        self.packages = view.packages;
        self.rollouts = view.rollouts;
        self.jobs = view
            .jobs
            .into_iter()
            .map(|j| {
                let selector = j.spec.selector();
                (j, selector)
            })
            .collect();
        for node in self.nodes.values_mut() {
            node.pending.clear();
        }
        for (node, job, revision) in view.pending {
            if let Some(n) = self.nodes.get_mut(&node) {
                n.pending.insert((job, revision));
            }
        }
    }

    /// Replaces the records of `ids` with those read from the store (a node missing from `part`
    /// is gone).
    fn refresh(&mut self, built_gen: u64, ids: &BTreeSet<Uuid>, part: op_store::NodesView) {
        for id in ids {
            self.nodes.remove(id);
        }
        self.put(part.nodes, part.pending, part.directives);
        self.built_gen = built_gen;
    }

    fn put(
        &mut self,
        nodes: Vec<(op_proto::NodeInfo, u64)>,
        pending: Vec<(Uuid, String, u64)>,
        directives: Vec<(Uuid, Directive)>,
    ) {
        for (n, index) in nodes {
            self.nodes.insert(
                n.node_id,
                CachedNode {
                    identity: n.identity(),
                    status: n.status,
                    desired_index: index,
                    pending: HashSet::new(),
                    directives: Vec::new(),
                    draining: n.drain.is_some(),
                },
            );
        }
        for (node, job, revision) in pending {
            if let Some(n) = self.nodes.get_mut(&node) {
                n.pending.insert((job, revision));
            }
        }
        for (node, d) in directives {
            if let Some(n) = self.nodes.get_mut(&node) {
                n.directives.push(d);
            }
        }
    }

    fn answer(&self, id: Uuid) -> Option<NodeDesired> {
        Some(NodeDesired {
            state: self.state(id)?,
            jobs: op_store::ActiveRollout::filter_jobs(
                &self.rollouts,
                id,
                &self.nodes.get(&id)?.identity,
                self.jobs_for(id),
            ),
            packages: op_store::ActiveRollout::filter_packages(
                &self.rollouts,
                id,
                self.packages_for(id),
            ),
            directives: self.nodes.get(&id)?.directives.clone(),
            labels: self.nodes.get(&id)?.identity.labels.clone(),
            draining: self.nodes.get(&id)?.draining,
            facts_hash: self
                .nodes
                .get(&id)?
                .identity
                .facts
                .as_ref()
                .map(|f| f.hash())
                .unwrap_or_default(),
        })
    }

    fn state(&self, id: Uuid) -> Option<NodeState> {
        let node = self.nodes.get(&id)?;
        Some(NodeState {
            index: self.desired_index.max(node.desired_index),
            status: node.status,
        })
    }

    /// The packages this node must hold: the current version of each package whose targeting
    /// (white, black, labels: a job's selector grammar) matches the node. A package that stops
    /// matching leaves the answer; the agent then stops reporting it and leaves its files alone.
    fn packages_for(&self, id: Uuid) -> Vec<PackageRef> {
        let Some(node) = self.nodes.get(&id) else {
            return Vec::new();
        };
        self.packages
            .iter()
            .filter(|(_, target)| target.matches(&node.identity))
            .map(|(package, _)| package.clone())
            .collect()
    }

    /// The jobs this node must hold: enabled jobs whose selector matches it, and once-jobs only
    /// while it is a pending target of their current revision.
    fn jobs_for(&self, id: Uuid) -> Vec<DesiredJob> {
        let Some(node) = self.nodes.get(&id) else {
            return Vec::new();
        };
        self.jobs
            .iter()
            .filter(|(job, selector)| {
                if job.spec.once_job {
                    node.pending
                        .contains(&(job.spec.name.clone(), job.revision))
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

/// What changed since the view was last built.
#[derive(Debug, Default)]
struct Dirty {
    /// Read everything again (at start, after a snapshot, after a failed refresh).
    all: bool,
    /// The jobs changed: read the jobs and the pending targets again, not the nodes.
    jobs: bool,
    nodes: BTreeSet<Uuid>,
}

#[derive(Debug)]
pub struct Hub {
    dirty: std::sync::Mutex<Dirty>,
    /// Moves after every change recorded in `dirty`.
    dirty_gen: AtomicU64,
    /// Bumped when every node's desired state may have changed (jobs, packages, a snapshot).
    seq: watch::Sender<u64>,
    /// Bumped when any invocation's progress changed (see the module doc).
    invocations: watch::Sender<u64>,
    /// Bumped when events were appended (followers of `GET /v1/events` read again).
    events: watch::Sender<u64>,
    /// Woken when one node's record or own desired state changed; one per node that has synced.
    wakers: std::sync::Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// The view. Readers hold the lock only to compute one node's answer; a refresh reads the
    /// store first and takes the write lock only to put the result in.
    cache: RwLock<DesiredCache>,
    /// One refresh at a time; the others wait for it and then find the view fresh.
    refreshing: Mutex<()>,
    tokens_seq: AtomicU64,
    /// Bytes of run records stored since the last prune, and the level that triggers one early.
    ingested_bytes: AtomicU64,
    prune_threshold: u64,
    prune_now: Notify,
    /// A package version was deleted: blob GC should run now rather than at its next tick.
    blob_gc_now: Notify,
    /// A package version was added (or the whole state replaced): check that every referenced
    /// blob is here.
    blob_sync_now: Notify,
    /// The pauses and windows as last read, with the `seq` they were read at (issue 23).
    holds: std::sync::Mutex<Option<(u64, Arc<FleetHolds>)>>,
}

/// The pauses and maintenance windows every agent is sent.
#[derive(Debug, Default)]
pub struct FleetHolds {
    pub pauses: Vec<op_proto::holds::Pause>,
    pub windows: Vec<op_proto::holds::Window>,
}

impl Hub {
    /// The pauses and windows, read again only after a change that concerned every node (a pause
    /// or window change bumps `seq`).
    pub async fn holds(&self, store: &Arc<Store>) -> Result<Arc<FleetHolds>, StoreError> {
        // The generation before the store: a change in between only makes the next call read again.
        let generation = *self.seq.borrow();
        if let Ok(cached) = self.holds.lock()
            && let Some((g, h)) = cached.as_ref()
            && *g == generation
        {
            return Ok(h.clone());
        }
        let s = store.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<FleetHolds, StoreError> {
            Ok(FleetHolds {
                pauses: s.pauses()?,
                windows: s.windows()?,
            })
        })
        .await
        .map_err(|_| StoreError::Poisoned)??;
        let read = Arc::new(read);
        if let Ok(mut cached) = self.holds.lock() {
            *cached = Some((generation, read.clone()));
        }
        Ok(read)
    }

    pub fn new(prune_threshold: u64) -> Hub {
        Hub {
            dirty: std::sync::Mutex::new(Dirty {
                all: true,
                ..Dirty::default()
            }),
            // The empty view was built at generation 0; the first reader builds the real one.
            dirty_gen: AtomicU64::new(1),
            seq: watch::Sender::new(1),
            invocations: watch::Sender::new(1),
            events: watch::Sender::new(1),
            wakers: std::sync::Mutex::new(HashMap::new()),
            cache: RwLock::new(DesiredCache::default()),
            refreshing: Mutex::new(()),
            tokens_seq: AtomicU64::new(1),
            ingested_bytes: AtomicU64::new(0),
            prune_threshold,
            prune_now: Notify::new(),
            blob_gc_now: Notify::new(),
            blob_sync_now: Notify::new(),
            holds: std::sync::Mutex::new(None),
        }
    }

    /// Called by the state machine after each applied batch.
    pub fn applied(&self, changes: &Changes) {
        if changes.desired() || !changes.nodes.is_empty() {
            // Record what is dirty BEFORE moving the generation or waking anyone: a reader that
            // is woken, or sees the new generation, must also find the cause.
            if let Ok(mut d) = self.dirty.lock() {
                d.jobs |= changes.desired_all;
                d.nodes.extend(changes.desired_nodes.iter().copied());
                d.nodes.extend(changes.nodes.iter().copied());
            }
            self.dirty_gen.fetch_add(1, Ordering::SeqCst);
            if changes.desired_all {
                self.seq.send_modify(|s| *s += 1);
            } else if let Ok(wakers) = self.wakers.lock() {
                for id in changes.desired_nodes.iter().chain(&changes.nodes) {
                    if let Some(w) = wakers.get(id) {
                        w.notify_waiters();
                    }
                }
            }
        }
        if !changes.directives_ended.is_empty() {
            // The next reader re-reads these nodes; nobody is woken (nothing to act on).
            if let Ok(mut d) = self.dirty.lock() {
                d.nodes.extend(changes.directives_ended.iter().copied());
            }
            self.dirty_gen.fetch_add(1, Ordering::SeqCst);
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
        if changes.events > 0 {
            self.events.send_modify(|s| *s += 1);
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
            d.all = true;
        }
        self.dirty_gen.fetch_add(1, Ordering::SeqCst);
        self.seq.send_modify(|s| *s += 1);
        self.invocations.send_modify(|s| *s += 1);
        self.events.send_modify(|s| *s += 1);
        self.tokens_seq.fetch_add(1, Ordering::SeqCst);
        self.blob_sync_now.notify_one();
    }

    /// Changes whenever every node's desired state may have changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.seq.subscribe()
    }

    /// Changes whenever some invocation progressed (created, advanced, a host's result).
    pub fn subscribe_invocations(&self) -> watch::Receiver<u64> {
        self.invocations.subscribe()
    }

    /// Changes whenever events were appended (or the whole state replaced).
    pub fn subscribe_events(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// Notified whenever `node`'s own record or desired state changes. Enable a `notified()`
    /// future before reading the node's state, so a change in between is not missed.
    pub fn waker(&self, node: Uuid) -> Arc<Notify> {
        match self.wakers.lock() {
            Ok(mut w) => w.entry(node).or_default().clone(),
            // A poisoned map only costs this call its per-node wake-ups; the wait still ends.
            Err(_) => Arc::new(Notify::new()),
        }
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

    /// The state of `node` (None when it is unknown) from a view that includes every change
    /// applied so far.
    pub async fn node(
        &self,
        store: &Arc<Store>,
        node: Uuid,
    ) -> Result<Option<NodeState>, StoreError> {
        self.fresh(store).await?;
        Ok(self.read(|c| c.state(node)))
    }

    /// What a sync call answers: the node's state, jobs, packages and directives, read together.
    pub async fn desired(
        &self,
        store: &Arc<Store>,
        node: Uuid,
    ) -> Result<Option<NodeDesired>, StoreError> {
        self.fresh(store).await?;
        Ok(self.read(|c| c.answer(node)))
    }

    /// Forgets the wakers no parked call holds (nodes that left, agents gone).
    fn forget_idle_wakers(&self) {
        if let Ok(mut w) = self.wakers.lock() {
            w.retain(|_, n| Arc::strong_count(n) > 1);
        }
    }

    fn read<T>(&self, f: impl FnOnce(&DesiredCache) -> Option<T>) -> Option<T> {
        // A poisoned lock means a refresh panicked half-way; the content is still a valid view.
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        f(&cache)
    }

    fn built_gen(&self) -> u64 {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .built_gen
    }

    /// Brings the view up to date with every change applied so far: everything after a
    /// snapshot, the jobs and pending targets after a job change, and the nodes that changed.
    async fn fresh(&self, store: &Arc<Store>) -> Result<(), StoreError> {
        if self.built_gen() >= self.dirty_gen.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _one = self.refreshing.lock().await;
        // Read the generation before taking the dirty set: a change recorded meanwhile leaves
        // the view tagged older than its content, which only costs one extra refresh.
        let generation = self.dirty_gen.load(Ordering::SeqCst);
        if self.built_gen() >= generation {
            return Ok(());
        }
        let dirty = match self.dirty.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => Dirty {
                all: true,
                ..Dirty::default()
            },
        };
        // This future is dropped half-way when its sync call goes away (an agent that cancels
        // its long-poll to report a deploy does). What was taken then goes back, or the change
        // would never reach the view: the next refresh would find nothing dirty and stamp the
        // stale view as current (seen as a saved job that no agent ever received).
        let mut taken = TakenDirty {
            hub: self,
            dirty: Some(dirty),
        };
        let dirty = taken.dirty.as_ref().expect("just put");
        let store = store.clone();
        let ids: Vec<Uuid> = dirty.nodes.iter().copied().collect();
        let result = if dirty.all {
            tokio::task::spawn_blocking(move || store.desired_view())
                .await
                .map_err(|_| StoreError::Poisoned)
                .and_then(|r| r)
                .map(|view| {
                    *self.cache.write().unwrap_or_else(|p| p.into_inner()) =
                        DesiredCache::build(generation, view);
                    self.forget_idle_wakers();
                })
        } else if dirty.jobs {
            tokio::task::spawn_blocking(move || {
                Ok::<_, StoreError>((store.desired_jobs()?, store.desired_nodes(&ids)?))
            })
            .await
            .map_err(|_| StoreError::Poisoned)
            .and_then(|r| r)
            .map(|(jobs, part)| {
                let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
                cache.set_jobs(jobs);
                cache.refresh(generation, &dirty.nodes, part);
                drop(cache);
                self.forget_idle_wakers();
            })
        } else {
            tokio::task::spawn_blocking(move || store.desired_nodes(&ids))
                .await
                .map_err(|_| StoreError::Poisoned)
                .and_then(|r| r)
                .map(|part| {
                    self.cache
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .refresh(generation, &dirty.nodes, part)
                })
        };
        if result.is_ok() {
            taken.dirty = None;
        }
        // On an error `taken` puts the changes back for the next caller.
        result
    }
}

/// Changes a refresh took from [`Hub::dirty`] and has not yet put in the view. Dropped while it
/// still holds them (the refresh failed, or its future was dropped), it gives them back.
struct TakenDirty<'a> {
    hub: &'a Hub,
    dirty: Option<Dirty>,
}

impl Drop for TakenDirty<'_> {
    fn drop(&mut self) {
        let Some(taken) = self.dirty.take() else {
            return;
        };
        // A poisoned set needs nothing: every refresh then rebuilds the whole view (see `fresh`).
        if let Ok(mut d) = self.hub.dirty.lock() {
            d.all |= taken.all;
            d.jobs |= taken.jobs;
            d.nodes.extend(taken.nodes);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::Poll;

    use chrono::Utc;
    use op_proto::JobSpec;
    use op_store::{Command, Entry, NodeRegistration};

    use super::*;

    struct Fixture {
        store: Arc<Store>,
        index: u64,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        fn apply(&mut self, hub: &Hub, command: Command) {
            self.index += 1;
            let (_, changes) = self
                .store
                .apply_batch(
                    &[Entry {
                        index: self.index,
                        command: Some(&command),
                    }],
                    &format!("{{\"index\":{}}}", self.index),
                    None,
                )
                .unwrap();
            hub.applied(&changes);
        }
    }

    /// A sync call dropped while its refresh reads the store (the agent went away) must not
    /// lose the change that refresh was reading: the next caller sees it.
    #[test]
    fn a_refresh_dropped_half_way_loses_no_change() {
        // One blocking thread, held busy below, so the refresh's store read cannot finish
        // before its future is dropped.
        let rt = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut fx = Fixture {
                store: Arc::new(Store::open(dir.path().join("state.db")).unwrap()),
                index: 0,
                _dir: dir,
            };
            let hub = Hub::new(0);
            let node = Uuid::from_u128(7);
            fx.apply(
                &hub,
                Command::RegisterNode {
                    registration: Box::new(NodeRegistration {
                        node_id: node,
                        hostname: "node-7".into(),
                        ips: vec!["127.0.0.7".parse().unwrap()],
                        labels: Default::default(),
                        agent_version: "0.1.0".into(),
                        os: "linux".into(),
                        arch: "x86_64".into(),
                        machine_id: String::new(),
                        reset: None,
                        capabilities: Vec::new(),
                    }),
                    at: Utc::now(),
                    actor: "agent".into(),
                    enroll: None,
                },
            );
            let before = hub.desired(&fx.store, node).await.unwrap().unwrap();
            assert!(before.jobs.is_empty());

            let mut spec = JobSpec::new("cycle", "true");
            spec.cron_expr = "*/5 * * * * * *".into();
            fx.apply(
                &hub,
                Command::SaveJob {
                    spec: Box::new(spec),
                    at: Utc::now(),
                    actor: "admin".into(),
                },
            );

            let (release, held) = std::sync::mpsc::channel::<()>();
            let blocker = tokio::task::spawn_blocking(move || held.recv());
            {
                let mut parked = std::pin::pin!(hub.node(&fx.store, node));
                let first = std::future::poll_fn(|cx| Poll::Ready(parked.as_mut().poll(cx))).await;
                assert!(
                    first.is_pending(),
                    "the refresh waits for the busy blocking pool"
                );
            }
            release.send(()).unwrap();
            blocker.await.unwrap().unwrap();

            let after = hub.desired(&fx.store, node).await.unwrap().unwrap();
            assert_eq!(
                after
                    .jobs
                    .iter()
                    .map(|j| j.spec.name.as_str())
                    .collect::<Vec<_>>(),
                ["cycle"],
                "the saved job reaches the view"
            );
            assert!(after.state.index > before.state.index);
        });
    }
}
