//! `agentcli invocations get ID | list | cancel ID | retry ID`: what run and exec started, host by
//! host, and running it again on the hosts that did not succeed.

use std::io::Write;

use anyhow::Context;
use op_proto::invoke::{HostStatus, InvocationQuery, InvocationView, RetryRequest};
use uuid::Uuid;

use super::{Ctx, fanout};
use crate::Outcome;
use crate::cli::{FanoutArgs, Format, InvocationsCommand};
use crate::output::{Table, local_time, write_json};

pub async fn run(ctx: &Ctx, what: InvocationsCommand) -> anyhow::Result<Outcome> {
    match what {
        InvocationsCommand::Get { id } => {
            let view = ctx.call(ctx.client.invocation(parse(&id)?)).await?;
            print_view(ctx, &view)
        }
        InvocationsCommand::Cancel { id } => {
            let view = ctx.call(ctx.client.cancel_invocation(parse(&id)?)).await?;
            print_view(ctx, &view)
        }
        InvocationsCommand::Retry {
            id,
            failed,
            unreachable,
            unresponsive,
            async_,
        } => {
            let statuses = [
                (failed, HostStatus::Failed),
                (unreachable, HostStatus::Unreachable),
                (unresponsive, HostStatus::Unresponsive),
            ]
            .into_iter()
            .filter_map(|(on, s)| on.then_some(s))
            .collect();
            let req = RetryRequest {
                statuses,
                wait: Some(!async_),
            };
            let started = ctx
                .call(ctx.client.retry_invocation(parse(&id)?, &req))
                .await?;
            let args = FanoutArgs {
                wait: !async_,
                async_,
                ..FanoutArgs::default()
            };
            fanout::follow(ctx, started, &args).await
        }
        InvocationsCommand::List { job, limit } => {
            let list = ctx
                .call(ctx.client.invocations(&InvocationQuery {
                    job,
                    limit: Some(limit),
                }))
                .await?;
            let mut out = crate::output::stdout();
            if ctx.format == Format::Json {
                write_json(&mut out, &list)?;
                return Ok(Outcome::Ok);
            }
            let mut t = Table::new(&[
                "INVOCATION",
                "JOB",
                "STATE",
                "CREATED",
                "BY",
                "HOSTS",
                "RESULTS",
            ]);
            for i in &list {
                t.row([
                    i.invocation_id.to_string(),
                    i.job.clone(),
                    format!("{:?}", i.state).to_lowercase(),
                    local_time(i.created_at),
                    i.created_by.clone(),
                    i.summary.total.to_string(),
                    fanout::counts(&i.summary),
                ]);
            }
            t.write(&mut out)?;
            Ok(Outcome::Ok)
        }
    }
}

fn parse(id: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(id.trim())
        .with_context(|| format!("{id:?} is not an invocation id (a UUID, as run and exec print)"))
}

fn print_view(ctx: &Ctx, v: &InvocationView) -> anyhow::Result<Outcome> {
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, v)?;
        return Ok(Outcome::Ok);
    }
    let mut head = Table::new(&["KEYWORD", "VALUE"]);
    head.row(["INVOCATION".to_string(), v.invocation_id.to_string()]);
    head.row([
        "JOB".to_string(),
        format!("{} ({}, revision {})", v.job, v.kind.as_str(), v.revision),
    ]);
    head.row(["COMMAND".to_string(), v.command.clone()]);
    if !v.params.is_empty() {
        let params: Vec<String> = v.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        head.row(["PARAMS".to_string(), params.join("\n")]);
    }
    head.row(["STATE".to_string(), format!("{:?}", v.state).to_lowercase()]);
    if let Some(old) = v.retry_of {
        head.row(["RETRY OF".to_string(), old.to_string()]);
    }
    head.row([
        "CREATED".to_string(),
        format!("{} by {}", local_time(v.created_at), v.created_by),
    ]);
    if let Some(f) = v.finished_at {
        head.row(["FINISHED".to_string(), local_time(f)]);
    }
    head.row(["SUMMARY".to_string(), fanout::summary_line(&v.summary)]);
    if let Some(why) = &v.summary.stopped {
        head.row(["STOPPED".to_string(), why.clone()]);
    }
    head.write(&mut out)?;
    writeln!(out)?;
    for r in &v.hosts {
        fanout::write_result(&mut out, r)?;
    }
    Ok(Outcome::Ok)
}
