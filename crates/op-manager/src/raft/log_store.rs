//! The raft log, in its own SQLite file (`raft.db`, `synchronous=FULL`).
//!
//! Entries are stored as JSON keyed by index; the vote, the committed log id and the last purged
//! log id live in a small key/value table. Every write commits before it is acknowledged: `append`
//! calls `log_io_completed` only after the commit returned, which is what lets openraft count this
//! node in a quorum. All SQLite work runs on blocking threads, one at a time (one connection
//! behind a mutex), which also serializes vote and log writes as openraft requires.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use rusqlite::{Connection, OptionalExtension};

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Mutex<Connection>>,
    /// The last saved committed index + 1 (0 = none), for `/v1/cluster` and metrics.
    committed: Arc<AtomicU64>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

/// Wraps any error as a storage error about `subject`/`verb`.
fn sto_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::error(e.to_string())).into()
}

impl LogStore {
    pub fn open(path: &Path) -> Result<LogStore, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL,
                                             entry TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )?;
        let committed: Option<LogId> = LogStore::get_kv::<Option<LogId>>(&conn, "committed")
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
            })?
            .flatten();
        Ok(LogStore {
            db: Arc::new(Mutex::new(conn)),
            committed: Arc::new(AtomicU64::new(committed.map_or(0, |l| l.index + 1))),
        })
    }

    /// The committed index + 1 as last saved (0 = nothing committed yet).
    pub fn committed_handle(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    /// Runs `f` on the connection in a blocking thread.
    async fn with_db<T, F>(
        &self,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
        f: F,
    ) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, String> + Send + 'static,
    {
        let db = self.db.clone();
        let s2 = subject.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db
                .lock()
                .map_err(|_| "raft log lock poisoned".to_string())?;
            f(&mut conn)
        })
        .await
        .map_err(|e| sto_err(s2, verb, e))?
        .map_err(|e| sto_err(subject, verb, e))
    }

    fn get_kv<T: serde::de::DeserializeOwned>(
        conn: &Connection,
        key: &str,
    ) -> Result<Option<T>, String> {
        let raw: Option<String> = conn
            .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| e.to_string())?;
        raw.map(|s| serde_json::from_str(&s).map_err(|e| format!("stored {key}: {e}")))
            .transpose()
    }

    fn put_kv<T: serde::Serialize>(conn: &Connection, key: &str, value: &T) -> Result<(), String> {
        let json = serde_json::to_string(value).map_err(|e| e.to_string())?;
        conn.execute(
            "INSERT INTO kv(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, json.as_str()],
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (i64, i64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s as i64,
        Bound::Excluded(s) => *s as i64 + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => (*e as i64).saturating_add(1),
        Bound::Excluded(e) => *e as i64,
        Bound::Unbounded => i64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        self.with_db(ErrorSubject::Logs, ErrorVerb::Read, move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT entry FROM log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")
                .map_err(|e| e.to_string())?;
            let rows = stmt
                .query_map([start, end], |r| r.get::<_, String>(0))
                .map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for row in rows {
                let text = row.map_err(|e| e.to_string())?;
                out.push(serde_json::from_str(&text).map_err(|e| format!("log entry: {e}"))?);
            }
            Ok(out)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.with_db(ErrorSubject::Logs, ErrorVerb::Read, |conn| {
            let last_purged: Option<LogId> = LogStore::get_kv(conn, "last_purged")?;
            let last: Option<String> = conn
                .query_row("SELECT entry FROM log ORDER BY idx DESC LIMIT 1", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| e.to_string())?;
            let last_log_id = match last {
                Some(text) => {
                    let entry: Entry =
                        serde_json::from_str(&text).map_err(|e| format!("log entry: {e}"))?;
                    Some(entry.log_id)
                }
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.with_db(ErrorSubject::Vote, ErrorVerb::Write, move |conn| {
            LogStore::put_kv(conn, "vote", &vote)
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.with_db(ErrorSubject::Vote, ErrorVerb::Read, |conn| {
            LogStore::get_kv(conn, "vote")
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.with_db(ErrorSubject::Store, ErrorVerb::Write, move |conn| {
            LogStore::put_kv(conn, "committed", &committed)
        })
        .await?;
        self.committed
            .store(committed.map_or(0, |l| l.index + 1), Ordering::SeqCst);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.with_db(ErrorSubject::Store, ErrorVerb::Read, |conn| {
            Ok(LogStore::get_kv::<Option<LogId>>(conn, "committed")?.flatten())
        })
        .await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = self
            .with_db(ErrorSubject::Logs, ErrorVerb::Write, move |conn| {
                let tx = conn.transaction().map_err(|e| e.to_string())?;
                {
                    let mut stmt = tx
                        .prepare_cached(
                            "INSERT OR REPLACE INTO log(idx, term, entry) VALUES (?1, ?2, ?3)",
                        )
                        .map_err(|e| e.to_string())?;
                    for entry in &entries {
                        let text = serde_json::to_string(entry).map_err(|e| e.to_string())?;
                        stmt.execute(rusqlite::params![
                            entry.log_id.index as i64,
                            entry.log_id.leader_id.term as i64,
                            text
                        ])
                        .map_err(|e| e.to_string())?;
                    }
                }
                tx.commit().map_err(|e| e.to_string())
            })
            .await;
        // Only a committed (fsynced) append may be reported as flushed.
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.with_db(ErrorSubject::Logs, ErrorVerb::Delete, move |conn| {
            conn.execute("DELETE FROM log WHERE idx >= ?1", [log_id.index as i64])
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.with_db(ErrorSubject::Logs, ErrorVerb::Delete, move |conn| {
            let tx = conn.transaction().map_err(|e| e.to_string())?;
            LogStore::put_kv(&tx, "last_purged", &log_id)?;
            tx.execute("DELETE FROM log WHERE idx <= ?1", [log_id.index as i64])
                .map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| e.to_string())
        })
        .await
    }
}
