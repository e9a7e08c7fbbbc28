//! `agentcli save FILE...`: validate locally, save through the manager, report what was selected.

use std::io::Write;

use chrono::Utc;
use op_proto::JobSpec;
use op_proto::api::SaveJobResponse;
use serde::Serialize;

use super::Ctx;
use crate::Outcome;
use crate::cli::Format;
use crate::output::{local_time, write_json};

#[derive(Serialize)]
struct SaveReport {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    saved: Option<SaveJobResponse>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
}

pub async fn run_with(
    ctx: &Ctx,
    files: &[std::path::PathBuf],
    rollout: &crate::cli::RolloutArgs,
) -> anyhow::Result<Outcome> {
    // Checked here first, so its error names the flag that is wrong.
    rollout.check().map_err(|e| anyhow::anyhow!(e))?;
    let query = rollout.query();
    let mut reports = Vec::new();
    for path in files {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?;
        // Check locally first so a bad file gets every error at once, without a round trip. A
        // `Rollout` field (issue 21) is checked on its own; the rest is a task file.
        let task = match op_proto::rollout::split_checked_task_rollout(&text) {
            Ok((task, _)) => task,
            Err(e) => {
                reports.push(SaveReport {
                    file,
                    saved: None,
                    errors: vec![e],
                });
                continue;
            }
        };
        let spec = match JobSpec::from_task_json_at(&task, Utc::now()) {
            Ok(spec) => spec,
            Err(e) => {
                reports.push(SaveReport {
                    file,
                    saved: None,
                    errors: e.messages(),
                });
                continue;
            }
        };
        match ctx
            .client
            .save_job_text_with(&spec.name, &text, &query)
            .await
        {
            Ok(saved) => reports.push(SaveReport {
                file,
                saved: Some(saved),
                errors: Vec::new(),
            }),
            Err(e)
                if e.status()
                    .is_some_and(|s| (400..500).contains(&s) && s != 401 && s != 403) =>
            {
                let mut errors = vec![ctx.conn.explain(e).to_string()];
                errors.dedup();
                reports.push(SaveReport {
                    file,
                    saved: None,
                    errors,
                });
            }
            Err(e) => return Err(ctx.conn.explain(e)),
        }
    }
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &reports)?;
    } else {
        for r in &reports {
            print(&mut out, r)?;
        }
    }
    Ok(if reports.iter().all(|r| r.saved.is_some()) {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

fn print(out: &mut impl Write, r: &SaveReport) -> std::io::Result<()> {
    let Some(s) = &r.saved else {
        writeln!(out, "{}: NOT SAVED", r.file)?;
        for e in &r.errors {
            writeln!(out, "  {e}")?;
        }
        return Ok(());
    };
    let verb = if s.created { "created" } else { "updated" };
    writeln!(out, "job {} {verb}, revision {}", s.name, s.revision)?;
    if !s.next_fires.is_empty() {
        let next: Vec<String> = s.next_fires.iter().map(|t| local_time(*t)).collect();
        writeln!(out, "  next fire times: {}", next.join(", "))?;
    }
    if let Some(once) = &s.once {
        writeln!(
            out,
            "  once-job version {} selected {} host(s){}",
            s.revision,
            once.selected.len(),
            if once.selected.is_empty() { "" } else { ":" }
        )?;
        for h in &once.selected {
            writeln!(out, "    {}\t{}", h.hostname, h.ips)?;
        }
        if !once.unknown.is_empty() {
            writeln!(
                out,
                "  warning: listed hosts not known to the manager: {}",
                once.unknown.join(", ")
            )?;
        }
        if !once.not_ready.is_empty() {
            writeln!(
                out,
                "  warning: listed hosts not Ready (they will not run this version): {}",
                once.not_ready.join(", ")
            )?;
        }
        writeln!(
            out,
            "  follow it with: agentcli analysis jobs {} {}",
            s.name, s.revision
        )?;
    }
    Ok(())
}
