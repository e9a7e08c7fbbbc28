//! The life of one run, from its in-flight record to its final record.
//!
//! Order matters and is the point of this file:
//! 1. the in-flight row (and, for a once-job, the ledger row) is durable before anything starts;
//! 2. the process starts in its own session; a start failure ends the run `failed`, never panics;
//! 3. the run ends when the leader exits, the Timeout passes or someone kills it; stopping is
//!    SIGTERM (+SIGCONT, for stopped processes) to the group, then SIGKILL after KillGrace;
//! 4. members of the group still alive after the leader exited (background children) are
//!    stopped the same way, and so are the run's processes that left the group with `setsid`
//!    (found as the agent's descendants carrying the run's `OP_RUN_ID`): a run does not outlive
//!    its leader;
//! 5. only then is the leader reaped (with rusage), so every signal above went to our group;
//! 6. the output is collected (EOF on both pipes, or a short grace for processes that escaped
//!    the group) with stderr's tail kept apart in the record, and the final record is stored,
//!    published and its log retention applied.

use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::Signal;
use op_proto::{RunRecord, RunStatus};
use tokio::sync::watch;

use super::cgroup;
use super::output::{Capture, LogFile};
use super::process::{self, ExitKind};
use super::spawn::{self, SpawnPlan};
use super::{Executor, RunHandle, RunRequest, StopReason, logs};

/// How long the output reader waits for EOF once the process group is gone.
const OUTPUT_GRACE: Duration = Duration::from_millis(300);
/// How long to wait for SIGKILLed processes to vanish (they may sit in uninterruptible sleep).
const AFTER_SIGKILL: Duration = Duration::from_secs(10);

pub(super) async fn run(exec: Executor, handle: RunHandle, req: RunRequest) {
    let mut record = handle.0.record.clone();
    if let Err(e) = exec.0.state.insert_running(record.clone(), req.once).await {
        // Without a durable in-flight record a crash could not be reported (or, for a once-job,
        // could run it twice), so the run does not start: the fire is refused, counted and
        // reported (the node turns Degraded), and a refused once-job is held for a retry.
        exec.0.metrics.fire_refused();
        exec.0.health.fire_refused(record.run_id, &e);
        fail(
            &mut record,
            format!("not started: could not record the run first: {e}"),
        );
        exec.finish(&handle, record).await;
        return;
    }

    let s = exec.settings().clone();
    let spec = &req.spec;
    let user = match spec.run_as.as_deref().filter(|u| !u.is_empty()) {
        Some(name) => match spawn::resolve_user(name) {
            Ok(u) => Some(u),
            Err(reason) => {
                fail(&mut record, reason);
                exec.finish(&handle, record).await;
                return;
            }
        },
        None => None,
    };
    let work_dir = match &spec.work_dir {
        Some(dir) if !dir.is_empty() => std::path::PathBuf::from(dir),
        _ if s.deploy_dir.is_dir() => s.deploy_dir.clone(),
        _ => std::path::PathBuf::from("/"),
    };
    let log_path = logs::run_log_path(&s.log_dir, &spec.name, record.run_id);
    let file = Some(LogFile::at_first_output(log_path));

    // `secret:NAME` values become the secret's value, which the manager sent in memory with
    // the job; without it the run fails, never runs with an empty value (issue 24).
    let mut env: Vec<(String, String)> = Vec::with_capacity(spec.env.len() + 8);
    let mut secrets: Vec<String> = Vec::new();
    for (k, v) in &spec.env {
        match op_proto::secret::secret_ref(v) {
            Some(name) => match exec.secret(name) {
                Some(value) => {
                    secrets.push(value.clone());
                    env.push((k.clone(), value));
                }
                None => {
                    fail(
                        &mut record,
                        format!(
                            "secret unavailable: {name} (for {k}); the agent has not received it from a manager since it started, or the manager cannot open it"
                        ),
                    );
                    exec.finish(&handle, record).await;
                    return;
                }
            },
            None => env.push((k.clone(), v.clone())),
        }
    }
    if !spec.env.contains_key("PATH") {
        env.push(("PATH".into(), job_path()));
    }
    env.extend(req.param_env.iter().cloned());
    env.push(("OP_JOB_NAME".into(), spec.name.clone()));
    env.push(("OP_RUN_ID".into(), record.run_id.to_string()));
    env.push(("OP_TRIGGER".into(), record.trigger.as_str().into()));
    env.push(("OP_DEPLOY_DIR".into(), s.deploy_dir.display().to_string()));

    if let Some(at) = req.start_at {
        let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = handle.0.kill.cancelled() => {
                record.status = RunStatus::Killed;
                record.error = Some(format!("{} (before its process started)", handle.kill_reason()));
                record.ended_at = Some(Utc::now());
                exec.finish(&handle, record).await;
                return;
            }
        }
    }
    // The start is the moment we start the process (as the seed recorded it), not when exec
    // returned: what follows is the kernel's and the shell's time.
    let (cgroup, notes) = cgroup::prepare(&spec.cgroup, record.run_id);
    record.notes.extend(notes);
    let started_at = Utc::now();
    let spawned = spawn::spawn(SpawnPlan {
        shell: &s.shell,
        command: &req.command,
        work_dir: &work_dir,
        env,
        user: user.as_ref(),
        cgroup_procs: cgroup.procs_paths(),
    });
    let spawned = match spawned {
        Ok(sp) => sp,
        Err(reason) => {
            cgroup.remove().await;
            fail(&mut record, reason);
            exec.finish(&handle, record).await;
            return;
        }
    };
    let pid = spawned.pid;
    record.started_at = Some(started_at);
    tracing::debug!(job = %spec.name, run_id = %record.run_id, pid, trigger = record.trigger.as_str(), "run started");

    let capture = Capture::start_masked(
        spawned.stdout,
        spawned.stderr,
        file,
        s.output_tail,
        s.log_keep_bytes,
        &secrets,
    );
    drop(secrets);
    let (exit_tx, exit_rx) = watch::channel(false);
    tokio::spawn(async move {
        process::wait_exit(pid).await;
        let _ = exit_tx.send(true);
    });

    let grace = Duration::from_secs(spec.kill_grace_secs);
    let timeout = spec.timeout_secs;
    if timeout > 0 {
        // Past this the run should long be over: the watchdog reports a stalled executor.
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(timeout)
            + grace
            + AFTER_SIGKILL
            + OUTPUT_GRACE;
        exec.0
            .health
            .run_deadline(record.run_id, &spec.name, deadline);
    }
    let stop = tokio::select! {
        _ = exited(exit_rx.clone()) => None,
        _ = tokio::time::sleep(Duration::from_secs(timeout)), if timeout > 0 => {
            Some(StopReason::Timeout(timeout))
        }
        _ = handle.0.kill.cancelled() => Some(StopReason::Killed(handle.kill_reason())),
    };
    let run_id = record.run_id.to_string();
    // Left-behind processes: none when the agent's only children are leaders (a few small
    // reads), else found by a pass over every process. Measured: that pass after each run was
    // the largest share of an agent's CPU in `exec --all -- true` to 20 agents on one machine.
    if stop.is_some()
        || (!process::reaper().only_leaders()
            && process::run_members(pid, &run_id) != (0, Vec::new()))
    {
        terminate_run(pid, &run_id, grace, &exit_rx).await;
    }
    exited(exit_rx.clone()).await;
    // Processes that left the group with setsid are still in the run's cgroup: they go too.
    cgroup.remove().await;

    let reaped = tokio::task::spawn_blocking(move || process::reaper().reap_leader(pid)).await;
    let captured = match capture {
        Ok(c) => c.finish(OUTPUT_GRACE).await,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the run's output");
            Default::default()
        }
    };

    record.ended_at = Some(Utc::now());
    record.output = captured.tail;
    record.output_truncated = captured.truncated;
    record.output_bytes = captured.total;
    record.stderr_tail = captured.stderr_tail;
    let exit = match reaped {
        Ok(Ok((exit, rusage))) => {
            record.rusage = Some(rusage);
            Some(exit)
        }
        Ok(Err(e)) => {
            tracing::error!(pid, error = %e, "could not reap the run's process");
            None
        }
        Err(e) => {
            tracing::error!(pid, error = %e, "reaper task failed");
            None
        }
    };
    match exit {
        Some(ExitKind::Code(c)) => record.exit_code = Some(c),
        Some(ExitKind::Signal(sig)) => record.signal = Some(sig),
        None => {}
    }
    let (status, error) = match (stop, exit) {
        (Some(StopReason::Timeout(n)), _) => (
            RunStatus::Timeout,
            Some(format!(
                "timed out after {n}s; the process group was killed"
            )),
        ),
        (Some(StopReason::Killed(reason)), _) => (RunStatus::Killed, Some(reason)),
        (None, Some(ExitKind::Code(0))) => (RunStatus::Ok, None),
        (None, Some(ExitKind::Code(c))) => (RunStatus::Failed, Some(format!("exit status {c}"))),
        (None, Some(ExitKind::Signal(sig))) => (
            RunStatus::Failed,
            Some(format!("killed by signal {}", signal_name(sig))),
        ),
        (None, None) => (RunStatus::Failed, Some("exit status unknown".into())),
    };
    record.status = status;
    record.error = match (error, captured.file_error) {
        (Some(e), Some(f)) => Some(format!("{e}; {f}")),
        (e, f) => e.or(f.filter(|_| status != RunStatus::Ok)),
    };
    if status == RunStatus::Ok {
        tracing::debug!(job = %record.job, run_id = %record.run_id, "run finished: ok");
    } else {
        tracing::info!(job = %record.job, run_id = %record.run_id, status = status.as_str(), error = record.error.as_deref().unwrap_or(""), "run finished");
    }
    exec.finish(&handle, record).await;
    crate::footprint::work_done();
}

/// SIGTERM (and SIGCONT) to the group and to the run's processes outside it; SIGKILL if anything
/// is still alive after `grace`.
async fn terminate_run(pgid: i32, run_id: &str, grace: Duration, exit_rx: &watch::Receiver<bool>) {
    let gone = || *exit_rx.borrow() && process::run_members(pgid, run_id) == (0, Vec::new());
    let signal_all = |sig| {
        process::signal_group(pgid, sig);
        process::signal_each(&process::run_members(pgid, run_id).1, sig);
    };
    signal_all(Signal::SIGTERM);
    signal_all(Signal::SIGCONT);
    if process::poll_until(grace, gone).await {
        return;
    }
    signal_all(Signal::SIGKILL);
    if !process::poll_until(AFTER_SIGKILL, gone).await {
        tracing::warn!(
            pgid,
            "processes of the run survive SIGKILL (uninterruptible sleep?)"
        );
    }
}

async fn exited(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

fn fail(record: &mut RunRecord, reason: String) {
    tracing::warn!(job = %record.job, run_id = %record.run_id, %reason, "run failed to start");
    record.status = RunStatus::Failed;
    record.error = Some(reason);
    record.ended_at = Some(Utc::now());
}

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| sig.to_string())
}

/// The agent's PATH plus the standard directories, as the seed did: jobs written for a login
/// shell find `/usr/sbin` tools even under a minimal service PATH.
fn job_path() -> String {
    let current = std::env::var("PATH").unwrap_or_default();
    let mut parts: Vec<&str> = current.split(':').filter(|p| !p.is_empty()).collect();
    for std_dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !parts.contains(&std_dir) {
            parts.push(std_dir);
        }
    }
    parts.join(":")
}
