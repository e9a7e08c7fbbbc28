//! `agentcli rollout list|status|pause|resume|abort|promote` (issue 21).

use std::io::Write;

use op_proto::rollout::{RolloutInfo, RolloutKind};

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
                "  failures:   {} (halts at {}; HaltOn {}), step wait {}s{}",
                st.failures,
                st.halt_at,
                r.plan.halt_on,
                r.plan.step_wait_secs,
                if r.plan.auto_rollback {
                    ", auto-rollback"
                } else {
                    ""
                }
            )?;
            let mut t = Table::new(&["HOST", "STATUS", "ADMITTED", "HAS NEW", "FAILED"]);
            for h in &st.hosts {
                t.row([
                    h.hostname.clone(),
                    h.status.clone(),
                    if h.admitted { "yes" } else { "no" }.to_string(),
                    if h.has_new { "yes" } else { "no" }.to_string(),
                    h.failed.clone().unwrap_or_default(),
                ]);
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
