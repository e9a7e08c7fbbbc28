//! `agentcli audit [--since T] [--limit N]`: who changed what, newest last.

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::Ctx;
use crate::Outcome;
use crate::cli::Format;
use crate::output::{Table, local_time, write_json};

pub async fn run(ctx: &Ctx, since: Option<&str>, limit: u32) -> anyhow::Result<Outcome> {
    let since = since
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .with_context(|| {
                    format!("--since {s:?} is not an RFC 3339 time like 2026-11-25T00:00:00Z")
                })
        })
        .transpose()?;
    let entries = ctx.call(ctx.client.audit(since, Some(limit))).await?;
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &entries)?;
        return Ok(Outcome::Ok);
    }
    let mut t = Table::new(&["TIME", "ACTOR", "ACTION", "TARGET", "DETAIL"]);
    for e in &entries {
        t.row([
            local_time(e.at),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            e.detail.clone(),
        ]);
    }
    t.write(&mut out)?;
    Ok(Outcome::Ok)
}
