//! Schedule events (issue 20): the leader's judged fires become `run.missed`, `run.late` and
//! `run.skipped` (one event per job fire and kind, naming its hosts, like `run.failed`), and
//! runs past their `MaxDuration` become `run.overrunning`, once per run.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{IncidentState, Labels, base_event, hosts_phrase, job_url};
use crate::analysis::thousands;
use crate::events::{Event, EventKind};
use crate::expect::OutcomeKind;
use crate::judged::{JudgedFire, OverrunningRun, SkewedHost};
use crate::node::skew_text;

/// Overrunning runs remembered as announced, so each is announced once.
pub(super) const KEPT_OVERRUNS: usize = 10_000;

/// The leader judged these fires and found these runs overrunning (`JudgeFires`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiresJudged {
    /// The leader's time when it judged, committed with the command.
    pub time: DateTime<Utc>,
    #[serde(default)]
    pub fires: Vec<JudgedFire>,
    #[serde(default)]
    pub overrunning: Vec<OverrunningRun>,
    /// Every node whose clock is off by more than the threshold, when the leader's view of that
    /// set changed (`None`: unchanged). Nodes new to it make one `node.clock_skew`.
    #[serde(default)]
    pub skewed: Option<Vec<SkewedHost>>,
}

/// Runs announced overrunning, oldest first.
pub(super) type Overruns = VecDeque<Uuid>;

/// Nodes announced with a skewed clock (until their clock is right again).
pub(super) type Skewed = BTreeSet<String>;

impl IncidentState {
    pub(super) fn fires_judged(&mut self, j: &FiresJudged) -> Vec<Event> {
        let mut events = Vec::new();
        for fire in &j.fires {
            for (kind, event_kind) in [
                (OutcomeKind::Missed, EventKind::RunMissed),
                (OutcomeKind::Late, EventKind::RunLate),
                (OutcomeKind::Skipped, EventKind::RunSkipped),
            ] {
                let total = fire.count(kind);
                if total == 0 {
                    continue;
                }
                let hosts: Vec<(&str, &Labels)> = fire
                    .hosts_of(kind)
                    .map(|h| (h.host.as_str(), &h.labels))
                    .collect();
                let id = self.take_id();
                let mut event = base_event(id, event_kind, j.time, &hosts);
                event.job = Some(fire.job.clone());
                event.host_count = total.max(hosts.len() as u64);
                event.selected_hosts = fire.expected;
                let on = format!(
                    "on {}/{} hosts",
                    thousands(total as usize),
                    thousands(fire.expected as usize)
                );
                event.summary = match kind {
                    OutcomeKind::Missed => {
                        let reasons = fire.reasons();
                        event.signature = Some(reasons.clone());
                        format!(
                            "{} missed its {} fire {on} ({reasons})",
                            fire.job, fire.fire_label
                        )
                    }
                    OutcomeKind::Late => {
                        format!(
                            "{} started its {} fire late {on}",
                            fire.job, fire.fire_label
                        )
                    }
                    _ => format!(
                        "{} skipped its {} fire {on} (previous run still running, or held by a pause, drain or maintenance window)",
                        fire.job, fire.fire_label
                    ),
                };
                event.url = job_url(&fire.job);
                events.push(event);
            }
        }
        // Overrunning runs not announced yet, one event per job.
        let mut by_job: BTreeMap<&str, Vec<&OverrunningRun>> = BTreeMap::new();
        for run in &j.overrunning {
            if !self.overruns.contains(&run.run_id) {
                by_job.entry(run.job.as_str()).or_default().push(run);
            }
        }
        for (job, runs) in by_job {
            for run in &runs {
                self.overruns.push_back(run.run_id);
                if self.overruns.len() > KEPT_OVERRUNS {
                    self.overruns.pop_front();
                }
            }
            let hosts: Vec<(&str, &Labels)> =
                runs.iter().map(|r| (r.host.as_str(), &r.labels)).collect();
            let id = self.take_id();
            let mut event = base_event(id, EventKind::RunOverrunning, j.time, &hosts);
            event.job = Some(job.to_string());
            let max = runs.iter().map(|r| r.max_duration_secs).min().unwrap_or(0);
            event.summary = format!(
                "{job} is running longer than its MaxDuration ({max} s) on {}",
                hosts_phrase(hosts.len() as u64, 0)
            );
            event.url = job_url(job);
            events.push(event);
        }
        if let Some(skewed) = &j.skewed {
            let new: Vec<&SkewedHost> = skewed
                .iter()
                .filter(|h| !self.skewed.contains(&h.host))
                .collect();
            if !new.is_empty() {
                let hosts: Vec<(&str, &Labels)> =
                    new.iter().map(|h| (h.host.as_str(), &h.labels)).collect();
                let id = self.take_id();
                let mut event = base_event(id, EventKind::NodeClockSkew, j.time, &hosts);
                let mut shown: Vec<String> = new
                    .iter()
                    .take(3)
                    .map(|h| format!("{} ({})", h.host, skew_text(h.skew_ms)))
                    .collect();
                if new.len() > shown.len() {
                    shown.push(format!("and {} more", thousands(new.len() - shown.len())));
                }
                event.summary = format!(
                    "{} {} a clock off by more than the allowed skew: {}",
                    thousands(new.len()),
                    if new.len() == 1 {
                        "node has"
                    } else {
                        "nodes have"
                    },
                    shown.join(", ")
                );
                event.url = "/ui/nodes".into();
                events.push(event);
            }
            self.skewed = skewed.iter().map(|h| h.host.clone()).collect();
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::incidents::Input;
    use crate::judged::JudgedHost;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn host(name: &str, outcome: &str, reason: &str) -> JudgedHost {
        JudgedHost {
            host: name.into(),
            labels: Labels::new(),
            outcome: outcome.into(),
            reason: reason.into(),
        }
    }

    fn fire(hosts: Vec<JudgedHost>, counts: &[(&str, u64)], reasons: &[(&str, u64)]) -> JudgedFire {
        JudgedFire {
            job: "backup.sh".into(),
            fire: at(0),
            fire_label: "03:00".into(),
            expected: 2_000,
            counts: counts.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            missed_by_reason: reasons.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            hosts,
            sentences: Vec::new(),
        }
    }

    fn judged(fires: Vec<JudgedFire>, overrunning: Vec<OverrunningRun>) -> Input {
        Input::FiresJudged(FiresJudged {
            time: at(10),
            fires,
            overrunning,
            skewed: None,
        })
    }

    #[test]
    fn one_event_per_job_fire_and_kind_naming_its_hosts() {
        let mut s = IncidentState::default();
        let f = fire(
            vec![
                host("a", "missed", "NotReady"),
                host("b", "missed", "no run"),
                host("c", "late", ""),
                host("d", "failed", ""),
            ],
            &[("ok", 1_996), ("missed", 12), ("late", 1), ("failed", 1)],
            &[("NotReady", 9), ("no run", 3)],
        );
        let events = s.apply(&judged(vec![f], Vec::new()));
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["run.missed", "run.late"]);
        let missed = &events[0];
        assert_eq!(missed.hosts, ["a", "b"]);
        assert_eq!((missed.host_count, missed.selected_hosts), (12, 2_000));
        assert_eq!(
            missed.summary,
            "backup.sh missed its 03:00 fire on 12/2,000 hosts (9 NotReady, 3 no run)"
        );
        assert_eq!(missed.job.as_deref(), Some("backup.sh"));
        assert_eq!(events[1].hosts, ["c"]);
        // An all-ok fire says nothing.
        let ok = fire(Vec::new(), &[("ok", 2_000)], &[]);
        assert!(s.apply(&judged(vec![ok], Vec::new())).is_empty());
    }

    #[test]
    fn an_overrunning_run_is_announced_once() {
        let mut s = IncidentState::default();
        let run = OverrunningRun {
            run_id: Uuid::from_u128(7),
            job: "hang".into(),
            host: "a".into(),
            labels: Labels::new(),
            started_at: at(0),
            max_duration_secs: 3,
        };
        let first = s.apply(&judged(Vec::new(), vec![run.clone()]));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].kind, EventKind::RunOverrunning);
        assert!(
            first[0].summary.contains("MaxDuration (3 s)"),
            "{}",
            first[0].summary
        );
        assert!(s.apply(&judged(Vec::new(), vec![run])).is_empty());
    }

    #[test]
    fn a_skewed_clock_is_announced_once_until_it_is_right_again() {
        let mut s = IncidentState::default();
        let skew = |hosts: &[&str]| {
            Input::FiresJudged(FiresJudged {
                time: at(10),
                fires: Vec::new(),
                overrunning: Vec::new(),
                skewed: Some(
                    hosts
                        .iter()
                        .map(|h| SkewedHost {
                            host: h.to_string(),
                            labels: Labels::new(),
                            skew_ms: 5_000,
                        })
                        .collect(),
                ),
            })
        };
        let e = s.apply(&skew(&["a", "b"]));
        assert_eq!(
            (e.len(), e[0].hosts.clone()),
            (1, vec!["a".into(), "b".into()])
        );
        assert!(s.apply(&skew(&["a", "b"])).is_empty());
        assert!(
            s.apply(&skew(&["a"])).is_empty(),
            "b's clock is right: no event"
        );
        let e = s.apply(&skew(&["a", "b"]));
        assert_eq!(e[0].hosts, ["b"], "b is wrong again");
    }
}
