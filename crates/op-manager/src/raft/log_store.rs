//! The raft log, in its own SQLite file (`raft.db`, `synchronous=FULL`).
//!
//! Entries are stored as JSON keyed by index; the vote, the committed log id and the last purged
//! log id live in a small key/value table. Every write commits before it is acknowledged: `append`
//! calls `log_io_completed` only after the commit returned, which is what lets openraft count this
//! node in a quorum. All SQLite work runs on blocking threads, one at a time (one connection
//! behind a mutex), which also serializes vote and log writes as openraft requires.
//!
//! Once this member has followers to replicate to, or is a follower, the newest entries are also
//! kept in memory ([`Recent`]), decoded and as stored. openraft reads every entry back right
//! after it was appended: once to apply it, and on a leader once per replication stream; those
//! reads are served from memory instead of decoding the JSON again. On a leader the stored JSON
//! is exactly what a follower is sent, so the network splices it into the append request
//! ([`Encoded`]) instead of encoding the entry once more; a follower stores the JSON it was sent
//! ([`Received`]). A lone manager keeps no tail and reads back from SQLite. (Its tail was
//! taken back when op-testkit's crowd-of-connections test lost a kept-alive connection under
//! load; that turned out to be the test's HTTP client opening a new connection the full cap
//! refused, since fixed in the test, so a lone manager's tail is untried, not known to be wrong.)

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use rusqlite::{Connection, OptionalExtension};

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use super::wire::decode_entry;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Mutex<Connection>>,
    /// The last saved committed index + 1 (0 = none), for `/v1/cluster` and metrics.
    committed: Arc<AtomicU64>,
    /// The tail of the log, kept in a cluster (a leader with followers, or a follower).
    recent: Arc<Mutex<Recent>>,
    /// Entries' JSON as the leader sent them, for `append` to store as it is.
    received: Received,
}

/// Most bytes of stored JSON the tail holds; the newest entry is kept whatever its size. A run
/// batch of 4,000 records is about 2.5 MB.
const RECENT_BYTES: usize = 8 << 20;

/// The newest entries of the log, decoded and as stored, while `replicating`.
///
/// Invariant: when not empty, the entries have consecutive indexes and the last one is the last
/// entry of the log. Every append adds to it (or starts it again when the append does not follow
/// on), a truncation cuts it, a purge drops its front; anything that fails empties it.
struct Recent {
    entries: VecDeque<(Entry, Arc<str>)>,
    /// Set once a follower's replication stream exists, or once entries came from a leader (this
    /// member is a follower): before, nothing is kept.
    replicating: bool,
    bytes: usize,
    /// [`RECENT_BYTES`], smaller in tests.
    limit: usize,
}

impl Default for Recent {
    fn default() -> Recent {
        Recent {
            entries: VecDeque::new(),
            replicating: false,
            bytes: 0,
            limit: RECENT_BYTES,
        }
    }
}

impl Recent {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Adds entries just written durably, in order.
    fn appended<T: Into<Arc<str>>>(&mut self, entries: Vec<(Entry, T)>) {
        if !self.replicating {
            return;
        }
        let Some(first) = entries.first().map(|(e, _)| e.log_id.index) else {
            return;
        };
        let follows = self
            .entries
            .back()
            .is_some_and(|(e, _)| e.log_id.index + 1 == first);
        if !follows {
            self.clear();
        }
        for (entry, text) in entries {
            let text: Arc<str> = text.into();
            self.bytes += text.len();
            self.entries.push_back((entry, text));
        }
        while self.bytes > self.limit && self.entries.len() > 1 {
            self.pop(true);
        }
    }

    /// Drops the oldest (`front`) or the newest entry.
    fn pop(&mut self, front: bool) {
        let popped = if front {
            self.entries.pop_front()
        } else {
            self.entries.pop_back()
        };
        if let Some((_, text)) = popped {
            self.bytes -= text.len();
        }
    }

    /// Drops the entries from `index` on (the log was truncated there).
    fn truncated(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|(e, _)| e.log_id.index >= index)
        {
            self.pop(false);
        }
    }

    /// Drops the entries up to and including `index` (the log was purged there).
    fn purged(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(e, _)| e.log_id.index <= index)
        {
            self.pop(true);
        }
    }

    /// The stored JSON of the entry with `log_id`, when the tail holds it.
    fn text(&self, log_id: &LogId) -> Option<Arc<str>> {
        let first = self.first_index()?;
        let at = usize::try_from(log_id.index.checked_sub(first)?).ok()?;
        let (entry, text) = self.entries.get(at)?;
        (entry.log_id == *log_id).then(|| text.clone())
    }

    /// The entries of `[start, end)`, when the tail holds all of that range the log has.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end.saturating_sub(first).min(self.entries.len() as u64)) as usize;
        Some(
            self.entries
                .range(from.min(to)..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
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
            recent: Arc::default(),
            received: Received::default(),
        })
    }

    /// The stored JSON of the newest entries, for the network to send as it is.
    pub fn encoded(&self) -> Encoded {
        Encoded(self.recent.clone())
    }

    /// Where the append handler leaves the JSON of the entries it received.
    pub fn received(&self) -> Received {
        self.received.clone()
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

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // The cache holds no invariant a panic elsewhere could break half-way: take it anyway.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
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

/// The JSON of entries a follower received, from the append handler that decoded them to the
/// log store that writes them: the follower stores each entry as the leader sent it (the leader's
/// stored JSON, see [`Encoded`]) instead of encoding it once more. Keyed by log id, which names
/// one entry only (two entries with the same log id are the same entry). The handler removes
/// what the log did not take once openraft answered ([`ReceivedGuard`]).
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<BTreeMap<LogId, String>>>);

impl Received {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<LogId, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the JSON of `entries` until the guard is dropped (or the log took it).
    pub fn hold<'a>(&self, entries: impl IntoIterator<Item = (LogId, &'a str)>) -> ReceivedGuard {
        let mut held = Vec::new();
        let mut map = self.lock();
        for (log_id, text) in entries {
            map.insert(log_id, text.to_string());
            held.push(log_id);
        }
        ReceivedGuard {
            received: self.clone(),
            held,
        }
    }

    /// The JSON `log_id` was received as, taken out.
    fn take(&self, log_id: &LogId) -> Option<String> {
        let mut map = self.lock();
        if map.is_empty() {
            return None;
        }
        map.remove(log_id)
    }
}

/// Removes the received JSON the log did not take.
pub struct ReceivedGuard {
    received: Received,
    held: Vec<LogId>,
}

impl Drop for ReceivedGuard {
    fn drop(&mut self) {
        let mut map = self.received.lock();
        for log_id in &self.held {
            map.remove(log_id);
        }
    }
}

/// The stored JSON of the log's newest entries (see the module's documentation).
#[derive(Clone, Default)]
pub struct Encoded(Arc<Mutex<Recent>>);

impl Encoded {
    /// A follower's replication stream exists: keep the tail from now on.
    pub fn replicating(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).replicating = true;
    }

    /// The JSON `entry` was stored as, when it is among the newest entries.
    pub fn text(&self, entry: &Entry) -> Option<Arc<str>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .text(&entry.log_id)
    }
}

#[cfg(test)]
impl Encoded {
    /// A tail holding `entries` as `append` would store them.
    pub(crate) fn holding(entries: Vec<Entry>) -> Encoded {
        let mut recent = Recent {
            replicating: true,
            ..Recent::default()
        };
        recent.appended(
            entries
                .into_iter()
                .map(|e| {
                    let text = serde_json::to_string(&e).expect("an entry encodes");
                    (e, Arc::from(text))
                })
                .collect(),
        );
        Encoded(Arc::new(Mutex::new(recent)))
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
        // The tail exists only in a cluster (a leader with followers, or a follower): there it
        // also serves the read-back of each entry to apply it, which spares decoding it again.
        if let Some(entries) = self.recent().get(start as u64, end as u64) {
            // Fewer entries than asked (the newest not yet in the tail) is what a read of SQLite
            // before that append committed gives too; replication asks again.
            return Ok(entries);
        }
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
                out.push(decode_entry(&text).map_err(|e| format!("log entry: {e}"))?);
            }
            Ok(out)
        })
        .await
    }
}

/// Writes `entries` in one transaction, each as the JSON it was received as (a follower) or
/// encoded here (the leader), and returns them with that JSON.
fn write_entries(
    conn: &mut Connection,
    entries: Vec<Entry>,
    received: &Received,
) -> Result<Vec<(Entry, String)>, String> {
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    let mut written = Vec::with_capacity(entries.len());
    {
        let mut stmt = tx
            .prepare_cached("INSERT OR REPLACE INTO log(idx, term, entry) VALUES (?1, ?2, ?3)")
            .map_err(|e| e.to_string())?;
        for entry in entries {
            let text = match received.take(&entry.log_id) {
                Some(text) => text,
                None => serde_json::to_string(&entry).map_err(|e| e.to_string())?,
            };
            stmt.execute(rusqlite::params![
                entry.log_id.index as i64,
                entry.log_id.leader_id.term as i64,
                text
            ])
            .map_err(|e| e.to_string())?;
            // Copied into the tail only while there are followers (`appended`).
            written.push((entry, text));
        }
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(written)
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
        // openraft hands this reader to the replication streams.
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
        let received = self.received.clone();
        if !received.lock().is_empty() {
            // A follower: keep the tail, for the read-back before apply (and replication, should
            // this member lead).
            self.recent().replicating = true;
        }
        let result = self
            .with_db(ErrorSubject::Logs, ErrorVerb::Write, move |conn| {
                write_entries(conn, entries, &received)
            })
            .await;
        // Only a committed (fsynced) append may be reported as flushed.
        match result {
            Ok(written) => {
                self.recent().appended(written);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                // What the log holds now is not known here: read it from SQLite from now on.
                self.recent().clear();
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.recent().truncated(log_id.index);
        let result = self
            .with_db(ErrorSubject::Logs, ErrorVerb::Delete, move |conn| {
                conn.execute("DELETE FROM log WHERE idx >= ?1", [log_id.index as i64])
                    .map_err(|e| e.to_string())?;
                Ok(())
            })
            .await;
        if result.is_err() {
            self.recent().clear();
        }
        result
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Entries up to the purged one are never read again; the rest of the tail stays valid
        // whether or not the delete below succeeds.
        self.recent().purged(log_id.index);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn text(term: u64, index: u64, len: usize) -> Arc<str> {
        Arc::from(format!("{term}/{index}/{}", "x".repeat(len)))
    }

    #[test]
    fn the_tail_answers_only_what_the_log_holds() {
        // A small deterministic generator: appends that follow on, appends after a gap (a
        // snapshot was installed), truncations (a new term rewrites the end) and purges, against
        // a model of the log.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut recent = Recent {
            limit: 800,
            replicating: true,
            ..Recent::default()
        };
        let mut log: BTreeMap<u64, (Entry, Arc<str>)> = BTreeMap::new();
        let mut term = 1;
        let (mut texts, mut reads) = (0, 0);
        for _ in 0..5_000 {
            let last = log.keys().next_back().copied();
            match next(10) {
                0..=5 => {
                    let first = match (last, next(8)) {
                        (Some(l), 0) => l + 2 + next(5),
                        (Some(l), _) => l + 1,
                        (None, _) => next(20),
                    };
                    if first > last.map_or(0, |l| l + 1) {
                        log.clear();
                    }
                    let batch: Vec<(Entry, Arc<str>)> = (first..first + 1 + next(4))
                        .map(|i| (entry(term, i), text(term, i, next(300) as usize)))
                        .collect();
                    for (e, t) in &batch {
                        log.insert(e.log_id.index, (e.clone(), t.clone()));
                    }
                    recent.appended(batch);
                }
                6 => {
                    if let Some(l) = last {
                        let at = l.saturating_sub(next(4));
                        log.retain(|&i, _| i < at);
                        recent.truncated(at);
                        term += 1;
                    }
                }
                7 => {
                    if let Some(l) = last {
                        let upto = l.saturating_sub(next(6));
                        log.retain(|&i, _| i > upto);
                        recent.purged(upto);
                    }
                }
                _ => {}
            }
            // Ask for an index the log may or may not hold, in this term or an older one.
            let top = log.keys().next_back().map_or(0, |l| l + 3);
            let asked = entry(term.saturating_sub(next(2)).max(1), next(top + 1)).log_id;
            if let Some(got) = recent.text(&asked) {
                let held = log.get(&asked.index).filter(|(e, _)| e.log_id == asked);
                assert_eq!(Some(&got), held.map(|(_, t)| t), "{asked}");
                texts += 1;
            }
            // A range read answers exactly what the log holds there.
            let (start, end) = (asked.index, asked.index + next(8));
            for end in [end, u64::MAX] {
                if let Some(got) = recent.get(start, end) {
                    let want: Vec<Entry> =
                        log.range(start..end).map(|(_, (e, _))| e.clone()).collect();
                    assert_eq!(got, want, "range {start}..{end}");
                    reads += 1;
                }
            }
            assert!(recent.bytes <= recent.limit || recent.entries.len() == 1);
            assert_eq!(
                recent.bytes,
                recent.entries.iter().map(|(_, t)| t.len()).sum::<usize>()
            );
        }
        // The test means something only if the tail answered often.
        assert!(
            texts > 150 && reads > 300,
            "answered {texts} texts, {reads} reads"
        );
    }

    #[test]
    fn the_tail_starts_again_after_a_gap_and_is_kept_only_for_followers() {
        let mut recent = Recent::default();
        recent.appended(vec![(entry(1, 1), text(1, 1, 3))]);
        assert_eq!(
            recent.get(1, 2),
            None,
            "nothing is kept before a follower exists"
        );
        recent.replicating = true;
        recent.appended(vec![
            (entry(1, 1), text(1, 1, 3)),
            (entry(1, 2), text(1, 2, 3)),
        ]);
        assert_eq!(recent.get(1, 3).map(|v| v.len()), Some(2));
        recent.appended(vec![(entry(1, 7), text(1, 7, 3))]);
        assert_eq!(recent.get(1, 3), None, "entries before the gap are dropped");
        assert_eq!(recent.text(&entry(1, 2).log_id), None);
        assert_eq!(recent.text(&entry(1, 7).log_id), Some(text(1, 7, 3)));
        assert_eq!(
            recent.text(&entry(2, 7).log_id),
            None,
            "another term's entry 7"
        );
        recent.truncated(7);
        assert_eq!(recent.get(7, 100), None, "an empty tail answers nothing");
    }

    /// A follower stores each entry as the leader sent it, byte for byte what the leader stored;
    /// an entry not received (the leader's own) is encoded; what the log did not take is
    /// dropped with the guard.
    #[test]
    fn a_follower_stores_the_entries_as_the_leader_stored_them() {
        use op_store::Command;
        let dir = tempfile::tempdir().unwrap();
        let normal = |index: u64| Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
            payload: EntryPayload::Normal(Command::FlushEvents {
                at: chrono::DateTime::from_timestamp(1_700_000_000 + index as i64, 5).unwrap(),
            }),
        };
        let stored = |path: &Path| -> Vec<String> {
            let conn = Connection::open(path).unwrap();
            let mut stmt = conn.prepare("SELECT entry FROM log ORDER BY idx").unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let entries = vec![normal(1), normal(2), entry(2, 3)];
        // The leader encodes.
        let leader = LogStore::open(&dir.path().join("leader.db")).unwrap();
        let mut conn = leader.db.lock().unwrap();
        write_entries(&mut conn, entries.clone(), &leader.received).unwrap();
        drop(conn);
        let sent = stored(&dir.path().join("leader.db"));
        // The follower received the first two (as the leader's text, which a different encoding
        // would show) and one it never writes.
        let follower = LogStore::open(&dir.path().join("follower.db")).unwrap();
        let mut marked = sent.clone();
        marked[0] = format!(" {}", sent[0]);
        let guard = follower.received().hold([
            (entries[0].log_id, marked[0].as_str()),
            (entries[1].log_id, sent[1].as_str()),
            (normal(9).log_id, sent[1].as_str()),
        ]);
        let mut conn = follower.db.lock().unwrap();
        let written = write_entries(&mut conn, entries.clone(), &follower.received).unwrap();
        drop(conn);
        assert_eq!(stored(&dir.path().join("follower.db")), marked);
        assert_eq!(
            written.into_iter().map(|(e, _)| e).collect::<Vec<_>>(),
            entries
        );
        assert_eq!(follower.received.lock().len(), 1, "the unused one is held");
        drop(guard);
        assert!(
            follower.received.lock().is_empty(),
            "and dropped with the guard"
        );
        // Without the mark, byte for byte the leader's.
        let again = LogStore::open(&dir.path().join("again.db")).unwrap();
        let _guard = again.received().hold(
            entries
                .iter()
                .map(|e| e.log_id)
                .zip(sent.iter().map(String::as_str)),
        );
        let mut conn = again.db.lock().unwrap();
        write_entries(&mut conn, entries, &again.received).unwrap();
        drop(conn);
        assert_eq!(stored(&dir.path().join("again.db")), sent);
        assert!(again.received.lock().is_empty(), "the log took them all");
    }
}
