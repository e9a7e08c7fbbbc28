//! The executor: runs one job execution from start to its final record.
//!
//! It owns everything about a run's process (ARCHITECTURE.md invariant 5: it is the only code that
//! spawns): the in-flight record written before the start, the process in its own session, the
//! output file and tail, Timeout and kill (SIGTERM to the group, SIGKILL after KillGrace), reaping
//! with rusage, the final record in the state database and the outbox, and log retention.
//!
//! It does not decide *when* or *whether* to run: that is the scheduler's (cron, once, retries,
//! concurrency policy) or the API's (invocation). Callers get a [`RunHandle`] to wait for the
//! result or kill the run; every finished record is also sent on the channel returned by
//! [`Executor::new`], which the scheduler reads.

pub mod cgroup;
pub(crate) mod logs;
pub mod output;
pub mod process;
mod spawn;
mod supervise;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use op_proto::node::RunningRun;
use op_proto::{JobSpec, RunRecord, RunStatus, Trigger};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::health::Health;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::state::StateStore;

pub use logs::run_log_path;

/// What the executor needs to know about the agent, fixed at start.
#[derive(Debug, Clone)]
pub struct ExecSettings {
    pub node_id: Uuid,
    pub hostname: String,
    pub ips: Vec<IpAddr>,
    pub log_dir: PathBuf,
    pub deploy_dir: PathBuf,
    pub output_tail: usize,
    pub log_keep_runs: usize,
    pub log_keep_bytes: u64,
    /// True when a manager is configured: finished runs go to the outbox.
    pub deliver: bool,
    pub shell: PathBuf,
}

impl ExecSettings {
    pub fn from_config(config: &crate::Config, node_id: Uuid) -> ExecSettings {
        ExecSettings {
            node_id,
            hostname: config.node_name.clone(),
            ips: config.ips.clone(),
            log_dir: config.log_dir.clone(),
            deploy_dir: config.deploy_dir.clone(),
            output_tail: config.output_tail,
            log_keep_runs: config.log_keep_runs,
            log_keep_bytes: config.log_keep_bytes,
            deliver: !config.managers.is_empty(),
            shell: spawn::find_shell(),
        }
    }
}

/// One execution to start.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub run_id: Uuid,
    pub spec: Arc<JobSpec>,
    pub revision: u64,
    pub trigger: Trigger,
    pub attempt: u32,
    pub invocation_id: Option<Uuid>,
    pub params: BTreeMap<String, String>,
    /// The command to run: the job's Command, after parameter substitution.
    pub command: String,
    /// `OP_PARAM_*` variables the substituted command refers to.
    pub param_env: Vec<(String, String)>,
    pub planned_at: Option<DateTime<Utc>>,
    /// Do not start the process before this instant. The scheduler hands runs over a little
    /// ahead of their fire time, so the durable in-flight record and the preparation are done
    /// when the moment comes and only the spawn itself remains.
    pub start_at: Option<DateTime<Utc>>,
    /// A once-job start: the ledger row is written with the in-flight record.
    pub once: bool,
}

impl RunRequest {
    /// A run of the job's Command as written (cron, once, retry).
    pub fn scheduled(
        spec: Arc<JobSpec>,
        revision: u64,
        trigger: Trigger,
        planned_at: Option<DateTime<Utc>>,
    ) -> RunRequest {
        RunRequest {
            run_id: Uuid::now_v7(),
            command: spec.command.clone(),
            once: spec.once_job && matches!(trigger, Trigger::Once | Trigger::Retry),
            spec,
            revision,
            trigger,
            attempt: 0,
            invocation_id: None,
            params: BTreeMap::new(),
            param_env: Vec::new(),
            planned_at,
            start_at: None,
        }
    }
}

/// Why a run is being stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StopReason {
    Timeout(u64),
    Killed(String),
}

struct RunShared {
    record: RunRecord,
    kill: CancellationToken,
    kill_reason: Mutex<Option<String>>,
    done: watch::Sender<Option<Arc<RunRecord>>>,
}

/// A run in progress (or just finished). Cheap to clone.
#[derive(Clone)]
pub struct RunHandle(Arc<RunShared>);

impl RunHandle {
    fn new(record: RunRecord) -> RunHandle {
        RunHandle(Arc::new(RunShared {
            record,
            kill: CancellationToken::new(),
            kill_reason: Mutex::new(None),
            done: watch::channel(None).0,
        }))
    }

    pub fn run_id(&self) -> Uuid {
        self.0.record.run_id
    }

    pub fn job(&self) -> &str {
        &self.0.record.job
    }

    pub fn trigger(&self) -> Trigger {
        self.0.record.trigger
    }

    /// Asks the run to stop: SIGTERM to its group, SIGKILL after KillGrace. The run is recorded
    /// `killed` with this reason (the first reason given wins).
    pub fn kill(&self, reason: impl Into<String>) {
        let mut slot = self.0.kill_reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason.into());
        }
        drop(slot);
        self.0.kill.cancel();
    }

    /// The final record, once the run has finished and it is stored.
    pub fn finished(&self) -> Option<Arc<RunRecord>> {
        self.0.done.borrow().clone()
    }

    /// Waits for the final record.
    pub async fn wait(&self) -> Arc<RunRecord> {
        let mut rx = self.0.done.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`, so this cannot happen; fall back to the snapshot.
                return Arc::new(self.snapshot());
            }
        }
    }

    /// The record as it stands: final if finished, else `running`.
    pub fn snapshot(&self) -> RunRecord {
        match self.finished() {
            Some(r) => (*r).clone(),
            None => self.0.record.clone(),
        }
    }

    pub fn running_run(&self) -> RunningRun {
        RunningRun {
            run_id: self.run_id(),
            job: self.job().to_string(),
            trigger: self.trigger(),
            started_at: self.0.record.started_at.unwrap_or_else(Utc::now),
        }
    }

    fn kill_reason(&self) -> String {
        self.0
            .kill_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "killed".into())
    }
}

struct Inner {
    /// Stops the zombie sweeper when the last handle to the executor goes away.
    sweeper_stop: CancellationToken,
    settings: ExecSettings,
    state: StateStore,
    /// The queue a stored record may enter: its totals feed the gauges after each run.
    outbox: Outbox,
    metrics: Metrics,
    health: Health,
    runs: Mutex<BTreeMap<Uuid, RunHandle>>,
    finished: mpsc::UnboundedSender<Arc<RunRecord>>,
    /// Counts the runs started, so the link can report a start at once ([`Executor::starts`]).
    starts: watch::Sender<u64>,
    /// The secret values the last sync answer carried (issue 24). In memory only: never
    /// written to the state dir; empty after a restart until a manager answers.
    secrets: std::sync::RwLock<op_proto::secret::SecretValues>,
}

/// Starts runs and tracks the ones in progress. Cheap to clone.
#[derive(Clone)]
pub struct Executor(Arc<Inner>);

impl Executor {
    /// The executor and the stream of every finished record.
    pub fn new(
        settings: ExecSettings,
        state: StateStore,
        metrics: Metrics,
        health: Health,
    ) -> (Executor, mpsc::UnboundedReceiver<Arc<RunRecord>>) {
        // Become the subreaper before the first job starts.
        let _ = process::reaper();
        let sweeper_stop = CancellationToken::new();
        tokio::spawn(sweep_on_sigchld(sweeper_stop.clone()));
        let (tx, rx) = mpsc::unbounded_channel();
        let exec = Executor(Arc::new(Inner {
            sweeper_stop,
            settings,
            outbox: Outbox::new(state.clone()),
            state,
            metrics,
            health,
            runs: Mutex::new(BTreeMap::new()),
            finished: tx,
            starts: watch::channel(0).0,
            secrets: Default::default(),
        }));
        (exec, rx)
    }

    pub fn settings(&self) -> &ExecSettings {
        &self.0.settings
    }

    /// Replaces the secret values runs may use (from a manager's sync answer).
    pub fn set_secrets(&self, values: op_proto::secret::SecretValues) {
        *self.0.secrets.write().unwrap_or_else(|p| p.into_inner()) = values;
    }

    /// The value of secret `name`, if the manager sent it.
    fn secret(&self, name: &str) -> Option<String> {
        self.0
            .secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(str::to_string)
    }

    /// The agent's health, which runs report into (refused fires, runs past their deadline).
    pub fn health(&self) -> &Health {
        &self.0.health
    }

    /// Starts a run. It is registered (visible to [`Executor::running_for`]) before this returns;
    /// the in-flight record, the process start and everything after happen in its own task. A
    /// run that cannot start ends `failed` with the reason; this never fails.
    pub fn start(&self, req: RunRequest) -> RunHandle {
        let record = self.record_for(&req);
        let handle = RunHandle::new(record);
        self.0
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req.run_id, handle.clone());
        self.0.metrics.run_started();
        self.0.starts.send_modify(|n| *n += 1);
        // Every log line about this run, wherever in the executor it is written, carries the
        // run id and the job name (docs/operations.md, "Logs").
        let span = tracing::info_span!("run", run_id = %req.run_id, job = %req.spec.name);
        tokio::spawn(tracing::Instrument::instrument(
            supervise::run(self.clone(), handle.clone(), req),
            span,
        ));
        handle
    }

    /// The `running` record of a request, as it is stored before the process starts.
    pub fn record_for(&self, req: &RunRequest) -> RunRecord {
        let s = &self.0.settings;
        RunRecord {
            run_id: req.run_id,
            job: req.spec.name.clone(),
            job_revision: req.revision,
            node_id: s.node_id,
            hostname: s.hostname.clone(),
            ips: s.ips.clone(),
            trigger: req.trigger,
            attempt: req.attempt,
            invocation_id: req.invocation_id,
            params: req.params.clone(),
            command: req.command.clone(),
            planned_at: req.planned_at,
            started_at: Some(Utc::now()),
            ended_at: None,
            status: RunStatus::Running,
            exit_code: None,
            signal: None,
            error: None,
            output: String::new(),
            output_truncated: false,
            output_bytes: 0,
            stderr_tail: String::new(),
            rusage: None,
            notes: Vec::new(),
        }
    }

    /// Stores a record that had no process (a skipped fire) and publishes it.
    pub async fn record_without_process(&self, record: RunRecord) {
        self.0.metrics.run_recorded(record.status);
        self.store_final(&record).await;
        let _ = self.0.finished.send(Arc::new(record));
    }

    /// Changes each time a run starts: the link then sends a heartbeat at once, so the manager
    /// knows of a run that lasts a second (`top`, `logs --follow`).
    pub fn starts(&self) -> watch::Receiver<u64> {
        self.0.starts.subscribe()
    }

    /// Every run in progress.
    pub fn running(&self) -> Vec<RunHandle> {
        self.0
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The runs of one job in progress.
    pub fn running_for(&self, job: &str) -> Vec<RunHandle> {
        self.running()
            .into_iter()
            .filter(|h| h.job() == job)
            .collect()
    }

    pub fn get(&self, run_id: Uuid) -> Option<RunHandle> {
        self.0
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&run_id)
            .cloned()
    }

    /// Kills every run of `job` and waits until their records are stored.
    pub async fn kill_job(&self, job: &str, reason: &str) {
        let handles = self.running_for(job);
        for h in &handles {
            h.kill(reason);
        }
        for h in handles {
            h.wait().await;
        }
    }

    /// Kills every run and waits for their records.
    pub async fn kill_all(&self, reason: &str) {
        let handles = self.running();
        for h in &handles {
            h.kill(reason);
        }
        for h in handles {
            h.wait().await;
        }
    }

    async fn store_final(&self, record: &RunRecord) {
        self.store_record(record).await;
        self.refresh_outbox_gauges().await;
    }

    async fn refresh_outbox_gauges(&self) {
        if let Ok(t) = self.0.outbox.totals().await {
            self.0.metrics.outbox(t.depth, t.bytes, t.dropped);
        }
    }

    async fn store_record(&self, record: &RunRecord) {
        let state = &self.0.state;
        match state
            .finish_run(record.clone(), self.0.settings.deliver)
            .await
        {
            Ok(dropped) if dropped > 0 => tracing::warn!(
                dropped,
                "outbox over its byte budget: dropped the oldest undelivered runs"
            ),
            Ok(_) => {}
            Err(e) => {
                self.0
                    .health
                    .state_write_failed("storing a finished run", &e);
                tracing::error!(run_id = %record.run_id, job = %record.job, error = %e, "could not store run record")
            }
        }
        self.refresh_outbox_gauges().await;
    }

    /// Marks a run finished: stored, unregistered, published.
    async fn finish(&self, handle: &RunHandle, record: RunRecord) {
        // Durable first, then visible: a waiter never sees a record a crash could still lose.
        self.store_record(&record).await;
        let record = Arc::new(record);
        self.0.health.run_done(record.run_id);
        self.0
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&record.run_id);
        self.0.metrics.run_finished(
            record.status,
            record.duration_ms().map(|ms| ms as f64 / 1000.0),
        );
        handle.0.done.send_replace(Some(record.clone()));
        let _ = self.0.finished.send(record.clone());
        // Retention, outside the hot path of the waiters (the gauges were refreshed with the
        // store above).
        let in_progress: HashSet<Uuid> = self
            .running_for(&record.job)
            .iter()
            .map(|h| h.run_id())
            .collect();
        let s = &self.0.settings;
        let job_dir = s.log_dir.join(&record.job);
        let (keep_runs, keep_bytes) = (s.log_keep_runs, s.log_keep_bytes);
        // A run without output added no file (it is created at the first output), so the
        // directory is as the last prune left it.
        let wrote = record.output_bytes > 0;
        let _ = tokio::task::spawn_blocking(move || {
            if wrote {
                logs::prune(&job_dir, keep_runs, keep_bytes, &in_progress);
            }
            process::reaper().sweep();
        })
        .await;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.sweeper_stop.cancel();
    }
}

/// Reaps orphaned job processes (re-parented to us as subreaper) when they exit, so none lingers
/// as a zombie until the next run ends. At most one sweep per 100 ms, and each a little after the
/// signal: most SIGCHLDs come from a run's leader, which its supervisor reaps within
/// milliseconds, and a sweep that finds no zombie left costs one syscall instead of a /proc scan.
async fn sweep_on_sigchld(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut sigchld) = signal(SignalKind::child()) else {
        tracing::warn!(
            "cannot watch SIGCHLD; orphaned job processes are reaped after each run only"
        );
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            got = sigchld.recv() => if got.is_none() { return },
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let _ = tokio::task::spawn_blocking(|| process::reaper().sweep()).await;
    }
}

/// Settles the runs a previous agent left in flight: each becomes `lost` (with whatever output
/// its log file holds), its leftover processes are killed, and the record is stored (and queued
/// for delivery). Returns the lost records.
pub fn recover_in_flight(
    state: &StateStore,
    settings: &ExecSettings,
    metrics: &Metrics,
) -> Result<Vec<RunRecord>, crate::AgentError> {
    let flying = state.in_flight()?;
    let ids: HashSet<String> = flying.iter().map(|r| r.run_id.to_string()).collect();
    let killed = process::kill_run_leftovers(&ids);
    if killed > 0 {
        tracing::warn!(
            killed,
            "killed processes left behind by runs of a previous agent"
        );
    }
    let mut lost = Vec::new();
    for mut record in flying {
        record.status = RunStatus::Lost;
        record.error =
            Some("the agent stopped while this run was in flight; its outcome is unknown".into());
        let path = run_log_path(&settings.log_dir, &record.job, record.run_id);
        if let Some((tail, truncated, total)) = output::read_file_tail(&path, settings.output_tail)
        {
            record.output = tail;
            record.output_truncated = truncated;
            record.output_bytes = total;
        }
        state.finish_run_now(&record, settings.deliver)?;
        metrics.run_recorded(RunStatus::Lost);
        tracing::warn!(run_id = %record.run_id, job = %record.job, "run was in flight at the last stop: reported lost");
        lost.push(record);
    }
    Ok(lost)
}
