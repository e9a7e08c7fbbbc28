//! Run reports from a simulated agent: records shaped like a real agent's, sent the way its outbox
//! sends them.
//!
//! A real agent posts finished runs as soon as they are stored, one batch at a time, waiting for
//! each acknowledgement: whatever finished while a batch was in flight goes into the next one (at
//! most `run_batch_max`). [`report_loop`] does the same with runs that "finish" at a steady pace, or,
//! with [`Pace::Saturate`], always has a full batch waiting, which measures the most the manager
//! accepts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use op_client::Client;
use op_proto::agent::{RunBatch, RunDirective};
use op_proto::{RunRecord, RunStatus, Trigger};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Counters, SimAgent};

/// Jobs each simulated agent reports runs of.
const JOBS_PER_AGENT: u64 = 10;

/// How fast one agent's runs finish.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// A full batch is always waiting: the next post follows the last acknowledgement at once.
    Saturate,
    /// This many runs finish per second, evenly spaced.
    PerSecond(f64),
}

/// What one agent's report loop measured.
#[derive(Debug, Default)]
pub struct Reported {
    /// Records the manager stored, and those it already had.
    pub accepted: u64,
    pub duplicates: u64,
    pub batches: u64,
    /// Post → acknowledgement of each batch, in ms.
    pub ack_ms: Vec<f64>,
    /// With a steady pace: the oldest record of each batch, finished → acknowledged, in ms.
    pub delay_ms: Vec<f64>,
}

/// Saves the jobs [`record`] reports runs of, selecting every host: the manager stores only
/// runs of jobs selected for their node.
pub async fn save_jobs(admin: &op_client::Client) -> anyhow::Result<()> {
    for j in 0..JOBS_PER_AGENT {
        let name = format!("bench-job-{j}");
        let task = format!(
            r#"{{"JobName":"{name}","Command":"python /data/op-agent/src/cycleTest.py","CronExpr":"0 0 */6 * * * *"}}"#
        );
        admin.save_job_text(&name, &task).await?;
    }
    Ok(())
}

/// A finished run of a `true`-like cron job with a short output, like the seed's cycle jobs.
/// Its planned time is the current whole second, as an agent plans a job firing every second:
/// every host's run of a job in one second belongs to one fire. (Until issue 25 it was the
/// current instant, which made each record a fire of its own, a load no agent produces.)
pub fn record(agent: &SimAgent, seq: u64) -> RunRecord {
    let now = Utc::now();
    let planned = chrono::SubsecRound::trunc_subsecs(now, 0);
    RunRecord {
        run_id: Uuid::now_v7(),
        job: format!("bench-job-{}", seq % JOBS_PER_AGENT),
        job_revision: 1,
        node_id: agent.node_id,
        hostname: agent.hostname.clone(),
        ips: vec![agent.ip],
        trigger: Trigger::Cron,
        attempt: 0,
        invocation_id: None,
        params: Default::default(),
        command: "python /data/op-agent/src/cycleTest.py".into(),
        planned_at: Some(planned),
        started_at: Some(now),
        ended_at: Some(now),
        status: RunStatus::Ok,
        exit_code: Some(0),
        signal: None,
        error: None,
        output: format!("run {seq} of {}: ok\n{}\n", agent.hostname, "-".repeat(160)),
        output_truncated: false,
        output_bytes: 200,
        stderr_tail: String::new(),
        rusage: None,
        notes: Vec::new(),
    }
}

/// The record of an ad-hoc run answered at once: it "ran" `true` and exited 0 the moment the
/// directive arrived.
pub fn answer(agent: &SimAgent, d: &RunDirective) -> RunRecord {
    let now = Utc::now();
    RunRecord {
        run_id: d.run_id,
        job: d.spec.name.clone(),
        job_revision: d.revision,
        node_id: agent.node_id,
        hostname: agent.hostname.clone(),
        ips: vec![agent.ip],
        trigger: d.trigger,
        attempt: 0,
        invocation_id: Some(d.invocation_id),
        params: d.params.clone(),
        command: d.spec.command.clone(),
        planned_at: Some(now),
        started_at: Some(now),
        ended_at: Some(now),
        status: RunStatus::Ok,
        exit_code: Some(0),
        signal: None,
        error: None,
        output: String::new(),
        output_truncated: false,
        output_bytes: 0,
        stderr_tail: String::new(),
        rusage: None,
        notes: Vec::new(),
    }
}

/// Reports runs of `agent` until `until`, then finishes the batch in flight and returns.
pub async fn report_loop(
    agent: SimAgent,
    client: Client,
    pace: Pace,
    batch_max: usize,
    until: Instant,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> Reported {
    let start = Instant::now();
    let batch_max = batch_max.max(1) as u64;
    let mut out = Reported::default();
    // Runs handed to the manager so far (acknowledged ones; a failed batch is sent again).
    let mut sent: u64 = 0;
    let mut failures: u32 = 0;
    loop {
        let now = Instant::now();
        if now >= until || shutdown.is_cancelled() {
            return out;
        }
        let (due, oldest) = match pace {
            Pace::Saturate => (sent + batch_max, None),
            Pace::PerSecond(rate) => {
                let due = ((now - start).as_secs_f64() * rate) as u64;
                let oldest = start + Duration::from_secs_f64(sent as f64 / rate);
                if due <= sent {
                    // Sleep until the next run finishes.
                    let next = start + Duration::from_secs_f64((sent + 1) as f64 / rate);
                    tokio::select! {
                        _ = tokio::time::sleep_until(next.min(until).into()) => {}
                        _ = shutdown.cancelled() => return out,
                    }
                    continue;
                }
                (due, Some(oldest))
            }
        };
        let count = (due - sent).min(batch_max);
        let batch = RunBatch {
            node_id: agent.node_id,
            runs: (sent..sent + count)
                .map(|seq| record(&agent, seq))
                .collect(),
        };
        let posted = Instant::now();
        match client.post_runs(&batch).await {
            Ok(ack) => {
                let acked = Instant::now();
                failures = 0;
                out.batches += 1;
                out.accepted += ack.accepted as u64;
                out.duplicates += ack.duplicates as u64;
                out.ack_ms.push((acked - posted).as_secs_f64() * 1e3);
                if let Some(oldest) = oldest {
                    out.delay_ms.push((acked - oldest).as_secs_f64() * 1e3);
                }
                sent += count;
            }
            Err(e) => {
                counters.failed(e);
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis(100 << failures.min(6));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => return out,
                }
            }
        }
    }
}
