//! Durable agent state in `STATE_DIR`.
//!
//! Layout:
//! - `agent.db`: SQLite (WAL, `synchronous=FULL`) with the node id, the run history (which also
//!   holds the outbox and the in-flight runs), the once-job ledger, the manager directives taken,
//!   the standalone revisions and the drop counter. See [`schema`] for the tables.
//! - `desired.json`: the last desired job set, replaced atomically ([`desired`]).
//! - `api-token`: the generated bearer token when no credential is configured ([`token`]).
//! - `node.token`: the credential a manager issued at enrollment ([`identity::NODE_TOKEN_FILE`]).
//!
//! The state dir and the log dir are the agent owner's only: directories 0700, files 0600
//! ([`private_dir`], [`create_private_file`]), because run records and outputs may carry
//! secrets. The agent does not set a process umask for this: its jobs inherit the umask, and
//! packages keep the modes their archives give them.
//!
//! Why SQLite and not hand-written files: the crash promises ("a once-job never runs twice", "a
//! finished run is never lost", "in-flight runs are reported `lost`") each need several facts to
//! change together — the ledger row and the in-flight run row before a start, the final record,
//! the ledger outcome and the outbox budget at the end. One transaction per step gives that
//! atomicity for free, where files would need a journal of our own. With `synchronous=FULL` a
//! commit survives power loss, not only `kill -9`. The cost is one fsync per run start and end,
//! far below what a cron agent needs. The connection is used only from blocking threads
//! (`spawn_blocking`), so an fsync never stalls the scheduler's timers.
//!
//! This module owns storage only. Deciding what to store belongs to the executor (runs), the
//! scheduler (ledger) and the outbox (delivery).

pub mod desired;
mod directives;
pub mod identity;
pub(crate) mod runs;
pub mod token;

use std::collections::HashSet;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::error::AgentError;

pub use runs::Delivery;

/// File name of the database inside the state dir.
pub const DB_FILE: &str = "agent.db";

/// The schema, applied with `PRAGMA user_version` as the migration counter.
pub mod schema {
    /// Each entry moves the schema from version `i` to `i + 1`.
    pub const MIGRATIONS: &[&str] = &[
        r#"
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        -- One row per run, from the moment before its process starts. `record` is the op-proto
        -- RunRecord as JSON; the other columns are what queries need. `delivery`: 0 = local only
        -- (no manager configured), 1 = in the outbox, 2 = acknowledged, 3 = dropped (over budget).
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL UNIQUE,
            job TEXT NOT NULL,
            trigger TEXT NOT NULL,
            status TEXT NOT NULL,
            delivery INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            record TEXT NOT NULL
        );
        CREATE INDEX runs_by_job ON runs (job, id);
        CREATE INDEX runs_by_delivery ON runs (delivery, id);
        CREATE INDEX runs_by_status ON runs (status);
        -- A row exists from before a once-job revision starts: its presence alone forbids a
        -- second run. `state`: started | ok | failed | lost.
        CREATE TABLE once_ledger (
            job TEXT NOT NULL,
            revision INTEGER NOT NULL,
            run_id TEXT NOT NULL,
            state TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (job, revision)
        );
        -- Standalone mode: the revision of each job file, bumped when its content changes.
        CREATE TABLE local_revisions (
            job TEXT PRIMARY KEY,
            content_hash TEXT NOT NULL,
            revision INTEGER NOT NULL
        );
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    "#,
        r#"
        -- Manager directives this agent has acted on (started, skipped or refused), by the run
        -- id the manager picked: a directive received again (after a reconnect or a restart) is
        -- never run twice. Written in the same transaction as the run's first row; rows older
        -- than a directive can live are pruned as new ones arrive.
        CREATE TABLE directives (
            run_id TEXT PRIMARY KEY,
            invocation_id TEXT NOT NULL,
            taken_at INTEGER NOT NULL
        );
        CREATE INDEX directives_by_age ON directives (taken_at);
    "#,
    ];
}

/// The state database, shared by every component. Cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    conn: Arc<Mutex<Connection>>,
    /// Woken whenever a finished run enters the outbox, so the outbox's drain sends it at once.
    outbox_ready: Arc<tokio::sync::Notify>,
    path: PathBuf,
    history_keep_runs: usize,
    outbox_budget: u64,
}

fn private(mode: u32) -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(mode)
}

/// Creates `dir` (and missing parents) with mode 0700, and tightens it to 0700 if it exists.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, private(0o700))
}

/// Creates (or truncates) `path` with mode 0600.
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

impl StateStore {
    /// Opens (creating if needed) the database in `dir` and applies pending migrations. Refuses
    /// a dir whose database was lost while the node's credential remains ([`identity::check`]).
    pub fn open(
        dir: &Path,
        history_keep_runs: usize,
        outbox_budget: u64,
    ) -> Result<Self, AgentError> {
        private_dir(dir).map_err(|e| AgentError::io("creating state dir", dir, e))?;
        identity::check(dir)?;
        let path = dir.join(DB_FILE);
        // SQLite creates a database 0644, and its -wal and -shm files with the database's mode:
        // a database made (or, from an older agent, tightened) 0600 first keeps all three private.
        let private_db = || -> std::io::Result<()> {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)?;
            for suffix in ["", "-wal", "-shm"] {
                let file = dir.join(format!("{DB_FILE}{suffix}"));
                match std::fs::set_permissions(&file, private(0o600)) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    other => other?,
                }
            }
            Ok(())
        };
        private_db().map_err(|e| AgentError::io("making private", &path, e))?;
        let err = |source| AgentError::State {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(err)?;
        // WAL lets API reads proceed beside a commit; FULL makes each commit durable; a small page
        // cache keeps the agent's RSS low (the database is small and mostly append-only).
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000; \
             PRAGMA cache_size=-256; PRAGMA foreign_keys=ON;",
        )
        .map_err(err)?;
        migrate(&mut conn).map_err(err)?;
        Ok(StateStore {
            conn: Arc::new(Mutex::new(conn)),
            outbox_ready: Arc::new(tokio::sync::Notify::new()),
            path,
            history_keep_runs,
            outbox_budget,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Notified (with a stored permit, so a wake-up is never lost) when a run enters the outbox.
    pub fn outbox_ready(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_ready.clone()
    }

    /// Runs `f` with the connection on a blocking thread.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R, AgentError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection, &Limits) -> rusqlite::Result<R> + Send + 'static,
    {
        let conn = self.conn.clone();
        let path = self.path.clone();
        let limits = Limits {
            history_keep_runs: self.history_keep_runs,
            outbox_budget: self.outbox_budget,
        };
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard, &limits).map_err(|source| AgentError::State { path, source })
        })
        .await
        .map_err(|e| AgentError::Task(e.to_string()))?
    }

    /// Runs `f` on the calling thread: for startup, before the runtime's work begins, and tests.
    pub(crate) fn call_now<R>(
        &self,
        f: impl FnOnce(&mut Connection, &Limits) -> rusqlite::Result<R>,
    ) -> Result<R, AgentError> {
        let limits = Limits {
            history_keep_runs: self.history_keep_runs,
            outbox_budget: self.outbox_budget,
        };
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard, &limits).map_err(|source| AgentError::State {
            path: self.path.clone(),
            source,
        })
    }

    /// This node's id: created once, at the first start, and kept for the node's life.
    pub fn node_id(&self) -> Result<Uuid, AgentError> {
        self.call_now(|conn, _| {
            let tx = conn.transaction()?;
            let existing: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            let id = match existing.and_then(|s| Uuid::parse_str(&s).ok()) {
                Some(id) => id,
                None => {
                    let id = Uuid::new_v4();
                    tx.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('node_id', ?1)",
                        params![id.to_string()],
                    )?;
                    id
                }
            };
            tx.commit()?;
            Ok(id)
        })
    }

    /// Every (job, revision) the once-job ledger holds. Loaded once at start; the scheduler keeps
    /// its own copy up to date as it starts once-jobs.
    pub fn ledger_keys(&self) -> Result<HashSet<(String, u64)>, AgentError> {
        self.call_now(|conn, _| {
            let mut stmt = conn.prepare("SELECT job, revision FROM once_ledger")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?;
            rows.collect()
        })
    }

    /// Writes the once-job revisions the manager knows this node started or finished into the
    /// ledger (after a reset they come from the node this host was); returns those that were
    /// new here.
    pub async fn adopt_once_history(
        &self,
        history: Vec<op_proto::agent::OnceOutcome>,
    ) -> Result<Vec<(String, u64)>, AgentError> {
        self.call(move |conn, _| {
            let tx = conn.transaction()?;
            let mut added = Vec::new();
            for h in history {
                let state = match h.state.as_str() {
                    "done" => "ok",
                    "failed" => "failed",
                    _ => "started",
                };
                let n = tx.execute(
                    "INSERT OR IGNORE INTO once_ledger (job, revision, run_id, state, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        h.job,
                        h.revision as i64,
                        h.run_id.map(|u| u.to_string()).unwrap_or_default(),
                        state,
                        chrono::Utc::now().to_rfc3339()
                    ],
                )?;
                if n > 0 {
                    added.push((h.job, h.revision));
                }
            }
            tx.commit()?;
            Ok(added)
        })
        .await
    }

    /// The ledger state of one once-job revision (`started`, `ok`, `failed`, `lost`).
    pub fn ledger_state(&self, job: &str, revision: u64) -> Result<Option<String>, AgentError> {
        let job = job.to_string();
        self.call_now(move |conn, _| {
            conn.query_row(
                "SELECT state FROM once_ledger WHERE job = ?1 AND revision = ?2",
                params![job, revision as i64],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Standalone mode: the revision for a job file with this content. The first content of a job
    /// is revision 1; any change of content is the next revision, kept across restarts, so a
    /// once-job runs again exactly when its file changed.
    pub fn local_revision(&self, job: &str, content_hash: &str) -> Result<u64, AgentError> {
        let (job, hash) = (job.to_string(), content_hash.to_string());
        self.call_now(move |conn, _| {
            let tx = conn.transaction()?;
            let current: Option<(String, i64)> = tx
                .query_row(
                    "SELECT content_hash, revision FROM local_revisions WHERE job = ?1",
                    params![job],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let revision = match current {
                Some((h, rev)) if h == hash => rev,
                Some((_, rev)) => rev + 1,
                None => 1,
            };
            tx.execute(
                "INSERT OR REPLACE INTO local_revisions (job, content_hash, revision) VALUES (?1, ?2, ?3)",
                params![job, hash, revision],
            )?;
            tx.commit()?;
            Ok(revision as u64)
        })
    }
}

/// Limits the run queries apply, copied from the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub history_keep_runs: usize,
    pub outbox_budget: u64,
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = StateStore::open(dir.path(), 10, 1 << 20)
            .unwrap()
            .node_id()
            .unwrap();
        let b = StateStore::open(dir.path(), 10, 1 << 20)
            .unwrap()
            .node_id()
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn local_revision_follows_content() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), 10, 1 << 20).unwrap();
        assert_eq!(s.local_revision("j", "h1").unwrap(), 1);
        assert_eq!(s.local_revision("j", "h1").unwrap(), 1);
        assert_eq!(s.local_revision("j", "h2").unwrap(), 2);
        assert_eq!(s.local_revision("j", "h1").unwrap(), 3);
        let s = StateStore::open(dir.path(), 10, 1 << 20).unwrap();
        assert_eq!(s.local_revision("j", "h1").unwrap(), 3);
    }
}
