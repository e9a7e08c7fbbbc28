//! Incidents: the deterministic core that turns what the manager applies into [`Event`]s
//! (issue 19).
//!
//! The manager keeps one [`IncidentState`] inside its raft state machine and feeds it every
//! applied [`Input`]; [`IncidentState::apply`] returns the events that input produces. The same
//! inputs in the same order give the same events and the same state on every member: nothing here
//! reads a clock (time arrives inside the inputs), event ids come from a counter in the state, and
//! every collection iterates in a fixed order.
//!
//! - **Runs.** A job's results are collected per *fire* ([`FireKey`]: a cron fire, a once-job
//!   revision, an invocation). Only a run's last attempt counts: an attempt the agent will retry
//!   is noted, and its retry (trigger `retry`, which carries neither the fire's planned time nor
//!   its kind) is filed under the same fire. Nothing is emitted until the leader commits
//!   [`CloseFire`], when every selected host has reported or a window after the first result has
//!   passed ([`IncidentState::due_fires`]). Then the failures are grouped by failure signature
//!   (`analysis::signature`, DESIGN 13.2): a (job, signature) without an open incident opens one
//!   with a `run.failed` event naming the hosts; an open one grows silently; an incident whose
//!   hosts have all succeeded since (or are no longer selected by the job) closes with one
//!   `run.recovered`. A result that arrives after its fire closed starts a new group for the same
//!   fire, closed again by the leader.
//! - **Nodes and packages.** Status changes and package failures are batched until the leader
//!   commits [`Flush`] ([`IncidentState::flush_due`]): a rack of 20 nodes going NotReady together
//!   is one `node.not_ready`; hosts failing to deploy one version for one reason are one
//!   `package.failed`, and later hosts failing the same way join it silently.
//! - **Invocations.** [`InvocationFinished`] becomes one `invocation.finished` at once.
//! - **Forgotten nodes.** A [`NodeChange`] to `Left` takes the host out of every open incident
//!   and package group at once (an emptied one is dropped without an event), and out of the
//!   nodes announced down at the next flush: a node that left holds nothing open.
//!
//! [`EventLog`] keeps the derived events with bounded retention and answers `after(id)` for
//! `GET /v1/events?after=ID`.

mod fires;
mod missed;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::analysis::{Failure, thousands};
use crate::events::{Event, EventKind, LabelGroup, MAX_EVENT_HOSTS};
use crate::invoke::Summary;
use crate::node::NodeStatus;
use crate::run::{RunRecord, RunStatus, Trigger};

pub use fires::{FireChanges, FireResult};
pub use missed::FiresJudged;

use fires::{Fires, OpenFire};

/// How long the leader waits after a fire's first result before it closes the fire, and after a
/// first node or package change before it flushes the batch (both configurable in the manager).
pub const DEFAULT_WINDOW: Duration = Duration::seconds(10);

/// How many host names a summary line spells out before `and N more`.
const SUMMARY_HOSTS: usize = 3;

/// Labels of a host, as events carry them for rule filters.
pub type Labels = BTreeMap<String, String>;

/// One fire of a job: the unit whose results are grouped into events.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FireKey {
    /// A cron fire, by its planned time.
    Cron {
        job: String,
        planned_at: DateTime<Utc>,
    },
    /// A once-job's saved revision: each revision runs once on each host.
    Once { job: String, revision: u64 },
    /// A manager invocation (fan-out).
    Invocation { job: String, invocation_id: Uuid },
    /// A run that belongs to no fire the manager planned (invoked on one agent's API): it stands
    /// alone.
    Run { job: String, run_id: Uuid },
}

impl FireKey {
    pub fn job(&self) -> &str {
        match self {
            FireKey::Cron { job, .. }
            | FireKey::Once { job, .. }
            | FireKey::Invocation { job, .. }
            | FireKey::Run { job, .. } => job,
        }
    }

    /// Whether the fire's selection is the job's own (cron and once fires), so a host it no
    /// longer selects no longer keeps the job's incidents open. An invocation may target a few
    /// hosts on purpose: the hosts it leaves out say nothing.
    fn selects_for_job(&self) -> bool {
        matches!(self, FireKey::Cron { .. } | FireKey::Once { .. })
    }
}

/// How one host's attempt in a fire ended, as far as events care.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Failed in one way (`analysis::Failure`).
    Failed {
        kind: String,
        signature: String,
        error: String,
    },
    /// Failed, but the agent retries it: not counted until the last attempt.
    Retrying,
    /// Neither a success nor a failure (skipped, still running): counts for nothing.
    Other,
}

/// A run record as applied by the manager, reduced to what events need. Build it with
/// [`RunResult::of`], which judges the record with the shared analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    /// When the manager applied it (the time inside the raft command).
    pub time: DateTime<Utc>,
    pub job: String,
    pub host: String,
    #[serde(default)]
    pub labels: Labels,
    pub trigger: Trigger,
    /// The fire the record names itself; a retry's is resolved by the state.
    pub fire: FireKey,
    pub outcome: Outcome,
}

impl RunResult {
    /// Judges `run`. `retries` is the job's `Retries` and `revision` its current revision, as the
    /// state machine holds them when it applies the record (0 and 0 for a removed job): an attempt
    /// counts only if the agent will not retry it, by the agent's own rule (a failed or timed-out
    /// cron, once or retry run of the current revision with attempts left is retried).
    pub fn of(
        run: &RunRecord,
        retries: u32,
        revision: u64,
        labels: Labels,
        time: DateTime<Utc>,
    ) -> Self {
        let retried = matches!(run.trigger, Trigger::Cron | Trigger::Once | Trigger::Retry)
            && matches!(run.status, RunStatus::Failed | RunStatus::Timeout)
            && run.job_revision == revision
            && run.attempt < retries;
        let outcome = if retried {
            Outcome::Retrying
        } else if run.status == RunStatus::Ok {
            Outcome::Ok
        } else if run.status.is_failure() {
            let f = Failure::of(run);
            Outcome::Failed {
                kind: f.kind,
                signature: f.signature,
                error: f.error,
            }
        } else {
            Outcome::Other
        };
        let job = run.job.clone();
        let fire = match (run.invocation_id, run.trigger) {
            (Some(invocation_id), _) => FireKey::Invocation { job, invocation_id },
            (None, Trigger::Once) => FireKey::Once {
                job,
                revision: run.job_revision,
            },
            (None, Trigger::Cron) => match run.planned_at.or(run.started_at) {
                Some(planned_at) => FireKey::Cron { job, planned_at },
                None => FireKey::Run {
                    job,
                    run_id: run.run_id,
                },
            },
            (None, _) => FireKey::Run {
                job,
                run_id: run.run_id,
            },
        };
        RunResult {
            time,
            job: run.job.clone(),
            host: run.hostname.clone(),
            labels,
            trigger: run.trigger,
            fire,
            outcome,
        }
    }
}

/// The leader closes a fire: every selected host reported, or the window passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseFire {
    /// The leader's time when it decided, committed with the command.
    pub time: DateTime<Utc>,
    pub fire: FireKey,
    /// The host names the fire selected. Empty when unknown: the reporting hosts count as the
    /// selection, and no host counts as deselected.
    #[serde(default)]
    pub selected: Vec<String>,
}

/// A node's status changed, as the manager applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeChange {
    pub time: DateTime<Utc>,
    pub host: String,
    #[serde(default)]
    pub labels: Labels,
    pub from: NodeStatus,
    pub to: NodeStatus,
}

/// A host reports that it could not deploy a package version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageFailed {
    pub time: DateTime<Utc>,
    pub package: String,
    pub version: u64,
    pub reason: String,
    pub host: String,
    #[serde(default)]
    pub labels: Labels,
}

/// A host reports a package version installed: it leaves that version's failure groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageInstalled {
    pub package: String,
    pub version: u64,
    pub host: String,
}

/// A job was removed: its open fires, pending retries and incidents are dropped without events
/// (no run of it will ever close them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRemoved {
    pub job: String,
}

/// The leader flushes the node and package batches (the window after their first change passed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flush {
    pub time: DateTime<Utc>,
}

/// A host of an invocation that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRef {
    pub host: String,
    #[serde(default)]
    pub labels: Labels,
}

/// An invocation finished: every host has a final status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationFinished {
    pub time: DateTime<Utc>,
    pub summary: Summary,
    /// The hosts that did not succeed.
    #[serde(default)]
    pub failed: Vec<HostRef>,
}

/// Everything [`IncidentState::apply`] takes, one per applied raft command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    RunResult(RunResult),
    CloseFire(CloseFire),
    JobRemoved(JobRemoved),
    NodeChange(NodeChange),
    PackageFailed(PackageFailed),
    PackageInstalled(PackageInstalled),
    Flush(Flush),
    InvocationFinished(InvocationFinished),
    /// The leader judged job fires (issue 20): missed, late, skipped and overrunning runs.
    FiresJudged(FiresJudged),
    /// A rollout advanced, halted or finished (issue 21): one event at once.
    Rollout(RolloutChange),
}

/// A rollout's change, as its event tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutChange {
    pub time: DateTime<Utc>,
    /// `RolloutAdvanced`, `RolloutHalted` or `RolloutFinished`.
    pub kind: EventKind,
    pub rollout: uuid::Uuid,
    #[serde(default)]
    pub job: Option<String>,
    /// `name@version` for a package rollout.
    #[serde(default)]
    pub package: Option<String>,
    /// The hosts it concerns (the failed ones of a halt).
    #[serde(default)]
    pub hosts: Vec<String>,
    pub summary: String,
}

/// A host of an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IncidentHost {
    #[serde(default)]
    labels: Labels,
    /// Succeeded in a fire closed after it failed.
    #[serde(default)]
    recovered: bool,
}

/// An open `run.failed` incident: one job failing one way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Incident {
    job: String,
    signature: String,
    opened_at: DateTime<Utc>,
    selected_hosts: u64,
    hosts: BTreeMap<String, IncidentHost>,
}

/// An attempt the agent retries: its retry belongs to this fire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AwaitingRetry {
    job: String,
    host: String,
    fire: FireKey,
}

/// Hosts failing to deploy one package version for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PackageGroup {
    package: String,
    version: u64,
    reason: String,
    hosts: BTreeMap<String, Labels>,
    /// Its `package.failed` was emitted; later hosts join silently.
    notified: bool,
}

/// The id and time of the `node.not_ready` event that announced a node down.
type Announced = (u64, DateTime<Utc>);

/// A node's status across the current batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingNode {
    before: NodeStatus,
    now: NodeStatus,
    #[serde(default)]
    labels: Labels,
}

/// The replicated state that derives events. Keep it with the rest of the state machine (store
/// and snapshot): its serde form holds everything but the open fires, which a store keeps as
/// rows ([`FireChanges`], [`IncidentState::restore_fire`]). A new state gives its first event
/// id 1, so `after(0)` lists everything. Fields a stored state lacks decode as new
/// (DESIGN 13.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IncidentState {
    /// The id the next event gets.
    next_id: u64,
    /// Kept by the store as rows; a `fires` list in a state written before they were (schema
    /// 19 moves it into rows) is not read.
    #[serde(skip)]
    fires: Fires,
    /// Open incidents by the id of the event that opened them.
    incidents: BTreeMap<u64, Incident>,
    retries: Vec<AwaitingRetry>,
    nodes: BTreeMap<String, PendingNode>,
    /// Nodes announced NotReady: the id and time of the event that said so.
    down: BTreeMap<String, Announced>,
    packages: Vec<PackageGroup>,
    /// When the first change of the current node/package batch was applied.
    batch_since: Option<DateTime<Utc>>,
    /// Runs announced `run.overrunning`, so each is announced once (bounded).
    overruns: missed::Overruns,
    /// Nodes announced `node.clock_skew` whose clock is still off.
    skewed: missed::Skewed,
}

impl Default for IncidentState {
    fn default() -> Self {
        IncidentState::new(1)
    }
}

impl IncidentState {
    /// A state whose first event gets `first_id` (1 for a new cluster: [`Default`]).
    pub fn new(first_id: u64) -> Self {
        IncidentState {
            next_id: first_id,
            fires: Fires::default(),
            incidents: BTreeMap::new(),
            retries: Vec::new(),
            nodes: BTreeMap::new(),
            down: BTreeMap::new(),
            packages: Vec::new(),
            batch_since: None,
            overruns: missed::Overruns::new(),
            skewed: missed::Skewed::new(),
        }
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Applies one input; returns the events it produces, ids increasing.
    pub fn apply(&mut self, input: &Input) -> Vec<Event> {
        // Only a run result can leave everything but the fires as it was (`run_result` marks
        // the retries it changes).
        if !matches!(input, Input::RunResult(_)) {
            self.fires.changes.core = true;
        }
        match input {
            Input::RunResult(r) => {
                self.run_result(r);
                Vec::new()
            }
            Input::CloseFire(c) => self.close_fire(c),
            Input::JobRemoved(j) => {
                self.fires.remove_job(&j.job);
                self.retries.retain(|a| a.job != j.job);
                self.incidents.retain(|_, i| i.job != j.job);
                Vec::new()
            }
            Input::NodeChange(c) => {
                self.node_change(c);
                Vec::new()
            }
            Input::PackageFailed(p) => {
                self.package_failed(p);
                Vec::new()
            }
            Input::PackageInstalled(p) => {
                self.package_installed(p);
                Vec::new()
            }
            Input::Flush(f) => self.flush(f.time),
            Input::InvocationFinished(i) => vec![self.invocation_finished(i)],
            Input::FiresJudged(j) => self.fires_judged(j),
            Input::Rollout(r) => vec![self.rollout_change(r)],
        }
    }

    /// Fires the leader should close at `now` (its own clock: it only decides when to commit
    /// [`CloseFire`]): those whose first result is at least `window` old. The leader also closes a
    /// fire early once [`Self::reported`] reaches its selection.
    pub fn due_fires(&self, now: DateTime<Utc>, window: Duration) -> Vec<FireKey> {
        self.fires
            .iter()
            .filter(|f| f.first_result + window <= now)
            .map(|f| f.key.clone())
            .collect()
    }

    /// The fires being collected: key, first result's time and the hosts that reported.
    pub fn open_fires(&self) -> impl Iterator<Item = (&FireKey, DateTime<Utc>, usize)> {
        self.fires
            .iter()
            .map(|f| (&f.key, f.first_result, f.results.len()))
    }

    /// How many hosts have reported for `fire` so far.
    pub fn reported(&self, fire: &FireKey) -> usize {
        self.fires.get(fire).map_or(0, |f| f.results.len())
    }

    /// What changed since the last call (the store writes it with the batch that applied it).
    pub fn take_changes(&mut self) -> FireChanges {
        std::mem::take(&mut self.fires.changes)
    }

    /// The open fire at `row`: its key and first result's time.
    pub fn fire_at(&self, row: u64) -> Option<(&FireKey, DateTime<Utc>)> {
        self.fires.row(row).map(|f| (&f.key, f.first_result))
    }

    /// `host`'s result in the open fire at `row`.
    pub fn fire_result(&self, row: u64, host: &str) -> Option<&FireResult> {
        self.fires.row(row).and_then(|f| f.results.get(host))
    }

    /// Every result of the open fire at `row`.
    pub fn fire_results(&self, row: u64) -> impl Iterator<Item = (&String, &FireResult)> {
        self.fires
            .row(row)
            .into_iter()
            .flat_map(|f| f.results.iter())
    }

    /// Puts back a fire a store kept at `row` (loading: records no change).
    pub fn restore_fire(
        &mut self,
        row: u64,
        key: FireKey,
        first_result: DateTime<Utc>,
        results: BTreeMap<String, FireResult>,
    ) {
        self.fires.restore(
            row,
            OpenFire {
                key,
                first_result,
                results,
            },
        );
    }

    /// Whether the leader should commit [`Flush`] at `now`.
    pub fn flush_due(&self, now: DateTime<Utc>, window: Duration) -> bool {
        self.batch_since.is_some_and(|t| t + window <= now)
    }

    /// The number of open `run.failed` incidents.
    pub fn open_incidents(&self) -> usize {
        self.incidents.len()
    }

    /// Whether the `run.failed` incident opened by event `id` is still open.
    pub fn incident_open(&self, id: u64) -> bool {
        self.incidents.contains_key(&id)
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn run_result(&mut self, r: &RunResult) {
        let fire = if r.trigger == Trigger::Retry {
            match self
                .retries
                .iter()
                .find(|a| a.job == r.job && a.host == r.host)
            {
                Some(a) => a.fire.clone(),
                None => r.fire.clone(),
            }
        } else {
            r.fire.clone()
        };
        // A retry consumes the note; an attempt the agent retries again renews it. Other runs of
        // the job (an overlapping next fire) leave it alone.
        if r.trigger == Trigger::Retry || r.outcome == Outcome::Retrying {
            self.fires.changes.core = true;
            self.retries
                .retain(|a| !(a.job == r.job && a.host == r.host));
        }
        if r.outcome == Outcome::Retrying {
            self.retries.push(AwaitingRetry {
                job: r.job.clone(),
                host: r.host.clone(),
                fire: fire.clone(),
            });
        }
        self.fires.record(
            &fire,
            r.time,
            &r.host,
            (r.outcome.clone(), r.labels.clone()),
        );
    }

    fn close_fire(&mut self, c: &CloseFire) -> Vec<Event> {
        let Some(fire) = self.fires.remove(&c.fire) else {
            return Vec::new();
        };
        let job = fire.key.job().to_string();
        let selected: BTreeSet<&str> = c.selected.iter().map(String::as_str).collect();
        let selected_hosts = selected.len().max(fire.results.len()) as u64;

        // Signature → its failing hosts.
        let mut failures: BTreeMap<&str, Vec<(&String, &Labels)>> = BTreeMap::new();
        for (host, (outcome, labels)) in &fire.results {
            if let Outcome::Failed { signature, .. } = outcome {
                failures
                    .entry(signature.as_str())
                    .or_default()
                    .push((host, labels));
            }
        }

        // Hosts of the job's open incidents: a success clears them, a failure un-clears them.
        for incident in self.incidents.values_mut().filter(|i| i.job == job) {
            for (host, h) in incident.hosts.iter_mut() {
                match fire.results.get(host) {
                    Some((Outcome::Ok, _)) => h.recovered = true,
                    Some((Outcome::Failed { .. }, _)) => h.recovered = false,
                    _ => {}
                }
            }
        }

        let mut events = Vec::new();
        let mut failing: BTreeSet<&str> = BTreeSet::new();
        for (signature, hosts) in &failures {
            failing.insert(signature);
            let existing = self
                .incidents
                .values_mut()
                .find(|i| i.job == job && i.signature == *signature);
            if let Some(incident) = existing {
                for (host, labels) in hosts {
                    incident.hosts.insert(
                        (*host).clone(),
                        IncidentHost {
                            labels: (*labels).clone(),
                            recovered: false,
                        },
                    );
                }
                continue;
            }
            let id = self.take_id();
            let host_list: Vec<(&str, &Labels)> =
                hosts.iter().map(|(h, l)| (h.as_str(), *l)).collect();
            let mut event = base_event(id, EventKind::RunFailed, c.time, &host_list);
            event.job = Some(job.clone());
            event.selected_hosts = selected_hosts;
            event.summary = format!(
                "{job} failed on {}: {signature}",
                hosts_phrase(hosts.len() as u64, selected_hosts)
            );
            event.url = job_url(&job);
            event.incident = Some(id);
            event.signature = Some((*signature).to_string());
            events.push(event);
            self.incidents.insert(
                id,
                Incident {
                    job: job.clone(),
                    signature: (*signature).to_string(),
                    opened_at: c.time,
                    selected_hosts,
                    hosts: hosts
                        .iter()
                        .map(|(h, l)| {
                            (
                                (*h).clone(),
                                IncidentHost {
                                    labels: (*l).clone(),
                                    recovered: false,
                                },
                            )
                        })
                        .collect(),
                },
            );
        }

        // Incidents of the job that did not fail in this fire and whose hosts all recovered
        // (or, for the job's own fires, are no longer selected) close.
        let deselected = |host: &str| {
            fire.key.selects_for_job() && !selected.is_empty() && !selected.contains(host)
        };
        let closing: Vec<u64> = self
            .incidents
            .iter()
            .filter(|(_, i)| i.job == job && !failing.contains(i.signature.as_str()))
            .filter(|(_, i)| {
                i.hosts
                    .iter()
                    .all(|(host, h)| h.recovered || deselected(host))
            })
            .map(|(id, _)| *id)
            .collect();
        for incident_id in closing {
            let Some(incident) = self.incidents.remove(&incident_id) else {
                continue;
            };
            let id = self.take_id();
            let host_list: Vec<(&str, &Labels)> = incident
                .hosts
                .iter()
                .map(|(h, i)| (h.as_str(), &i.labels))
                .collect();
            let mut event = base_event(id, EventKind::RunRecovered, c.time, &host_list);
            event.job = Some(job.clone());
            event.selected_hosts = incident.selected_hosts.max(selected_hosts);
            event.summary = format!(
                "{job} recovered on {}: {}",
                hosts_phrase(host_list.len() as u64, 0),
                incident.signature
            );
            event.url = job_url(&job);
            event.incident = Some(incident_id);
            event.opened_at = Some(incident.opened_at);
            event.signature = Some(incident.signature);
            events.push(event);
        }
        events
    }

    fn start_batch(&mut self, time: DateTime<Utc>) {
        if self.batch_since.is_none() {
            self.batch_since = Some(time);
        }
    }

    fn node_change(&mut self, c: &NodeChange) {
        if c.to == NodeStatus::Left {
            self.forget_host(&c.host);
        }
        self.start_batch(c.time);
        let entry = self
            .nodes
            .entry(c.host.clone())
            .or_insert_with(|| PendingNode {
                before: c.from,
                now: c.to,
                labels: c.labels.clone(),
            });
        entry.now = c.to;
        entry.labels = c.labels.clone();
    }

    /// A node left the fleet (forgotten, or replaced after an identity reset): it no longer
    /// holds a `run.failed` incident open nor counts in a package failure group. An incident or
    /// group left without hosts is dropped without an event (nothing recovered); one whose other
    /// hosts have all recovered closes at the job's next closed fire.
    fn forget_host(&mut self, host: &str) {
        for incident in self.incidents.values_mut() {
            incident.hosts.remove(host);
        }
        self.incidents.retain(|_, i| !i.hosts.is_empty());
        for g in &mut self.packages {
            g.hosts.remove(host);
        }
        self.packages.retain(|g| !g.hosts.is_empty());
    }

    fn package_failed(&mut self, p: &PackageFailed) {
        // A host fails one version one way at a time: it leaves the version's other groups.
        for g in self
            .packages
            .iter_mut()
            .filter(|g| g.package == p.package && g.version == p.version && g.reason != p.reason)
        {
            g.hosts.remove(&p.host);
        }
        self.packages.retain(|g| !g.hosts.is_empty());
        let pos =
            match self.packages.iter().position(|g| {
                g.package == p.package && g.version == p.version && g.reason == p.reason
            }) {
                Some(pos) => pos,
                None => {
                    self.packages.push(PackageGroup {
                        package: p.package.clone(),
                        version: p.version,
                        reason: p.reason.clone(),
                        hosts: BTreeMap::new(),
                        notified: false,
                    });
                    self.start_batch(p.time);
                    self.packages.len() - 1
                }
            };
        self.packages[pos]
            .hosts
            .insert(p.host.clone(), p.labels.clone());
    }

    fn package_installed(&mut self, p: &PackageInstalled) {
        for g in self
            .packages
            .iter_mut()
            .filter(|g| g.package == p.package && g.version == p.version)
        {
            g.hosts.remove(&p.host);
        }
        self.packages.retain(|g| !g.hosts.is_empty());
    }

    fn flush(&mut self, time: DateTime<Utc>) -> Vec<Event> {
        let mut events = Vec::new();
        let nodes = std::mem::take(&mut self.nodes);
        let not_ready: Vec<(&str, &Labels)> = nodes
            .iter()
            .filter(|(_, n)| n.now == NodeStatus::NotReady && n.before.is_live())
            .map(|(h, n)| (h.as_str(), &n.labels))
            .collect();
        if !not_ready.is_empty() {
            let id = self.take_id();
            let mut event = base_event(id, EventKind::NodeNotReady, time, &not_ready);
            event.summary = nodes_summary(&not_ready, "stopped reporting");
            event.url = "/ui/nodes?status=NotReady".into();
            event.incident = Some(id);
            for (host, _) in &not_ready {
                self.down.insert(host.to_string(), (id, time));
            }
            events.push(event);
        }
        // Nodes back are grouped by the event that said they were down, so each recovery
        // resolves the alert it answers (a rack back together is one event).
        let mut ready: BTreeMap<Option<Announced>, Vec<(&str, &Labels)>> = BTreeMap::new();
        for (host, n) in &nodes {
            if n.now.is_live() && n.before == NodeStatus::NotReady {
                ready
                    .entry(self.down.remove(host))
                    .or_default()
                    .push((host.as_str(), &n.labels));
            } else if n.now == NodeStatus::Left {
                self.down.remove(host);
            }
        }
        for (down, hosts) in ready {
            let id = self.take_id();
            let mut event = base_event(id, EventKind::NodeReady, time, &hosts);
            event.summary = nodes_summary(&hosts, "report again");
            event.url = "/ui/nodes?status=Ready".into();
            if let Some((incident, opened_at)) = down {
                event.incident = Some(incident);
                event.opened_at = Some(opened_at);
            }
            events.push(event);
        }
        for i in 0..self.packages.len() {
            if self.packages[i].notified {
                continue;
            }
            let id = self.take_id();
            let g = &mut self.packages[i];
            g.notified = true;
            let hosts: Vec<(&str, &Labels)> =
                g.hosts.iter().map(|(h, l)| (h.as_str(), l)).collect();
            let mut event = base_event(id, EventKind::PackageFailed, time, &hosts);
            event.package = Some(format!("{}@{}", g.package, g.version));
            event.summary = format!(
                "{}@{} failed to deploy on {}: {}",
                g.package,
                g.version,
                hosts_phrase(hosts.len() as u64, 0),
                g.reason
            );
            event.url = format!("/ui/packages/{}", url_segment(&g.package));
            event.signature = Some(g.reason.clone());
            // An agent release that failed is also `agent.upgrade_failed` (issue 22).
            if crate::agent_upgrade::is_reserved(&event_package(&event)) {
                let mut upgrade = event.clone();
                upgrade.id = self.take_id();
                upgrade.kind = EventKind::AgentUpgradeFailed;
                upgrade.summary = format!("agent upgrade {}", upgrade.summary);
                events.push(event);
                events.push(upgrade);
                continue;
            }
            events.push(event);
        }
        self.batch_since = None;
        events
    }

    fn invocation_finished(&mut self, i: &InvocationFinished) -> Event {
        let id = self.take_id();
        let s = &i.summary;
        let hosts: Vec<(&str, &Labels)> = i
            .failed
            .iter()
            .map(|h| (h.host.as_str(), &h.labels))
            .collect();
        let mut event = base_event(id, EventKind::InvocationFinished, i.time, &hosts);
        event.job = Some(s.job.clone());
        event.selected_hosts = u64::from(s.total);
        let counts = [
            ("ok", s.ok),
            ("failed", s.failed),
            ("timeout", s.timeout),
            ("killed", s.killed),
            ("skipped", s.skipped),
            ("lost", s.lost),
            ("unreachable", s.unreachable),
            ("cancelled", s.cancelled),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(w, n)| format!("{} {w}", thousands(*n as usize)))
        .collect::<Vec<_>>()
        .join(", ");
        event.summary = format!(
            "{} finished on {}: {}",
            s.job,
            hosts_phrase(u64::from(s.total), 0),
            if counts.is_empty() {
                "no results"
            } else {
                &counts
            }
        );
        event.url = format!("/ui/invocations/{}", s.invocation_id);
        event
    }
}

/// An event with the host fields filled from `hosts` (sorted, capped at [`MAX_EVENT_HOSTS`]).
impl IncidentState {
    fn rollout_change(&mut self, r: &RolloutChange) -> Event {
        let id = self.take_id();
        let none = Labels::default();
        let hosts: Vec<(&str, &Labels)> = r.hosts.iter().map(|h| (h.as_str(), &none)).collect();
        let mut event = base_event(id, r.kind.clone(), r.time, &hosts);
        event.job = r.job.clone();
        event.package = r.package.clone();
        event.summary = r.summary.clone();
        event.url = format!("/ui/rollouts/{}", r.rollout);
        event
    }
}

fn base_event(id: u64, kind: EventKind, time: DateTime<Utc>, hosts: &[(&str, &Labels)]) -> Event {
    let mut names: Vec<&str> = hosts.iter().map(|(h, _)| *h).collect();
    names.sort_unstable();
    let mut groups: BTreeMap<&Labels, u64> = BTreeMap::new();
    for (_, labels) in hosts {
        *groups.entry(labels).or_default() += 1;
    }
    Event {
        id,
        kind,
        time,
        job: None,
        package: None,
        hosts: names
            .iter()
            .take(MAX_EVENT_HOSTS)
            .map(|h| h.to_string())
            .collect(),
        host_count: hosts.len() as u64,
        selected_hosts: 0,
        host_labels: groups
            .into_iter()
            .map(|(labels, hosts)| LabelGroup {
                labels: labels.clone(),
                hosts,
            })
            .collect(),
        summary: String::new(),
        url: String::new(),
        incident: None,
        opened_at: None,
        signature: None,
    }
}

/// `20 nodes stopped reporting: a, b, c and 17 more`.
fn nodes_summary(hosts: &[(&str, &Labels)], verb: &str) -> String {
    let n = hosts.len();
    format!(
        "{} {} {verb}: {}",
        thousands(n),
        if n == 1 { "node" } else { "nodes" },
        name_list(hosts.iter().map(|(h, _)| *h), n)
    )
}

/// `3 hosts`, `1 host`, `3 of 10 hosts`.
fn hosts_phrase(count: u64, selected: u64) -> String {
    let noun = if count == 1 && selected <= 1 {
        "host"
    } else {
        "hosts"
    };
    if selected > count {
        format!(
            "{} of {} {noun}",
            thousands(count as usize),
            thousands(selected as usize)
        )
    } else {
        format!("{} {noun}", thousands(count as usize))
    }
}

/// `a, b, c and 17 more`.
fn name_list<'a>(names: impl Iterator<Item = &'a str>, total: usize) -> String {
    let mut shown: Vec<&str> = names.collect();
    shown.sort_unstable();
    shown.truncate(SUMMARY_HOSTS);
    let mut text = shown.join(", ");
    if total > shown.len() {
        text.push_str(&format!(" and {} more", thousands(total - shown.len())));
    }
    text
}

fn job_url(job: &str) -> String {
    format!("/ui/jobs/{}", url_segment(job))
}

/// Percent-encodes what a path segment cannot hold as is (names are mostly `[A-Za-z0-9._-]`).
fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Derived events with bounded retention: at most `max_events`, none older than `max_age`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLog {
    pub max_events: usize,
    /// Seconds; 0 keeps events regardless of age.
    pub max_age_secs: u64,
    events: VecDeque<Event>,
}

impl EventLog {
    pub fn new(max_events: usize, max_age_secs: u64) -> Self {
        EventLog {
            max_events,
            max_age_secs,
            events: VecDeque::new(),
        }
    }

    /// Appends `events` (ids increasing, as [`IncidentState::apply`] gives them) and drops the
    /// oldest beyond the bounds. `now` is the applied input's time, never a member's clock.
    pub fn push(&mut self, events: impl IntoIterator<Item = Event>, now: DateTime<Utc>) {
        self.events.extend(events);
        while self.events.len() > self.max_events {
            self.events.pop_front();
        }
        if self.max_age_secs > 0 {
            let age = i64::try_from(self.max_age_secs).unwrap_or(i64::MAX);
            let cutoff = now - Duration::try_seconds(age).unwrap_or(Duration::MAX);
            while self.events.front().is_some_and(|e| e.time < cutoff) {
                self.events.pop_front();
            }
        }
    }

    /// Events with an id greater than `id`, oldest first (`GET /v1/events?after=ID`; 0 gives
    /// every kept event).
    pub fn after(&self, id: u64) -> impl Iterator<Item = &Event> {
        let start = self.events.partition_point(|e| e.id <= id);
        self.events.range(start..)
    }

    /// The oldest kept id: a client resuming from before it missed events.
    pub fn first_id(&self) -> Option<u64> {
        self.events.front().map(|e| e.id)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// The package name of a `package.failed` event (`name@version`).
fn event_package(event: &Event) -> String {
    event
        .package
        .as_deref()
        .and_then(|p| p.rsplit_once('@'))
        .map(|(n, _)| n.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    /// A run record as an agent sends it: `output` is the merged tail whose last line is the
    /// signature.
    fn record(
        host: &str,
        planned: i64,
        trigger: Trigger,
        attempt: u32,
        out: Option<&str>,
    ) -> RunRecord {
        RunRecord {
            run_id: Uuid::from_u128(
                u128::from(attempt) << 64 | planned as u128 | (host.len() as u128) << 32,
            ),
            job: "backup.sh".into(),
            job_revision: 4,
            node_id: Uuid::nil(),
            hostname: host.into(),
            ips: vec![],
            trigger,
            attempt,
            invocation_id: None,
            params: BTreeMap::new(),
            command: "backup.sh".into(),
            planned_at: Some(t(planned)),
            started_at: Some(t(planned)),
            ended_at: Some(t(planned + 1)),
            status: if out.is_some() {
                RunStatus::Failed
            } else {
                RunStatus::Ok
            },
            exit_code: Some(if out.is_some() { 3 } else { 0 }),
            signal: None,
            error: out.map(|_| "exit status 3".to_string()),
            output: out.map(|o| format!("starting\n{o}\n")).unwrap_or_default(),
            output_truncated: false,
            output_bytes: 0,
            stderr_tail: String::new(),
            rusage: None,
            notes: vec![],
        }
    }

    fn labels(role: &str) -> Labels {
        [("role".to_string(), role.to_string())].into()
    }

    fn result(run: &RunRecord, retries: u32) -> Input {
        Input::RunResult(RunResult::of(
            run,
            retries,
            4,
            labels("db"),
            run.ended_at.unwrap(),
        ))
    }

    fn cron(planned: i64) -> FireKey {
        FireKey::Cron {
            job: "backup.sh".into(),
            planned_at: t(planned),
        }
    }

    fn close(planned: i64, hosts: &[&str]) -> Input {
        Input::CloseFire(CloseFire {
            time: t(planned + 10),
            fire: cron(planned),
            selected: hosts.iter().map(|h| h.to_string()).collect(),
        })
    }

    const HOSTS: [&str; 3] = ["db-1", "db-2", "db-3"];

    /// Applies `inputs` to `state`, collecting every event.
    fn run(state: &mut IncidentState, inputs: &[Input]) -> Vec<Event> {
        inputs.iter().flat_map(|i| state.apply(i)).collect()
    }

    /// One fire of backup.sh at `planned` with `out[i]` the failure of host i (None: success).
    fn fire(planned: i64, hosts: &[&str], out: &[Option<&str>]) -> Vec<Input> {
        let mut inputs: Vec<Input> = hosts
            .iter()
            .zip(out)
            .map(|(h, o)| result(&record(h, planned, Trigger::Cron, 0, *o), 0))
            .collect();
        inputs.push(close(planned, hosts));
        inputs
    }

    const BOOM: Option<&str> = Some("boom: no such table");

    #[test]
    fn three_hosts_failing_one_way_make_one_event_and_the_fix_one_recovery() {
        let mut s = IncidentState::new(1);
        // Nothing is emitted before the fire closes.
        let before = run(&mut s, &fire(0, &HOSTS, &[BOOM; 3])[..3]);
        assert!(before.is_empty());
        assert_eq!(s.reported(&cron(0)), 3);
        let events = s.apply(&close(0, &HOSTS));
        assert_eq!(events.len(), 1, "{events:#?}");
        let e = &events[0];
        assert_eq!(e.kind, EventKind::RunFailed);
        assert_eq!((e.id, e.incident), (1, Some(1)));
        assert_eq!(e.hosts, ["db-1", "db-2", "db-3"]);
        assert_eq!((e.host_count, e.selected_hosts), (3, 3));
        assert_eq!(e.job.as_deref(), Some("backup.sh"));
        assert_eq!(e.signature.as_deref(), Some("boom: no such table"));
        assert_eq!(
            e.summary,
            "backup.sh failed on 3 hosts: boom: no such table"
        );
        assert_eq!(e.url, "/ui/jobs/backup.sh");
        assert_eq!(e.time, t(10));
        assert_eq!(
            e.host_labels,
            vec![LabelGroup {
                labels: labels("db"),
                hosts: 3
            }]
        );
        assert_eq!(s.open_incidents(), 1);

        // The fix: the next fire succeeds everywhere.
        let events = run(&mut s, &fire(60, &HOSTS, &[None; 3]));
        assert_eq!(events.len(), 1, "{events:#?}");
        let r = &events[0];
        assert_eq!(r.kind, EventKind::RunRecovered);
        assert_eq!((r.id, r.incident, r.opened_at), (2, Some(1), Some(t(10))));
        assert_eq!(r.hosts, e.hosts);
        assert_eq!(
            r.summary,
            "backup.sh recovered on 3 hosts: boom: no such table"
        );
        assert_eq!(s.open_incidents(), 0);
        // And a further good fire says nothing.
        assert!(run(&mut s, &fire(120, &HOSTS, &[None; 3])).is_empty());
    }

    #[test]
    fn two_errors_in_one_fire_make_two_incidents() {
        let mut s = IncidentState::new(1);
        let events = run(
            &mut s,
            &fire(0, &HOSTS, &[BOOM, Some("disk full"), Some("disk full")]),
        );
        assert_eq!(events.len(), 2, "{events:#?}");
        assert!(events.iter().all(|e| e.kind == EventKind::RunFailed));
        let by_sig: BTreeMap<_, _> = events
            .iter()
            .map(|e| (e.signature.clone().unwrap(), e.hosts.clone()))
            .collect();
        assert_eq!(by_sig["boom: no such table"], ["db-1"]);
        assert_eq!(by_sig["disk full"], ["db-2", "db-3"]);
        assert_eq!(
            events[0].summary,
            "backup.sh failed on 1 of 3 hosts: boom: no such table"
        );
        assert_eq!(s.open_incidents(), 2);
    }

    #[test]
    fn a_failed_attempt_that_succeeds_on_retry_opens_nothing() {
        let mut s = IncidentState::new(1);
        // db-1 fails its first attempt (Retries 2), the others succeed; the fire closes before
        // the retry arrives.
        let mut inputs = vec![
            result(&record("db-1", 0, Trigger::Cron, 0, BOOM), 2),
            result(&record("db-2", 0, Trigger::Cron, 0, None), 2),
            result(&record("db-3", 0, Trigger::Cron, 0, None), 2),
            close(0, &HOSTS),
        ];
        // The retry carries its own planned time and trigger `retry`, then succeeds.
        inputs.push(result(&record("db-1", 30, Trigger::Retry, 1, None), 2));
        inputs.push(Input::CloseFire(CloseFire {
            time: t(45),
            fire: cron(0),
            selected: HOSTS.iter().map(|h| h.to_string()).collect(),
        }));
        assert!(run(&mut s, &inputs).is_empty());
        assert_eq!(s.open_incidents(), 0);

        // Whereas failing every attempt counts once, at the last one, under the original fire.
        assert!(
            run(
                &mut s,
                &[
                    result(&record("db-1", 100, Trigger::Cron, 0, BOOM), 2),
                    result(&record("db-1", 130, Trigger::Retry, 1, BOOM), 2),
                ]
            )
            .is_empty()
        );
        // The retry joined the cron fire it retries, although its planned time is its own.
        assert_eq!(
            s.open_fires()
                .map(|(k, _, n)| (k.clone(), n))
                .collect::<Vec<_>>(),
            [(cron(100), 1)]
        );
        assert!(
            s.apply(&result(&record("db-1", 160, Trigger::Retry, 2, BOOM), 2))
                .is_empty()
        );
        assert_eq!(s.due_fires(t(109), DEFAULT_WINDOW), Vec::<FireKey>::new());
        assert_eq!(s.due_fires(t(111), DEFAULT_WINDOW), vec![cron(100)]);
        let events = s.apply(&close(100, &["db-1"]));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].hosts, ["db-1"]);
    }

    #[test]
    fn an_open_incident_grows_silently_and_recovers_once_every_host_did() {
        let mut s = IncidentState::new(1);
        let first = run(&mut s, &fire(0, &HOSTS, &[BOOM, None, None]));
        assert_eq!(first.len(), 1);
        // The same failure on more hosts later: no new event.
        assert!(run(&mut s, &fire(60, &HOSTS, &[BOOM, BOOM, BOOM])).is_empty());
        assert_eq!(s.open_incidents(), 1);
        // Two hosts fixed, one not: still open.
        assert!(run(&mut s, &fire(120, &HOSTS, &[None, None, BOOM])).is_empty());
        // The last one fixed: one recovery naming the 3 hosts the incident grew to.
        let events = run(&mut s, &fire(180, &HOSTS, &[None, None, None]));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::RunRecovered);
        assert_eq!(events[0].hosts, HOSTS);
        assert_eq!(events[0].incident, Some(first[0].id));
    }

    #[test]
    fn a_removed_job_leaves_no_incident_behind() {
        let mut s = IncidentState::new(1);
        run(&mut s, &fire(0, &HOSTS, &[BOOM, None, None]));
        s.apply(&result(&record("db-1", 60, Trigger::Cron, 0, BOOM), 0));
        assert_eq!((s.open_incidents(), s.open_fires().count()), (1, 1));
        let removed = Input::JobRemoved(JobRemoved {
            job: "backup.sh".into(),
        });
        assert!(s.apply(&removed).is_empty());
        assert_eq!((s.open_incidents(), s.open_fires().count()), (0, 0));
    }

    #[test]
    fn hosts_the_job_no_longer_selects_do_not_keep_an_incident_open() {
        let mut s = IncidentState::new(1);
        run(&mut s, &fire(0, &HOSTS, &[BOOM, None, None]));
        // db-1 left the selection; the others succeed.
        let events = run(&mut s, &fire(60, &["db-2", "db-3"], &[None, None]));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::RunRecovered);
    }

    #[test]
    fn many_hosts_are_capped_with_their_count() {
        let mut s = IncidentState::new(1);
        let hosts: Vec<String> = (0..250).map(|i| format!("h{i:04}")).collect();
        let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let events = run(&mut s, &fire(0, &names, &vec![BOOM; 250]));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].hosts.len(), MAX_EVENT_HOSTS);
        assert_eq!(events[0].host_count, 250);
        assert_eq!(events[0].total_hosts(), 250);
    }

    #[test]
    fn twenty_nodes_going_not_ready_in_one_window_are_one_event() {
        let mut s = IncidentState::new(1);
        for i in 0..20 {
            s.apply(&Input::NodeChange(NodeChange {
                time: t(i / 4),
                host: format!("rack1-{i:02}"),
                labels: labels("web"),
                from: NodeStatus::Ready,
                to: NodeStatus::NotReady,
            }));
        }
        // A node that flapped back within the window is no change.
        for (from, to) in [
            (NodeStatus::Ready, NodeStatus::NotReady),
            (NodeStatus::NotReady, NodeStatus::Ready),
        ] {
            s.apply(&Input::NodeChange(NodeChange {
                time: t(5),
                host: "flappy".into(),
                labels: Labels::new(),
                from,
                to,
            }));
        }
        assert!(!s.flush_due(t(9), DEFAULT_WINDOW));
        assert!(s.flush_due(t(10), DEFAULT_WINDOW));
        let events = s.apply(&Input::Flush(Flush { time: t(10) }));
        assert_eq!(events.len(), 1, "{events:#?}");
        let e = &events[0];
        assert_eq!(e.kind, EventKind::NodeNotReady);
        assert_eq!(e.host_count, 20);
        assert_eq!(e.hosts.first().map(String::as_str), Some("rack1-00"));
        assert_eq!(
            e.summary,
            "20 nodes stopped reporting: rack1-00, rack1-01, rack1-02 and 17 more"
        );
        assert_eq!(e.url, "/ui/nodes?status=NotReady");
        assert!(!s.flush_due(t(100), DEFAULT_WINDOW));
        // They come back together: one node.ready.
        for i in 0..20 {
            s.apply(&Input::NodeChange(NodeChange {
                time: t(60),
                host: format!("rack1-{i:02}"),
                labels: labels("web"),
                from: NodeStatus::NotReady,
                to: NodeStatus::Ready,
            }));
        }
        let events = s.apply(&Input::Flush(Flush { time: t(70) }));
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].kind.clone(), events[0].host_count),
            (EventKind::NodeReady, 20)
        );
        // It answers the not_ready event, so Alertmanager shows that alert resolved.
        assert_eq!(events[0].incident, Some(e.id));
        assert_eq!(events[0].opened_at, Some(t(10)));
    }

    #[test]
    fn package_failures_group_by_version_and_reason() {
        let mut s = IncidentState::new(1);
        let fail = |host: &str, reason: &str, time: i64| {
            Input::PackageFailed(PackageFailed {
                time: t(time),
                package: "tools".into(),
                version: 7,
                reason: reason.into(),
                host: host.into(),
                labels: Labels::new(),
            })
        };
        let events = run(
            &mut s,
            &[
                fail("a", "checksum mismatch", 0),
                fail("b", "checksum mismatch", 1),
                fail("c", "disk full", 2),
                fail("a", "checksum mismatch", 3),
                Input::Flush(Flush { time: t(10) }),
            ],
        );
        assert_eq!(events.len(), 2, "{events:#?}");
        assert_eq!(events[0].package.as_deref(), Some("tools@7"));
        assert_eq!(events[0].hosts, ["a", "b"]);
        assert_eq!(
            events[0].summary,
            "tools@7 failed to deploy on 2 hosts: checksum mismatch"
        );
        assert_eq!(events[0].url, "/ui/packages/tools");
        // Another host failing the same way later, and repeated reports, say nothing more.
        assert!(
            run(
                &mut s,
                &[
                    fail("d", "checksum mismatch", 20),
                    fail("a", "checksum mismatch", 21)
                ]
            )
            .is_empty()
        );
        assert!(s.apply(&Input::Flush(Flush { time: t(40) })).is_empty());
        // Once every host installed it, a new failure is news again.
        for h in ["a", "b", "c", "d"] {
            s.apply(&Input::PackageInstalled(PackageInstalled {
                package: "tools".into(),
                version: 7,
                host: h.into(),
            }));
        }
        let events = run(
            &mut s,
            &[
                fail("a", "checksum mismatch", 50),
                Input::Flush(Flush { time: t(60) }),
            ],
        );
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn an_invocation_finishes_with_its_counts() {
        let mut s = IncidentState::new(5);
        let id = Uuid::from_u128(9);
        let e = s.apply(&Input::InvocationFinished(InvocationFinished {
            time: t(3),
            summary: Summary {
                invocation_id: id,
                job: "deploy".into(),
                total: 10,
                ok: 8,
                failed: 2,
                ..Default::default()
            },
            failed: vec![
                HostRef {
                    host: "b".into(),
                    labels: labels("web"),
                },
                HostRef {
                    host: "a".into(),
                    labels: labels("web"),
                },
            ],
        }));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].id, 5);
        assert_eq!(e[0].kind, EventKind::InvocationFinished);
        assert_eq!(e[0].summary, "deploy finished on 10 hosts: 8 ok, 2 failed");
        assert_eq!(e[0].hosts, ["a", "b"]);
        assert_eq!(e[0].selected_hosts, 10);
        assert_eq!(e[0].url, format!("/ui/invocations/{id}"));
        assert_eq!(s.next_id(), 6);
    }

    /// A mixed sequence, as a raft log would carry it.
    fn script() -> Vec<Input> {
        let mut inputs = Vec::new();
        inputs.extend(fire(0, &HOSTS, &[BOOM, Some("disk full"), None]));
        inputs.push(result(&record("db-3", 60, Trigger::Cron, 0, BOOM), 1));
        inputs.push(Input::NodeChange(NodeChange {
            time: t(61),
            host: "db-9".into(),
            labels: labels("db"),
            from: NodeStatus::Ready,
            to: NodeStatus::NotReady,
        }));
        inputs.extend(fire(60, &HOSTS, &[None, None, BOOM]));
        inputs.push(Input::Flush(Flush { time: t(75) }));
        inputs.extend(fire(120, &HOSTS, &[None, None, None]));
        inputs
    }

    #[test]
    fn the_same_inputs_give_the_same_events_and_state_on_every_member() {
        let mut a = IncidentState::default();
        let mut b = IncidentState::new(1);
        assert_eq!(a, b);
        let ea = run(&mut a, &script());
        let eb = run(&mut b, &script());
        assert!(ea.len() >= 4, "{ea:#?}");
        assert_eq!(ea, eb);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        let ids: Vec<u64> = ea.iter().map(|e| e.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[test]
    fn the_state_survives_a_snapshot_mid_sequence() {
        let inputs = script();
        let split = inputs.len() / 2;
        let mut whole = IncidentState::new(1);
        let all = run(&mut whole, &inputs);
        let mut first = IncidentState::new(1);
        let mut events = run(&mut first, &inputs[..split]);
        // As a store keeps it: the serde form, and the open fires as rows.
        let json = serde_json::to_string(&first).unwrap();
        let mut restored: IncidentState = serde_json::from_str(&json).unwrap();
        assert_eq!(
            restored.open_fires().count(),
            0,
            "fires are not in the serde form"
        );
        for (row, f) in first.fires.iter().enumerate() {
            restored.restore_fire(row as u64, f.key.clone(), f.first_result, f.results.clone());
        }
        assert!(
            first.fires.iter().next().is_some(),
            "a fire is open mid-sequence"
        );
        assert_eq!(restored, first);
        events.extend(run(&mut restored, &inputs[split..]));
        assert_eq!(events, all);
        assert_eq!(restored, whole);
        // Inputs travel in raft commands too.
        for i in &inputs {
            let back: Input = serde_json::from_str(&serde_json::to_string(i).unwrap()).unwrap();
            assert_eq!(&back, i);
        }
    }

    #[test]
    fn the_log_keeps_the_newest_and_resumes_after_an_id() {
        let mut s = IncidentState::new(1);
        let mut log = EventLog::new(3, 3600);
        for k in 0..5 {
            let events = run(
                &mut s,
                &fire(k * 60, &HOSTS, &[if k % 2 == 0 { BOOM } else { None }; 3]),
            );
            log.push(events, t(k * 60 + 10));
        }
        // 5 fires alternate failing and recovering: ids 1..=5, the newest 3 kept.
        assert_eq!(log.len(), 3);
        assert_eq!(log.first_id(), Some(3));
        let ids = |log: &EventLog, after| log.after(after).map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(&log, 0), [3, 4, 5]);
        assert_eq!(ids(&log, 3), [4, 5]);
        assert_eq!(ids(&log, 5), Vec::<u64>::new());
        // Age: an hour later only what is younger than an hour stays.
        log.push(Vec::new(), t(250 + 3600));
        assert_eq!(ids(&log, 0), [5]);
        let back: EventLog = serde_json::from_str(&serde_json::to_string(&log).unwrap()).unwrap();
        assert_eq!(back, log);
    }
}
