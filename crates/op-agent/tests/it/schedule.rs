//! The scheduler on a manual clock: what must *not* happen (a retry beyond `Retries`, a second
//! run of a once-job, a fire of a removed job, a catch-up burst after a stop) is checked by
//! stepping the clock through hours and waiting for [`Scheduler::turned`], not by sleeping.
//!
//! The parts are the agent's own: a [`StateStore`] in a temp dir, the [`Executor`] running real
//! child processes, and the scheduler task; only the clock is the test's. It starts in the past,
//! so the executor (on the system's timers) never waits for a start time the scheduler planned.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use op_agent::clock::{Clock, ManualClock};
use op_agent::executor::{ExecSettings, Executor};
use op_agent::health::Health;
use op_agent::jobs::JobTable;
use op_agent::metrics::Metrics;
use op_agent::schedule::{self, Scheduler, SchedulerParts};
use op_agent::state::StateStore;
use op_proto::agent::DesiredJob;
use op_proto::{HostIdentity, JobSpec, RunRecord, RunStatus, Trigger};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Half past midnight on a day long gone: fires planned on whole seconds are half a second away.
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::milliseconds(500)
}

fn seconds(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

fn job(revision: u64, spec: Value) -> DesiredJob {
    DesiredJob {
        revision,
        spec: serde_json::from_value::<JobSpec>(spec).unwrap(),
    }
}

/// One agent's scheduling parts over the state dir `dir`.
struct Rig {
    state: StateStore,
    executor: Executor,
    scheduler: Scheduler,
    metrics: Metrics,
    clock: Arc<ManualClock>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Rig {
    fn start(dir: &Path, clock: Arc<ManualClock>) -> Rig {
        let state = StateStore::open(&dir.join("state"), 100, 1 << 20).unwrap();
        let metrics = Metrics::new();
        let settings = ExecSettings {
            node_id: state.node_id().unwrap(),
            hostname: "sched-test".into(),
            ips: vec![],
            log_dir: dir.join("logs"),
            deploy_dir: dir.join("deploy"),
            output_tail: 4096,
            log_keep_runs: 100,
            log_keep_bytes: 1 << 20,
            deliver: false,
            shell: "/bin/sh".into(),
        };
        // What the agent does at start: runs a previous agent left in flight become `lost`.
        op_agent::executor::recover_in_flight(&state, &settings, &metrics).unwrap();
        let (executor, finished) =
            Executor::new(settings, state.clone(), metrics.clone(), Health::new());
        let stop = CancellationToken::new();
        let (scheduler, task) = schedule::spawn(
            SchedulerParts {
                executor: executor.clone(),
                state: state.clone(),
                metrics: metrics.clone(),
                table: JobTable::default(),
                host: HostIdentity {
                    hostname: "sched-test".into(),
                    ips: vec![],
                    labels: Default::default(),
                    facts: None,
                },
                finished,
                clock: clock.clone(),
            },
            stop.clone(),
        )
        .unwrap();
        Rig {
            state,
            executor,
            scheduler,
            metrics,
            clock,
            stop,
            task,
        }
    }

    /// Moves the clock and returns once the scheduler has acted on the new time.
    async fn step(&self, by: chrono::Duration) {
        self.clock.advance(by);
        self.scheduler.turned().await;
    }

    /// The one run of `name` in progress, waited for to its final record.
    async fn finish_the_run_of(&self, name: &str) -> Arc<RunRecord> {
        let running = self.executor.running_for(name);
        assert_eq!(running.len(), 1, "one run of {name} in progress");
        let record = tokio::time::timeout(Duration::from_secs(20), running[0].wait())
            .await
            .expect("the run finishes");
        // The scheduler has seen it finish (a retry, if any, is planned).
        self.scheduler.turned().await;
        record
    }

    /// Nothing of `name` runs, and its stored runs are exactly `expected`.
    async fn runs_of(&self, name: &str) -> Vec<RunRecord> {
        assert!(
            self.executor.running_for(name).is_empty(),
            "a run of {name} started"
        );
        let mut runs = self.state.list_runs(Some(name.into()), 1000).await.unwrap();
        runs.reverse();
        runs
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
        assert!(self.executor.running().is_empty());
    }
}

/// cron.rs `failed_scheduled_runs_are_retried` checks the retries' shape against the binary; here
/// the limit and the delay, on the scheduler's clock.
#[tokio::test]
async fn retries_wait_their_delay_and_stop_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path(), ManualClock::new(start()));
    let spec = json!({"JobName": "flaky", "Command": "exit 1", "OnceJob": 1, "Retries": 2, "RetryDelay": 60});
    rig.scheduler.set_jobs_applied(vec![job(1, spec)]).await;
    rig.scheduler.turned().await;
    let first = rig.finish_the_run_of("flaky").await;
    assert_eq!(
        (first.status, first.trigger),
        (RunStatus::Failed, Trigger::Once)
    );
    for attempt in 1..=2 {
        // RetryDelay is honoured: a second early, nothing.
        rig.step(seconds(59)).await;
        assert_eq!(rig.runs_of("flaky").await.len(), attempt as usize);
        rig.step(seconds(1)).await;
        let retry = rig.finish_the_run_of("flaky").await;
        assert_eq!(
            (retry.trigger, retry.attempt, retry.status),
            (Trigger::Retry, attempt, RunStatus::Failed)
        );
    }
    // No retry beyond Retries, however long the agent keeps running.
    rig.step(seconds(86_400)).await;
    let shape: Vec<(Trigger, u32)> = rig
        .runs_of("flaky")
        .await
        .iter()
        .map(|r| (r.trigger, r.attempt))
        .collect();
    assert_eq!(
        shape,
        vec![(Trigger::Once, 0), (Trigger::Retry, 1), (Trigger::Retry, 2)],
        "no retry beyond Retries"
    );
    rig.stop().await;
}

/// Replaces the binary test that stopped the agent for 3 s: here it is down for an hour.
#[tokio::test]
async fn fires_missed_while_the_agent_was_down_are_counted_not_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let steady = || {
        job(
            1,
            json!({"JobName": "steady", "Command": "true", "CronExpr": "*/1 * * * * * *"}),
        )
    };
    let rig = Rig::start(dir.path(), clock.clone());
    rig.scheduler.set_jobs_applied(vec![steady()]).await;
    rig.step(seconds(1)).await;
    assert_eq!(rig.finish_the_run_of("steady").await.status, RunStatus::Ok);
    rig.stop().await;

    // Down from 00:00:01.5 to 01:00:01.5: the fires of 00:00:02 ..= 01:00:01 are missed.
    clock.advance(seconds(3600));
    let rig = Rig::start(dir.path(), clock.clone());
    rig.scheduler.set_jobs_applied(vec![steady()]).await;
    rig.scheduler.turned().await;
    assert_eq!(rig.metrics.stats().lost_fires, 3600);
    // No catch-up burst: the next run is the next fire after the restart.
    rig.step(seconds(1)).await;
    rig.finish_the_run_of("steady").await;
    // The newest 20 missed fires are recorded `missed`, with the reason, never started.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let runs = loop {
        let runs = rig.runs_of("steady").await;
        if runs
            .iter()
            .filter(|r| r.status == RunStatus::Missed)
            .count()
            == 20
        {
            break runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missed records: {runs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (missed, ran): (Vec<&RunRecord>, Vec<&RunRecord>) =
        runs.iter().partition(|r| r.status == RunStatus::Missed);
    let whole = |s: i64| start() - chrono::Duration::milliseconds(500) + seconds(s);
    let planned = |rs: &[&RunRecord]| {
        let mut p: Vec<DateTime<Utc>> = rs.iter().map(|r| r.planned_at.unwrap()).collect();
        p.sort();
        p
    };
    assert_eq!(planned(&ran), vec![whole(1), whole(3602)]);
    assert_eq!(
        planned(&missed),
        (3582..=3601).map(whole).collect::<Vec<_>>()
    );
    for r in &missed {
        assert!(
            r.started_at.is_none() && r.trigger == Trigger::Cron,
            "{r:#?}"
        );
        assert!(
            r.error.as_deref().unwrap().starts_with("agent down: "),
            "{r:#?}"
        );
    }
    rig.stop().await;
}

/// once.rs checks the once-job against `kill -9` and restarts of the binary; here that it never
/// runs again, with the clock stepped a day past each decision.
#[tokio::test]
async fn a_once_job_runs_once_across_a_restart_and_again_for_a_new_revision() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let init = |revision, word: &str| {
        job(
            revision,
            json!({"JobName": "init", "Command": format!("echo {word}"), "OnceJob": 1}),
        )
    };
    let rig = Rig::start(dir.path(), clock.clone());
    rig.scheduler.set_jobs_applied(vec![init(1, "first")]).await;
    rig.scheduler.turned().await;
    assert_eq!(rig.finish_the_run_of("init").await.output, "first\n");
    rig.step(seconds(86_400)).await;
    assert_eq!(rig.runs_of("init").await.len(), 1);
    rig.stop().await;

    // A restart holds the same revision: the ledger says it ran.
    let rig = Rig::start(dir.path(), clock.clone());
    rig.scheduler.set_jobs_applied(vec![init(1, "first")]).await;
    rig.scheduler.turned().await;
    rig.step(seconds(86_400)).await;
    assert_eq!(
        rig.runs_of("init").await.len(),
        1,
        "once-job ran again after restart"
    );

    // A new revision runs once.
    rig.scheduler
        .set_jobs_applied(vec![init(2, "second")])
        .await;
    rig.scheduler.turned().await;
    assert_eq!(rig.finish_the_run_of("init").await.output, "second\n");
    rig.step(seconds(86_400)).await;
    let runs: Vec<(u64, String)> = rig
        .runs_of("init")
        .await
        .iter()
        .map(|r| (r.job_revision, r.output.clone()))
        .collect();
    assert_eq!(runs, vec![(1, "first\n".into()), (2, "second\n".into())]);
    rig.stop().await;
}

/// once.rs `kill9_during_a_once_run_reports_lost_and_never_reruns` crashes the binary mid-run;
/// here the state such a crash leaves (the in-flight row and the ledger row, written together
/// before the start) meets a restarted scheduler, which must never run the revision again.
#[tokio::test]
async fn a_once_job_in_flight_at_a_crash_is_lost_and_never_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let migrate = || {
        job(
            1,
            json!({"JobName": "migrate", "Command": "echo go", "OnceJob": 1}),
        )
    };
    {
        let rig = Rig::start(dir.path(), clock.clone());
        let req = op_agent::executor::RunRequest::scheduled(
            Arc::new(migrate().spec),
            1,
            Trigger::Once,
            Some(clock.now()),
        );
        rig.state
            .insert_running(rig.executor.record_for(&req), true)
            .await
            .unwrap();
        rig.stop().await;
    }
    let rig = Rig::start(dir.path(), clock.clone());
    rig.scheduler.set_jobs_applied(vec![migrate()]).await;
    rig.scheduler.turned().await;
    rig.step(seconds(86_400)).await;
    let runs = rig.runs_of("migrate").await;
    assert_eq!(runs.len(), 1, "once-job re-ran after a crash: {runs:?}");
    assert_eq!(runs[0].status, RunStatus::Lost);
    rig.stop().await;
}

/// jobs_dir.rs follows a removed task file to the job set; here a removed job never fires again.
#[tokio::test]
async fn a_removed_job_fires_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path(), ManualClock::new(start()));
    let beat = job(
        1,
        json!({"JobName": "beat", "Command": "true", "CronExpr": "*/1 * * * * * *"}),
    );
    rig.scheduler.set_jobs_applied(vec![beat]).await;
    rig.step(seconds(1)).await;
    rig.finish_the_run_of("beat").await;
    rig.scheduler.set_jobs_applied(vec![]).await;
    rig.step(seconds(3600)).await;
    assert_eq!(
        rig.runs_of("beat").await.len(),
        1,
        "removed job still fires"
    );
    rig.stop().await;
}
