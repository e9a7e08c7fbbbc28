//! The queue: finished runs waiting for a manager's acknowledgement, kept in the state database.
//!
//! A queued run is a row of `runs` with `delivery = 1` (see [`crate::state::schema`]); the final
//! write of a run puts it there and applies the [`budget`](super::budget) in the same transaction.
//! [`Outbox`] is what the rest of the agent uses: the drain's peek and acknowledgement, and the
//! totals behind the gauges, `/v1/status` and the heartbeat.

use op_proto::RunRecord;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::budget::DROPPED_COUNTER;
use crate::error::AgentError;
use crate::state::StateStore;
use crate::state::runs::from_json;

/// The outbox at a glance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxTotals {
    /// Runs waiting for delivery.
    pub depth: u64,
    /// Their size as stored (JSON bytes).
    pub bytes: u64,
    /// Runs ever dropped for the byte budget.
    pub dropped: u64,
}

/// Handle to the queue. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    state: StateStore,
}

impl Outbox {
    pub fn new(state: StateStore) -> Outbox {
        Outbox { state }
    }

    /// Notified (with a stored permit, so a wake-up is never lost) when a run enters the queue.
    pub fn ready(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.state.outbox_ready()
    }

    /// The oldest `max` undelivered runs, oldest first. They stay queued until acknowledged.
    pub async fn peek_batch(&self, max: usize) -> Result<Vec<RunRecord>, AgentError> {
        self.state.call(move |conn, _| peek(conn, max)).await
    }

    /// Marks runs as delivered; returns how many were still waiting. Unknown or already
    /// acknowledged ids are ignored, so a repeated acknowledgement is harmless.
    pub async fn ack(&self, run_ids: &[Uuid]) -> Result<u64, AgentError> {
        let run_ids = run_ids.to_vec();
        self.state.call(move |conn, _| ack(conn, run_ids)).await
    }

    /// Depth, bytes and the number of runs ever dropped for the budget.
    pub async fn totals(&self) -> Result<OutboxTotals, AgentError> {
        self.state.call(|conn, _| totals(conn)).await
    }

    /// The same, on the calling thread (startup).
    pub fn totals_now(&self) -> Result<OutboxTotals, AgentError> {
        self.state.call_now(|conn, _| totals(conn))
    }
}

fn peek(conn: &mut Connection, max: usize) -> rusqlite::Result<Vec<RunRecord>> {
    let mut stmt =
        conn.prepare("SELECT record FROM runs WHERE delivery = 1 ORDER BY id LIMIT ?1")?;
    let rows = stmt.query_map(params![max as i64], |r| r.get::<_, String>(0))?;
    rows.map(|r| r.and_then(from_json)).collect()
}

/// The acknowledgement is committed without its own fsync (`synchronous=NORMAL` for this one
/// transaction; every other commit keeps `FULL`): an acknowledgement lost to a power cut only
/// sends its runs again, which the manager deduplicates by run id. In WAL mode the log is
/// appended in order, so the next `FULL` commit makes it durable with everything before it;
/// nothing written with `FULL` can be lost through it. A process kill loses nothing either way
/// (the write is in the OS's cache). Measured: one fsync fewer of three per run.
fn ack(conn: &mut Connection, run_ids: Vec<Uuid>) -> rusqlite::Result<u64> {
    conn.execute_batch("PRAGMA synchronous=NORMAL")?;
    let acked = (|| {
        let tx = conn.transaction()?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE runs SET delivery = 2 WHERE run_id = ?1 AND delivery = 1",
            )?;
            for id in run_ids {
                n += stmt.execute(params![id.to_string()])? as u64;
            }
        }
        tx.commit()?;
        Ok(n)
    })();
    // Back to FULL whatever happened (setting the pragma touches no file).
    conn.execute_batch("PRAGMA synchronous=FULL")?;
    acked
}

fn totals(conn: &Connection) -> rusqlite::Result<OutboxTotals> {
    let (depth, bytes): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM runs WHERE delivery = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let dropped = conn
        .query_row(
            "SELECT value FROM counters WHERE name = ?1",
            params![DROPPED_COUNTER],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .unwrap_or(0) as u64;
    Ok(OutboxTotals {
        depth: depth as u64,
        bytes: bytes as u64,
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished run with `output`, as JSON would carry it (fields added later keep defaults).
    fn record(output: &str) -> RunRecord {
        serde_json::from_value(serde_json::json!({
            "run_id": Uuid::now_v7(), "job": "j", "job_revision": 1, "node_id": Uuid::nil(),
            "hostname": "h", "ips": [], "trigger": "cron", "command": "true", "status": "ok",
            "output": output, "output_bytes": output.len(),
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn outbox_budget_drops_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), 100, 3000).unwrap();
        let outbox = Outbox::new(s.clone());
        let big = "x".repeat(1000);
        let mut ids = Vec::new();
        for _ in 0..5 {
            let r = record(&big);
            ids.push(r.run_id);
            s.finish_run(r, true).await.unwrap();
        }
        let t = outbox.totals().await.unwrap();
        assert!(t.bytes <= 3000, "{t:?}");
        assert_eq!(t.depth + t.dropped, 5);
        assert!(t.dropped >= 3);
        // The survivors are the newest ones, oldest first.
        let batch = outbox.peek_batch(10).await.unwrap();
        assert_eq!(batch.last().unwrap().run_id, ids[4]);
        assert_eq!(outbox.ack(&[ids[4], ids[4]]).await.unwrap(), 1);
        // Only the acknowledgement went without its own fsync: later commits are FULL again.
        let sync: i64 = s
            .call(|c, _| c.query_row("PRAGMA synchronous", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        assert_eq!(outbox.totals().await.unwrap().depth, t.depth - 1);
        // The drop count is stored: a restarted agent reports the same totals.
        drop(s);
        let s = StateStore::open(dir.path(), 100, 3000).unwrap();
        assert_eq!(Outbox::new(s).totals_now().unwrap().dropped, t.dropped);
    }
}
