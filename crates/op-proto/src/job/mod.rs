//! The job model: one [`JobSpec`] per task file.
//!
//! A job is what an operator writes in a seed task file (`ll.json`, `cycleTest.json`, ...), plus our
//! optional fields. This module owns the typed model and its validation; [`taskfile`] owns the
//! on-disk/wire form (case-insensitive keys, `#` comments, 0/1 flags). The revision and timestamps
//! that the manager adds are not part of the spec: they live in the records that carry it.

mod taskfile;

use std::collections::BTreeMap;

pub use taskfile::{FieldError, TaskFileError, known_keys};

use crate::hosts::{HostPattern, HostSelector};
pub use crate::runon::{Pick, RunOn};
use crate::schedule::{Schedule, Zone};

/// Longest accepted job name, in characters.
pub const MAX_NAME_LEN: usize = 128;
/// Longest accepted command, in bytes.
pub const MAX_COMMAND_LEN: usize = 64 * 1024;
/// Largest accepted `Timeout`: one year, the seed's own "no limit" value.
pub const MAX_TIMEOUT_SECS: u64 = 31_536_000;
/// Most parameters a job may declare.
pub const MAX_PARAMS: usize = 64;
/// Longest parameter name.
pub const MAX_PARAM_NAME_LEN: usize = 64;
/// Longest value of any other string of a task file (CronExpr, TimeZone, WorkDir, RunAs, a host
/// pattern, an Env or Labels key, ...), in bytes.
pub const MAX_FIELD_LEN: usize = 1024;
/// Longest `Env` value, in bytes (as a parameter value).
pub const MAX_ENV_VALUE_LEN: usize = 32 * 1024;
/// Most entries of `Env` or `Labels`.
pub const MAX_MAP_ENTRIES: usize = 256;
/// Largest accepted `Grace`: one day.
pub const MAX_GRACE_SECS: u64 = 86_400;
/// Default seconds between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE_SECS: u64 = 5;
/// Late hosts of a `NewHosts` once-job let start at once when `NewHostsAtOnce` is not set.
pub const DEFAULT_NEW_HOSTS_AT_ONCE: u64 = 10;
/// The most `NewHostsAtOnce` may allow.
pub const MAX_NEW_HOSTS_AT_ONCE: u64 = 100_000;

/// What happens when a job fires while its previous run is still alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Concurrency {
    /// Skip the new fire and count the skip (the seed's behaviour).
    #[default]
    Forbid,
    /// Start the new run beside the old one.
    Allow,
    /// Kill the old run, then start the new one.
    Replace,
}

impl Concurrency {
    pub fn as_str(self) -> &'static str {
        match self {
            Concurrency::Forbid => "forbid",
            Concurrency::Allow => "allow",
            Concurrency::Replace => "replace",
        }
    }

    pub fn parse(s: &str) -> Option<Concurrency> {
        match s.to_ascii_lowercase().as_str() {
            "forbid" => Some(Concurrency::Forbid),
            "allow" => Some(Concurrency::Allow),
            "replace" => Some(Concurrency::Replace),
            _ => None,
        }
    }
}

/// The seed's cgroup fields. They are accepted and stored; the agent applies them where the host
/// has cgroup v2 and otherwise reports them as not applied. Zero means "not set" for every field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupLimits {
    /// `cpu.shares`-style relative weight (2..=262144).
    pub cpu_shares: u64,
    /// CPU quota in microseconds per 100 ms period (0 = unlimited, else at least 1000).
    pub cpu_quota_us: u64,
    /// Memory limit in bytes.
    pub memory_limit: u64,
    /// Memory + swap limit in bytes; at least `memory_limit` when both are set.
    pub memory_sw_limit: u64,
    /// Read bandwidth limit in bytes per second on `io_limit_device`.
    pub io_read_limit: u64,
    /// Write bandwidth limit in bytes per second on `io_limit_device`.
    pub io_write_limit: u64,
    /// The block device the IO limits apply to (`/dev/sdb` or `8:16`).
    pub io_limit_device: String,
}

impl CgroupLimits {
    /// True when no limit is set, so there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        *self == CgroupLimits::default()
    }
}

/// One job, as written in a task file and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Unique id: `[A-Za-z0-9._-]`, 1..=128 characters.
    pub name: String,
    /// Run as `bash -c COMMAND`.
    pub command: String,
    /// Cron expression; empty means not scheduled (a once-job or an API-only job).
    pub cron_expr: String,
    /// Run exactly once on each selected host, per saved revision.
    pub once_job: bool,
    /// Kill the whole process tree after this many seconds; 0 = no limit.
    pub timeout_secs: u64,
    /// Default mode of API invocation: true = the caller waits for the result.
    pub syn_flag: bool,
    /// False = agents drop the job and stop its running process.
    pub enabled: bool,
    pub white_hosts: Vec<HostPattern>,
    pub black_hosts: Vec<HostPattern>,
    /// IANA zone the cron expression is evaluated in; `None` = the agent's local zone.
    pub time_zone: Option<String>,
    pub concurrency: Concurrency,
    pub work_dir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub run_as: Option<String>,
    /// Declared parameter names; when non-empty, only these may be passed.
    pub params: Vec<String>,
    pub retries: u32,
    pub retry_delay_secs: u64,
    /// Up to this many seconds of random delay per host and fire.
    pub jitter_secs: u64,
    /// Label selector: a host must carry every one of these labels.
    pub labels: BTreeMap<String, String>,
    pub kill_grace_secs: u64,
    pub cgroup: CgroupLimits,
    /// `Grace`: seconds after a fire (and its jitter) within which a run must start to be on
    /// time; `None` = the default of `expect::default_grace` (10 % of the interval, 5 s..5 min).
    pub grace_secs: Option<u64>,
    /// `MaxDuration`: a run alive longer than this many seconds is reported overrunning (it is
    /// not killed: that is `Timeout`); `None` = never.
    pub max_duration_secs: Option<u64>,
    /// `NewHosts` (once-jobs only): a host that matches the selection after the save (it
    /// registers later, or its labels change) runs this revision too, once.
    pub new_hosts: bool,
    /// `NewHostsAtOnce`: at most this many late hosts are let start at once (admitted in the order
    /// they came); `None` = [`DEFAULT_NEW_HOSTS_AT_ONCE`].
    pub new_hosts_at_once: Option<u64>,
    /// `RunOn`: all selected hosts (default), or N of them picked by the leader per fire.
    pub run_on: RunOn,
    /// `Pick`: how the leader picks the hosts of a `RunOn` job.
    pub pick: Pick,
    /// `RetryOnAnother`: a failed run of a `RunOn` job is retried once on another host.
    pub retry_on_another: bool,
}

impl JobSpec {
    /// A job with the given name and command and every other field at its default.
    pub fn new(name: impl Into<String>, command: impl Into<String>) -> JobSpec {
        JobSpec {
            name: name.into(),
            command: command.into(),
            cron_expr: String::new(),
            once_job: false,
            timeout_secs: 0,
            syn_flag: false,
            enabled: true,
            white_hosts: Vec::new(),
            black_hosts: Vec::new(),
            time_zone: None,
            concurrency: Concurrency::Forbid,
            work_dir: None,
            env: BTreeMap::new(),
            run_as: None,
            params: Vec::new(),
            retries: 0,
            retry_delay_secs: 0,
            jitter_secs: 0,
            labels: BTreeMap::new(),
            kill_grace_secs: DEFAULT_KILL_GRACE_SECS,
            cgroup: CgroupLimits::default(),
            grace_secs: None,
            max_duration_secs: None,
            new_hosts: false,
            new_hosts_at_once: None,
            run_on: RunOn::All,
            pick: Pick::LeastLoaded,
            retry_on_another: false,
        }
    }

    /// How many late hosts of a `NewHosts` once-job may run it at once.
    pub fn new_hosts_cap(&self) -> u64 {
        self.new_hosts_at_once
            .unwrap_or(DEFAULT_NEW_HOSTS_AT_ONCE)
            .max(1)
    }

    /// The job's `Grace` as a duration (`None` when unset).
    pub fn grace(&self) -> Option<chrono::Duration> {
        self.grace_secs
            .map(|s| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000)))
    }

    /// The job's `MaxDuration` as a duration (`None` when unset).
    pub fn max_duration(&self) -> Option<chrono::Duration> {
        self.max_duration_secs
            .map(|s| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000)))
    }

    /// Parses and validates a task file (see [`taskfile`] for the accepted form). For what a
    /// person wrote; stored data goes through [`JobSpec::from_stored_value`].
    pub fn from_task_json(text: &str) -> Result<JobSpec, TaskFileError> {
        taskfile::parse(text)
    }

    /// Parses and validates an already decoded JSON value.
    pub fn from_task_value(value: &serde_json::Value) -> Result<JobSpec, TaskFileError> {
        taskfile::parse_value(value)
    }

    /// Decodes a job the manager accepted before (a raft entry, a snapshot, a store row, an
    /// agent's cache or sync answer) without applying the validation rules, so data written
    /// under older or other rules still reads (DESIGN 13.7). This is what `Deserialize` does.
    pub fn from_stored_value(value: &serde_json::Value) -> Result<JobSpec, TaskFileError> {
        taskfile::decode_stored(value)
    }

    /// Parses a task file and also checks what depends on the current time: a schedule that never
    /// fires after `now` is refused. This is the check `save` and `validate` apply; decoding a stored
    /// job (`from_stored_value`, what `Deserialize` uses) does not, so a job whose last fire has passed
    /// can still be read back.
    pub fn from_task_json_at(
        text: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<JobSpec, TaskFileError> {
        let spec = JobSpec::from_task_json(text)?;
        spec.check_fires(now)?;
        Ok(spec)
    }

    /// An error naming `CronExpr` when the schedule never fires after `now`.
    pub fn check_fires(&self, now: chrono::DateTime<chrono::Utc>) -> Result<(), TaskFileError> {
        match self.schedule() {
            Some(schedule) => schedule.check_fires(now).map(|_| ()).map_err(|e| {
                TaskFileError::Fields(vec![FieldError {
                    field: "CronExpr".into(),
                    message: e.to_string(),
                }])
            }),
            None => Ok(()),
        }
    }

    /// The task-file form of this job, with the seed's key names. `from_task_value` of the result
    /// gives back an equal job.
    pub fn to_task_value(&self) -> serde_json::Value {
        taskfile::to_value(self)
    }

    /// The zone the schedule is evaluated in.
    pub fn zone(&self) -> Zone {
        match &self.time_zone {
            Some(name) => Zone::parse(name).unwrap_or(Zone::Local),
            None => Zone::Local,
        }
    }

    /// The parsed schedule, or `None` for a job without `CronExpr`. A spec that passed validation
    /// always has a parseable expression.
    pub fn schedule(&self) -> Option<Schedule> {
        if self.cron_expr.trim().is_empty() {
            return None;
        }
        Schedule::parse(&self.cron_expr, self.zone()).ok()
    }

    /// The host selection of this job (white, black and labels).
    pub fn selector(&self) -> HostSelector {
        HostSelector {
            white: self.white_hosts.clone(),
            black: self.black_hosts.clone(),
            labels: self.labels.clone(),
        }
    }

    /// A job with neither `CronExpr` nor `OnceJob` runs only when invoked.
    pub fn is_api_only(&self) -> bool {
        self.cron_expr.trim().is_empty() && !self.once_job
    }

    /// How the job is triggered, in one word, for tables.
    pub fn kind(&self) -> &'static str {
        if self.once_job {
            "once"
        } else if self.cron_expr.trim().is_empty() {
            "api"
        } else {
            "cron"
        }
    }
}

/// On the wire a job travels in its task-file form, so there is one format everywhere: the file an
/// operator writes, the body of `PUT /v1/jobs/NAME`, and the desired state an agent receives.
///
/// Deserializing applies no validation rule ([`JobSpec::from_stored_value`]): every serde path
/// carries data that was validated once, at the API, and must keep decoding after a later
/// release tightens the rules (DESIGN 13.7). Input from a person goes through
/// [`JobSpec::from_task_json_at`] instead.
///
/// Serializing writes the bytes that serializing [`JobSpec::to_task_value`] writes, straight to
/// the serializer (no `Value` per job: the manager writes every job of each sync answer).
impl serde::Serialize for JobSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        taskfile::serialize(self, s)
    }
}

impl<'de> serde::Deserialize<'de> for JobSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        JobSpec::from_stored_value(&value).map_err(serde::de::Error::custom)
    }
}

/// Checks a job name: `[A-Za-z0-9._-]`, 1..=128 characters, and not `.` or `..` (names become
/// directory names on the agent). The reason leaves the name out: callers put it first
/// (`job name ".." must not be ...`).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!(
            "is {} characters long; at most {MAX_NAME_LEN} are allowed",
            name.chars().count()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    if name == "." || name == ".." {
        return Err("must not be '.' or '..' (names become directory names)".into());
    }
    Ok(())
}

/// Checks a parameter name: `[A-Za-z_][A-Za-z0-9_]*`, at most 64 characters.
pub fn validate_param_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("parameter name must not be empty".into()),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err(format!(
                "parameter name {name:?} must start with a letter or '_'"
            ));
        }
        _ => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "parameter name {name:?} may contain only letters, digits and '_'"
        ));
    }
    if name.len() > MAX_PARAM_NAME_LEN {
        return Err(format!(
            "parameter name {name:?} is longer than {MAX_PARAM_NAME_LEN} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["ls-l", "test.py", "cycleTest.py", "a", "A_b-c.9"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "x\0", "ü", &"a".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn param_names() {
        assert!(validate_param_name("host").is_ok());
        assert!(validate_param_name("_x9").is_ok());
        assert!(validate_param_name("9x").is_err());
        assert!(validate_param_name("a-b").is_err());
        assert!(validate_param_name("").is_err());
    }
}
