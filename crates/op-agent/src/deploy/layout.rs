//! The on-disk layout of deployed packages, and the blocking steps that change it.
//!
//! ```text
//! DEPLOYDIR/
//!   test.py -> .op-packages/test.py/V/tree/test.py          a plain file (mode 0755)
//!   proj    -> .op-packages/proj.tar.gz/V/tree/proj         an archive with one top directory
//!   tools   -> .op-packages/tools.tar.zst/V/tree            any other archive (its name's stem)
//!   .op-packages/NAME/
//!     .lock                  flock: one deployer at a time per package and deploy dir
//!     V/meta.json, V/tree/   a complete version: V only ever appears by rename
//!     download-V.part        a download in progress, resumed with Range
//!     .staging-V-RAND/       a version being unpacked (garbage if found later)
//!     .link-RAND             a symlink about to be renamed over the visible path
//!     replaced-TS-NAME       what was at the visible path before op-agent managed it
//! ```
//!
//! Switching versions is one `rename(2)` of a fresh symlink over the visible path, so a reader
//! (or a `kill -9` at any instant) sees the old tree or the new one, never a mix, and a rollback
//! to a kept version is the same single rename. Jobs keep their paths: `DEPLOYDIR/test.py` is
//! always there. The installed version is read back from that symlink, so the layout itself is
//! the record and there is no second state file to disagree with it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use op_proto::package::{PackageKind, PackageRef};
use serde::{Deserialize, Serialize};

use super::DeployError;
use super::archive::{self, Limits};

/// The directory under each deploy dir where versions are kept.
pub const STORE: &str = ".op-packages";

/// `V/meta.json`: what a complete version is and where it becomes visible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    pub name: String,
    pub version: u64,
    pub sha256: String,
    pub size: u64,
    /// The name in the deploy dir that points at this version.
    pub visible: String,
    /// The symlink's text, relative to the deploy dir.
    pub target: String,
    pub installed_at: DateTime<Utc>,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DeployError + 'a {
    move |source| DeployError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

pub fn pkg_dir(deploy_dir: &Path, name: &str) -> PathBuf {
    deploy_dir.join(STORE).join(name)
}

pub fn part_path(pkg_dir: &Path, version: u64) -> PathBuf {
    pkg_dir.join(format!("download-{version}.part"))
}

fn version_dir(pkg_dir: &Path, version: u64) -> PathBuf {
    pkg_dir.join(version.to_string())
}

fn sync_dir(dir: &Path) {
    // Makes renames durable. A failure weakens only power-loss safety, not correctness.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Held while one deployer works on a package in a deploy dir. Two agents on one machine may
/// share a deploy dir; the lock makes them take turns, and the second finds the work done.
#[derive(Debug)]
pub struct PackageLock {
    _lock: Flock<File>,
}

/// Creates the package's directory and takes its lock; None when another deployer holds it.
pub fn try_lock(deploy_dir: &Path, name: &str) -> Result<Option<PackageLock>, DeployError> {
    let dir = pkg_dir(deploy_dir, name);
    std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("opening", &path))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(PackageLock { _lock: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(DeployError::Io {
            action: "locking",
            path,
            source: e.into(),
        }),
    }
}

fn read_meta(dir: &Path) -> Option<VersionMeta> {
    let text = std::fs::read(dir.join("meta.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Complete versions kept for `name`, newest first.
fn versions(pkg_dir: &Path) -> Vec<(u64, VersionMeta)> {
    let Ok(entries) = std::fs::read_dir(pkg_dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, VersionMeta)> = entries
        .flatten()
        .filter_map(|e| {
            let v: u64 = e.file_name().to_str()?.parse().ok()?;
            Some((v, read_meta(&e.path())?))
        })
        .collect();
    out.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
    out
}

/// The version of `name` that the deploy dir shows now, read from its symlink.
pub fn installed(deploy_dir: &Path, name: &str) -> Option<VersionMeta> {
    let kept = versions(&pkg_dir(deploy_dir, name));
    let visible: BTreeSet<&str> = kept.iter().map(|(_, m)| m.visible.as_str()).collect();
    let prefix = format!("{STORE}/{name}/");
    for v in visible {
        let Ok(target) = std::fs::read_link(deploy_dir.join(v)) else {
            continue;
        };
        let Some(rest) = target.to_str().and_then(|t| t.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(version) = rest.split('/').next().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        if let Some((_, meta)) = kept.iter().find(|(k, _)| *k == version) {
            return Some(meta.clone());
        }
    }
    None
}

/// A complete kept copy of `version` with this content, if there is one (rollback is then a
/// switch, with no download).
pub fn kept(deploy_dir: &Path, name: &str, version: u64, sha256: &str) -> Option<VersionMeta> {
    read_meta(&version_dir(&pkg_dir(deploy_dir, name), version))
        .filter(|m| m.version == version && m.sha256 == sha256)
}

/// Removes what an interrupted deploy left: staging trees and temp symlinks. Call under the lock.
pub fn clean_leftovers(deploy_dir: &Path, name: &str) {
    let dir = pkg_dir(deploy_dir, name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if n.starts_with(".staging-") || n.starts_with(".trash-") {
            let _ = std::fs::remove_dir_all(e.path());
        } else if n.starts_with(".link-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Builds a staging tree from the verified download at `part`: the file itself (mode 0755) or
/// the unpacked archive, plus `meta.json`. The download is consumed.
pub fn stage(
    deploy_dir: &Path,
    pkg: &PackageRef,
    part: &Path,
    limits: &Limits,
) -> Result<(PathBuf, VersionMeta), DeployError> {
    let dir = pkg_dir(deploy_dir, &pkg.name);
    let staging = dir.join(format!(".staging-{}-{}", pkg.version, random_suffix()));
    let tree = staging.join("tree");
    std::fs::create_dir_all(&tree).map_err(io_err("creating", &tree))?;
    let result = fill(pkg, part, &staging, &tree, limits);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result.map(|meta| (staging, meta))
}

fn fill(
    pkg: &PackageRef,
    part: &Path,
    staging: &Path,
    tree: &Path,
    limits: &Limits,
) -> Result<VersionMeta, DeployError> {
    let kind = PackageKind::of(&pkg.name);
    let base = format!("{STORE}/{}/{}/tree", pkg.name, pkg.version);
    let (visible, target) = if kind.is_archive() {
        let file = File::open(part).map_err(io_err("opening", part))?;
        let unpacked = archive::extract(io::BufReader::new(file), kind, tree, limits)?;
        let _ = std::fs::remove_file(part);
        let single_dir = match unpacked.top_level.as_slice() {
            [top] => top
                .to_str()
                .filter(|t| *t != STORE)
                .filter(|t| std::fs::symlink_metadata(tree.join(t)).is_ok_and(|m| m.is_dir()))
                .map(str::to_string),
            _ => None,
        };
        match single_dir {
            Some(top) => (top.clone(), format!("{base}/{top}")),
            None => (kind.stem(&pkg.name).to_string(), base),
        }
    } else {
        let dest = tree.join(&pkg.name);
        std::fs::rename(part, &dest).map_err(io_err("moving", part))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err("setting the mode of", &dest))?;
        (pkg.name.clone(), format!("{base}/{}", pkg.name))
    };
    let meta = VersionMeta {
        name: pkg.name.clone(),
        version: pkg.version,
        sha256: pkg.sha256.clone(),
        size: pkg.size,
        visible,
        target,
        installed_at: Utc::now(),
    };
    let path = staging.join("meta.json");
    let text = serde_json::to_vec_pretty(&meta).unwrap_or_default();
    std::fs::write(&path, text).map_err(io_err("writing", &path))?;
    Ok(meta)
}

/// Makes the staging tree the complete version `V`: flushes it to disk, then renames it into
/// place. If `V` is already there with the same content, the staging copy is dropped.
pub fn commit(deploy_dir: &Path, staging: &Path, meta: &VersionMeta) -> Result<(), DeployError> {
    let dir = pkg_dir(deploy_dir, &meta.name);
    let dest = version_dir(&dir, meta.version);
    // One syncfs flushes every file of the tree, however many there are, so a power cut after
    // the rename cannot leave a complete-looking version with empty files.
    if let Ok(f) = File::open(staging) {
        let _ = nix::unistd::syncfs(&f);
    }
    if read_meta(&dest).is_some_and(|existing| existing.sha256 == meta.sha256) {
        let _ = std::fs::remove_dir_all(staging);
        return Ok(());
    }
    if dest.exists() {
        // Not a complete copy of this content (damaged by hand?): move it out of the way.
        let trash = dir.join(format!(".trash-{}", random_suffix()));
        std::fs::rename(&dest, &trash).map_err(io_err("moving aside", &dest))?;
        let _ = std::fs::remove_dir_all(&trash);
    }
    std::fs::rename(staging, &dest).map_err(io_err("renaming", staging))?;
    sync_dir(&dir);
    Ok(())
}

/// Points the visible path at `meta`'s tree with one atomic rename. What was there before
/// op-agent managed the path (a real file or directory) is moved aside once, never overlaid.
/// A previous version visible under another name (an archive whose top directory changed) loses
/// its symlink.
pub fn switch(
    deploy_dir: &Path,
    meta: &VersionMeta,
    previous: Option<&VersionMeta>,
) -> Result<(), DeployError> {
    let dir = pkg_dir(deploy_dir, &meta.name);
    let link = deploy_dir.join(&meta.visible);
    if let Ok(m) = std::fs::symlink_metadata(&link)
        && !m.file_type().is_symlink()
    {
        let aside = dir.join(format!(
            "replaced-{}-{}",
            Utc::now().timestamp(),
            meta.visible
        ));
        std::fs::rename(&link, &aside).map_err(io_err("moving aside", &link))?;
        tracing::warn!(path = %link.display(), moved_to = %aside.display(), "moved an unmanaged file out of a package's way");
    }
    let tmp = dir.join(format!(".link-{}", random_suffix()));
    std::os::unix::fs::symlink(&meta.target, &tmp).map_err(io_err("creating", &tmp))?;
    if let Err(e) = std::fs::rename(&tmp, &link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("switching", &link)(e));
    }
    sync_dir(deploy_dir);
    if let Some(prev) = previous
        && prev.visible != meta.visible
    {
        let old = deploy_dir.join(&prev.visible);
        let ours = std::fs::read_link(&old)
            .ok()
            .and_then(|t| t.to_str().map(str::to_string))
            .is_some_and(|t| t.starts_with(&format!("{STORE}/{}/", meta.name)));
        if ours {
            let _ = std::fs::remove_file(&old);
        }
    }
    Ok(())
}

/// Keeps the current version and the `keep` newest others; deletes older versions and stale
/// downloads. Call under the lock.
pub fn prune(deploy_dir: &Path, name: &str, current: u64, keep: usize) {
    let dir = pkg_dir(deploy_dir, name);
    let mut others = 0;
    for (v, _) in versions(&dir) {
        if v == current {
            continue;
        }
        others += 1;
        if others > keep {
            let _ = std::fs::remove_dir_all(version_dir(&dir, v));
        }
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let n = e.file_name();
            if n.to_string_lossy().starts_with("download-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
