//! Standalone mode: the job set comes from the task files in `--jobs-dir`.
//!
//! Every `*.json` file in the directory is a seed task file. The directory is checked every
//! 500 ms (a `readdir` and a `stat` per file; files are read only when their size, mtime or inode
//! changed), so additions, edits and removals reach the scheduler within a second.
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

const POLL: Duration = Duration::from_millis(500);

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
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
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
