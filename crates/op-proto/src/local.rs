//! Request and response bodies of the agent's own HTTP API (the one a machine's neighbours call
//! directly: `/api/opAgent`, `/v1/jobs/NAME/run`, `/v1/runs`, `/v1/status`).
//!
//! Run records themselves are [`crate::RunRecord`]; errors are [`crate::ErrorBody`] on `/v1` and
//! [`crate::api::SeedEnvelope`] on the seed's `/api/opAgent`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::node::{AgentStats, RunningRun};
use crate::run::{RunRecord, RunStatus};

/// Query of `POST /v1/jobs/NAME/run` and `POST /api/opAgent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeQuery {
    /// Wait for the result (`true`) or return the run id at once (`false`). Absent: the job's
    /// SynFlag decides.
    #[serde(default)]
    pub wait: Option<bool>,
}

/// The answer to an invocation that does not wait (HTTP 202 on `/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAccepted {
    pub run_id: Uuid,
    pub job: String,
    pub status: RunStatus,
    /// Where to fetch the record later.
    pub url: String,
}

/// `Details` of the seed envelope returned by `POST /api/opAgent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedRunDetails {
    pub run_id: Uuid,
    pub job: String,
    pub status: RunStatus,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub error: Option<String>,
    /// The output tail (sync mode), empty while running.
    #[serde(default)]
    pub output: String,
    #[serde(default)]
    pub output_truncated: bool,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
}

impl From<&RunRecord> for SeedRunDetails {
    fn from(r: &RunRecord) -> Self {
        SeedRunDetails {
            run_id: r.run_id,
            job: r.job.clone(),
            status: r.status,
            exit_code: r.exit_code,
            signal: r.signal,
            error: r.error.clone(),
            output: r.output.clone(),
            output_truncated: r.output_truncated,
            started_at: r.started_at,
            ended_at: r.ended_at,
        }
    }
}

/// Query of `GET /v1/runs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRunQuery {
    #[serde(default)]
    pub job: Option<String>,
    /// Newest first; default 50, at most 1000.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One job as this agent holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalJob {
    pub name: String,
    pub revision: u64,
    /// `cron`, `once` or `api`.
    pub kind: String,
    pub enabled: bool,
    /// False when the job's host selection excludes this agent.
    pub selected: bool,
    #[serde(default)]
    pub cron_expr: String,
    #[serde(default)]
    pub next_fire: Option<DateTime<Utc>>,
    /// Runs of this job in progress.
    pub running: u32,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub node_id: Uuid,
    pub hostname: String,
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub api_version: u32,
    pub started_at: DateTime<Utc>,
    /// `standalone` (jobs dir), `managed` (managers configured) or `cached` (last desired set).
    pub mode: String,
    #[serde(default)]
    pub managers: Vec<String>,
    pub jobs: Vec<LocalJob>,
    pub running: Vec<RunningRun>,
    pub stats: AgentStats,
    /// Bytes held by the outbox (its budget is a config key).
    #[serde(default)]
    pub outbox_bytes: u64,
    /// Why the agent is degraded, if it is (what its heartbeat reports to the manager).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
}
