//! Invocation queries: one invocation with its targets (and their run records), the live ones the
//! leader drives, recent ones for listing, and the directives each node must receive.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use op_proto::agent::{Directive, RunDirective};
use op_proto::invoke::{
    HostStatus, InvocationKind, InvocationOptions, InvocationQuery, InvocationState, Summary,
};
use op_proto::{JobSpec, RunRecord, Trigger};
use rusqlite::{Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Store;
use crate::codec::{from_json, from_ms, parse_ip_list, uuid};
use crate::command::MissingHost;
use crate::error::Result;

/// Rows `invocations` returns when the query sets no limit.
pub const DEFAULT_INVOCATION_LIMIT: u32 = 50;
/// Most rows one `invocations` query returns.
pub const MAX_INVOCATION_LIMIT: u32 = 1000;

/// What an invocation row's `record` column holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationDetail {
    pub spec: JobSpec,
    pub revision: u64,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub options: InvocationOptions,
    #[serde(default)]
    pub unreachable: Vec<MissingHost>,
    /// The invocation this one retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<Uuid>,
    /// The fire of a `RunOn` job this invocation runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire: Option<DateTime<Utc>>,
}

/// One invocation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationRow {
    pub id: Uuid,
    pub job: String,
    pub kind: InvocationKind,
    pub state: InvocationState,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why pending hosts were cancelled (stopped on failures, or cancelled by an operator).
    pub stopped: Option<String>,
    pub detail: InvocationDetail,
}

/// One target (host) of an invocation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRow {
    pub run_id: Uuid,
    pub seq: u32,
    pub batch: u32,
    pub node_id: Uuid,
    pub hostname: String,
    pub ips: Vec<IpAddr>,
    pub status: HostStatus,
    /// A kill was asked for (the invocation was cancelled while this host ran).
    pub kill: bool,
    pub released_at: Option<DateTime<Utc>>,
    pub not_after: Option<DateTime<Utc>>,
    /// While running: when the host becomes `unresponsive` unless its agent acknowledges the
    /// directive first. `None` once acknowledged, or when no acknowledgement is expected.
    pub ack_by: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the host ended without a run result (unreachable, cancelled).
    pub detail: Option<String>,
    /// The host's run record, when the manager has one (also after a late arrival).
    pub run: Option<RunRecord>,
    /// The log index of the command that made the status final.
    pub settled_index: Option<u64>,
}

impl InvocationRow {
    /// The counts of this invocation as stored, with `targets` its targets: the hosts
    /// unreachable from the start count as `unreachable`; the elapsed time runs from the request
    /// to the last result (or the finish). The API, the console and the `invocation.finished`
    /// event (derived in apply) all count with this one rule.
    pub fn summary(&self, targets: &[TargetRow]) -> Summary {
        let mut s = Summary::count(
            self.id,
            &self.job,
            self.detail
                .unreachable
                .iter()
                .map(|_| HostStatus::Unreachable)
                .chain(targets.iter().map(|t| t.status)),
        );
        let last = targets
            .iter()
            .filter_map(|t| t.finished_at)
            .max()
            .or(self.finished_at);
        if let Some(end) = last {
            s.elapsed_ms = (end - self.created_at).num_milliseconds().max(0) as u64;
        }
        s.stopped = self.stopped.clone();
        s
    }
}

const INVOCATION_COLUMNS: &str =
    "id, job, kind, state, created_at, created_by, finished_at, stopped, record";

fn invocation_row(r: &Row<'_>) -> rusqlite::Result<(InvocationRow, String)> {
    Ok((
        InvocationRow {
            id: uuid(&r.get::<_, String>(0)?),
            job: r.get(1)?,
            kind: if r.get::<_, String>(2)? == "exec" {
                InvocationKind::Exec
            } else {
                InvocationKind::Job
            },
            state: if r.get::<_, String>(3)? == "finished" {
                InvocationState::Finished
            } else {
                InvocationState::Running
            },
            created_at: from_ms(r.get(4)?),
            created_by: r.get(5)?,
            finished_at: r.get::<_, Option<i64>>(6)?.map(from_ms),
            stopped: r.get(7)?,
            detail: InvocationDetail {
                spec: JobSpec::new("", ""),
                revision: 0,
                params: BTreeMap::new(),
                options: InvocationOptions::default(),
                unreachable: Vec::new(),
                retry_of: None,
                fire: None,
            },
        },
        r.get(8)?,
    ))
}

fn decode((mut row, record): (InvocationRow, String)) -> Result<InvocationRow> {
    row.detail = from_json("invocation", &record)?;
    Ok(row)
}

pub(crate) fn targets(conn: &Connection, id: Uuid, with_runs: bool) -> Result<Vec<TargetRow>> {
    select_targets(conn, id, with_runs, None)
}

/// Targets of `id` in order; with `settled_after`, only those whose status became final in a
/// command after that log index.
fn select_targets(
    conn: &Connection,
    id: Uuid,
    with_runs: bool,
    settled_after: Option<u64>,
) -> Result<Vec<TargetRow>> {
    let run_column = if with_runs { "runs.record" } else { "NULL" };
    let since = if settled_after.is_some() {
        "AND t.settled_index > ?2"
    } else {
        "AND ?2 IS NULL"
    };
    let sql = format!(
        "SELECT t.run_id, t.seq, t.batch, t.node_id, t.hostname, t.ips, t.status, t.kill,
                t.released_at, t.not_after, t.finished_at, t.detail, {run_column},
                t.settled_index, t.ack_by
         FROM invocation_targets t
         LEFT JOIN runs ON runs.run_id = t.run_id AND runs.node_id = t.node_id
         WHERE t.invocation_id = ?1 {since} ORDER BY t.seq"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        rusqlite::params![id.to_string(), settled_after.map(|i| i as i64)],
        |r| {
            Ok((
                TargetRow {
                    run_id: uuid(&r.get::<_, String>(0)?),
                    seq: r.get::<_, i64>(1)? as u32,
                    batch: r.get::<_, i64>(2)? as u32,
                    node_id: uuid(&r.get::<_, String>(3)?),
                    hostname: r.get(4)?,
                    ips: parse_ip_list(&r.get::<_, String>(5)?),
                    // Only valid statuses are written; unreachable is the safe reading of others.
                    status: HostStatus::parse(&r.get::<_, String>(6)?)
                        .unwrap_or(HostStatus::Unreachable),
                    kill: r.get::<_, i64>(7)? != 0,
                    released_at: r.get::<_, Option<i64>>(8)?.map(from_ms),
                    not_after: r.get::<_, Option<i64>>(9)?.map(from_ms),
                    ack_by: r.get::<_, Option<i64>>(14)?.map(from_ms),
                    finished_at: r.get::<_, Option<i64>>(10)?.map(from_ms),
                    detail: r.get(11)?,
                    run: None,
                    settled_index: r.get::<_, Option<i64>>(13)?.map(|i| i as u64),
                },
                r.get::<_, Option<String>>(12)?,
            ))
        },
    )?;
    rows.map(|row| {
        let (mut t, run) = row?;
        t.run = run.map(|text| from_json("run", &text)).transpose()?;
        Ok(t)
    })
    .collect()
}

pub(crate) fn one(conn: &Connection, id: Uuid) -> Result<Option<InvocationRow>> {
    conn.query_row(
        &format!("SELECT {INVOCATION_COLUMNS} FROM invocations WHERE id = ?1"),
        [id.to_string()],
        invocation_row,
    )
    .optional()?
    .map(decode)
    .transpose()
}

/// Every node's directives: a run for each released target, a kill for each target whose
/// invocation was cancelled while it ran. `node` limits them to one node.
pub(crate) fn directives(conn: &Connection, node: Option<Uuid>) -> Result<Vec<(Uuid, Directive)>> {
    let filter = if node.is_some() {
        "AND t.node_id = ?1"
    } else {
        "AND ?1 IS NULL"
    };
    let sql = format!(
        "SELECT t.node_id, t.run_id, t.kill, t.not_after, i.id, i.record, t.ack_by
         FROM invocation_targets t JOIN invocations i ON i.id = t.invocation_id
         WHERE t.status = 'running' {filter} ORDER BY t.node_id, i.created_at, t.seq"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([node.map(|n| n.to_string())])?;
    let mut details: HashMap<String, InvocationDetail> = HashMap::new();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let node_id = uuid(&r.get::<_, String>(0)?);
        let run_id = uuid(&r.get::<_, String>(1)?);
        if r.get::<_, i64>(2)? != 0 {
            out.push((node_id, Directive::Kill { run_id }));
            continue;
        }
        let not_after = from_ms(r.get::<_, Option<i64>>(3)?.unwrap_or(0));
        let inv: String = r.get(4)?;
        let detail = match details.get(&inv) {
            Some(d) => d,
            None => {
                let d: InvocationDetail = from_json("invocation", &r.get::<_, String>(5)?)?;
                details.entry(inv.clone()).or_insert(d)
            }
        };
        out.push((
            node_id,
            Directive::Run(Box::new(RunDirective {
                invocation_id: uuid(&inv),
                run_id,
                revision: detail.revision,
                spec: detail.spec.clone(),
                params: detail.params.clone(),
                trigger: if detail.fire.is_some() {
                    Trigger::Cron
                } else {
                    Trigger::Adhoc
                },
                not_after,
                planned_at: detail.fire,
                // A fire's host must start within its acknowledgement window (the leader gives
                // the fire to another host after it), with a second's margin for the ack to
                // arrive.
                start_by: detail.fire.and(
                    r.get::<_, Option<i64>>(6)?
                        .map(|ms| from_ms(ms) - chrono::Duration::seconds(1)),
                ),
            })),
        ));
    }
    Ok(out)
}

impl Store {
    /// One invocation with its targets; `with_runs` joins each target's run record.
    pub fn invocation(
        &self,
        id: Uuid,
        with_runs: bool,
    ) -> Result<Option<(InvocationRow, Vec<TargetRow>)>> {
        self.read(|conn| {
            let tx = conn.unchecked_transaction()?;
            let Some(row) = one(&tx, id)? else {
                return Ok(None);
            };
            let t = targets(&tx, id, with_runs)?;
            tx.finish()?;
            Ok(Some((row, t)))
        })
    }

    /// What a waiting caller needs at each look: the invocation, the targets (with their run
    /// records) that settled after log index `after`, and how many targets are still open. Its
    /// cost follows what changed, not the number of hosts.
    pub fn invocation_progress(
        &self,
        id: Uuid,
        after: u64,
    ) -> Result<Option<(InvocationRow, Vec<TargetRow>, u64)>> {
        self.read(|conn| {
            let tx = conn.unchecked_transaction()?;
            let Some(row) = one(&tx, id)? else {
                return Ok(None);
            };
            let ended = select_targets(&tx, id, true, Some(after))?;
            let open: i64 = tx.query_row(
                "SELECT COUNT(*) FROM invocation_targets
                 WHERE invocation_id = ?1 AND status IN ('pending', 'running')",
                [id.to_string()],
                |r| r.get(0),
            )?;
            tx.finish()?;
            Ok(Some((row, ended, open as u64)))
        })
    }

    /// Of `acks`, the run ids still awaiting their node's acknowledgement (running, `ack_by`
    /// set): what an `AcknowledgeDirectives` would change. An agent acknowledges the directives of
    /// every answer it applies, so most acknowledgements are repeats this filters out.
    pub fn awaiting_ack(&self, acks: &[crate::DirectiveAck]) -> Result<Vec<crate::DirectiveAck>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT 1 FROM invocation_targets
                 WHERE run_id = ?1 AND node_id = ?2 AND status = 'running' AND ack_by IS NOT NULL",
            )?;
            let mut out = Vec::new();
            for ack in acks {
                let node = ack.node_id.to_string();
                let mut run_ids = Vec::new();
                for run_id in &ack.run_ids {
                    if stmt.exists(rusqlite::params![run_id.to_string(), node])? {
                        run_ids.push(*run_id);
                    }
                }
                if !run_ids.is_empty() {
                    out.push(crate::DirectiveAck {
                        node_id: ack.node_id,
                        run_ids,
                    });
                }
            }
            Ok(out)
        })
    }

    /// Invocations still running, with their targets (without run records): the leader's work.
    pub fn live_invocations(&self) -> Result<Vec<(InvocationRow, Vec<TargetRow>)>> {
        self.read(|conn| {
            let tx = conn.unchecked_transaction()?;
            let rows: Vec<InvocationRow> = {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {INVOCATION_COLUMNS} FROM invocations WHERE state = 'running'
                     ORDER BY created_at"
                ))?;
                let rows = stmt.query_map([], invocation_row)?;
                rows.map(|r| decode(r?)).collect::<Result<_>>()?
            };
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let t = targets(&tx, row.id, false)?;
                out.push((row, t));
            }
            tx.finish()?;
            Ok(out)
        })
    }

    /// Recent invocations, newest first, each with its hosts' statuses.
    pub fn invocations(
        &self,
        q: &InvocationQuery,
    ) -> Result<Vec<(InvocationRow, Vec<HostStatus>)>> {
        let limit = q
            .limit
            .unwrap_or(DEFAULT_INVOCATION_LIMIT)
            .clamp(1, MAX_INVOCATION_LIMIT);
        let job = q.job.clone();
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let rows: Vec<InvocationRow> = {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {INVOCATION_COLUMNS} FROM invocations
                     WHERE ?1 IS NULL OR job = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2"
                ))?;
                let rows = stmt.query_map(rusqlite::params![job, limit], invocation_row)?;
                rows.map(|r| decode(r?)).collect::<Result<_>>()?
            };
            let mut out = Vec::with_capacity(rows.len());
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT status FROM invocation_targets WHERE invocation_id = ?1 ORDER BY seq",
                )?;
                for row in rows {
                    let statuses = stmt
                        .query_map([row.id.to_string()], |r| r.get::<_, String>(0))?
                        .map(|s| Ok(HostStatus::parse(&s?).unwrap_or(HostStatus::Unreachable)))
                        .collect::<Result<Vec<_>>>()?;
                    out.push((row, statuses));
                }
            }
            tx.finish()?;
            Ok(out)
        })
    }
}
