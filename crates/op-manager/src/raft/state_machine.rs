//! The raft state machine: applies committed entries to `op-store` and builds/installs
//! snapshots as SQLite files.
//!
//! Each `apply` call becomes ONE store transaction that also records the last applied log id and
//! membership, so after a crash the state machine is exactly as far as it says it is. SQLite work
//! runs on blocking threads: openraft drives this from its own task, and blocking that task would
//! stall replication.
//!
//! Snapshot files live in `DATA_DIR/snapshots/`: `current.db` + `current.meta.json` is the latest
//! built or installed snapshot; `building-*` and `receiving-*` are temporary.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use op_store::{CommandResult, META_LAST_APPLIED, META_MEMBERSHIP, Store};
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder,
    StorageIOError,
};
use tokio::io::AsyncSeekExt;

use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::hub::Hub;

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

pub struct StateMachine {
    store: Arc<Store>,
    hub: Arc<Hub>,
    snapshots: Arc<SnapshotDir>,
    receiving: Option<PathBuf>,
}

/// The snapshot directory; its lock keeps a build and an install from writing `current` at once.
pub struct SnapshotDir {
    dir: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl SnapshotDir {
    fn current_db(&self) -> PathBuf {
        self.dir.join("current.db")
    }

    fn current_meta(&self) -> PathBuf {
        self.dir.join("current.meta.json")
    }

    fn temp(&self, prefix: &str) -> PathBuf {
        self.dir
            .join(format!("{prefix}-{}.db", uuid::Uuid::new_v4().simple()))
    }

    /// Publishes `db` (moved) with `meta` as the current snapshot.
    fn publish(&self, db: &Path, meta: &SnapshotMeta) -> std::io::Result<()> {
        let meta_tmp = self.dir.join("current.meta.json.tmp");
        std::fs::write(&meta_tmp, serde_json::to_vec(meta)?)?;
        std::fs::rename(db, self.current_db())?;
        std::fs::rename(&meta_tmp, self.current_meta())?;
        Ok(())
    }

    async fn open_current(&self) -> std::io::Result<Option<Snapshot>> {
        let meta_path = self.current_meta();
        let meta: SnapshotMeta = match tokio::fs::read(&meta_path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let file = tokio::fs::File::open(self.current_db()).await?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

impl StateMachine {
    pub fn new(store: Arc<Store>, hub: Arc<Hub>, dir: PathBuf) -> std::io::Result<StateMachine> {
        std::fs::create_dir_all(&dir)?;
        // Temporary files of an interrupted build or receive are garbage.
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("building-") || name.starts_with("receiving-") {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(StateMachine {
            store,
            hub,
            snapshots: Arc::new(SnapshotDir {
                dir,
                lock: tokio::sync::Mutex::new(()),
            }),
            receiving: None,
        })
    }
}

/// Reads the raft metadata stored in a state database (the live one or a snapshot file).
fn stored_raft_meta(
    last_applied: Option<String>,
    membership: Option<String>,
) -> Result<(Option<LogId>, StoredMembership), String> {
    let last: Option<LogId> = match last_applied {
        Some(s) => serde_json::from_str(&s).map_err(|e| format!("last_applied: {e}"))?,
        None => None,
    };
    let membership = match membership {
        Some(s) => serde_json::from_str(&s).map_err(|e| format!("membership: {e}"))?,
        None => StoredMembership::default(),
    };
    Ok((last, membership))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let last = store.meta(META_LAST_APPLIED).map_err(|e| e.to_string())?;
            let membership = store.meta(META_MEMBERSHIP).map_err(|e| e.to_string())?;
            stored_raft_meta(last, membership)
        })
        .await
        .map_err(|e| sm_err(ErrorVerb::Read, e))?
        .map_err(|e| sm_err(ErrorVerb::Read, e))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        let store = self.store.clone();
        let (results, changes) = tokio::task::spawn_blocking(move || {
            let mut membership = None;
            let batch: Vec<op_store::Entry<'_>> = entries
                .iter()
                .map(|e| {
                    let command = match &e.payload {
                        EntryPayload::Normal(cmd) => Some(cmd),
                        EntryPayload::Membership(m) => {
                            membership = Some(StoredMembership::new(Some(e.log_id), m.clone()));
                            None
                        }
                        EntryPayload::Blank => None,
                    };
                    op_store::Entry {
                        index: e.log_id.index,
                        command,
                    }
                })
                .collect();
            let last_json = serde_json::to_string(&Some(last)).map_err(|e| e.to_string())?;
            let membership_json = membership
                .map(|m| serde_json::to_string(&m))
                .transpose()
                .map_err(|e| e.to_string())?;
            store
                .apply_batch(&batch, &last_json, membership_json.as_deref())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| sm_err(ErrorVerb::Write, e))?
        .map_err(|e| {
            StorageError::from(StorageIOError::new(
                ErrorSubject::Apply(last),
                ErrorVerb::Write,
                AnyError::error(e),
            ))
        })?;
        self.hub.applied(&changes);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.snapshots.temp("receiving");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        if let Some(old) = self.receiving.replace(path) {
            let _ = tokio::fs::remove_file(old).await;
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let Some(received) = self.receiving.take() else {
            return Err(snap_err(
                ErrorVerb::Write,
                "install_snapshot without begin_receiving_snapshot",
            ));
        };
        snapshot
            .sync_all()
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        snapshot
            .seek(SeekFrom::Start(0))
            .await
            .map_err(|e| snap_err(ErrorVerb::Seek, e))?;
        drop(snapshot);
        let _guard = self.snapshots.lock.lock().await;
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        let meta = meta.clone();
        let last_index = meta.last_log_id.map(|l| l.index);
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            // Keep a copy as our current snapshot (to serve to other followers), then move the
            // received file into place as the live state.
            let copy = snapshots.temp("building");
            std::fs::copy(&received, &copy).map_err(|e| e.to_string())?;
            store.install_from(&received).map_err(|e| e.to_string())?;
            snapshots.publish(&copy, &meta).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))?
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        tracing::info!(
            event = "snapshot_installed",
            last_index = last_index,
            "installed a snapshot sent by the leader"
        );
        self.hub.reset();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.snapshots
            .open_current()
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))
    }
}

pub struct SnapshotBuilder {
    store: Arc<Store>,
    snapshots: Arc<SnapshotDir>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let _guard = self.snapshots.lock.lock().await;
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let tmp = snapshots.temp("building");
            store.snapshot_to(&tmp).map_err(|e| e.to_string())?;
            // The snapshot covers exactly what its own meta table says, whatever was applied
            // while VACUUM INTO ran.
            let last = Store::meta_of_file(&tmp, META_LAST_APPLIED).map_err(|e| e.to_string())?;
            let membership =
                Store::meta_of_file(&tmp, META_MEMBERSHIP).map_err(|e| e.to_string())?;
            let (last_log_id, last_membership) = stored_raft_meta(last, membership)?;
            let snapshot_id = match last_log_id {
                Some(l) => format!(
                    "{}-{}-{}",
                    l.leader_id.term,
                    l.index,
                    uuid::Uuid::new_v4().simple()
                ),
                None => format!("0-0-{}", uuid::Uuid::new_v4().simple()),
            };
            let meta = SnapshotMeta {
                last_log_id,
                last_membership,
                snapshot_id,
            };
            snapshots.publish(&tmp, &meta).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))?
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        match self.snapshots.open_current().await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(snap_err(ErrorVerb::Read, "snapshot vanished after build")),
            Err(e) => Err(snap_err(ErrorVerb::Read, e)),
        }
    }
}
