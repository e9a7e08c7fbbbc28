//! `agentcli logs JOB [HOST|ALL] [LIMIT] [--full | --follow]`: the latest LIMIT runs of a job
//! per host; with `--full` their whole output fetched from the agents, with `--follow` the output
//! of the running runs as it grows.

use std::io::Write;
use std::time::Duration;

use op_client::ClientError;
use op_proto::api::RunQuery;
use op_proto::{NodeInfo, RunRecord, RunStatus};
use uuid::Uuid;

use super::{Ctx, hosts};
use crate::Outcome;
use crate::cli::Format;
use crate::output::{Table, local_time, write_json};

/// Splits the seed's positional `[HOST|ALL] [LIMIT]`: a lone number is the limit.
pub fn host_and_limit(host: Option<String>, limit: Option<u32>) -> (Option<String>, u32) {
    match (host, limit) {
        (Some(h), None) if h.chars().all(|c| c.is_ascii_digit()) && !h.is_empty() => {
            (None, h.parse().unwrap_or(1))
        }
        (Some(h), l) if h.eq_ignore_ascii_case("all") => (None, l.unwrap_or(1)),
        (h, l) => (h, l.unwrap_or(1)),
    }
}

pub async fn run(
    ctx: &Ctx,
    job: &str,
    host: Option<String>,
    limit: Option<u32>,
    full: bool,
) -> anyhow::Result<Outcome> {
    let (host, per_node) = host_and_limit(host, limit);
    check_job(ctx, job).await?;
    // The host argument is resolved to nodes here, so a loopback address finds the local agent
    // and a typo is an error with suggestions rather than an empty table.
    let (keys, unknown) = match &host {
        None => (vec![None], None),
        Some(h) => {
            let nodes = ctx.call(ctx.client.list_nodes()).await?;
            let found = hosts::matching(&nodes, h, hosts::this_hostname().as_deref());
            if found.is_empty() {
                // A node forgotten and pruned may still have runs under its old name.
                (vec![Some(h.clone())], Some(hosts::no_match(&nodes, h)))
            } else {
                let ids = found.iter().map(|n| Some(n.node_id.to_string())).collect();
                (ids, None)
            }
        }
    };
    let mut runs = Vec::new();
    for key in keys {
        let query = RunQuery {
            job: Some(job.to_string()),
            host: key,
            per_node: Some(per_node.max(1)),
            ..RunQuery::default()
        };
        runs.extend(ctx.call(ctx.client.runs(&query)).await?);
    }
    if let Some(err) = unknown
        && runs.is_empty()
    {
        return Err(err);
    }
    runs.sort_by(|a, b| {
        a.hostname
            .cmp(&b.hostname)
            .then_with(|| b.ended_at.cmp(&a.ended_at))
    });
    if full {
        return print_full(ctx, &mut runs).await;
    }
    let mut out = crate::output::stdout();
    match ctx.format {
        Format::Json => write_json(&mut out, &runs)?,
        Format::Short => {
            for r in &runs {
                writeln!(out, "{} {}", r.output.trim_end(), error_text(r))?;
            }
        }
        Format::Wide => {
            let mut t = Table::new(&[
                "JOBNAME",
                "COMMAND",
                "HOSTNAME",
                "HOSTIPS",
                "STARTTIME",
                "ENDTIME",
                "OUTPUT",
                "ERROR",
            ]);
            for r in &runs {
                t.row([
                    r.job.clone(),
                    r.command.clone(),
                    r.hostname.clone(),
                    ips(r),
                    r.started_at.map(local_time).unwrap_or_default(),
                    r.ended_at.map(local_time).unwrap_or_default(),
                    output_text(r),
                    error_text(r),
                ]);
            }
            t.write(&mut out)?;
        }
        Format::Table => {
            let mut t = Table::new(&["JOBNAME", "HOSTIPS", "ENDTIME", "OUTPUT", "ERROR"]);
            for r in &runs {
                t.row([
                    r.job.clone(),
                    ips(r),
                    r.ended_at.map(local_time).unwrap_or_default(),
                    output_text(r),
                    error_text(r),
                ]);
            }
            t.write(&mut out)?;
        }
    }
    if runs.is_empty() && ctx.format != Format::Json {
        let scope = host.map(|h| format!(" on {h}")).unwrap_or_default();
        eprintln!("no runs of {job}{scope} yet");
    }
    Ok(Outcome::Ok)
}

/// `--full`: every run's whole output. JSON carries it in `output`; the other formats print a
/// header line per run and the output as it is, since a table cannot hold a long log.
async fn print_full(ctx: &Ctx, runs: &mut [RunRecord]) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::Ok;
    for r in runs.iter_mut() {
        if !r.output_truncated {
            continue;
        }
        match fetch_whole(ctx, r.run_id).await {
            Ok(bytes) => {
                r.output = String::from_utf8_lossy(&bytes).into_owned();
                r.output_bytes = bytes.len() as u64;
                r.output_truncated = false;
            }
            Err(e) => {
                eprintln!(
                    "agentcli: the whole output of run {} on {} is not available ({}); showing its last {} bytes",
                    r.run_id,
                    r.hostname,
                    ctx.conn.explain(e),
                    r.output.len()
                );
                outcome = Outcome::Problem;
            }
        }
    }
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &runs)?;
        return Ok(outcome);
    }
    for r in runs.iter() {
        let ended = r.ended_at.map(local_time).unwrap_or_default();
        writeln!(
            out,
            "==> {} on {} ({}) ended {ended}: {} <==",
            r.job,
            r.hostname,
            ips(r),
            r.status.as_str()
        )?;
        // The tail (when the agent could not send the whole) carries a note; trailing newlines
        // are the output's own.
        let text = output_text(r);
        if !text.is_empty() {
            writeln!(out, "{text}")?;
        }
        let error = error_text(r);
        if !error.is_empty() && r.status != RunStatus::Ok {
            writeln!(out, "error: {error}")?;
        }
    }
    Ok(outcome)
}

/// Reads a finished run's whole output file from its agent, piece by piece.
async fn fetch_whole(ctx: &Ctx, run_id: Uuid) -> Result<Vec<u8>, ClientError> {
    let mut data = Vec::new();
    let mut offset = 0;
    loop {
        let piece = ctx.client.run_output(run_id, offset, 10).await?;
        let empty = piece.data.is_empty();
        data.extend_from_slice(&piece.data);
        offset = piece.next_offset;
        if offset >= piece.size || empty {
            return Ok(data);
        }
    }
}

/// How often `--follow` looks for a run to start and asks for more output.
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// Consecutive failed output requests after which `--follow` gives up on a run.
const FOLLOW_MAX_FAILURES: u32 = 5;

/// `--follow`: streams the output of the job's running runs (on `host`, or everywhere) until they
/// end, waiting for the next run to start when none is running.
pub async fn follow(ctx: &Ctx, job: &str, host: Option<String>) -> anyhow::Result<Outcome> {
    let (host, _) = host_and_limit(host, None);
    check_job(ctx, job).await?;
    let this_host = hosts::this_hostname();
    let mut waiting_said = false;
    let began = chrono::Utc::now();
    let runs = loop {
        let nodes = ctx.call(ctx.client.list_nodes()).await?;
        let named: Vec<&NodeInfo> = match &host {
            Some(h) => hosts::matching(&nodes, h, this_host.as_deref()),
            None => nodes.iter().collect(),
        };
        if let Some(h) = &host
            && named.is_empty()
        {
            return Err(hosts::no_match(&nodes, h));
        }
        let running: Vec<(Uuid, String, Uuid)> = named
            .iter()
            .flat_map(|n| {
                n.running
                    .iter()
                    .filter(|r| r.job == job)
                    .map(|r| (r.run_id, n.hostname.clone(), n.node_id))
            })
            .collect();
        if !running.is_empty() {
            break running;
        }
        // A run that ended since the follow began (it lasted less than a poll, or it was
        // ending as the follow started) is followed too: its output is printed and the follow
        // ends, instead of waiting for a next run that may never come.
        let ended = ended_since(ctx, job, host.as_ref().map(|_| &named[..]), began).await?;
        if !ended.is_empty() {
            break ended;
        }
        if !waiting_said {
            let scope = host
                .as_deref()
                .map(|h| format!(" on {h}"))
                .unwrap_or_default();
            eprintln!(
                "agentcli: no run of {job} is running{scope}; waiting for one to start (Ctrl-C to stop)"
            );
            waiting_said = true;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    };
    let prefix = runs.len() > 1;
    let streams = runs.iter().map(|(run_id, hostname, node)| {
        stream_run(ctx, *run_id, *node, prefix.then_some(hostname.as_str()))
    });
    let results = futures_util::future::join_all(streams).await;
    let mut outcome = Outcome::Ok;
    for ((run_id, hostname, _), result) in runs.iter().zip(results) {
        match result {
            Ok(()) => {}
            Err(e) => {
                eprintln!("agentcli: following run {run_id} on {hostname}: {e:#}");
                outcome = Outcome::Problem;
                continue;
            }
        }
        match final_record(ctx, *run_id).await {
            Some(r) => {
                let error = error_text(&r);
                let status = r.status.as_str();
                let tail = if error.is_empty() || error == status {
                    String::new()
                } else {
                    format!(" ({error})")
                };
                eprintln!("agentcli: run {run_id} on {hostname} ended: {status}{tail}");
                if r.status != RunStatus::Ok {
                    outcome = Outcome::Problem;
                }
            }
            None => {
                eprintln!(
                    "agentcli: run {run_id} on {hostname} ended; its record has not reached the manager yet"
                );
            }
        }
    }
    Ok(outcome)
}

/// The runs of `job` (on `nodes`, or anywhere) whose record reached the manager and that ended
/// at or after `since`, with their hostnames.
async fn ended_since(
    ctx: &Ctx,
    job: &str,
    nodes: Option<&[&NodeInfo]>,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<(Uuid, String, Uuid)>> {
    let keys: Vec<Option<String>> = match nodes {
        None => vec![None],
        Some(nodes) => nodes.iter().map(|n| Some(n.node_id.to_string())).collect(),
    };
    let mut ended = Vec::new();
    for key in keys {
        let query = RunQuery {
            job: Some(job.to_string()),
            host: key,
            per_node: Some(1),
            ..RunQuery::default()
        };
        let runs = ctx.call(ctx.client.runs(&query)).await?;
        ended.extend(
            runs.into_iter()
                .filter(|r| r.ended_at.is_some_and(|e| e >= since))
                .map(|r| (r.run_id, r.hostname, r.node_id)),
        );
    }
    Ok(ended)
}

/// Copies one run's output to stdout as it grows, until the run has ended and all was read.
/// With a prefix, output goes out in whole lines, each led by `[prefix] `.
async fn stream_run(
    ctx: &Ctx,
    run_id: Uuid,
    node: Uuid,
    prefix: Option<&str>,
) -> anyhow::Result<()> {
    let mut offset = 0;
    let mut partial: Vec<u8> = Vec::new();
    let mut failures = 0;
    // Named only after a 404: a manager older than the `node` parameter refuses it, and it is
    // needed only in the moment between the run's end and the delivery of its record.
    let mut hint = None;
    loop {
        let piece = match ctx.client.run_output_on(run_id, hint, offset, 10).await {
            Ok(p) => {
                failures = 0;
                p
            }
            Err(ClientError::Api { status: 404, .. }) if hint.is_none() => {
                hint = Some(node);
                continue;
            }
            Err(e @ ClientError::Api { status, .. }) if status != 503 => {
                return Err(ctx.conn.explain(e));
            }
            Err(e) => {
                failures += 1;
                if failures >= FOLLOW_MAX_FAILURES {
                    return Err(ctx.conn.explain(e));
                }
                tokio::time::sleep(FOLLOW_POLL).await;
                continue;
            }
        };
        offset = piece.next_offset;
        {
            let mut out = crate::output::stdout();
            match prefix {
                None => out.write_all(&piece.data)?,
                Some(p) => {
                    partial.extend_from_slice(&piece.data);
                    if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
                        let lines: Vec<u8> = partial.drain(..=end).collect();
                        for line in lines.split_inclusive(|&b| b == b'\n') {
                            write!(out, "[{p}] ")?;
                            out.write_all(line)?;
                        }
                    }
                    if piece.is_last() && !partial.is_empty() {
                        write!(out, "[{p}] ")?;
                        out.write_all(&partial)?;
                        writeln!(out)?;
                        partial.clear();
                    }
                }
            }
            out.flush()?;
        }
        if piece.is_last() {
            return Ok(());
        }
        if piece.data.is_empty() {
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// The run's record once the agent has delivered it (a few seconds at most when it is connected).
async fn final_record(ctx: &Ctx, run_id: Uuid) -> Option<RunRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = ctx.client.run(run_id).await {
            return Some(r);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// A clear error for a job that does not exist, instead of an empty table. `adhoc` is not a
/// saved job: it names the runs of `agentcli exec`.
async fn check_job(ctx: &Ctx, job: &str) -> anyhow::Result<()> {
    if job != op_proto::invoke::ADHOC_JOB {
        ctx.call(ctx.client.get_job(job)).await?;
    }
    Ok(())
}

/// The run's host addresses on one line (the seed's HOSTIPS cell).
fn ips(r: &RunRecord) -> String {
    op_proto::node::join_ips(&r.ips)
}

fn output_text(r: &RunRecord) -> String {
    let mut text = r.output.trim_end().to_string();
    if r.output_truncated {
        text = format!(
            "[last {} of {} bytes; the full output is on the host]\n{text}",
            r.output.len(),
            r.output_bytes
        );
    }
    text
}

/// The ERROR column: for a failed run the reason and the line that says what went wrong, as
/// `analysis jobs` and the console describe it.
fn error_text(r: &RunRecord) -> String {
    if r.status.is_failure() {
        return op_proto::analysis::Failure::of(r).summary();
    }
    match (&r.error, r.status) {
        (Some(e), _) => e.clone(),
        (None, op_proto::RunStatus::Ok) => String::new(),
        (None, status) => status.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::host_and_limit;

    #[test]
    fn positional_forms() {
        assert_eq!(host_and_limit(None, None), (None, 1));
        assert_eq!(host_and_limit(Some("ALL".into()), None), (None, 1));
        assert_eq!(host_and_limit(Some("all".into()), Some(5)), (None, 5));
        assert_eq!(host_and_limit(Some("5".into()), None), (None, 5));
        assert_eq!(
            host_and_limit(Some("10.0.0.1".into()), Some(3)),
            (Some("10.0.0.1".into()), 3)
        );
        assert_eq!(
            host_and_limit(Some("web-1".into()), None),
            (Some("web-1".into()), 1)
        );
    }
}
