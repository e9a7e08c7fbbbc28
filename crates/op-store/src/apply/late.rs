//! Once-jobs for hosts that join later (`NewHosts`, issue 23).
//!
//! A once-job revision selects its hosts when it is saved (`jobs::select_targets`). With
//! `NewHosts` a host that comes to match afterwards (it registers, or its labels change) gets a
//! target too: a *late* one (`late = 1`), numbered in the order the hosts came (`seq`), first
//! `waiting`. [`admit`] turns the oldest waiting targets `pending` (what the sync hub hands to
//! agents) while fewer than the job's `NewHostsAtOnce` late targets are pending or running.
//! Both run inside `apply`, from replicated state only, so every manager decides alike.
//!
//! At most once per host per revision: a target row is keyed by (job, revision, node) and a row
//! is added only where none exists, so a host that registers again (its agent restarted) keeps
//! the row it has, and its agent's ledger (filled from the rows that are not waiting or pending
//! at registration) agrees.

use chrono::{DateTime, Utc};
use op_proto::{NodeInfo, NodeStatus};
use rusqlite::{Connection, params};

use super::{Changes, bump_desired_node};
use crate::codec::ms;
use crate::error::Result;
use crate::read;

/// Gives `node` a waiting late target of every `NewHosts` once-job whose current revision
/// selects it and that it has no target of yet.
pub(super) fn join(conn: &Connection, node: &NodeInfo, at: DateTime<Utc>) -> Result<()> {
    if !node.status.is_live() {
        return Ok(());
    }
    let jobs = read::jobs::new_hosts(conn)?;
    if jobs.is_empty() {
        return Ok(());
    }
    let identity = node.identity();
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO once_targets
           (job, revision, node_id, hostname, state, run_id, updated_at, late, seq)
         SELECT ?1, ?2, ?3, ?4, 'waiting', NULL, ?5, 1,
                COALESCE(MAX(seq), 0) + 1 FROM once_targets WHERE job = ?1 AND revision = ?2",
    )?;
    for job in jobs {
        if job.spec.selector().matches(&identity) {
            insert.execute(params![
                job.spec.name,
                job.revision as i64,
                node.node_id.to_string(),
                node.hostname,
                ms(at)
            ])?;
        }
    }
    Ok(())
}

/// Lets waiting late targets start, oldest first, while fewer than the job's `NewHostsAtOnce`
/// late targets of the revision are pending or running on a node that is not forgotten. Only
/// the current revision of an enabled `NewHosts` job admits; a waiting host that is not live
/// (Ready or Degraded) keeps its place until it is.
pub(super) fn admit(
    conn: &Connection,
    index: u64,
    at: DateTime<Utc>,
    ch: &mut Changes,
) -> Result<()> {
    let waiting: Vec<(String, i64)> = conn
        .prepare_cached("SELECT DISTINCT job, revision FROM once_targets WHERE state = 'waiting'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, revision) in waiting {
        let Some((job, false)) = read::jobs::load(conn, &name)? else {
            continue;
        };
        if job.revision as i64 != revision
            || !(job.spec.once_job && job.spec.new_hosts && job.spec.enabled)
        {
            continue;
        }
        let busy: i64 = conn.query_row(
            "SELECT COUNT(*) FROM once_targets t
             WHERE t.job = ?1 AND t.revision = ?2 AND t.late = 1
               AND t.state IN ('pending', 'running')
               AND NOT EXISTS (SELECT 1 FROM nodes n
                               WHERE n.node_id = t.node_id AND n.status = 'Left')",
            params![name, revision],
            |r| r.get(0),
        )?;
        let free = i64::try_from(job.spec.new_hosts_cap()).unwrap_or(i64::MAX) - busy;
        if free <= 0 {
            continue;
        }
        let next: Vec<String> = conn
            .prepare_cached(
                "SELECT t.node_id FROM once_targets t JOIN nodes n ON n.node_id = t.node_id
                 WHERE t.job = ?1 AND t.revision = ?2 AND t.state = 'waiting'
                   AND n.status IN (?3, ?4)
                 ORDER BY t.seq, t.node_id LIMIT ?5",
            )?
            .query_map(
                params![
                    name,
                    revision,
                    NodeStatus::Ready.as_str(),
                    NodeStatus::Degraded.as_str(),
                    free
                ],
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<_>>()?;
        for node_id in next {
            conn.execute(
                "UPDATE once_targets SET state = 'pending', updated_at = ?4
                 WHERE job = ?1 AND revision = ?2 AND node_id = ?3 AND state = 'waiting'",
                params![name, revision, node_id, ms(at)],
            )?;
            bump_desired_node(conn, index, crate::codec::uuid(&node_id), ch)?;
        }
    }
    Ok(())
}
