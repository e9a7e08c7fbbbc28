//! Retention, as a command so that every replica deletes exactly the same rows.
//!
//! Runs go by three rules, in order: per (job, node) only the newest N; nothing older than the
//! maximum age; and, oldest first, whatever exceeds the global byte budget. Then the audit log by
//! age and count, once-job targets of superseded revisions, and Left nodes, by history age.
//! Finished invocations go with the runs' age limit, and beyond the newest
//! [`MAX_FINISHED_INVOCATIONS`]; running ones are never pruned (their hosts still answer).
//! Rollouts go once they decide nothing (finished or superseded), by age and beyond the newest
//! `rollouts_kept`; a running, paused, halted, aborted or rolled-back one stays, since it decides
//! what its hosts get (the next change of its package or job supersedes it).

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Connection, params};

use super::Outcome;
use crate::codec::ms;
use crate::command::{CommandResult, PruneReport, RetentionLimits};
use crate::{META_RUNS_PER_JOB_NODE, read, set_meta};

/// Most finished invocations kept, whatever their age: each holds its command and parameters.
pub const MAX_FINISHED_INVOCATIONS: i64 = 10_000;

fn cutoff(now: DateTime<Utc>, secs: u64) -> i64 {
    ms(now - Duration::seconds(secs.min(i64::MAX as u64 / 1000) as i64))
}

pub(super) fn prune(conn: &Connection, now: DateTime<Utc>, l: &RetentionLimits) -> Outcome {
    let mut r = PruneReport::default();
    // Once a count has been enforced on every pair, ingestion keeps it (`apply::runs`): the pass
    // over the whole table is made again only when the count changes.
    let enforced = read::meta(conn, META_RUNS_PER_JOB_NODE)?;
    let count = l.runs_per_job_node.to_string();
    if l.runs_per_job_node == 0 {
        conn.execute("DELETE FROM meta WHERE key = ?1", [META_RUNS_PER_JOB_NODE])?;
    } else if enforced.as_deref() != Some(count.as_str()) {
        set_meta(conn, META_RUNS_PER_JOB_NODE, &count)?;
        r.runs_by_count = conn.execute(
            "DELETE FROM runs WHERE rowid IN (
               SELECT rowid FROM (
                 SELECT rowid, ROW_NUMBER() OVER (
                   PARTITION BY job, node_id ORDER BY sort_at DESC, run_id DESC) AS rn
                 FROM runs)
               WHERE rn > ?1)",
            [i64::from(l.runs_per_job_node)],
        )? as u64;
    }
    if l.run_max_age_secs > 0 {
        r.runs_by_age = conn.execute(
            "DELETE FROM runs WHERE sort_at < ?1",
            [cutoff(now, l.run_max_age_secs)],
        )? as u64;
    }
    if l.run_max_bytes > 0 {
        let total: i64 = conn.query_row("SELECT COALESCE(SUM(bytes), 0) FROM runs", [], |row| {
            row.get(0)
        })?;
        let excess = total - l.run_max_bytes.min(i64::MAX as u64) as i64;
        if excess > 0 {
            // Delete oldest first until at least `excess` bytes are gone: a row goes when the
            // bytes of the rows older than it do not yet cover the excess.
            r.runs_by_bytes = conn.execute(
                "DELETE FROM runs WHERE rowid IN (
                   SELECT rowid FROM (
                     SELECT rowid, bytes, SUM(bytes) OVER (
                       ORDER BY sort_at ASC, run_id ASC
                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS upto
                     FROM runs)
                   WHERE upto - bytes < ?1)",
                [excess],
            )? as u64;
        }
    }
    if l.audit_max_age_secs > 0 {
        r.audit += conn.execute(
            "DELETE FROM audit WHERE at < ?1",
            [cutoff(now, l.audit_max_age_secs)],
        )? as u64;
    }
    if l.audit_max_entries > 0 {
        r.audit += conn.execute(
            "DELETE FROM audit WHERE id <= (SELECT MAX(id) FROM audit) - ?1",
            [l.audit_max_entries.min(i64::MAX as u64) as i64],
        )? as u64;
    }
    if l.history_max_age_secs > 0 {
        let before = cutoff(now, l.history_max_age_secs);
        // Targets of the current revision of a live job stay whatever their age: they are what
        // `once` shows and what decides a node's desired state.
        r.once_targets = conn.execute(
            "DELETE FROM once_targets WHERE updated_at < ?1 AND NOT EXISTS (
               SELECT 1 FROM jobs WHERE jobs.name = once_targets.job
                 AND jobs.revision = once_targets.revision AND jobs.deleted = 0)",
            params![before],
        )? as u64;
        r.nodes = conn.execute(
            "DELETE FROM nodes WHERE status = 'Left' AND last_seen < ?1",
            params![before],
        )? as u64;
        conn.execute(
            "DELETE FROM node_selections
             WHERE node_id NOT IN (SELECT node_id FROM nodes)",
            [],
        )?;
    }
    r.invocations = prune_invocations(conn, now, l)?;
    r.rollouts = prune_rollouts(conn, now, l)?;
    // Output requests that releases up to 0.1.0 wrote through raft; nothing reads them now.
    conn.execute("DELETE FROM output_requests", [])?;
    Ok(Ok(CommandResult::Pruned { report: r }))
}

fn prune_invocations(
    conn: &Connection,
    now: DateTime<Utc>,
    l: &RetentionLimits,
) -> crate::Result<u64> {
    let before = if l.run_max_age_secs > 0 {
        cutoff(now, l.run_max_age_secs)
    } else {
        i64::MIN
    };
    // The same set both times: the first statement does not touch `invocations`.
    let doomed =
        "SELECT id FROM invocations WHERE state = 'finished' AND (finished_at < ?1 OR id IN (
           SELECT id FROM invocations WHERE state = 'finished'
           ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET ?2))";
    conn.execute(
        &format!("DELETE FROM invocation_targets WHERE invocation_id IN ({doomed})"),
        params![before, MAX_FINISHED_INVOCATIONS],
    )?;
    let n = conn.execute(
        &format!("DELETE FROM invocations WHERE id IN ({doomed})"),
        params![before, MAX_FINISHED_INVOCATIONS],
    )?;
    Ok(n as u64)
}

fn prune_rollouts(
    conn: &Connection,
    now: DateTime<Utc>,
    l: &RetentionLimits,
) -> crate::Result<u64> {
    let mut n = 0;
    // Only rows that decide nothing: what each host gets is the same without them.
    let ended = "state IN ('finished', 'superseded')";
    if l.rollout_max_age_secs > 0 {
        n += conn.execute(
            &format!("DELETE FROM rollouts WHERE {ended} AND updated_at < ?1"),
            [cutoff(now, l.rollout_max_age_secs)],
        )?;
    }
    if l.rollouts_kept > 0 {
        n += conn.execute(
            &format!(
                "DELETE FROM rollouts WHERE id IN (
                   SELECT id FROM rollouts WHERE {ended}
                   ORDER BY updated_at DESC, id DESC LIMIT -1 OFFSET ?1)"
            ),
            [l.rollouts_kept.min(i64::MAX as u64) as i64],
        )?;
    }
    Ok(n as u64)
}
