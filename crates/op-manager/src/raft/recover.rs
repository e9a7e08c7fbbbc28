//! `op-manager recover`: bring a cluster that lost its majority back, from one surviving member.
//!
//! With a majority gone, raft can commit nothing: no leader can be elected. The survivor's data
//! dir still holds everything it applied and logged. Recovery, run while the manager is stopped,
//! appends one entry to its log: a membership of this node alone, written as if this node had
//! led a new term (the vote is set to match). On start openraft finds itself the leader of a
//! one-voter cluster, commits that entry together with whatever the old log held beyond the old
//! commit index, and serves. New members then join with `--join` as usual.
//!
//! The cluster secret is replaced, so the lost members, should they come back with their old
//! data dirs, can neither reach the recovered node nor be reached by it: they still believe in
//! the old membership and must never rejoin with that state (wipe their data dirs first).
//! Writes the survivor had not received are lost; that is the price of recovering without a
//! majority, and why this is a manual step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use op_store::{META_LAST_APPLIED, META_MEMBERSHIP};
use openraft::{CommittedLeaderId, EntryPayload, Membership};
use rusqlite::{Connection, OptionalExtension};

use super::identity::{Identity, new_secret};
use super::types::{Entry, LogId, StoredMembership, Vote};
use crate::error::ManagerError;

/// What recovery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub cluster_id: String,
    pub node_id: u64,
    /// The members that were dropped.
    pub dropped: Vec<u64>,
    /// The term and log index of the new membership entry.
    pub term: u64,
    pub index: u64,
}

fn fail(msg: impl Into<String>) -> ManagerError {
    ManagerError::Recover(msg.into())
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> ManagerError + '_ {
    move |source| ManagerError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

fn kv<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    path: &Path,
    key: &str,
) -> Result<Option<T>, ManagerError> {
    let raw: Option<String> = conn
        .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .map_err(sql(path))?;
    raw.map(|s| serde_json::from_str(&s).map_err(|e| fail(format!("raft.db {key}: {e}"))))
        .transpose()
}

/// The newest membership in the log, else the one the state machine (or its snapshot) holds.
fn latest_membership(
    conn: &Connection,
    raft_db: &Path,
    data_dir: &Path,
) -> Result<Membership<u64, super::Member>, ManagerError> {
    let mut stmt = conn
        .prepare("SELECT entry FROM log ORDER BY idx DESC")
        .map_err(sql(raft_db))?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(sql(raft_db))?;
    for row in rows {
        let entry: Entry = serde_json::from_str(&row.map_err(sql(raft_db))?)
            .map_err(|e| fail(format!("raft.db: a log entry does not decode: {e}")))?;
        if let EntryPayload::Membership(m) = entry.payload {
            return Ok(m);
        }
    }
    let state_db = data_dir.join("state.db");
    let stored = op_store::Store::meta_of_file(&state_db, META_MEMBERSHIP)?.ok_or_else(|| {
        fail("no membership in the log or the state: is this a manager's data dir?")
    })?;
    let m: StoredMembership =
        serde_json::from_str(&stored).map_err(|e| fail(format!("state.db membership: {e}")))?;
    Ok(m.membership().clone())
}

/// Forces a one-member membership of this node into the stopped manager's data dir.
pub fn recover(data_dir: &Path) -> Result<Recovered, ManagerError> {
    let io = |path: PathBuf| move |source| ManagerError::Io { path, source };
    let lock_path = data_dir.join("manager.lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(lock_path.clone()))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        fail(format!(
            "{}: an op-manager is running on this data dir; stop it first",
            data_dir.display()
        ))
    })?;
    let mut identity = Identity::load(data_dir)?.ok_or_else(|| {
        fail(format!(
            "{} has no cluster.json: not the data dir of a cluster member",
            data_dir.display()
        ))
    })?;
    let me = identity.node_id;
    let raft_db = data_dir.join("raft.db");
    if !raft_db.is_file() {
        return Err(fail(format!("{} is missing", raft_db.display())));
    }
    let mut conn = Connection::open(&raft_db).map_err(sql(&raft_db))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql(&raft_db))?;
    let membership = latest_membership(&conn, &raft_db, data_dir)?;
    let member = membership
        .get_node(&me)
        .cloned()
        .ok_or_else(|| fail(format!("node {me} is not in the last membership it knows")))?;
    let dropped: Vec<u64> = membership
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| *id != me)
        .collect();

    let vote: Option<Vote> = kv(&conn, &raft_db, "vote")?;
    let purged: Option<LogId> = kv(&conn, &raft_db, "last_purged")?;
    let last: Option<Entry> = conn
        .query_row("SELECT entry FROM log ORDER BY idx DESC LIMIT 1", [], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map_err(sql(&raft_db))?
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| fail(format!("raft.db: the last entry does not decode: {e}")))?;
    let applied: Option<LogId> =
        op_store::Store::meta_of_file(&data_dir.join("state.db"), META_LAST_APPLIED)?
            .map(|s| serde_json::from_str::<Option<LogId>>(&s))
            .transpose()
            .map_err(|e| fail(format!("state.db last_applied: {e}")))?
            .flatten();
    let last_id = [last.map(|e| e.log_id), purged, applied]
        .into_iter()
        .flatten()
        .max_by_key(|l| l.index);
    let term = [
        vote.map(|v| v.leader_id().term),
        last_id.map(|l| l.leader_id.term),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0)
        + 1;
    let index = last_id.map_or(0, |l| l.index + 1);
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, me), index),
        payload: EntryPayload::Membership(Membership::new(
            vec![BTreeSet::from([me])],
            BTreeMap::from([(me, member)]),
        )),
    };
    let mut new_vote = Vote::new(term, me);
    new_vote.commit();
    let tx = conn.transaction().map_err(sql(&raft_db))?;
    tx.execute(
        "INSERT OR REPLACE INTO log(idx, term, entry) VALUES (?1, ?2, ?3)",
        rusqlite::params![
            index as i64,
            term as i64,
            serde_json::to_string(&entry).map_err(|e| fail(e.to_string()))?
        ],
    )
    .map_err(sql(&raft_db))?;
    tx.execute(
        "INSERT INTO kv(key, value) VALUES ('vote', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [serde_json::to_string(&new_vote).map_err(|e| fail(e.to_string()))?],
    )
    .map_err(sql(&raft_db))?;
    tx.commit().map_err(sql(&raft_db))?;
    identity.secret = new_secret();
    identity.save(data_dir)?;
    Ok(Recovered {
        cluster_id: identity.cluster_id,
        node_id: me,
        dropped,
        term,
        index,
    })
}
