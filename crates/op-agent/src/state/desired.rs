//! The last desired job set, cached in `STATE_DIR/desired.json`.
//!
//! The agent keeps running its jobs while no manager is reachable (DESIGN.md invariant 6), so the
//! job set it last received must survive a restart. The file is replaced atomically: written to a
//! temporary file in the same directory, fsynced, renamed over the old one, and the directory
//! fsynced, so a crash leaves either the old or the new set, never a torn file.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use op_proto::agent::DesiredJob;
use serde::{Deserialize, Serialize};

use crate::error::AgentError;

pub const FILE: &str = "desired.json";

/// What `desired.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedJobs {
    /// Format version of this file.
    pub version: u32,
    pub saved_at: DateTime<Utc>,
    /// Where the set came from: `jobs_dir` or `manager`.
    pub source: String,
    /// The manager's state index the set belongs to (0 in standalone mode).
    #[serde(default)]
    pub index: u64,
    pub jobs: Vec<DesiredJob>,
}

pub fn save(dir: &Path, jobs: &CachedJobs) -> Result<(), AgentError> {
    let text = serde_json::to_vec_pretty(jobs).map_err(|e| AgentError::Corrupt {
        path: dir.join(FILE),
        message: e.to_string(),
    })?;
    write_atomic(&dir.join(FILE), &text)
}

/// `None` when no set was ever saved.
pub fn load(dir: &Path) -> Result<Option<CachedJobs>, AgentError> {
    let path = dir.join(FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AgentError::io("reading", path, e)),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| AgentError::Corrupt {
            path,
            message: e.to_string(),
        })
}

/// The pauses, windows and drain last received (issue 23), in `STATE_DIR/holds.json`: a
/// restarted agent holds the same fires before its first sync.
pub const HOLDS_FILE: &str = "holds.json";

pub fn save_holds(dir: &Path, holds: &op_proto::holds::Holds) -> Result<(), AgentError> {
    let text = serde_json::to_vec_pretty(holds).map_err(|e| AgentError::Corrupt {
        path: dir.join(HOLDS_FILE),
        message: e.to_string(),
    })?;
    write_atomic(&dir.join(HOLDS_FILE), &text)
}

/// `None` when none were ever saved.
pub fn load_holds(dir: &Path) -> Result<Option<op_proto::holds::Holds>, AgentError> {
    let path = dir.join(HOLDS_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AgentError::io("reading", path, e)),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| AgentError::Corrupt {
            path,
            message: e.to_string(),
        })
}

/// Replaces `path` with `bytes` so that readers and crashes see the old or the new content only.
/// The file is its owner's only, like everything in the state dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    write_atomic_mode(path, bytes, 0o600)
}

/// [`write_atomic`] with the file created with `mode` (before any byte is written).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AgentError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| AgentError::io("writing", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use op_proto::JobSpec;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let jobs = CachedJobs {
            version: 1,
            saved_at: Utc::now(),
            source: "jobs_dir".into(),
            index: 0,
            jobs: vec![DesiredJob {
                revision: 3,
                spec: JobSpec::new("a", "echo hi"),
            }],
        };
        save(dir.path(), &jobs).unwrap();
        save(dir.path(), &jobs).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(jobs));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
