//! Standalone mode: the job set comes from the task files in `--jobs-dir`.
//!
//! Every `*.json` file in the directory is a seed task file. The directory is watched with
//! inotify, so an idle agent does no work; a change triggers a scan (a `readdir` and a `stat` per
//! file; files are read only when their size, mtime or inode changed) 100 ms later, so an editor's
//! burst of writes is read once. Additions, edits and removals reach the scheduler well within a
//! second. Where inotify is unavailable (or the directory is replaced), the directory is polled
//! every 500 ms instead, and a slow safety scan runs every 30 s regardless (inotify does not see
//! changes made on another host of a network filesystem).
//!
//! A file that does not parse is logged once per change, naming the file and every problem, and
//! skipped; the other files still load. If the file was valid before, its last valid version stays
//! in force until the file is fixed or removed: a typo in an edit does not silently stop a job.
//! Two files with the same JobName: the first in name order wins and the other is reported.
//!
//! Revisions: the content of a job (its canonical task-file form, so whitespace and comments do
//! not count) is hashed, and the state database turns each new hash into the next revision.
//! A once-job therefore runs again exactly when its file's content changed.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use op_proto::JobSpec;
use op_proto::agent::DesiredJob;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::schedule::Scheduler;
use crate::state::StateStore;
use crate::state::desired::{self, CachedJobs};

/// Scan interval without inotify.
const POLL: Duration = Duration::from_millis(500);
/// Delay between an inotify event and the scan, to read a burst of writes once.
const SETTLE: Duration = Duration::from_millis(100);
/// Scan interval with inotify, for what it cannot see.
const SAFETY_SCAN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Signature {
    len: u64,
    mtime_ns: i128,
    ino: u64,
}

struct FileState {
    sig: Signature,
    /// The last version of this file that parsed.
    good: Option<DesiredJob>,
}

/// The directory's files as last seen.
pub struct JobsDir {
    dir: PathBuf,
    state: StateStore,
    state_dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// The set last handed to the scheduler: (name, revision, enabled) per job.
    published: Option<Vec<(String, u64)>>,
    dir_error_logged: bool,
}

impl JobsDir {
    pub fn new(dir: PathBuf, state: StateStore, state_dir: PathBuf) -> JobsDir {
        JobsDir {
            dir,
            state,
            state_dir,
            files: BTreeMap::new(),
            published: None,
            dir_error_logged: false,
        }
    }

    /// Looks at the directory once; returns the job set when it differs from the last one.
    pub fn scan(&mut self) -> Option<Vec<DesiredJob>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => {
                self.dir_error_logged = false;
                e
            }
            Err(e) => {
                if !self.dir_error_logged {
                    tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the jobs dir; keeping the current jobs");
                    self.dir_error_logged = true;
                }
                return None;
            }
        };
        let mut seen = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Editors and our own atomic writers use hidden temporary files.
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let sig = Signature {
                len: meta.len(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                ino: meta.ino(),
            };
            seen.insert(path, sig);
        }
        self.files.retain(|path, _| seen.contains_key(path));
        for (path, sig) in seen {
            if self.files.get(&path).is_some_and(|f| f.sig == sig) {
                continue;
            }
            let previous = self.files.remove(&path).and_then(|f| f.good);
            let good = match self.load(&path) {
                Ok(job) => Some(job),
                Err(message) => {
                    if previous.is_some() {
                        tracing::error!(file = %path.display(), "{message}; the previous valid version stays in force");
                    } else {
                        tracing::error!(file = %path.display(), "{message}; file skipped");
                    }
                    previous
                }
            };
            self.files.insert(path, FileState { sig, good });
        }

        let mut jobs: BTreeMap<String, DesiredJob> = BTreeMap::new();
        for (path, file) in &self.files {
            let Some(job) = &file.good else { continue };
            if jobs.contains_key(&job.spec.name) {
                tracing::error!(file = %path.display(), job = %job.spec.name, "another file already defines this JobName; file skipped");
                continue;
            }
            jobs.insert(job.spec.name.clone(), job.clone());
        }
        let summary: Vec<(String, u64)> = jobs
            .values()
            .map(|j| (j.spec.name.clone(), j.revision))
            .collect();
        if self.published.as_ref() == Some(&summary) {
            return None;
        }
        self.published = Some(summary);
        let jobs: Vec<DesiredJob> = jobs.into_values().collect();
        let cached = CachedJobs {
            version: 1,
            saved_at: Utc::now(),
            source: "jobs_dir".into(),
            index: 0,
            jobs: jobs.clone(),
        };
        if let Err(e) = desired::save(&self.state_dir, &cached) {
            tracing::warn!(error = %e, "could not cache the job set");
        }
        Some(jobs)
    }

    fn load(&self, path: &Path) -> Result<DesiredJob, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read task file: {e}"))?;
        let spec = JobSpec::from_task_json(&text)
            .map_err(|e| format!("invalid task file: {}", e.messages().join("; ")))?;
        let canonical = serde_json::to_vec(&spec.to_task_value()).unwrap_or_default();
        let hash = hex::encode(Sha256::digest(&canonical));
        let revision = self
            .state
            .local_revision(&spec.name, &hash)
            .map_err(|e| format!("cannot assign a revision: {e}"))?;
        Ok(DesiredJob { revision, spec })
    }
}

/// Follows the directory until `shutdown` (the caller did the first scan itself, so that the
/// first job set is in place before the agent serves).
pub async fn follow(mut jobs_dir: JobsDir, scheduler: Scheduler, shutdown: CancellationToken) {
    let mut watch = DirWatch::new(&jobs_dir.dir);
    let mut rescan_now = false;
    loop {
        if !rescan_now {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = watch.changed() => {}
            }
        }
        rescan_now = false;
        let scanned = tokio::task::spawn_blocking(move || {
            let set = jobs_dir.scan();
            (jobs_dir, set)
        })
        .await;
        let Ok((back, set)) = scanned else {
            tracing::error!("jobs dir scan panicked; standalone jobs are no longer followed");
            return;
        };
        jobs_dir = back;
        if let Some(set) = set {
            tracing::info!(jobs = set.len(), "job set loaded from the jobs dir");
            scheduler.set_jobs(set);
        }
        if watch.lost() {
            // The directory was removed or replaced: watch the new one once it is there, then
            // scan again at once, since files written before the new watch raised no event.
            watch = DirWatch::new(&jobs_dir.dir);
            rescan_now = watch.inotify.is_some();
        }
    }
}

/// The inotify fd, in the shape tokio's `AsyncFd` wants.
struct InotifyFd(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// Tells when the directory may have changed: on an inotify event, else on a poll tick.
struct DirWatch {
    inotify: Option<tokio::io::unix::AsyncFd<InotifyFd>>,
    lost: bool,
}

impl DirWatch {
    fn new(dir: &Path) -> DirWatch {
        use nix::sys::inotify::{AddWatchFlags as F, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).and_then(|i| {
            i.add_watch(
                dir,
                F::IN_CREATE
                    | F::IN_DELETE
                    | F::IN_MODIFY
                    | F::IN_CLOSE_WRITE
                    | F::IN_MOVED_FROM
                    | F::IN_MOVED_TO
                    | F::IN_ATTRIB
                    | F::IN_DELETE_SELF
                    | F::IN_MOVE_SELF,
            )?;
            Ok(i)
        });
        let inotify = match inotify {
            // SAFETY: the Inotify owns its fd, and the AsyncFd owns the Inotify until dropped.
            Ok(i) => unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    InotifyFd(i),
                    tokio::io::Interest::READABLE,
                )
                .ok()
            },
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "no inotify watch; polling the jobs dir");
                None
            }
        };
        DirWatch {
            inotify,
            lost: false,
        }
    }

    /// True when the watch should be set up again (the directory went away, or there was none).
    fn lost(&self) -> bool {
        self.lost
    }

    async fn changed(&mut self) {
        use nix::sys::inotify::AddWatchFlags as F;
        let Some(fd) = &self.inotify else {
            tokio::time::sleep(POLL).await;
            // Try to get a watch again next time (the directory may exist again).
            self.lost = true;
            return;
        };
        let (mut lost, mut broken) = (false, false);
        tokio::select! {
            ready = fd.readable() => match ready {
                Ok(mut guard) => {
                    // Drain every pending event; what changed is found by the scan.
                    if let Ok(events) = guard.get_inner().0.read_events() {
                        lost = events
                            .iter()
                            .any(|e| e.mask.intersects(F::IN_DELETE_SELF | F::IN_MOVE_SELF | F::IN_IGNORED));
                    }
                    guard.clear_ready();
                }
                Err(_) => broken = true,
            },
            _ = tokio::time::sleep(SAFETY_SCAN) => return,
        }
        if lost || broken {
            self.lost |= lost;
            self.inotify = None;
            return;
        }
        tokio::time::sleep(SETTLE).await;
        if let Some(fd) = &self.inotify {
            // Events that arrived while settling belong to this scan.
            let _ = fd.get_ref().0.read_events();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_edit_break_remove() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = dir.path().join("jobs");
        std::fs::create_dir(&jobs).unwrap();
        let state = StateStore::open(dir.path(), 10, 1 << 20).unwrap();
        let mut d = JobsDir::new(jobs.clone(), state, dir.path().to_path_buf());
        assert_eq!(d.scan().map(|s| s.len()), Some(0));
        assert!(d.scan().is_none());

        let file = jobs.join("a.json");
        std::fs::write(&file, r#"{"JobName":"a","Command":"true"}"#).unwrap();
        std::fs::write(jobs.join("bad.json"), r#"{"JobName":"b","Comand":"true"}"#).unwrap();
        std::fs::write(jobs.join("notes.txt"), "ignored").unwrap();
        let set = d.scan().unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].revision, 1);

        // An edit that changes content bumps the revision.
        std::fs::write(&file, r#"{"JobName":"a","Command":"echo 2"}"#).unwrap();
        let set = d.scan().unwrap();
        assert_eq!(set[0].revision, 2);

        // A broken edit keeps the last valid version.
        std::fs::write(&file, r#"{"JobName":"a""#).unwrap();
        assert!(d.scan().is_none());

        std::fs::remove_file(&file).unwrap();
        assert_eq!(d.scan().map(|s| s.len()), Some(0));
        assert!(desired::load(dir.path()).unwrap().is_some());
    }
}
