//! Job and once-target queries.

use op_proto::api::{JobRecord, OnceTarget, TargetState};
use rusqlite::{Connection, OptionalExtension, Row};

use crate::Store;
use crate::codec::{from_json, from_ms, uuid};
use crate::error::Result;

const COLUMNS: &str = "spec, revision, created_at, updated_at, updated_by, deleted";

fn record(row: &Row<'_>) -> rusqlite::Result<(String, JobRecordParts)> {
    Ok((
        row.get(0)?,
        JobRecordParts {
            revision: row.get::<_, i64>(1)? as u64,
            created_at: row.get(2)?,
            updated_at: row.get(3)?,
            updated_by: row.get(4)?,
            deleted: row.get::<_, i64>(5)? != 0,
        },
    ))
}

struct JobRecordParts {
    revision: u64,
    created_at: i64,
    updated_at: i64,
    updated_by: String,
    deleted: bool,
}

fn decode((spec, p): (String, JobRecordParts)) -> Result<(JobRecord, bool)> {
    Ok((
        JobRecord {
            spec: from_json("job spec", &spec)?,
            revision: p.revision,
            created_at: from_ms(p.created_at),
            updated_at: from_ms(p.updated_at),
            updated_by: p.updated_by,
        },
        p.deleted,
    ))
}

/// The job row (live or tombstone) and whether it is deleted.
pub(crate) fn load(conn: &Connection, name: &str) -> Result<Option<(JobRecord, bool)>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM jobs WHERE name = ?1"),
        [name],
        record,
    )
    .optional()?
    .map(decode)
    .transpose()
}

/// Every job that is not deleted, by name.
pub(crate) fn live(conn: &Connection) -> Result<Vec<JobRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE deleted = 0 ORDER BY name"
    ))?;
    let rows = stmt.query_map([], record)?;
    rows.map(|r| Ok(decode(r?)?.0)).collect()
}

/// The live, enabled once-jobs with `NewHosts`, by name (those late hosts may join).
pub(crate) fn new_hosts(conn: &Connection) -> Result<Vec<JobRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE deleted = 0 AND json_extract(spec, '$.NewHosts') = 1
         ORDER BY name"
    ))?;
    let rows = stmt.query_map([], record)?;
    let mut out = Vec::new();
    for r in rows {
        let job = decode(r?)?.0;
        if job.spec.once_job && job.spec.new_hosts && job.spec.enabled {
            out.push(job);
        }
    }
    Ok(out)
}

fn target_state(s: &str) -> TargetState {
    match s {
        "waiting" => TargetState::Waiting,
        "running" => TargetState::Running,
        "done" => TargetState::Done,
        "failed" => TargetState::Failed,
        _ => TargetState::Pending,
    }
}

impl Store {
    /// Every job that is not deleted, by name.
    pub fn jobs(&self) -> Result<Vec<JobRecord>> {
        self.read(live)
    }

    /// One job, unless it does not exist or is deleted.
    pub fn job(&self, name: &str) -> Result<Option<JobRecord>> {
        self.read(|conn| Ok(load(conn, name)?.filter(|(_, d)| !d).map(|(r, _)| r)))
    }

    /// The once-job targets of `job`, of one revision or (None) of its current revision.
    pub fn once_targets(&self, job: &str, revision: Option<u64>) -> Result<Vec<OnceTarget>> {
        self.read(|conn| {
            let revision = match revision {
                Some(r) => r,
                None => match load(conn, job)? {
                    Some((r, _)) => r.revision,
                    None => return Ok(Vec::new()),
                },
            };
            let mut stmt = conn.prepare_cached(
                "SELECT node_id, hostname, state, run_id, updated_at, late FROM once_targets
                 WHERE job = ?1 AND revision = ?2 ORDER BY hostname, node_id",
            )?;
            let rows = stmt.query_map(rusqlite::params![job, revision as i64], |r| {
                Ok(OnceTarget {
                    job: job.to_string(),
                    revision,
                    node_id: uuid(&r.get::<_, String>(0)?),
                    hostname: r.get(1)?,
                    state: target_state(&r.get::<_, String>(2)?),
                    run_id: r.get::<_, Option<String>>(3)?.map(|s| uuid(&s)),
                    updated_at: from_ms(r.get(4)?),
                    late: r.get::<_, i64>(5)? != 0,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}
