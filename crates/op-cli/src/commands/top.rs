//! `agentcli top`: nodes with load, memory and running jobs, and the runs in progress across the
//! fleet, refreshed until Ctrl-C (or printed once with `--once`).

use std::io::Write;
use std::time::Duration;

use chrono::Utc;
use op_proto::{NodeInfo, NodeStatus};

use super::Ctx;
use super::get::sort_nodes;
use crate::Outcome;
use crate::cli::Format;
use crate::output::{Table, human_secs, write_json};

pub async fn run(ctx: &Ctx, once: bool, interval: Duration) -> anyhow::Result<Outcome> {
    loop {
        let mut nodes = ctx.call(ctx.client.list_nodes()).await?;
        sort_nodes(&mut nodes);
        let mut frame = Vec::new();
        if ctx.format == Format::Json {
            write_json(&mut frame, &nodes)?;
        } else {
            render(&mut frame, &nodes, &ctx.conn.manager)?;
        }
        let mut out = crate::output::stdout();
        if !once {
            // Clear the screen and go home, like top(1).
            out.write_all(b"\x1b[2J\x1b[H")?;
        }
        out.write_all(&frame)?;
        out.flush()?;
        drop(out);
        if once {
            return Ok(Outcome::Ok);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval.max(Duration::from_millis(200))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(Outcome::Ok),
        }
    }
}

fn render(out: &mut impl Write, nodes: &[NodeInfo], manager: &str) -> std::io::Result<()> {
    let now = Utc::now();
    let count = |s: NodeStatus| nodes.iter().filter(|n| n.status == s).count();
    let running: usize = nodes.iter().map(|n| n.running.len()).sum();
    // Said only when there are some: a Degraded node is the exception worth the room.
    let degraded = match count(NodeStatus::Degraded) {
        0 => String::new(),
        n => format!("{n} Degraded, "),
    };
    writeln!(
        out,
        "{}  manager {manager}  nodes: {} Ready, {degraded}{} NotReady  runs in progress: {running}",
        now.with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S"),
        count(NodeStatus::Ready),
        count(NodeStatus::NotReady),
    )?;
    writeln!(out)?;
    let mut t = Table::new(&[
        "HOSTNAME", "STATUS", "LOAD1", "CPUS", "MEM", "RUNNING", "LASTSEEN",
    ]);
    for n in nodes.iter().filter(|n| n.status != NodeStatus::Left) {
        let (load, cpus, mem) = match &n.load {
            Some(l) => {
                let used = l.mem_total_kb.saturating_sub(l.mem_available_kb);
                let pct = (used * 100).checked_div(l.mem_total_kb).unwrap_or(0);
                (
                    format!("{:.2}", l.load1),
                    l.cpus.to_string(),
                    format!("{}% of {} MiB", pct, l.mem_total_kb / 1024),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        t.row([
            n.hostname.clone(),
            n.status.as_str().to_string(),
            load,
            cpus,
            mem,
            n.running.len().to_string(),
            format!("{} ago", human_secs((now - n.last_seen).num_seconds())),
        ]);
    }
    t.write(out)?;
    writeln!(out)?;
    let mut runs: Vec<(&NodeInfo, &op_proto::node::RunningRun)> = nodes
        .iter()
        .flat_map(|n| n.running.iter().map(move |r| (n, r)))
        .collect();
    runs.sort_by_key(|(_, r)| r.started_at);
    if runs.is_empty() {
        writeln!(out, "no runs in progress")?;
        return Ok(());
    }
    let mut t = Table::new(&["JOB", "HOST", "TRIGGER", "RUNNING FOR", "RUN ID"]);
    for (n, r) in runs {
        t.row([
            r.job.clone(),
            n.hostname.clone(),
            r.trigger.as_str().to_string(),
            human_secs((now - r.started_at).num_seconds()),
            r.run_id.to_string(),
        ]);
    }
    t.write(out)
}
