//! Job commands: save (with once-job target selection), delete, enable/disable.

use chrono::{DateTime, Utc};
use op_proto::api::{JobRecord, OnceSelection, SaveJobResponse, TargetHost};
use op_proto::incidents::{Input, JobRemoved};
use op_proto::{JobSpec, NodeStatus};
use rusqlite::{Connection, params};

use super::{Changes, Outcome, audit, bump_desired_all, bump_desired_node};
use crate::codec::{ms, to_json};
use crate::command::{CommandResult, Rejection};
use crate::error::Result;
use crate::read;

pub(super) fn save(
    conn: &Connection,
    index: u64,
    spec: &JobSpec,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let prev = read::jobs::load(conn, &spec.name)?;
    let revision = prev.as_ref().map_or(1, |(r, _)| r.revision + 1);
    let created = prev.as_ref().is_none_or(|(_, deleted)| *deleted);
    let created_at = match &prev {
        Some((r, false)) => r.created_at,
        _ => at,
    };
    if let Some((old, false)) = &prev
        && (old.spec.selector() != spec.selector() || spec.once_job)
    {
        // The nodes the old selection gave this job may still send its runs.
        super::selections::remember_job(conn, &old.spec)?;
    }
    let record = JobRecord {
        spec: spec.clone(),
        revision,
        created_at,
        updated_at: at,
        updated_by: actor.to_string(),
    };
    write(conn, &record)?;
    let once = if spec.once_job {
        Some(if spec.enabled {
            select_targets(conn, index, spec, revision, at, ch)?
        } else {
            OnceSelection::default()
        })
    } else {
        None
    };
    audit(
        conn,
        at,
        actor,
        "job.save",
        &spec.name,
        &format!("revision {revision}"),
    )?;
    bump_desired_all(conn, index, ch)?;
    Ok(Ok(CommandResult::JobSaved {
        response: Box::new(SaveJobResponse {
            name: spec.name.clone(),
            revision,
            created,
            // Fire times depend on the zone of whoever displays them; the API fills them in.
            next_fires: Vec::new(),
            once,
        }),
    }))
}

pub(super) fn delete(
    conn: &Connection,
    index: u64,
    name: &str,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let Some((record, false)) = read::jobs::load(conn, name)? else {
        return Ok(Err(Rejection::not_found(format!("no job named {name:?}"))));
    };
    // Runs of the deleted job may still be waiting in outboxes.
    super::selections::remember_job(conn, &record.spec)?;
    // Its open fires and incidents end without events: no run of it will close them.
    ch.inputs.push(Input::JobRemoved(JobRemoved {
        job: name.to_string(),
    }));
    super::judged::forget(conn, name)?;
    // Keep a tombstone with the last revision: a job saved again under this name continues the
    // numbering, so agents never mistake a new once-job revision for one they already ran.
    conn.execute(
        "UPDATE jobs SET deleted = 1, updated_at = ?2, updated_by = ?3 WHERE name = ?1",
        params![name, ms(at), actor],
    )?;
    audit(
        conn,
        at,
        actor,
        "job.delete",
        name,
        &format!("revision {}", record.revision),
    )?;
    bump_desired_all(conn, index, ch)?;
    Ok(Ok(CommandResult::JobDeleted {
        name: name.to_string(),
        revision: record.revision,
    }))
}

pub(super) fn set_enabled(
    conn: &Connection,
    index: u64,
    name: &str,
    enabled: bool,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let Some((mut record, false)) = read::jobs::load(conn, name)? else {
        return Ok(Err(Rejection::not_found(format!("no job named {name:?}"))));
    };
    if record.spec.enabled == enabled {
        return Ok(Ok(CommandResult::Job {
            job: Box::new(record),
        }));
    }
    let old_revision = record.revision;
    record.spec.enabled = enabled;
    record.revision += 1;
    record.updated_at = at;
    record.updated_by = actor.to_string();
    write(conn, &record)?;
    if record.spec.once_job {
        // A once-job keeps its targets across enable/disable: hosts that already ran it stay done,
        // pending ones stay pending under the new revision. A job that never had targets (saved
        // disabled) selects them now.
        let copied = conn.execute(
            "INSERT INTO once_targets
               (job, revision, node_id, hostname, state, run_id, updated_at, late, seq)
             SELECT job, ?3, node_id, hostname, state, run_id, ?4, late, seq FROM once_targets
             WHERE job = ?1 AND revision = ?2",
            params![name, old_revision as i64, record.revision as i64, ms(at)],
        )?;
        if copied == 0 && enabled {
            select_targets(conn, index, &record.spec, record.revision, at, ch)?;
        }
        if enabled {
            super::late::admit(conn, index, at, ch)?;
        }
    }
    let action = if enabled { "job.enable" } else { "job.disable" };
    audit(
        conn,
        at,
        actor,
        action,
        name,
        &format!("revision {}", record.revision),
    )?;
    bump_desired_all(conn, index, ch)?;
    Ok(Ok(CommandResult::Job {
        job: Box::new(record),
    }))
}

fn write(conn: &Connection, r: &JobRecord) -> Result<()> {
    conn.execute(
        "INSERT INTO jobs(name, spec, revision, created_at, updated_at, updated_by, deleted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)
         ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, revision = excluded.revision,
           created_at = excluded.created_at, updated_at = excluded.updated_at,
           updated_by = excluded.updated_by, deleted = 0",
        params![
            r.spec.name,
            to_json(&r.spec),
            r.revision as i64,
            ms(r.created_at),
            ms(r.updated_at),
            r.updated_by
        ],
    )?;
    Ok(())
}

/// Creates the pending targets of a once-job revision: the live nodes (Ready or Degraded) its
/// selector matches now. A Degraded node still runs what it can, and holds a once-job it cannot
/// record yet until it can.
/// Also reports the listed hosts that match no known node, and those known but not Ready.
fn select_targets(
    conn: &Connection,
    index: u64,
    spec: &JobSpec,
    revision: u64,
    at: DateTime<Utc>,
    ch: &mut Changes,
) -> Result<OnceSelection> {
    let nodes: Vec<_> = read::nodes::all(conn)?
        .into_iter()
        .filter(|n| n.status != NodeStatus::Left)
        .collect();
    let selector = spec.selector();
    let identities: Vec<_> = nodes.iter().map(|n| n.identity()).collect();
    let mut selection = OnceSelection {
        unknown: selector
            .unknown_entries(&identities)
            .iter()
            .map(|p| p.as_str().to_string())
            .collect(),
        ..OnceSelection::default()
    };
    for (node, identity) in nodes.iter().zip(&identities) {
        if !selector.matches(identity) {
            continue;
        }
        if !node.status.is_live() {
            // Name the host the way the operator listed it, when a specific entry did.
            let named = spec
                .white_hosts
                .iter()
                .find(|p| p.is_specific() && p.matches(identity))
                .map_or_else(|| node.hostname.clone(), |p| p.as_str().to_string());
            if !selection.not_ready.contains(&named) {
                selection.not_ready.push(named);
            }
            continue;
        }
        conn.execute(
            "INSERT OR REPLACE INTO once_targets
               (job, revision, node_id, hostname, state, run_id, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'pending', NULL, ?5)",
            params![
                spec.name,
                revision as i64,
                node.node_id.to_string(),
                node.hostname,
                ms(at)
            ],
        )?;
        bump_desired_node(conn, index, node.node_id, ch)?;
        selection.selected.push(TargetHost {
            node_id: node.node_id,
            hostname: node.hostname.clone(),
            ips: node.ip_string(),
        });
    }
    Ok(selection)
}
