//! Rollout queries (issue 21): every rollout, one rollout, and the rollouts that decide what each
//! host gets now (for the sync hub).

use op_proto::agent::DesiredJob;
use op_proto::api::JobRecord;
use op_proto::hosts::HostIdentity;
use op_proto::package::PackageRef;
use op_proto::rollout::admitted;
use op_proto::rollout::{RolloutInfo, RolloutKind, RolloutState};
use rusqlite::{Connection, OptionalExtension, Row};
use uuid::Uuid;

use crate::Store;
use crate::codec::{from_json, from_ms, uuid};
use crate::error::Result;

const COLUMNS: &str = "id, kind, subject, version, previous, plan, state, stage, threshold, \
                       created_at, created_by, stage_entered_at, counted_from, updated_at, reason, \
                       previous_job";

/// A rollout that decides what each host gets, with what the hosts outside it keep.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveRollout {
    pub info: RolloutInfo,
    /// For a job rollout: the revision non-admitted hosts keep (none: they get nothing).
    pub previous_job: Option<JobRecord>,
    /// For a package rollout: the version non-admitted hosts keep (none: nothing).
    pub previous_package: Option<PackageRef>,
}

impl ActiveRollout {
    /// The jobs `node` is sent, with each rollout that does not admit it undone.
    pub fn filter_jobs(
        rollouts: &[ActiveRollout],
        node: Uuid,
        identity: &HostIdentity,
        mut jobs: Vec<DesiredJob>,
    ) -> Vec<DesiredJob> {
        for r in rollouts {
            let info = &r.info;
            if info.kind != RolloutKind::Job || admitted(info.id, info.threshold, node) {
                continue;
            }
            jobs.retain(|j| j.spec.name != info.subject);
            if let Some(prev) = &r.previous_job
                && prev.spec.enabled
                && !prev.spec.once_job
                && prev.spec.selector().matches(identity)
            {
                jobs.push(DesiredJob {
                    revision: prev.revision,
                    spec: prev.spec.clone(),
                });
            }
        }
        jobs
    }

    /// The packages `node` is sent, with each rollout that does not admit it undone.
    pub fn filter_packages(
        rollouts: &[ActiveRollout],
        node: Uuid,
        mut packages: Vec<PackageRef>,
    ) -> Vec<PackageRef> {
        for r in rollouts {
            let info = &r.info;
            if info.kind != RolloutKind::Package || admitted(info.id, info.threshold, node) {
                continue;
            }
            // Only a host the new version targets is in its rollout; the others hold no version
            // of it (targeting belongs to the version).
            let before = packages.len();
            packages.retain(|p| p.name != info.subject);
            if packages.len() < before
                && let Some(prev) = &r.previous_package
            {
                packages.push(prev.clone());
            }
        }
        packages
    }
}

type Raw = (RolloutInfo, Option<String>);

/// One row as stored, before its text columns are decoded.
struct Row0 {
    id: String,
    kind: String,
    subject: String,
    version: i64,
    previous: Option<i64>,
    plan: String,
    state: String,
    stage: i64,
    threshold: Option<i64>,
    created_at: i64,
    created_by: String,
    stage_entered_at: i64,
    counted_from: i64,
    updated_at: i64,
    reason: Option<String>,
    previous_job: Option<String>,
}

fn row(r: &Row<'_>) -> rusqlite::Result<Row0> {
    Ok(Row0 {
        id: r.get(0)?,
        kind: r.get(1)?,
        subject: r.get(2)?,
        version: r.get(3)?,
        previous: r.get(4)?,
        plan: r.get(5)?,
        state: r.get(6)?,
        stage: r.get(7)?,
        threshold: r.get(8)?,
        created_at: r.get(9)?,
        created_by: r.get(10)?,
        stage_entered_at: r.get(11)?,
        counted_from: r.get(12)?,
        updated_at: r.get(13)?,
        reason: r.get(14)?,
        previous_job: r.get(15)?,
    })
}

fn decode(r: Row0) -> Result<Raw> {
    let kind: RolloutKind = from_json("rollout kind", &format!("{:?}", r.kind))?;
    let state: RolloutState = from_json("rollout state", &format!("{:?}", r.state))?;
    let info = RolloutInfo {
        id: uuid(&r.id),
        kind,
        subject: r.subject,
        version: r.version as u64,
        previous: r.previous.map(|v| v as u64),
        plan: from_json("rollout plan", &r.plan)?,
        state,
        stage: r.stage as usize,
        threshold: r.threshold.map(|t| t as u64),
        created_at: from_ms(r.created_at),
        created_by: r.created_by,
        stage_entered_at: from_ms(r.stage_entered_at),
        counted_from: from_ms(r.counted_from),
        updated_at: from_ms(r.updated_at),
        reason: r.reason,
    };
    Ok((info, r.previous_job))
}

fn query(conn: &Connection, filter: &str, params: &[&dyn rusqlite::ToSql]) -> Result<Vec<Raw>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM rollouts {filter} ORDER BY created_at DESC, id"
    ))?;
    let rows = stmt.query_map(params, row)?;
    rows.map(|r| decode(r?)).collect()
}

pub(crate) fn one(conn: &Connection, id: Uuid) -> Result<Option<(RolloutInfo, Option<JobRecord>)>> {
    let raw = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM rollouts WHERE id = ?1"),
            [id.to_string()],
            row,
        )
        .optional()?;
    match raw {
        None => Ok(None),
        Some(raw) => {
            let (info, job) = decode(raw)?;
            let job = job.map(|j| from_json("job record", &j)).transpose()?;
            Ok(Some((info, job)))
        }
    }
}

/// The unfinished rollouts of one package or job, newest first.
pub(crate) fn unfinished_of(
    conn: &Connection,
    kind: RolloutKind,
    subject: &str,
) -> Result<Vec<(RolloutInfo, Option<JobRecord>)>> {
    let rows = query(
        conn,
        "WHERE kind = ?1 AND subject = ?2 AND state NOT IN ('finished', 'superseded')",
        &[&kind.as_str(), &subject],
    )?;
    rows.into_iter()
        .map(|(info, job)| {
            let job = job.map(|j| from_json("job record", &j)).transpose()?;
            Ok((info, job))
        })
        .collect()
}

/// The rollouts that decide what hosts get: unfinished, of the package's current version or the
/// job's current revision (a rollout of anything older changes nothing).
pub(crate) fn active(conn: &Connection) -> Result<Vec<ActiveRollout>> {
    let mut out = Vec::new();
    for (info, job) in query(conn, "WHERE state NOT IN ('finished', 'superseded')", &[])? {
        match info.kind {
            RolloutKind::Package => {
                if super::packages::current_version(conn, &info.subject)? != Some(info.version) {
                    continue;
                }
                let previous_package = match info.previous {
                    Some(v) => {
                        super::packages::version(conn, &info.subject, v)?.map(|p| p.to_ref())
                    }
                    None => None,
                };
                out.push(ActiveRollout {
                    info,
                    previous_job: None,
                    previous_package,
                });
            }
            RolloutKind::Job => {
                match super::jobs::load(conn, &info.subject)? {
                    Some((r, false)) if r.revision == info.version => {}
                    _ => continue,
                }
                let previous_job = job.map(|j| from_json("job record", &j)).transpose()?;
                out.push(ActiveRollout {
                    info,
                    previous_job,
                    previous_package: None,
                });
            }
        }
    }
    Ok(out)
}

impl Store {
    /// Every rollout, newest first.
    pub fn rollouts(&self) -> Result<Vec<RolloutInfo>> {
        self.read(|conn| Ok(query(conn, "", &[])?.into_iter().map(|(i, _)| i).collect()))
    }

    /// Every package's default rollout, by name.
    pub fn package_rollouts(&self) -> Result<Vec<op_proto::rollout::PackageRollout>> {
        self.read(|conn| package_defaults(conn, None))
    }

    /// The default rollout of package `name`.
    pub fn package_rollout(&self, name: &str) -> Result<Option<op_proto::rollout::PackageRollout>> {
        self.read(|conn| Ok(package_defaults(conn, Some(name))?.into_iter().next()))
    }

    pub fn rollout(&self, id: Uuid) -> Result<Option<RolloutInfo>> {
        self.read(|conn| Ok(one(conn, id)?.map(|(i, _)| i)))
    }

    /// The rollouts deciding what hosts get now.
    pub fn active_rollouts(&self) -> Result<Vec<ActiveRollout>> {
        self.read(active)
    }

    /// Failed runs of `job` at `revision` since `since` (unix ms), by node: (node, hostname,
    /// status, error).
    pub fn rollout_failed_runs(
        &self,
        job: &str,
        revision: u64,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(Uuid, String, String)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT node_id, hostname, status FROM runs
                 WHERE job = ?1 AND revision = ?2 AND sort_at >= ?3
                   AND status IN ('failed', 'timeout', 'lost')",
            )?;
            let rows = stmt.query_map(
                rusqlite::params![job, revision as i64, crate::codec::ms(since)],
                |r| {
                    Ok((
                        uuid(&r.get::<_, String>(0)?),
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The once-job targets of `job` at `revision`: (node, state).
    pub fn rollout_once_targets(&self, job: &str, revision: u64) -> Result<Vec<(Uuid, String)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT node_id, state FROM once_targets WHERE job = ?1 AND revision = ?2",
            )?;
            let rows = stmt.query_map(rusqlite::params![job, revision as i64], |r| {
                Ok((uuid(&r.get::<_, String>(0)?), r.get::<_, String>(1)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

fn package_defaults(
    conn: &Connection,
    name: Option<&str>,
) -> Result<Vec<op_proto::rollout::PackageRollout>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, plan, set_at, set_by FROM package_rollouts
         WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
    )?;
    let rows = stmt
        .query_map([name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(name, plan, set_at, set_by)| {
            Ok(op_proto::rollout::PackageRollout {
                name,
                plan: from_json("rollout plan", &plan)?,
                set_at: from_ms(set_at),
                set_by,
            })
        })
        .collect()
}
