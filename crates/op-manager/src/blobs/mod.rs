//! Package blobs: content-addressed files under `DATA_DIR/blobs/`, named by their sha256.
//!
//! An upload is streamed into `blobs/tmp/`, hashed while it arrives, fsynced ([`BlobStore::receive`]),
//! and renamed to `blobs/<sha256>` ([`BlobStore::commit`]); then it is copied to a majority of the
//! managers ([`replicate`]), and only then is its metadata written through raft (op-store keeps
//! names, versions and hashes, never content). A copy pushed by a peer waits in
//! `blobs/incoming/<sha256>` until this manager's store refers to it; then it is adopted (moved to
//! `blobs/<sha256>`). A manager whose store refers to a blob it lacks fetches it from a peer.
//!
//! Blobs are local files, so garbage collection runs outside `apply`, on each manager:
//! [`BlobStore::gc`] deletes every blob no stored version refers to, and incoming copies nobody
//! adopted within a day (an upload whose version was never written).
//!
//! The one race that matters is a blob in place whose version is not applied yet: GC would see
//! an unreferenced file. Uploads and adoptions therefore hold [`BlobStore::commit_guard`] (a
//! shared lock) from the rename until their command is applied, and GC takes the lock
//! exclusively while it decides, so it never sees that window. Incoming copies are outside GC's
//! reach for the same reason.

pub mod chunks;
pub mod replicate;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use op_store::Store;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::metrics::Metrics;

/// Why an upload could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload stopped arriving (nothing for {secs} s)")]
    Idle { secs: u64 },
    #[error("reading the upload: {0}")]
    Body(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Staged {
    /// The temp file holding the received content, while staged (agent releases read its ELF
    /// header before it is committed).
    pub fn path(&self) -> Option<&std::path::Path> {
        self.temp.0.as_deref()
    }
}

/// A received blob: its hash and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub sha256: String,
    pub size: u64,
}

/// An upload fully received and fsynced in `blobs/tmp/`, not yet in place; dropping it removes
/// the temp file.
pub struct Staged {
    temp: TempFile,
    pub received: Received,
}

/// What one GC pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    pub deleted: u64,
    pub bytes: u64,
}

/// Incoming copies nobody adopted within this long are garbage.
const INCOMING_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
    incoming: PathBuf,
    commit: Arc<RwLock<()>>,
    /// One fetch per blob at a time (a download and the sync loop may want the same one).
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Removes a temp file unless the upload got as far as renaming it.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReceiveError + '_ {
    move |source| ReceiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// True for a name that is a lowercase hex sha256 (every blob file; nothing else is touched).
pub fn is_blob_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn sync_dir(dir: &Path) {
    // Makes a rename durable; a failure only weakens crash safety, so it is not fatal.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

impl BlobStore {
    /// Opens `dir` (creating it) and removes temp files an interrupted upload left behind. The
    /// manager's data-dir lock guarantees no other process writes here.
    pub fn open(dir: PathBuf) -> std::io::Result<BlobStore> {
        let tmp = dir.join("tmp");
        let incoming = dir.join("incoming");
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(&incoming)?;
        for entry in std::fs::read_dir(&tmp)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(BlobStore {
            dir,
            tmp,
            incoming,
            commit: Arc::new(RwLock::new(())),
            fetching: Mutex::new(HashMap::new()),
        })
    }

    /// The file of a blob (which may not exist on this manager).
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Where a peer's copy waits until it is adopted.
    pub fn incoming_path(&self, sha256: &str) -> PathBuf {
        self.incoming.join(sha256)
    }

    /// True when the blob is in place here.
    pub fn has(&self, sha256: &str) -> bool {
        self.path(sha256).is_file()
    }

    /// The file holding a blob's content here, in place or incoming.
    pub fn find(&self, sha256: &str) -> Option<PathBuf> {
        [self.path(sha256), self.incoming_path(sha256)]
            .into_iter()
            .find(|p| p.is_file())
    }

    /// Moves an incoming copy into place; false when there is none. The caller holds
    /// [`BlobStore::commit_guard`] and its store refers to the blob.
    pub async fn adopt(&self, sha256: &str) -> std::io::Result<bool> {
        match tokio::fs::rename(self.incoming_path(sha256), self.path(sha256)).await {
            Ok(()) => {
                let dir = self.dir.clone();
                let _ = tokio::task::spawn_blocking(move || sync_dir(&dir)).await;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The lock serializing fetches of one blob.
    pub fn fetch_lock(&self, sha256: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds, so the map stays as small as the fetches in progress.
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(sha256.to_string()).or_default().clone()
    }

    /// Held by an upload from the moment its blob is in place until its version is applied.
    pub async fn commit_guard(&self) -> OwnedRwLockReadGuard<()> {
        self.commit.clone().read_owned().await
    }

    /// Streams `body` to a temp file, hashing it, at most `limit` bytes and at most `idle`
    /// between two chunks, and fsyncs it. [`BlobStore::commit`] then moves it into place.
    pub async fn receive<S, E>(
        &self,
        body: S,
        limit: u64,
        idle: Duration,
    ) -> Result<Staged, ReceiveError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp_path = self
            .tmp
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let temp = TempFile(Some(tmp_path.clone()));
        let file = tokio::fs::File::create(&tmp_path)
            .await
            .map_err(io(&tmp_path))?;
        // Few large writes: each tokio file write is a trip to the blocking pool.
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut body = body;
        loop {
            let chunk = match tokio::time::timeout(idle, body.next()).await {
                Err(_) => {
                    return Err(ReceiveError::Idle {
                        secs: idle.as_secs(),
                    });
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(ReceiveError::Body(e.to_string())),
                Ok(Some(Ok(chunk))) => chunk,
            };
            size += chunk.len() as u64;
            if size > limit {
                return Err(ReceiveError::TooLarge { limit });
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(io(&tmp_path))?;
        }
        out.flush().await.map_err(io(&tmp_path))?;
        let file = out.into_inner();
        file.sync_all().await.map_err(io(&tmp_path))?;
        Ok(Staged {
            temp,
            received: Received {
                sha256: hex::encode(hasher.finalize()),
                size,
            },
        })
    }

    /// Moves a staged upload to `blobs/<sha256>`. The caller must hold
    /// [`BlobStore::commit_guard`] from before this call until the version is applied.
    pub async fn commit(&self, staged: Staged) -> Result<Received, ReceiveError> {
        let dest = self.path(&staged.received.sha256);
        self.commit_to(staged, dest).await
    }

    /// Moves a staged copy pushed by a peer to `blobs/incoming/<sha256>`.
    pub async fn commit_incoming(&self, staged: Staged) -> Result<Received, ReceiveError> {
        let dest = self.incoming_path(&staged.received.sha256);
        self.commit_to(staged, dest).await
    }

    async fn commit_to(&self, mut staged: Staged, dest: PathBuf) -> Result<Received, ReceiveError> {
        let Some(tmp_path) = staged.temp.0.take() else {
            return Err(ReceiveError::Body(
                "the upload was already committed".into(),
            ));
        };
        // Renaming over an existing blob of the same hash replaces it with a verified copy
        // (repairing one damaged on disk); readers that have the old file open keep reading it.
        if let Err(e) = tokio::fs::rename(&tmp_path, &dest).await {
            let _ = tokio::fs::remove_file(&tmp_path).await;
            return Err(io(&dest)(e));
        }
        if let Some(dir) = dest.parent().map(Path::to_path_buf) {
            let _ = tokio::task::spawn_blocking(move || sync_dir(&dir)).await;
        }
        Ok(staged.received.clone())
    }

    /// Deletes every blob file whose hash `referenced` (read by the caller while holding the
    /// exclusive commit lock) does not contain. Blocking.
    fn gc_files(&self, referenced: &BTreeSet<String>) -> std::io::Result<GcReport> {
        let mut report = GcReport::default();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !is_blob_name(name) || referenced.contains(name) {
                continue;
            }
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    report.deleted += 1;
                    report.bytes += len;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if report.deleted > 0 {
            sync_dir(&self.dir);
        }
        // Incoming copies: adopted ones are duplicates, and one nobody adopted for a day belongs
        // to an upload whose version was never written.
        for entry in std::fs::read_dir(&self.incoming)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !is_blob_name(name) {
                continue;
            }
            let meta = entry.metadata()?;
            let stale = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > INCOMING_MAX_AGE);
            if stale || (referenced.contains(name) && self.has(name)) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        report.deleted += 1;
                        report.bytes += meta.len();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(report)
    }

    /// One GC pass: waits for uploads between rename and apply, then deletes the blobs no
    /// version refers to.
    pub async fn gc(self: &Arc<Self>, store: &Arc<op_store::Store>) -> Result<GcReport, String> {
        let _exclusive = self.commit.write().await;
        let (blobs, store) = (self.clone(), store.clone());
        tokio::task::spawn_blocking(move || {
            let referenced = store.referenced_blobs().map_err(|e| e.to_string())?;
            let report = blobs.gc_files(&referenced).map_err(|e| e.to_string())?;
            // Chunk lists (derived from blobs) go with their blob.
            chunks::gc(&blobs).map_err(|e| e.to_string())?;
            Ok(report)
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Runs GC every `blob_gc_interval`, and soon after a version was deleted. Every manager runs it
/// for its own files (they are not replicated through raft); what it deletes is decided by the
/// replicated metadata, so all managers converge.
pub async fn gc_loop(
    blobs: Arc<BlobStore>,
    store: Arc<Store>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = hub.blob_gc_wanted() => {}
            _ = shutdown.cancelled() => return,
        }
        // A follower's applied state may lag the leader's; it still deletes only what its own
        // applied state no longer refers to, which the leader decided first.
        match blobs.gc(&store).await {
            Ok(r) if r.deleted > 0 => {
                metrics.blobs_deleted(r.deleted);
                tracing::info!(deleted = r.deleted, bytes = r.bytes, "blob gc");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "blob gc failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn receive_hashes_stores_and_gc_removes_unreferenced() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs")).unwrap();
        let staged = blobs
            .receive(body(&[b"hello ", b"world"]), 100, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/tmp"))
                .unwrap()
                .count(),
            1
        );
        let r = blobs.commit(staged).await.unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/tmp"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(r.size, 11);
        assert_eq!(r.sha256, hex::encode(Sha256::digest(b"hello world")));
        assert_eq!(
            std::fs::read(blobs.path(&r.sha256)).unwrap(),
            b"hello world"
        );
        // An unrelated file in the dir is never touched.
        std::fs::write(dir.path().join("blobs/README"), "x").unwrap();
        let kept = BTreeSet::from([r.sha256.clone()]);
        assert_eq!(blobs.gc_files(&kept).unwrap().deleted, 0);
        let report = blobs.gc_files(&BTreeSet::new()).unwrap();
        assert_eq!(
            report,
            GcReport {
                deleted: 1,
                bytes: 11
            }
        );
        assert!(!blobs.path(&r.sha256).exists());
        assert!(dir.path().join("blobs/README").exists());
    }

    #[tokio::test]
    async fn too_large_and_broken_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs")).unwrap();
        let err = blobs
            .receive(body(&[b"12345", b"6789"]), 8, Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ReceiveError::TooLarge { limit: 8 }), "{err}");
        let broken = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err("connection reset".to_string()),
        ]);
        let err = blobs
            .receive(broken, 100, Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ReceiveError::Body(_)), "{err}");
        let stalled = futures_util::stream::pending::<Result<Bytes, String>>();
        let err = blobs
            .receive(stalled, 100, Duration::from_millis(50))
            .await
            .err()
            .unwrap();
        // Received in full but never committed (the raft write failed): nothing stays either.
        drop(
            blobs
                .receive(body(&[b"x"]), 100, Duration::from_secs(5))
                .await
                .unwrap(),
        );
        assert!(matches!(err, ReceiveError::Idle { .. }), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/tmp"))
                .unwrap()
                .count(),
            0
        );
        // Only the tmp and incoming dirs: no blob.
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
            2
        );
    }

    #[tokio::test]
    async fn incoming_copies_are_adopted_and_collected() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs")).unwrap();
        let staged = blobs
            .receive(body(&[b"pushed"]), 100, Duration::from_secs(5))
            .await
            .unwrap();
        let r = blobs.commit_incoming(staged).await.unwrap();
        assert!(!blobs.has(&r.sha256));
        assert_eq!(blobs.find(&r.sha256), Some(blobs.incoming_path(&r.sha256)));
        // GC leaves a young incoming copy alone, referenced or not.
        assert_eq!(blobs.gc_files(&BTreeSet::new()).unwrap().deleted, 0);
        assert!(blobs.adopt(&r.sha256).await.unwrap());
        assert!(blobs.has(&r.sha256));
        assert!(!blobs.adopt(&r.sha256).await.unwrap());
        // A second copy that arrives after adoption is a duplicate.
        let staged = blobs
            .receive(body(&[b"pushed"]), 100, Duration::from_secs(5))
            .await
            .unwrap();
        blobs.commit_incoming(staged).await.unwrap();
        let kept = BTreeSet::from([r.sha256.clone()]);
        assert_eq!(blobs.gc_files(&kept).unwrap().deleted, 1);
        assert!(blobs.has(&r.sha256));
        assert!(blobs.find(&r.sha256).is_some());
    }
}
