//! `agentcli rollout list|status|pause|resume|abort|promote` (issue 21).

use std::io::Write;

use op_proto::rollout::{HaltOn, PackageRollout, RolloutInfo, RolloutKind, RolloutRequest};

use super::Ctx;
use crate::Outcome;
use crate::cli::{Format, RolloutCommand};
use crate::output::{Table, local_time, write_json};

fn subject(r: &RolloutInfo) -> String {
    match r.kind {
        RolloutKind::Package => format!("package {} {}", r.subject, r.version),
        RolloutKind::Job => format!("job {} revision {}", r.subject, r.version),
    }
}

fn stage(r: &RolloutInfo) -> String {
    format!(
        "{}/{} ({})",
        r.stage + 1,
        r.plan.stages.len(),
        r.plan.stages[r.stage.min(r.plan.stages.len().saturating_sub(1))]
    )
}

pub async fn run(ctx: &Ctx, what: RolloutCommand) -> anyhow::Result<Outcome> {
    let mut out = crate::output::stdout();
    let json = ctx.format == Format::Json;
    let (id, action) = match &what {
        RolloutCommand::Default {
            name,
            rollout,
            none,
        } => return default(ctx, name.as_deref(), rollout, *none).await,
        RolloutCommand::List => {
            let list = ctx.call(ctx.client.rollouts()).await?;
            if json {
                write_json(&mut out, &list)?;
                return Ok(Outcome::Ok);
            }
            let mut t = Table::new(&["ID", "WHAT", "STATE", "STAGE", "STAGES", "CREATED"]);
            for r in &list {
                t.row([
                    r.id.to_string(),
                    subject(r),
                    r.state.as_str().to_string(),
                    stage(r),
                    r.plan.stages_text(),
                    local_time(r.created_at),
                ]);
            }
            t.write(&mut out)?;
            out.flush()?;
            return Ok(Outcome::Ok);
        }
        RolloutCommand::Status { id } => {
            let st = ctx.call(ctx.client.rollout(id)).await?;
            if json {
                write_json(&mut out, &st)?;
                return Ok(Outcome::Ok);
            }
            let r = &st.rollout;
            writeln!(out, "rollout {}: {}", r.id, subject(r))?;
            writeln!(out, "  state:      {}", r.state.as_str())?;
            if let Some(reason) = &r.reason {
                writeln!(out, "  reason:     {reason}")?;
            }
            writeln!(
                out,
                "  stage:      {} of {}, entered {}",
                stage(r),
                r.plan.stages_text(),
                local_time(r.stage_entered_at)
            )?;
            writeln!(
                out,
                "  admitted:   {} of {} selected host(s); previous: {}",
                st.admitted,
                st.selected,
                r.previous
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "none".into())
            )?;
            writeln!(
                out,
                "  failures:   {} ({}), step wait {}{}",
                st.failures,
                halts(r.plan.halt_on, st.halt_at),
                op_proto::units::format_duration(std::time::Duration::from_secs(
                    r.plan.step_wait_secs
                )),
                if r.plan.auto_rollback {
                    ", auto-rollback"
                } else {
                    ""
                }
            )?;
            if st.excluded > 0 {
                writeln!(
                    out,
                    "  excluded:   {} host(s) not waited on (pinned on another agent version)",
                    st.excluded
                )?;
            }
            let mut headers = vec!["HOST", "STATUS", "ADMITTED", "HAS NEW", "FAILED"];
            if st.excluded > 0 {
                headers.push("EXCLUDED");
            }
            let mut t = Table::new(&headers);
            for h in &st.hosts {
                let mut row = vec![
                    h.hostname.clone(),
                    h.status.clone(),
                    if h.admitted { "yes" } else { "no" }.to_string(),
                    if h.has_new { "yes" } else { "no" }.to_string(),
                    h.failed.clone().unwrap_or_default(),
                ];
                if st.excluded > 0 {
                    row.push(h.excluded.clone().unwrap_or_default());
                }
                t.row(row);
            }
            t.write(&mut out)?;
            out.flush()?;
            return Ok(Outcome::Ok);
        }
        RolloutCommand::Pause { id } => (id, "pause"),
        RolloutCommand::Resume { id } => (id, "resume"),
        RolloutCommand::Abort { id } => (id, "abort"),
        RolloutCommand::Promote { id } => (id, "promote"),
    };
    let r = ctx.call(ctx.client.rollout_action(id, action)).await?;
    if json {
        write_json(&mut out, &r)?;
    } else {
        writeln!(
            out,
            "rollout {} ({}) is {}",
            r.id,
            subject(&r),
            r.state.as_str()
        )?;
    }
    Ok(Outcome::Ok)
}

/// `rollout default [NAME] [--rollout STAGES ... | --none]`.
async fn default(
    ctx: &Ctx,
    name: Option<&str>,
    args: &crate::cli::RolloutArgs,
    none: bool,
) -> anyhow::Result<Outcome> {
    let mut out = crate::output::stdout();
    let json = ctx.format == Format::Json;
    let Some(name) = name else {
        if args.rollout.is_some() {
            anyhow::bail!("--rollout sets a package's default rollout: name the package");
        }
        let list = ctx.call(ctx.client.package_rollouts()).await?;
        if json {
            write_json(&mut out, &list)?;
        } else {
            defaults_table(&list).write(&mut out)?;
        }
        return Ok(Outcome::Ok);
    };
    if none {
        ctx.call(ctx.client.clear_package_rollout(name)).await?;
        if json {
            write_json(&mut out, &serde_json::json!({"name": name, "plan": null}))?;
        } else {
            writeln!(
                out,
                "package {name}: no default rollout; uploads reach every host at once"
            )?;
        }
        return Ok(Outcome::Ok);
    }
    let d = match &args.rollout {
        Some(stages) => {
            let request = RolloutRequest::from_flags(
                stages,
                args.step_wait.as_deref(),
                args.halt_on.as_deref(),
                args.auto_rollback,
            );
            // Checked here first for a clear message; the manager checks again.
            request.plan_for_flags().map_err(|e| anyhow::anyhow!(e))?;
            ctx.call(ctx.client.set_package_rollout(name, &request))
                .await?
        }
        None => ctx.call(ctx.client.package_rollout(name)).await?,
    };
    if json {
        write_json(&mut out, &d)?;
    } else {
        defaults_table(std::slice::from_ref(&d)).write(&mut out)?;
    }
    out.flush()?;
    Ok(Outcome::Ok)
}

/// PACKAGENAME ROLLOUT SET SETBY.
pub fn defaults_table(list: &[PackageRollout]) -> Table {
    let mut t = Table::new(&["PACKAGENAME", "ROLLOUT", "SET", "SETBY"]);
    for d in list {
        t.row([
            d.name.clone(),
            d.plan.describe(),
            local_time(d.set_at),
            d.set_by.clone(),
        ]);
    }
    t
}

/// `halts at 2`, or `halts at 3: 10% of the admitted hosts` (a count is said once).
fn halts(halt_on: HaltOn, at: u64) -> String {
    match halt_on {
        HaltOn::Count(_) => format!("halts at {at}"),
        HaltOn::Percent(p) => format!("halts at {at}: {p}% of the admitted hosts"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_halt_point_is_said_once() {
        assert_eq!(halts(HaltOn::Count(2), 2), "halts at 2");
        assert_eq!(
            halts(HaltOn::Percent(10), 3),
            "halts at 3: 10% of the admitted hosts"
        );
    }
}
