//! Node commands: registration (with the reconciliation of an identity reset), coalesced
//! heartbeats, liveness status changes, forget.

use chrono::{DateTime, Utc};
use op_proto::agent::OnceOutcome;
use op_proto::incidents::{Input, NodeChange, PackageFailed, PackageInstalled};
use op_proto::node::AgentStats;
use op_proto::package::{InstalledPackage, PackageState};
use op_proto::{NodeInfo, NodeStatus};
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::{Changes, Outcome, audit, bump_desired_node};
use crate::codec::{ip_list, ms, to_json};
use crate::command::{CommandResult, NodeBeat, NodeRegistration, Rejection, StatusChange};
use crate::error::Result;
use crate::read;

pub(super) fn register(
    conn: &Connection,
    index: u64,
    reg: &NodeRegistration,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let existing = read::nodes::by_id(conn, reg.node_id)?;
    let created = existing.is_none();
    if let Some(old) = &existing
        && old.status != NodeStatus::Left
        && (old.hostname != reg.hostname || old.ips != reg.ips || old.labels != reg.labels)
    {
        // The jobs the old identity was given may still send runs.
        super::selections::remember_node(conn, old.node_id, &old.identity())?;
    }
    let mut node = existing.unwrap_or_else(|| NodeInfo {
        node_id: reg.node_id,
        hostname: String::new(),
        ips: Vec::new(),
        labels: Default::default(),
        manager_labels: Default::default(),
        agent_version: String::new(),
        os: String::new(),
        arch: String::new(),
        machine_id: String::new(),
        status: NodeStatus::Ready,
        first_seen: at,
        last_seen: at,
        load: None,
        running: Vec::new(),
        packages: Vec::new(),
        stats: AgentStats::default(),
        degraded: None,
        clock_skew_ms: None,
        capabilities: Vec::new(),
        drain: None,
        facts: None,
    });
    node.hostname = reg.hostname.clone();
    node.capabilities = reg.capabilities.clone();
    node.ips = reg.ips.clone();
    node.labels = reg.labels.clone();
    node.agent_version = reg.agent_version.clone();
    node.os = reg.os.clone();
    node.arch = reg.arch.clone();
    if !reg.machine_id.is_empty() {
        node.machine_id = reg.machine_id.clone();
    }
    // Registration says nothing of faults: the heartbeat that follows it does.
    if !created && node.status != NodeStatus::Ready {
        ch.inputs.push(node_change(&node, NodeStatus::Ready, at));
    }
    node.status = NodeStatus::Ready;
    node.degraded = None;
    node.last_seen = node.last_seen.max(at);
    write(conn, &node)?;
    bump_desired_node(conn, index, node.node_id, ch)?;
    ch.nodes.insert(node.node_id);
    if created {
        audit(
            conn,
            at,
            actor,
            "node.register",
            &node.hostname,
            &node.node_id.to_string(),
        )?;
    }
    let replaced = match &reg.reset {
        Some(reset) if created => replace_predecessors(conn, index, &node, reset, at, actor, ch)?,
        _ => Vec::new(),
    };
    // A host that joins (or comes back) after a `NewHosts` once-job was saved gets it too.
    super::late::join(conn, &node, at)?;
    super::late::admit(conn, index, at, ch)?;
    let once_history = once_history(conn, node.node_id)?;
    Ok(Ok(CommandResult::NodeRegistered {
        node: Box::new(node),
        created,
        once_history,
        replaced,
    }))
}

/// After `op-agent reset-identity`: the live nodes this new node replaces are those with its
/// hostname and its (non-empty) machine id, and, when the agent could still read its old node
/// id, that node only. Each is retired (Left, credential revoked) and its once-job targets move
/// to the new node with their state, so a revision it ran is not run again and one it still had
/// to run is run by its successor. A clone has another machine id or hostname and replaces
/// nothing.
fn replace_predecessors(
    conn: &Connection,
    index: u64,
    node: &NodeInfo,
    reset: &op_proto::agent::IdentityReset,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Result<Vec<Uuid>> {
    if node.machine_id.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT info FROM nodes WHERE hostname = ?1 COLLATE NOCASE AND status <> 'Left'
           AND node_id <> ?2 ORDER BY node_id",
    )?;
    let candidates: Vec<String> = stmt
        .query_map(params![node.hostname, node.node_id.to_string()], |r| {
            r.get(0)
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut replaced = Vec::new();
    for info in candidates {
        let mut old: NodeInfo = crate::codec::from_json("node", &info)?;
        if old.machine_id != node.machine_id
            || reset.previous_node_id.is_some_and(|p| p != old.node_id)
        {
            continue;
        }
        let (from, to) = (old.node_id.to_string(), node.node_id.to_string());
        conn.execute(
            "INSERT OR IGNORE INTO once_targets
               (job, revision, node_id, hostname, state, run_id, updated_at, late, seq)
             SELECT job, revision, ?2, ?3, state, run_id, ?4, late, seq
             FROM once_targets WHERE node_id = ?1",
            params![from, to, node.hostname, ms(at)],
        )?;
        // What it still had to run is its successor's now.
        conn.execute(
            "DELETE FROM once_targets WHERE node_id = ?1 AND state IN ('pending', 'waiting')",
            params![from],
        )?;
        ch.inputs.push(node_change(&old, NodeStatus::Left, at));
        old.status = NodeStatus::Left;
        write(conn, &old)?;
        super::tokens::revoke_node(conn, old.node_id, ch)?;
        bump_desired_node(conn, index, old.node_id, ch)?;
        ch.nodes.insert(old.node_id);
        audit(
            conn,
            at,
            actor,
            "node.replace",
            &node.hostname,
            &format!("{from} replaced by {to} (identity reset)"),
        )?;
        replaced.push(old.node_id);
    }
    Ok(replaced)
}

/// The once-job revisions a node started or finished, for its agent's ledger.
fn once_history(conn: &Connection, node_id: Uuid) -> Result<Vec<OnceOutcome>> {
    let mut stmt = conn.prepare_cached(
        "SELECT job, revision, state, run_id FROM once_targets
         WHERE node_id = ?1 AND state NOT IN ('pending', 'waiting') ORDER BY job, revision",
    )?;
    let rows = stmt.query_map([node_id.to_string()], |r| {
        Ok(OnceOutcome {
            job: r.get(0)?,
            revision: r.get::<_, i64>(1)? as u64,
            state: r.get(2)?,
            run_id: r
                .get::<_, Option<String>>(3)?
                .and_then(|s| Uuid::parse_str(&s).ok()),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn heartbeats(
    conn: &Connection,
    index: u64,
    beats: &[NodeBeat],
    ch: &mut Changes,
) -> Outcome {
    let mut updated = 0;
    // The latest beat of a node that came back: its waiting late once-job targets may start.
    let mut revived = None;
    let mut unknown = Vec::new();
    for beat in beats {
        let Some(mut node) = read::nodes::by_id(conn, beat.node_id)? else {
            unknown.push(beat.node_id);
            continue;
        };
        if node.status == NodeStatus::Left {
            // A forgotten node must register again before its beats count.
            unknown.push(beat.node_id);
            continue;
        }
        // A beat older than what the node last reported changes nothing: one buffered on a
        // member and flushed after the agent restarted and registered again (a self-upgrade:
        // it would put the old version back), or after the agent moved to another member.
        if beat.seen_at < node.last_seen {
            continue;
        }
        let status = NodeStatus::of_beat(beat.degraded.as_deref());
        if node.status != status {
            ch.inputs.push(node_change(&node, status, beat.seen_at));
            if !node.status.is_live() && status.is_live() {
                revived = revived.max(Some(beat.seen_at));
            }
        }
        let came_back = !node.status.is_live() && status.is_live();
        if node.status != status || node.degraded != beat.degraded {
            node.status = status;
            node.degraded = beat.degraded.clone();
            ch.nodes.insert(node.node_id);
        }
        package_inputs(&node, &beat.packages, beat.seen_at, &mut ch.inputs);
        node.last_seen = node.last_seen.max(beat.seen_at);
        node.agent_version = beat.agent_version.clone();
        node.load = beat.load.clone();
        node.running = beat.running.clone();
        node.packages = beat.packages.clone();
        node.stats = beat.stats.clone();
        node.clock_skew_ms = beat.clock_skew_ms;
        write(conn, &node)?;
        if came_back {
            super::late::join(conn, &node, beat.seen_at)?;
        }
        updated += 1;
    }
    if let Some(at) = revived {
        super::late::admit(conn, index, at, ch)?;
    }
    Ok(Ok(CommandResult::HeartbeatsRecorded { updated, unknown }))
}

pub(super) fn set_status(
    conn: &Connection,
    changes: &[StatusChange],
    at: DateTime<Utc>,
    ch: &mut Changes,
) -> Outcome {
    let mut done = Vec::new();
    for change in changes {
        let Some(mut node) = read::nodes::by_id(conn, change.node_id)? else {
            continue;
        };
        if node.status == change.status
            || node.last_seen > change.unless_seen_after
            || (node.status == NodeStatus::Left && change.status == NodeStatus::NotReady)
        {
            continue;
        }
        ch.inputs.push(node_change(&node, change.status, at));
        node.status = change.status;
        write(conn, &node)?;
        done.push((node.node_id, node.status));
        ch.nodes.insert(node.node_id);
    }
    Ok(Ok(CommandResult::StatusChanged { changes: done }))
}

pub(super) fn forget(
    conn: &Connection,
    index: u64,
    node_id: Uuid,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let Some(mut node) = read::nodes::by_id(conn, node_id)? else {
        return Ok(Err(Rejection::not_found(format!(
            "no node with id {node_id}"
        ))));
    };
    // A forgotten node leaves the node batch and the nodes announced down: it keeps no
    // `node.not_ready` incident open and is never announced again.
    if node.status != NodeStatus::Left {
        ch.inputs.push(node_change(&node, NodeStatus::Left, at));
    }
    node.status = NodeStatus::Left;
    write(conn, &node)?;
    // Its credential goes with it: the agent must enroll again to come back.
    super::tokens::revoke_node(conn, node_id, ch)?;
    bump_desired_node(conn, index, node_id, ch)?;
    ch.nodes.insert(node_id);
    // A late once-job host that is gone no longer holds a `NewHostsAtOnce` place.
    super::late::admit(conn, index, at, ch)?;
    audit(
        conn,
        at,
        actor,
        "node.forget",
        &node.hostname,
        &node_id.to_string(),
    )?;
    Ok(Ok(CommandResult::NodeForgotten { node_id }))
}

/// The version a package report says failed to deploy, and why: a `failed` report, or a
/// `downloading` one that keeps the last error while the agent retries (a coalesced heartbeat may
/// carry either).
fn deploy_failure(p: &InstalledPackage) -> Option<(u64, &str)> {
    let error = p.error.as_deref();
    match p.state {
        PackageState::Failed => Some((
            p.target_version.unwrap_or(p.version),
            error.unwrap_or("deploy failed"),
        )),
        PackageState::Downloading => error.map(|e| (p.target_version.unwrap_or(p.version), e)),
        PackageState::Installed => None,
    }
}

/// The incident inputs of a heartbeat's package reports against the node's previous ones
/// (events `package.failed`): a version newly failing (or failing another way) is a
/// `PackageFailed`, a version newly installed a `PackageInstalled`. Reports that did not change
/// feed nothing, so a fleet's steady heartbeats cost no incident work.
fn package_inputs(
    node: &NodeInfo,
    reports: &[InstalledPackage],
    time: DateTime<Utc>,
    inputs: &mut Vec<Input>,
) {
    for p in reports {
        let before = node.packages.iter().find(|o| o.name == p.name);
        if let Some((version, reason)) = deploy_failure(p) {
            if before.and_then(deploy_failure) != Some((version, reason)) {
                inputs.push(Input::PackageFailed(PackageFailed {
                    time,
                    package: p.name.clone(),
                    version,
                    reason: reason.to_string(),
                    host: node.hostname.clone(),
                    labels: node.labels.clone(),
                }));
            }
        } else if p.state == PackageState::Installed
            && !before.is_some_and(|o| o.state == PackageState::Installed && o.version == p.version)
        {
            inputs.push(Input::PackageInstalled(PackageInstalled {
                package: p.name.clone(),
                version: p.version,
                host: node.hostname.clone(),
            }));
        }
    }
}

/// Manager-set labels: `set` merged in, `remove` taken out (each must be a manager label of the
/// node). The jobs of the old identity are remembered and the node's desired state bumped, so a
/// label changes which jobs the node runs at once, without its agent registering again.
#[allow(clippy::too_many_arguments)]
pub(super) fn set_labels(
    conn: &Connection,
    index: u64,
    node_id: Uuid,
    set: &std::collections::BTreeMap<String, String>,
    remove: &[String],
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let mut node = match live_node(conn, node_id, "; label it once its agent registers again")? {
        Ok(node) => node,
        Err(refused) => return Ok(Err(refused)),
    };
    if let Some(k) = remove
        .iter()
        .find(|k| !node.manager_labels.contains_key(*k))
    {
        return Ok(Err(Rejection::invalid(format!(
            "node {} has no manager-set label {k:?} (an agent's own labels change in its config)",
            node.hostname
        ))));
    }
    let old = node.identity();
    for k in remove {
        node.manager_labels.remove(k);
    }
    node.manager_labels
        .extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    let text: Vec<String> = set
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(remove.iter().map(|k| format!("{k}-")))
        .collect();
    if node.identity() != old {
        super::selections::remember_node(conn, node_id, &old)?;
    }
    write(conn, &node)?;
    bump_desired_node(conn, index, node_id, ch)?;
    ch.nodes.insert(node_id);
    super::late::join(conn, &node, at)?;
    super::late::admit(conn, index, at, ch)?;
    audit(
        conn,
        at,
        actor,
        "node.label",
        &node.hostname,
        &text.join(" "),
    )?;
    Ok(Ok(CommandResult::NodeLabelled {
        node: Box::new(node),
    }))
}

/// Drains (`Some`) or undrains (`None`) a node (issue 23): its agent is told with its next sync
/// answer and starts no new runs while drained. Draining a drained node keeps the first drain.
pub(super) fn set_drain(
    conn: &Connection,
    index: u64,
    node_id: Uuid,
    drain: Option<op_proto::holds::Drain>,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let mut node = match live_node(conn, node_id, "")? {
        Ok(node) => node,
        Err(refused) => return Ok(Err(refused)),
    };
    let action = if drain.is_some() {
        "node.drain"
    } else {
        "node.undrain"
    };
    if node.drain.is_some() != drain.is_some() {
        node.drain = drain;
        write(conn, &node)?;
        bump_desired_node(conn, index, node_id, ch)?;
        ch.nodes.insert(node_id);
        audit(conn, at, actor, action, &node.hostname, "")?;
    }
    Ok(Ok(CommandResult::NodeDrained {
        node: Box::new(node),
    }))
}

/// The incident input of `node` moving to `to` (events: `node.not_ready` / `node.ready`).
fn node_change(node: &NodeInfo, to: NodeStatus, time: DateTime<Utc>) -> Input {
    Input::NodeChange(NodeChange {
        time,
        host: node.hostname.clone(),
        labels: node.all_labels(),
        from: node.status,
        to,
    })
}

fn write(conn: &Connection, n: &NodeInfo) -> Result<()> {
    // Cached: a heartbeat flush writes every node in one command.
    conn.prepare_cached(
        "INSERT INTO nodes(node_id, hostname, ips, status, last_seen, info, outbox_depth,
                           dropped_runs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(node_id) DO UPDATE SET hostname = excluded.hostname, ips = excluded.ips,
           status = excluded.status, last_seen = excluded.last_seen, info = excluded.info,
           outbox_depth = excluded.outbox_depth, dropped_runs = excluded.dropped_runs",
    )?
    .execute(params![
        n.node_id.to_string(),
        n.hostname,
        ip_list(&n.ips),
        n.status.as_str(),
        ms(n.last_seen),
        to_json(n),
        i64::try_from(n.stats.outbox_depth).unwrap_or(i64::MAX),
        i64::try_from(n.stats.dropped_runs).unwrap_or(i64::MAX),
    ])?;
    Ok(())
}

/// The facts a node's agent reported. A change remembers the jobs of the old identity and bumps
/// the node's desired state, so a `fact.` selector changes which jobs the node runs at once; the
/// same facts again change nothing.
pub(super) fn set_facts(
    conn: &Connection,
    index: u64,
    node_id: Uuid,
    facts: &op_proto::facts::Facts,
    ch: &mut Changes,
) -> Outcome {
    let mut node = match live_node(conn, node_id, "; its agent must register again")? {
        Ok(node) => node,
        Err(refused) => return Ok(Err(refused)),
    };
    if node.facts.as_ref() == Some(facts) {
        return Ok(Ok(CommandResult::NodeFactsSet {
            node_id,
            changed: false,
        }));
    }
    super::selections::remember_node(conn, node_id, &node.identity())?;
    node.facts = Some(facts.clone());
    write(conn, &node)?;
    bump_desired_node(conn, index, node_id, ch)?;
    ch.nodes.insert(node_id);
    Ok(Ok(CommandResult::NodeFactsSet {
        node_id,
        changed: true,
    }))
}

/// The node `node_id`, refused when unknown or forgotten (`then` ends the refusal's sentence).
fn live_node(
    conn: &Connection,
    node_id: Uuid,
    then: &str,
) -> Result<std::result::Result<NodeInfo, Rejection>> {
    let Some(node) = read::nodes::by_id(conn, node_id)? else {
        return Ok(Err(Rejection::not_found(format!(
            "no node with id {node_id}"
        ))));
    };
    if node.status == NodeStatus::Left {
        return Ok(Err(Rejection::conflict(format!(
            "node {} ({node_id}) was forgotten{then}",
            node.hostname
        ))));
    }
    Ok(Ok(node))
}
