//! `agentcli pause|resume`, `drain|undrain NODE` and `window add|list|remove` (issue 23).

use std::io::Write;

use anyhow::{anyhow, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use op_proto::holds::{HoldScope, PauseRequest, ResumeRequest, WindowRequest};

use super::Ctx;
use crate::Outcome;
use crate::cli::{Format, HoldScopeArgs, WindowCommand};
use crate::output::{Table, local_time, write_json};

fn scope_of(args: &HoldScopeArgs) -> anyhow::Result<HoldScope> {
    HoldScope::from_flags(args.all, args.job.as_deref(), args.label.as_deref())
        .map_err(|e| anyhow!(e))
}

/// `--until`: an RFC 3339 instant, or a duration from `now` (`30m`, `2h`, `3600`).
fn until_instant(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    match op_proto::units::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(now + chrono::Duration::from_std(d)?),
        Ok(_) => bail!(
            "--until {text:?} would end the pause at once; give a duration above 0 (e.g. 30m) or a later time"
        ),
        Err(_) => bail!(
            "--until {text:?} is neither a time like 2026-12-24T06:00:00Z nor a duration like 30m or 2h"
        ),
    }
}

fn time(t: DateTime<Utc>) -> String {
    local_time(t)
}

pub async fn pause(
    ctx: &Ctx,
    args: &HoldScopeArgs,
    until: Option<&str>,
    list: bool,
) -> anyhow::Result<Outcome> {
    let mut out = crate::output::stdout();
    if list {
        let pauses = ctx.call(ctx.client.pauses()).await?;
        if ctx.format == Format::Json {
            write_json(&mut out, &pauses)?;
            return Ok(Outcome::Ok);
        }
        let now = Utc::now();
        let mut table = Table::new(&["SCOPE", "UNTIL", "BY", "SINCE", "STATE"]);
        for p in &pauses {
            table.row([
                p.scope.text(),
                p.until.map(time).unwrap_or_else(|| "resume".into()),
                p.by.clone(),
                time(p.at),
                if p.active_at(now) {
                    "active"
                } else {
                    "expired"
                }
                .to_string(),
            ]);
        }
        table.write(&mut out)?;
        return Ok(Outcome::Ok);
    }
    let scope = scope_of(args)?;
    let until = until.map(|u| until_instant(u, Utc::now())).transpose()?;
    let p = ctx
        .call(ctx.client.pause(&PauseRequest { scope, until }))
        .await?;
    if ctx.format == Format::Json {
        write_json(&mut out, &p)?;
    } else {
        writeln!(
            out,
            "paused {}: {}",
            p.scope.text(),
            match p.until {
                Some(u) => format!("until {}", u.to_rfc3339_opts(SecondsFormat::Secs, true)),
                None => "until agentcli resume".into(),
            }
        )?;
    }
    Ok(Outcome::Ok)
}

pub async fn resume(ctx: &Ctx, args: &HoldScopeArgs) -> anyhow::Result<Outcome> {
    let scope = scope_of(args)?;
    ctx.call(ctx.client.resume(&ResumeRequest {
        scope: scope.clone(),
    }))
    .await?;
    writeln!(crate::output::stdout(), "resumed {}", scope.text())?;
    Ok(Outcome::Ok)
}

pub async fn drain(ctx: &Ctx, node: &str, drain: bool) -> anyhow::Result<Outcome> {
    let n = ctx.call(ctx.client.drain_node(node, drain)).await?;
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &n)?;
    } else {
        writeln!(out, "{}: {}", n.hostname, n.status_text())?;
    }
    Ok(Outcome::Ok)
}

pub async fn window(ctx: &Ctx, what: WindowCommand) -> anyhow::Result<Outcome> {
    let mut out = crate::output::stdout();
    match what {
        WindowCommand::Add {
            name,
            cron,
            duration,
            job,
            label,
        } => {
            let scope = match (job, label) {
                (None, None) => HoldScope::All,
                (j, l) => HoldScope::from_flags(false, j.as_deref(), l.as_deref())
                    .map_err(|e| anyhow!(e))?,
            };
            let w = ctx
                .call(ctx.client.put_window(
                    &name,
                    &WindowRequest {
                        cron,
                        duration,
                        scope,
                    },
                ))
                .await?;
            if ctx.format == Format::Json {
                write_json(&mut out, &w)?;
            } else {
                let next = w
                    .next_open(Utc::now())
                    .map(time)
                    .unwrap_or_else(|| "never".into());
                writeln!(out, "window {} saved; it opens next at {next}", w.name)?;
            }
        }
        WindowCommand::List => {
            let windows = ctx.call(ctx.client.windows()).await?;
            if ctx.format == Format::Json {
                write_json(&mut out, &windows)?;
                return Ok(Outcome::Ok);
            }
            let now = Utc::now();
            let mut table = Table::new(&["NAME", "CRON", "DURATION", "SCOPE", "NEXT", "OPEN"]);
            for w in &windows {
                table.row([
                    w.name.clone(),
                    w.cron.clone(),
                    // As the operator types it (`1h`, `1h30m`), not `3600s`.
                    op_proto::units::format_duration(std::time::Duration::from_secs(
                        w.duration_secs,
                    )),
                    w.scope.text(),
                    w.next_open(now).map(time).unwrap_or_else(|| "never".into()),
                    if w.open_at(now).is_some() {
                        "yes"
                    } else {
                        "no"
                    }
                    .to_string(),
                ]);
            }
            table.write(&mut out)?;
        }
        WindowCommand::Remove { name } => {
            ctx.call(ctx.client.remove_window(&name)).await?;
            writeln!(out, "window {name} removed")?;
        }
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_takes_an_instant_or_a_duration() {
        let now: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            until_instant("2h", now).unwrap().to_rfc3339(),
            "2030-01-01T02:00:00+00:00"
        );
        assert_eq!(
            until_instant("2030-01-02T00:00:00Z", now)
                .unwrap()
                .to_rfc3339(),
            "2030-01-02T00:00:00+00:00"
        );
        assert!(until_instant("tomorrow", now).is_err());
        assert!(until_instant("0", now).is_err());
    }
}
