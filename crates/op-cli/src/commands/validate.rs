//! `agentcli validate FILE...`: check task files offline, the way `save` will.

use std::io::Write;

use chrono::Utc;
use op_proto::JobSpec;
use serde::Serialize;

use crate::Outcome;
use crate::cli::Format;
use crate::output::local_time;

#[derive(Serialize)]
struct FileReport {
    file: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<JobSpec>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    next_fires: Vec<chrono::DateTime<Utc>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
}

pub fn run(files: &[std::path::PathBuf], format: Format) -> anyhow::Result<Outcome> {
    let now = Utc::now();
    let mut reports = Vec::new();
    let mut unreadable = false;
    for path in files {
        let file = path.display().to_string();
        let report = match std::fs::read_to_string(path) {
            Err(e) => {
                unreadable = true;
                FileReport {
                    file,
                    ok: false,
                    job: None,
                    next_fires: Vec::new(),
                    errors: vec![format!("cannot read: {e}")],
                }
            }
            Ok(text) => check(file, &text, now),
        };
        reports.push(report);
    }
    let mut out = crate::output::stdout();
    if format == Format::Json {
        crate::output::write_json(&mut out, &reports)?;
    } else {
        for r in &reports {
            print_report(&mut out, r)?;
        }
    }
    if unreadable {
        anyhow::bail!("some files could not be read");
    }
    Ok(if reports.iter().all(|r| r.ok) {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

fn check(file: String, text: &str, now: chrono::DateTime<Utc>) -> FileReport {
    // A `Rollout` field (docs/rollouts.md) is checked on its own, as `save` does; the rest is
    // the task file.
    let text = match op_proto::rollout::split_checked_task_rollout(text) {
        Ok((task, _)) => task,
        Err(e) => {
            return FileReport {
                file,
                ok: false,
                job: None,
                next_fires: Vec::new(),
                errors: vec![e],
            };
        }
    };
    match JobSpec::from_task_json_at(&text, now) {
        Ok(spec) => {
            let next_fires = spec
                .schedule()
                .map(|s| s.upcoming(now, 3))
                .unwrap_or_default();
            FileReport {
                file,
                ok: true,
                job: Some(spec),
                next_fires,
                errors: Vec::new(),
            }
        }
        Err(e) => FileReport {
            file,
            ok: false,
            job: None,
            next_fires: Vec::new(),
            errors: e.messages(),
        },
    }
}

fn print_report(out: &mut impl Write, r: &FileReport) -> std::io::Result<()> {
    let Some(spec) = &r.job else {
        writeln!(out, "{}: INVALID", r.file)?;
        for e in &r.errors {
            writeln!(out, "  {e}")?;
        }
        return Ok(());
    };
    writeln!(out, "{}: OK  {}  ({})", r.file, spec.name, summary(spec))?;
    if !r.next_fires.is_empty() {
        let next: Vec<String> = r.next_fires.iter().map(|t| local_time(*t)).collect();
        writeln!(out, "  next: {}", next.join(", "))?;
    }
    Ok(())
}

/// One line on how and where the job runs.
pub fn summary(spec: &JobSpec) -> String {
    let mut parts = Vec::new();
    match spec.kind() {
        "once" => parts.push("once-job".to_string()),
        "api" => parts.push("API job".to_string()),
        _ => parts.push(format!("cron {:?}", spec.cron_expr)),
    }
    if let Some(tz) = &spec.time_zone {
        parts.push(format!("zone {tz}"));
    }
    parts.push(if spec.timeout_secs == 0 {
        "no timeout".to_string()
    } else {
        format!("timeout {}s", spec.timeout_secs)
    });
    parts.push(if spec.syn_flag { "sync" } else { "async" }.to_string());
    if !spec.enabled {
        parts.push("disabled".to_string());
    }
    let hosts = |list: &[op_proto::HostPattern]| {
        list.iter()
            .map(|h| h.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    if !spec.white_hosts.is_empty() {
        parts.push(format!("white {}", hosts(&spec.white_hosts)));
    }
    if !spec.black_hosts.is_empty() {
        parts.push(format!("black {}", hosts(&spec.black_hosts)));
    }
    if !spec.params.is_empty() {
        parts.push(format!("params {}", spec.params.join(",")));
    }
    parts.join(", ")
}
