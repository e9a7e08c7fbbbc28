//! Run rows: the in-flight marker, the final record and the local history.
//!
//! A run's row is written twice: once with status `running` before its process starts (so a
//! crash leaves a trace that becomes `lost` at the next start), and once with the final record.
//! The final write also settles the once-job ledger, queues the record for delivery (the
//! outbox's rows are these rows: [`crate::outbox`] owns reading and acknowledging them, and its
//! byte budget runs inside this transaction), and trims the job's history, all in one
//! transaction.

use chrono::{DateTime, Utc};
use op_proto::{RunRecord, RunStatus, Trigger};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::{Limits, StateStore};
use crate::error::AgentError;

/// Where a finished run stands with respect to delivery to a manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum Delivery {
    /// No manager is configured: the run is kept in the local history only.
    Local = 0,
    /// In the outbox, waiting for a manager's acknowledgement.
    Pending = 1,
    Acked = 2,
    /// Removed from the outbox because it exceeded its byte budget (counted, never silent).
    Dropped = 3,
}

fn to_json(record: &RunRecord) -> rusqlite::Result<String> {
    serde_json::to_string(record).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

pub(crate) fn from_json(text: String) -> rusqlite::Result<RunRecord> {
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl StateStore {
    /// Records a run as in flight, before its process starts. For a once-job the ledger row is
    /// written in the same transaction: once this returns, the revision never starts again.
    pub async fn insert_running(&self, record: RunRecord, once: bool) -> Result<(), AgentError> {
        self.call(move |conn, _| {
            let tx = conn.transaction()?;
            if once {
                tx.execute(
                    "INSERT OR IGNORE INTO once_ledger (job, revision, run_id, state, updated_at) \
                     VALUES (?1, ?2, ?3, 'started', ?4)",
                    params![
                        record.job,
                        record.job_revision as i64,
                        record.run_id.to_string(),
                        Utc::now().to_rfc3339()
                    ],
                )?;
            }
            tx.execute(
                "INSERT INTO runs (run_id, job, trigger, status, delivery, bytes, record) \
                 VALUES (?1, ?2, ?3, 'running', 0, 0, ?4)",
                params![
                    record.run_id.to_string(),
                    record.job,
                    record.trigger.as_str(),
                    to_json(&record)?
                ],
            )?;
            super::directives::record(&tx, &record)?;
            tx.commit()
        })
        .await
    }

    /// Stores a run's final record. Returns how many outbox entries this pushed over the budget
    /// (dropped now).
    pub async fn finish_run(&self, record: RunRecord, deliver: bool) -> Result<u64, AgentError> {
        let dropped = self
            .call(move |conn, limits| finish(conn, limits, &record, deliver))
            .await?;
        if deliver {
            self.outbox_ready.notify_one();
        }
        Ok(dropped)
    }

    /// The same, on the calling thread (startup recovery).
    pub(crate) fn finish_run_now(
        &self,
        record: &RunRecord,
        deliver: bool,
    ) -> Result<u64, AgentError> {
        let dropped = self.call_now(|conn, limits| finish(conn, limits, record, deliver))?;
        if deliver {
            self.outbox_ready.notify_one();
        }
        Ok(dropped)
    }

    pub async fn get_run(&self, run_id: Uuid) -> Result<Option<RunRecord>, AgentError> {
        self.call(move |conn, _| {
            conn.query_row(
                "SELECT record FROM runs WHERE run_id = ?1",
                params![run_id.to_string()],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(from_json)
            .transpose()
        })
        .await
    }

    /// The newest runs first, optionally of one job.
    pub async fn list_runs(
        &self,
        job: Option<String>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, AgentError> {
        self.call(move |conn, _| {
            let mut out = Vec::new();
            let mut push = |r: &rusqlite::Row<'_>| -> rusqlite::Result<()> {
                out.push(from_json(r.get(0)?)?);
                Ok(())
            };
            match job {
                Some(job) => {
                    let mut stmt = conn.prepare(
                        "SELECT record FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT ?2",
                    )?;
                    let mut rows = stmt.query(params![job, limit as i64])?;
                    while let Some(r) = rows.next()? {
                        push(r)?;
                    }
                }
                None => {
                    let mut stmt =
                        conn.prepare("SELECT record FROM runs ORDER BY id DESC LIMIT ?1")?;
                    let mut rows = stmt.query(params![limit as i64])?;
                    while let Some(r) = rows.next()? {
                        push(r)?;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Runs whose row still says `running`: after a restart, the runs that were in flight.
    pub fn in_flight(&self) -> Result<Vec<RunRecord>, AgentError> {
        self.call_now(|conn, _| {
            let mut stmt =
                conn.prepare("SELECT record FROM runs WHERE status = 'running' ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.map(|r| r.and_then(from_json)).collect()
        })
    }

    /// The planned time and revision of the job's latest cron fire, for counting fires missed
    /// while the agent was down. The latest of the last 200 records by planned time: the `missed`
    /// records of an earlier restart (at most 20 per job) may be stored after the first run
    /// that followed it.
    pub fn last_cron_planned(&self, job: &str) -> Result<Option<(DateTime<Utc>, u64)>, AgentError> {
        let job = job.to_string();
        self.call_now(move |conn, _| {
            let mut stmt = conn.prepare_cached(
                "SELECT record FROM runs WHERE job = ?1 AND trigger IN ('cron', 'retry') \
                 ORDER BY id DESC LIMIT 200",
            )?;
            let rows = stmt.query_map(params![job], |r| r.get::<_, String>(0))?;
            let mut latest: Option<(DateTime<Utc>, u64)> = None;
            for text in rows {
                let r: RunRecord = from_json(text?)?;
                if let Some(planned) = r.planned_at
                    && latest.is_none_or(|(t, _)| planned > t)
                {
                    latest = Some((planned, r.job_revision));
                }
            }
            Ok(latest)
        })
    }
}

fn finish(
    conn: &mut Connection,
    limits: &Limits,
    record: &RunRecord,
    deliver: bool,
) -> rusqlite::Result<u64> {
    let json = to_json(record)?;
    let bytes = json.len() as i64;
    let delivery = if deliver {
        Delivery::Pending
    } else {
        Delivery::Local
    } as i64;
    let tx = conn.transaction()?;
    let updated = tx.execute(
        "UPDATE runs SET status = ?2, delivery = ?3, bytes = ?4, record = ?5 WHERE run_id = ?1",
        params![
            record.run_id.to_string(),
            record.status.as_str(),
            delivery,
            bytes,
            json
        ],
    )?;
    if updated == 0 {
        super::directives::record(&tx, record)?;
        // Runs that never reached the in-flight stage (skips, start failures recorded directly).
        tx.execute(
            "INSERT INTO runs (run_id, job, trigger, status, delivery, bytes, record) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                record.run_id.to_string(),
                record.job,
                record.trigger.as_str(),
                record.status.as_str(),
                delivery,
                bytes,
                json
            ],
        )?;
    }
    if matches!(record.trigger, Trigger::Once | Trigger::Retry) {
        let state = match record.status {
            RunStatus::Ok => "ok",
            RunStatus::Lost => "lost",
            RunStatus::Running => "started",
            _ => "failed",
        };
        tx.execute(
            "UPDATE once_ledger SET state = ?3, run_id = ?4, updated_at = ?5 \
             WHERE job = ?1 AND revision = ?2",
            params![
                record.job,
                record.job_revision as i64,
                state,
                record.run_id.to_string(),
                Utc::now().to_rfc3339()
            ],
        )?;
    }
    // The outbox budget, in this transaction: a drop commits with the record that caused it.
    let dropped = crate::outbox::budget::enforce(&tx, limits.outbox_budget)?;
    // History: keep the newest N finished runs of the job, never an undelivered one.
    tx.execute(
        "DELETE FROM runs WHERE job = ?1 AND delivery != 1 AND status != 'running' AND id NOT IN \
         (SELECT id FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT ?2)",
        params![record.job, limits.history_keep_runs as i64],
    )?;
    tx.commit()?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn record(job: &str, status: RunStatus, output: &str) -> RunRecord {
        RunRecord {
            run_id: Uuid::now_v7(),
            job: job.into(),
            job_revision: 1,
            node_id: Uuid::nil(),
            hostname: "h".into(),
            ips: vec![],
            trigger: Trigger::Cron,
            attempt: 0,
            invocation_id: None,
            params: BTreeMap::new(),
            command: "true".into(),
            planned_at: None,
            started_at: Some(Utc::now()),
            ended_at: None,
            status,
            exit_code: None,
            signal: None,
            error: None,
            output: output.into(),
            output_truncated: false,
            output_bytes: output.len() as u64,
            stderr_tail: String::new(),
            rusage: None,
            notes: Vec::new(),
        }
    }

    #[tokio::test]
    async fn history_is_trimmed_but_not_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), 3, 1 << 30).unwrap();
        for i in 0..6 {
            s.finish_run(record("j", RunStatus::Ok, ""), i < 2)
                .await
                .unwrap();
        }
        let runs = s.list_runs(Some("j".into()), 100).await.unwrap();
        // 3 newest + 2 undelivered.
        assert_eq!(runs.len(), 5);
    }

    #[tokio::test]
    async fn in_flight_runs_and_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), 10, 1 << 20).unwrap();
        let mut r = record("once", RunStatus::Running, "");
        r.trigger = Trigger::Once;
        s.insert_running(r.clone(), true).await.unwrap();
        assert!(s.ledger_keys().unwrap().contains(&("once".to_string(), 1)));
        assert_eq!(
            s.ledger_state("once", 1).unwrap().as_deref(),
            Some("started")
        );
        drop(s);
        let s = StateStore::open(dir.path(), 10, 1 << 20).unwrap();
        let flying = s.in_flight().unwrap();
        assert_eq!(flying.len(), 1);
        let mut lost = flying[0].clone();
        lost.status = RunStatus::Lost;
        s.finish_run_now(&lost, true).unwrap();
        assert!(s.in_flight().unwrap().is_empty());
        assert_eq!(s.ledger_state("once", 1).unwrap().as_deref(), Some("lost"));
        assert_eq!(
            s.get_run(r.run_id).await.unwrap().unwrap().status,
            RunStatus::Lost
        );
    }
}
