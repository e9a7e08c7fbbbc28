//! The agent's own health: faults that leave it running but not doing its work, reported with
//! every heartbeat so the manager shows the node `Degraded` with the reason.
//!
//! Three conditions, each set where it is seen and cleared when it is over:
//! - **the state dir refuses writes** (a full disk, most often): set by the executor when a
//!   run's in-flight or final record cannot be written (the fire is *refused*: it never starts,
//!   because a run without a durable record could not be reported, or a once-job could run
//!   twice) and by the link when the job set cannot be cached; cleared by the [`watchdog`], which
//!   probes the dir with a small write every second while the condition holds. The scheduler
//!   holds refused once-jobs until then and starts them when it clears, without a restart;
//! - **the scheduler stalls**: its loop reports progress on every turn with the earliest time it
//!   has work due; the watchdog flags it when that time is more than [`STALL_AFTER`] past and the
//!   loop has not turned since (a task that died or hangs);
//! - **the executor stalls**: a run with a Timeout still in progress [`STALL_AFTER`] after its
//!   timeout, kill grace and the kill's own bound (a supervisor that died or hangs).
//!
//! The manager sees the summary (the reasons joined with "; ") in the next heartbeat: the link
//! cuts its parked sync short when the summary changes.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How far past due work may be, with no progress, before it is reported.
pub const STALL_AFTER: Duration = Duration::from_secs(30);
/// How often the watchdog evaluates and, while the state dir refuses writes, probes it.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// The probe writes this much: a write SQLite would need is about this size.
const PROBE_BYTES: usize = 64 * 1024;

#[derive(Default)]
struct Conditions {
    /// Why the state dir refuses writes.
    state: Option<String>,
    scheduler_turned: Option<Instant>,
    scheduler_due: Option<DateTime<Utc>>,
    /// Runs with a Timeout: job name and when they must be over.
    run_deadlines: BTreeMap<Uuid, (String, Instant)>,
    /// Runs refused because their in-flight record could not be written, not yet seen by the
    /// scheduler.
    refused: HashSet<Uuid>,
}

/// Shared handle; cheap to clone.
#[derive(Clone)]
pub struct Health(Arc<Inner>);

struct Inner {
    conditions: Mutex<Conditions>,
    summary: watch::Sender<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health(Arc::new(Inner {
            conditions: Mutex::new(Conditions::default()),
            summary: watch::channel(None).0,
        }))
    }

    fn conditions(&self) -> std::sync::MutexGuard<'_, Conditions> {
        self.0.conditions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the agent is degraded, if it is (what the heartbeat reports).
    pub fn summary(&self) -> Option<String> {
        self.0.summary.borrow().clone()
    }

    /// Changes whenever [`Health::summary`] does.
    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.0.summary.subscribe()
    }

    /// The scheduler's loop turned; `due` is the earliest time it has work for.
    pub fn scheduler_turned(&self, due: Option<DateTime<Utc>>) {
        let mut c = self.conditions();
        c.scheduler_turned = Some(Instant::now());
        c.scheduler_due = due;
    }

    /// A run that must be over by `deadline`.
    pub fn run_deadline(&self, run_id: Uuid, job: &str, deadline: Instant) {
        self.conditions()
            .run_deadlines
            .insert(run_id, (job.to_string(), deadline));
    }

    pub fn run_done(&self, run_id: Uuid) {
        self.conditions().run_deadlines.remove(&run_id);
    }

    /// Writing `what` to the state dir failed.
    pub fn state_write_failed(&self, what: &str, error: &dyn std::fmt::Display) {
        let error = error.to_string();
        let reason = if is_disk_full(&error) {
            format!("state disk full: {what}: {error}")
        } else {
            format!("state dir not writable: {what}: {error}")
        };
        self.conditions().state = Some(reason);
        self.publish();
    }

    /// A run was refused: its in-flight record could not be written.
    pub fn fire_refused(&self, run_id: Uuid, error: &dyn std::fmt::Display) {
        self.conditions().refused.insert(run_id);
        self.state_write_failed("recording a run before its start", error);
    }

    /// True (once) when `run_id` was refused; the scheduler asks for every finished run.
    pub fn take_refused(&self, run_id: Uuid) -> bool {
        self.conditions().refused.remove(&run_id)
    }

    /// False while the state dir refuses writes.
    pub fn state_writable(&self) -> bool {
        self.conditions().state.is_none()
    }

    fn state_recovered(&self) {
        self.conditions().state = None;
        self.publish();
    }

    /// Recomputes the summary and publishes it when it changed.
    fn publish(&self) {
        let reasons = reasons(&self.conditions(), Instant::now(), Utc::now());
        let summary = (!reasons.is_empty()).then(|| reasons.join("; "));
        self.0.summary.send_if_modified(|s| {
            if *s == summary {
                return false;
            }
            match &summary {
                Some(why) => tracing::warn!(reason = %why, "agent degraded"),
                None => tracing::info!("agent healthy again"),
            }
            *s = summary;
            true
        });
    }
}

fn is_disk_full(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("disk is full") || e.contains("no space left") || e.contains("quota exceeded")
}

/// Every condition that holds at `now`, worded for an operator.
fn reasons(c: &Conditions, now: Instant, wall: DateTime<Utc>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(state) = &c.state {
        out.push(state.clone());
    }
    let stall = chrono::Duration::from_std(STALL_AFTER).unwrap_or(chrono::Duration::MAX);
    if let (Some(turned), Some(due)) = (c.scheduler_turned, c.scheduler_due)
        && wall - due > stall
        && now.duration_since(turned) > STALL_AFTER
    {
        out.push(format!(
            "scheduler stalled: work due since {} and no progress for {}s",
            due.format("%Y-%m-%dT%H:%M:%SZ"),
            now.duration_since(turned).as_secs()
        ));
    }
    for (run_id, (job, deadline)) in &c.run_deadlines {
        if now > *deadline + STALL_AFTER {
            out.push(format!(
                "executor stalled: run {run_id} of job {job} is {}s past its timeout and kill",
                now.duration_since(*deadline).as_secs()
            ));
        }
    }
    out
}

/// Writes and removes a probe file in `dir`: can the state dir take a write again?
fn probe(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".write-probe");
    let result = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&[0u8; PROBE_BYTES])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    result
}

/// Evaluates the conditions every second (a stall is noticed without anyone reporting it) and,
/// while the state dir refuses writes, probes it so that the condition clears when space returns.
pub async fn watchdog(health: Health, state_dir: PathBuf, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if !health.state_writable() {
            let dir = state_dir.clone();
            if let Ok(Ok(())) = tokio::task::spawn_blocking(move || probe(&dir)).await {
                health.state_recovered();
            }
        }
        health.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scheduler_that_stops_turning_while_work_is_due_is_reported() {
        let now = Instant::now();
        let wall = Utc::now();
        let mut c = Conditions {
            scheduler_turned: Some(now),
            scheduler_due: Some(wall - chrono::Duration::seconds(40)),
            ..Default::default()
        };
        // It turned just now: late work is being handled.
        assert!(reasons(&c, now, wall).is_empty());
        // It has not turned for 35 s and the work is 40 s overdue.
        let later = now + Duration::from_secs(35);
        let why = reasons(&c, later, wall);
        assert_eq!(why.len(), 1);
        assert!(why[0].starts_with("scheduler stalled"), "{why:?}");
        // Idle (nothing due): no stall, however long the loop sleeps.
        c.scheduler_due = None;
        assert!(reasons(&c, later, wall).is_empty());
    }

    #[tokio::test]
    async fn a_run_past_its_deadline_is_reported() {
        let now = Instant::now();
        let id = Uuid::now_v7();
        let mut c = Conditions::default();
        c.run_deadlines.insert(id, ("backup".into(), now));
        assert!(reasons(&c, now + Duration::from_secs(5), Utc::now()).is_empty());
        let why = reasons(&c, now + Duration::from_secs(31), Utc::now());
        assert!(why[0].contains("executor stalled") && why[0].contains("backup"));
    }

    #[tokio::test]
    async fn a_refused_write_degrades_until_the_probe_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let h = Health::new();
        let id = Uuid::now_v7();
        h.fire_refused(id, &"database or disk is full");
        assert!(!h.state_writable());
        assert!(h.summary().unwrap().starts_with("state disk full"));
        assert!(h.take_refused(id));
        assert!(!h.take_refused(id));
        // The state dir takes writes (it is an ordinary temp dir): the watchdog clears it.
        let stop = CancellationToken::new();
        let task = tokio::spawn(watchdog(h.clone(), dir.path().to_path_buf(), stop.clone()));
        let mut rx = h.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.is_none()))
            .await
            .unwrap()
            .unwrap();
        assert!(h.state_writable());
        stop.cancel();
        task.await.unwrap();
    }
}
