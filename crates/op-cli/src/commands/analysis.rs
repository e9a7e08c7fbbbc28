//! `agentcli analysis jobs [JOB] [VERSION]`: the seed's problem report, then failures grouped
//! across hosts. (`analysis packages` lives in `package_analysis.rs`.)
//!
//! Per (job, host) it reports: the last run failed; a cron job has not run for longer than twice its
//! interval (the seed's rule, measured against the run's own duration); a job never ran since it
//! was saved; a once-job version still pending or running. Then it groups failures across hosts
//! by kind and signature: `exit 2 on 37 of 2,000 hosts: No such file or directory`. How a failure
//! is described and grouped is `op_proto::analysis`, shared with the web console.

use std::io::Write;

use chrono::{DateTime, Utc};
use op_proto::analysis::{self, Failure};
use op_proto::api::{JobView, RunQuery, TargetState};
use op_proto::{NodeInfo, NodeStatus, RunRecord, RunStatus};
use serde::Serialize;

use super::Ctx;
use crate::Outcome;
use crate::cli::{AnalysisCommand, Format};
use crate::output::{Table, human_secs, write_json};

/// Staleness below this many seconds is never reported, so second-level schedules do not raise
/// alarms over ordinary propagation and start-up delays.
const MIN_STALE_SECS: i64 = 10;

#[derive(Debug, Serialize)]
pub struct Problem {
    pub job: String,
    pub host: String,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct FailureGroup {
    pub job: String,
    /// `exit 2`, `timeout`, `killed`, `lost`, `signal 9`.
    pub kind: String,
    /// The line that says what went wrong (`op_proto::analysis::signature`).
    pub signature: String,
    /// The headline the console shows too: `exit 2 on 37 of 2,000 hosts`.
    pub headline: String,
    pub hosts: usize,
    pub of_hosts: usize,
}

/// A judged fire with problems (issue 20), as the manager's fire judge kept it.
#[derive(Debug, Serialize)]
pub struct FireProblem {
    pub job: String,
    pub fire: DateTime<Utc>,
    /// `backup.sh missed its 03:00 fire on 12/2,000 hosts (9 NotReady, 3 no run)`.
    pub sentence: String,
    /// The hosts named for the problem, `host (outcome: reason)`.
    pub hosts: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    problems: Vec<Problem>,
    failure_groups: Vec<FailureGroup>,
    /// Missed, late, skipped and overrunning fires of the last judged fires, newest first.
    schedule: Vec<FireProblem>,
}

pub async fn run(ctx: &Ctx, what: AnalysisCommand) -> anyhow::Result<Outcome> {
    match what {
        AnalysisCommand::Jobs { job, once_version } => jobs(ctx, job, once_version).await,
        AnalysisCommand::Packages { name } => {
            super::package_analysis::run(ctx, name.as_deref()).await
        }
    }
}

async fn jobs(
    ctx: &Ctx,
    job: Option<String>,
    once_version: Option<u64>,
) -> anyhow::Result<Outcome> {
    let jobs: Vec<JobView> = match &job {
        Some(name) => vec![ctx.call(ctx.client.get_job(name)).await?],
        None => ctx
            .call(ctx.client.list_jobs())
            .await?
            .into_iter()
            .filter(|j| j.record.spec.enabled)
            .collect(),
    };
    let nodes: Vec<NodeInfo> = ctx
        .call(ctx.client.list_nodes())
        .await?
        .into_iter()
        .filter(|n| n.status != NodeStatus::Left)
        .collect();
    let now = Utc::now();
    let mut report = Report {
        problems: Vec::new(),
        failure_groups: Vec::new(),
        schedule: Vec::new(),
    };
    for j in &jobs {
        for fire in &j.last_fires {
            for sentence in &fire.sentences {
                report.schedule.push(FireProblem {
                    job: j.record.spec.name.clone(),
                    fire: fire.fire,
                    sentence: sentence.clone(),
                    hosts: fire
                        .hosts
                        .iter()
                        .filter(|h| h.outcome != "failed")
                        .map(|h| match h.reason.as_str() {
                            "" => format!("{} ({})", h.host, h.outcome),
                            r => format!("{} ({}: {r})", h.host, h.outcome),
                        })
                        .collect(),
                });
            }
        }
    }
    if let (Some(v), [j]) = (once_version, jobs.as_slice())
        && !j.record.spec.once_job
    {
        anyhow::bail!(
            "{} is not a once-job, so it has no once-job version {v} to analyse; \
             drop the version: agentcli analysis jobs {}",
            j.record.spec.name,
            j.record.spec.name
        );
    }
    for j in &jobs {
        if j.record.spec.once_job {
            once_job(ctx, j, once_version, &nodes, &mut report).await?;
        } else {
            recurring_job(ctx, j, &nodes, now, &mut report).await?;
        }
    }
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &report)?;
    } else {
        print(&mut out, &report)?;
    }
    Ok(
        if report.problems.is_empty() && report.schedule.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Problem
        },
    )
}

fn node_note(node: &NodeInfo, now: DateTime<Utc>) -> String {
    if node.status == NodeStatus::Ready {
        String::new()
    } else if let (NodeStatus::Degraded, Some(why)) = (node.status, &node.degraded) {
        format!(" (node Degraded: {why})")
    } else {
        format!(
            " (node {}, last seen {} ago)",
            node.status.as_str(),
            human_secs((now - node.last_seen).num_seconds())
        )
    }
}

async fn once_job(
    ctx: &Ctx,
    job: &JobView,
    version: Option<u64>,
    nodes: &[NodeInfo],
    report: &mut Report,
) -> anyhow::Result<()> {
    let name = &job.record.spec.name;
    let revision = version.unwrap_or(job.record.revision);
    let targets = ctx
        .call(ctx.client.once_targets(name, Some(revision)))
        .await?;
    let runs = ctx
        .call(ctx.client.runs(&RunQuery {
            job: Some(name.clone()),
            revision: Some(revision),
            per_node: Some(1),
            ..RunQuery::default()
        }))
        .await?;
    let now = Utc::now();
    let mut failed: Vec<&RunRecord> = Vec::new();
    for t in &targets {
        let node = nodes.iter().find(|n| n.node_id == t.node_id);
        let note = node.map(|n| node_note(n, now)).unwrap_or_default();
        let run = runs.iter().find(|r| r.node_id == t.node_id);
        let message = match t.state {
            TargetState::Done => continue,
            TargetState::Pending => {
                format!("onceJob {name} version {revision} did not run yet{note}")
            }
            TargetState::Waiting => format!(
                "onceJob {name} version {revision} waits for its turn: the host joined later \
                 and NewHostsAtOnce late hosts are still running it{note}"
            ),
            TargetState::Running => format!("onceJob {name} version {revision} is running{note}"),
            TargetState::Failed => match run {
                Some(r) => {
                    failed.push(r);
                    failure_message(r)
                }
                None => format!("onceJob {name} version {revision} failed"),
            },
        };
        report.problems.push(Problem {
            job: name.clone(),
            host: t.hostname.clone(),
            message,
        });
    }
    group_failures(&failed, targets.len(), report);
    Ok(())
}

async fn recurring_job(
    ctx: &Ctx,
    job: &JobView,
    nodes: &[NodeInfo],
    now: DateTime<Utc>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let spec = &job.record.spec;
    let selector = spec.selector();
    let selected: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| selector.matches(&n.identity()))
        .collect();
    // A few runs per node, so a skipped fire does not hide the last real run.
    let runs = ctx
        .call(ctx.client.runs(&RunQuery {
            job: Some(spec.name.clone()),
            per_node: Some(3),
            ..RunQuery::default()
        }))
        .await?;
    let interval = spec.schedule().and_then(|s| s.interval_secs(now));
    let mut failed: Vec<&RunRecord> = Vec::new();
    for node in &selected {
        let last = runs
            .iter()
            .filter(|r| {
                r.node_id == node.node_id
                    && !matches!(r.status, RunStatus::Skipped | RunStatus::Missed)
            })
            .max_by_key(|r| r.started_at);
        let note = node_note(node, now);
        let mut push = |message: String| {
            report.problems.push(Problem {
                job: spec.name.clone(),
                host: node.hostname.clone(),
                message,
            })
        };
        match (last, interval) {
            (Some(r), _) if r.status.is_failure() => {
                failed.push(r);
                push(format!("{}{note}", failure_message(r)));
            }
            (Some(r), Some(interval)) => {
                let Some(ended) = r.ended_at.or(r.started_at) else {
                    continue;
                };
                let since = (now - ended).num_seconds();
                let took = r.duration_ms().unwrap_or(0) / 1000;
                let limit = if took < interval {
                    2 * interval
                } else {
                    took + interval
                };
                if since > limit.max(MIN_STALE_SECS) {
                    push(format!(
                        "Job {} has not run for a long time. LastRunFromNowSeconds: {since}, SchedulRunInterval: {interval}{note}",
                        spec.name
                    ));
                }
            }
            (None, Some(interval)) => {
                let since_save = (now - job.record.updated_at).num_seconds();
                if since_save > (2 * interval).max(MIN_STALE_SECS) {
                    push(format!(
                        "Job {} did not run. AddFromNowSeconds: {since_save}, SchedulRunInterval: {interval}{note}",
                        spec.name
                    ));
                }
            }
            _ => {}
        }
    }
    group_failures(&failed, selected.len(), report);
    Ok(())
}

fn failure_message(r: &RunRecord) -> String {
    format!("last run failed: {}", Failure::of(r).summary())
}

fn group_failures(failed: &[&RunRecord], of_hosts: usize, report: &mut Report) {
    report.failure_groups.extend(
        analysis::group_failures(failed.iter().copied())
            .into_iter()
            .map(|g| FailureGroup {
                headline: g.headline(of_hosts),
                hosts: g.hosts.len(),
                job: g.job,
                kind: g.kind,
                signature: g.signature,
                of_hosts,
            }),
    );
}

fn print(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    if report.problems.is_empty() && report.schedule.is_empty() {
        writeln!(out, "no problems found")?;
        return Ok(());
    }
    if !report.problems.is_empty() {
        let mut t = Table::new(&["JOBNAME", "HOST", "MESSAGE"]);
        for p in &report.problems {
            t.row([p.job.clone(), p.host.clone(), p.message.clone()]);
        }
        t.write(out)?;
    }
    if !report.failure_groups.is_empty() {
        writeln!(out)?;
        writeln!(out, "FAILURES ACROSS HOSTS")?;
        for g in &report.failure_groups {
            writeln!(out, "{}: {}: {}", g.job, g.headline, g.signature)?;
        }
    }
    if !report.schedule.is_empty() {
        if !report.problems.is_empty() {
            writeln!(out)?;
        }
        writeln!(out, "MISSED, LATE AND SKIPPED FIRES")?;
        for f in &report.schedule {
            writeln!(out, "{}", f.sentence)?;
        }
    }
    Ok(())
}
