//! `agentcli logs JOB [HOST|ALL] [LIMIT]`: the latest LIMIT runs of a job per host.

use std::io::Write;

use op_proto::RunRecord;
use op_proto::api::RunQuery;

use super::Ctx;
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
) -> anyhow::Result<Outcome> {
    let (host, per_node) = host_and_limit(host, limit);
    // A clear error for a job that does not exist, instead of an empty table.
    ctx.call(ctx.client.get_job(job)).await?;
    let query = RunQuery {
        job: Some(job.to_string()),
        host: host.clone(),
        per_node: Some(per_node.max(1)),
        ..RunQuery::default()
    };
    let mut runs = ctx.call(ctx.client.runs(&query)).await?;
    runs.sort_by(|a, b| {
        a.hostname
            .cmp(&b.hostname)
            .then_with(|| b.ended_at.cmp(&a.ended_at))
    });
    let mut out = std::io::stdout().lock();
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

fn ips(r: &RunRecord) -> String {
    r.ips
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
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

fn error_text(r: &RunRecord) -> String {
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
