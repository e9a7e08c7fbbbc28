//! The self-upgrade's records under `STATE_DIR/bin`, shared by the agent (which installs a new
//! binary and confirms it) and the guard (which starts, watches and restores):
//!
//! - `op-agent-<version>`: self-upgraded binaries (never the Debian package's file);
//! - `current`: a symlink to the binary the guard starts (absent: the guard's own binary);
//! - `previous`: a symlink to the binary that ran before the last switch;
//! - `pending.json`: an upgrade not yet confirmed ([`Pending`]);
//! - `confirmed` / `mismatch`: written by the new agent after its first sync (the version it
//!   runs), read by the guard;
//! - `failed.json`: the last upgrade the guard rolled back ([`Failed`]), reported by the
//!   restored agent.
//!
//! Every file is replaced by a rename, so a `kill -9` at any point leaves the old or the new
//! content, and the symlink switch is one rename too.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const CURRENT: &str = "current";
pub const PREVIOUS: &str = "previous";
pub const PENDING: &str = "pending.json";
pub const CONFIRMED: &str = "confirmed";
pub const MISMATCH: &str = "mismatch";
pub const FAILED: &str = "failed.json";
pub const BINARY_PREFIX: &str = "op-agent-";

/// An upgrade in progress: the new binary is `current`, and it has not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The declared version of the new binary.
    pub version: String,
    pub sha256: String,
    /// The package version of the release (reserved package).
    pub package_version: u64,
    /// The binary to restore; `None` = the guard's own (shipped) binary.
    pub previous: Option<PathBuf>,
    /// The new agent must confirm within this many seconds of `since`.
    pub deadline_secs: u64,
    /// Unix seconds when the switch happened.
    pub since: i64,
    /// Exits of the new binary so far.
    #[serde(default)]
    pub exits: u32,
}

impl Pending {
    pub fn expired(&self, now: i64) -> bool {
        now >= self.since.saturating_add(self.deadline_secs as i64)
    }
}

/// An upgrade the guard rolled back, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub version: String,
    pub sha256: String,
    pub package_version: u64,
    pub reason: String,
    /// The new binary's last output (stderr), at most a few KB.
    #[serde(default)]
    pub output: String,
    pub at: i64,
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn bin_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("bin")
}

/// The file a self-upgraded binary of `version` lives in.
pub fn binary_path(dir: &Path, version: &str) -> PathBuf {
    dir.join(format!("{BINARY_PREFIX}{version}"))
}

/// The version a self-upgraded binary's file name carries.
pub fn version_of(path: &Path) -> Option<String> {
    path.file_name()?
        .to_str()?
        .strip_prefix(BINARY_PREFIX)
        .map(str::to_string)
}

/// Writes `bytes` to `dir/name` through a temporary file, fsync and rename.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir);
    Ok(())
}

pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Points the symlink `dir/name` at `target` with one rename.
pub fn switch_link(dir: &Path, name: &str, target: &Path) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.link"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir);
    Ok(())
}

/// Where the symlink `dir/name` points, made absolute; `None` when absent.
pub fn link_target(dir: &Path, name: &str) -> Option<PathBuf> {
    let t = std::fs::read_link(dir.join(name)).ok()?;
    Some(if t.is_absolute() { t } else { dir.join(t) })
}

fn load<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Option<T> {
    let text = std::fs::read(dir.join(name)).ok()?;
    match serde_json::from_slice(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(file = %dir.join(name).display(), error = %e, "ignoring an unreadable upgrade record");
            None
        }
    }
}

fn save<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomic(dir, name, &bytes)
}

pub fn load_pending(dir: &Path) -> Option<Pending> {
    load(dir, PENDING)
}

pub fn save_pending(dir: &Path, p: &Pending) -> std::io::Result<()> {
    save(dir, PENDING, p)
}

pub fn load_failed(dir: &Path) -> Option<Failed> {
    load(dir, FAILED)
}

pub fn save_failed(dir: &Path, f: &Failed) -> std::io::Result<()> {
    save(dir, FAILED, f)
}

pub fn read_marker(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn remove(dir: &Path, name: &str) {
    let _ = std::fs::remove_file(dir.join(name));
}

/// True when `path` is a regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Removes self-upgraded binaries other than `keep` (and leftovers of interrupted downloads).
pub fn prune(dir: &Path, keep: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(BINARY_PREFIX) && !keep.iter().any(|k| k == &path) {
            let _ = std::fs::remove_file(&path);
        }
    }
}
