//! `agentcli cluster status|add|remove|transfer-leader`. Membership changes need an admin token
//! and run on the leader wherever they are sent; each prints the cluster as it is afterwards.

use std::io::Write;

use super::Ctx;
use crate::Outcome;
use crate::cli::{ClusterCommand, Format};
use crate::output::{Table, write_json};
use op_proto::api::{AddMemberRequest, ClusterStatus};

pub async fn run(ctx: &Ctx, what: ClusterCommand) -> anyhow::Result<Outcome> {
    let status = match what {
        ClusterCommand::Status => ctx.call(ctx.client.cluster()).await?,
        ClusterCommand::Add { id, api, raft } => {
            let req = AddMemberRequest {
                node_id: id,
                api_addr: api,
                raft_addr: raft,
            };
            let s = ctx.call(ctx.client.add_member(&req)).await?;
            eprintln!("node {id} is a voter");
            s
        }
        ClusterCommand::Remove { id } => {
            let s = ctx.call(ctx.client.remove_member(id)).await?;
            eprintln!("node {id} was removed; stop its op-manager");
            s
        }
        ClusterCommand::TransferLeader { to } => {
            let s = ctx.call(ctx.client.transfer_leader(to)).await?;
            eprintln!(
                "leader is now {}",
                s.leader
                    .map_or_else(|| "unknown".to_string(), |l| l.to_string())
            );
            s
        }
    };
    print(ctx, &status)
}

fn print(ctx: &Ctx, c: &ClusterStatus) -> anyhow::Result<Outcome> {
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, c)?;
        return Ok(Outcome::Ok);
    }
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    writeln!(out, "cluster {}", c.cluster_id)?;
    writeln!(
        out,
        "leader {}  term {}  this node {} ({})  last log {}  committed {}  applied {}  snapshot {}",
        opt(c.leader),
        c.term,
        c.node_id,
        c.state,
        opt(c.last_log_index),
        opt(c.committed_index),
        opt(c.applied_index),
        opt(c.snapshot_index)
    )?;
    let mut t = Table::new(&["ID", "API", "RAFT", "ROLE", "MATCHED", "LAG"]);
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
            opt(m.lag),
        ]);
    }
    t.write(&mut out)?;
    Ok(Outcome::Ok)
}
