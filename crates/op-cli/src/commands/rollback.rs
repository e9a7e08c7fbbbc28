//! `agentcli rollback NAME [VERSION]`: moves the package's current version (default: the one
//! before it). Agents that kept that version switch back at once; others download it again.

use std::io::Write;

use super::Ctx;
use crate::Outcome;
use crate::cli::Format;
use crate::output::write_json;

pub async fn run(ctx: &Ctx, name: &str, version: Option<u64>) -> anyhow::Result<Outcome> {
    let before = ctx
        .call(ctx.client.package_versions(name))
        .await?
        .into_iter()
        .find(|v| v.current)
        .map(|v| v.version);
    let now = ctx.call(ctx.client.rollback_package(name, version)).await?;
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &now)?;
    } else {
        match before {
            Some(b) if b != now.version => writeln!(
                out,
                "{}: current version is now {} (was {b}); agents switch to it",
                now.name, now.version
            )?,
            _ => writeln!(
                out,
                "{}: current version is {} (unchanged)",
                now.name, now.version
            )?,
        }
    }
    Ok(Outcome::Ok)
}
