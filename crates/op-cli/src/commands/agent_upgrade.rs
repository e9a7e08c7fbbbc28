//! `agentcli agent upgrade start|status` and `agentcli agent pin|unpin` (issue 22).

use std::io::Write;

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use op_proto::agent_upgrade::{PinRequest, UpgradeStatus, package_name, validate_version};

use super::Ctx;
use crate::Outcome;
use crate::cli::{AgentCommand, Format, UpgradeCommand};
use crate::output::{Table, transfer_bar, write_json};

pub async fn run(ctx: &Ctx, what: AgentCommand) -> anyhow::Result<Outcome> {
    match what {
        AgentCommand::Upgrade(UpgradeCommand::Start {
            binary,
            version,
            platform,
            rollout,
            step_wait,
            halt_on,
            auto_rollback,
            deadline,
            force,
        }) => {
            validate_version(&version).map_err(|e| anyhow!("--version: {e}"))?;
            let name = match platform {
                Some(p) => {
                    let (os, arch) = p.split_once('-').ok_or_else(|| {
                        anyhow!("--platform {p:?}: expected OS-ARCH, e.g. linux-x86_64")
                    })?;
                    package_name(os, arch)
                }
                None => op_proto::agent_upgrade::own_package_name(),
            };
            let meta = std::fs::metadata(&binary)
                .with_context(|| format!("cannot read {}", binary.display()))?;
            if !meta.is_file() {
                bail!("{} is not a file", binary.display());
            }
            let mut query = vec![("version", version)];
            for (k, v) in [
                ("deadline", deadline),
                ("rollout", rollout),
                ("step_wait", step_wait),
                ("halt_on", halt_on),
            ] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            if force {
                query.push(("force", "1".into()));
            }
            if auto_rollback {
                query.push(("auto_rollback", "1".into()));
            }
            let file = tokio::fs::File::open(&binary)
                .await
                .with_context(|| format!("cannot open {}", binary.display()))?;
            let bar = transfer_bar(Some(meta.len()), ctx.format == Format::Json, &name);
            let stream = tokio_util::io::ReaderStream::new(file).map({
                let bar = bar.clone();
                move |chunk| {
                    if let Ok(c) = &chunk {
                        bar.inc(c.len() as u64);
                    }
                    chunk
                }
            });
            let result = ctx
                .call(
                    ctx.client
                        .upload_agent_release(&name, &query, Some(meta.len()), stream),
                )
                .await;
            bar.finish_and_clear();
            let started = result?;
            let mut out = crate::output::stdout();
            if ctx.format == Format::Json {
                write_json(&mut out, &started)?;
            } else {
                writeln!(
                    out,
                    "agent release {} stored as {} version {} (sha256 {}); deadline {} s",
                    started.release.version,
                    started.package.name,
                    started.package.version,
                    started.package.sha256,
                    started.release.deadline_secs
                )?;
                match &started.rollout {
                    Some(id) => writeln!(out, "rollout {id}: agentcli rollout status {id}")?,
                    None => writeln!(
                        out,
                        "every host not pinned gets it now; follow it with: agentcli agent upgrade status"
                    )?,
                }
                out.flush()?;
            }
            Ok(Outcome::Ok)
        }
        AgentCommand::Upgrade(UpgradeCommand::Status) => {
            let status = ctx.call(ctx.client.agent_upgrade_status()).await?;
            let failed = status.hosts.iter().any(|h| h.state == "failed");
            print_status(ctx, &status)?;
            // Exit 1 names a problem: a host whose upgrade failed.
            Ok(if failed {
                Outcome::Problem
            } else {
                Outcome::Ok
            })
        }
        AgentCommand::Pin { args, label } => {
            let (node, version) = match (label.is_some(), args.as_slice()) {
                (true, [v]) => (None, v.clone()),
                (false, [n, v]) => (Some(n.clone()), v.clone()),
                (true, _) => bail!(
                    "with --label give the version alone: agentcli agent pin --label k=v VERSION"
                ),
                (false, _) => {
                    bail!("give the node and the version: agentcli agent pin NODE VERSION")
                }
            };
            validate_version(&version).map_err(|e| anyhow!(e))?;
            let status = ctx
                .call(ctx.client.agent_pin(&PinRequest {
                    node,
                    label,
                    version: Some(version),
                }))
                .await?;
            print_status(ctx, &status)?;
            Ok(Outcome::Ok)
        }
        AgentCommand::Unpin { node, label } => {
            let status = ctx
                .call(ctx.client.agent_pin(&PinRequest {
                    node,
                    label,
                    version: None,
                }))
                .await?;
            print_status(ctx, &status)?;
            Ok(Outcome::Ok)
        }
    }
}

fn print_status(ctx: &Ctx, status: &UpgradeStatus) -> anyhow::Result<()> {
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, status)?;
        return Ok(());
    }
    if status.releases.is_empty() {
        writeln!(
            out,
            "no agent release (agentcli agent upgrade start BINARY --version V)"
        )?;
    }
    for r in &status.releases {
        let (v, deadline) = r.release.as_ref().map_or(("?".to_string(), 0), |x| {
            (x.version.clone(), x.deadline_secs)
        });
        writeln!(
            out,
            "release {v}: {} version {}, deadline {deadline} s",
            r.package, r.package_version
        )?;
    }
    for r in &status.rollouts {
        writeln!(
            out,
            "rollout {}: {}, stage {}/{} ({}) of {}{} (agentcli rollout status {})",
            r.id,
            r.state.as_str(),
            r.stage + 1,
            r.plan.stages.len(),
            r.plan.stages[r.stage.min(r.plan.stages.len().saturating_sub(1))],
            r.plan.stages_text(),
            r.reason
                .as_deref()
                .map(|why| format!(": {why}"))
                .unwrap_or_default(),
            r.id
        )?;
    }
    for p in &status.pins {
        writeln!(out, "pin {} -> {}", p.target, p.version)?;
    }
    writeln!(out)?;
    let mut t = Table::new(&["NODE", "STATUS", "VERSION", "UPGRADE", "ERROR"]);
    for h in &status.hosts {
        t.row([
            h.hostname.clone(),
            h.status.clone(),
            h.agent_version.clone(),
            h.state.clone(),
            h.error.clone().unwrap_or_default(),
        ]);
    }
    t.write(&mut out)?;
    out.flush()?;
    Ok(())
}
