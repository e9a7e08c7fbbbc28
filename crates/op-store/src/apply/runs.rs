//! Run ingestion: idempotent by run id; once-job targets and invocation targets follow the runs
//! they receive.
//!
//! A run is stored under the host the node registered as, whatever the record says: the
//! credential that posted it speaks for one node, not for the hostname in the body. A scheduled
//! or API-invoked run of a job the node was never given ([`super::selections`]) is refused, and so is
//! every run of a node that is not registered; a refused record is named in the acknowledgement
//! (so the agent stops sending it) and leaves no trace. Runs of the manager's own invocations
//! (ad-hoc directives) are checked by their invocation target instead, when they settle it.
//! Every newly stored final record feeds the incident state (`super::events`).
//!
//! Once a `Prune` has enforced the per-(job, node) count on every pair, it records that count
//! ([`META_RUNS_PER_JOB_NODE`]) and each batch trims the pairs it added to: the oldest beyond the
//! count go at once, through the (job, node) index. A prune then has no count pass to make, which
//! on a large history was a sort of the whole run table every minute on every member.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use op_proto::agent::{RefusedRun, RunBatchAck};
use op_proto::incidents::{Input, RunResult};
use op_proto::{NodeStatus, RunRecord, RunStatus, Trigger};
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::selections::Given;
use super::{Changes, Outcome, bump_desired_node};
use crate::codec::{ip_list, ms, to_json};
use crate::command::CommandResult;
use crate::{META_RUNS_PER_JOB_NODE, read};

pub(super) fn ingest(
    conn: &Connection,
    index: u64,
    node_id: Uuid,
    at: DateTime<Utc>,
    runs: &[RunRecord],
    ch: &mut Changes,
) -> Outcome {
    let mut ack = RunBatchAck::default();
    let node = match read::nodes::by_id(conn, node_id)? {
        Some(n) if n.status != NodeStatus::Left => n,
        _ => {
            ack.refused = runs
                .iter()
                .map(|r| RefusedRun {
                    run_id: r.run_id,
                    reason: format!("node {node_id} is not registered"),
                })
                .collect();
            return Ok(Ok(CommandResult::RunsIngested { ack }));
        }
    };
    let mut given = Given::new(conn, node_id, node.identity());
    let mut insert = conn.prepare_cached(
        "INSERT INTO runs(run_id, job, revision, node_id, hostname, ips, trigger, status,
                          invocation_id, sort_at, bytes, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT(run_id) DO UPDATE SET status = excluded.status, sort_at = excluded.sort_at,
           bytes = excluded.bytes, record = excluded.record
         WHERE runs.status = 'running' AND excluded.status <> 'running'",
    )?;
    let mut targets_changed = false;
    // The job's retries and revision, for judging whether an attempt is its last (events).
    let mut jobs: HashMap<String, (u32, u64)> = HashMap::new();
    // The jobs this batch stored runs of, whose (job, node) pair may now be over the count.
    let mut added: BTreeSet<String> = BTreeSet::new();
    for run in runs {
        if let Some(reason) = refusal(&mut given, node_id, run)? {
            ack.refused.push(RefusedRun {
                run_id: run.run_id,
                reason,
            });
            continue;
        }
        // The host is the one this node registered as, never what the record claims.
        let mut run = run.clone();
        run.hostname = node.hostname.clone();
        run.ips = node.ips.clone();
        let run = &run;
        let record = to_json(run);
        let sort_at = run
            .started_at
            .or(run.planned_at)
            .or(run.ended_at)
            .unwrap_or(at);
        // A redelivered record changes nothing, except that a final record replaces the
        // `running` one the agent may have sent first.
        let stored = insert.execute(params![
            run.run_id.to_string(),
            run.job,
            run.job_revision as i64,
            run.node_id.to_string(),
            run.hostname,
            ip_list(&run.ips),
            run.trigger.as_str(),
            run.status.as_str(),
            run.invocation_id.map(|u| u.to_string()),
            ms(sort_at),
            record.len() as i64,
            record
        ])?;
        if stored == 0 {
            ack.duplicates += 1;
            continue;
        }
        ack.accepted += 1;
        if !added.contains(&run.job) {
            added.insert(run.job.clone());
        }
        ch.runs_stored += 1;
        ch.run_bytes += record.len() as u64;
        if run.trigger == Trigger::Once && follow_target(conn, run, at)? {
            targets_changed = true;
        }
        super::invocations::settle(conn, index, run, at, ch)?;
        if run.status != RunStatus::Running {
            let (retries, revision) = match jobs.get(&run.job) {
                Some(known) => *known,
                None => {
                    let known = match read::jobs::load(conn, &run.job)? {
                        Some((record, false)) => (record.spec.retries, record.revision),
                        _ => (0, 0),
                    };
                    *jobs.entry(run.job.clone()).or_insert(known)
                }
            };
            ch.inputs.push(Input::RunResult(RunResult::of(
                run,
                retries,
                revision,
                node.all_labels(),
                at,
            )));
        }
    }
    ch.runs_duplicate += ack.duplicates as u64;
    ch.runs_trimmed += trim(conn, node_id, &added)?;
    if targets_changed {
        bump_desired_node(conn, index, node_id, ch)?;
        // A late host of a `NewHosts` once-job that finished frees its place for the next one.
        super::late::admit(conn, index, at, ch)?;
    }
    Ok(Ok(CommandResult::RunsIngested { ack }))
}

/// Deletes the runs of `node_id` beyond the newest [`META_RUNS_PER_JOB_NODE`] of each of `jobs`,
/// once a prune has recorded that count; returns how many went.
fn trim(conn: &Connection, node_id: Uuid, jobs: &BTreeSet<String>) -> crate::Result<u64> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let Some(keep) = read::meta(conn, META_RUNS_PER_JOB_NODE)?.and_then(|v| v.parse::<i64>().ok())
    else {
        return Ok(0);
    };
    let mut delete = conn.prepare_cached(
        "DELETE FROM runs WHERE rowid IN (
           SELECT rowid FROM runs WHERE job = ?1 AND node_id = ?2
           ORDER BY sort_at DESC, run_id DESC LIMIT -1 OFFSET ?3)",
    )?;
    let node = node_id.to_string();
    let mut trimmed = 0;
    for job in jobs {
        trimmed += delete.execute(params![job, node, keep])? as u64;
    }
    Ok(trimmed)
}

/// Why `run` may not be stored for `node_id`, if it may not.
fn refusal(given: &mut Given<'_>, node_id: Uuid, run: &RunRecord) -> crate::Result<Option<String>> {
    if run.node_id != node_id {
        return Ok(Some(format!(
            "run {} names node {}, not the node {node_id} that sent it",
            run.run_id, run.node_id
        )));
    }
    let scheduled = match run.trigger {
        Trigger::Cron | Trigger::Once | Trigger::Retry | Trigger::Api => {
            run.invocation_id.is_none()
        }
        Trigger::Adhoc => false,
    };
    if scheduled && !given.job(&run.job)? {
        return Ok(Some(format!(
            "job {:?} was never selected for this node",
            run.job
        )));
    }
    Ok(None)
}

/// Moves the once-job target of this run forward: pending → running → done/failed. A target never
/// moves back, so a late `running` record cannot reopen a finished target.
fn follow_target(conn: &Connection, run: &RunRecord, at: DateTime<Utc>) -> crate::Result<bool> {
    let (state, from): (&str, &str) = match run.status {
        RunStatus::Running => ("running", "('pending')"),
        RunStatus::Ok => ("done", "('pending', 'running')"),
        RunStatus::Failed | RunStatus::Timeout | RunStatus::Killed | RunStatus::Lost => {
            ("failed", "('pending', 'running')")
        }
        RunStatus::Skipped | RunStatus::Missed => return Ok(false),
    };
    let sql = format!(
        "UPDATE once_targets SET state = ?1, run_id = ?2, updated_at = ?3
         WHERE job = ?4 AND revision = ?5 AND node_id = ?6 AND state IN {from}"
    );
    let n = conn.execute(
        &sql,
        params![
            state,
            run.run_id.to_string(),
            ms(at),
            run.job,
            run.job_revision as i64,
            run.node_id.to_string()
        ],
    )?;
    Ok(n > 0)
}
