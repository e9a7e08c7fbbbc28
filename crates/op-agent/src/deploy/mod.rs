//! The deployer: brings every package of the desired state onto this machine and reports what
//! it holds.
//!
//! One worker task per package name follows that package's desired [`PackageRef`] (a `watch`
//! channel the link feeds). A worker whose package is not in place downloads it (resumable,
//! verified: [`download`]), stages it on the deploy dir's filesystem (unpacking archives safely:
//! [`archive`]), and switches the visible path atomically ([`layout`]). A version kept from
//! before is switched to without a download, which makes rollback instant.
//!
//! Failures leave the old version in place, are reported with their reason, and are retried
//! with exponential backoff. Workers are independent, so one failing package never blocks
//! another, and a newer desired version cancels a download in progress at once: a bad version
//! never blocks the next. Installing (unpack, rename, switch) is never cancelled halfway: it runs
//! to its end, so what a `kill -9` can interrupt is only ever a staging tree, removed on the next
//! attempt.
//!
//! What the deployer does not do: decide what to deploy (the manager's desired state), talk HTTP
//! itself (a [`Source`] opens downloads), or remove packages that leave the desired state (their
//! files stay where jobs may still use them).

pub mod archive;
pub mod download;
pub mod layout;
pub mod peers;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use op_proto::package::{InstalledPackage, PackageRef, PackageState};
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use archive::{ArchiveError, Limits};

/// Why one deploy attempt failed; the message is what `analysis packages` shows.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("download failed: {0}")]
    Download(String),
    #[error("download stalled: nothing received for {secs} s")]
    Stalled { secs: u64 },
    #[error("size mismatch: received {got} bytes, expected {expected}")]
    Size { expected: u64, got: u64 },
    #[error("sha256 mismatch: received content with sha256 {got}, expected {expected}")]
    Checksum { expected: String, got: String },
    #[error("archive refused: {0}")]
    Archive(#[from] ArchiveError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("deploy dir {0:?} is not an absolute path")]
    BadDir(String),
    #[error("{0}")]
    Task(String),
}

/// Why a download could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The manager is at its download cap: come back after this long (plus jitter).
    Busy(Option<Duration>),
    Failed(String),
}

/// A download that has started.
pub struct Opened {
    /// Offset in the content of the body's first byte (0 when the server ignored the range).
    pub start: u64,
    pub body: BoxStream<'static, Result<Bytes, String>>,
}

/// Where package content comes from (the link's managers; a test's in-memory content).
pub trait Source: Send + Sync {
    /// Starts downloading `pkg` from byte `offset`.
    fn open<'a>(
        &'a self,
        pkg: &'a PackageRef,
        offset: u64,
    ) -> BoxFuture<'a, Result<Opened, FetchError>>;

    /// A ticket, peers and the chunk list for fetching `pkg` from peers; None when the manager
    /// names no peer (or grants no tickets): then the whole download comes from a manager.
    fn plan<'a>(&'a self, _pkg: &'a PackageRef) -> BoxFuture<'a, Option<peers::PeerPlan>> {
        Box::pin(async { None })
    }

    /// Chunk `k` of `pkg` from the peer at `url`, presenting `ticket`; a peer that sends no
    /// answer or no bytes for `silence` is given up on.
    fn peer_chunk<'a>(
        &'a self,
        _url: &'a str,
        _pkg: &'a PackageRef,
        _k: usize,
        _ticket: &'a str,
        _silence: Duration,
    ) -> BoxFuture<'a, Result<Bytes, peers::PeerError>> {
        Box::pin(async { Err(peers::PeerError::Unreachable("no peers".to_string())) })
    }
}

/// How the deployer works; every field has a default fit for production.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    /// Where packages without a deploy dir of their own go (`--deploy-dir`).
    pub default_dir: PathBuf,
    /// Versions kept besides the current one, for instant rollback (default 3).
    pub keep: usize,
    pub limits: Limits,
    /// A download that receives nothing for this long is abandoned and resumed later.
    pub idle: Duration,
    /// Backoff between failed attempts: from `retry_min`, doubling, up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Keeps verified copies of downloaded versions to serve to peers (`--peer-serve`).
    pub peers: Option<Arc<peers::PeerShare>>,
    /// Counts bytes by source and bad peer chunks.
    pub metrics: Option<crate::metrics::Metrics>,
    /// A peer that sends nothing for this long during a chunk fetch is given up on for the rest
    /// of that download (`--peer-timeout`).
    pub peer_timeout: Duration,
}

impl DeploySettings {
    pub fn new(default_dir: PathBuf) -> DeploySettings {
        DeploySettings {
            default_dir,
            keep: 3,
            limits: Limits::default(),
            idle: Duration::from_secs(60),
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            peers: None,
            metrics: None,
            peer_timeout: Duration::from_secs(PEER_TIMEOUT_SECS),
        }
    }
}

/// How long a peer may stay silent during a chunk fetch before it is given up on (the default
/// of `--peer-timeout`).
pub const PEER_TIMEOUT_SECS: u64 = 10;

/// The deployer; cheap to clone.
#[derive(Clone)]
pub struct Deployer {
    inner: Arc<Inner>,
}

struct Inner {
    settings: DeploySettings,
    source: Arc<dyn Source>,
    workers: Mutex<HashMap<String, watch::Sender<Option<PackageRef>>>>,
    reports: Mutex<BTreeMap<String, InstalledPackage>>,
    /// Per package, where the bytes of its last download came from (reported with it).
    fetched: Mutex<HashMap<String, op_proto::package::FetchSources>>,
    changed: watch::Sender<u64>,
    /// True while some desired package has not settled (installed, or failed) at its version.
    deploying: watch::Sender<bool>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Deployer {
    pub fn new(
        settings: DeploySettings,
        source: Arc<dyn Source>,
        shutdown: CancellationToken,
    ) -> Deployer {
        Deployer {
            inner: Arc::new(Inner {
                settings,
                source,
                workers: Mutex::new(HashMap::new()),
                reports: Mutex::new(BTreeMap::new()),
                fetched: Mutex::new(HashMap::new()),
                changed: watch::Sender::new(0),
                deploying: watch::Sender::new(false),
                tracker: TaskTracker::new(),
                shutdown,
            }),
        }
    }

    /// The packages this node must hold now. Starts workers for new names, hands changed refs to
    /// running workers, and stops the workers of names no longer listed.
    pub fn set_desired(&self, refs: &[PackageRef]) {
        let mut workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        workers.retain(|name, tx| {
            let keep = refs.iter().any(|r| &r.name == name);
            if !keep {
                let _ = tx.send(None);
            }
            keep
        });
        for r in refs {
            match workers.get(&r.name) {
                Some(tx) => {
                    tx.send_if_modified(|cur| {
                        if cur.as_ref() == Some(r) {
                            false
                        } else {
                            *cur = Some(r.clone());
                            true
                        }
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(Some(r.clone()));
                    workers.insert(r.name.clone(), tx);
                    let inner = self.inner.clone();
                    self.inner.tracker.spawn(worker(inner, r.name.clone(), rx));
                }
            }
        }
        drop(workers);
        self.inner.update_deploying();
    }

    /// True while a desired package is being deployed (see [`Scheduler::hold_once_jobs_while`]).
    ///
    /// [`Scheduler::hold_once_jobs_while`]: crate::schedule::Scheduler::hold_once_jobs_while
    pub fn deploying(&self) -> watch::Receiver<bool> {
        self.inner.deploying.subscribe()
    }

    /// What this node holds, one entry per desired package (the heartbeat's `packages`).
    pub fn report(&self) -> Vec<InstalledPackage> {
        self.inner
            .reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Bumped whenever [`Deployer::report`] changes, so the link can send a heartbeat at once.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// What this node shares with peers, when it serves them.
    pub fn peers(&self) -> Option<Arc<peers::PeerShare>> {
        self.inner.settings.peers.clone()
    }

    /// Waits for the workers to stop (after the shutdown token was cancelled).
    pub async fn wait(&self) {
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

impl Inner {
    fn dir_for(&self, pkg: &PackageRef) -> Result<PathBuf, DeployError> {
        if pkg.deploy_dir.is_empty() {
            return Ok(self.settings.default_dir.clone());
        }
        let p = Path::new(&pkg.deploy_dir);
        if !p.is_absolute() || pkg.deploy_dir.split('/').any(|c| c == "..") {
            return Err(DeployError::BadDir(pkg.deploy_dir.clone()));
        }
        Ok(p.to_path_buf())
    }

    /// Remembers where the bytes of `pkg` came from; its next report carries it.
    fn record_fetched(&self, pkg: &PackageRef, sources: op_proto::package::FetchSources) {
        self.fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pkg.name.clone(), sources);
    }

    fn set_report(&self, mut report: Option<InstalledPackage>, name: &str) {
        if let Some(r) = report.as_mut() {
            r.fetched = self
                .fetched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .cloned();
        }
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match report {
            Some(r) => reports.insert(name.to_string(), r.clone()).as_ref() != Some(&r),
            None => reports.remove(name).is_some(),
        };
        drop(reports);
        if changed {
            self.changed.send_modify(|n| *n += 1);
            self.update_deploying();
        }
    }

    fn update_deploying(&self) {
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let busy = workers.iter().any(|(name, tx)| {
            let Some(want) = tx.borrow().clone() else {
                return false;
            };
            match reports.get(name) {
                None => true,
                Some(r) => match r.state {
                    PackageState::Installed => r.version != want.version,
                    PackageState::Failed => r.target_version.unwrap_or(r.version) != want.version,
                    // A retry after a failure is settled as failed: once-jobs need not wait.
                    PackageState::Downloading => r.error.is_none(),
                },
            }
        });
        self.deploying.send_if_modified(|cur| {
            let changed = *cur != busy;
            *cur = busy;
            changed
        });
    }
}

/// How one attempt ended.
enum Attempt {
    Installed(layout::VersionMeta),
    Failed(DeployError),
    /// The desired ref changed (or went away) while downloading.
    Superseded,
    Shutdown,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DeployError> + Send + 'static,
) -> Result<T, DeployError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DeployError::Task(format!("deploy task failed: {e}")))?
}

fn report_for(
    pkg: &PackageRef,
    installed: Option<&layout::VersionMeta>,
    state: PackageState,
    error: Option<String>,
) -> InstalledPackage {
    let (version, sha256) = installed.map_or((0, String::new()), |m| (m.version, m.sha256.clone()));
    InstalledPackage {
        name: pkg.name.clone(),
        version,
        sha256,
        state,
        target_version: (version != pkg.version).then_some(pkg.version),
        error,
        fetched: None,
    }
}

async fn worker(inner: Arc<Inner>, name: String, mut rx: watch::Receiver<Option<PackageRef>>) {
    let mut failures: u32 = 0;
    loop {
        let Some(pkg) = rx.borrow_and_update().clone() else {
            inner.set_report(None, &name);
            return;
        };
        match attempt(&inner, &pkg, &mut rx).await {
            Attempt::Installed(meta) => {
                failures = 0;
                inner.set_report(
                    Some(report_for(&pkg, Some(&meta), PackageState::Installed, None)),
                    &name,
                );
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = inner.shutdown.cancelled() => return,
                }
            }
            Attempt::Failed(e) => {
                let pause = retry_pause(&inner.settings, failures);
                failures = failures.saturating_add(1);
                tracing::warn!(package = %pkg.name, version = pkg.version, error = %e, retry_in = ?pause, "deploy failed; the previous version stays in place");
                let dir = inner.dir_for(&pkg).ok();
                let installed = match dir {
                    Some(d) => {
                        let n = pkg.name.clone();
                        tokio::task::spawn_blocking(move || layout::installed(&d, &n))
                            .await
                            .ok()
                            .flatten()
                    }
                    None => None,
                };
                inner.set_report(
                    Some(report_for(
                        &pkg,
                        installed.as_ref(),
                        PackageState::Failed,
                        Some(e.to_string()),
                    )),
                    &name,
                );
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    r = rx.changed() => {
                        if r.is_err() { return }
                        failures = 0;
                    }
                    _ = inner.shutdown.cancelled() => return,
                }
            }
            Attempt::Superseded => failures = 0,
            Attempt::Shutdown => return,
        }
    }
}

fn retry_pause(s: &DeploySettings, failures: u32) -> Duration {
    let cap = s
        .retry_min
        .saturating_mul(1u32 << failures.min(16))
        .min(s.retry_max);
    let ms = cap.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms.max(1)))
}

/// Longest a download waits for peers to get a version before it comes from a manager.
const PEER_WAIT_MAX: Duration = Duration::from_secs(120);

/// Stops sharing the versions of `name` the deploy dir no longer keeps. Blocking.
fn prune_shared(share: Option<&peers::PeerShare>, dir: &Path, name: &str, current: u64) {
    if let Some(share) = share {
        share.prune(name, |v, sha| {
            v == current || layout::kept(dir, name, v, sha).is_some()
        });
    }
}

/// One try at getting `pkg` in place.
async fn attempt(
    inner: &Arc<Inner>,
    pkg: &PackageRef,
    rx: &mut watch::Receiver<Option<PackageRef>>,
) -> Attempt {
    let dir = match inner.dir_for(pkg) {
        Ok(d) => d,
        Err(e) => return Attempt::Failed(e),
    };
    // Take the package's lock; another agent sharing this deploy dir may hold it for a while.
    let lock = loop {
        let (d, n) = (dir.clone(), pkg.name.clone());
        match blocking(move || {
            std::fs::create_dir_all(&d).map_err(|e| DeployError::Io {
                action: "creating",
                path: d.clone(),
                source: e,
            })?;
            layout::try_lock(&d, &n)
        })
        .await
        {
            Ok(Some(lock)) => break lock,
            Ok(None) => {}
            Err(e) => return Attempt::Failed(e),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            r = rx.changed() => return if r.is_err() { Attempt::Shutdown } else { Attempt::Superseded },
            _ = inner.shutdown.cancelled() => return Attempt::Shutdown,
        }
    };
    let (d, p) = (dir.clone(), pkg.clone());
    let found = blocking(move || {
        layout::clean_leftovers(&d, &p.name);
        Ok((
            layout::installed(&d, &p.name),
            layout::kept(&d, &p.name, p.version, &p.sha256),
        ))
    })
    .await;
    let (installed, kept) = match found {
        Ok(f) => f,
        Err(e) => return Attempt::Failed(e),
    };
    if let Some(meta) = installed.as_ref().filter(|m| m.version == pkg.version) {
        return Attempt::Installed(meta.clone());
    }
    if let Some(meta) = kept {
        // Rollback (or a version another agent on this deploy dir fetched): switch only.
        let (d, m, prev) = (dir.clone(), meta.clone(), installed.clone());
        let keep = inner.settings.keep;
        let share = inner.settings.peers.clone();
        return match blocking(move || {
            layout::switch(&d, &m, prev.as_ref())?;
            layout::prune(&d, &m.name, m.version, keep);
            prune_shared(share.as_deref(), &d, &m.name, m.version);
            Ok(())
        })
        .await
        {
            Ok(()) => {
                tracing::info!(package = %pkg.name, version = pkg.version, "switched to a kept version");
                Attempt::Installed(meta)
            }
            Err(e) => Attempt::Failed(e),
        };
    }
    // A retry keeps the last attempt's error in its report, so operators still see why.
    let last_error = {
        let reports = inner.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports
            .get(&pkg.name)
            .filter(|r| r.target_version == Some(pkg.version))
            .and_then(|r| r.error.clone())
    };
    inner.set_report(
        Some(report_for(
            pkg,
            installed.as_ref(),
            PackageState::Downloading,
            last_error,
        )),
        &pkg.name,
    );
    let part = layout::part_path(&layout::pkg_dir(&dir, &pkg.name), pkg.version);
    let fetch = async {
        // While the first few nodes fetch a version nobody holds yet, the others wait for them
        // (for a while: then the managers serve as before).
        let waited_since = tokio::time::Instant::now();
        let mut plan = inner.source.plan(pkg).await;
        while let Some(w) = plan.as_ref().and_then(|p| p.wait_secs) {
            if waited_since.elapsed() > PEER_WAIT_MAX {
                plan = None;
                break;
            }
            tokio::time::sleep(Duration::from_secs(w.clamp(1, 30))).await;
            plan = inner.source.plan(pkg).await;
        }
        if let Some(plan) = plan.filter(|p| p.fits(pkg)) {
            match peers::fetch_chunks(
                inner.source.as_ref(),
                pkg,
                &part,
                &plan,
                inner.settings.idle,
                inner.settings.peer_timeout,
                inner.settings.metrics.as_ref(),
            )
            .await
            {
                Ok(stats) => {
                    tracing::info!(package = %pkg.name, version = pkg.version, from_peers = stats.from_peers, from_managers = stats.from_managers, bad_sources = ?stats.bad_sources, "downloaded in chunks");
                    inner.record_fetched(
                        pkg,
                        op_proto::package::FetchSources {
                            version: pkg.version,
                            from_peers: stats.from_peers,
                            from_managers: stats.from_managers,
                            bad_sources: stats.bad_sources,
                        },
                    );
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(package = %pkg.name, version = pkg.version, error = %e, "chunked download failed; downloading from a manager");
                    let _ = tokio::fs::remove_file(&part).await;
                }
            }
        }
        let r = download::fetch(inner.source.as_ref(), pkg, &part, inner.settings.idle).await;
        if r.is_ok() {
            if let Some(m) = &inner.settings.metrics {
                m.package_fetched(false, pkg.size);
            }
            inner.record_fetched(
                pkg,
                op_proto::package::FetchSources {
                    version: pkg.version,
                    from_peers: 0,
                    from_managers: pkg.size,
                    bad_sources: Vec::new(),
                },
            );
        }
        r
    };
    let fetched = tokio::select! {
        r = fetch => r,
        r = rx.changed() => return if r.is_err() { Attempt::Shutdown } else { Attempt::Superseded },
        _ = inner.shutdown.cancelled() => return Attempt::Shutdown,
    };
    if let Err(e) = fetched {
        return Attempt::Failed(e);
    }
    // From here to the switch nothing is cancelled: it is local work, and stopping halfway would
    // only leave a staging tree to clean up.
    let (d, p, limits, keep) = (dir, pkg.clone(), inner.settings.limits, inner.settings.keep);
    let installed_before = installed;
    let share = inner.settings.peers.clone();
    let result = blocking(move || {
        if let Some(share) = &share
            && let Err(e) = share.keep(&p.name, p.version, &p.sha256, p.size, &part)
        {
            // Peers then fetch elsewhere; the deploy itself goes on.
            tracing::warn!(package = %p.name, version = p.version, error = %e, "cannot keep a copy to serve to peers");
        }
        let (staging, meta) = layout::stage(&d, &p, &part, &limits)?;
        layout::commit(&d, &staging, &meta)?;
        layout::switch(&d, &meta, installed_before.as_ref())?;
        layout::prune(&d, &p.name, p.version, keep);
        prune_shared(share.as_deref(), &d, &p.name, p.version);
        drop(lock);
        Ok(meta)
    })
    .await;
    match result {
        Ok(meta) => {
            tracing::info!(package = %pkg.name, version = pkg.version, visible = %meta.visible, "deployed");
            Attempt::Installed(meta)
        }
        Err(e) => Attempt::Failed(e),
    }
}

#[cfg(test)]
mod tests;
