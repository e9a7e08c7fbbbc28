//! Pauses, drains and maintenance windows (issue 23): temporary stops of scheduled fires that,
//! unlike `disable`, keep the job and its running processes. The manager stores them (replicated)
//! and hands each agent the ones in force with its sync answer ([`crate::agent::DesiredState::holds`]);
//! the agent decides at each fire, on its own clock, whether the fire is held, and records a held
//! fire as a `skipped` run whose error is the reason ([`Holds::why_held`]).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::schedule::{Schedule, Zone};

/// What a pause or a window covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldScope {
    /// Every job on every host.
    All,
    /// One job, on every host it runs on.
    Job(String),
    /// Every job on the hosts with this label (the agent's own merged with manager-set).
    Label { key: String, value: String },
}

impl HoldScope {
    /// The scope of `--all`, `--job J` or `--label k=v` (exactly one of them).
    pub fn from_flags(
        all: bool,
        job: Option<&str>,
        label: Option<&str>,
    ) -> Result<HoldScope, String> {
        match (all, job, label) {
            (true, None, None) => Ok(HoldScope::All),
            (false, Some(j), None) => {
                let j = j.trim();
                if j.is_empty() {
                    return Err("--job needs a job name".into());
                }
                Ok(HoldScope::Job(j.to_string()))
            }
            (false, None, Some(l)) => HoldScope::label(l),
            (false, None, None) => Err("name what it covers: --all, --job J or --label k=v".into()),
            _ => Err("give only one of --all, --job J and --label k=v".into()),
        }
    }

    /// `k=v` as a label scope.
    pub fn label(text: &str) -> Result<HoldScope, String> {
        match text.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => Ok(HoldScope::Label {
                key: k.trim().to_string(),
                value: v.trim().to_string(),
            }),
            _ => Err(format!("label {text:?}: expected key=value")),
        }
    }

    /// Checks names and sizes (the manager refuses anything else with a 400).
    pub fn check(&self) -> Result<(), String> {
        let ok = |s: &str| !s.is_empty() && s.len() <= 253 && !s.chars().any(char::is_control);
        match self {
            HoldScope::All => Ok(()),
            HoldScope::Job(j) if ok(j) => Ok(()),
            HoldScope::Job(j) => Err(format!("job name {j:?} is not valid")),
            HoldScope::Label { key, value } if ok(key) && ok(value) && !key.contains('=') => Ok(()),
            HoldScope::Label { key, value } => Err(format!("label {key}={value} is not valid")),
        }
    }

    /// True when a fire of `job` on a host with `labels` is covered.
    pub fn covers(&self, job: &str, labels: &BTreeMap<String, String>) -> bool {
        match self {
            HoldScope::All => true,
            HoldScope::Job(j) => j == job,
            HoldScope::Label { key, value } => labels.get(key) == Some(value),
        }
    }

    /// The form tables show: `all`, `job=NAME`, `label:k=v`.
    pub fn text(&self) -> String {
        match self {
            HoldScope::All => "all".into(),
            HoldScope::Job(j) => format!("job={j}"),
            HoldScope::Label { key, value } => format!("label:{key}={value}"),
        }
    }
}

/// A replicated pause (`agentcli pause`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub scope: HoldScope,
    /// It ends by itself at this time (judged on the agent's clock); `None`: until `resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    pub by: String,
    pub at: DateTime<Utc>,
}

impl Pause {
    pub fn active_at(&self, t: DateTime<Utc>) -> bool {
        self.until.is_none_or(|u| t < u)
    }

    /// The reason a held fire's record carries.
    pub fn reason(&self) -> String {
        match self.until {
            Some(u) => format!(
                "paused by {} until {}",
                self.by,
                u.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            None => format!("paused by {} until resumed", self.by),
        }
    }
}

/// A maintenance window (`agentcli window add`): from each fire of `cron` (UTC) for
/// `duration_secs`, matching jobs do not fire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub name: String,
    pub cron: String,
    pub duration_secs: u64,
    pub scope: HoldScope,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// Longest maintenance window.
pub const MAX_WINDOW_SECS: u64 = 366 * 24 * 3600;

/// The zone window schedules are read in.
pub fn window_zone() -> Zone {
    Zone::Named(chrono_tz::UTC)
}

/// Checks a window's name, schedule and duration: a window that never opens, or opens for no
/// time, is refused. Returns its next opening after `now`.
pub fn check_window(
    name: &str,
    cron: &str,
    duration_secs: u64,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "window name {name:?}: use 1-64 letters, digits, '-', '_' or '.'"
        ));
    }
    if duration_secs == 0 {
        return Err("--duration must be more than 0 (e.g. 30m, 2h)".into());
    }
    if duration_secs > MAX_WINDOW_SECS {
        return Err("--duration is at most 366 days".into());
    }
    let schedule = Schedule::parse(cron, window_zone()).map_err(|e| format!("--cron: {e}"))?;
    let next = schedule
        .check_fires(now)
        .map_err(|_| format!("--cron {cron:?} never fires again: the window would never open"))?;
    // A window as long as the gap to the next opening reopens before it closes: from then on it
    // never closes, which is a pause in disguise (and one that `resume` cannot end).
    if let Some((from, gap)) = shortest_gap(&schedule, next)
        && duration_secs >= gap
    {
        let text = |secs: u64| crate::units::format_duration(std::time::Duration::from_secs(secs));
        return Err(format!(
            "--duration {} is not shorter than the {} between two openings of --cron {cron:?} \
             (from {}): the window would never close; give a shorter --duration, or use \
             'agentcli pause' to hold jobs until resumed",
            text(duration_secs),
            text(gap),
            from.to_rfc3339_opts(SecondsFormat::Secs, true)
        ));
    }
    Ok(next)
}

/// How many upcoming openings [`check_window`] compares: enough to see a schedule's pattern over
/// weeks for hourly windows and years for daily ones, while bounding the work of one request.
const GAP_FIRES: usize = 1000;

/// The shortest time between consecutive fires among the first [`GAP_FIRES`] from `first`, with
/// the fire it starts at; `None` when the schedule fires only once.
fn shortest_gap(schedule: &Schedule, first: DateTime<Utc>) -> Option<(DateTime<Utc>, u64)> {
    let mut best: Option<(DateTime<Utc>, u64)> = None;
    let mut at = first;
    for _ in 0..GAP_FIRES {
        let Some(next) = schedule.next_after(at) else {
            break;
        };
        let gap = u64::try_from((next - at).num_seconds()).unwrap_or(0);
        if best.is_none_or(|(_, b)| gap < b) {
            best = Some((at, gap));
        }
        at = next;
    }
    best
}

impl Window {
    fn schedule(&self) -> Option<Schedule> {
        Schedule::parse(&self.cron, window_zone()).ok()
    }

    /// The opening of the window `t` falls in (`start <= t < start + duration`), if any.
    pub fn open_at(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let d = chrono::Duration::seconds(i64::try_from(self.duration_secs).ok()?);
        // The first opening strictly after t - d: t < start + d. It covers t if start <= t.
        let start = self.schedule()?.next_after(t - d)?;
        (start <= t).then_some(start)
    }

    /// The next opening after `now` (for `window list`).
    pub fn next_open(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule()?.next_after(now)
    }

    pub fn reason(&self) -> String {
        format!("maintenance window {}", self.name)
    }
}

/// What an agent is told with each full sync answer: the pauses and windows in force for the
/// fleet (each covers jobs or labels; the agent checks against its own), and whether this node
/// is drained.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holds {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pauses: Vec<Pause>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// The reason a drained node's fires carry.
pub const DRAINING: &str = "node draining";

impl Holds {
    pub fn is_empty(&self) -> bool {
        self.pauses.is_empty() && self.windows.is_empty() && !self.draining
    }

    /// Why a fire of `job` planned at `at` on a host with `labels` must not start, if it must
    /// not: the node drains, a pause in force covers it, or a window covering it is open.
    pub fn why_held(
        &self,
        job: &str,
        labels: &BTreeMap<String, String>,
        at: DateTime<Utc>,
    ) -> Option<String> {
        if self.draining {
            return Some(DRAINING.to_string());
        }
        if let Some(p) = self
            .pauses
            .iter()
            .find(|p| p.active_at(at) && p.scope.covers(job, labels))
        {
            return Some(p.reason());
        }
        self.windows
            .iter()
            .find(|w| w.scope.covers(job, labels) && w.open_at(at).is_some())
            .map(Window::reason)
    }
}

/// `POST /v1/pauses`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PauseRequest {
    pub scope: HoldScope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

/// `POST /v1/pauses/resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeRequest {
    pub scope: HoldScope,
}

/// `PUT /v1/windows/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowRequest {
    pub cron: String,
    /// Seconds (`600`) or a duration (`10m`).
    pub duration: String,
    #[serde(default = "all")]
    pub scope: HoldScope,
}

fn all() -> HoldScope {
    HoldScope::All
}

/// Who drained a node, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub by: String,
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn window(cron: &str, secs: u64, scope: HoldScope) -> Window {
        Window {
            name: "w".into(),
            cron: cron.into(),
            duration_secs: secs,
            scope,
            by: "op".into(),
            at: t("2030-01-01T00:00:00Z"),
        }
    }

    #[test]
    fn a_window_covers_start_inclusive_end_exclusive() {
        let w = window("0 0 3 * * * *", 600, HoldScope::All);
        assert_eq!(w.open_at(t("2030-01-02T02:59:59Z")), None);
        assert_eq!(
            w.open_at(t("2030-01-02T03:00:00Z")),
            Some(t("2030-01-02T03:00:00Z"))
        );
        assert!(w.open_at(t("2030-01-02T03:09:59.900Z")).is_some());
        assert_eq!(w.open_at(t("2030-01-02T03:10:00Z")), None);
    }

    #[test]
    fn holds_name_their_reason_and_scope() {
        let mut labels = BTreeMap::new();
        labels.insert("role".to_string(), "db".to_string());
        let at = t("2030-01-02T03:05:00Z");
        let holds = Holds {
            pauses: vec![Pause {
                scope: HoldScope::Label {
                    key: "role".into(),
                    value: "db".into(),
                },
                until: Some(t("2030-01-02T04:00:00Z")),
                by: "alice".into(),
                at,
            }],
            windows: vec![window(
                "0 0 3 * * * *",
                600,
                HoldScope::Job("backup".into()),
            )],
            draining: false,
        };
        assert_eq!(
            holds.why_held("x", &labels, at).as_deref(),
            Some("paused by alice until 2030-01-02T04:00:00Z")
        );
        assert_eq!(
            holds.why_held("x", &labels, t("2030-01-02T04:00:00Z")),
            None,
            "the pause expired by itself"
        );
        assert_eq!(
            holds.why_held("backup", &BTreeMap::new(), at).as_deref(),
            Some("maintenance window w")
        );
        assert_eq!(holds.why_held("x", &BTreeMap::new(), at), None);
        let drained = Holds {
            draining: true,
            ..Holds::default()
        };
        assert_eq!(
            drained.why_held("x", &labels, at).as_deref(),
            Some(DRAINING)
        );
    }

    #[test]
    fn bad_windows_are_refused() {
        let now = t("2030-01-01T00:00:00Z");
        assert!(check_window("w", "0 0 3 * * * *", 0, now).is_err());
        assert!(check_window("w", "0 0 0 30 2 * *", 60, now).is_err());
        assert!(check_window("w", "not cron", 60, now).is_err());
        assert!(check_window("bad name", "0 0 3 * * * *", 60, now).is_err());
        assert!(check_window("w", "0 0 3 * * * *", 60, now).is_ok());
    }

    #[test]
    fn a_window_that_would_never_close_is_refused() {
        let now = t("2030-01-01T00:00:00Z");
        let e = check_window("w", "@daily", 25 * 3600, now).unwrap_err();
        assert_eq!(
            e,
            "--duration 1d1h is not shorter than the 1d between two openings of --cron \"@daily\" \
             (from 2030-01-02T00:00:00Z): the window would never close; give a shorter --duration, \
             or use 'agentcli pause' to hold jobs until resumed"
        );
        assert!(check_window("w", "@daily", 24 * 3600, now).is_err());
        assert!(check_window("w", "@daily", 24 * 3600 - 1, now).is_ok());
        // Weekdays at 02:00: the shortest gap is a day (Monday to Tuesday), not three.
        assert!(check_window("w", "0 0 2 * * 1-5 *", 2 * 86_400, now).is_err());
        assert!(check_window("w", "0 0 2 * * 1-5 *", 3600, now).is_ok());
        // One opening in all (a year field): no gap to compare against.
        assert!(check_window("w", "0 0 3 1 1 * 2031", 30 * 86_400, now).is_ok());
    }

    #[test]
    fn scopes_from_flags() {
        assert_eq!(HoldScope::from_flags(true, None, None), Ok(HoldScope::All));
        assert!(HoldScope::from_flags(false, None, None).is_err());
        assert!(HoldScope::from_flags(true, Some("j"), None).is_err());
        assert!(HoldScope::from_flags(false, None, Some("novalue")).is_err());
    }
}
