//! The agent protocol (agent tokens only): register, the long-polling sync that is also the
//! heartbeat, and run batch ingestion.
//!
//! Sync: the response is the node's FULL desired state, so a reconnect can never miss an update.
//! It returns at once when the node's index differs from the one the agent passed, else parks on
//! the hub's watch channel until the node's index moves or the wait ends. The wait is capped at
//! half of `node_timeout`, because a parked agent sends no other heartbeat. An output request for
//! the node (`crate::output`, never replicated) also ends the wait: an agent that passes
//! `partial=1` then gets the request alone (`DesiredState::directives_only`), an older agent the
//! full state with the request among its directives.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::{Extension, Json};
use chrono::Utc;
use op_proto::agent::{
    DesiredState, Directive, Heartbeat, MAX_SYNC_WAIT_SECS, RefusedRun, RegisterRequest,
    RegisterResponse, RunBatch, RunBatchAck,
};
use op_proto::job::validate_name;
use op_proto::{API_VERSION, NodeStatus};
use op_store::{Command, CommandResult, NodeBeat, NodeRegistration};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use crate::app::App;
use crate::auth::Caller;
use crate::hub::{NodeDesired, NodeState};

const MAX_IPS: usize = 64;
/// Most capabilities a registration may list.
const MAX_CAPABILITIES: usize = 32;
pub(super) const MAX_LABELS: usize = 64;
const MAX_TEXT: usize = 253;

pub(super) fn check_text(field: &str, value: &str, allow_empty: bool) -> Result<(), ApiError> {
    if (!allow_empty && value.trim().is_empty())
        || value.len() > MAX_TEXT
        || value.chars().any(char::is_control)
    {
        return Err(ApiError::bad(
            "invalid_registration",
            format!("{field} must be 1..={MAX_TEXT} printable characters"),
        ));
    }
    Ok(())
}

pub async fn register(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    if req.api_version != API_VERSION {
        return Err(ApiError::ApiVersion {
            client: req.api_version.to_string(),
        });
    }
    if req.node_id.is_nil() {
        return Err(ApiError::bad(
            "invalid_registration",
            "node_id must not be the nil UUID",
        ));
    }
    check_text("hostname", &req.hostname, false)?;
    if req.hostname.contains(char::is_whitespace) {
        return Err(ApiError::bad(
            "invalid_registration",
            "hostname must not contain spaces",
        ));
    }
    check_text("agent_version", &req.agent_version, false)?;
    check_text("os", &req.os, true)?;
    check_text("arch", &req.arch, true)?;
    if req.ips.len() > MAX_IPS || req.labels.len() > MAX_LABELS {
        return Err(ApiError::bad(
            "invalid_registration",
            format!("at most {MAX_IPS} IPs and {MAX_LABELS} labels"),
        ));
    }
    for (k, v) in &req.labels {
        check_text("label key", k, false)?;
        check_text("label value", v, true)?;
    }
    let node_id = req.node_id;
    // The node's own credential re-registers; the shared enrollment token enrolls the node and
    // gets its credential back, once (a node that holds one is refused by `apply`).
    let (enroll, node_token) = match caller.node_id {
        Some(_) => {
            caller.speaks_for(node_id)?;
            (None, None)
        }
        None => {
            let mut generated = crate::auth::generate(
                &format!("node-{node_id}"),
                op_proto::api::Scope::Agent,
                None,
            );
            generated.token.node_id = Some(node_id);
            (Some(generated.token), Some(generated.secret))
        }
    };
    if !req.machine_id.is_empty() {
        check_text("machine_id", &req.machine_id, false)?;
    }
    if req.capabilities.len() > MAX_CAPABILITIES {
        return Err(ApiError::bad(
            "invalid_registration",
            format!("at most {MAX_CAPABILITIES} capabilities"),
        ));
    }
    for c in &req.capabilities {
        check_text("capability", c, false)?;
    }
    let hostname = req.hostname.clone();
    let written = app
        .write(Command::RegisterNode {
            enroll,
            registration: Box::new(NodeRegistration {
                node_id,
                hostname: req.hostname,
                ips: req.ips,
                labels: req.labels,
                agent_version: req.agent_version,
                os: req.os,
                arch: req.arch,
                machine_id: req.machine_id,
                reset: req.reset,
                capabilities: req.capabilities,
            }),
            at: Utc::now(),
            actor: caller.name,
        })
        .await?;
    let (once_history, replaced, facts_hash) = match written {
        CommandResult::NodeRegistered {
            once_history,
            replaced,
            node,
            ..
        } => (
            once_history,
            replaced,
            node.facts.as_ref().map(|f| f.hash()).unwrap_or_default(),
        ),
        _ => (Vec::new(), Vec::new(), String::new()),
    };
    for old in &replaced {
        tracing::info!(%node_id, replaced = %old, %hostname, "identity reset: the new node replaces the old one");
    }
    Ok(Json(RegisterResponse {
        node_id,
        managers: app.managers(),
        settings: app.agent_settings(),
        node_token,
        once_history,
        replaced,
        facts_hash: Some(facts_hash),
    }))
}

#[derive(Debug, Deserialize)]
pub struct SyncParams {
    #[serde(default)]
    index: u64,
    /// Seconds (`30`) or a duration (`30s`).
    wait: Option<String>,
    /// The agent takes a light answer (`DesiredState::directives_only`) for output requests.
    #[serde(default)]
    partial: Option<String>,
}

fn wait_of(app: &App, raw: Option<&str>) -> Result<Duration, ApiError> {
    let wanted = match raw.map(str::trim) {
        None | Some("") => app.config.sync_wait,
        Some(t) => op_proto::units::parse_duration(t).map_err(|_| {
            ApiError::bad(
                "invalid_query",
                format!("wait={t:?}: expected seconds, e.g. wait=30"),
            )
        })?,
    };
    Ok(wanted
        .min(Duration::from_secs(MAX_SYNC_WAIT_SECS))
        .min(app.config.node_timeout / 2))
}

fn desired(
    app: &App,
    answer: NodeDesired,
    uploads: Vec<Directive>,
    received_at: chrono::DateTime<Utc>,
    secrets: op_proto::secret::SecretValues,
    holds: &crate::hub::FleetHolds,
    agent_release: Option<op_proto::agent_upgrade::AgentRelease>,
) -> DesiredState {
    let mut directives = answer.directives;
    directives.extend(uploads);
    DesiredState {
        index: answer.state.index,
        jobs: answer.jobs,
        packages: answer.packages,
        directives,
        managers: app.managers(),
        settings: Some(app.agent_settings()),
        received_at: Some(received_at),
        beat_sent_at: None,
        directives_only: false,
        secrets,
        labels: Some(answer.labels),
        holds: Some(op_proto::holds::Holds {
            pauses: holds.pauses.clone(),
            windows: holds.windows.clone(),
            draining: answer.draining,
        }),
        facts_hash: Some(answer.facts_hash),
        agent_release,
    }
}

/// The light answer: only output requests, for an agent that asked for light answers.
fn uploads_only(
    index: u64,
    uploads: Vec<Directive>,
    received_at: chrono::DateTime<Utc>,
) -> DesiredState {
    DesiredState {
        index,
        jobs: Vec::new(),
        packages: Vec::new(),
        directives: uploads,
        managers: Vec::new(),
        settings: None,
        received_at: Some(received_at),
        beat_sent_at: None,
        directives_only: true,
        secrets: Default::default(),
        labels: None,
        holds: None,
        facts_hash: None,
        agent_release: None,
    }
}

/// A node the manager serves: known and not forgotten.
pub(super) fn live(state: Option<NodeState>) -> Option<NodeState> {
    state.filter(|s| s.status != NodeStatus::Left)
}

/// What wakes a node's sync call or watch: a change for every node (a job saved), a change of
/// this node alone, an output request for it. Made before the node's state is read, so a change
/// in between still wakes it; [`NodeWakes::next`] keeps its futures in itself, so a `select!`
/// that takes another branch loses no wake.
pub(super) struct NodeWakes<'a> {
    changes: tokio::sync::watch::Receiver<u64>,
    waker: Arc<tokio::sync::Notify>,
    mine: std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>,
    /// Output requests for the node come to this member while it is attached (`crate::output`).
    attached: crate::output::Attached<'a>,
    uploads: std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>,
}

/// Why a node's wait woke.
pub(super) enum Wake {
    /// Its desired state may have changed: read it again.
    Changed,
    /// An output request may be waiting for it.
    Uploads,
    /// The hub is gone (the manager stops).
    Closed,
}

impl<'a> NodeWakes<'a> {
    pub(super) fn listen(app: &'a App, node: uuid::Uuid) -> NodeWakes<'a> {
        let mut changes = app.hub.subscribe();
        changes.borrow_and_update();
        let waker = app.hub.waker(node);
        let mut mine = Box::pin(waker.clone().notified_owned());
        mine.as_mut().enable();
        let attached = app.outputs.attach(node);
        let mut uploads = Box::pin(attached.wake.clone().notified_owned());
        uploads.as_mut().enable();
        NodeWakes {
            changes,
            waker,
            mine,
            attached,
            uploads,
        }
    }

    /// The next wake. Cancel-safe.
    pub(super) async fn next(&mut self) -> Wake {
        let wake = tokio::select! {
            r = self.changes.changed() => if r.is_err() { Wake::Closed } else { Wake::Changed },
            _ = self.mine.as_mut() => {
                self.mine.set(self.waker.clone().notified_owned());
                Wake::Changed
            }
            _ = self.uploads.as_mut() => {
                self.uploads.set(self.attached.wake.clone().notified_owned());
                Wake::Uploads
            }
        };
        self.mine.as_mut().enable();
        self.uploads.as_mut().enable();
        wake
    }
}

/// Decrements the parked-sync gauge however the wait ends.
struct Parked<'a>(&'a App);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.metrics.syncs_parked.dec();
    }
}

pub async fn sync(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<SyncParams>,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> Result<Json<DesiredState>, ApiError> {
    caller.speaks_for(hb.node_id)?;
    let _slot = app
        .auth
        .syncs
        .take(&caller.token_id)
        .ok_or_else(too_many_syncs)?;
    let received_at = Utc::now();
    let wait = wait_of(&app, q.wait.as_deref())?;
    let node = hb.node_id;
    // Listen before reading the state, so a change between the two still wakes us.
    let mut wakes = NodeWakes::listen(&app, node);
    let state = take_beat(&app, hb, received_at).await?;
    let mut index_moved = state.index != q.index;
    if !index_moved && !wait.is_zero() && !app.outputs.has_pending(node) {
        let deadline = tokio::time::Instant::now() + wait;
        app.metrics.syncs_parked.inc();
        let _parked = Parked(&app);
        loop {
            tokio::select! {
                wake = wakes.next() => match wake {
                    Wake::Closed => break,
                    Wake::Uploads if app.outputs.has_pending(node) => break,
                    Wake::Uploads => continue,
                    Wake::Changed => {}
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = app.shutdown.cancelled() => break,
            }
            match live(app.hub.node(&app.store, node).await?) {
                Some(s) if s.index == q.index => {}
                _ => {
                    index_moved = true;
                    break;
                }
            }
        }
    }
    let light = !index_moved && q.partial.as_deref() == Some("1");
    Ok(Json(answer(&app, node, light, q.index, received_at).await?))
}

pub(super) fn too_many_syncs() -> ApiError {
    ApiError::bad(
        "too_many_syncs",
        format!(
            "this credential already holds {} sync calls; a node needs one at a time",
            crate::auth::MAX_SYNCS_PER_TOKEN
        ),
    )
}

/// Takes in a heartbeat, from a sync call or a watch alike, and returns the node's state as read
/// after it: the caller has subscribed to the node's changes before, so none is missed between.
/// The caller has checked that its credential speaks for `hb.node_id`.
pub(super) async fn take_beat(
    app: &App,
    mut hb: Heartbeat,
    received_at: chrono::DateTime<Utc>,
) -> Result<NodeState, ApiError> {
    let node = hb.node_id;
    // The agent's clock minus ours; the request's travel time makes it a little small.
    let clock_skew_ms = hb
        .sent_at
        .map(|sent| (sent - received_at).num_milliseconds());
    let received = std::mem::take(&mut hb.received);
    app.peer_dir.record(node, hb.peer_url.as_deref());
    app.peer_dir.record_installed(node, &hb.packages);
    let facts = hb.facts.take();
    if let Some(f) = &facts {
        f.check().map_err(|m| ApiError::bad("invalid_facts", m))?;
    }
    let beat = NodeBeat {
        node_id: node,
        seen_at: Utc::now(),
        agent_version: hb.agent_version,
        load: hb.load,
        running: hb.running,
        packages: hb.packages,
        stats: hb.stats,
        degraded: hb.degraded,
        clock_skew_ms,
    };
    let Some(state) = live(app.hub.node(&app.store, node).await?) else {
        return Err(ApiError::UnknownNode(node));
    };
    // The directives of the last answer reached the agent (`crate::acks`).
    app.acks.offer(node, received);
    // Facts come only when they changed (their hash differs from the one this node's last answer
    // carried): written at once, since they change which jobs `fact.` selectors give the node.
    // The write bumps the node's desired state, so the answer below carries the new selection.
    let wrote = facts.is_some() || state.status != NodeStatus::of_beat(beat.degraded.as_deref());
    if let Some(facts) = facts {
        Box::pin(app.write(Command::SetNodeFacts {
            node_id: node,
            facts: Box::new(facts),
            at: Utc::now(),
        }))
        .await?;
    }
    // A beat that keeps the node's status (Ready, or Degraded for a fault it still reports) waits
    // for the coalesced flush; one that changes it is written now.
    if state.status == NodeStatus::of_beat(beat.degraded.as_deref()) {
        app.beats.record(beat);
    } else {
        // A status change is written at once, not with the next coalesced flush. Boxed: the
        // write's future is most of this handler's size otherwise, and every parked sync would
        // carry it (about 2.4 KB each, 24 MB at 10,000 agents).
        if let CommandResult::HeartbeatsRecorded { unknown, .. } =
            Box::pin(app.write(Command::Heartbeats { beats: vec![beat] })).await?
            && unknown.contains(&node)
        {
            return Err(ApiError::UnknownNode(node));
        }
    }
    if !wrote {
        return Ok(state);
    }
    // Read again: a facts or status write above moved the node's index.
    live(app.hub.node(&app.store, node).await?).ok_or(ApiError::UnknownNode(node))
}

/// The answer to a node: its full desired state, or with `light` and an output request waiting,
/// the request alone (the agent already holds the state of `index`).
pub(super) async fn answer(
    app: &App,
    node: uuid::Uuid,
    light: bool,
    index: u64,
    received_at: chrono::DateTime<Utc>,
) -> Result<DesiredState, ApiError> {
    // An agent that takes light answers gets a waiting output request alone, without the
    // desired state it already holds (a following reader asks twice a second).
    if light && app.outputs.has_pending(node) {
        let uploads = app.outputs.take(node);
        return Ok(uploads_only(index, uploads, received_at));
    }
    match app.hub.desired(&app.store, node).await? {
        Some(mut answer) if live(Some(answer.state)).is_some() => {
            // The agent release (issue 22): its declared version, or a pinned host's version.
            let agent_release =
                super::agent_upgrade::for_node(app, node, &answer.labels, &mut answer.packages)
                    .await?;
            // The values of the secrets this node's own jobs name, for this node alone (the
            // caller is the node's own credential, checked by the caller).
            let secrets = super::secrets::resolve(app, &answer.jobs, &answer.directives).await?;
            // The pauses and windows in force, and whether this node drains (issue 23).
            let holds = app.hub.holds(&app.store).await?;
            // Taken after the last await: a call dropped before answering takes nothing.
            let uploads = app.outputs.take(node);
            Ok(desired(
                app,
                answer,
                uploads,
                received_at,
                secrets,
                &holds,
                agent_release,
            ))
        }
        _ => Err(ApiError::UnknownNode(node)),
    }
}

/// Stores a node's finished runs. A record that can never be stored (it names another node, a
/// malformed job name, a job never selected for this node) is refused alone, named in the
/// acknowledgement: failing the whole batch would make the agent send it again forever and hold
/// back the valid records behind it.
pub async fn runs(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(mut batch): ApiJson<RunBatch>,
) -> Result<Json<RunBatchAck>, ApiError> {
    caller.speaks_for(batch.node_id)?;
    if batch.runs.len() > app.config.run_batch_max {
        return Err(ApiError::bad(
            "batch_too_large",
            format!(
                "{} runs in one batch; at most {} are accepted",
                batch.runs.len(),
                app.config.run_batch_max
            ),
        ));
    }
    let mut refused = Vec::new();
    batch.runs.retain(|run| match validate_name(&run.job) {
        Ok(()) => true,
        Err(e) => {
            refused.push(RefusedRun {
                run_id: run.run_id,
                reason: format!("job name {:?} {e}", run.job),
            });
            false
        }
    });
    let mut ack = if batch.runs.is_empty() {
        RunBatchAck::default()
    } else {
        // Written together with the batches of other agents that arrive meanwhile (`ingest`);
        // `apply` refuses the runs of jobs this node was never given.
        app.ingest.submit(batch).await?
    };
    ack.refused.extend(refused);
    if let Some(first) = ack.refused.first() {
        tracing::warn!(node_id = %caller.node_id.unwrap_or_default(), refused = ack.refused.len(), first_run = %first.run_id, reason = %first.reason, "run records refused");
    }
    Ok(Json(ack))
}
