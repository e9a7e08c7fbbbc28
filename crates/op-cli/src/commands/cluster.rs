//! `agentcli cluster status`.

use std::io::Write;

use super::Ctx;
use crate::Outcome;
use crate::cli::{ClusterCommand, Format};
use crate::output::{Table, write_json};

pub async fn run(ctx: &Ctx, what: ClusterCommand) -> anyhow::Result<Outcome> {
    match what {
        ClusterCommand::Status => status(ctx).await,
    }
}

async fn status(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let c = ctx.call(ctx.client.cluster()).await?;
    let mut out = std::io::stdout().lock();
    if ctx.format == Format::Json {
        write_json(&mut out, &c)?;
        return Ok(Outcome::Ok);
    }
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    writeln!(out, "cluster {}", c.cluster_id)?;
    writeln!(
        out,
        "leader {}  term {}  this node {} ({})  applied {}  last log {}  snapshot {}",
        opt(c.leader),
        c.term,
        c.node_id,
        c.state,
        opt(c.applied_index),
        opt(c.last_log_index),
        opt(c.snapshot_index)
    )?;
    let mut t = Table::new(&["ID", "API", "RAFT", "ROLE", "MATCHED"]);
    for m in &c.members {
        let role = if Some(m.id) == c.leader {
            "leader"
        } else if m.voter {
            "voter"
        } else {
            "learner"
        };
        t.row([
            m.id.to_string(),
            m.api_addr.clone(),
            m.raft_addr.clone(),
            role.to_string(),
            opt(m.matched_index),
        ]);
    }
    t.write(&mut out)?;
    Ok(Outcome::Ok)
}
