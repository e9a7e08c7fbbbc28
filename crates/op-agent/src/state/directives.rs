//! The record of manager directives taken: one row per run id, written in the same transaction as
//! the run's first row (its in-flight record, or the final record of a run that never started).
//! Once that transaction commits the directive is never acted on again, across reconnects and
//! restarts; if the agent dies before it commits, no process was started yet, so acting on the
//! directive again after the restart still runs it exactly once.

use chrono::Utc;
use op_proto::RunRecord;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::StateStore;
use crate::error::AgentError;

/// Rows older than this are pruned: no directive is handed out for longer than a day (the
/// manager's longest deadline), so a week is far beyond any redelivery.
const KEEP_MS: i64 = 7 * 86_400 * 1000;

/// Records that the directive behind `record` was taken (no-op for runs of other origins).
pub(super) fn record(conn: &Connection, record: &RunRecord) -> rusqlite::Result<()> {
    let Some(invocation) = record.invocation_id else {
        return Ok(());
    };
    let now = Utc::now().timestamp_millis();
    conn.execute(
        "INSERT OR IGNORE INTO directives (run_id, invocation_id, taken_at) VALUES (?1, ?2, ?3)",
        params![record.run_id.to_string(), invocation.to_string(), now],
    )?;
    conn.execute(
        "DELETE FROM directives WHERE taken_at < ?1",
        params![now - KEEP_MS],
    )?;
    Ok(())
}

impl StateStore {
    /// True when the directive with this run id was already taken here.
    pub async fn directive_taken(&self, run_id: Uuid) -> Result<bool, AgentError> {
        self.call(move |conn, _| {
            let id = run_id.to_string();
            let found: Option<i64> = conn
                .query_row(
                    "SELECT 1 FROM directives WHERE run_id = ?1
                     UNION ALL SELECT 1 FROM runs WHERE run_id = ?1 LIMIT 1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(found.is_some())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use op_proto::{RunStatus, Trigger};

    use super::*;

    fn adhoc(invocation: Option<Uuid>) -> RunRecord {
        RunRecord {
            run_id: Uuid::now_v7(),
            job: "adhoc".into(),
            job_revision: 0,
            node_id: Uuid::nil(),
            hostname: "h".into(),
            ips: vec![],
            trigger: Trigger::Adhoc,
            attempt: 0,
            invocation_id: invocation,
            params: BTreeMap::new(),
            command: "true".into(),
            planned_at: None,
            started_at: Some(Utc::now()),
            ended_at: None,
            status: RunStatus::Running,
            exit_code: None,
            signal: None,
            error: None,
            output: String::new(),
            output_truncated: false,
            output_bytes: 0,
            stderr_tail: String::new(),
            rusage: None,
            notes: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_taken_directive_stays_taken_across_reopen_and_history_trimming() {
        let dir = tempfile::tempdir().unwrap();
        // History keeps 1 run per job, so the first run's row is trimmed away.
        let s = StateStore::open(dir.path(), 1, 1 << 20).unwrap();
        let first = adhoc(Some(Uuid::now_v7()));
        assert!(!s.directive_taken(first.run_id).await.unwrap());
        s.insert_running(first.clone(), false).await.unwrap();
        assert!(s.directive_taken(first.run_id).await.unwrap());
        let mut done = first.clone();
        done.status = RunStatus::Ok;
        // Kept locally (as if already delivered): only the history limit holds it now.
        s.finish_run(done, false).await.unwrap();
        for _ in 0..3 {
            let mut r = adhoc(Some(Uuid::now_v7()));
            r.status = RunStatus::Ok;
            s.finish_run(r, false).await.unwrap();
        }
        assert!(s.get_run(first.run_id).await.unwrap().is_none(), "trimmed");
        drop(s);
        let s = StateStore::open(dir.path(), 1, 1 << 20).unwrap();
        assert!(s.directive_taken(first.run_id).await.unwrap());
        // Runs that came from elsewhere are not directives.
        let api = adhoc(None);
        s.insert_running(api.clone(), false).await.unwrap();
        let n: i64 = s
            .call(move |c, _| {
                c.query_row(
                    "SELECT COUNT(*) FROM directives WHERE run_id = ?1",
                    [api.run_id.to_string()],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn a_version_1_database_gains_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::state::DB_FILE);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(crate::state::schema::MIGRATIONS[0])
                .unwrap();
            conn.execute_batch("PRAGMA user_version = 1").unwrap();
        }
        let s = StateStore::open(dir.path(), 10, 1 << 20).unwrap();
        let version: i64 = s
            .call_now(|c, _| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(version as usize, crate::state::schema::MIGRATIONS.len());
    }
}
