//! The scheduler: decides when each job runs.
//!
//! One task owns the plan (every active job's next fire, pending retries, pending once-jobs) and
//! sleeps with one timer until the earliest of them: no polling, no CPU while idle. It wakes for
//! that timer, for a new desired job set, or for a finished run (retries, deferred once-jobs).
//!
//! Rules it keeps:
//! - cron fires come from `Schedule::next_after` in the job's zone; fires missed (agent down, or
//!   woken too late) are not caught up but counted as lost fires;
//! - a fire while the job's previous run lives follows `Concurrency`: `forbid` skips and counts
//!   (the first skip per blocking run is also recorded as a `skipped` run), `allow` starts
//!   beside it, `replace` kills the old run and starts the new one only after it ended;
//! - `Jitter` delays each fire by a random `[0, Jitter]` seconds; failed or timed-out scheduled
//!   runs are retried `Retries` times after `RetryDelay` (trigger `retry`);
//! - an edited job keeps its current run; the next fire uses the new revision;
//! - a disabled, removed or no-longer-selected job has its running processes killed (`killed`);
//! - a once-job runs once per (job, revision): the ledger is checked here and written by the
//!   executor with the in-flight record, before the process starts. A once-job whose start was
//!   refused (the state dir took no write: no in-flight record, no ledger row) waits until the
//!   state dir takes writes again ([`crate::health`]) and then starts, without a restart;
//! - every turn of the loop is reported to [`crate::health`] with the earliest work due, so a
//!   loop that stops turning is reported with the heartbeat.
//!
//! Time comes from the [`Clock`] the scheduler is given: the system's in production, a manual one
//! in tests, which step it and then wait for [`Scheduler::turned`] instead of sleeping.
//!
//! Explicit invocations do not pass through here: API calls are requests, not fires, and are not
//! subject to the concurrency policy; the manager's directives apply it themselves
//! (`directives`).

pub mod plan;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use op_proto::agent::DesiredJob;
use op_proto::{Concurrency, HostIdentity, JobSpec, RunRecord, RunStatus, Schedule, Trigger};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::Clock;
use crate::executor::{Executor, RunRequest};
use crate::health::Health;
use crate::jobs::{JobEntry, JobTable};
use crate::metrics::Metrics;
use crate::state::StateStore;

/// Most `missed` run records written for one job's fires missed while the agent was down (all
/// of them are counted): the newest ones, so a 1 Hz job down for a day neither floods the outbox
/// nor pushes the job's real runs out of the local history (`history_keep_runs`, 100).
const MAX_MISSED_RECORDS: usize = 20;
/// The reason a fire missed while the agent was down starts with (its `error`).
pub const MISSED_WHILE_DOWN: &str = "agent down";

/// Longest single sleep: a guard against wall-clock jumps, not a poll (one wakeup a minute).
const MAX_SLEEP: chrono::Duration = chrono::Duration::seconds(60);
/// Cron runs are handed to the executor this long before their fire time: the durable in-flight
/// record (an fsync) and the preparation happen early, and the process starts on time.
const LEAD_MS: i64 = 50;

enum Msg {
    /// A new job set, and who to tell once it is applied.
    SetJobs(Vec<DesiredJob>, Option<tokio::sync::oneshot::Sender<()>>),
    /// The labels the manager selects this host by (the agent's own merged with manager-set).
    SetLabels(std::collections::BTreeMap<String, String>),
    /// The pauses and windows in force and whether this node drains (issue 23).
    SetHolds(op_proto::holds::Holds),
    /// This host's facts, probed again after a change.
    SetFacts(op_proto::facts::Facts),
    /// True while a package deploy is in progress (see [`Scheduler::hold_once_jobs_while`]).
    Gate(tokio::sync::watch::Receiver<bool>),
    /// Once-job revisions already in the ledger (written there by someone else), and who to
    /// tell once the scheduler knows them.
    Ran(Vec<(String, u64)>, tokio::sync::oneshot::Sender<()>),
    /// Who to tell at the end of the turn that handles this message.
    Turned(tokio::sync::oneshot::Sender<()>),
}

/// Longest a once-job waits for package deploys to settle.
const MAX_DEPLOY_HOLD: chrono::Duration = chrono::Duration::seconds(600);

/// Handle to the scheduler task.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Scheduler {
    /// Once-jobs wait while `deploying` is true (at most [`MAX_DEPLOY_HOLD`]): the seed's flow
    /// uploads a package and then saves a once-job that runs it, and both reach the agent in
    /// the same moment; the job must find the new version in place.
    pub fn hold_once_jobs_while(&self, deploying: tokio::sync::watch::Receiver<bool>) {
        let _ = self.tx.send(Msg::Gate(deploying));
    }

    /// Replaces the whole job set (standalone files or the manager's desired state).
    pub fn set_jobs(&self, jobs: Vec<DesiredJob>) {
        let _ = self.tx.send(Msg::SetJobs(jobs, None));
    }

    /// Replaces the host's labels used to check job selections (from the manager); takes effect
    /// with the next job set.
    pub fn set_labels(&self, labels: std::collections::BTreeMap<String, String>) {
        let _ = self.tx.send(Msg::SetLabels(labels));
    }

    /// Replaces the pauses, windows and drain the scheduler holds fires by (from the manager):
    /// a held cron or retry fire is recorded `skipped` with the reason; a held once-job waits.
    pub fn set_holds(&self, holds: op_proto::holds::Holds) {
        let _ = self.tx.send(Msg::SetHolds(holds));
    }

    /// Replaces the host's facts used to check job selections (`fact.` selectors); takes effect
    /// with the next job set.
    pub fn set_facts(&self, facts: op_proto::facts::Facts) {
        let _ = self.tx.send(Msg::SetFacts(facts));
    }

    /// Tells the scheduler about once-job revisions just written into the ledger (the manager's
    /// history of this node) and returns once it will never start them.
    pub async fn once_jobs_ran(&self, keys: Vec<(String, u64)>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Ran(keys, tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Returns at the end of the scheduler's next turn: every message sent before this call and
    /// every run that finished before it handled, and the work due at the clock's present handed
    /// to the executor. With a manual clock this is how a test knows the scheduler has caught up
    /// with a step, without waiting for a guessed time.
    pub async fn turned(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Turned(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Replaces the job set and returns once the scheduler (and so the job table the API reads)
    /// has applied it.
    pub async fn set_jobs_applied(&self, jobs: Vec<DesiredJob>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::SetJobs(jobs, Some(tx))).is_ok() {
            let _ = rx.await;
        }
    }
}

/// What the scheduler works with.
pub struct SchedulerParts {
    pub executor: Executor,
    pub state: StateStore,
    pub metrics: Metrics,
    pub table: JobTable,
    pub host: HostIdentity,
    pub finished: mpsc::UnboundedReceiver<Arc<RunRecord>>,
    /// What time it is: [`crate::clock::SystemClock`] but in tests.
    pub clock: Arc<dyn Clock>,
}

/// Starts the scheduler task; it returns when `shutdown` is cancelled.
pub fn spawn(
    parts: SchedulerParts,
    shutdown: CancellationToken,
) -> Result<(Scheduler, JoinHandle<()>), crate::AgentError> {
    let ledger = parts.state.ledger_keys()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut lp = Loop {
        health: parts.executor.health().clone(),
        executor: parts.executor,
        state: parts.state,
        metrics: parts.metrics,
        table: parts.table,
        host: parts.host,
        plans: BTreeMap::new(),
        retries: Vec::new(),
        pending_once: BTreeSet::new(),
        deploying: false,
        held_since: None,
        ledger,
        first_set: true,
        holds: op_proto::holds::Holds::default(),
        shutdown: shutdown.clone(),
        clock: parts.clock,
    };
    let mut finished = parts.finished;
    let task = tokio::spawn(async move {
        let mut rx = rx;
        let mut gate: Option<tokio::sync::watch::Receiver<bool>> = None;
        // Wakes the loop when the state dir takes writes again (held once-jobs start then).
        let mut health = lp.health.subscribe();
        let mut turned = Vec::new();
        loop {
            let wake = lp.clock.sleep_until(lp.next_wake());
            let gate_changed = async {
                match gate.as_mut() {
                    Some(g) => g.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // In this order: a run that finished before a message was sent is handled before
                // it ([`Scheduler::turned`] relies on it).
                biased;
                _ = shutdown.cancelled() => break,
                Some(record) = finished.recv() => lp.on_finished(&record),
                msg = rx.recv() => match msg {
                    Some(Msg::SetLabels(labels)) => lp.host.labels = labels,
                    Some(Msg::SetHolds(holds)) => lp.holds = holds,
                    Some(Msg::SetFacts(facts)) => lp.host.facts = Some(facts),
                    Some(Msg::SetJobs(jobs, applied)) => {
                        lp.set_jobs(jobs);
                        if let Some(applied) = applied {
                            let _ = applied.send(());
                        }
                    }
                    Some(Msg::Ran(keys, done)) => {
                        for (job, revision) in keys {
                            if lp.plans.get(&job).is_some_and(|p| p.revision == revision) {
                                lp.pending_once.remove(&job);
                            }
                            lp.ledger.insert((job, revision));
                        }
                        let _ = done.send(());
                    }
                    Some(Msg::Turned(done)) => turned.push(done),
                    Some(Msg::Gate(mut g)) => {
                        lp.deploying = *g.borrow_and_update();
                        gate = Some(g);
                    }
                    None => break,
                },
                alive = gate_changed => match gate.as_mut() {
                    Some(g) if alive => lp.deploying = *g.borrow_and_update(),
                    _ => {
                        gate = None;
                        lp.deploying = false;
                    }
                },
                Ok(()) = health.changed() => {}
                _ = wake => {}
            }
            // The link hands over packages before jobs, so a job set that arrives with a new
            // package sees the deploy as started here even before the change event is read.
            if let Some(g) = &gate {
                lp.deploying = *g.borrow();
            }
            lp.fire_due();
            lp.health.scheduler_turned(lp.earliest_due());
            for done in turned.drain(..) {
                let _ = done.send(());
            }
        }
    });
    Ok((Scheduler { tx }, task))
}

/// One active job's plan.
struct Plan {
    revision: u64,
    spec: Arc<JobSpec>,
    schedule: Option<Schedule>,
    /// The next planned fire.
    next: Option<DateTime<Utc>>,
    /// `next` plus this fire's jitter: when the timer fires.
    due: Option<DateTime<Utc>>,
    /// The run whose presence caused the last recorded skip (later skips are only counted).
    skip_recorded_for: Option<Uuid>,
    /// A `replace` in progress: kill the old run, then start.
    replacing: Option<JoinHandle<()>>,
}

struct Retry {
    at: DateTime<Utc>,
    job: String,
    revision: u64,
    attempt: u32,
}

struct Loop {
    executor: Executor,
    health: Health,
    state: StateStore,
    metrics: Metrics,
    table: JobTable,
    host: HostIdentity,
    plans: BTreeMap<String, Plan>,
    retries: Vec<Retry>,
    /// Once-jobs waiting for their previous run to end (`forbid`), or for deploys to settle.
    pending_once: BTreeSet<String>,
    /// A package deploy is in progress.
    deploying: bool,
    /// Since when once-jobs wait for deploys.
    held_since: Option<DateTime<Utc>>,
    ledger: HashSet<(String, u64)>,
    first_set: bool,
    /// Pauses, windows and drain (issue 23), as the manager last sent them.
    holds: op_proto::holds::Holds,
    shutdown: CancellationToken,
    clock: Arc<dyn Clock>,
}

/// Why runs of `name` must stop under the new job set, if they must.
fn inactive_reason(table: &BTreeMap<String, JobEntry>, name: &str) -> Option<&'static str> {
    match table.get(name) {
        None => Some("job removed"),
        Some(e) if !e.spec.enabled => Some("job disabled (Enabled: 0)"),
        Some(e) if !e.selected => Some("job no longer selects this host"),
        Some(_) => None,
    }
}

impl Loop {
    /// The earliest moment the loop has work for: a fire (handed over `LEAD_MS` early) or a retry.
    fn earliest_due(&self) -> Option<DateTime<Utc>> {
        let lead = chrono::Duration::milliseconds(LEAD_MS);
        self.plans
            .values()
            .filter_map(|p| p.due.map(|d| d - lead))
            .chain(self.retries.iter().map(|r| r.at))
            .min()
    }

    /// When to wake next: the earliest work due, but at least once a [`MAX_SLEEP`].
    fn next_wake(&self) -> DateTime<Utc> {
        let latest = self.clock.now() + MAX_SLEEP;
        let wake = self.earliest_due().map_or(latest, |t| t.min(latest));
        match self.held_since {
            Some(since) => wake.min(since + MAX_DEPLOY_HOLD),
            None => wake,
        }
    }

    fn set_jobs(&mut self, jobs: Vec<DesiredJob>) {
        let now = self.clock.now();
        let mut table = BTreeMap::new();
        for job in jobs {
            let selected = job.spec.selector().matches(&self.host);
            table.insert(
                job.spec.name.clone(),
                JobEntry {
                    revision: job.revision,
                    spec: Arc::new(job.spec),
                    selected,
                    next_fire: None,
                },
            );
        }

        // Jobs that stop being active: drop their plan and stop their processes, including runs
        // that were invoked through the API.
        for name in self.plans.keys().cloned().collect::<Vec<_>>() {
            if inactive_reason(&table, &name).is_some() {
                self.plans.remove(&name);
                self.pending_once.remove(&name);
                self.retries.retain(|r| r.job != name);
            }
        }
        for handle in self.executor.running() {
            // A manager's directive for a job this agent does not hold (an ad-hoc command) is not
            // the job set's to stop; a held job that became inactive stops its invoked runs too.
            if handle.trigger() == Trigger::Adhoc && !table.contains_key(handle.job()) {
                continue;
            }
            if let Some(reason) = inactive_reason(&table, handle.job()) {
                tracing::info!(job = %handle.job(), run_id = %handle.run_id(), reason, "stopping run");
                handle.kill(reason);
            }
        }

        for (name, entry) in table.iter_mut() {
            if !entry.active() {
                continue;
            }
            if let Some(plan) = self.plans.get(name)
                && plan.revision == entry.revision
            {
                entry.next_fire = plan.next;
                continue;
            }
            // A RunOn job (issue 23) is fired by the manager's leader on the hosts it picks (a
            // directive per fire), never by each agent's own cron.
            let schedule = entry
                .spec
                .schedule()
                .filter(|_| !entry.spec.run_on.is_picked());
            let next = schedule.as_ref().and_then(|s| s.next_after(now));
            if self.first_set
                && let Some(s) = &schedule
            {
                self.count_missed_while_down(&entry.spec, entry.revision, s, now);
            }
            let due = next.map(|n| n + plan::jitter(entry.spec.jitter_secs));
            self.retries
                .retain(|r| r.job != *name || r.revision == entry.revision);
            let replacing = self.plans.remove(name).and_then(|p| p.replacing);
            self.plans.insert(
                name.clone(),
                Plan {
                    revision: entry.revision,
                    spec: entry.spec.clone(),
                    schedule,
                    next,
                    due,
                    skip_recorded_for: None,
                    replacing,
                },
            );
            entry.next_fire = next;
            if entry.spec.once_job && !self.ledger.contains(&(name.clone(), entry.revision)) {
                self.pending_once.insert(name.clone());
            } else {
                self.pending_once.remove(name);
            }
            tracing::info!(job = %name, revision = entry.revision, kind = entry.spec.kind(), next = ?next, "job planned");
            if !entry.spec.cgroup.is_empty()
                && let crate::executor::cgroup::Hierarchy::Unavailable(why) =
                    crate::executor::cgroup::hierarchy()
            {
                // DESIGN section 1: limits the host cannot apply are reported, not ignored (each
                // run's record also carries the note).
                tracing::warn!(job = %name, reason = %why, "cgroup limits cannot be applied on this host");
            }
        }
        self.first_set = false;
        self.table.replace(table);
    }

    /// Counts the fires of a cron job that passed while the agent was down (after the last fire
    /// it recorded, up to `now`; they are not caught up) and records the newest
    /// [`MAX_MISSED_RECORDS`] of them as `missed` runs with the reason, which the outbox
    /// delivers: the manager then knows why the host did not run them.
    fn count_missed_while_down(
        &self,
        spec: &Arc<JobSpec>,
        revision: u64,
        schedule: &Schedule,
        now: DateTime<Utc>,
    ) {
        let name = &spec.name;
        let Ok(Some((last, last_revision))) = self.state.last_cron_planned(name) else {
            return;
        };
        if last_revision != revision {
            return;
        }
        let missed = plan::missed_between(schedule, last, now);
        if missed == 0 {
            return;
        }
        tracing::warn!(job = %name, missed, "fires missed while the agent was down");
        self.metrics.fires_lost(missed);
        let mut fires: Vec<DateTime<Utc>> =
            op_proto::expect::expected_fires(schedule, last, now).collect();
        if fires.len() > MAX_MISSED_RECORDS {
            fires.drain(..fires.len() - MAX_MISSED_RECORDS);
        }
        let records: Vec<RunRecord> = fires
            .into_iter()
            .map(|fire| {
                let req = RunRequest::scheduled(spec.clone(), revision, Trigger::Cron, Some(fire));
                let mut record = self.executor.record_for(&req);
                record.status = RunStatus::Missed;
                record.started_at = None;
                record.error = Some(format!(
                    "{MISSED_WHILE_DOWN}: the agent was not running at this fire (it ran \
                     last at {last}); missed fires are not caught up"
                ));
                record
            })
            .collect();
        let executor = self.executor.clone();
        tokio::spawn(async move {
            for record in records {
                executor.record_without_process(record).await;
            }
        });
    }

    fn on_finished(&mut self, record: &RunRecord) {
        if self.health.take_refused(record.run_id) {
            self.requeue_refused_once(record);
            return;
        }
        let retryable = matches!(
            record.trigger,
            Trigger::Cron | Trigger::Once | Trigger::Retry
        ) && matches!(record.status, RunStatus::Failed | RunStatus::Timeout);
        if !retryable || self.shutdown.is_cancelled() {
            return;
        }
        let Some(plan) = self.plans.get(&record.job) else {
            return;
        };
        if plan.revision != record.job_revision || record.attempt >= plan.spec.retries {
            return;
        }
        let at = self.clock.now() + chrono::Duration::seconds(plan.spec.retry_delay_secs as i64);
        tracing::info!(job = %record.job, attempt = record.attempt + 1, %at, "retry planned");
        self.retries.push(Retry {
            at,
            job: record.job.clone(),
            revision: record.job_revision,
            attempt: record.attempt + 1,
        });
    }

    /// A refused start left no ledger row: the once-job is pending again, and starts when the
    /// state dir takes writes (a refused cron fire is only counted; the next fire comes anyway).
    fn requeue_refused_once(&mut self, record: &RunRecord) {
        let Some(plan) = self.plans.get(&record.job) else {
            return;
        };
        if !plan.spec.once_job
            || plan.revision != record.job_revision
            || !matches!(record.trigger, Trigger::Once | Trigger::Retry)
        {
            return;
        }
        self.ledger
            .remove(&(record.job.clone(), record.job_revision));
        self.pending_once.insert(record.job.clone());
        tracing::warn!(job = %record.job, revision = record.job_revision, "once-job refused: the state dir takes no writes; it starts when it does");
    }

    fn fire_due(&mut self) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let now = self.clock.now();
        let horizon = now + chrono::Duration::milliseconds(LEAD_MS);
        let due: Vec<String> = self
            .plans
            .iter()
            .filter(|(_, p)| p.due.is_some_and(|d| d <= horizon))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let Some(plan) = self.plans.get_mut(&name) else {
                continue;
            };
            let (Some(planned), Some(start_at), Some(schedule)) =
                (plan.next, plan.due, plan.schedule.as_ref())
            else {
                continue;
            };
            let (next, lost) = plan::advance(schedule, planned, now);
            if lost > 0 {
                tracing::warn!(job = %name, lost, "woke too late for some fires; they are not caught up");
                self.metrics.fires_lost(lost);
            }
            plan.next = next;
            plan.due = next.map(|n| n + plan::jitter(plan.spec.jitter_secs));
            self.table.set_next_fire(&name, next);
            let mut req = RunRequest::scheduled(
                plan.spec.clone(),
                plan.revision,
                Trigger::Cron,
                Some(planned),
            );
            req.start_at = Some(start_at);
            self.fire(&name, req);
        }

        let (ready, waiting): (Vec<Retry>, Vec<Retry>) = std::mem::take(&mut self.retries)
            .into_iter()
            .partition(|r| r.at <= now);
        self.retries = waiting;
        for retry in ready {
            let Some(plan) = self.plans.get(&retry.job) else {
                continue;
            };
            if plan.revision != retry.revision {
                continue;
            }
            let mut req = RunRequest::scheduled(
                plan.spec.clone(),
                plan.revision,
                Trigger::Retry,
                Some(retry.at),
            );
            req.attempt = retry.attempt;
            self.fire(&retry.job, req);
        }

        if self.deploying && !self.pending_once.is_empty() {
            let since = *self.held_since.get_or_insert(now);
            if now - since < MAX_DEPLOY_HOLD {
                return;
            }
            tracing::warn!(jobs = ?self.pending_once, "package deploys still unsettled; starting once-jobs anyway");
        } else {
            self.held_since = None;
        }
        if !self.health.state_writable() {
            // Its start would be refused again: wait for the watchdog's probe to succeed.
            return;
        }
        for name in std::mem::take(&mut self.pending_once) {
            let Some(plan) = self.plans.get(&name) else {
                continue;
            };
            let key = (name.clone(), plan.revision);
            if self.ledger.contains(&key) {
                continue;
            }
            if let Some(why) = self.holds.why_held(&name, &self.host.labels, now) {
                // A once-job is never skipped: it waits for the hold to end.
                tracing::debug!(job = %name, reason = %why, "once-job held");
                self.pending_once.insert(name);
                continue;
            }
            let busy = !self.executor.running_for(&name).is_empty();
            let replacing = plan.replacing.as_ref().is_some_and(|h| !h.is_finished());
            if replacing || (busy && plan.spec.concurrency == Concurrency::Forbid) {
                // A once-job is never skipped: it waits for the previous run to end.
                self.pending_once.insert(name);
                continue;
            }
            self.ledger.insert(key);
            let req =
                RunRequest::scheduled(plan.spec.clone(), plan.revision, Trigger::Once, Some(now));
            self.fire(&name, req);
        }
    }

    /// Applies the concurrency policy to one fire.
    fn fire(&mut self, name: &str, req: RunRequest) {
        if matches!(req.trigger, Trigger::Cron | Trigger::Retry) {
            let at = req.planned_at.unwrap_or_else(|| self.clock.now());
            if let Some(why) = self.holds.why_held(name, &self.host.labels, at) {
                // Held (paused, drained, in a maintenance window): recorded as skipped with the
                // reason, so the manager reports it skipped, not missed. Running runs go on.
                self.metrics.fire_skipped();
                let mut record = self.executor.record_for(&req);
                record.status = RunStatus::Skipped;
                record.started_at = None;
                record.error = Some(format!("skipped: {why}"));
                tracing::info!(job = %name, reason = %why, "fire held");
                let executor = self.executor.clone();
                tokio::spawn(async move { executor.record_without_process(record).await });
                return;
            }
        }
        let Some(plan) = self.plans.get_mut(name) else {
            return;
        };
        let running = self.executor.running_for(name);
        let replacing = plan.replacing.as_ref().is_some_and(|h| !h.is_finished());
        if running.is_empty() && !replacing {
            self.executor.start(req);
            return;
        }
        match plan.spec.concurrency {
            Concurrency::Allow => {
                self.executor.start(req);
            }
            Concurrency::Replace if !replacing => {
                let executor = self.executor.clone();
                let shutdown = self.shutdown.clone();
                plan.replacing = Some(tokio::spawn(async move {
                    executor
                        .kill_job(
                            &req.spec.name,
                            "replaced by a newer run (Concurrency: replace)",
                        )
                        .await;
                    if !shutdown.is_cancelled() {
                        executor.start(req);
                    }
                }));
            }
            Concurrency::Forbid | Concurrency::Replace => {
                self.metrics.fire_skipped();
                let blocking = running.first().map(|h| h.run_id());
                if blocking.is_some() && plan.skip_recorded_for == blocking {
                    return;
                }
                plan.skip_recorded_for = blocking;
                let mut record = self.executor.record_for(&req);
                record.status = RunStatus::Skipped;
                record.started_at = None;
                record.error = Some(match blocking {
                    Some(id) => format!(
                        "skipped: run {id} is still running (Concurrency: {}); further skips while it runs are only counted",
                        plan.spec.concurrency.as_str()
                    ),
                    None => "skipped: the previous run is being replaced".into(),
                });
                tracing::info!(job = %name, "fire skipped: previous run still alive");
                let executor = self.executor.clone();
                tokio::spawn(async move { executor.record_without_process(record).await });
            }
        }
    }
}
