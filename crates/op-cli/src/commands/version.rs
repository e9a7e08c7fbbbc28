//! `agentcli version`: the client's version and the manager's.

use std::io::Write;

use super::Ctx;
use crate::Outcome;
use crate::cli::Format;
use crate::output::write_json;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let client = env!("CARGO_PKG_VERSION");
    let manager = ctx.call(ctx.client.version()).await?;
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(
            &mut out,
            &serde_json::json!({
                "client": { "version": client, "api_version": op_proto::API_VERSION },
                "manager": manager,
            }),
        )?;
    } else {
        writeln!(out, "agentcli {client} (API v{})", op_proto::API_VERSION)?;
        writeln!(
            out,
            "op-manager {} at {} (API v{})",
            manager.version, ctx.conn.manager, manager.api_version
        )?;
    }
    Ok(Outcome::Ok)
}
