//! The manager's state: a SQLite database changed only by [`Command`]s.
//!
//! `op-store` owns the tables (jobs with revisions, nodes, once-job targets, runs, invocations and
//! their targets, tokens, the audit log, package versions), the command vocabulary, the
//! deterministic [`Store::apply_batch`], the read queries the API
//! serves, retention, and snapshot build/install with `VACUUM INTO`. It knows nothing of raft: the
//! caller (op-manager's state machine) hands in log indexes and opaque raft metadata strings, which
//! are stored in the same transaction as the changes they cover. Package blobs are not here:
//! only their metadata and sha256; the files belong to the manager's blob store.
//!
//! Concurrency: one writer connection (used by whoever applies the log, one batch at a time) and a
//! small pool of reader connections. WAL lets readers run beside the writer. Installing a snapshot
//! replaces the file under an exclusive lock that readers also take (shared), so no query ever
//! straddles two databases.

mod apply;
mod codec;
mod command;
mod error;
mod read;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use apply::events::{MAX_EVENT_AGE, MAX_EVENTS};
pub use apply::{Changes, Entry};
pub use command::NewRollout;
pub use command::SealedSecret;
pub use command::{
    Command, CommandResult, DirectiveAck, FireToClose, MissingHost, NewInvocation, NewTarget,
    NewToken, NodeBeat, NodeRegistration, NodeRuns, PruneReport, Rejection, RejectionCode,
    RetentionLimits, StatusChange, TokenRecord,
};
pub use command::{DEFAULT_ROLLOUT_MAX_AGE_SECS, DEFAULT_ROLLOUTS_KEPT};
pub use error::{Result, StoreError};
pub use read::events::MAX_EVENT_PAGE;
pub use read::invocations::{
    DEFAULT_INVOCATION_LIMIT, InvocationDetail, InvocationRow, MAX_INVOCATION_LIMIT, TargetRow,
};
pub use read::misc::MAX_AUDIT_LIMIT;
pub use read::nodes::NodeSeen;
pub use read::rollouts::ActiveRollout;
pub use read::runs::{DEFAULT_RUN_LIMIT, LatestRunCount, MAX_RUN_LIMIT, RunBucket};
pub use read::{DesiredView, JobsView, NodesView, StoreStats};
pub use schema::SCHEMA_VERSION;

/// Meta key of the raft log id of the last applied entry (opaque JSON from the caller).
pub const META_LAST_APPLIED: &str = "last_applied";
/// Meta key of the last applied membership (opaque JSON from the caller).
pub const META_MEMBERSHIP: &str = "membership";
/// Meta key of the cluster id.
pub const META_CLUSTER_ID: &str = "cluster_id";
/// Meta key of the log index of the last change that concerns every node's desired state.
pub const META_DESIRED_INDEX: &str = "desired_index";
/// Meta key of the runs kept per (job, node), as the last `Prune` enforced it on every pair:
/// from then on each ingested batch trims its own pairs (see `apply::runs`).
pub const META_RUNS_PER_JOB_NODE: &str = "runs_per_job_node";

/// Most idle reader connections kept open.
const READER_POOL: usize = 8;

/// The state database of one manager.
pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Readers share it; snapshot install takes it exclusively while it swaps the file.
    swap: RwLock<()>,
    /// The incident state as last committed (`None`: load it from the database). A batch holds
    /// it while it applies. Lock order: `swap`, then `writer`, then this.
    incidents: Mutex<Option<op_proto::incidents::IncidentState>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // The raft log is the durable record (synchronous=FULL there); the state machine can be
    // rebuilt from it, so NORMAL is enough here and keeps apply fast.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

impl Store {
    /// Opens (or creates) the database at `path` and migrates it to [`SCHEMA_VERSION`].
    pub fn open(path: impl Into<PathBuf>) -> Result<Store> {
        let path = path.into();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        }
        let mut writer = open_conn(&path)?;
        schema::migrate(&mut writer, &path)?;
        Ok(Store {
            path,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            swap: RwLock::new(()),
            incidents: Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a reader connection. Blocking: call from a blocking thread.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let _shared = self.swap.read().map_err(|_| StoreError::Poisoned)?;
        self.with_reader(f)
    }

    /// [`Store::read`] for a caller that already holds `swap`.
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().map_err(|_| StoreError::Poisoned)?.pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = open_conn(&self.path)?;
                conn.pragma_update(None, "query_only", "ON")?;
                conn
            }
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().map_err(|_| StoreError::Poisoned)?;
        if pool.len() < READER_POOL {
            pool.push(conn);
        }
        out
    }

    /// Applies a batch of log entries in ONE transaction, together with the raft metadata that
    /// says how far the log has been applied. Either all of it is durable or none of it.
    ///
    /// `last_applied` and `membership` are opaque to the store (the caller's JSON).
    pub fn apply_batch(
        &self,
        entries: &[Entry<'_>],
        last_applied: &str,
        membership: Option<&str>,
    ) -> Result<(Vec<CommandResult>, Changes)> {
        let _shared = self.swap.read().map_err(|_| StoreError::Poisoned)?;
        let mut conn = self.writer.lock().map_err(|_| StoreError::Poisoned)?;
        // IMMEDIATE takes the write lock up front, waiting (busy_timeout) for a checkpoint or
        // snapshot in progress; a deferred transaction would fail with "database is locked" when
        // it upgrades to writing, because SQLite does not wait there (deadlock avoidance).
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut changes = Changes::default();
        let mut results = Vec::with_capacity(entries.len());
        // Taken out for the batch: if anything below fails, the cache stays empty and the next
        // use loads the state as committed.
        let mut cache = self.incidents.lock().map_err(|_| StoreError::Poisoned)?;
        let mut incidents = apply::events::Incidents::new(cache.take());
        for entry in entries {
            results.push(apply::apply_one(&tx, entry, &mut changes, &mut incidents)?);
        }
        let state = incidents.finish(&tx)?;
        set_meta(&tx, META_LAST_APPLIED, last_applied)?;
        if let Some(m) = membership {
            set_meta(&tx, META_MEMBERSHIP, m)?;
        }
        tx.commit()?;
        *cache = state;
        Ok((results, changes))
    }

    /// Reads one meta value.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.read(|conn| read::meta(conn, key))
    }

    /// Writes a consistent copy of the database to `dest` (which must not exist) with
    /// `VACUUM INTO`: a point-in-time view that also drops free pages.
    pub fn snapshot_to(&self, dest: &Path) -> Result<()> {
        let dest_str = dest.to_string_lossy().into_owned();
        let _shared = self.swap.read().map_err(|_| StoreError::Poisoned)?;
        // Pooled readers are `query_only`, which VACUUM INTO refuses: use a connection of its own.
        // It still runs in one read transaction, so the copy is a point-in-time view.
        let conn = open_conn(&self.path)?;
        conn.execute("VACUUM INTO ?1", [dest_str.as_str()])?;
        std::fs::File::open(dest)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::io(dest, e))?;
        // The state database runs with synchronous=NORMAL, so its newest transactions may not
        // survive a power cut. Raft purges its log up to a snapshot's index once the snapshot
        // exists, so make everything up to here durable first: a FULL checkpoint copies the WAL
        // into the database file and fsyncs it.
        conn.query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Reads a meta value straight from a snapshot file (to learn what it covers).
    pub fn meta_of_file(path: &Path, key: &str) -> Result<Option<String>> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        read::meta(&conn, key)
    }

    /// Replaces the whole state with the snapshot file at `src` (consumed: it is moved into
    /// place). Waits for running reads and applies to finish first.
    pub fn install_from(&self, src: &Path) -> Result<()> {
        let _exclusive = self.swap.write().map_err(|_| StoreError::Poisoned)?;
        let mut writer = self.writer.lock().map_err(|_| StoreError::Poisoned)?;
        // Whatever happens below, the cached incident state is not the new file's.
        *self.incidents.lock().map_err(|_| StoreError::Poisoned)? = None;
        self.readers
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .clear();
        // Check the snapshot before we drop the current state.
        {
            let mut probe = open_conn(src)?;
            schema::migrate(&mut probe, src)?;
            probe.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
        }
        // Close the old writer by replacing it with a throwaway in-memory connection, then swap
        // the files. The WAL and shared-memory files belong to the old database: remove them.
        *writer = Connection::open_in_memory()?;
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", self.path.display()));
            match std::fs::remove_file(&side) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(side, e)),
            }
            let src_side = PathBuf::from(format!("{}{suffix}", src.display()));
            let _ = std::fs::remove_file(src_side);
        }
        std::fs::rename(src, &self.path).map_err(|e| StoreError::io(&self.path, e))?;
        // Make the rename durable before the new file is used.
        if let Some(Ok(d)) = self.path.parent().map(std::fs::File::open) {
            let _ = d.sync_all();
        }
        let mut fresh = open_conn(&self.path)?;
        schema::migrate(&mut fresh, &self.path)?;
        *writer = fresh;
        Ok(())
    }
}

pub(crate) fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}
