//! Invocation commands: create (targets and the first release), advance (release, expire, stop,
//! finish), cancel; and how an ingested run settles its target.
//!
//! A target's `status` moves forward only: `pending` → `running` (released: it is a directive of
//! its node until it ends) → a final status. Each update names the status it expects, so a
//! decision the leader made on a slightly older state (a target that finished meanwhile) changes
//! nothing instead of undoing a result.

use chrono::{DateTime, Duration, Utc};
use op_proto::agent::CAPABILITY_DIRECTIVE_ACK;
use op_proto::incidents::{HostRef, Input, InvocationFinished};
use op_proto::invoke::{HostStatus, InvocationKind, InvocationOptions};
use op_proto::{RunRecord, RunStatus};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::{Changes, Outcome, audit, bump_desired_node};
use crate::codec::{ip_list, ms, to_json};
use crate::command::{CommandResult, DirectiveAck, NewInvocation, Rejection};
use crate::error::Result;
use crate::read;
use crate::read::invocations::InvocationDetail;

/// The longest command text kept in an audit entry.
const AUDIT_COMMAND_CHARS: usize = 200;

pub(super) fn create(
    conn: &Connection,
    index: u64,
    inv: &NewInvocation,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM invocations WHERE id = ?1",
            [inv.id.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Ok(Err(Rejection::conflict(format!(
            "invocation {} already exists",
            inv.id
        ))));
    }
    if inv.kind == InvocationKind::Job {
        // The proposer validated the parameters against this revision; a save in between would
        // run a job nobody checked.
        match read::jobs::load(conn, &inv.spec.name)? {
            Some((job, false)) if job.revision == inv.revision => {}
            Some((job, false)) => {
                return Ok(Err(Rejection::conflict(format!(
                    "job {:?} changed (now revision {}) while the run was being prepared; run it again",
                    inv.spec.name, job.revision
                ))));
            }
            _ => {
                return Ok(Err(Rejection::not_found(format!(
                    "no job named {:?}",
                    inv.spec.name
                ))));
            }
        }
    }
    let detail = InvocationDetail {
        spec: inv.spec.clone(),
        revision: inv.revision,
        params: inv.params.clone(),
        options: inv.options.clone(),
        unreachable: inv.unreachable.clone(),
        retry_of: inv.retry_of,
        fire: inv.fire,
    };
    let finished = inv.targets.is_empty();
    conn.execute(
        "INSERT INTO invocations(id, job, kind, state, created_at, created_by, finished_at,
                                 stopped, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)",
        params![
            inv.id.to_string(),
            inv.spec.name,
            inv.kind.as_str(),
            if finished { "finished" } else { "running" },
            ms(at),
            actor,
            finished.then(|| ms(at)),
            to_json(&detail)
        ],
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO invocation_targets(run_id, invocation_id, seq, batch, node_id, hostname, ips,
                                        status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending')",
    )?;
    for (seq, t) in inv.targets.iter().enumerate() {
        insert.execute(params![
            t.run_id.to_string(),
            inv.id.to_string(),
            seq as i64,
            i64::from(t.batch),
            t.node_id.to_string(),
            t.hostname,
            ip_list(&t.ips)
        ])?;
    }
    release(conn, index, inv.id, &inv.release, at, &inv.options, ch)?;
    let (action, mut what) = match inv.kind {
        InvocationKind::Job => ("job.run", params_text(inv)),
        InvocationKind::Exec => ("exec", command_text(&inv.spec.command)),
    };
    if let Some(old) = inv.retry_of {
        what = format!(", retry of {old}{what}");
    }
    audit(
        conn,
        at,
        actor,
        action,
        &inv.spec.name,
        &format!(
            "invocation {} on {} host(s){what}",
            inv.id,
            inv.targets.len()
        ),
    )?;
    if finished {
        finished_input(conn, inv.id, at, ch)?;
    }
    ch.invocations.insert(inv.id);
    Ok(Ok(CommandResult::InvocationCreated { id: inv.id }))
}

/// Parameter names only: values may be secrets, and the run records keep them anyway.
fn params_text(inv: &NewInvocation) -> String {
    if inv.params.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = inv.params.keys().map(String::as_str).collect();
    format!(", params {}", names.join(", "))
}

fn command_text(command: &str) -> String {
    let mut short: String = command.chars().take(AUDIT_COMMAND_CHARS).collect();
    if short.len() < command.len() {
        short.push('…');
    }
    format!(": {short}")
}

/// Releases pending targets: each becomes a directive of its node until it ends or its deadline
/// (`not_after`) passes. Returns how many were released.
fn release(
    conn: &Connection,
    index: u64,
    id: Uuid,
    run_ids: &[Uuid],
    at: DateTime<Utc>,
    options: &InvocationOptions,
    ch: &mut Changes,
) -> Result<usize> {
    let secs = |s: u64| Duration::seconds(s.min(i64::MAX as u64 / 1000) as i64);
    let not_after = at + secs(options.deadline_secs);
    // Only an agent that acknowledges directives can be late to: others have the whole deadline.
    let ack_by = options.ack_secs.map(|s| ms(at + secs(s)));
    let mut stmt = conn.prepare_cached(
        "UPDATE invocation_targets SET status = 'running', released_at = ?3, not_after = ?4,
           ack_by = CASE WHEN ?5 IS NOT NULL AND EXISTS (
               SELECT 1 FROM nodes n, json_each(n.info, '$.capabilities') c
               WHERE n.node_id = invocation_targets.node_id AND c.value = ?6)
             THEN ?5 END
         WHERE run_id = ?1 AND invocation_id = ?2 AND status = 'pending'
         RETURNING node_id",
    )?;
    let mut released = 0;
    for run_id in run_ids {
        let node: Option<String> = stmt
            .query_row(
                params![
                    run_id.to_string(),
                    id.to_string(),
                    ms(at),
                    ms(not_after),
                    ack_by,
                    CAPABILITY_DIRECTIVE_ACK
                ],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(node) = node {
            released += 1;
            bump_desired_node(conn, index, crate::codec::uuid(&node), ch)?;
        }
    }
    Ok(released)
}

/// `AcknowledgeDirectives`: each acknowledged target of the acknowledging node that is still
/// running keeps its whole deadline (its `ack_by` is cleared).
pub(super) fn acknowledge(conn: &Connection, acks: &[DirectiveAck]) -> Outcome {
    let mut stmt = conn.prepare_cached(
        "UPDATE invocation_targets SET ack_by = NULL
         WHERE run_id = ?1 AND node_id = ?2 AND status = 'running' AND ack_by IS NOT NULL",
    )?;
    for ack in acks {
        let node = ack.node_id.to_string();
        for run_id in &ack.run_ids {
            stmt.execute(params![run_id.to_string(), node])?;
        }
    }
    Ok(Ok(CommandResult::Done))
}

/// Loads what advance and cancel need: the state and the options (per-host deadline and
/// acknowledgement time).
fn load(conn: &Connection, id: Uuid) -> Result<Option<(String, InvocationOptions)>> {
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT state, record FROM invocations WHERE id = ?1",
            [id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(state, record)| {
        let detail: InvocationDetail = crate::codec::from_json("invocation", &record)?;
        Ok((state, detail.options))
    })
    .transpose()
}

#[allow(clippy::too_many_arguments)] // One command's fields, applied in one place.
pub(super) fn advance(
    conn: &Connection,
    index: u64,
    id: Uuid,
    at: DateTime<Utc>,
    release_ids: &[Uuid],
    expire_ids: &[Uuid],
    stop: Option<&str>,
    finish: bool,
    ch: &mut Changes,
) -> Outcome {
    let Some((state, options)) = load(conn, id)? else {
        return Ok(Err(Rejection::not_found(format!("no invocation {id}"))));
    };
    let deadline_secs = options.deadline_secs;
    if state == "finished" {
        return Ok(Ok(CommandResult::InvocationAdvanced {
            released: 0,
            expired: 0,
            cancelled: 0,
            finished: true,
        }));
    }
    let mut expired = 0;
    {
        // A target with a kill pending that never confirmed it counts as cancelled, not as
        // unreachable: the caller asked for it to stop. One past its deadline is unreachable;
        // one only past its acknowledgement time is unresponsive.
        let mut stmt = conn.prepare_cached(
            "UPDATE invocation_targets SET
               status = CASE WHEN kill = 1 THEN 'cancelled'
                 WHEN not_after <= ?3 THEN 'unreachable' ELSE 'unresponsive' END,
               finished_at = ?3, settled_index = ?5,
               detail = CASE WHEN kill = 1
                 THEN 'cancelled; the host did not confirm the kill before its deadline'
                 WHEN not_after <= ?3 THEN ?4 ELSE ?6 END
             WHERE run_id = ?1 AND invocation_id = ?2 AND status = 'running'
               AND (not_after <= ?3 OR ack_by <= ?3)
             RETURNING node_id",
        )?;
        let why = format!(
            "no result within the deadline of {deadline_secs} s: the host is not connected, or \
             did not answer in time (a late result still shows in the invocation)"
        );
        let unresponsive = format!(
            "its agent did not acknowledge the directive within {} s: it is stopped, hung or cut \
             off while its connection looks open (a late result still shows in the invocation)",
            options.ack_secs.unwrap_or_default()
        );
        for run_id in expire_ids {
            let node: Option<String> = stmt
                .query_row(
                    params![
                        run_id.to_string(),
                        id.to_string(),
                        ms(at),
                        why,
                        index as i64,
                        unresponsive
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(node) = node {
                expired += 1;
                ch.directives_ended.insert(crate::codec::uuid(&node));
            }
        }
    }
    let mut cancelled = 0;
    if let Some(reason) = stop {
        cancelled = stop_pending(conn, index, id, at, reason)?;
    }
    let released = release(conn, index, id, release_ids, at, &options, ch)?;
    let finished = finish && finish_if_done(conn, id, at)?;
    if finished {
        finished_input(conn, id, at, ch)?;
    }
    if expired + cancelled + released > 0 || finished {
        ch.invocations.insert(id);
    }
    Ok(Ok(CommandResult::InvocationAdvanced {
        released,
        expired,
        cancelled,
        finished,
    }))
}

/// Cancels the pending targets and records why; returns how many.
fn stop_pending(
    conn: &Connection,
    index: u64,
    id: Uuid,
    at: DateTime<Utc>,
    reason: &str,
) -> Result<usize> {
    let n = conn.execute(
        "UPDATE invocation_targets SET status = 'cancelled', finished_at = ?2, detail = ?3,
           settled_index = ?4
         WHERE invocation_id = ?1 AND status = 'pending'",
        params![id.to_string(), ms(at), reason, index as i64],
    )?;
    conn.execute(
        "UPDATE invocations SET stopped = ?2 WHERE id = ?1 AND stopped IS NULL",
        params![id.to_string(), reason],
    )?;
    Ok(n)
}

/// Marks the invocation finished when no target is pending or running.
fn finish_if_done(conn: &Connection, id: Uuid, at: DateTime<Utc>) -> Result<bool> {
    let open: i64 = conn.query_row(
        "SELECT COUNT(*) FROM invocation_targets
         WHERE invocation_id = ?1 AND status IN ('pending', 'running')",
        [id.to_string()],
        |r| r.get(0),
    )?;
    if open > 0 {
        return Ok(false);
    }
    let n = conn.execute(
        "UPDATE invocations SET state = 'finished', finished_at = ?2
         WHERE id = ?1 AND state = 'running'",
        params![id.to_string(), ms(at)],
    )?;
    Ok(n > 0)
}

/// The incident input of an invocation that just finished (event `invocation.finished`): its
/// summary, counted as the API counts it (`InvocationRow::summary`), and the hosts that did not
/// succeed with their labels. Everything comes from the replicated tables and the command's time.
fn finished_input(conn: &Connection, id: Uuid, at: DateTime<Utc>, ch: &mut Changes) -> Result<()> {
    let Some(row) = read::invocations::one(conn, id)? else {
        return Ok(());
    };
    let targets = read::invocations::targets(conn, id, false)?;
    let summary = row.summary(&targets);
    let mut failed: Vec<HostRef> = row
        .detail
        .unreachable
        .iter()
        .map(|m| HostRef {
            host: m.host.clone(),
            labels: Default::default(),
        })
        .collect();
    for t in targets.iter().filter(|t| t.status != HostStatus::Ok) {
        let labels = read::nodes::by_id(conn, t.node_id)?
            .map(|n| n.labels)
            .unwrap_or_default();
        failed.push(HostRef {
            host: t.hostname.clone(),
            labels,
        });
    }
    ch.inputs
        .push(Input::InvocationFinished(InvocationFinished {
            time: at,
            summary,
            failed,
        }));
    Ok(())
}

pub(super) fn cancel(
    conn: &Connection,
    index: u64,
    id: Uuid,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let Some((state, _)) = load(conn, id)? else {
        return Ok(Err(Rejection::not_found(format!("no invocation {id}"))));
    };
    if state == "finished" {
        return Ok(Err(Rejection::conflict(format!(
            "invocation {id} has already finished"
        ))));
    }
    let cancelled = stop_pending(conn, index, id, at, &format!("cancelled by {actor}"))?;
    let mut killing = 0;
    {
        let mut stmt = conn.prepare_cached(
            "UPDATE invocation_targets SET kill = 1
             WHERE invocation_id = ?1 AND status = 'running' AND kill = 0
             RETURNING node_id",
        )?;
        let nodes: Vec<String> = stmt
            .query_map([id.to_string()], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for node in nodes {
            killing += 1;
            bump_desired_node(conn, index, crate::codec::uuid(&node), ch)?;
        }
    }
    let job: String = conn.query_row(
        "SELECT job FROM invocations WHERE id = ?1",
        [id.to_string()],
        |r| r.get(0),
    )?;
    audit(
        conn,
        at,
        actor,
        "invocation.cancel",
        &job,
        &format!("invocation {id}: {cancelled} pending cancelled, {killing} running killed"),
    )?;
    ch.invocations.insert(id);
    Ok(Ok(CommandResult::InvocationAdvanced {
        released: 0,
        expired: 0,
        cancelled: cancelled + killing,
        finished: false,
    }))
}

/// Settles the target of a final run record from an invocation. Only the node the target was
/// sent to can settle it, and only while it is running: a result that arrives after the
/// deadline stays a late result of an `unreachable` host.
pub(super) fn settle(
    conn: &Connection,
    index: u64,
    run: &RunRecord,
    at: DateTime<Utc>,
    ch: &mut Changes,
) -> Result<()> {
    let Some(id) = run.invocation_id else {
        return Ok(());
    };
    if run.status == RunStatus::Running {
        return Ok(());
    }
    let n = conn.execute(
        "UPDATE invocation_targets SET status = ?4, finished_at = ?5, detail = NULL,
           settled_index = ?6
         WHERE run_id = ?1 AND invocation_id = ?2 AND node_id = ?3 AND status = 'running'",
        params![
            run.run_id.to_string(),
            id.to_string(),
            run.node_id.to_string(),
            HostStatus::of_run(run.status).as_str(),
            ms(at),
            index as i64
        ],
    )?;
    if n > 0 {
        ch.directives_ended.insert(run.node_id);
    }
    let known: Option<i64> = if n > 0 {
        Some(1)
    } else {
        conn.query_row(
            "SELECT 1 FROM invocation_targets WHERE run_id = ?1",
            [run.run_id.to_string()],
            |r| r.get(0),
        )
        .optional()?
    };
    if known.is_some() {
        ch.invocations.insert(id);
    }
    Ok(())
}
