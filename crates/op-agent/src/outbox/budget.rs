//! The outbox's byte budget, applied inside the transaction that queues a finished run.
//!
//! It is plain SQL on the caller's transaction and imports nothing of the agent: the state's
//! final write of a run ([`crate::state::StateStore::finish_run`]) calls it, so that the record,
//! its place in the queue and any drop it causes commit together (ARCHITECTURE.md invariant
//! "nothing is dropped silently").

use rusqlite::{Transaction, params};

/// The counter (table `counters`) of runs ever dropped for the budget.
pub const DROPPED_COUNTER: &str = "outbox_dropped";

/// Drops the oldest undelivered runs until the rest fit in `budget` bytes, and counts them.
/// Returns how many were dropped now.
pub fn enforce(tx: &Transaction<'_>, budget: u64) -> rusqlite::Result<u64> {
    let mut dropped = 0u64;
    let mut total: i64 = tx.query_row(
        "SELECT COALESCE(SUM(bytes), 0) FROM runs WHERE delivery = 1",
        [],
        |r| r.get(0),
    )?;
    if total as u64 > budget {
        let mut stmt = tx.prepare("SELECT id, bytes FROM runs WHERE delivery = 1 ORDER BY id")?;
        let victims: Vec<(i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        drop(stmt);
        for (id, size) in victims {
            if total as u64 <= budget {
                break;
            }
            tx.execute("UPDATE runs SET delivery = 3 WHERE id = ?1", params![id])?;
            total -= size;
            dropped += 1;
        }
        tx.execute(
            "INSERT INTO counters (name, value) VALUES (?1, ?2) \
             ON CONFLICT(name) DO UPDATE SET value = value + ?2",
            params![DROPPED_COUNTER, dropped as i64],
        )?;
    }
    Ok(dropped)
}
