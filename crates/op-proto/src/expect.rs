//! Expected fires: what should have happened on every host, judged against what arrived.
//!
//! The manager knows every cron job's schedule and the hosts it selects, so it can tell a fire that
//! never ran from one that ran: this module is that judgement, pure and clock-free (`now` is an
//! argument), shared by the manager (which judges) and the agent (which reports the fires it
//! missed while down).
//!
//! **Invariant: fires are judged by the function the agent fires by.** [`expected_fires`] walks
//! [`Schedule::next_after`] in the job's zone, the same call the agent's scheduler makes, so a
//! daylight-saving day, a year field or a day-of-week rule can never make the two disagree about
//! which fires exist.
//!
//! The judgement of one job fire over many hosts is one merge over inputs sorted by node id
//! ([`judge_fire`]): 10,000 hosts cost one pass, not 10,000 timers or rows. Per host it yields one
//! [`Outcome`]; [`FireSummary`] counts them and says the sentence the operator reads
//! ("backup.sh missed its 03:00 fire on 12/2,000 hosts (9 NotReady, 3 no run)").
//!
//! Rules, decided here once:
//! - nothing is judged missed before `fire + jitter + grace` ([`Outcome::Pending`]), so a job
//!   saved a few seconds ago reports nothing (an agent's own missed report is a fact, not a
//!   judgement, and counts at once);
//! - a run belongs to a fire by its `planned_at` (the agent records the planned fire of a cron
//!   run); a cron run without one belongs to the fire whose window `[fire, next fire)` holds its
//!   start. Only `cron` runs count: a retry records its retry time as `planned_at`, and API, ad-hoc
//!   and once runs are requests, not fires;
//! - an agent-reported missed fire and the manager's own judgement are one verdict per
//!   (job, fire, node): a run that started wins over any missed report, the agent's reason wins over
//!   the manager's guess, and a report delivered twice counts once.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration, Local, Timelike, Utc};
use uuid::Uuid;

use crate::analysis::thousands;
use crate::job::Concurrency;
use crate::run::{RunRecord, RunStatus, Trigger};
use crate::schedule::{Schedule, Zone};

/// Most fires one [`expected_fires`] call yields: a 1 Hz schedule over a long window (a manager
/// judging after hours away) costs at most this many `next_after` searches per call. The caller
/// resumes from [`ExpectedFires::resume_from`] on its next pass.
pub const MAX_EXPECTED_FIRES: usize = 10_000;

/// Bounds of the default grace ([`default_grace`]).
pub const MIN_GRACE: Duration = Duration::seconds(5);
pub const MAX_GRACE: Duration = Duration::minutes(5);

/// The fires of `schedule` in `(from, to]`, each the [`Schedule::next_after`] of the one before,
/// in the schedule's zone: exactly the fires the agent's scheduler plans. At most
/// [`MAX_EXPECTED_FIRES`] are yielded; [`ExpectedFires::truncated`] then says more remain.
///
/// Daylight saving, as `next_after` (and therefore the agent) decides it:
/// - a local time that does not exist (spring forward: 29 March 2026 in Europe/Berlin, 02:00 →
///   03:00) fires once, at the next valid instant: a 02:30 job fires at 03:00 CEST that day;
/// - a fixed local time that happens twice (fall back: 25 October 2026, 03:00 → 02:00) fires
///   once, at its first occurrence: a 02:30 job fires at 02:30 CEST, not again at 02:30 CET;
/// - an interval schedule keeps its real-time rhythm through the repeated hour;
/// - a 03:00 job is untouched by either change (03:00 exists once on both days), so its gap to
///   the neighbouring fires is 23 h on 29 March and 25 h on 25 October.
///
/// A schedule in [`Zone::Local`] is evaluated in the zone of the machine that calls this: the
/// manager gets the agent's fires only when both share a zone.
pub fn expected_fires(
    schedule: &Schedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ExpectedFires<'_> {
    ExpectedFires {
        schedule,
        cursor: from,
        to,
        yielded: 0,
        truncated: false,
        done: false,
    }
}

/// The iterator [`expected_fires`] returns.
#[derive(Debug)]
pub struct ExpectedFires<'a> {
    schedule: &'a Schedule,
    cursor: DateTime<Utc>,
    to: DateTime<Utc>,
    yielded: usize,
    truncated: bool,
    done: bool,
}

impl ExpectedFires<'_> {
    /// True once the iterator stopped at [`MAX_EXPECTED_FIRES`] with fires left before `to`.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Where the next call should start: the last fire yielded (or `from` when none was).
    pub fn resume_from(&self) -> DateTime<Utc> {
        self.cursor
    }
}

impl Iterator for ExpectedFires<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        if self.done {
            return None;
        }
        let next = match self.schedule.next_after(self.cursor) {
            Some(next) if next <= self.to => next,
            _ => {
                self.done = true;
                return None;
            }
        };
        if self.yielded == MAX_EXPECTED_FIRES {
            self.truncated = true;
            self.done = true;
            return None;
        }
        self.yielded += 1;
        self.cursor = next;
        Some(next)
    }
}

/// The grace of the fire at `fire` when the job sets none: 10 % of the gap to the next fire, at
/// least [`MIN_GRACE`] and at most [`MAX_GRACE`]. A fire with no next one (a last fire) gets
/// [`MAX_GRACE`].
pub fn default_grace(schedule: &Schedule, fire: DateTime<Utc>) -> Duration {
    match schedule.next_after(fire) {
        Some(next) => ((next - fire) / 10).clamp(MIN_GRACE, MAX_GRACE),
        None => MAX_GRACE,
    }
}

/// The job's own `Grace` when it sets one, else [`default_grace`].
pub fn grace(schedule: &Schedule, fire: DateTime<Utc>, explicit: Option<Duration>) -> Duration {
    explicit.unwrap_or_else(|| default_grace(schedule, fire))
}

/// A host's standing at the fire, as the caller (the manager) knew it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Selected and expected, but not Ready at the fire: a fire without a run is missed for that
    /// reason.
    NotReady,
    /// Not expected to run this fire: paused or drained, outside a rollout's current stage, inside
    /// a maintenance window. Never reported missed.
    Excluded,
}

/// One host the job selects, at the fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAtFire {
    pub node_id: Uuid,
    pub readiness: Readiness,
}

/// What the judgement needs of a run record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedRun {
    pub run_id: Uuid,
    pub node_id: Uuid,
    pub trigger: Trigger,
    pub planned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub status: RunStatus,
}

impl From<&RunRecord> for ObservedRun {
    fn from(r: &RunRecord) -> ObservedRun {
        ObservedRun {
            run_id: r.run_id,
            node_id: r.node_id,
            trigger: r.trigger,
            planned_at: r.planned_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            status: r.status,
        }
    }
}

impl ObservedRun {
    /// True when this run is the one the fire at `fire` started (module doc: by `planned_at`, else
    /// by start within `[fire, next_fire)`; cron runs only).
    pub fn belongs_to(&self, fire: DateTime<Utc>, next_fire: Option<DateTime<Utc>>) -> bool {
        if self.trigger != Trigger::Cron {
            return false;
        }
        match (self.planned_at, self.started_at) {
            (Some(planned), _) => planned == fire,
            (None, Some(started)) => started >= fire && next_fire.is_none_or(|n| started < n),
            (None, None) => false,
        }
    }

    /// True when the run was alive at `t`: started at or before it and not ended by then.
    fn alive_at(&self, t: DateTime<Utc>) -> bool {
        self.started_at.is_some_and(|s| s <= t)
            && match self.ended_at {
                Some(end) => end > t,
                None => self.status == RunStatus::Running,
            }
    }
}

/// A fire the agent reports it did not run (it was down, or woke too late), with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedReport {
    pub node_id: Uuid,
    /// The fire, as the agent's `next_after` computed it.
    pub fire: DateTime<Utc>,
    pub reason: String,
}

/// Why a fire was missed on a host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum MissReason {
    /// The host was not Ready at the fire.
    NotReady,
    /// The agent reported the fire missed, with its reason (`agent down`, ...).
    Agent(String),
    /// The host was Ready and no run arrived.
    NoRun,
}

impl fmt::Display for MissReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissReason::NotReady => f.write_str("NotReady"),
            MissReason::Agent(reason) => f.write_str(reason),
            MissReason::NoRun => f.write_str("no run"),
        }
    }
}

/// The verdict on one host for one fire. When several apply, the first in this order wins:
/// `NotExpected`, `Skipped`, `Overrunning`, `Failed`, `Late`, `Running`, `Ok`; without a run,
/// `Pending` (within grace), then `Skipped` (a run still alive under `forbid`/`replace`), then
/// `Missed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Ended with a failure status (`failed`, `timeout`, `killed`, `lost`).
    Failed,
    Running,
    /// Running longer than `MaxDuration` at `now`.
    Overrunning {
        running_for: Duration,
    },
    /// Started after `fire + jitter + grace` (and did not fail or overrun).
    Late {
        late_by: Duration,
    },
    /// Not started because the previous run still lived (`Concurrency: forbid`): reported by the
    /// agent, or seen here as a run alive at the fire.
    Skipped,
    /// No run started within the grace.
    Missed {
        reason: MissReason,
    },
    /// No run yet, and the grace has not passed: nothing to say.
    Pending,
    /// The host was excluded from this fire.
    NotExpected,
}

impl Outcome {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Ok => OutcomeKind::Ok,
            Outcome::Failed => OutcomeKind::Failed,
            Outcome::Running => OutcomeKind::Running,
            Outcome::Overrunning { .. } => OutcomeKind::Overrunning,
            Outcome::Late { .. } => OutcomeKind::Late,
            Outcome::Skipped => OutcomeKind::Skipped,
            Outcome::Missed { .. } => OutcomeKind::Missed,
            Outcome::Pending => OutcomeKind::Pending,
            Outcome::NotExpected => OutcomeKind::NotExpected,
        }
    }
}

/// [`Outcome`] without its details, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutcomeKind {
    Ok,
    Failed,
    Running,
    Overrunning,
    Late,
    Skipped,
    Missed,
    Pending,
    NotExpected,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Ok => "ok",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Running => "running",
            OutcomeKind::Overrunning => "overrunning",
            OutcomeKind::Late => "late",
            OutcomeKind::Skipped => "skipped",
            OutcomeKind::Missed => "missed",
            OutcomeKind::Pending => "pending",
            OutcomeKind::NotExpected => "not expected",
        }
    }
}

/// One fire of one job, and the job's settings that judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fire {
    pub at: DateTime<Utc>,
    /// The fire after it (bounds the start-time match of a run without `planned_at`).
    pub next: Option<DateTime<Utc>>,
    pub grace: Duration,
    /// The job's `Jitter`: a run may start this much after the fire and still be on time.
    pub jitter: Duration,
    pub max_duration: Option<Duration>,
    pub concurrency: Concurrency,
}

impl Fire {
    /// The fire at `at` of a job with these settings, its next fire and grace taken from
    /// `schedule` ([`grace`]).
    pub fn new(
        schedule: &Schedule,
        at: DateTime<Utc>,
        explicit_grace: Option<Duration>,
        jitter: Duration,
        max_duration: Option<Duration>,
        concurrency: Concurrency,
    ) -> Fire {
        Fire {
            at,
            next: schedule.next_after(at),
            grace: grace(schedule, at, explicit_grace),
            jitter,
            max_duration,
            concurrency,
        }
    }

    /// The last instant a run may start and still be on time.
    pub fn deadline(&self) -> DateTime<Utc> {
        self.at + self.jitter + self.grace
    }
}

/// One host's verdict, with the run it rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVerdict {
    pub node_id: Uuid,
    pub outcome: Outcome,
    /// The fire's run, or the run still alive that caused a skip.
    pub run_id: Option<Uuid>,
}

/// Inputs of [`judge_fire`] that are not sorted by node id as it requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JudgeError {
    #[error("hosts must be sorted by node id, each once")]
    HostsUnsorted,
    #[error("runs must be sorted by node id")]
    RunsUnsorted,
    #[error("missed reports must be sorted by node id")]
    MissedUnsorted,
}

/// Judges one fire on every host the job selects, in one merge.
///
/// - `hosts`: every selected host with its [`Readiness`] at the fire, sorted by node id, each once;
/// - `runs`: this job's runs on these hosts that may belong to the fire or were alive at it
///   (`planned_at == fire`, a start in `[fire, next)`, or still running at the fire), sorted by
///   node id; runs of other hosts are ignored;
/// - `missed`: the agents' missed reports for this job, sorted by node id; reports of other fires
///   are ignored, duplicates count once.
///
/// Returns one verdict per host, in `hosts`' order.
pub fn judge_fire(
    fire: &Fire,
    now: DateTime<Utc>,
    hosts: &[HostAtFire],
    runs: &[ObservedRun],
    missed: &[MissedReport],
) -> Result<Vec<HostVerdict>, JudgeError> {
    if !hosts.is_sorted_by(|a, b| a.node_id < b.node_id) {
        return Err(JudgeError::HostsUnsorted);
    }
    if !runs.is_sorted_by_key(|r| r.node_id) {
        return Err(JudgeError::RunsUnsorted);
    }
    if !missed.is_sorted_by_key(|m| m.node_id) {
        return Err(JudgeError::MissedUnsorted);
    }
    let mut runs = runs;
    let mut missed = missed;
    let mut out = Vec::with_capacity(hosts.len());
    for host in hosts {
        let host_runs = take_node(&mut runs, host.node_id, |r| r.node_id);
        let host_missed = take_node(&mut missed, host.node_id, |m| m.node_id);
        out.push(judge_host(fire, now, host, host_runs, host_missed));
    }
    Ok(out)
}

/// Skips the entries of `slice` before `node`, then splits off and returns those of `node`.
fn take_node<'a, T>(slice: &mut &'a [T], node: Uuid, key: impl Fn(&T) -> Uuid) -> &'a [T] {
    let start = slice.partition_point(|x| key(x) < node);
    let rest = &slice[start..];
    let len = rest.partition_point(|x| key(x) == node);
    let (mine, after) = rest.split_at(len);
    *slice = after;
    mine
}

fn judge_host(
    fire: &Fire,
    now: DateTime<Utc>,
    host: &HostAtFire,
    runs: &[ObservedRun],
    missed: &[MissedReport],
) -> HostVerdict {
    let verdict = |outcome, run_id| HostVerdict {
        node_id: host.node_id,
        outcome,
        run_id,
    };
    if host.readiness == Readiness::Excluded {
        return verdict(Outcome::NotExpected, None);
    }
    // The fire's own run: the earliest started, a skip record (no start) last.
    let own = runs
        .iter()
        .filter(|r| r.status != RunStatus::Missed && r.belongs_to(fire.at, fire.next))
        .min_by_key(|r| (r.started_at.is_none(), r.started_at));
    if let Some(run) = own {
        return verdict(judge_run(fire, now, run), Some(run.run_id));
    }
    if let Some(report) = missed.iter().find(|m| m.fire == fire.at) {
        return verdict(
            Outcome::Missed {
                reason: MissReason::Agent(report.reason.clone()),
            },
            None,
        );
    }
    if now <= fire.deadline() {
        return verdict(Outcome::Pending, None);
    }
    if fire.concurrency != Concurrency::Allow
        && let Some(blocking) = runs.iter().find(|r| r.alive_at(fire.at))
    {
        return verdict(Outcome::Skipped, Some(blocking.run_id));
    }
    let reason = match host.readiness {
        Readiness::NotReady => MissReason::NotReady,
        _ => MissReason::NoRun,
    };
    verdict(Outcome::Missed { reason }, None)
}

fn judge_run(fire: &Fire, now: DateTime<Utc>, run: &ObservedRun) -> Outcome {
    if run.status == RunStatus::Skipped {
        return Outcome::Skipped;
    }
    if run.status == RunStatus::Running
        && let (Some(max), Some(started)) = (fire.max_duration, run.started_at)
        && now - started > max
    {
        return Outcome::Overrunning {
            running_for: now - started,
        };
    }
    if run.status.is_failure() {
        return Outcome::Failed;
    }
    if let Some(started) = run.started_at
        && started > fire.deadline()
    {
        return Outcome::Late {
            late_by: started - fire.deadline(),
        };
    }
    if run.status == RunStatus::Running {
        Outcome::Running
    } else {
        Outcome::Ok
    }
}

/// The verdicts of one job fire, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireSummary {
    pub job: String,
    pub fire: DateTime<Utc>,
    /// Hosts per outcome; kinds with no host are absent.
    pub counts: BTreeMap<OutcomeKind, usize>,
    /// Missed hosts per reason.
    pub missed_by_reason: BTreeMap<MissReason, usize>,
}

impl FireSummary {
    pub fn new(job: &str, fire: DateTime<Utc>, verdicts: &[HostVerdict]) -> FireSummary {
        let mut counts = BTreeMap::new();
        let mut missed_by_reason = BTreeMap::new();
        for v in verdicts {
            *counts.entry(v.outcome.kind()).or_insert(0) += 1;
            if let Outcome::Missed { reason } = &v.outcome {
                *missed_by_reason.entry(reason.clone()).or_insert(0) += 1;
            }
        }
        FireSummary {
            job: job.to_string(),
            fire,
            counts,
            missed_by_reason,
        }
    }

    pub fn count(&self, kind: OutcomeKind) -> usize {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// Hosts expected to run the fire (all but the excluded ones).
    pub fn expected(&self) -> usize {
        self.counts
            .iter()
            .filter(|(k, _)| **k != OutcomeKind::NotExpected)
            .map(|(_, n)| n)
            .sum()
    }

    /// One sentence per problem (missed, skipped, late, overrunning), the fire's time shown in
    /// `zone` (the job's): `backup.sh missed its 03:00 fire on 12/2,000 hosts (9 NotReady, 3 no
    /// run)`. Empty when nothing went wrong.
    pub fn sentences(&self, zone: Zone) -> Vec<String> {
        let at = local_time(self.fire, zone);
        let of = thousands(self.expected());
        let mut out = Vec::new();
        let missed = self.count(OutcomeKind::Missed);
        if missed > 0 {
            let reasons: Vec<String> = self
                .missed_by_reason
                .iter()
                .map(|(reason, n)| format!("{} {reason}", thousands(*n)))
                .collect();
            out.push(format!(
                "{} missed its {at} fire on {}/{of} hosts ({})",
                self.job,
                thousands(missed),
                reasons.join(", ")
            ));
        }
        for (kind, what) in [
            (
                OutcomeKind::Skipped,
                "skipped its {at} fire (previous run still running, or held by a pause, drain or maintenance window)",
            ),
            (OutcomeKind::Late, "started its {at} fire late"),
            (OutcomeKind::Overrunning, "is overrunning its {at} fire"),
        ] {
            let n = self.count(kind);
            if n > 0 {
                out.push(format!(
                    "{} {} on {}/{of} hosts",
                    self.job,
                    what.replace("{at}", &at),
                    thousands(n)
                ));
            }
        }
        out
    }
}

/// How a fire's time is shown to the operator: `HH:MM` (or `HH:MM:SS` off the minute) in
/// `zone`, the job's.
pub fn fire_label(t: DateTime<Utc>, zone: Zone) -> String {
    local_time(t, zone)
}

/// `HH:MM` (or `HH:MM:SS` when the fire is not on a whole minute) in `zone`.
fn local_time(t: DateTime<Utc>, zone: Zone) -> String {
    let (hms, whole_minute) = match zone {
        Zone::Local => {
            let l = t.with_timezone(&Local);
            (l.format("%H:%M:%S").to_string(), l.second() == 0)
        }
        Zone::Named(tz) => {
            let l = t.with_timezone(&tz);
            (l.format("%H:%M:%S").to_string(), l.second() == 0)
        }
    };
    if whole_minute {
        hms[..5].to_string()
    } else {
        hms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::Tz;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn node(i: u128) -> Uuid {
        Uuid::from_u128(i)
    }

    fn ready(i: u128) -> HostAtFire {
        HostAtFire {
            node_id: node(i),
            readiness: Readiness::Ready,
        }
    }

    fn utc_schedule(expr: &str) -> Schedule {
        Schedule::parse(expr, Zone::Named(Tz::UTC)).unwrap()
    }

    fn berlin(expr: &str) -> Schedule {
        Schedule::parse(expr, Zone::Named(Tz::Europe__Berlin)).unwrap()
    }

    /// A cron run of `fire` on host `host`, as the agent records it.
    fn run(
        host: u128,
        fire: DateTime<Utc>,
        started: Option<DateTime<Utc>>,
        ended: Option<DateTime<Utc>>,
        status: RunStatus,
    ) -> ObservedRun {
        ObservedRun {
            run_id: Uuid::new_v4(),
            node_id: node(host),
            trigger: Trigger::Cron,
            planned_at: Some(fire),
            started_at: started,
            ended_at: ended,
            status,
        }
    }

    fn ok_run(host: u128, fire: DateTime<Utc>) -> ObservedRun {
        let start = fire + Duration::milliseconds(100);
        run(
            host,
            fire,
            Some(start),
            Some(start + Duration::milliseconds(200)),
            RunStatus::Ok,
        )
    }

    fn fire_of(schedule: &Schedule, at: DateTime<Utc>) -> Fire {
        Fire::new(
            schedule,
            at,
            None,
            Duration::zero(),
            None,
            Concurrency::Forbid,
        )
    }

    fn outcomes(verdicts: &[HostVerdict]) -> Vec<Outcome> {
        verdicts.iter().map(|v| v.outcome.clone()).collect()
    }

    #[test]
    fn one_hz_job_with_one_host_silent_for_ten_seconds_misses_only_that_hosts_fires() {
        let schedule = utc_schedule("* * * * * * *");
        let t0 = utc(2026, 5, 4, 12, 0, 0);
        let (from, to) = (t0, t0 + Duration::seconds(30));
        let silent =
            |f: DateTime<Utc>| f > t0 + Duration::seconds(10) && f <= t0 + Duration::seconds(20);
        let fires: Vec<_> = expected_fires(&schedule, from, to).collect();
        assert_eq!(fires.len(), 30);
        let hosts = [ready(1), ready(2), ready(3)];
        let mut runs = Vec::new();
        for &f in &fires {
            for h in 1..=3 {
                if !(h == 2 && silent(f)) {
                    runs.push(ok_run(h, f));
                }
            }
        }
        runs.sort_by_key(|r| r.node_id);
        let now = to + Duration::seconds(10);
        let mut missed = Vec::new();
        for &f in &fires {
            let fire = fire_of(&schedule, f);
            assert_eq!(fire.grace, MIN_GRACE, "10 % of 1 s is raised to 5 s");
            let verdicts = judge_fire(&fire, now, &hosts, &runs, &[]).unwrap();
            for v in &verdicts {
                match &v.outcome {
                    Outcome::Ok => {}
                    Outcome::Missed { reason } => {
                        assert_eq!(*reason, MissReason::NoRun);
                        missed.push((v.node_id, f));
                    }
                    other => panic!("{f}: {other:?}"),
                }
            }
        }
        let expected: Vec<_> = fires
            .iter()
            .filter(|f| silent(**f))
            .map(|&f| (node(2), f))
            .collect();
        assert_eq!(expected.len(), 10);
        assert_eq!(missed, expected);
    }

    #[test]
    fn a_job_saved_seconds_ago_reports_nothing_until_its_grace_has_passed() {
        let schedule = utc_schedule("0 * * * * * *");
        let saved = utc(2026, 5, 4, 12, 0, 58);
        // 5 s after saving: one fire (12:01:00) has come, 3 s ago.
        let now = saved + Duration::seconds(5);
        let fires: Vec<_> = expected_fires(&schedule, saved, now).collect();
        assert_eq!(fires, vec![utc(2026, 5, 4, 12, 1, 0)]);
        let fire = fire_of(&schedule, fires[0]);
        assert_eq!(fire.grace, Duration::seconds(6), "10 % of a minute");
        let hosts = [
            ready(1),
            HostAtFire {
                node_id: node(2),
                readiness: Readiness::NotReady,
            },
        ];
        let verdicts = judge_fire(&fire, now, &hosts, &[], &[]).unwrap();
        assert_eq!(
            outcomes(&verdicts),
            vec![Outcome::Pending, Outcome::Pending]
        );
        let summary = FireSummary::new("backup.sh", fire.at, &verdicts);
        assert!(summary.sentences(Zone::Named(Tz::UTC)).is_empty());
        // Once the grace has passed, the same inputs are judged missed.
        let later = fire.deadline() + Duration::seconds(1);
        let verdicts = judge_fire(&fire, later, &hosts, &[], &[]).unwrap();
        assert_eq!(
            outcomes(&verdicts),
            vec![
                Outcome::Missed {
                    reason: MissReason::NoRun
                },
                Outcome::Missed {
                    reason: MissReason::NotReady
                }
            ]
        );
    }

    #[test]
    fn a_start_after_the_grace_is_late_unless_the_jitter_allows_it() {
        let schedule = utc_schedule("0 * * * * * *");
        let at = utc(2026, 5, 4, 12, 1, 0);
        let started = at + Duration::seconds(10);
        let runs = [run(
            1,
            at,
            Some(started),
            Some(started + Duration::seconds(1)),
            RunStatus::Ok,
        )];
        let now = at + Duration::seconds(30);
        let fire = fire_of(&schedule, at);
        let verdicts = judge_fire(&fire, now, &[ready(1)], &runs, &[]).unwrap();
        assert_eq!(
            verdicts[0].outcome,
            Outcome::Late {
                late_by: Duration::seconds(4)
            }
        );
        assert_eq!(verdicts[0].run_id, Some(runs[0].run_id));
        let summary = FireSummary::new("backup.sh", at, &verdicts);
        assert_eq!(
            summary.sentences(Zone::Named(Tz::UTC)),
            vec!["backup.sh started its 12:01 fire late on 1/1 hosts".to_string()]
        );

        let jittered = Fire::new(
            &schedule,
            at,
            None,
            Duration::seconds(15),
            None,
            Concurrency::Forbid,
        );
        let verdicts = judge_fire(&jittered, now, &[ready(1)], &runs, &[]).unwrap();
        assert_eq!(verdicts[0].outcome, Outcome::Ok);

        let explicit = Fire::new(
            &schedule,
            at,
            Some(Duration::seconds(20)),
            Duration::zero(),
            None,
            Concurrency::Forbid,
        );
        let verdicts = judge_fire(&explicit, now, &[ready(1)], &runs, &[]).unwrap();
        assert_eq!(verdicts[0].outcome, Outcome::Ok, "an explicit grace wins");
    }

    #[test]
    fn a_hung_job_under_forbid_skips_its_fires_and_overruns_its_max_duration() {
        let schedule = utc_schedule("0 * * * * * *");
        let f1 = utc(2026, 5, 4, 12, 1, 0);
        let f2 = f1 + Duration::minutes(1);
        let f3 = f2 + Duration::minutes(1);
        let hung = run(
            1,
            f1,
            Some(f1 + Duration::milliseconds(5)),
            None,
            RunStatus::Running,
        );
        // The agent records the first skip per blocking run; later ones are only counted.
        let skip = run(1, f2, None, None, RunStatus::Skipped);
        let mut runs = vec![hung, skip];
        runs.sort_by_key(|r| r.node_id);
        let now = f3 + Duration::seconds(30);
        let max = Duration::seconds(90);
        let judge = |at, max_duration, concurrency| {
            let fire = Fire::new(
                &schedule,
                at,
                None,
                Duration::zero(),
                max_duration,
                concurrency,
            );
            judge_fire(&fire, now, &[ready(1)], &runs, &[]).unwrap()[0].clone()
        };
        let v1 = judge(f1, Some(max), Concurrency::Forbid);
        assert_eq!(
            v1.outcome,
            Outcome::Overrunning {
                running_for: now - hung.started_at.unwrap()
            }
        );
        assert_eq!(
            judge(f1, None, Concurrency::Forbid).outcome,
            Outcome::Running
        );
        let v2 = judge(f2, Some(max), Concurrency::Forbid);
        assert_eq!(v2.outcome, Outcome::Skipped);
        assert_eq!(v2.run_id, Some(skip.run_id));
        let v3 = judge(f3, Some(max), Concurrency::Forbid);
        assert_eq!(v3.outcome, Outcome::Skipped, "inferred from the live run");
        assert_eq!(v3.run_id, Some(hung.run_id));
        // Under `allow` a live run does not stop a fire: no run is a miss.
        assert_eq!(
            judge(f3, Some(max), Concurrency::Allow).outcome,
            Outcome::Missed {
                reason: MissReason::NoRun
            }
        );
    }

    #[test]
    fn the_issue_sentence_counts_missed_hosts_by_reason_out_of_the_expected_ones() {
        let schedule = berlin("0 0 3 * * * *");
        let at = utc(2026, 2, 12, 2, 0, 0); // 03:00 CET
        assert!(schedule.matches(at));
        let mut hosts = Vec::new();
        let mut runs = Vec::new();
        for i in 0..2_001u128 {
            let readiness = match i {
                0..9 => Readiness::NotReady,
                2_000 => Readiness::Excluded,
                _ => Readiness::Ready,
            };
            hosts.push(HostAtFire {
                node_id: node(i),
                readiness,
            });
            if (12..2_000).contains(&i) {
                runs.push(ok_run(i, at));
            }
        }
        let fire = fire_of(&schedule, at);
        assert_eq!(fire.grace, MAX_GRACE);
        let verdicts = judge_fire(&fire, at + Duration::hours(1), &hosts, &runs, &[]).unwrap();
        assert_eq!(verdicts.len(), 2_001);
        assert_eq!(verdicts[2_000].outcome, Outcome::NotExpected);
        let summary = FireSummary::new("backup.sh", at, &verdicts);
        assert_eq!(summary.expected(), 2_000);
        assert_eq!(summary.count(OutcomeKind::Ok), 1_988);
        assert_eq!(summary.count(OutcomeKind::NotExpected), 1);
        assert_eq!(
            summary.sentences(schedule.zone()),
            vec![
                "backup.sh missed its 03:00 fire on 12/2,000 hosts (9 NotReady, 3 no run)"
                    .to_string()
            ]
        );
    }

    #[test]
    fn an_agent_missed_report_and_the_managers_judgement_are_one_verdict_per_node() {
        let schedule = utc_schedule("0 * * * * * *");
        let at = utc(2026, 5, 4, 12, 1, 0);
        let hosts = [
            HostAtFire {
                node_id: node(1),
                readiness: Readiness::NotReady,
            },
            ready(2),
            ready(3),
        ];
        let report = |host, fire| MissedReport {
            node_id: node(host),
            fire,
            reason: "agent down".into(),
        };
        let missed = [
            // Delivered twice (the outbox delivers at least once).
            report(1, at),
            report(1, at),
            // A report of another fire says nothing about this one.
            report(2, at - Duration::minutes(1)),
            // A host reported missed that did run: the run is the evidence.
            report(3, at),
        ];
        let runs = [ok_run(3, at)];
        let fire = fire_of(&schedule, at);
        let now = at + Duration::minutes(5);
        let verdicts = judge_fire(&fire, now, &hosts, &runs, &missed).unwrap();
        assert_eq!(
            outcomes(&verdicts),
            vec![
                Outcome::Missed {
                    reason: MissReason::Agent("agent down".into())
                },
                Outcome::Missed {
                    reason: MissReason::NoRun
                },
                Outcome::Ok,
            ]
        );
        let summary = FireSummary::new("backup.sh", at, &verdicts);
        assert_eq!(summary.count(OutcomeKind::Missed), 2);
        assert_eq!(
            summary.sentences(Zone::Named(Tz::UTC)),
            vec![
                "backup.sh missed its 12:01 fire on 2/3 hosts (1 agent down, 1 no run)".to_string()
            ]
        );
        // The agent's report counts before the grace has passed; the manager's guess does not.
        let early = at + Duration::seconds(1);
        let verdicts = judge_fire(&fire, early, &hosts, &runs, &missed).unwrap();
        assert_eq!(
            outcomes(&verdicts)[..2],
            [
                Outcome::Missed {
                    reason: MissReason::Agent("agent down".into())
                },
                Outcome::Pending
            ]
        );
    }

    #[test]
    fn runs_are_matched_to_fires_by_planned_at_else_by_start_and_only_cron_runs_count() {
        let schedule = utc_schedule("0 * * * * * *");
        let at = utc(2026, 5, 4, 12, 1, 0);
        let next = at + Duration::minutes(1);
        let mut r = ok_run(1, at);
        assert!(r.belongs_to(at, Some(next)));
        assert!(!r.belongs_to(next, Some(next + Duration::minutes(1))));
        // An older record without planned_at: by its start within [fire, next fire).
        r.planned_at = None;
        r.started_at = Some(at + Duration::seconds(59));
        assert!(r.belongs_to(at, Some(next)));
        r.started_at = Some(next);
        assert!(!r.belongs_to(at, Some(next)));
        assert!(r.belongs_to(next, None));
        // A retry records its retry time; API and ad-hoc runs are not fires.
        for trigger in [Trigger::Retry, Trigger::Api, Trigger::Adhoc, Trigger::Once] {
            let mut other = ok_run(1, at);
            other.trigger = trigger;
            assert!(!other.belongs_to(at, Some(next)), "{trigger:?}");
        }
        // A failed run is Failed even when late.
        let failed = run(
            1,
            at,
            Some(at + Duration::seconds(30)),
            Some(at + Duration::seconds(31)),
            RunStatus::Timeout,
        );
        let fire = fire_of(&schedule, at);
        let verdicts = judge_fire(&fire, next, &[ready(1)], &[failed], &[]).unwrap();
        assert_eq!(verdicts[0].outcome, Outcome::Failed);
    }

    #[test]
    fn unsorted_inputs_are_refused() {
        let schedule = utc_schedule("0 * * * * * *");
        let at = utc(2026, 5, 4, 12, 1, 0);
        let fire = fire_of(&schedule, at);
        assert_eq!(
            judge_fire(&fire, at, &[ready(2), ready(1)], &[], &[]),
            Err(JudgeError::HostsUnsorted)
        );
        assert_eq!(
            judge_fire(&fire, at, &[ready(1), ready(1)], &[], &[]),
            Err(JudgeError::HostsUnsorted)
        );
        assert_eq!(
            judge_fire(&fire, at, &[], &[ok_run(2, at), ok_run(1, at)], &[]),
            Err(JudgeError::RunsUnsorted)
        );
        let report = |h| MissedReport {
            node_id: node(h),
            fire: at,
            reason: "agent down".into(),
        };
        assert_eq!(
            judge_fire(&fire, at, &[], &[], &[report(2), report(1)]),
            Err(JudgeError::MissedUnsorted)
        );
    }

    #[test]
    fn a_long_window_of_a_one_hz_schedule_is_capped_and_resumable() {
        let schedule = utc_schedule("* * * * * * *");
        let from = utc(2026, 5, 4, 0, 0, 0);
        let to = from + Duration::days(1);
        let mut fires = expected_fires(&schedule, from, to);
        let first: Vec<_> = fires.by_ref().collect();
        assert_eq!(first.len(), MAX_EXPECTED_FIRES);
        assert!(fires.truncated());
        assert_eq!(fires.next(), None, "a truncated iterator stays ended");
        let resume = fires.resume_from();
        assert_eq!(resume, *first.last().unwrap());
        let mut rest = expected_fires(&schedule, resume, resume + Duration::seconds(3));
        assert_eq!(rest.next(), Some(resume + Duration::seconds(1)));
        assert_eq!(rest.by_ref().count(), 2);
        assert!(!rest.truncated());
    }

    #[test]
    fn default_grace_is_a_tenth_of_the_interval_within_bounds() {
        let at = utc(2026, 5, 4, 12, 0, 0);
        let g = |expr: &str| default_grace(&utc_schedule(expr), at);
        assert_eq!(g("* * * * * * *"), MIN_GRACE);
        assert_eq!(g("0 * * * * * *"), Duration::seconds(6));
        assert_eq!(g("0 */10 * * * * *"), Duration::minutes(1));
        assert_eq!(g("0 0 * * * * *"), MAX_GRACE);
        // The fire's own gap: a job at 12:00 and 12:01 has a 1-minute gap after 12:00.
        assert_eq!(g("0 0,1 12 * * * *"), Duration::seconds(6));
        // A last fire has no next one.
        assert_eq!(
            default_grace(&utc_schedule("0 0 12 4 5 * 2026"), at),
            MAX_GRACE
        );
    }

    /// A job at 03:00 Europe/Berlin on the days the clocks change in 2026, judged by the
    /// `next_after` the agent fires by (no system clock is read or moved).
    #[test]
    fn berlin_0300_on_the_2026_dst_days_is_judged_by_the_agents_next_after() {
        let schedule = berlin("0 0 3 * * * *");
        // 29 March: 02:00 CET → 03:00 CEST. 03:00 exists once, at 01:00 UTC.
        let march: Vec<_> = expected_fires(
            &schedule,
            utc(2026, 3, 28, 0, 0, 0),
            utc(2026, 3, 31, 0, 0, 0),
        )
        .collect();
        assert_eq!(
            march,
            vec![
                utc(2026, 3, 28, 2, 0, 0),
                utc(2026, 3, 29, 1, 0, 0),
                utc(2026, 3, 30, 1, 0, 0),
            ]
        );
        assert_eq!(march[1] - march[0], Duration::hours(23));
        // 25 October: 03:00 CEST → 02:00 CET. 03:00 exists once, at 02:00 UTC.
        let october: Vec<_> = expected_fires(
            &schedule,
            utc(2026, 10, 24, 0, 0, 0),
            utc(2026, 10, 27, 0, 0, 0),
        )
        .collect();
        assert_eq!(
            october,
            vec![
                utc(2026, 10, 24, 1, 0, 0),
                utc(2026, 10, 25, 2, 0, 0),
                utc(2026, 10, 26, 2, 0, 0),
            ]
        );
        assert_eq!(october[1] - october[0], Duration::hours(25));
        // Each is the agent's own next fire, searched from any instant before it.
        for &f in march.iter().chain(&october) {
            assert_eq!(schedule.next_after(f - Duration::hours(20)), Some(f));
            assert_eq!(default_grace(&schedule, f), MAX_GRACE);
        }

        // The times the clocks skip and repeat: 02:30.
        let half_past_two = berlin("0 30 2 * * * *");
        let spring: Vec<_> = expected_fires(
            &half_past_two,
            utc(2026, 3, 28, 12, 0, 0),
            utc(2026, 3, 29, 12, 0, 0),
        )
        .collect();
        // 02:30 does not exist on 29 March: it fires once, at the next valid instant, 03:00 CEST.
        assert_eq!(spring, vec![utc(2026, 3, 29, 1, 0, 0)]);
        let autumn: Vec<_> = expected_fires(
            &half_past_two,
            utc(2026, 10, 24, 12, 0, 0),
            utc(2026, 10, 25, 12, 0, 0),
        )
        .collect();
        // 02:30 happens twice on 25 October: it fires once, at the first (CEST, 00:30 UTC).
        assert_eq!(autumn, vec![utc(2026, 10, 25, 0, 30, 0)]);

        // The fire of 25 October judged on two hosts: one ran it, one was down.
        let at = october[1];
        let hosts = [
            ready(1),
            HostAtFire {
                node_id: node(2),
                readiness: Readiness::NotReady,
            },
        ];
        let fire = fire_of(&schedule, at);
        let verdicts = judge_fire(
            &fire,
            at + Duration::hours(1),
            &hosts,
            &[ok_run(1, at)],
            &[],
        )
        .unwrap();
        let summary = FireSummary::new("backup.sh", at, &verdicts);
        assert_eq!(
            summary.sentences(schedule.zone()),
            vec!["backup.sh missed its 03:00 fire on 1/2 hosts (1 NotReady)".to_string()]
        );
    }
}
