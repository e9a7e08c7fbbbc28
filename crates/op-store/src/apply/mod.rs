//! `apply`: the one place where state changes. Dispatches each command to its topic module and
//! runs it inside a savepoint, so a command that is refused leaves no trace while the rest of the
//! batch (and the raft metadata) still commits.
//!
//! Determinism rule: nothing here reads the clock, generates ids or depends on the machine. All
//! such values arrive inside the command.

pub(crate) mod agent_upgrade;
pub(crate) mod events;
mod holds;
mod invocations;
mod jobs;
pub(crate) mod judged;
mod late;
mod nodes;
mod notify;
mod packages;
mod prune;
mod rollouts;
mod runs;
mod secrets;
mod selections;
mod tokens;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use uuid::Uuid;

use crate::codec::ms;
use crate::command::{Command, CommandResult, Rejection};
use crate::error::Result;
use crate::{META_CLUSTER_ID, META_DESIRED_INDEX, read, set_meta};
use op_proto::api::Scope;
use op_proto::incidents::Input;

/// One raft log entry to apply: its index and its command (none for blank and membership entries).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub index: u64,
    pub command: Option<&'a Command>,
}

/// What a batch changed, so the caller can wake exactly the waiters that care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Jobs changed: any node's desired state may differ.
    pub desired_all: bool,
    /// Nodes whose own desired state changed (registration, once-job targets, forget).
    pub desired_nodes: BTreeSet<Uuid>,
    /// Nodes whose record changed status or identity.
    pub nodes: BTreeSet<Uuid>,
    /// Tokens were created or revoked.
    pub tokens: bool,
    /// Run records stored by this batch, and their bytes.
    pub runs_stored: u64,
    pub run_bytes: u64,
    /// Duplicate run records ignored by this batch.
    pub runs_duplicate: u64,
    /// Run records deleted because their (job, node) pair holds the newest count without them.
    pub runs_trimmed: u64,
    /// A package version was deleted: its blob may now be unreferenced.
    pub blobs_released: bool,
    /// Invocations whose progress or results changed (created, advanced, a host's result).
    pub invocations: BTreeSet<Uuid>,
    /// Nodes a directive of which ended (its run arrived, or its deadline passed). Their desired
    /// state lost that directive, but nothing they must act on changed, so they need not be woken.
    pub directives_ended: BTreeSet<Uuid>,
    /// A package version was added: every manager must hold its blob.
    pub blobs_added: bool,
    /// Events appended by this batch (followers of `GET /v1/events` wake up).
    pub events: u64,
    /// What the command just dispatched feeds the incident state; taken by `apply_one`.
    pub(crate) inputs: Vec<Input>,
}

impl Changes {
    fn merge(&mut self, other: Changes) {
        self.desired_all |= other.desired_all;
        self.desired_nodes.extend(other.desired_nodes);
        self.nodes.extend(other.nodes);
        self.tokens |= other.tokens;
        self.runs_stored += other.runs_stored;
        self.run_bytes += other.run_bytes;
        self.runs_duplicate += other.runs_duplicate;
        self.runs_trimmed += other.runs_trimmed;
        self.blobs_released |= other.blobs_released;
        self.invocations.extend(other.invocations);
        self.directives_ended.extend(other.directives_ended);
        self.blobs_added |= other.blobs_added;
        self.events += other.events;
    }

    /// True when some node's desired state may have changed.
    pub fn desired(&self) -> bool {
        self.desired_all || !self.desired_nodes.is_empty()
    }
}

/// The outcome of one command: a result, or a deterministic refusal.
type Outcome = Result<std::result::Result<CommandResult, Rejection>>;

pub(crate) fn apply_one(
    conn: &Connection,
    entry: &Entry<'_>,
    changes: &mut Changes,
    incidents: &mut events::Incidents,
) -> Result<CommandResult> {
    let Some(command) = entry.command else {
        return Ok(CommandResult::Done);
    };
    conn.execute_batch("SAVEPOINT cmd")?;
    let mut local = Changes::default();
    match dispatch(conn, entry.index, command, &mut local)? {
        Ok(result) => {
            rollouts::after(conn, command)?;
            conn.execute_batch("RELEASE cmd")?;
            let inputs = std::mem::take(&mut local.inputs);
            incidents.feed(conn, inputs, &mut local)?;
            changes.merge(local);
            Ok(result)
        }
        Err(rejection) => {
            conn.execute_batch("ROLLBACK TO cmd; RELEASE cmd")?;
            Ok(CommandResult::Rejected { rejection })
        }
    }
}

pub(super) fn dispatch(
    conn: &Connection,
    index: u64,
    command: &Command,
    ch: &mut Changes,
) -> Outcome {
    match command {
        Command::InitCluster { cluster_id, .. } => init_cluster(conn, cluster_id),
        Command::SaveJob { spec, at, actor } => jobs::save(conn, index, spec, *at, actor, ch),
        Command::DeleteJob { name, at, actor } => jobs::delete(conn, index, name, *at, actor, ch),
        Command::SetJobEnabled {
            name,
            enabled,
            at,
            actor,
        } => jobs::set_enabled(conn, index, name, *enabled, *at, actor, ch),
        Command::RegisterNode {
            registration,
            at,
            actor,
            enroll,
        } => {
            if let Some(token) = enroll {
                if token.node_id != Some(registration.node_id) || token.scope != Scope::Agent {
                    return Ok(Err(Rejection::invalid(
                        "an enrollment credential must be an agent token of the registering node",
                    )));
                }
                if tokens::node_has_live_token(conn, registration.node_id, *at)? {
                    return Ok(Err(Rejection::forbidden(format!(
                        "node {} is already enrolled and must present its own credential \
                         (the agent keeps it in its state dir as node.token); to enroll it \
                         again, forget it first: agentcli forget {}",
                        registration.node_id, registration.node_id
                    ))));
                }
                if let Err(r) = tokens::create(conn, token, *at, actor, ch)? {
                    return Ok(Err(r));
                }
            }
            nodes::register(conn, index, registration, *at, actor, ch)
        }
        Command::Heartbeats { beats } => nodes::heartbeats(conn, index, beats, ch),
        Command::SetNodeStatus { changes, at } => nodes::set_status(conn, changes, *at, ch),
        Command::ForgetNode { node_id, at, actor } => {
            nodes::forget(conn, index, *node_id, *at, actor, ch)
        }
        Command::SetNodeLabels {
            node_id,
            set,
            remove,
            at,
            actor,
        } => nodes::set_labels(conn, index, *node_id, set, remove, *at, actor, ch),
        Command::SetNodeFacts { node_id, facts, .. } => {
            nodes::set_facts(conn, index, *node_id, facts, ch)
        }
        Command::IngestRuns { node_id, at, runs } => {
            runs::ingest(conn, index, *node_id, *at, runs, ch)
        }
        Command::IngestRunBatches { at, batches } => {
            let trimmed_before = ch.runs_trimmed;
            let mut acks = Vec::with_capacity(batches.len());
            for b in batches {
                match runs::ingest(conn, index, b.node_id, *at, &b.runs, ch)? {
                    Ok(CommandResult::RunsIngested { ack }) => acks.push(ack),
                    // `ingest` refuses nothing; a batch that did would leave no trace.
                    _ => acks.push(op_proto::agent::RunBatchAck::default()),
                }
            }
            Ok(Ok(CommandResult::RunBatchesIngested {
                acks,
                trimmed: ch.runs_trimmed - trimmed_before,
            }))
        }
        Command::Prune { now, limits } => prune::prune(conn, *now, limits),
        Command::CreateToken { token, at, actor } => tokens::create(conn, token, *at, actor, ch),
        Command::RevokeToken { id, at, actor } => tokens::revoke(conn, id, *at, actor, ch),
        Command::AddPackageVersion {
            name,
            sha256,
            size,
            deploy_dir,
            at,
            actor,
            target,
        } => packages::add(
            conn,
            index,
            name,
            sha256,
            *size,
            deploy_dir.as_deref(),
            *at,
            actor,
            ch,
            target,
        ),
        Command::RollbackPackage {
            name,
            version,
            at,
            actor,
        } => packages::rollback(conn, index, name, *version, *at, actor, ch),
        Command::DeletePackageVersion {
            name,
            version,
            at,
            actor,
        } => packages::delete(conn, name, *version, *at, actor, ch),
        Command::CreateInvocation {
            invocation,
            at,
            actor,
        } => invocations::create(conn, index, invocation, *at, actor, ch),
        Command::AdvanceInvocation {
            id,
            at,
            release,
            expire,
            stop,
            finish,
        } => invocations::advance(
            conn,
            index,
            *id,
            *at,
            release,
            expire,
            stop.as_deref(),
            *finish,
            ch,
        ),
        Command::CancelInvocation { id, at, actor } => {
            invocations::cancel(conn, index, *id, *at, actor, ch)
        }
        // Written by releases up to 0.1.0, before output requests left raft (they live in the
        // memory of the member the node syncs with now): an old log still applies, to nothing.
        Command::RequestOutput { .. } => Ok(Ok(CommandResult::Done)),
        Command::AcknowledgeDirectives { acks, .. } => invocations::acknowledge(conn, acks),
        Command::PutNotifyRule { rule, at, actor } => notify::put(conn, rule, *at, actor),
        Command::RemoveNotifyRule { name, at, actor } => notify::remove(conn, name, *at, actor),
        Command::CloseFires { at, fires } => events::close_fires(*at, fires, ch),
        Command::FlushEvents { at } => events::flush(*at, ch),
        Command::NotifyDelivered { rule, event_id, at } => {
            notify::delivered(conn, rule, *event_id, *at)
        }
        Command::NotifyFailed {
            rule,
            event_id,
            failures,
            error,
            at,
        } => notify::failed(conn, rule, *event_id, *failures, error, *at),
        Command::JudgeFires {
            at,
            fires,
            overrunning,
            skewed,
        } => judged::judge(conn, *at, fires, overrunning, skewed, ch),
        Command::SetSecret {
            name,
            sealed,
            at,
            actor,
        } => secrets::set(conn, index, name, sealed, *at, actor, ch),
        Command::RemoveSecret { name, at, actor } => {
            secrets::remove(conn, index, name, *at, actor, ch)
        }
        Command::RekeySecrets {
            sealed,
            at,
            actor,
            replaces,
        } => secrets::rekey(conn, sealed, replaces, *at, actor),
        Command::Pause { pause } => holds::pause(conn, index, pause, ch),
        Command::Resume { scope, at, actor } => holds::resume(conn, index, scope, *at, actor, ch),
        Command::SetWindow { window } => holds::set_window(conn, index, window, ch),
        Command::RemoveWindow { name, at, actor } => {
            holds::remove_window(conn, index, name, *at, actor, ch)
        }
        Command::SetNodeDrain {
            node_id,
            drain,
            at,
            actor,
        } => nodes::set_drain(conn, index, *node_id, drain.clone(), *at, actor, ch),
        Command::StartRollout { rollout, change } => {
            rollouts::start(conn, index, rollout, change, ch)
        }
        Command::AdvanceRollout { id, from_stage, at } => {
            rollouts::advance(conn, index, *id, *from_stage, *at, ch)
        }
        Command::HaltRollout {
            id,
            reason,
            failed_hosts,
            at,
        } => rollouts::halt(conn, index, *id, reason, failed_hosts, *at, ch),
        Command::RolloutAction {
            id,
            action,
            at,
            actor,
        } => rollouts::action(conn, index, *id, *action, *at, actor, ch),
        Command::SetAgentRelease {
            sha256,
            release,
            at,
            actor,
        } => agent_upgrade::set_release(conn, sha256, release, *at, actor),
        Command::SetAgentPin {
            target,
            version,
            at,
            actor,
        } => agent_upgrade::set_pin(conn, index, target, version.as_deref(), *at, actor, ch),
        Command::SetPackageRollout {
            name,
            plan,
            at,
            actor,
        } => rollouts::set_package_default(conn, name, plan.as_ref(), *at, actor),
    }
}

fn init_cluster(conn: &Connection, cluster_id: &str) -> Outcome {
    let existing = read::meta(conn, META_CLUSTER_ID)?;
    let id = match existing {
        Some(id) => id,
        None => {
            set_meta(conn, META_CLUSTER_ID, cluster_id)?;
            cluster_id.to_string()
        }
    };
    Ok(Ok(CommandResult::ClusterInitialized { cluster_id: id }))
}

/// Records who changed what. Every operator-visible mutation calls this.
pub(crate) fn audit(
    conn: &Connection,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO audit(at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![ms(at), actor, action, target, detail],
    )?;
    Ok(())
}

/// Every node's desired state changed at log index `index`.
fn bump_desired_all(conn: &Connection, index: u64, ch: &mut Changes) -> Result<()> {
    set_meta(conn, META_DESIRED_INDEX, &index.to_string())?;
    ch.desired_all = true;
    Ok(())
}

/// One node's desired state changed at log index `index`.
fn bump_desired_node(conn: &Connection, index: u64, node: Uuid, ch: &mut Changes) -> Result<()> {
    conn.execute(
        "UPDATE nodes SET desired_index = ?1 WHERE node_id = ?2",
        rusqlite::params![index as i64, node.to_string()],
    )?;
    ch.desired_nodes.insert(node);
    Ok(())
}
