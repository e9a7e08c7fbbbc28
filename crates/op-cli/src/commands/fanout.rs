//! What `run` and `exec` share: turning the selection and rollout flags into an
//! [`InvokeRequest`], and following the answer: each host's result printed as it arrives, then the
//! summary. With `-o json` every event is printed as one JSON line (the manager's NDJSON as is).

use std::io::Write;

use anyhow::{Context, bail};
use op_client::Started;
use op_proto::hosts::host_flag_entries;
use op_proto::invoke::{
    BatchSize, HostResult, HostStatus, InvocationAccepted, InvocationEvent, InvokeRequest, Summary,
};

use super::Ctx;
use crate::Outcome;
use crate::cli::{FanoutArgs, Format};

/// Parses `KEY=VALUE`.
pub fn key_value(text: &str, what: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => bail!("{what} {text:?} is not KEY=VALUE"),
    }
}

/// The request for these flags. A `--host` that names one host (hostname or IP) goes to `hosts`,
/// so an unknown one is reported; a glob or CIDR goes to `white`.
pub fn request(args: &FanoutArgs) -> anyhow::Result<InvokeRequest> {
    let mut req = InvokeRequest {
        all: args.all,
        batch_wait: args.batch_wait,
        max_failures: args.max_failures,
        max_concurrency: args.max_concurrency,
        deadline: args.deadline,
        ..InvokeRequest::default()
    };
    for (entry, p) in host_flag_entries(&args.hosts, "--host").map_err(anyhow::Error::msg)? {
        if p.is_specific() {
            req.hosts.push(entry.to_string());
        } else {
            req.white.push(p);
        }
    }
    req.black = host_flag_entries(&args.exclude, "--exclude")
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    for l in &args.labels {
        let (k, v) = key_value(l, "--label")?;
        req.labels.insert(k, v);
    }
    if let Some(b) = &args.batch {
        req.batch = Some(BatchSize::parse(b).map_err(|e| anyhow::anyhow!("--{e}"))?);
    }
    req.wait = match (args.wait, args.async_) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    Ok(req)
}

/// Prints what the manager answered and says how it went: `Problem` when any host did not
/// succeed (or, without waiting, was unreachable from the start). `args` says whether the caller
/// chose to wait or not; when the job chose (`SynFlag 0`), stderr says so.
pub async fn follow(ctx: &Ctx, started: Started, args: &FanoutArgs) -> anyhow::Result<Outcome> {
    let mut stream = match started {
        Started::Accepted(acc) => {
            if !args.wait && !args.async_ {
                eprintln!(
                    "{} runs in the background (its SynFlag is 0); add --wait to see each host's answer",
                    acc.job
                );
            }
            return accepted(ctx, &acc);
        }
        Started::Stream(s) => s,
    };
    let mut summary: Option<Summary> = None;
    while let Some(event) = ctx.call(stream.next()).await? {
        let mut out = crate::output::stdout();
        if ctx.format == Format::Json {
            serde_json::to_writer(&mut out, &event)?;
            writeln!(out)?;
            out.flush()?;
        }
        match event {
            InvocationEvent::Accepted(acc) => {
                if ctx.format != Format::Json && !acc.refused.is_empty() {
                    eprintln!(
                        "refused by this token's policy (not run there): {}",
                        acc.refused.join(", ")
                    );
                }
                if ctx.format != Format::Json {
                    eprintln!(
                        "{} on {} host(s){}; invocation {}",
                        acc.job,
                        acc.hosts.len() + acc.unreachable.len(),
                        if acc.batches > 1 {
                            format!(" in {} batches", acc.batches)
                        } else {
                            String::new()
                        },
                        acc.invocation_id
                    );
                }
            }
            InvocationEvent::Result(r) => {
                if ctx.format != Format::Json {
                    write_result(&mut out, &r)?;
                    out.flush()?;
                }
            }
            InvocationEvent::Progress(p) => {
                if ctx.format != Format::Json {
                    eprintln!("{}", progress_line(&p));
                }
            }
            InvocationEvent::Summary(s) => {
                if ctx.format != Format::Json {
                    write_summary(&mut out, &s)?;
                }
                summary = Some(s);
            }
        }
    }
    let summary = summary.context(
        "the manager ended the result stream without a summary; see `agentcli invocations get ID`",
    )?;
    Ok(if summary.all_ok() {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

fn accepted(ctx: &Ctx, acc: &InvocationAccepted) -> anyhow::Result<Outcome> {
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        crate::output::write_json(&mut out, acc)?;
    } else {
        writeln!(
            out,
            "invocation {} started: {} on {} host(s)",
            acc.invocation_id,
            acc.job,
            acc.hosts.len()
        )?;
        if !acc.unreachable.is_empty() {
            writeln!(out, "unreachable: {}", acc.unreachable.join(", "))?;
        }
        if !acc.refused.is_empty() {
            writeln!(
                out,
                "refused by this token's policy (not run there): {}",
                acc.refused.join(", ")
            )?;
        }
        writeln!(
            out,
            "follow it with: agentcli invocations get {}",
            acc.invocation_id
        )?;
    }
    Ok(if acc.unreachable.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

/// `still waiting for 2 host(s): web-03, web-07 (5 done)`: sent by the manager while nothing
/// else happens, so a stopped host does not leave the operator staring at a silent terminal.
fn progress_line(p: &op_proto::invoke::Progress) -> String {
    let waiting = p.running + p.pending;
    let mut names = p.awaiting.join(", ");
    if (p.awaiting.len() as u32) < waiting {
        names.push_str(&format!(" and {} more", waiting - p.awaiting.len() as u32));
    }
    format!(
        "still waiting for {waiting} host(s): {names} ({} done)",
        p.done
    )
}

/// One host: a header line (host, IPs, status, exit code, duration, error), then its output
/// indented by four spaces.
pub fn write_result(out: &mut impl Write, r: &HostResult) -> std::io::Result<()> {
    let mut head = r.host.clone();
    if !r.ips.is_empty() && r.ips.iter().all(|ip| ip.to_string() != r.host) {
        let ips: Vec<String> = r.ips.iter().map(ToString::to_string).collect();
        head.push_str(&format!(" ({})", ips.join(",")));
    }
    head.push_str(&format!("  {}", r.status.as_str()));
    if let Some(code) = r.exit_code {
        head.push_str(&format!("  exit {code}"));
    }
    if let Some(ms) = r.duration_ms() {
        head.push_str(&format!("  {ms} ms"));
    }
    let error = r.error.as_deref().filter(|e| !e.is_empty());
    let exit_only = r
        .exit_code
        .is_some_and(|c| error == Some(&format!("exit status {c}")));
    if let Some(e) = error.filter(|_| !exit_only) {
        head.push_str(&format!("  {}", e.lines().next().unwrap_or("")));
    }
    writeln!(out, "{head}")?;
    if r.output_truncated {
        writeln!(
            out,
            "    [only the last part of the output; the rest is on the host]"
        )?;
    }
    for line in r.output.lines() {
        writeln!(out, "    {line}")?;
    }
    if let Some(late) = &r.late {
        writeln!(out, "    [a late result arrived: {}]", late.status.as_str())?;
    }
    Ok(())
}

/// `5 host(s): 3 ok, 1 failed, 1 unreachable (0.21 s)`.
pub fn summary_line(s: &Summary) -> String {
    format!(
        "{} host(s): {} ({:.2} s)",
        s.total,
        counts(s),
        s.elapsed_ms as f64 / 1000.0
    )
}

/// `3 ok, 1 failed, 1 unreachable`: ok always, the other statuses when there are any.
pub fn counts(s: &Summary) -> String {
    let mut parts = vec![format!("{} ok", s.ok)];
    for (n, what) in [
        (s.failed, HostStatus::Failed),
        (s.timeout, HostStatus::Timeout),
        (s.killed, HostStatus::Killed),
        (s.skipped, HostStatus::Skipped),
        (s.lost, HostStatus::Lost),
        (s.unreachable, HostStatus::Unreachable),
        (s.unresponsive, HostStatus::Unresponsive),
        (s.cancelled, HostStatus::Cancelled),
        (s.running, HostStatus::Running),
        (s.pending, HostStatus::Pending),
    ] {
        if n > 0 {
            parts.push(format!("{n} {}", what.as_str()));
        }
    }
    parts.join(", ")
}

fn write_summary(out: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    writeln!(out, "--")?;
    writeln!(out, "{}", summary_line(s))?;
    if let Some(why) = &s.stopped {
        writeln!(out, "{why}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_into_names_and_patterns() {
        let args = FanoutArgs {
            hosts: vec![
                "web-01,10.0.0.7".into(),
                "db-*".into(),
                "10.1.0.0/16".into(),
            ],
            exclude: vec!["db-9".into()],
            labels: vec!["role=db".into()],
            batch: Some("10%".into()),
            async_: true,
            ..FanoutArgs::default()
        };
        let req = request(&args).unwrap();
        assert_eq!(req.hosts, ["web-01", "10.0.0.7"]);
        assert_eq!(req.white.len(), 2);
        assert_eq!(req.black.len(), 1);
        assert_eq!(req.labels["role"], "db");
        assert_eq!(req.batch, Some(BatchSize::Percent(10)));
        assert_eq!(req.wait, Some(false));
        assert!(key_value("novalue", "--param").is_err());
        assert_eq!(
            key_value("a=b=c", "--param").unwrap(),
            ("a".into(), "b=c".into())
        );
    }

    #[test]
    fn a_result_prints_its_header_and_indented_output() {
        let r = HostResult {
            host: "node-1".into(),
            node_id: None,
            ips: vec!["127.0.0.2".parse().unwrap()],
            run_id: None,
            batch: 0,
            status: HostStatus::Failed,
            exit_code: Some(2),
            signal: None,
            error: Some("exit status 2".into()),
            output: "ls: cannot access 'x'\n".into(),
            output_truncated: false,
            started_at: None,
            ended_at: None,
            late: None,
        };
        let mut out = Vec::new();
        write_result(&mut out, &r).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "node-1 (127.0.0.2)  failed  exit 2\n    ls: cannot access 'x'\n"
        );
        let s = Summary {
            total: 5,
            ok: 3,
            failed: 1,
            unreachable: 1,
            elapsed_ms: 210,
            ..Summary::default()
        };
        assert_eq!(
            summary_line(&s),
            "5 host(s): 3 ok, 1 failed, 1 unreachable (0.21 s)"
        );
    }
}
