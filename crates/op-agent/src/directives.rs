//! Directives from the manager: run a job (or an ad-hoc command) now, or kill a run.
//!
//! The manager hands them out with every sync answer for as long as they are live, so the same
//! directive arrives many times (each answer, each reconnect, after a restart). The rules:
//! - **once**: the manager picked the run id; a directive whose run id this agent has taken
//!   before (in this process, or durably in `agent.db`, see `state::directives`) is ignored;
//! - **in time**: a run directive received after its `not_after` is not started (the caller has
//!   given up on this host and reported it unreachable). `not_after` is on the manager's clock;
//!   the link measures the offset between the clocks on each sync call (our send time against the
//!   manager's receive time), so neither clock skew nor a long-parked call nor this agent having
//!   been stopped for a while lets a directive start after its deadline;
//! - **same safety as every run**: parameters go through `op_proto::params` (each a literal word
//!   in any quoting context), the job's Timeout, KillGrace and RunAs hold, and the job's
//!   Concurrency policy applies against its runs in progress: `forbid` records a `skipped` run,
//!   `replace` kills the old run first. The run is started by the executor with trigger `adhoc` and
//!   the invocation id, and its record goes back through the outbox like any other;
//! - **kill**: stops the run if it is in progress, and makes sure it never starts here.
//!
//! A run without parameters runs its Command as written, like a scheduled run: that is how an
//! ad-hoc command stays literal (`awk '{print $1}'` has no placeholders to fill).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use op_proto::agent::{Directive, RunDirective};
use op_proto::params;
use op_proto::{Concurrency, RunStatus, Trigger};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::executor::{Executor, RunRequest};
use crate::state::StateStore;

/// What became of one run directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    Started,
    /// Recorded without a process: skipped (Concurrency: forbid) or refused (parameters).
    Recorded,
    /// Not acted on: taken before, killed, past its deadline, shutting down.
    Ignored,
}

/// Runs and kills what the manager asks for. Cheap to clone.
#[derive(Clone)]
pub struct Directives(Arc<Inner>);

struct Inner {
    executor: Executor,
    state: StateStore,
    /// Cancelled when shutdown begins: no new runs from then on.
    closing: CancellationToken,
    /// Run ids acted on lately: the cheap first check, and the guard against the same directive
    /// arriving twice before the first is durably recorded.
    seen: Mutex<Recent>,
    /// Runs the manager asked to kill lately: such a run must never start here.
    killed: Mutex<Recent>,
}

/// A set of run ids that forgets old entries once it grows, so a long-lived agent does not keep
/// every id it ever saw: the durable record answers for anything older.
struct Recent {
    ids: HashMap<Uuid, tokio::time::Instant>,
    keep: std::time::Duration,
}

/// Entries kept before old ones are forgotten.
const RECENT_MAX: usize = 4096;

impl Recent {
    fn new(keep: std::time::Duration) -> Recent {
        Recent {
            ids: HashMap::new(),
            keep,
        }
    }

    /// Adds `id`; true when it was not there.
    fn insert(&mut self, id: Uuid) -> bool {
        if self.ids.len() >= RECENT_MAX {
            let keep = self.keep;
            self.ids.retain(|_, at| at.elapsed() < keep);
        }
        self.ids.insert(id, tokio::time::Instant::now()).is_none()
    }

    fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains_key(id)
    }
}

impl Directives {
    pub fn new(executor: Executor, state: StateStore, closing: CancellationToken) -> Directives {
        Directives(Arc::new(Inner {
            executor,
            state,
            closing,
            // A directive's durable record is written within milliseconds; ten minutes is plenty.
            seen: Mutex::new(Recent::new(std::time::Duration::from_secs(600))),
            // A kill outlives any deadline of the run it names.
            killed: Mutex::new(Recent::new(std::time::Duration::from_secs(86_400))),
        }))
    }

    /// Acts on one sync answer's directives without holding up the caller (the link goes back to
    /// its long-poll at once). `skew` is how far our clock is ahead of the manager's.
    pub fn apply(&self, directives: Vec<Directive>, skew: chrono::Duration) {
        let mut fresh = Vec::new();
        for d in directives {
            match d {
                Directive::Kill { run_id } => self.kill(run_id),
                // Output requests are the link's (`link::output`); they start nothing.
                Directive::UploadOutput { .. } => {}
                Directive::Run(run) => {
                    let new = self
                        .0
                        .seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(run.run_id);
                    if new {
                        fresh.push(*run);
                    }
                }
            }
        }
        if fresh.is_empty() {
            return;
        }
        // In order, in one task: two directives for the same job see each other's run when the
        // concurrency policy is checked.
        let this = self.clone();
        tokio::spawn(async move {
            for run in fresh {
                let taken = this.start(run, skew).await;
                tracing::debug!(?taken, "directive handled");
            }
        });
    }

    fn kill(&self, run_id: Uuid) {
        let first = self
            .0
            .killed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id);
        if let Some(handle) = self.0.executor.get(run_id)
            && first
        {
            tracing::info!(%run_id, job = %handle.job(), "the manager asked to kill a run");
            handle.kill("killed by the manager: the invocation was cancelled");
        }
    }

    async fn start(&self, d: RunDirective, skew: chrono::Duration) -> Taken {
        let run_id = d.run_id;
        if self.0.closing.is_cancelled() {
            return Taken::Ignored;
        }
        if self
            .0
            .killed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&run_id)
        {
            return Taken::Ignored;
        }
        match self.0.state.directive_taken(run_id).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(%run_id, job = %d.spec.name, "directive received again; it was taken before, not running it twice");
                return Taken::Ignored;
            }
            Err(e) => {
                // Without the check a restart could run it twice; the manager reports the host
                // unreachable at its deadline instead.
                tracing::error!(%run_id, job = %d.spec.name, error = %e, "cannot check the directive ledger; not running it");
                return Taken::Ignored;
            }
        }
        let now = Utc::now();
        if now > d.not_after + skew {
            tracing::warn!(%run_id, job = %d.spec.name, not_after = %d.not_after, "directive arrived after its deadline; not starting it");
            return Taken::Ignored;
        }
        if let Some(start_by) = d.start_by
            && now > start_by + skew
        {
            // A fire of a RunOn job: the leader has given it to another host by now.
            tracing::warn!(%run_id, job = %d.spec.name, %start_by, "fire directive arrived after its start window; another host runs it");
            return Taken::Ignored;
        }
        let req = match request(&d, now) {
            Ok(req) => req,
            Err(reason) => {
                let mut record = self.0.executor.record_for(&plain(&d, now));
                record.status = RunStatus::Failed;
                record.started_at = None;
                record.ended_at = Some(now);
                record.error = Some(reason);
                self.0.executor.record_without_process(record).await;
                return Taken::Recorded;
            }
        };
        tracing::info!(%run_id, job = %d.spec.name, invocation = %d.invocation_id, "running a directive");
        let running = self.0.executor.running_for(&d.spec.name);
        if running.is_empty() {
            self.0.executor.start(req);
            return Taken::Started;
        }
        match d.spec.concurrency {
            Concurrency::Allow => {
                self.0.executor.start(req);
                Taken::Started
            }
            Concurrency::Forbid => {
                let blocking = running[0].run_id();
                let mut record = self.0.executor.record_for(&req);
                record.status = RunStatus::Skipped;
                record.started_at = None;
                record.ended_at = Some(now);
                record.error = Some(format!(
                    "skipped: run {blocking} of this job is still running (Concurrency: forbid)"
                ));
                self.0.executor.record_without_process(record).await;
                Taken::Recorded
            }
            Concurrency::Replace => {
                self.0
                    .executor
                    .kill_job(
                        &d.spec.name,
                        "replaced by an invoked run (Concurrency: replace)",
                    )
                    .await;
                if self.0.closing.is_cancelled() {
                    return Taken::Ignored;
                }
                self.0.executor.start(req);
                Taken::Started
            }
        }
    }
}

/// The run request of a directive, parameters substituted.
fn request(d: &RunDirective, now: DateTime<Utc>) -> Result<RunRequest, String> {
    let mut req = plain(d, now);
    if !d.params.is_empty() || !d.spec.params.is_empty() {
        let s = params::substitute(&d.spec.command, &d.spec.params, &d.params)
            .map_err(|e| format!("not started: the parameters were refused: {e}"))?;
        req.command = s.command;
        req.param_env = s.env;
    }
    Ok(req)
}

/// The request with the command as written (also what a refused run is recorded as).
fn plain(d: &RunDirective, now: DateTime<Utc>) -> RunRequest {
    RunRequest {
        run_id: d.run_id,
        spec: Arc::new(d.spec.clone()),
        revision: d.revision,
        // A RunOn job's fire is a cron run of that fire, wherever the leader sent it.
        trigger: if d.planned_at.is_some() {
            Trigger::Cron
        } else {
            Trigger::Adhoc
        },
        attempt: 0,
        invocation_id: Some(d.invocation_id),
        params: d.params.clone(),
        command: d.spec.command.clone(),
        param_env: Vec::new(),
        planned_at: Some(d.planned_at.unwrap_or(now)),
        start_at: None,
        once: false,
    }
}

#[cfg(test)]
mod tests {
    use op_proto::JobSpec;

    use super::*;
    use crate::executor::ExecSettings;
    use crate::metrics::Metrics;

    /// Directives over a real executor and state database in `dir`.
    fn agent(dir: &std::path::Path) -> (Directives, Executor, StateStore) {
        let config = crate::Config::local(dir);
        let state = StateStore::open(&config.state_dir, 100, 1 << 20).unwrap();
        let settings = ExecSettings::from_config(&config, Uuid::nil());
        let (exec, _finished) = Executor::new(
            settings,
            state.clone(),
            Metrics::new(),
            crate::health::Health::new(),
        );
        let d = Directives::new(exec.clone(), state.clone(), CancellationToken::new());
        (d, exec, state)
    }

    fn in_a_minute(mut d: RunDirective) -> RunDirective {
        d.not_after = Utc::now() + chrono::Duration::seconds(60);
        d
    }

    async fn finish_all(exec: &Executor) {
        for h in exec.running() {
            h.wait().await;
        }
    }

    #[tokio::test]
    async fn a_directive_runs_once_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let d = in_a_minute(directive(
            &format!("echo x >> {}", count.display()),
            &[],
            &[],
        ));
        let (directives, exec, _) = agent(dir.path());
        assert_eq!(
            directives.start(d.clone(), chrono::Duration::zero()).await,
            Taken::Started
        );
        finish_all(&exec).await;
        assert_eq!(
            directives.start(d.clone(), chrono::Duration::zero()).await,
            Taken::Ignored
        );
        drop((directives, exec));
        // A new agent process on the same state dir.
        let (directives, exec, state) = agent(dir.path());
        assert_eq!(
            directives.start(d.clone(), chrono::Duration::zero()).await,
            Taken::Ignored
        );
        finish_all(&exec).await;
        assert_eq!(std::fs::read_to_string(&count).unwrap(), "x\n");
        let record = state.get_run(d.run_id).await.unwrap().unwrap();
        assert_eq!(
            (record.status, record.trigger, record.invocation_id),
            (RunStatus::Ok, Trigger::Adhoc, Some(d.invocation_id))
        );
    }

    #[tokio::test]
    async fn late_killed_and_overlapping_directives() {
        let dir = tempfile::tempdir().unwrap();
        let (directives, exec, state) = agent(dir.path());
        // Past its deadline on the manager's clock; our clock being 30 s behind does not help.
        let mut late = directive("true", &[], &[]);
        late.not_after = Utc::now() + chrono::Duration::seconds(20);
        assert_eq!(
            directives.start(late, chrono::Duration::seconds(-30)).await,
            Taken::Ignored
        );
        // A kill before the run arrives: it never starts.
        let killed = in_a_minute(directive("true", &[], &[]));
        directives.apply(
            vec![Directive::Kill {
                run_id: killed.run_id,
            }],
            chrono::Duration::zero(),
        );
        assert_eq!(
            directives.start(killed, chrono::Duration::zero()).await,
            Taken::Ignored
        );
        // Concurrency forbid: a second run of the same job while the first lives is skipped.
        let first = in_a_minute(directive("sleep 30", &[], &[]));
        let second = in_a_minute(directive("sleep 30", &[], &[]));
        assert_eq!(
            directives
                .start(first.clone(), chrono::Duration::zero())
                .await,
            Taken::Started
        );
        assert_eq!(
            directives
                .start(second.clone(), chrono::Duration::zero())
                .await,
            Taken::Recorded
        );
        let skipped = state.get_run(second.run_id).await.unwrap().unwrap();
        assert_eq!(skipped.status, RunStatus::Skipped);
        // A kill directive stops the running one.
        directives.apply(
            vec![Directive::Kill {
                run_id: first.run_id,
            }],
            chrono::Duration::zero(),
        );
        let record = exec.get(first.run_id).unwrap().wait().await;
        assert_eq!(record.status, RunStatus::Killed);
        // Refused parameters are reported, not run.
        let refused = in_a_minute(directive("echo {who}", &["who"], &[]));
        assert_eq!(
            directives
                .start(refused.clone(), chrono::Duration::zero())
                .await,
            Taken::Recorded
        );
        let r = state.get_run(refused.run_id).await.unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Failed);
        assert!(r.error.unwrap().contains("who"));
    }

    fn directive(command: &str, declared: &[&str], values: &[(&str, &str)]) -> RunDirective {
        let mut spec = JobSpec::new("j", command);
        spec.params = declared.iter().map(|s| s.to_string()).collect();
        RunDirective {
            invocation_id: Uuid::now_v7(),
            run_id: Uuid::now_v7(),
            revision: 3,
            spec,
            params: values
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            trigger: Trigger::Adhoc,
            not_after: Utc::now(),
            planned_at: None,
            start_by: None,
        }
    }

    #[test]
    fn a_directive_without_params_runs_its_command_as_written() {
        let d = directive("awk '{print $1}' {x}", &[], &[]);
        let req = request(&d, Utc::now()).unwrap();
        assert_eq!(req.command, "awk '{print $1}' {x}");
        assert_eq!(
            (req.trigger, req.invocation_id, req.run_id),
            (Trigger::Adhoc, Some(d.invocation_id), d.run_id)
        );
    }

    #[test]
    fn params_become_variable_references() {
        let d = directive("echo '{who}'", &["who"], &[("who", "'; touch /x; '")]);
        let req = request(&d, Utc::now()).unwrap();
        assert_eq!(req.command, r#"echo ''"${OP_PARAM_WHO}"''"#);
        assert_eq!(
            req.param_env,
            vec![("OP_PARAM_WHO".to_string(), "'; touch /x; '".to_string())]
        );
        // A declared parameter without a value is refused, not run with a hole.
        let missing = directive("echo {who}", &["who"], &[]);
        assert!(request(&missing, Utc::now()).unwrap_err().contains("who"));
    }
}
