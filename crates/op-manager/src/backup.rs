//! `op-manager backup` and `op-manager restore`: a consistent snapshot of a manager's data dir
//! as one `.tar.gz`, and a new data dir made from one (docs/operations.md, "Backup and restore").
//!
//! **Backup** runs beside a serving manager (it only reads). The state database is copied with
//! `VACUUM INTO`, one read transaction, so the copy is the state machine exactly as of one
//! applied raft index. The package blobs that copy references are added next; a blob is never
//! changed in place (its name is its sha256) and is deleted only when no version references it,
//! so the only race is a version deleted meanwhile, which fails the backup with a clear message.
//! The raft log is not backed up: everything it held up to the copied index is in the copy.
//! Archive members: `manifest.json` (first), `state.db`, `blobs/<sha256>`, `admin.token` and
//! `agent.token` when present. The archive is written as `FILE.partial`, mode 0600 (it holds
//! token hashes and secrets), and renamed into place when complete.
//!
//! **Restore** refuses a data dir that already holds state, checks every member against the
//! manifest (sizes and sha256), and makes the node a one-member cluster: the membership stored
//! in the state becomes `{node_id}`, and `raft.db` starts with a vote in the term of the last
//! applied entry. On start, openraft sees a state machine ahead of an empty log (as after
//! installing a snapshot), elects this node, and continues the log after the restored index, so
//! index-based facts (agents' sync indexes, once-job revisions) keep moving forward. Other
//! members are added again with the cluster commands (docs/cluster.md).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use op_store::{META_CLUSTER_ID, META_LAST_APPLIED, META_MEMBERSHIP};
use openraft::storage::RaftLogStorage;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ManagerError;
use crate::raft::log_store::LogStore;
use crate::raft::types::{LogId, Member, StoredMembership, Vote};

/// Version of the archive layout; restore refuses others.
pub const FORMAT: u32 = 1;

/// Token files copied along (secrets, mode 0600 in the archive and after restore).
const TOKEN_FILES: [&str; 2] = ["admin.token", "agent.token"];

/// `manifest.json`: what the archive holds and what it was made from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: DateTime<Utc>,
    pub manager_version: String,
    pub source_data_dir: String,
    pub cluster_id: Option<String>,
    /// The raft log id the state covers (`{"leader_id":..,"index":N}`), as stored.
    pub last_applied: Option<serde_json::Value>,
    pub state_db: FileEntry,
    pub blobs: Vec<FileEntry>,
    pub token_files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ManagerError + '_ {
    move |source| ManagerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sqlite(path: &Path) -> impl FnOnce(rusqlite::Error) -> ManagerError + '_ {
    move |source| ManagerError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

fn bad(msg: impl Into<String>) -> ManagerError {
    ManagerError::Config(msg.into())
}

fn sha256_file(path: &Path) -> Result<(u64, String), ManagerError> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

fn meta(conn: &Connection, key: &str) -> Option<String> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .ok()
}

/// Writes a backup of the manager data dir `data_dir` to `to`. Safe while the manager runs.
pub fn backup(data_dir: &Path, to: &Path) -> Result<Manifest, ManagerError> {
    let state = data_dir.join("state.db");
    if !state.is_file() {
        return Err(bad(format!(
            "{} holds no state.db; pass the manager's --data-dir",
            data_dir.display()
        )));
    }
    let partial = PathBuf::from(format!("{}.partial", to.display()));
    let work = PathBuf::from(format!("{}.work", to.display()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    let result = write_backup(data_dir, &state, &work, &partial).and_then(|manifest| {
        std::fs::rename(&partial, to).map_err(io(to))?;
        Ok(manifest)
    });
    let _ = std::fs::remove_dir_all(&work);
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn write_backup(
    data_dir: &Path,
    state: &Path,
    work: &Path,
    partial: &Path,
) -> Result<Manifest, ManagerError> {
    // One read transaction of the live database: a point-in-time copy (WAL readers do not
    // block the manager's writer).
    let copy = work.join("state.db");
    {
        let conn = Connection::open_with_flags(state, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(sqlite(state))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sqlite(state))?;
        conn.execute("VACUUM INTO ?1", [copy.to_string_lossy().as_ref()])
            .map_err(sqlite(state))?;
    }
    let (blob_names, cluster_id, last_applied) = {
        let conn = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sqlite(&copy))?;
        let mut stmt = conn
            .prepare("SELECT DISTINCT sha256 FROM package_versions ORDER BY sha256")
            .map_err(sqlite(&copy))?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(sqlite(&copy))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlite(&copy))?;
        drop(stmt);
        (
            names,
            meta(&conn, META_CLUSTER_ID),
            meta(&conn, META_LAST_APPLIED).and_then(|s| serde_json::from_str(&s).ok()),
        )
    };
    let (size, sha256) = sha256_file(&copy)?;
    let mut blobs = Vec::new();
    for name in &blob_names {
        let path = data_dir.join("blobs").join(name);
        let size = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad(format!(
                    "package blob {name} disappeared while the backup ran (a package version was \
                     deleted meanwhile); run the backup again"
                )));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        blobs.push(FileEntry {
            path: format!("blobs/{name}"),
            size,
            sha256: name.clone(),
        });
    }
    let token_files: Vec<String> = TOKEN_FILES
        .iter()
        .filter(|f| data_dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    let manifest = Manifest {
        format: FORMAT,
        created_at: Utc::now(),
        manager_version: env!("CARGO_PKG_VERSION").to_string(),
        source_data_dir: data_dir.display().to_string(),
        cluster_id,
        last_applied,
        state_db: FileEntry {
            path: "state.db".into(),
            size,
            sha256,
        },
        blobs,
        token_files,
    };

    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(partial)
            .map_err(io(partial))?
    };
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let manifest_json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| bad(format!("cannot encode the manifest: {e}")))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest_json.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(manifest.created_at.timestamp().max(0) as u64);
    header.set_cksum();
    tar.append_data(&mut header, "manifest.json", manifest_json.as_slice())
        .map_err(io(partial))?;
    tar.append_path_with_name(&copy, "state.db")
        .map_err(io(&copy))?;
    for b in &manifest.blobs {
        let path = data_dir.join(&b.path);
        tar.append_path_with_name(&path, &b.path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                bad(format!(
                    "package blob {} disappeared while the backup ran; run the backup again",
                    b.sha256
                ))
            } else {
                io(&path)(e)
            }
        })?;
    }
    for t in &manifest.token_files {
        let path = data_dir.join(t);
        tar.append_path_with_name(&path, t).map_err(io(&path))?;
    }
    let gz = tar.into_inner().map_err(io(partial))?;
    let file = gz.finish().map_err(io(partial))?;
    file.sync_all().map_err(io(partial))?;
    Ok(manifest)
}

/// Restores the backup `from` into the new data dir `data_dir`, as a one-member cluster whose
/// member is `node_id`. Start `op-manager --data-dir DATA_DIR --node-id NODE_ID` afterwards.
pub async fn restore(from: &Path, data_dir: &Path, node_id: u64) -> Result<Manifest, ManagerError> {
    if node_id == 0 {
        return Err(bad("--node-id must be at least 1"));
    }
    for held in ["state.db", "raft.db"] {
        if data_dir.join(held).exists() {
            return Err(bad(format!(
                "{} already holds a manager's state ({held}); restore into an empty or new directory",
                data_dir.display()
            )));
        }
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir.join("blobs"))
            .map_err(io(data_dir))?;
    }
    let manifest = {
        let from = from.to_path_buf();
        let dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || extract(&from, &dir))
            .await
            .map_err(|e| bad(format!("restore task failed: {e}")))??
    };
    let state = data_dir.join("state.db");
    let last_applied: Option<LogId> = {
        let conn = Connection::open(&state).map_err(sqlite(&state))?;
        let last: Option<LogId> = meta(&conn, META_LAST_APPLIED)
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| bad(format!("state.db: last applied log id: {e}")))?
            .flatten();
        let stored: Option<StoredMembership> = meta(&conn, META_MEMBERSHIP)
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| bad(format!("state.db: membership: {e}")))?;
        // Keep this node's addresses if the old membership knew it; the running manager
        // announces its real address to agents either way (App::managers).
        let member: Member = stored
            .as_ref()
            .and_then(|m| m.membership().get_node(&node_id).cloned())
            .unwrap_or_default();
        let membership = openraft::Membership::new(
            vec![BTreeSet::from([node_id])],
            BTreeMap::from([(node_id, member)]),
        );
        let log_id = stored.as_ref().and_then(|m| m.log_id().to_owned()).or(last);
        let json = serde_json::to_string(&StoredMembership::new(log_id, membership))
            .map_err(|e| bad(format!("cannot encode the membership: {e}")))?;
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [META_MEMBERSHIP, json.as_str()],
        )
        .map_err(sqlite(&state))?;
        last
    };
    // A vote in the restored term: the first election moves to a later term, so the log this
    // node writes continues after the restored entries with terms that never go backwards.
    let raft_path = data_dir.join("raft.db");
    let mut log = LogStore::open(&raft_path).map_err(sqlite(&raft_path))?;
    let term = last_applied.map_or(0, |l| l.leader_id.term);
    log.save_vote(&Vote::new(term, node_id))
        .await
        .map_err(|e| bad(format!("{}: {e}", raft_path.display())))?;
    Ok(manifest)
}

/// Unpacks the archive, accepting only the members a backup has, each checked against the
/// manifest.
fn extract(from: &Path, dir: &Path) -> Result<Manifest, ManagerError> {
    let file = File::open(from).map_err(io(from))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut manifest: Option<Manifest> = None;
    let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for entry in archive.entries().map_err(io(from))? {
        let mut entry = entry.map_err(io(from))?;
        let name = entry
            .path()
            .map_err(io(from))?
            .to_string_lossy()
            .into_owned();
        if name == "manifest.json" {
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(io(from))?;
            let m: Manifest = serde_json::from_slice(&text)
                .map_err(|e| bad(format!("{}: manifest.json: {e}", from.display())))?;
            if m.format != FORMAT {
                return Err(bad(format!(
                    "{}: backup format {} is not supported (this op-manager reads format {FORMAT})",
                    from.display(),
                    m.format
                )));
            }
            manifest = Some(m);
            continue;
        }
        let allowed = name == "state.db"
            || TOKEN_FILES.contains(&name.as_str())
            || name.strip_prefix("blobs/").is_some_and(|h| {
                h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            });
        if !allowed || !entry.header().entry_type().is_file() {
            return Err(bad(format!(
                "{}: unexpected member {name:?}; is this an op-manager backup?",
                from.display()
            )));
        }
        let dest = dir.join(&name);
        let mut out = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&dest)
                .map_err(io(&dest))?
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = entry.read(&mut buf).map_err(io(from))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io(&dest))?;
        }
        out.sync_all().map_err(io(&dest))?;
        seen.insert(name, (size, hex::encode(hasher.finalize())));
    }
    let manifest = manifest.ok_or_else(|| {
        bad(format!(
            "{}: no manifest.json; is this an op-manager backup?",
            from.display()
        ))
    })?;
    for f in std::iter::once(&manifest.state_db).chain(&manifest.blobs) {
        match seen.get(&f.path) {
            Some((size, sha)) if *size == f.size && *sha == f.sha256 => {}
            Some(_) => {
                return Err(bad(format!(
                    "{}: {} does not match its size or sha256 in the manifest; the backup is damaged",
                    from.display(),
                    f.path
                )));
            }
            None => {
                return Err(bad(format!(
                    "{}: {} is missing; the backup is incomplete",
                    from.display(),
                    f.path
                )));
            }
        }
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(manifest)
}
