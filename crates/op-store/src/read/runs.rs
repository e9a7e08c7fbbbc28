//! Run queries: filters by job, host, status, time, invocation and revision, with the seed's
//! "latest N per host" (`per_node`) semantics.

use std::net::IpAddr;

use op_proto::api::RunQuery;
use op_proto::{RunRecord, RunStatus};
use rusqlite::OptionalExtension;
use rusqlite::types::Value;
use uuid::Uuid;

use crate::Store;
use crate::codec::{from_json, from_ms, like_escape, ms};
use crate::error::Result;

/// Rows returned when the query sets no limit.
pub const DEFAULT_RUN_LIMIT: u32 = 1000;
/// Most rows one query returns.
pub const MAX_RUN_LIMIT: u32 = 10_000;

/// How many nodes' latest run of a job ended in a status (`/metrics`: a job failing on many
/// hosts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestRunCount {
    pub job: String,
    pub status: String,
    pub nodes: u64,
}

/// Runs in one slice of time, for the console's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunBucket {
    pub start: chrono::DateTime<chrono::Utc>,
    /// Every run stored in the slice, skipped fires included.
    pub runs: u64,
    /// The runs among them that failed, timed out, were killed or were lost.
    pub failed: u64,
}

impl Store {
    /// For every job, the number of nodes whose latest run since `since` has each status. Reads
    /// the `runs_job_node` index once; bounded by the retention of runs.
    pub fn latest_run_counts(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<LatestRunCount>> {
        self.read(|conn| {
            // SQLite returns the bare `status` of the row that holds MAX(sort_at).
            let mut stmt = conn.prepare_cached(
                "SELECT job, status, COUNT(*) FROM (
                     SELECT job, node_id, status, MAX(sort_at) FROM runs
                     WHERE sort_at >= ?1 GROUP BY job, node_id)
                 GROUP BY job, status ORDER BY job, status",
            )?;
            let rows = stmt.query_map([ms(since)], |r| {
                Ok(LatestRunCount {
                    job: r.get(0)?,
                    status: r.get(1)?,
                    nodes: r.get::<_, i64>(2)? as u64,
                })
            })?;
            Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
        })
    }

    /// Runs counted in `count` consecutive slices of `width` from `start` (by `sort_at`, the
    /// time a run started), one bucket per slice, empty ones included. One range scan of the
    /// `runs_sort` index; the cost grows with the runs in the window.
    pub fn run_timeline(
        &self,
        start: chrono::DateTime<chrono::Utc>,
        width: chrono::Duration,
        count: u32,
    ) -> Result<Vec<RunBucket>> {
        let width_ms = width.num_milliseconds().max(1);
        let from = ms(start);
        let to = from + width_ms * i64::from(count);
        let mut out: Vec<RunBucket> = (0..i64::from(count))
            .map(|i| RunBucket {
                start: from_ms(from + i * width_ms),
                runs: 0,
                failed: 0,
            })
            .collect();
        let rows = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT (sort_at - ?1) / ?2, status, COUNT(*) FROM runs INDEXED BY runs_sort
                 WHERE sort_at >= ?1 AND sort_at < ?3 GROUP BY 1, 2",
            )?;
            let rows = stmt.query_map(rusqlite::params![from, width_ms, to], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
        })?;
        for (slot, status, n) in rows {
            let Some(b) = usize::try_from(slot).ok().and_then(|i| out.get_mut(i)) else {
                continue;
            };
            b.runs += n as u64;
            if RunStatus::parse(&status).is_some_and(RunStatus::is_failure) {
                b.failed += n as u64;
            }
        }
        Ok(out)
    }

    /// Runs matching `q`, newest first.
    pub fn runs(&self, q: &RunQuery) -> Result<Vec<RunRecord>> {
        self.runs_from(q, 0)
    }

    /// Runs matching `q`, newest first, skipping the first `offset` (a page of a long history).
    pub fn runs_from(&self, q: &RunQuery, offset: u32) -> Result<Vec<RunRecord>> {
        let mut filters: Vec<String> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        let mut add = |sql: &str, v: Value| {
            args.push(v);
            filters.push(sql.replace('?', &format!("?{}", args.len())));
        };
        if let Some(job) = &q.job {
            add("job = ?", Value::Text(job.clone()));
        }
        if let Some(host) = q.host.as_deref().map(str::trim) {
            // The seed's `logs JOB ALL` means every host.
            if !host.is_empty() && !host.eq_ignore_ascii_case("all") {
                if let Ok(id) = Uuid::parse_str(host) {
                    add("node_id = ?", Value::Text(id.to_string()));
                } else if let Ok(ip) = host.parse::<IpAddr>() {
                    add(
                        "ips LIKE ? ESCAPE '\\'",
                        Value::Text(format!("%,{},%", like_escape(&ip.to_string()))),
                    );
                } else {
                    add("hostname = ? COLLATE NOCASE", Value::Text(host.to_string()));
                }
            }
        }
        if let Some(status) = q.status {
            add("status = ?", Value::Text(status.as_str().to_string()));
        }
        if let Some(since) = q.since {
            add("sort_at >= ?", Value::Integer(ms(since)));
        }
        if let Some(until) = q.until {
            add("sort_at <= ?", Value::Integer(ms(until)));
        }
        if let Some(inv) = q.invocation {
            add("invocation_id = ?", Value::Text(inv.to_string()));
        }
        if let Some(rev) = q.revision {
            add("revision = ?", Value::Integer(rev as i64));
        }
        let filter = if filters.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", filters.join(" AND "))
        };
        let limit = q.limit.unwrap_or(DEFAULT_RUN_LIMIT).clamp(1, MAX_RUN_LIMIT);
        let sql = match q.per_node {
            Some(n) => format!(
                "SELECT record FROM (
                   SELECT record, sort_at, run_id, ROW_NUMBER() OVER (
                     PARTITION BY job, node_id ORDER BY sort_at DESC, run_id DESC) AS rn
                   FROM runs {filter})
                 WHERE rn <= {n} ORDER BY sort_at DESC, run_id DESC LIMIT {limit} OFFSET {offset}"
            ),
            None => format!(
                "SELECT record FROM runs {filter} ORDER BY sort_at DESC, run_id DESC
                 LIMIT {limit} OFFSET {offset}"
            ),
        };
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                r.get::<_, String>(0)
            })?;
            rows.map(|r| from_json("run", &r?)).collect()
        })
    }

    /// The status of the latest run on each node, counted per job, for `jobs` (all jobs when
    /// empty): `(job, status, hosts)`. A skipped fire counts as that host's latest result.
    ///
    /// The latest `sort_at` of each (job, node) comes from an index-only scan of `runs_job_node`;
    /// only those rows are then read, so the cost grows with the runs kept, not with their size.
    pub fn last_results(&self, jobs: &[String]) -> Result<Vec<(String, RunStatus, u64)>> {
        let filter = if jobs.is_empty() {
            String::new()
        } else {
            let marks: Vec<String> = (1..=jobs.len()).map(|i| format!("?{i}")).collect();
            format!("WHERE job IN ({})", marks.join(","))
        };
        let sql = format!(
            "SELECT r.job, r.status, COUNT(DISTINCT r.node_id) FROM (
               SELECT job, node_id, MAX(sort_at) AS latest FROM runs INDEXED BY runs_job_node
               {filter} GROUP BY job, node_id) l
             JOIN runs r INDEXED BY runs_job_node
               ON r.job = l.job AND r.node_id = l.node_id AND r.sort_at = l.latest
             GROUP BY r.job, r.status ORDER BY r.job, r.status"
        );
        self.read(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(jobs.iter()), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)? as u64,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (job, status, n) = row?;
                if let Some(status) = RunStatus::parse(&status) {
                    out.push((job, status, n));
                }
            }
            Ok(out)
        })
    }

    pub fn run(&self, id: Uuid) -> Result<Option<RunRecord>> {
        self.read(|conn| {
            conn.query_row(
                "SELECT record FROM runs WHERE run_id = ?1",
                [id.to_string()],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(|s| from_json("run", &s))
            .transpose()
        })
    }
}
