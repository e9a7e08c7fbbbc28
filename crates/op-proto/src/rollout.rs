//! Staged rollouts (issue 21): a new package version or job revision reaches a first stage of
//! hosts, then the next, and stops by itself when it breaks things.
//!
//! - **Stages** (`1,10%,100%`): host counts, then percentages of the hosts selected when the stage
//!   is entered. Counts come before percentages, each strictly increasing; `0` and `0%` are
//!   refused. A plan whose last stage is not `100%` gets `100%` appended: a rollout always ends
//!   with every host.
//! - **Membership** is deterministic: each host has a [`rank`] (`sha256(rollout id, node id)`),
//!   and each stage commits a threshold through raft ([`threshold`]): a host is admitted when its
//!   rank is at or below it. Stages are cumulative, an admitted host never leaves, and a host that
//!   joins later is placed by its rank alone. The last stage (`100%`) admits every rank.
//! - **HaltOn** (`N` or `P%`, default 1): the rollout halts when the failures of its admitted
//!   hosts reach it; a percentage is of the hosts admitted so far (at least 1).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Default `StepWait`: 60 seconds.
pub const DEFAULT_STEP_WAIT_SECS: u64 = 60;

/// A rollout as written by an operator (task-file field `Rollout`, or the upload/save flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    #[serde(rename = "Stages")]
    pub stages: Vec<String>,
    #[serde(rename = "StepWait", default, skip_serializing_if = "Option::is_none")]
    pub step_wait: Option<String>,
    #[serde(rename = "HaltOn", default, skip_serializing_if = "Option::is_none")]
    pub halt_on: Option<String>,
    #[serde(rename = "AutoRollback", default)]
    pub auto_rollback: bool,
}

impl RolloutRequest {
    /// From the flags `--rollout 1,10%,100% --step-wait 5m --halt-on 2 --auto-rollback`.
    pub fn from_flags(
        stages: &str,
        step_wait: Option<&str>,
        halt_on: Option<&str>,
        auto_rollback: bool,
    ) -> RolloutRequest {
        RolloutRequest {
            stages: stages.split(',').map(|s| s.trim().to_string()).collect(),
            step_wait: step_wait.map(str::to_string),
            halt_on: halt_on.map(str::to_string),
            auto_rollback,
        }
    }

    /// [`RolloutRequest::plan`] for a request made from the flags: the error names the flag
    /// (`--step-wait: ...`, `--halt-on ...`, `--rollout: ...`) once, not the task-file field.
    pub fn plan_for_flags(&self) -> Result<RolloutPlan, String> {
        self.plan().map_err(|e| {
            if let Some(rest) = e.strip_prefix("StepWait: ") {
                format!("--step-wait: {rest}")
            } else if let Some(rest) = e.strip_prefix("HaltOn ") {
                format!("--halt-on {rest}")
            } else {
                format!("--rollout: {e}")
            }
        })
    }

    /// Checks the request and gives the plan apply stores.
    pub fn plan(&self) -> Result<RolloutPlan, String> {
        let mut stages = Vec::new();
        for s in &self.stages {
            stages.push(Stage::parse(s)?);
        }
        if stages.is_empty() {
            return Err("a rollout needs at least one stage, e.g. 1,10%,100%".into());
        }
        for pair in stages.windows(2) {
            match (pair[0], pair[1]) {
                (Stage::Count(a), Stage::Count(b)) if b <= a => {
                    return Err(format!(
                        "stages must increase: {b} after {a} (write e.g. 1,10%,100%)"
                    ));
                }
                (Stage::Percent(a), Stage::Percent(b)) if b <= a => {
                    return Err(format!(
                        "stages must increase: {b}% after {a}% (write e.g. 1,10%,100%)"
                    ));
                }
                (Stage::Percent(a), Stage::Count(b)) => {
                    return Err(format!(
                        "host counts come before percentages: {b} after {a}% (write e.g. 1,10%,100%)"
                    ));
                }
                _ => {}
            }
        }
        if stages.last() != Some(&Stage::Percent(100)) {
            stages.push(Stage::Percent(100));
        }
        let step_wait_secs = match &self.step_wait {
            None => DEFAULT_STEP_WAIT_SECS,
            Some(t) => crate::units::parse_duration(t)
                .map_err(|e| format!("StepWait: {e}"))?
                .as_secs(),
        };
        let halt_on = match &self.halt_on {
            None => HaltOn::Count(1),
            Some(t) => HaltOn::parse(t)?,
        };
        Ok(RolloutPlan {
            stages,
            step_wait_secs,
            halt_on,
            auto_rollback: self.auto_rollback,
        })
    }
}

/// One stage: a host count or a percentage (1..=100) of the selected hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Count(u64),
    Percent(u8),
}

impl Stage {
    pub fn parse(text: &str) -> Result<Stage, String> {
        let t = text.trim();
        let bad = || format!("stage {text:?} is neither a host count (10) nor a percentage (10%)");
        if let Some(p) = t.strip_suffix('%') {
            let p: u64 = p.trim().parse().map_err(|_| bad())?;
            if p == 0 || p > 100 {
                return Err(format!("stage {text:?}: a percentage must be 1% to 100%"));
            }
            Ok(Stage::Percent(p as u8))
        } else {
            let n: u64 = t.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(format!("stage {text:?}: a stage needs at least 1 host"));
            }
            Ok(Stage::Count(n))
        }
    }

    /// How many of `selected` hosts this stage admits.
    pub fn hosts(self, selected: u64) -> u64 {
        match self {
            Stage::Count(n) => n.min(selected),
            Stage::Percent(p) => (selected * u64::from(p)).div_ceil(100).min(selected),
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Count(n) => write!(f, "{n}"),
            Stage::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// When a rollout halts: a count of failed hosts, or a percentage of the admitted ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaltOn {
    Count(u64),
    Percent(u8),
}

impl HaltOn {
    pub fn parse(text: &str) -> Result<HaltOn, String> {
        match Stage::parse(text) {
            Ok(Stage::Count(n)) => Ok(HaltOn::Count(n)),
            Ok(Stage::Percent(p)) => Ok(HaltOn::Percent(p)),
            Err(_) => Err(format!(
                "HaltOn {text:?} must be a count of failed hosts (1 or more) or a percentage (1% to 100%)"
            )),
        }
    }

    /// The failures at which a rollout with `admitted` hosts halts (at least 1).
    pub fn limit(self, admitted: u64) -> u64 {
        match self {
            HaltOn::Count(n) => n.max(1),
            HaltOn::Percent(p) => (admitted * u64::from(p)).div_ceil(100).max(1),
        }
    }
}

impl std::fmt::Display for HaltOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HaltOn::Count(n) => write!(f, "{n}"),
            HaltOn::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// A checked rollout, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPlan {
    /// Never empty; the last is `100%`.
    pub stages: Vec<Stage>,
    pub step_wait_secs: u64,
    pub halt_on: HaltOn,
    #[serde(default)]
    pub auto_rollback: bool,
}

impl RolloutPlan {
    pub fn stages_text(&self) -> String {
        self.stages
            .iter()
            .map(Stage::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The rank of `node` in rollout `id`: the first 8 bytes of `sha256(id || node)`.
pub fn rank(id: Uuid, node: Uuid) -> u64 {
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update(node.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The threshold of `stage` among the `selected` nodes (`None`: nobody admitted). The last
/// stage of a plan (`100%`) admits every rank, also of hosts that join later; any other stage
/// admits the `k` lowest ranks of the hosts selected now.
pub fn threshold(id: Uuid, stage: Stage, selected: &[Uuid]) -> Option<u64> {
    if stage == Stage::Percent(100) {
        return Some(u64::MAX);
    }
    let k = stage.hosts(selected.len() as u64) as usize;
    if k == 0 {
        return None;
    }
    let mut ranks: Vec<u64> = selected.iter().map(|n| rank(id, *n)).collect();
    ranks.sort_unstable();
    Some(ranks[k - 1])
}

/// Whether `node` is admitted under `threshold`.
pub fn admitted(id: Uuid, threshold: Option<u64>, node: Uuid) -> bool {
    threshold.is_some_and(|t| rank(id, node) <= t)
}

/// What a rollout changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutKind {
    Package,
    Job,
}

impl RolloutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutKind::Package => "package",
            RolloutKind::Job => "job",
        }
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Advancing stage by stage.
    Running,
    /// Held by an operator: admitted hosts keep the new version, nobody else is admitted.
    Paused,
    /// Stopped on failures: admitted hosts keep the new version, the others the previous.
    Halted,
    /// Every host has the new version.
    Finished,
    /// Stopped by an operator: every host has the previous version.
    Aborted,
    /// Halted with `AutoRollback`: every host has the previous version.
    RolledBack,
    /// A newer upload or save of the same package or job replaced it.
    Superseded,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Halted => "halted",
            RolloutState::Finished => "finished",
            RolloutState::Aborted => "aborted",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<RolloutState> {
        [
            RolloutState::Running,
            RolloutState::Paused,
            RolloutState::Halted,
            RolloutState::Finished,
            RolloutState::Aborted,
            RolloutState::RolledBack,
            RolloutState::Superseded,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// True while the rollout decides what each host gets (not finished nor superseded).
    pub fn filters(self) -> bool {
        !matches!(self, RolloutState::Finished | RolloutState::Superseded)
    }
}

/// An operator's action on a rollout (`POST /v1/rollouts/ID/ACTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutAction {
    Pause,
    Resume,
    Abort,
    Promote,
}

impl RolloutAction {
    pub fn parse(s: &str) -> Option<RolloutAction> {
        match s {
            "pause" => Some(RolloutAction::Pause),
            "resume" => Some(RolloutAction::Resume),
            "abort" => Some(RolloutAction::Abort),
            "promote" => Some(RolloutAction::Promote),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Abort => "abort",
            RolloutAction::Promote => "promote",
        }
    }
}

/// A stored rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutInfo {
    pub id: Uuid,
    pub kind: RolloutKind,
    /// The package or job name.
    pub subject: String,
    /// The new package version or job revision.
    pub version: u64,
    /// What hosts outside the admitted stages get (none: nothing).
    #[serde(default)]
    pub previous: Option<u64>,
    pub plan: RolloutPlan,
    pub state: RolloutState,
    /// Index into `plan.stages` of the stage entered last.
    pub stage: usize,
    /// Ranks at or below are admitted; none = nobody.
    #[serde(default)]
    pub threshold: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub stage_entered_at: DateTime<Utc>,
    /// Failures are counted from here (the start, or the last resume).
    pub counted_from: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why it halted, was aborted or superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One host in `agentcli rollout status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutHost {
    pub node_id: Uuid,
    pub hostname: String,
    pub status: String,
    pub admitted: bool,
    /// Has deployed the new package version / has received (once-job: run) the new revision.
    pub has_new: bool,
    /// Why the host counts as a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Why the rollout does not wait on this host (an agent release over a host pinned on
    /// another agent version: it never reports the new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
}

/// `GET /v1/rollouts/ID`: the rollout with its hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStatus {
    pub rollout: RolloutInfo,
    pub selected: u64,
    pub admitted: u64,
    pub failures: u64,
    /// The failures at which it halts, for the hosts admitted now.
    pub halt_at: u64,
    /// Selected hosts the rollout does not wait on (see [`RolloutHost::excluded`]).
    #[serde(default)]
    pub excluded: u64,
    pub hosts: Vec<RolloutHost>,
}

/// A package's default rollout (`agentcli rollout default NAME --rollout ...`): what an upload
/// of it without `--rollout` is staged by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRollout {
    pub name: String,
    pub plan: RolloutPlan,
    pub set_at: DateTime<Utc>,
    pub set_by: String,
}

impl RolloutPlan {
    /// The plan in the flags' words: `1,10%,100% step-wait 60s halt-on 1 [auto-rollback]`.
    pub fn describe(&self) -> String {
        format!(
            "{} step-wait {}s halt-on {}{}",
            self.stages_text(),
            self.step_wait_secs,
            self.halt_on,
            if self.auto_rollback {
                " auto-rollback"
            } else {
                ""
            }
        )
    }

    /// What apply checks of a plan it did not parse itself: stages present, increasing as
    /// [`RolloutRequest::plan`] requires, and ending at `100%`.
    pub fn check(&self) -> Result<(), String> {
        let request = RolloutRequest {
            stages: self.stages.iter().map(Stage::to_string).collect(),
            step_wait: Some(self.step_wait_secs.to_string()),
            halt_on: Some(self.halt_on.to_string()),
            auto_rollback: self.auto_rollback,
        };
        let again = request.plan()?;
        if again != *self {
            return Err("a rollout plan must end with 100%".into());
        }
        Ok(())
    }
}

/// Splits a task file's `Rollout` field off the rest (which stays a task file for
/// [`crate::JobSpec::from_task_json_at`]; the text is unchanged when it has no `Rollout`).
pub fn split_task_rollout(text: &str) -> Result<(String, Option<RolloutRequest>), String> {
    // Not JSON: the task-file parser says what is wrong with it.
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(text) else {
        return Ok((text.to_string(), None));
    };
    let Some(obj) = value.as_object_mut() else {
        return Ok((text.to_string(), None));
    };
    // Task-file keys match case-insensitively (DESIGN section 1), `Rollout` and its own keys too.
    let keys: Vec<String> = obj
        .keys()
        .filter(|k| k.eq_ignore_ascii_case("Rollout"))
        .cloned()
        .collect();
    let r = match keys.as_slice() {
        [] => return Ok((text.to_string(), None)),
        [key] => obj.remove(key).unwrap_or_default(),
        [a, b, ..] => return Err(format!("Rollout: given twice (as {a:?} and {b:?})")),
    };
    let r = match r {
        serde_json::Value::Object(inner) => {
            let mut canonical = serde_json::Map::new();
            for (key, v) in inner {
                let name = ROLLOUT_KEYS
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(&key))
                    .map_or(key.clone(), |k| k.to_string());
                if canonical.contains_key(&name) {
                    return Err(format!("Rollout: {name} given twice (as {key:?} too)"));
                }
                canonical.insert(name, v);
            }
            serde_json::Value::Object(canonical)
        }
        other => other,
    };
    let request: RolloutRequest =
        serde_json::from_value(r).map_err(|e| format!("invalid Rollout: {e}"))?;
    Ok((value.to_string(), Some(request)))
}

/// The keys of a task file's `Rollout`, as [`RolloutRequest`] spells them.
const ROLLOUT_KEYS: [&str; 4] = ["Stages", "StepWait", "HaltOn", "AutoRollback"];

/// [`split_task_rollout`] with the `Rollout` checked as the manager checks it, for the CLI's
/// offline checks (`validate`, and `save` before it sends): a task file with a bad `Rollout` is
/// refused with what is wrong in it, not as an unknown key of the task file.
pub fn split_checked_task_rollout(text: &str) -> Result<(String, Option<RolloutPlan>), String> {
    let (rest, request) = split_task_rollout(text)?;
    let plan = request
        .map(|r| r.plan().map_err(|e| format!("Rollout: {e}")))
        .transpose()?;
    Ok((rest, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_files_rollout_is_checked_with_its_own_message() {
        let (rest, plan) = split_checked_task_rollout(
            r#"{"JobName":"a","Command":"true","Rollout":{"Stages":["1","100%"],"StepWait":"5m"}}"#,
        )
        .unwrap();
        assert!(!rest.contains("Rollout"));
        assert_eq!(plan.unwrap().step_wait_secs, 300);
        let err = split_checked_task_rollout(
            r#"{"JobName":"a","Command":"true","Rollout":{"Stages":["1"],"Bogus":1}}"#,
        )
        .unwrap_err();
        assert!(err.contains("Bogus"), "{err}");
        let err = split_checked_task_rollout(
            r#"{"JobName":"a","Command":"true","Rollout":{"Stages":[]}}"#,
        )
        .unwrap_err();
        assert!(err.starts_with("Rollout: "), "{err}");
    }

    fn plan(stages: &str) -> Result<RolloutPlan, String> {
        RolloutRequest::from_flags(stages, None, None, false).plan()
    }

    #[test]
    fn stages_parse_and_end_with_everyone() {
        let p = plan("1,10%,100%").unwrap();
        assert_eq!(
            p.stages,
            [Stage::Count(1), Stage::Percent(10), Stage::Percent(100)]
        );
        assert_eq!(p.step_wait_secs, DEFAULT_STEP_WAIT_SECS);
        assert_eq!(p.halt_on, HaltOn::Count(1));
        assert_eq!(plan("5,50%").unwrap().stages_text(), "5,50%,100%");
        assert_eq!(plan("100%").unwrap().stages, [Stage::Percent(100)]);
    }

    #[test]
    fn bad_stages_are_refused() {
        for bad in [
            "", "0", "0%", "10,5", "10%,5%", "10%,2", "101%", "x", "1,1", "-1",
        ] {
            assert!(plan(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(
            RolloutRequest::from_flags("1", Some("forever"), None, false)
                .plan()
                .is_err()
        );
        assert!(
            RolloutRequest::from_flags("1", None, Some("0"), false)
                .plan()
                .is_err()
        );
        let p = RolloutRequest::from_flags("1", Some("2m"), Some("20%"), true)
            .plan()
            .unwrap();
        assert_eq!(p.step_wait_secs, 120);
        assert_eq!(p.halt_on, HaltOn::Percent(20));
        assert_eq!(p.halt_on.limit(10), 2);
        assert_eq!(p.halt_on.limit(1), 1);
    }

    #[test]
    fn thresholds_admit_the_lowest_ranks_cumulatively() {
        let id = Uuid::from_u128(42);
        let nodes: Vec<Uuid> = (1..=10u128).map(Uuid::from_u128).collect();
        let count = |t: Option<u64>| nodes.iter().filter(|n| admitted(id, t, **n)).count();
        let t1 = threshold(id, Stage::Count(1), &nodes);
        let t50 = threshold(id, Stage::Percent(50), &nodes);
        let tall = threshold(id, Stage::Percent(100), &nodes);
        assert_eq!(count(t1), 1);
        assert_eq!(count(t50), 5);
        assert_eq!(count(tall), 10);
        // Cumulative: whoever stage 1 admitted, stage 2 admits too.
        for n in &nodes {
            if admitted(id, t1, *n) {
                assert!(admitted(id, t50, *n));
            }
        }
        assert_eq!(threshold(id, Stage::Count(3), &[]), None);
        assert_eq!(count(None), 0);
        // The last stage admits hosts that join later.
        assert!(admitted(id, tall, Uuid::from_u128(999)));
        // Another rollout ranks the same hosts differently.
        let other = Uuid::from_u128(43);
        let first = |id| *nodes.iter().min_by_key(|n| rank(id, **n)).unwrap();
        assert_eq!(first(id), first(id));
        let _ = first(other);
    }

    #[test]
    fn the_task_file_rollout_is_split_off() {
        let (rest, r) = split_task_rollout(
            r#"{"Name":"a","Command":"true","Rollout":{"Stages":["1","100%"],"StepWait":"5s"}}"#,
        )
        .unwrap();
        assert!(!rest.contains("Rollout"));
        let r = r.unwrap();
        assert_eq!(r.stages, ["1", "100%"]);
        assert_eq!(r.plan().unwrap().step_wait_secs, 5);
        assert!(split_task_rollout(r#"{"Name":"a","Rollout":{"Stagez":[]}}"#).is_err());
    }

    #[test]
    fn a_plan_from_flags_names_the_flag_once() {
        let e = RolloutRequest::from_flags("1", Some("soon"), None, false)
            .plan_for_flags()
            .unwrap_err();
        assert!(
            e.starts_with("--step-wait: \"soon\" is not a duration"),
            "{e}"
        );
        let e = RolloutRequest::from_flags("1", None, Some("x"), false)
            .plan_for_flags()
            .unwrap_err();
        assert!(e.starts_with("--halt-on \"x\" must be"), "{e}");
        let e = RolloutRequest::from_flags("0", None, None, false)
            .plan_for_flags()
            .unwrap_err();
        assert!(e.starts_with("--rollout: stage \"0\""), "{e}");
    }

    #[test]
    fn rollout_keys_match_case_insensitively_like_the_task_files() {
        let (rest, r) = split_task_rollout(
            r#"{"JobName":"a","rollout":{"stages":["1","100%"],"STEPWAIT":"5s","haltOn":"1"}}"#,
        )
        .unwrap();
        assert!(!rest.to_ascii_lowercase().contains("rollout"), "{rest}");
        let r = r.unwrap();
        assert_eq!(r.stages, ["1", "100%"]);
        assert_eq!(r.step_wait.as_deref(), Some("5s"));
        assert_eq!(r.halt_on.as_deref(), Some("1"));
        let e = split_task_rollout(r#"{"Rollout":{"Stages":["1"]},"ROLLOUT":{"Stages":["2"]}}"#)
            .unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        let e = split_task_rollout(r#"{"Rollout":{"Stages":["1"],"stages":["2"]}}"#).unwrap_err();
        assert!(e.contains("Stages given twice"), "{e}");
        assert!(split_task_rollout(r#"{"Name":"a"}"#).unwrap().1.is_none());
    }
}
