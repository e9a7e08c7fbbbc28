//! Run records: one execution of a job on one node.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Default size of the output tail kept with a run record (the full output stays on the agent).
pub const DEFAULT_OUTPUT_TAIL: usize = 64 * 1024;

/// Most bytes of a run's stderr kept in its record ([`RunRecord::stderr_tail`]): enough for the
/// last lines of a traceback, small beside the output tail.
pub const STDERR_TAIL: usize = 4 * 1024;

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Cron,
    Once,
    /// Invoked on the agent through its API (`/api/opAgent`, `/v1/jobs/NAME/run`).
    Api,
    /// Invoked through the manager (a directive on the sync channel).
    Adhoc,
    Retry,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Cron => "cron",
            Trigger::Once => "once",
            Trigger::Api => "api",
            Trigger::Adhoc => "adhoc",
            Trigger::Retry => "retry",
        }
    }
}

/// Where a run is, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    /// Exit code 0.
    Ok,
    /// Non-zero exit, or the process could not be started.
    Failed,
    /// Killed because it ran longer than its Timeout.
    Timeout,
    /// Killed on purpose: disabled or removed job, `replace` policy, agent shutdown, kill directive.
    Killed,
    /// Not started because the previous run was still alive (`forbid`).
    Skipped,
    /// The agent died while the run was in flight; reported after restart.
    Lost,
    /// Never started: the fire passed while the agent was down (reported after restart, the
    /// reason in `error`), or the manager judged no run arrived within the job's `Grace`.
    Missed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
            RunStatus::Timeout => "timeout",
            RunStatus::Killed => "killed",
            RunStatus::Skipped => "skipped",
            RunStatus::Lost => "lost",
            RunStatus::Missed => "missed",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "running" => RunStatus::Running,
            "ok" => RunStatus::Ok,
            "failed" => RunStatus::Failed,
            "timeout" => RunStatus::Timeout,
            "killed" => RunStatus::Killed,
            "skipped" => RunStatus::Skipped,
            "lost" => RunStatus::Lost,
            "missed" => RunStatus::Missed,
            _ => return None,
        })
    }

    /// True for every status but `Running`.
    pub fn is_final(self) -> bool {
        self != RunStatus::Running
    }

    /// True for statuses that count as a problem in `analysis`.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            RunStatus::Failed | RunStatus::Timeout | RunStatus::Killed | RunStatus::Lost
        )
    }
}

/// Resource usage of a finished run, from `wait4`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rusage {
    pub user_ms: u64,
    pub sys_ms: u64,
    /// Peak RSS in KiB. On Linux this includes the agent's own pages copied at fork, so small jobs
    /// report at least the agent's RSS.
    pub max_rss_kb: u64,
}

/// One execution of a job on one node. Made by the agent (which picks the UUIDv7 `run_id`),
/// delivered at least once, stored once by the manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: Uuid,
    pub job: String,
    pub job_revision: u64,
    pub node_id: Uuid,
    pub hostname: String,
    pub ips: Vec<IpAddr>,
    pub trigger: Trigger,
    /// 0 for the first attempt, then 1.. for retries.
    #[serde(default)]
    pub attempt: u32,
    /// Set when the run belongs to a manager invocation (fan-out).
    #[serde(default)]
    pub invocation_id: Option<Uuid>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The command as it was run (after parameter substitution).
    pub command: String,
    #[serde(default, serialize_with = "instant::serialize")]
    pub planned_at: Option<DateTime<Utc>>,
    #[serde(default, serialize_with = "instant::serialize")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, serialize_with = "instant::serialize")]
    pub ended_at: Option<DateTime<Utc>>,
    pub status: RunStatus,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    /// Why the run did not succeed, in one line (`exit status 2`, `timeout after 10s`, ...).
    #[serde(default)]
    pub error: Option<String>,
    /// The last bytes of merged stdout+stderr (lossy UTF-8).
    #[serde(default)]
    pub output: String,
    /// True when `output` holds only the tail of a longer output.
    #[serde(default)]
    pub output_truncated: bool,
    /// Total bytes the run wrote.
    #[serde(default)]
    pub output_bytes: u64,
    /// The last bytes (at most [`STDERR_TAIL`]) the run wrote on stderr alone, lossy UTF-8: the
    /// failure signature comes from it (DESIGN 13.2). Empty when nothing was written there, in
    /// records of older agents, and for runs found lost after a restart; left out of the JSON
    /// when empty, so older readers see the format they know.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr_tail: String,
    #[serde(default)]
    pub rusage: Option<Rusage>,
    /// Facts about how the run was carried out that are not errors, one per line: for example
    /// which cgroup limits were applied, or why they could not be.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl RunRecord {
    /// Seconds from start to end, when both are known.
    pub fn duration_ms(&self) -> Option<i64> {
        Some((self.ended_at? - self.started_at?).num_milliseconds())
    }

    /// The first line of the error, or of the output when the run failed without one.
    pub fn first_error_line(&self) -> String {
        self.error
            .as_deref()
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }
}

/// A run's times as JSON, faster. chrono's own `Serialize` hands its text to `collect_str`, and
/// serde_json escapes what a formatter writes one character at a time: the three times of each
/// record were 8.5 % of a manager's CPU applying run batches (perf, cluster-ingest), and paid
/// again for the raft log and the HTTP bodies. This writes the same text (chrono's impl formats
/// `to_rfc3339_opts(SecondsFormat::AutoSi, true)`) as one string. Reading is chrono's, unchanged.
mod instant {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => s.serialize_none(),
        }
    }

    #[cfg(test)]
    mod tests {
        use chrono::{NaiveDate, TimeZone};

        use super::*;

        #[derive(serde::Serialize)]
        struct Fast(#[serde(serialize_with = "serialize")] Option<DateTime<Utc>>);

        #[test]
        fn the_text_is_chronos_own() {
            let day = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
            let mut times = vec![None, Some(Utc::now())];
            for nano in [
                0,
                1,
                999,
                1_000,
                120_000,
                1_000_000,
                123_456_789,
                999_999_999,
            ] {
                for (h, m, sec) in [(0, 0, 0), (6, 38, 7), (23, 59, 59)] {
                    let naive = day.and_hms_nano_opt(h, m, sec, nano).unwrap();
                    times.push(Some(Utc.from_utc_datetime(&naive)));
                }
            }
            // A leap second (chrono keeps it as a nanosecond count past 1e9).
            let leap = day.and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap();
            times.push(Some(Utc.from_utc_datetime(&leap)));
            for year in [1, 1970, 9999] {
                let naive = NaiveDate::from_ymd_opt(year, 1, 2)
                    .unwrap()
                    .and_hms_opt(3, 4, 5)
                    .unwrap();
                times.push(Some(Utc.from_utc_datetime(&naive)));
            }
            for t in times {
                let ours = serde_json::to_string(&Fast(t)).unwrap();
                let chronos = serde_json::to_string(&t).unwrap();
                assert_eq!(ours, chronos, "{t:?}");
            }
        }
    }
}
