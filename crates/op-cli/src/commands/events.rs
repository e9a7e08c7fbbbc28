//! `agentcli events [--follow] [--kind K]... [--job J]... [--after ID]`: what the fleet reported
//! (issue 19): one line per event, oldest first. `--follow` keeps printing new events as the
//! manager applies them; `-o json` prints each event as one JSON object per line (NDJSON).

use std::io::Write;

use op_client::EventQuery;
use op_proto::events::Event;

use super::Ctx;
use crate::Outcome;
use crate::cli::Format;
use crate::output::{Table, local_time};

const HEADERS: [&str; 6] = ["ID", "TIME", "KIND", "JOB", "HOSTS", "SUMMARY"];

pub async fn run(ctx: &Ctx, query: EventQuery) -> anyhow::Result<Outcome> {
    let follow = query.follow;
    let mut stream = ctx.call(ctx.client.events(&query)).await?;
    let mut out = crate::output::stdout();
    let mut table = Table::new(&HEADERS);
    let mut first = true;
    while let Some(event) = ctx.call(stream.next()).await? {
        if ctx.format == Format::Json {
            serde_json::to_writer(&mut out, &event)?;
            writeln!(out)?;
            out.flush()?;
        } else if follow {
            // Rows are printed as they come, so they cannot be aligned to later ones.
            if first {
                writeln!(out, "{}", HEADERS.join("\t"))?;
                first = false;
            }
            writeln!(out, "{}", row(&event).join("\t"))?;
            out.flush()?;
        } else {
            table.row(row(&event));
        }
    }
    if ctx.format != Format::Json && !follow {
        table.write(&mut out)?;
    }
    Ok(Outcome::Ok)
}

fn row(e: &Event) -> [String; 6] {
    let about = e
        .job
        .clone()
        .or_else(|| e.package.clone())
        .unwrap_or_else(|| "-".into());
    let mut hosts = e.hosts.join(",");
    if e.host_count > e.hosts.len() as u64 {
        hosts.push_str(&format!(" +{}", e.host_count - e.hosts.len() as u64));
    }
    [
        e.id.to_string(),
        local_time(e.time),
        e.kind.to_string(),
        about,
        hosts,
        e.summary.clone(),
    ]
}
