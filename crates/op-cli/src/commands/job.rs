//! `agentcli delete|enable|disable JOB`.

use std::io::Write;

use super::Ctx;
use crate::Outcome;
use crate::cli::Format;
use crate::output::write_json;

pub async fn delete(ctx: &Ctx, name: &str) -> anyhow::Result<Outcome> {
    ctx.call(ctx.client.delete_job(name)).await?;
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &serde_json::json!({ "deleted": name }))?;
    } else {
        writeln!(out, "job {name} deleted")?;
    }
    Ok(Outcome::Ok)
}

pub async fn set_enabled(ctx: &Ctx, name: &str, enabled: bool) -> anyhow::Result<Outcome> {
    let job = if enabled {
        ctx.call(ctx.client.enable_job(name)).await?
    } else {
        ctx.call(ctx.client.disable_job(name)).await?
    };
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &job)?;
    } else {
        let word = if enabled { "enabled" } else { "disabled" };
        writeln!(out, "job {name} {word}, revision {}", job.record.revision)?;
    }
    Ok(Outcome::Ok)
}
