//! Judged fires (issue 20): the latest verdicts on each job's fires (`apply::judged`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use op_proto::RunRecord;
use op_proto::judged::JudgedFire;

use crate::Store;
use crate::codec::{from_json, ms};
use crate::error::Result;

impl Store {
    /// The latest judged fires of `job` (every job when `None`), newest first, by job.
    pub fn judged_fires(&self, job: Option<&str>) -> Result<BTreeMap<String, Vec<JudgedFire>>> {
        // Keys `judged_fires/JOB` sort between `judged_fires/` and `judged_fires0` ('0' follows '/').
        let (lo, hi) = match job {
            Some(j) => {
                let k = crate::apply::judged::key(j);
                (k.clone(), k)
            }
            None => ("judged_fires/".to_string(), "judged_fires0".to_string()),
        };
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, value FROM meta WHERE key >= ?1 AND key <= ?2 ORDER BY key",
            )?;
            let rows = stmt.query_map([lo, hi], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = BTreeMap::new();
            for row in rows {
                let (key, text) = row?;
                let Some(name) = key.strip_prefix("judged_fires/") else {
                    continue;
                };
                let fires: Vec<JudgedFire> = from_json("judged fires", &text)?;
                out.insert(name.to_string(), fires);
            }
            Ok(out)
        })
    }

    /// Every cron run of `job` that started (or was planned) in `[since, until]`, plus its runs
    /// still recorded `running` that started before `since` (they may block a fire), sorted by
    /// node id. One query per job and judging pass, whatever the number of hosts.
    pub fn fire_runs(
        &self,
        job: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<RunRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT record FROM runs
                 WHERE job = ?1 AND trigger = 'cron'
                   AND ((sort_at >= ?2 AND sort_at <= ?3) OR (status = 'running' AND sort_at < ?2))",
            )?;
            let rows = stmt.query_map(rusqlite::params![job, ms(since), ms(until)], |r| {
                r.get::<_, String>(0)
            })?;
            let mut out: Vec<RunRecord> = Vec::new();
            for text in rows {
                out.push(from_json("run", &text?)?);
            }
            out.sort_by_key(|r| (r.node_id, r.started_at));
            Ok(out)
        })
    }
}
