//! Read queries. Each `Store` method here borrows a pooled reader connection; the free functions
//! take a `Connection` so that `apply` can use the same queries inside its transaction.

pub(crate) mod agent_upgrade;
pub(crate) mod events;
pub(crate) mod holds;
pub(crate) mod invocations;
pub(crate) mod jobs;
pub(crate) mod judged;
pub(crate) mod misc;
pub(crate) mod nodes;
pub(crate) mod notify;
pub(crate) mod packages;
pub(crate) mod rollouts;
pub(crate) mod runs;
pub(crate) mod secrets;

use op_proto::agent::Directive;
use op_proto::api::JobRecord;
use op_proto::package::PackageRef;
use op_proto::{HostSelector, NodeInfo};
use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use crate::codec::uuid;
use crate::error::Result;
use crate::{META_DESIRED_INDEX, Store};

pub(crate) fn meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// What the agent sync hub needs to compute any node's desired state, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct DesiredView {
    /// Log index of the last change that concerned every node (jobs).
    pub desired_index: u64,
    /// Live, enabled jobs.
    pub jobs: Vec<JobRecord>,
    /// Every node with the log index of the last change of its own desired state.
    pub nodes: Vec<(NodeInfo, u64)>,
    /// Pending once-job targets: (node, job, revision).
    pub pending: Vec<(Uuid, String, u64)>,
    /// The current version of every package with its targeting: a node must hold those whose
    /// targeting matches it.
    pub packages: Vec<(PackageRef, HostSelector)>,
    /// Live directives (ad-hoc runs and kills of invocations): (node, directive).
    pub directives: Vec<(Uuid, Directive)>,
    /// The rollouts deciding what each host gets (issue 21).
    pub rollouts: Vec<rollouts::ActiveRollout>,
}

/// Row counts for `/metrics` and `/v1/cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub jobs: u64,
    pub nodes_ready: u64,
    pub nodes_degraded: u64,
    pub nodes_not_ready: u64,
    pub nodes_left: u64,
    pub runs: u64,
    pub run_bytes: u64,
    pub audit: u64,
    pub packages: u64,
    pub package_versions: u64,
    /// Bytes of all stored package versions (a blob shared by two versions counts twice).
    pub package_bytes: u64,
    /// Finished runs waiting in the outboxes of Ready and NotReady agents, as they last reported.
    pub agent_outbox_runs: u64,
    /// Runs those agents dropped from their outboxes since they started, as they last reported.
    pub agent_dropped_runs: u64,
}

/// The part of a [`DesiredView`] that a change for every node (a job or a package) can alter: the
/// jobs, the packages, the index of the change, and the pending once-job targets. The nodes
/// themselves are not read again.
#[derive(Debug, Clone, Default)]
pub struct JobsView {
    pub desired_index: u64,
    pub jobs: Vec<JobRecord>,
    pub pending: Vec<(Uuid, String, u64)>,
    pub packages: Vec<(PackageRef, HostSelector)>,
    /// The rollouts deciding what each host gets (issue 21).
    pub rollouts: Vec<rollouts::ActiveRollout>,
}

fn jobs_view(tx: &Connection) -> Result<JobsView> {
    let desired_index = meta(tx, META_DESIRED_INDEX)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let jobs = jobs::live(tx)?
        .into_iter()
        .filter(|j| j.spec.enabled)
        .collect();
    let mut stmt = tx.prepare_cached(
        "SELECT node_id, job, revision FROM once_targets WHERE state = 'pending'",
    )?;
    let pending = stmt
        .query_map([], |r| {
            Ok((
                uuid(&r.get::<_, String>(0)?),
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)? as u64,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    drop(stmt);
    let packages = packages::desired(tx)?;
    let rollouts = rollouts::active(tx)?;
    Ok(JobsView {
        desired_index,
        jobs,
        pending,
        packages,
        rollouts,
    })
}

impl Store {
    pub fn desired_view(&self) -> Result<DesiredView> {
        self.read(|conn| {
            let tx = conn.unchecked_transaction()?;
            let JobsView {
                desired_index,
                jobs,
                pending,
                packages,
                rollouts,
            } = jobs_view(&tx)?;
            let nodes = nodes::all_with_index(&tx)?;
            let directives = invocations::directives(&tx, None)?;
            tx.finish()?;
            Ok(DesiredView {
                desired_index,
                jobs,
                nodes,
                pending,
                packages,
                directives,
                rollouts,
            })
        })
    }

    /// The jobs part of the view, for the hub's refresh after a job change: with 10,000 nodes,
    /// reading (and decoding) every node again would cost more than everything else a save does.
    pub fn desired_jobs(&self) -> Result<JobsView> {
        self.read(|conn| {
            let tx = conn.unchecked_transaction()?;
            let view = jobs_view(&tx)?;
            tx.finish()?;
            Ok(view)
        })
    }

    pub fn stats(&self) -> Result<StoreStats> {
        self.read(|conn| {
            let count = |sql: &str| -> Result<u64> {
                Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
            };
            let mut s = StoreStats {
                jobs: count("SELECT COUNT(*) FROM jobs WHERE deleted = 0")?,
                runs: count("SELECT COUNT(*) FROM runs")?,
                run_bytes: count("SELECT COALESCE(SUM(bytes), 0) FROM runs")?,
                audit: count("SELECT COUNT(*) FROM audit")?,
                packages: count("SELECT COUNT(*) FROM packages")?,
                package_versions: count("SELECT COUNT(*) FROM package_versions")?,
                package_bytes: count("SELECT COALESCE(SUM(size), 0) FROM package_versions")?,
                ..StoreStats::default()
            };
            // Columns written with each record (schema 20): a scrape of 50,000 nodes parsed
            // every node's JSON before.
            let (outbox, dropped) = conn.query_row(
                "SELECT COALESCE(SUM(outbox_depth), 0), COALESCE(SUM(dropped_runs), 0)
                 FROM nodes WHERE status != 'Left'",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )?;
            s.agent_outbox_runs = outbox as u64;
            s.agent_dropped_runs = dropped as u64;
            let mut stmt = conn.prepare("SELECT status, COUNT(*) FROM nodes GROUP BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (status, n) = row?;
                let n = n as u64;
                match status.as_str() {
                    "Ready" => s.nodes_ready = n,
                    "Degraded" => s.nodes_degraded = n,
                    "NotReady" => s.nodes_not_ready = n,
                    _ => s.nodes_left += n,
                }
            }
            drop(stmt);
            Ok(s)
        })
    }
}

/// The part of a [`DesiredView`] that concerns some nodes only: their records and pending targets.
#[derive(Debug, Clone, Default)]
pub struct NodesView {
    pub nodes: Vec<(NodeInfo, u64)>,
    pub pending: Vec<(Uuid, String, u64)>,
    pub directives: Vec<(Uuid, Directive)>,
}

impl Store {
    /// Reads `ids` (those that exist), their pending once-job targets and their directives, for an incremental
    /// refresh of the sync hub's view.
    pub fn desired_nodes(&self, ids: &[Uuid]) -> Result<NodesView> {
        self.read(|conn| {
            let tx = conn.unchecked_transaction()?;
            let mut out = NodesView::default();
            for id in ids {
                let row: Option<(String, i64)> = tx
                    .query_row(
                        "SELECT info, desired_index FROM nodes WHERE node_id = ?1",
                        [id.to_string()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((info, index)) = row {
                    out.nodes
                        .push((crate::codec::from_json("node", &info)?, index as u64));
                }
                let mut stmt = tx.prepare_cached(
                    "SELECT job, revision FROM once_targets WHERE node_id = ?1 AND state = 'pending'",
                )?;
                let rows = stmt.query_map([id.to_string()], |r| {
                    Ok((*id, r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?;
                for row in rows {
                    out.pending.push(row?);
                }
                drop(stmt);
                out.directives
                    .extend(invocations::directives(&tx, Some(*id))?);
            }
            tx.finish()?;
            Ok(out)
        })
    }
}
