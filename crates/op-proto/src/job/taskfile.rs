//! The seed's task-file form of a [`JobSpec`].
//!
//! Compatibility rules (DESIGN.md section 1): keys match case-insensitively; keys that start with
//! `#` are comments (the seed's samples write `"## Execute every minute": ""`); any other unknown
//! key is an error that names the closest known key; flags accept `0`/`1` and `true`/`false`.
//! Parsing collects every error in the file instead of stopping at the first one, so an operator
//! fixes a file in one pass.
//!
//! There are two ways in (DESIGN 13.7, "stored data outlives stricter rules"):
//! - [`parse`] / [`parse_value`] apply every rule. They are for what a person wrote: the API's
//!   save and validate, the CLI's offline `validate`, the console's editor, the agent's jobs dir.
//! - [`decode_stored`] reads what the manager already accepted once: raft entries, snapshots and
//!   store rows, the agent's desired-state cache and sync answers. It applies no rule, so a job
//!   saved under older (or other) rules reads back as it was stored: unknown keys are ignored and
//!   values outside today's limits are kept. Only a value that the model cannot hold at all (a
//!   string where a number belongs, a negative count) is an error, since no release wrote one.

use std::collections::BTreeMap;
use std::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};

use super::{
    CgroupLimits, Concurrency, DEFAULT_KILL_GRACE_SECS, JobSpec, MAX_COMMAND_LEN,
    MAX_ENV_VALUE_LEN, MAX_FIELD_LEN, MAX_GRACE_SECS, MAX_MAP_ENTRIES, MAX_NEW_HOSTS_AT_ONCE,
    MAX_PARAMS, MAX_TIMEOUT_SECS, validate_name, validate_param_name,
};
use crate::hosts::HostPattern;
use crate::schedule::{Schedule, Zone};

/// Canonical spelling of every key a task file may hold, seed keys first.
const KEYS: &[&str] = &[
    "JobName",
    "Command",
    "CronExpr",
    "OnceJob",
    "Timeout",
    "SynFlag",
    "Enabled",
    "WhiteHosts",
    "BlackHosts",
    "TimeZone",
    "Concurrency",
    "WorkDir",
    "Env",
    "RunAs",
    "Params",
    "Retries",
    "RetryDelay",
    "Jitter",
    "Labels",
    "KillGrace",
    "CPUShares",
    "CPUQuotaUs",
    "MemoryLimit",
    "MemorySwLimit",
    "IOReadLimit",
    "IOWriteLimit",
    "IOLimitDevice",
    "Grace",
    "MaxDuration",
    "NewHosts",
    "NewHostsAtOnce",
    "RunOn",
    "Pick",
    "RetryOnAnother",
];

/// Every key a task file may hold, in canonical spelling.
pub fn known_keys() -> &'static [&'static str] {
    KEYS
}

/// One problem with one field of a task file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The key as the file spelled it (or the canonical key for a missing field).
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a task file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskFileError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("a task file must be a JSON object, found {0}")]
    NotObject(&'static str),
    #[error("{}", join_errors(.0))]
    Fields(Vec<FieldError>),
}

impl TaskFileError {
    /// Every problem as its own line.
    pub fn messages(&self) -> Vec<String> {
        match self {
            TaskFileError::Fields(errors) => errors.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses the text of a task file.
pub fn parse(text: &str) -> Result<JobSpec, TaskFileError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| TaskFileError::NotJson(e.to_string()))?;
    parse_value(&value)
}

/// Parses a decoded task file, applying every rule.
pub fn parse_value(value: &Value) -> Result<JobSpec, TaskFileError> {
    read_value(value, Check::Rules)
}

/// Decodes a job the manager stored or sent, applying no validation rule (see the module doc).
pub fn decode_stored(value: &Value) -> Result<JobSpec, TaskFileError> {
    read_value(value, Check::Stored)
}

fn read_value(value: &Value, check: Check) -> Result<JobSpec, TaskFileError> {
    let Value::Object(map) = value else {
        return Err(TaskFileError::NotObject(json_kind(value)));
    };
    let mut reader = Reader {
        errors: Vec::new(),
        check,
    };
    let fields = reader.collect_keys(map);
    let spec = reader.read(&fields);
    if reader.errors.is_empty() {
        Ok(spec)
    } else {
        Err(TaskFileError::Fields(reader.errors))
    }
}

/// The task-file form of a job: the seed's keys always, our optional keys when not at default.
///
/// `JobSpec`'s `Serialize` writes the same form without a `Value` ([`serialize`]): a key added
/// here is added to [`KEYS`] and [`wire_fields`] too (its array is `KEYS.len()` long, and
/// `serializer_writes_what_to_value_writes` compares the two on jobs that set every key).
pub fn to_value(spec: &JobSpec) -> Value {
    let mut map = Map::new();
    map.insert("JobName".into(), json!(spec.name));
    map.insert("Command".into(), json!(spec.command));
    map.insert("CronExpr".into(), json!(spec.cron_expr));
    map.insert("OnceJob".into(), json!(u8::from(spec.once_job)));
    map.insert("Timeout".into(), json!(spec.timeout_secs));
    map.insert("SynFlag".into(), json!(u8::from(spec.syn_flag)));
    map.insert("Enabled".into(), json!(u8::from(spec.enabled)));
    map.insert("WhiteHosts".into(), hosts_value(&spec.white_hosts));
    map.insert("BlackHosts".into(), hosts_value(&spec.black_hosts));
    if let Some(tz) = &spec.time_zone {
        map.insert("TimeZone".into(), json!(tz));
    }
    if spec.concurrency != Concurrency::Forbid {
        map.insert("Concurrency".into(), json!(spec.concurrency.as_str()));
    }
    if let Some(dir) = &spec.work_dir {
        map.insert("WorkDir".into(), json!(dir));
    }
    if !spec.env.is_empty() {
        map.insert("Env".into(), json!(spec.env));
    }
    if let Some(user) = &spec.run_as {
        map.insert("RunAs".into(), json!(user));
    }
    if !spec.params.is_empty() {
        map.insert("Params".into(), json!(spec.params));
    }
    if spec.retries != 0 {
        map.insert("Retries".into(), json!(spec.retries));
    }
    if spec.retry_delay_secs != 0 {
        map.insert("RetryDelay".into(), json!(spec.retry_delay_secs));
    }
    if spec.jitter_secs != 0 {
        map.insert("Jitter".into(), json!(spec.jitter_secs));
    }
    if !spec.labels.is_empty() {
        map.insert("Labels".into(), json!(spec.labels));
    }
    if spec.kill_grace_secs != DEFAULT_KILL_GRACE_SECS {
        map.insert("KillGrace".into(), json!(spec.kill_grace_secs));
    }
    let cg = &spec.cgroup;
    for (key, value) in [
        ("CPUShares", cg.cpu_shares),
        ("CPUQuotaUs", cg.cpu_quota_us),
        ("MemoryLimit", cg.memory_limit),
        ("MemorySwLimit", cg.memory_sw_limit),
        ("IOReadLimit", cg.io_read_limit),
        ("IOWriteLimit", cg.io_write_limit),
    ] {
        if value != 0 {
            map.insert(key.into(), json!(value));
        }
    }
    if !cg.io_limit_device.is_empty() {
        map.insert("IOLimitDevice".into(), json!(cg.io_limit_device));
    }
    if let Some(grace) = spec.grace_secs {
        map.insert("Grace".into(), json!(grace));
    }
    if let Some(max) = spec.max_duration_secs {
        map.insert("MaxDuration".into(), json!(max));
    }
    if spec.new_hosts {
        map.insert("NewHosts".into(), json!(1));
    }
    if let Some(n) = spec.new_hosts_at_once {
        map.insert("NewHostsAtOnce".into(), json!(n));
    }
    if let Some(n) = spec.run_on.count() {
        map.insert("RunOn".into(), if n == 1 { json!("one") } else { json!(n) });
        map.insert("Pick".into(), json!(spec.pick.as_str()));
    }
    if spec.retry_on_another {
        map.insert("RetryOnAnother".into(), json!(1));
    }
    Value::Object(map)
}

fn hosts_value(hosts: &[HostPattern]) -> Value {
    Value::Array(hosts.iter().map(|h| json!(h.as_str())).collect())
}

/// Writes the task-file form of a job straight to a serializer: the same keys, order and values
/// that serializing [`to_value`] writes, without building the `Value` first (the manager sends
/// every job of a host's desired state in each sync answer; `to_value` allocated a map of values
/// per job per answer).
///
/// serde_json is built without `preserve_order`, so the `Value` of [`to_value`] is a `BTreeMap`
/// and writes its keys sorted byte-wise: [`wire_fields`] lists them in that order.
pub(super) fn serialize<S: Serializer>(spec: &JobSpec, s: S) -> Result<S::Ok, S::Error> {
    let fields = wire_fields(spec);
    let len = fields.iter().filter(|(_, value)| value.is_some()).count();
    let mut map = s.serialize_map(Some(len))?;
    for (key, value) in &fields {
        if let Some(value) = value {
            map.serialize_entry(key, value)?;
        }
    }
    map.end()
}

/// One value of the task-file form, written as its `Value` in [`to_value`] is written.
enum WireValue<'a> {
    Str(&'a str),
    /// Every number of the form: a `Value` holding a non-negative integer writes a `u64`.
    Num(u64),
    Hosts(&'a [HostPattern]),
    StrList(&'a [String]),
    StrMap(&'a BTreeMap<String, String>),
}

impl Serialize for WireValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WireValue::Str(text) => s.serialize_str(text),
            WireValue::Num(n) => s.serialize_u64(*n),
            WireValue::Hosts(hosts) => s.collect_seq(hosts.iter().map(HostPattern::as_str)),
            WireValue::StrList(list) => s.collect_seq(list.iter()),
            WireValue::StrMap(map) => s.collect_map(map.iter()),
        }
    }
}

/// Every key of the task-file form, sorted byte-wise (as a `BTreeMap<String, _>` holds them),
/// with its value, or `None` where [`to_value`] leaves the key out.
fn wire_fields(spec: &JobSpec) -> [(&'static str, Option<WireValue<'_>>); KEYS.len()] {
    use WireValue::{Hosts, Num, Str, StrList, StrMap};
    let flag = |b: bool| Some(Num(u64::from(b)));
    let nonzero = |n: u64| (n != 0).then_some(Num(n));
    let cg = &spec.cgroup;
    [
        ("BlackHosts", Some(Hosts(&spec.black_hosts))),
        ("CPUQuotaUs", nonzero(cg.cpu_quota_us)),
        ("CPUShares", nonzero(cg.cpu_shares)),
        ("Command", Some(Str(&spec.command))),
        (
            "Concurrency",
            (spec.concurrency != Concurrency::Forbid).then(|| Str(spec.concurrency.as_str())),
        ),
        ("CronExpr", Some(Str(&spec.cron_expr))),
        ("Enabled", flag(spec.enabled)),
        ("Env", (!spec.env.is_empty()).then_some(StrMap(&spec.env))),
        ("Grace", spec.grace_secs.map(Num)),
        (
            "IOLimitDevice",
            (!cg.io_limit_device.is_empty()).then_some(Str(&cg.io_limit_device)),
        ),
        ("IOReadLimit", nonzero(cg.io_read_limit)),
        ("IOWriteLimit", nonzero(cg.io_write_limit)),
        ("Jitter", nonzero(spec.jitter_secs)),
        ("JobName", Some(Str(&spec.name))),
        (
            "KillGrace",
            (spec.kill_grace_secs != DEFAULT_KILL_GRACE_SECS).then_some(Num(spec.kill_grace_secs)),
        ),
        (
            "Labels",
            (!spec.labels.is_empty()).then_some(StrMap(&spec.labels)),
        ),
        ("MaxDuration", spec.max_duration_secs.map(Num)),
        ("MemoryLimit", nonzero(cg.memory_limit)),
        ("MemorySwLimit", nonzero(cg.memory_sw_limit)),
        ("NewHosts", spec.new_hosts.then_some(Num(1))),
        ("NewHostsAtOnce", spec.new_hosts_at_once.map(Num)),
        ("OnceJob", flag(spec.once_job)),
        (
            "Params",
            (!spec.params.is_empty()).then_some(StrList(&spec.params)),
        ),
        ("Pick", spec.run_on.count().map(|_| Str(spec.pick.as_str()))),
        ("Retries", nonzero(u64::from(spec.retries))),
        ("RetryDelay", nonzero(spec.retry_delay_secs)),
        ("RetryOnAnother", spec.retry_on_another.then_some(Num(1))),
        ("RunAs", spec.run_as.as_deref().map(Str)),
        (
            "RunOn",
            spec.run_on.count().map(|n| {
                if n == 1 {
                    Str("one")
                } else {
                    Num(u64::from(n))
                }
            }),
        ),
        ("SynFlag", flag(spec.syn_flag)),
        ("TimeZone", spec.time_zone.as_deref().map(Str)),
        ("Timeout", Some(Num(spec.timeout_secs))),
        ("WhiteHosts", Some(Hosts(&spec.white_hosts))),
        ("WorkDir", spec.work_dir.as_deref().map(Str)),
    ]
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Levenshtein distance on lower-cased ASCII, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_ascii_lowercase().chars().collect();
    let b: Vec<char> = b.to_ascii_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn closest_key(key: &str) -> &'static str {
    KEYS.iter()
        .min_by_key(|k| distance(key, k))
        .copied()
        .unwrap_or("JobName")
}

/// Whether the validation rules apply to what is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Input from a person: every rule applies.
    Rules,
    /// Data the manager accepted before: only what the model cannot hold is an error.
    Stored,
}

/// Accumulates field errors while reading one file.
struct Reader {
    errors: Vec<FieldError>,
    check: Check,
}

/// The file's values by canonical key, with the spelling the file used.
type Fields<'a> = BTreeMap<&'static str, (&'a str, &'a Value)>;

impl Reader {
    /// A value the model cannot hold: an error however the file is read.
    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// A broken validation rule: an error for input, ignored when decoding stored data.
    fn rule(&mut self, field: &str, message: impl Into<String>) {
        if self.check == Check::Rules {
            self.error(field, message);
        }
    }

    fn collect_keys<'a>(&mut self, map: &'a Map<String, Value>) -> Fields<'a> {
        let mut fields = Fields::new();
        for (key, value) in map {
            if key.trim_start().starts_with('#') {
                continue;
            }
            match KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                Some(canonical) => {
                    if let Some((first, _)) = fields.get(canonical) {
                        let message = format!("given twice (also as {first:?}); keep one");
                        self.rule(key, message);
                    } else {
                        fields.insert(canonical, (key.as_str(), value));
                    }
                }
                None => {
                    let message = format!(
                        "unknown key; did you mean {:?}? (keys starting with '#' are comments)",
                        closest_key(key)
                    );
                    self.rule(key, message);
                }
            }
        }
        fields
    }

    fn read(&mut self, f: &Fields<'_>) -> JobSpec {
        let mut spec = JobSpec::new("", "");

        match f.get("JobName") {
            None => self.rule("JobName", "is required"),
            Some((key, value)) => {
                if let Some(name) = self.string(key, value) {
                    if let Err(e) = validate_name(&name) {
                        self.rule(key, e);
                    }
                    spec.name = name;
                }
            }
        }
        match f.get("Command") {
            None => self.rule("Command", "is required"),
            Some((key, value)) => {
                if let Some(cmd) = self.string(key, value) {
                    if cmd.trim().is_empty() {
                        self.rule(key, "must not be empty");
                    } else if cmd.len() > MAX_COMMAND_LEN {
                        self.rule(
                            key,
                            format!(
                                "is {} bytes; at most {MAX_COMMAND_LEN} are allowed",
                                cmd.len()
                            ),
                        );
                    } else if cmd.contains('\0') {
                        self.rule(key, "must not contain a NUL character");
                    }
                    spec.command = cmd;
                }
            }
        }
        if let Some((key, value)) = f.get("OnceJob")
            && let Some(b) = self.flag(key, value)
        {
            spec.once_job = b;
        }
        if let Some((key, value)) = f.get("SynFlag")
            && let Some(b) = self.flag(key, value)
        {
            spec.syn_flag = b;
        }
        if let Some((key, value)) = f.get("Enabled")
            && let Some(b) = self.flag(key, value)
        {
            spec.enabled = b;
        }
        if let Some((key, value)) = f.get("Timeout")
            && let Some(n) = self.number(key, value, 0, MAX_TIMEOUT_SECS, "seconds (0 = no limit)")
        {
            spec.timeout_secs = n;
        }
        if let Some((key, value)) = f.get("TimeZone")
            && let Some(tz) = self.string(key, value)
        {
            let tz = tz.trim().to_string();
            if tz.is_empty() {
                spec.time_zone = None;
            } else {
                if Zone::parse(&tz).is_none() {
                    self.rule(key, format!("{tz:?} is not a known IANA time zone (for example \"Europe/Berlin\", \"UTC\")"));
                }
                spec.time_zone = Some(tz);
            }
        }
        if let Some((key, value)) = f.get("CronExpr") {
            if let Some(expr) = self.string(key, value) {
                spec.cron_expr = expr.trim().to_string();
            }
            if !spec.cron_expr.is_empty()
                && let Err(e) = Schedule::parse(&spec.cron_expr, spec.zone())
            {
                self.rule(key, e.to_string());
            }
        }
        if spec.once_job && !spec.cron_expr.is_empty() {
            self.rule(
                "OnceJob",
                "a once-job runs once per saved revision and cannot also have a CronExpr; \
                 set CronExpr to \"\" or OnceJob to 0",
            );
        }
        if let Some((key, value)) = f.get("WhiteHosts") {
            spec.white_hosts = self.hosts(key, value);
        }
        if let Some((key, value)) = f.get("BlackHosts") {
            spec.black_hosts = self.hosts(key, value);
        }
        if let Some((key, value)) = f.get("Concurrency")
            && let Some(s) = self.string(key, value)
        {
            match Concurrency::parse(s.trim()) {
                Some(c) => spec.concurrency = c,
                None => self.rule(
                    key,
                    format!("{s:?} is not a policy; use \"forbid\", \"allow\" or \"replace\""),
                ),
            }
        }
        if let Some((key, value)) = f.get("WorkDir")
            && let Some(dir) = self.string(key, value)
        {
            if dir.is_empty() {
                spec.work_dir = None;
            } else {
                if !dir.starts_with('/') || dir.contains('\0') {
                    self.rule(key, format!("{dir:?} must be an absolute path"));
                }
                spec.work_dir = Some(dir);
            }
        }
        if let Some((key, value)) = f.get("Env")
            && let Some(env) = self.string_map(key, value)
        {
            for (name, val) in &env {
                if validate_param_name(name).is_err() {
                    self.rule(
                        key,
                        format!("variable name {name:?} must match [A-Za-z_][A-Za-z0-9_]*"),
                    );
                } else if name.to_ascii_uppercase().starts_with("OP_") {
                    self.rule(
                        key,
                        format!("variable name {name:?} uses the reserved prefix OP_"),
                    );
                }
                if val.contains('\0') {
                    self.rule(key, format!("value of {name:?} must not contain NUL"));
                }
                if let Some(secret) = crate::secret::secret_ref(val)
                    && let Err(e) = crate::secret::validate_secret_name(secret)
                {
                    self.rule(
                        key,
                        format!("value of {name:?} names secret {secret:?}, whose name {e}"),
                    );
                }
            }
            spec.env = env;
        }
        if let Some((key, value)) = f.get("RunAs")
            && let Some(user) = self.string(key, value)
        {
            if user.is_empty() {
                spec.run_as = None;
            } else {
                if !valid_user(&user) {
                    self.rule(key, format!("{user:?} is not a user name or numeric uid"));
                }
                spec.run_as = Some(user);
            }
        }
        if let Some((key, value)) = f.get("Params") {
            spec.params = self.params(key, value);
        }
        if !spec.params.is_empty() && (spec.once_job || !spec.cron_expr.is_empty()) {
            self.rule(
                "Params",
                "scheduled jobs run without parameters; declare Params only on API jobs \
                 (CronExpr \"\" and OnceJob 0)",
            );
        }
        if let Some((key, value)) = f.get("Retries")
            && let Some(n) = self.number(key, value, 0, 10, "retries")
        {
            spec.retries = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some((key, value)) = f.get("RetryDelay")
            && let Some(n) = self.number(key, value, 0, 86_400, "seconds")
        {
            spec.retry_delay_secs = n;
        }
        if let Some((key, value)) = f.get("Jitter")
            && let Some(n) = self.number(key, value, 0, 3_600, "seconds")
        {
            spec.jitter_secs = n;
        }
        if let Some((key, value)) = f.get("KillGrace")
            && let Some(n) = self.number(key, value, 0, 3_600, "seconds")
        {
            spec.kill_grace_secs = n;
        }
        if let Some((key, value)) = f.get("Labels")
            && let Some(labels) = self.string_map(key, value)
        {
            for (k, v) in &labels {
                if !valid_label(k) {
                    self.rule(
                        key,
                        format!("label key {k:?} must be 1..63 of [A-Za-z0-9._/-]"),
                    );
                }
                if v.len() > 63 || v.chars().any(|c| c.is_control() || c == ',' || c == '=') {
                    self.rule(key, format!("label value {v:?} must be at most 63 characters without ',', '=' or control characters"));
                }
            }
            spec.labels = labels;
        }
        spec.cgroup = self.cgroup(f);
        if let Some((key, value)) = f.get("Grace")
            && !value.is_null()
            && let Some(n) = self.number(
                key,
                value,
                1,
                MAX_GRACE_SECS,
                "seconds a fire's run may start late and still be on time",
            )
        {
            if spec.cron_expr.is_empty() {
                self.rule(
                    key,
                    "only a scheduled job (CronExpr) has fires to be late for; remove Grace",
                );
            }
            spec.grace_secs = Some(n);
        }
        if let Some((key, value)) = f.get("MaxDuration")
            && !value.is_null()
            && let Some(n) = self.number(
                key,
                value,
                1,
                MAX_TIMEOUT_SECS,
                "seconds a run may last before it is reported overrunning",
            )
        {
            if spec.timeout_secs != 0 && n >= spec.timeout_secs {
                self.rule(
                    key,
                    format!(
                        "is {n} s, not below Timeout ({} s): the run is killed first, so it \
                         could never be reported overrunning; lower MaxDuration or remove it",
                        spec.timeout_secs
                    ),
                );
            }
            spec.max_duration_secs = Some(n);
        }
        if let Some((key, value)) = f.get("NewHosts")
            && let Some(b) = self.flag(key, value)
        {
            if b && !spec.once_job {
                self.rule(
                    key,
                    "only a once-job (OnceJob 1) reaches hosts that join later; \
                     a cron or API job already runs on every host it selects",
                );
            }
            spec.new_hosts = b;
        }
        if let Some((key, value)) = f.get("NewHostsAtOnce")
            && !value.is_null()
        {
            if let Some(n) = self.number(
                key,
                value,
                1,
                MAX_NEW_HOSTS_AT_ONCE,
                "late hosts let start the once-job at once",
            ) {
                spec.new_hosts_at_once = Some(n);
            }
            if !spec.new_hosts {
                self.rule(
                    key,
                    "limits the late hosts of a once-job with NewHosts 1; set NewHosts to 1 \
                     (with OnceJob 1) or remove NewHostsAtOnce",
                );
            }
        }
        self.run_on(f, &mut spec);
        spec
    }

    /// `RunOn`, `Pick`, `RetryOnAnother` (issue 23): a job the leader fires on N picked hosts.
    fn run_on(&mut self, f: &Fields<'_>, spec: &mut JobSpec) {
        use crate::runon::{MAX_RUN_ON, Pick, RunOn};
        let mut given = false;
        if let Some((key, value)) = f.get("RunOn")
            && !value.is_null()
        {
            let word = match value {
                Value::String(s) => s.trim().to_ascii_lowercase(),
                Value::Number(n) => n.to_string(),
                other => {
                    self.error(
                        key,
                        format!(
                            "must be \"all\", \"one\" or a number of hosts, found {}",
                            json_kind(other)
                        ),
                    );
                    String::new()
                }
            };
            match word.as_str() {
                "" => {}
                "all" => {}
                "one" => spec.run_on = RunOn::Hosts(1),
                w => match w.parse::<i64>() {
                    Ok(n) if (1..=i64::from(MAX_RUN_ON)).contains(&n) => {
                        spec.run_on = RunOn::Hosts(n as u32);
                    }
                    Ok(n) if n < 1 => self.error(
                        key,
                        format!(
                            "{n} would run each fire on no host; use \"one\", a number \
                             1..={MAX_RUN_ON} or \"all\""
                        ),
                    ),
                    Ok(n) => self.error(
                        key,
                        format!("{n} is out of range; allowed is 1..={MAX_RUN_ON} hosts"),
                    ),
                    Err(_) => self.error(
                        key,
                        format!("{w:?} is not \"all\", \"one\" or a number of hosts"),
                    ),
                },
            }
            given = spec.run_on.is_picked();
        }
        if let Some((key, value)) = f.get("Pick")
            && !value.is_null()
            && let Some(s) = self.string(key, value)
            && !s.trim().is_empty()
        {
            match Pick::parse(&s) {
                Some(p) => spec.pick = p,
                None => self.error(
                    key,
                    format!("{s:?} is not a pick; use \"least_loaded\", \"hash\" or \"random\""),
                ),
            }
            if !given {
                self.rule(
                    key,
                    "picks hosts only for a job with RunOn \"one\" or a number; set RunOn \
                     or remove Pick",
                );
            }
        }
        if let Some((key, value)) = f.get("RetryOnAnother")
            && !value.is_null()
            && let Some(b) = self.flag(key, value)
        {
            spec.retry_on_another = b;
            if b && !given {
                self.rule(
                    key,
                    "retries on another host only for a job with RunOn \"one\" or a number \
                     (with RunOn all every host runs anyway); set RunOn or remove RetryOnAnother",
                );
            }
        }
        if given && spec.cron_expr.is_empty() {
            self.rule(
                "RunOn",
                "the leader picks hosts per fire of a schedule; set CronExpr (a once-job or an \
                 API job runs where it is sent)",
            );
        }
    }

    fn cgroup(&mut self, f: &Fields<'_>) -> CgroupLimits {
        let mut cg = CgroupLimits::default();
        const TIB: u64 = 1 << 40;
        let num = |reader: &mut Reader, name: &str, lo: u64, hi: u64, what: &str| -> u64 {
            match f.get(name) {
                Some((key, value)) => reader.number(key, value, lo, hi, what).unwrap_or(0),
                None => 0,
            }
        };
        cg.cpu_shares = num(
            self,
            "CPUShares",
            0,
            262_144,
            "a relative weight (0 = unset, else 2..262144)",
        );
        if cg.cpu_shares == 1 {
            self.rule("CPUShares", "1 is below the minimum weight 2 (0 = unset)");
        }
        cg.cpu_quota_us = num(
            self,
            "CPUQuotaUs",
            0,
            100_000_000,
            "microseconds per 100 ms period (0 = unlimited)",
        );
        if (1..1000).contains(&cg.cpu_quota_us) {
            self.rule(
                "CPUQuotaUs",
                "must be 0 (unlimited) or at least 1000 microseconds",
            );
        }
        cg.memory_limit = num(self, "MemoryLimit", 0, TIB, "bytes (0 = unlimited)");
        cg.memory_sw_limit = num(self, "MemorySwLimit", 0, TIB, "bytes (0 = unlimited)");
        if cg.memory_limit != 0 && cg.memory_sw_limit != 0 && cg.memory_sw_limit < cg.memory_limit {
            self.rule(
                "MemorySwLimit",
                "must be at least MemoryLimit (it counts memory plus swap)",
            );
        }
        cg.io_read_limit = num(
            self,
            "IOReadLimit",
            0,
            TIB,
            "bytes per second (0 = unlimited)",
        );
        cg.io_write_limit = num(
            self,
            "IOWriteLimit",
            0,
            TIB,
            "bytes per second (0 = unlimited)",
        );
        if let Some((key, value)) = f.get("IOLimitDevice")
            && let Some(dev) = self.string(key, value)
        {
            if !dev.is_empty() && !valid_device(&dev) {
                self.rule(
                    key,
                    format!("{dev:?} must be a device path under /dev/ or MAJOR:MINOR"),
                );
            }
            cg.io_limit_device = dev;
        }
        if (cg.io_read_limit != 0 || cg.io_write_limit != 0) && cg.io_limit_device.is_empty() {
            self.rule(
                "IOLimitDevice",
                "is required when IOReadLimit or IOWriteLimit is set",
            );
        }
        cg
    }

    /// A string field, bounded: `Command` to [`MAX_COMMAND_LEN`], every other to
    /// [`MAX_FIELD_LEN`] (a 400 KB CronExpr is refused here, with its size).
    fn string(&mut self, key: &str, value: &Value) -> Option<String> {
        let max = if key.eq_ignore_ascii_case("Command") {
            MAX_COMMAND_LEN
        } else {
            MAX_FIELD_LEN
        };
        match value {
            Value::String(s) if s.len() > max => {
                self.error(
                    key,
                    format!("is {} bytes; at most {max} are allowed", s.len()),
                );
                None
            }
            Value::String(s) => Some(s.clone()),
            Value::Null => Some(String::new()),
            other => {
                self.error(key, format!("must be a string, found {}", json_kind(other)));
                None
            }
        }
    }

    fn flag(&mut self, key: &str, value: &Value) -> Option<bool> {
        let parsed = match value {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => match n.as_u64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "0" | "false" => Some(false),
                "1" | "true" => Some(true),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.error(
                key,
                format!("must be 0 or 1 (or false/true), found {value}"),
            );
        }
        parsed
    }

    fn number(&mut self, key: &str, value: &Value, lo: u64, hi: u64, what: &str) -> Option<u64> {
        let n: Option<i128> = match value {
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1e30)
                        .map(|f| f as i128)
                }),
            Value::String(s) => s.trim().parse::<i128>().ok(),
            _ => None,
        };
        match n {
            None => {
                self.error(
                    key,
                    format!("must be a whole number of {what}, found {value}"),
                );
                None
            }
            Some(n) if n < i128::from(lo) || n > i128::from(hi) => {
                let message = format!("{n} is out of range; allowed is {lo}..={hi} {what}");
                match u64::try_from(n) {
                    // Stored data keeps a value today's limits refuse, if the model can hold it.
                    Ok(n) if self.check == Check::Stored => Some(n),
                    _ => {
                        self.error(key, message);
                        None
                    }
                }
            }
            Some(n) => Some(n as u64),
        }
    }

    fn hosts(&mut self, key: &str, value: &Value) -> Vec<HostPattern> {
        let Value::Array(items) = value else {
            if value.is_null() {
                return Vec::new();
            }
            self.error(
                key,
                format!(
                    "must be a list of host names, IPs, CIDRs or globs, found {}",
                    json_kind(value)
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                // An empty entry is most often a template variable that expanded to nothing. Were it
                // skipped, `["{{host}}"]` with no host would become `[]`, which means every host
                // (the seed did the same: its substring test matches "" everywhere). Input is
                // refused; stored records, which may hold one, read back without it as before.
                Value::String(s) if s.trim().is_empty() => self.rule(
                    key,
                    format!(
                        "entry {} of {} is empty; an empty entry would not narrow the selection, \
                         so remove it (an empty list [] means every host)",
                        i + 1,
                        items.len()
                    ),
                ),
                Value::String(s) if s.len() > MAX_FIELD_LEN => self.error(
                    key,
                    format!(
                        "an entry of {} bytes; at most {MAX_FIELD_LEN} are allowed",
                        s.len()
                    ),
                ),
                Value::String(s) => match HostPattern::parse(s.trim()) {
                    Ok(p) => out.push(p),
                    Err(e) => {
                        self.rule(key, e.to_string());
                        out.push(HostPattern::exact_name(s.trim()));
                    }
                },
                other => self.error(
                    key,
                    format!("entries must be strings, found {}", json_kind(other)),
                ),
            }
        }
        out
    }

    fn params(&mut self, key: &str, value: &Value) -> Vec<String> {
        let Value::Array(items) = value else {
            if value.is_null() {
                return Vec::new();
            }
            self.error(
                key,
                format!(
                    "must be a list of parameter names, found {}",
                    json_kind(value)
                ),
            );
            return Vec::new();
        };
        if items.len() > MAX_PARAMS {
            self.rule(
                key,
                format!(
                    "declares {} parameters; at most {MAX_PARAMS} are allowed",
                    items.len()
                ),
            );
            if self.check == Check::Rules {
                return Vec::new();
            }
        }
        let mut out: Vec<String> = Vec::new();
        for item in items {
            let Value::String(name) = item else {
                self.error(
                    key,
                    format!("entries must be strings, found {}", json_kind(item)),
                );
                continue;
            };
            if let Err(e) = validate_param_name(name) {
                self.rule(key, e);
            } else if out.iter().any(|p| p.eq_ignore_ascii_case(name)) {
                self.rule(
                    key,
                    format!("parameter {name:?} is declared twice (names are case-insensitive)"),
                );
                continue;
            }
            // A name refused above is an error for input; stored data keeps it as it was.
            out.push(name.clone());
        }
        out
    }

    fn string_map(&mut self, key: &str, value: &Value) -> Option<BTreeMap<String, String>> {
        match value {
            Value::Null => Some(BTreeMap::new()),
            Value::Object(map) if map.len() > MAX_MAP_ENTRIES => {
                self.error(
                    key,
                    format!(
                        "has {} entries; at most {MAX_MAP_ENTRIES} are allowed",
                        map.len()
                    ),
                );
                None
            }
            Value::Object(map) => {
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    if k.len() > MAX_FIELD_LEN {
                        self.error(
                            key,
                            format!(
                                "a key of {} bytes; at most {MAX_FIELD_LEN} are allowed",
                                k.len()
                            ),
                        );
                        continue;
                    }
                    match v {
                        Value::String(s) if s.len() > MAX_ENV_VALUE_LEN => self.error(
                            key,
                            format!(
                                "value of {k:?} is {} bytes; at most {MAX_ENV_VALUE_LEN} are allowed",
                                s.len()
                            ),
                        ),
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        Value::Number(n) => {
                            out.insert(k.clone(), n.to_string());
                        }
                        Value::Bool(b) => {
                            out.insert(k.clone(), b.to_string());
                        }
                        other => self.error(
                            key,
                            format!(
                                "value of {k:?} must be a string, found {}",
                                json_kind(other)
                            ),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                self.error(
                    key,
                    format!("must be an object of strings, found {}", json_kind(other)),
                );
                None
            }
        }
    }
}

fn valid_user(user: &str) -> bool {
    if user.chars().all(|c| c.is_ascii_digit()) {
        return user.parse::<u32>().is_ok();
    }
    let mut chars = user.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && user.len() <= 32
        && user
            .trim_end_matches('$')
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn valid_label(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 63
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

fn valid_device(dev: &str) -> bool {
    if let Some((major, minor)) = dev.split_once(':') {
        return major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok();
    }
    dev.starts_with("/dev/")
        && dev.len() > 5
        && !dev.split('/').any(|part| part == "..")
        && !dev.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(spec) => panic!("expected an error, parsed {spec:?}"),
            Err(e) => e.messages(),
        }
    }

    #[test]
    fn minimal_and_defaults() {
        let spec = parse(r#"{"jobname":"a","command":"true"}"#).unwrap();
        assert_eq!(spec, JobSpec::new("a", "true"));
    }

    #[test]
    fn case_insensitive_and_comments() {
        let spec =
            parse(r###"{"JOBNAME":"a","cOmMaNd":"true","## note":"x","#":1,"oncejob":true}"###)
                .unwrap();
        assert!(spec.once_job);
    }

    #[test]
    fn duplicate_keys_in_different_case() {
        let e = errs(r#"{"JobName":"a","jobname":"b","Command":"x"}"#);
        assert!(e.iter().any(|m| m.contains("given twice")), "{e:?}");
    }

    #[test]
    fn unknown_key_suggests_closest() {
        let e = errs(r#"{"JobName":"a","Command":"x","Timout":3}"#);
        assert_eq!(
            e,
            vec![
                r#"Timout: unknown key; did you mean "Timeout"? (keys starting with '#' are comments)"#
            ]
        );
        let e = errs(r#"{"JobName":"a","Command":"x","whitehost":[]}"#);
        assert!(e[0].contains("\"WhiteHosts\""), "{e:?}");
    }

    #[test]
    fn empty_host_entry_is_refused_in_input_but_read_from_storage() {
        for key in ["WhiteHosts", "blackhosts"] {
            let text = format!(r#"{{"JobName":"a","Command":"x","{key}":["web-1",""]}}"#);
            let e = errs(&text);
            assert_eq!(
                e,
                vec![format!(
                    "{key}: entry 2 of 2 is empty; an empty entry would not narrow the selection, \
                     so remove it (an empty list [] means every host)"
                )]
            );
            let value: Value = serde_json::from_str(&text).unwrap();
            let spec = decode_stored(&value).unwrap();
            let stored = if key == "WhiteHosts" {
                &spec.white_hosts
            } else {
                &spec.black_hosts
            };
            assert_eq!(stored.len(), 1, "{key}");
        }
        // The seed's files hold empty lists, which stay valid.
        assert!(parse(r#"{"JobName":"a","Command":"x","WhiteHosts":[],"BlackHosts":[]}"#).is_ok());
    }

    #[test]
    fn collects_all_errors() {
        let e = errs(r#"{"Timeout":-1,"OnceJob":2}"#);
        assert_eq!(e.len(), 4, "{e:?}");
    }

    #[test]
    fn round_trip_full() {
        let text = r#"{
            "JobName":"full","Command":"echo {host}","Timeout":10,"SynFlag":1,"Enabled":0,
            "WhiteHosts":["10.0.0.0/8","web-*"],"BlackHosts":["10.0.0.5"],"TimeZone":"Europe/Berlin",
            "Concurrency":"replace","WorkDir":"/tmp","Env":{"A":"1"},"RunAs":"nobody","Params":["host"],
            "Retries":2,"RetryDelay":3,"Jitter":4,"Labels":{"role":"db"},"KillGrace":7,
            "CPUShares":512,"CPUQuotaUs":50000,"MemoryLimit":1048576,"MemorySwLimit":2097152,
            "IOReadLimit":1000,"IOWriteLimit":2000,"IOLimitDevice":"/dev/sdb"}"#;
        let spec = parse(text).unwrap();
        let back = parse_value(&to_value(&spec)).unwrap();
        assert_eq!(spec, back);
        assert_eq!(spec.cgroup.memory_limit, 1_048_576);
    }

    #[test]
    fn cgroup_rules() {
        let e = errs(r#"{"JobName":"a","Command":"x","IOReadLimit":5}"#);
        assert!(e[0].starts_with("IOLimitDevice"), "{e:?}");
        let e = errs(r#"{"JobName":"a","Command":"x","MemoryLimit":10,"MemorySwLimit":5}"#);
        assert!(e[0].starts_with("MemorySwLimit"), "{e:?}");
        let e = errs(r#"{"JobName":"a","Command":"x","CPUQuotaUs":5}"#);
        assert!(e[0].starts_with("CPUQuotaUs"), "{e:?}");
    }

    /// A job that breaks every rule the model can represent: what a job saved today looks like
    /// to a later release with stricter rules, or what an older release accepted.
    const BREAKS_EVERY_RULE: &str = r#"{
        "JobName":"has space","Command":"","CronExpr":"61 * * * * * *","OnceJob":1,
        "Timeout":99999999999,"TimeZone":"Mars/Olympus","Concurrency":"queue",
        "WhiteHosts":["10.0.0.0/33"],"BlackHosts":["bad host"],"WorkDir":"relative",
        "Env":{"OP_X":"1","9a":"2"},"RunAs":"no such user","Params":["9p","p","P"],
        "Retries":99,"RetryDelay":999999,"Jitter":999999,"KillGrace":999999,
        "Labels":{"":"a,b"},"CPUShares":1,"CPUQuotaUs":5,"MemoryLimit":10,"MemorySwLimit":5,
        "IOReadLimit":1,"IOLimitDevice":"sdb","FutureKey":{"added":"by a later release"}}"#;

    #[test]
    fn stored_jobs_decode_whatever_the_rules_say() {
        let value: Value = serde_json::from_str(BREAKS_EVERY_RULE).unwrap();
        let strict = parse_value(&value).unwrap_err().messages();
        assert!(
            strict.len() >= 20,
            "every rule refuses something: {strict:?}"
        );

        let spec = decode_stored(&value).unwrap();
        assert_eq!(spec.name, "has space");
        assert_eq!(spec.timeout_secs, 99_999_999_999);
        assert_eq!(spec.time_zone.as_deref(), Some("Mars/Olympus"));
        assert_eq!(spec.concurrency, Concurrency::Forbid);
        assert_eq!(spec.work_dir.as_deref(), Some("relative"));
        assert_eq!(spec.run_as.as_deref(), Some("no such user"));
        assert_eq!(spec.params, ["9p", "p"]);
        assert_eq!((spec.retries, spec.cgroup.cpu_shares), (99, 1));
        assert!(
            spec.schedule().is_none(),
            "an unparsable schedule never fires"
        );
        // A refused host entry names one host exactly, never more.
        let white = &spec.white_hosts[0];
        assert_eq!(white.as_str(), "10.0.0.0/33");
        let host = |name: &str, ip: &str| crate::hosts::HostIdentity {
            hostname: name.into(),
            ips: vec![ip.parse().unwrap()],
            labels: BTreeMap::new(),
            facts: None,
        };
        assert!(!white.matches(&host("web-1", "10.0.0.1")));
        assert!(spec.black_hosts[0].matches(&host("BAD HOST", "10.0.0.1")));
        // What a stored job says is what it says again when sent on.
        assert_eq!(decode_stored(&to_value(&spec)).unwrap(), spec);
        // The JobSpec's serde is the stored path.
        let via_serde: JobSpec = serde_json::from_value(value).unwrap();
        assert_eq!(via_serde, spec);
    }

    #[test]
    fn stored_decoding_refuses_what_the_model_cannot_hold() {
        for text in [
            r#"{"JobName":"a","Command":"x","Timeout":-1}"#,
            r#"{"JobName":"a","Command":"x","Timeout":"soon"}"#,
            r#"{"JobName":"a","Command":"x","Enabled":2}"#,
            r#"{"JobName":7,"Command":"x"}"#,
            r#"{"JobName":"a","Command":"x","WhiteHosts":"all"}"#,
            r#"["not", "an object"]"#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert!(decode_stored(&value).is_err(), "{text}");
        }
    }

    #[test]
    fn once_job_with_cron_is_refused() {
        let e = errs(r#"{"JobName":"a","Command":"x","OnceJob":1,"CronExpr":"* * * * *"}"#);
        assert!(e[0].starts_with("OnceJob"), "{e:?}");
    }

    #[test]
    fn grace_and_max_duration() {
        let spec = parse(
            r#"{"JobName":"a","Command":"x","CronExpr":"0 3 * * *","Timeout":600,
                "grace":30,"MaxDuration":300}"#,
        )
        .unwrap();
        assert_eq!(
            (spec.grace_secs, spec.max_duration_secs),
            (Some(30), Some(300))
        );
        assert_eq!(spec.grace(), Some(chrono::Duration::seconds(30)));
        let value = to_value(&spec);
        assert_eq!(
            (value["Grace"].as_u64(), value["MaxDuration"].as_u64()),
            (Some(30), Some(300))
        );
        assert_eq!(parse_value(&value).unwrap(), spec);

        // Unset: absent from the written form, so a seed file round-trips unchanged.
        let plain =
            parse(r#"{"JobName":"a","Command":"x","CronExpr":"0 3 * * *","Grace":null}"#).unwrap();
        assert_eq!((plain.grace_secs, plain.max_duration_secs), (None, None));
        let value = to_value(&plain);
        assert!(value.get("Grace").is_none() && value.get("MaxDuration").is_none());

        for (text, field, says) in [
            (
                r#""CronExpr":"* * * * *","Grace":0"#,
                "Grace",
                "out of range",
            ),
            (
                r#""CronExpr":"* * * * *","Grace":86401"#,
                "Grace",
                "out of range",
            ),
            (
                r#""CronExpr":"* * * * *","Grace":"soon""#,
                "Grace",
                "whole number",
            ),
            (r#""Grace":10"#, "Grace", "only a scheduled job"),
            (r#""MaxDuration":0"#, "MaxDuration", "out of range"),
            (
                r#""Timeout":60,"MaxDuration":60"#,
                "MaxDuration",
                "not below Timeout",
            ),
        ] {
            let e = errs(&format!(r#"{{"JobName":"a","Command":"x",{text}}}"#));
            assert_eq!(e.len(), 1, "{text}: {e:?}");
            assert!(
                e[0].starts_with(field) && e[0].contains(says),
                "{text}: {e:?}"
            );
        }
    }

    #[test]
    fn new_hosts_fields() {
        let spec = parse(
            r#"{"JobName":"a","Command":"x","OnceJob":1,"NewHosts":true,"NewHostsAtOnce":3}"#,
        )
        .unwrap();
        assert!(spec.new_hosts);
        assert_eq!(spec.new_hosts_at_once, Some(3));
        assert_eq!(spec.new_hosts_cap(), 3);
        assert_eq!(parse_value(&to_value(&spec)).unwrap(), spec);
        let spec = parse(r#"{"JobName":"a","Command":"x","OnceJob":1,"NewHosts":1}"#).unwrap();
        assert_eq!(
            (spec.new_hosts_at_once, spec.new_hosts_cap()),
            (None, super::super::DEFAULT_NEW_HOSTS_AT_ONCE)
        );
        assert!(
            !parse(r#"{"JobName":"a","Command":"x","OnceJob":1}"#)
                .unwrap()
                .new_hosts
        );
        for (text, field, says) in [
            (
                r#""OnceJob":1,"NewHosts":1,"NewHostsAtOnce":0"#,
                "NewHostsAtOnce",
                "out of range",
            ),
            (
                r#""OnceJob":1,"NewHosts":1,"NewHostsAtOnce":-2"#,
                "NewHostsAtOnce",
                "out of range",
            ),
            (
                r#""OnceJob":1,"NewHosts":1,"NewHostsAtOnce":"many""#,
                "NewHostsAtOnce",
                "whole number",
            ),
            (
                r#""OnceJob":1,"NewHostsAtOnce":3"#,
                "NewHostsAtOnce",
                "set NewHosts to 1",
            ),
            (r#""NewHosts":1"#, "NewHosts", "only a once-job"),
            (r#""OnceJob":1,"NewHosts":2"#, "NewHosts", "must be 0 or 1"),
        ] {
            let e = errs(&format!(r#"{{"JobName":"a","Command":"x",{text}}}"#));
            assert_eq!(e.len(), 1, "{text}: {e:?}");
            assert!(
                e[0].starts_with(field) && e[0].contains(says),
                "{text}: {e:?}"
            );
        }
    }

    #[test]
    fn run_on_pick_and_retry_on_another() {
        use crate::runon::{Pick, RunOn};
        let cron = r#""JobName":"a","Command":"x","CronExpr":"* * * * * *""#;
        let spec = parse(&format!("{{{cron},\"RunOn\":\"one\"}}")).unwrap();
        assert_eq!(
            (spec.run_on, spec.pick),
            (RunOn::Hosts(1), Pick::LeastLoaded)
        );
        let spec = parse(&format!(
            "{{{cron},\"runon\":3,\"Pick\":\"hash\",\"RetryOnAnother\":true}}"
        ))
        .unwrap();
        assert_eq!(spec.run_on, RunOn::Hosts(3));
        assert_eq!(spec.pick, Pick::Hash);
        assert!(spec.retry_on_another);
        assert_eq!(decode_stored(&to_value(&spec)).unwrap(), spec);
        let spec = parse(&format!("{{{cron},\"RunOn\":\"all\"}}")).unwrap();
        assert_eq!(spec, parse(&format!("{{{cron}}}")).unwrap());
        assert_eq!(
            parse(&format!("{{{cron},\"RunOn\":\"2\"}}"))
                .unwrap()
                .run_on,
            RunOn::Hosts(2)
        );

        for (extra, field, says) in [
            (r#""RunOn":0"#, "RunOn", "no host"),
            (r#""RunOn":"0""#, "RunOn", "no host"),
            (r#""RunOn":-2"#, "RunOn", "no host"),
            (r#""RunOn":"some""#, "RunOn", "not \"all\""),
            (r#""RunOn":true"#, "RunOn", "must be"),
            (r#""RunOn":99999"#, "RunOn", "out of range"),
            (
                r#""RunOn":"one","Pick":"round_robin""#,
                "Pick",
                "not a pick",
            ),
            (r#""Pick":"hash""#, "Pick", "RunOn"),
            (r#""RetryOnAnother":1"#, "RetryOnAnother", "RunOn"),
        ] {
            let e = errs(&format!("{{{cron},{extra}}}"));
            assert!(
                e.iter().any(|m| m.starts_with(field) && m.contains(says)),
                "{extra}: {e:?}"
            );
        }
        let e = errs(r#"{"JobName":"a","Command":"x","RunOn":"one"}"#);
        assert!(e[0].contains("CronExpr"), "{e:?}");
    }

    /// A serializer that accepts one map and returns the entry count it declared and the number
    /// of entries written: serde_json ignores the declared count, other serializers rely on it.
    struct MapCounter;

    #[derive(Debug)]
    struct NotAMap;

    impl fmt::Display for NotAMap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("MapCounter serializes only a map")
        }
    }

    impl std::error::Error for NotAMap {}

    impl serde::ser::Error for NotAMap {
        fn custom<T: fmt::Display>(_: T) -> Self {
            NotAMap
        }
    }

    struct Counted {
        declared: Option<usize>,
        written: usize,
    }

    impl SerializeMap for Counted {
        type Ok = (Option<usize>, usize);
        type Error = NotAMap;

        fn serialize_key<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), NotAMap> {
            self.written += 1;
            Ok(())
        }

        fn serialize_value<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), NotAMap> {
            Ok(())
        }

        fn end(self) -> Result<Self::Ok, NotAMap> {
            Ok((self.declared, self.written))
        }
    }

    macro_rules! not_a_map {
        ($($method:ident($($arg:ty),*)),* $(,)?) => {$(
            fn $method(self, $(_: $arg),*) -> Result<Self::Ok, NotAMap> {
                Err(NotAMap)
            }
        )*};
    }

    impl Serializer for MapCounter {
        type Ok = (Option<usize>, usize);
        type Error = NotAMap;
        type SerializeMap = Counted;
        type SerializeSeq = serde::ser::Impossible<Self::Ok, NotAMap>;
        type SerializeTuple = serde::ser::Impossible<Self::Ok, NotAMap>;
        type SerializeTupleStruct = serde::ser::Impossible<Self::Ok, NotAMap>;
        type SerializeTupleVariant = serde::ser::Impossible<Self::Ok, NotAMap>;
        type SerializeStruct = serde::ser::Impossible<Self::Ok, NotAMap>;
        type SerializeStructVariant = serde::ser::Impossible<Self::Ok, NotAMap>;

        fn serialize_map(self, declared: Option<usize>) -> Result<Counted, NotAMap> {
            Ok(Counted {
                declared,
                written: 0,
            })
        }

        not_a_map!(
            serialize_bool(bool),
            serialize_i8(i8),
            serialize_i16(i16),
            serialize_i32(i32),
            serialize_i64(i64),
            serialize_u8(u8),
            serialize_u16(u16),
            serialize_u32(u32),
            serialize_u64(u64),
            serialize_f32(f32),
            serialize_f64(f64),
            serialize_char(char),
            serialize_str(&str),
            serialize_bytes(&[u8]),
            serialize_none(),
            serialize_unit(),
            serialize_unit_struct(&'static str),
            serialize_unit_variant(&'static str, u32, &'static str),
        );

        fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Self::Ok, NotAMap> {
            Err(NotAMap)
        }

        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: &T,
        ) -> Result<Self::Ok, NotAMap> {
            Err(NotAMap)
        }

        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<Self::Ok, NotAMap> {
            Err(NotAMap)
        }

        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAMap> {
            Err(NotAMap)
        }

        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAMap> {
            Err(NotAMap)
        }

        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, NotAMap> {
            Err(NotAMap)
        }

        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, NotAMap> {
            Err(NotAMap)
        }

        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStruct, NotAMap> {
            Err(NotAMap)
        }

        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, NotAMap> {
            Err(NotAMap)
        }
    }

    /// Jobs that between them set, and leave at default, every key of the task-file form.
    fn wire_specs() -> Vec<JobSpec> {
        use crate::runon::{Pick, RunOn};
        let hosts = |list: &[&str]| -> Vec<HostPattern> {
            list.iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect()
        };
        let pairs = |list: &[(&str, &str)]| -> BTreeMap<String, String> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut specs = vec![JobSpec::new("defaults", "true")];

        let mut full = JobSpec::new("full.job-1", "echo {host} && sleep 1");
        full.cron_expr = "*/5 * * * *".into();
        full.timeout_secs = 600;
        full.syn_flag = true;
        full.enabled = false;
        full.white_hosts = hosts(&["10.0.0.0/8", "web-*", "label.role=db", "fact.cpus>=8"]);
        full.black_hosts = hosts(&["10.0.0.5", "db-7.example.com"]);
        full.time_zone = Some("Europe/Berlin".into());
        full.concurrency = Concurrency::Replace;
        full.work_dir = Some("/var/tmp".into());
        full.env = pairs(&[("A", "1"), ("PATH", "/usr/bin:/bin"), ("B_2", "")]);
        full.run_as = Some("nobody".into());
        full.params = vec!["host".into(), "port".into()];
        full.retries = 2;
        full.retry_delay_secs = 30;
        full.jitter_secs = 9;
        full.labels = pairs(&[("role", "db"), ("zone", "eu-1")]);
        full.kill_grace_secs = 60;
        full.cgroup = CgroupLimits {
            cpu_shares: 512,
            cpu_quota_us: 50_000,
            memory_limit: 1 << 20,
            memory_sw_limit: 2 << 20,
            io_read_limit: 1000,
            io_write_limit: 2000,
            io_limit_device: "/dev/sdb".into(),
        };
        full.grace_secs = Some(30);
        full.max_duration_secs = Some(300);
        full.run_on = RunOn::Hosts(3);
        full.pick = Pick::Hash;
        full.retry_on_another = true;
        specs.push(full);

        let mut one = JobSpec::new("one", "date");
        one.cron_expr = "0 3 * * *".into();
        one.run_on = RunOn::Hosts(1);
        one.pick = Pick::Random;
        specs.push(one.clone());
        one.run_on = RunOn::Hosts(crate::runon::MAX_RUN_ON);
        one.pick = Pick::LeastLoaded;
        specs.push(one);

        let mut cgroup = JobSpec::new("cgroup", "stress");
        cgroup.cgroup.memory_limit = u64::MAX;
        cgroup.cgroup.io_limit_device = "8:16".into();
        cgroup.cgroup.io_write_limit = 1;
        specs.push(cgroup);

        let mut zone = JobSpec::new("zone", "true");
        zone.cron_expr = "0 0 1 1 *".into();
        zone.time_zone = Some("America/Argentina/Buenos_Aires".into());
        zone.concurrency = Concurrency::Allow;
        zone.kill_grace_secs = 0;
        zone.timeout_secs = u64::MAX;
        zone.retries = u32::MAX;
        specs.push(zone);

        let mut late = JobSpec::new("late", "./install.sh");
        late.once_job = true;
        late.new_hosts = true;
        specs.push(late.clone());
        late.new_hosts_at_once = Some(25);
        late.white_hosts = hosts(&["web-1"]);
        specs.push(late);

        let mut text = JobSpec::new(
            "text",
            "printf 'h\u{e9}llo \"w\u{f6}rld\" \\\\ \\n' \t\r\n\u{1}\u{1f}\u{7f} \u{2028}\u{1f600} </script>",
        );
        text.env = pairs(&[
            ("QUOTED", "a \"b\" \\c\\ /d/"),
            ("LINES", "one\ntwo\r\n\tthree\u{0}"),
            ("UNICODE", "\u{fc}ber \u{65e5}\u{672c} \u{1f680}"),
            ("\u{c4}RGER", "key not ASCII"),
        ]);
        text.labels = pairs(&[("team", "\u{e9}quipe \"x\""), ("", "")]);
        text.params = vec!["_x9".into(), "host".into()];
        text.work_dir = Some("/home/\u{fc}ser/dir with spaces".into());
        text.run_as = Some("d\u{f6}m\u{e4}n\\user".into());
        text.black_hosts = vec![HostPattern::exact_name("bad host \u{e9}")];
        specs.push(text);

        specs
    }

    #[test]
    fn wire_fields_are_every_key_sorted_bytewise() {
        let keys: Vec<&str> = wire_fields(&JobSpec::new("a", "b"))
            .iter()
            .map(|(key, _)| *key)
            .collect();
        assert!(
            keys.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()),
            "not strictly sorted: {keys:?}"
        );
        let mut known = KEYS.to_vec();
        known.sort_unstable();
        assert_eq!(keys, known);
    }

    /// `JobSpec`'s serializer writes exactly what serializing `to_value` writes (the old path),
    /// declares as many entries as it writes, and reads back as the same job.
    #[test]
    fn serializer_writes_what_to_value_writes() {
        let specs = wire_specs();
        for spec in &specs {
            let value = to_value(spec);
            let direct = serde_json::to_string(spec).unwrap();
            assert_eq!(direct, serde_json::to_string(&value).unwrap(), "{spec:?}");
            assert_eq!(
                serde_json::to_vec(spec).unwrap(),
                serde_json::to_vec(&value).unwrap()
            );
            assert_eq!(
                serde_json::to_string_pretty(spec).unwrap(),
                serde_json::to_string_pretty(&value).unwrap()
            );
            assert_eq!(serde_json::to_value(spec).unwrap(), value);
            let entries = value.as_object().map(Map::len).unwrap();
            let (declared, written) = spec.serialize(MapCounter).unwrap();
            assert_eq!((declared, written), (Some(entries), entries), "{direct}");

            let back: JobSpec = serde_json::from_str(&direct).unwrap();
            assert_eq!(&back, spec, "{direct}");
        }
        // Nested, as in a sync answer.
        let values: Vec<Value> = specs.iter().map(to_value).collect();
        assert_eq!(
            serde_json::to_string(&specs).unwrap(),
            serde_json::to_string(&values).unwrap()
        );
        // The set covers every key, and leaves out every key that may be left out.
        let mut seen: Vec<&str> = values
            .iter()
            .flat_map(|v| v.as_object().unwrap().keys().map(String::as_str))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        let mut known = KEYS.to_vec();
        known.sort_unstable();
        assert_eq!(seen, known);
        assert_eq!(values[0].as_object().unwrap().len(), 9, "{}", values[0]);
    }
}
