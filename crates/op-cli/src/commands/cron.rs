//! `agentcli cron EXPR`: the next fire times of an expression, offline.

use std::io::Write;

use anyhow::{Context, bail};
use chrono::{DateTime, Local, Utc};
use op_proto::{Schedule, Zone};
use serde::Serialize;

use crate::Outcome;
use crate::cli::Format;

#[derive(Serialize)]
struct CronOut<'a> {
    expr: &'a str,
    normalized: &'a str,
    zone: String,
    next: Vec<DateTime<Utc>>,
}

pub fn run(
    expr: &str,
    count: usize,
    tz: Option<&str>,
    after: Option<&str>,
    format: Format,
) -> anyhow::Result<Outcome> {
    let zone = match tz {
        Some(name) => Zone::parse(name).with_context(|| {
            format!("unknown time zone {name:?}; use an IANA name such as Europe/Berlin")
        })?,
        None => Zone::Local,
    };
    let from = match after {
        Some(t) => DateTime::parse_from_rfc3339(t)
            .with_context(|| {
                format!("--after {t:?} is not an RFC 3339 time like 2026-03-07T00:00:00Z")
            })?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let schedule = Schedule::parse(expr, zone)?;
    let next = schedule.upcoming(from, count);
    if next.is_empty() {
        bail!("cron expression {expr:?} never fires after {from}");
    }
    let mut out = crate::output::stdout();
    if format == Format::Json {
        crate::output::write_json(
            &mut out,
            &CronOut {
                expr,
                normalized: schedule.normalized(),
                zone: zone.to_string(),
                next,
            },
        )?;
        return Ok(Outcome::Ok);
    }
    for t in next {
        let line = match zone {
            Zone::Local => t
                .with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S %Z")
                .to_string(),
            Zone::Named(tz) => t
                .with_timezone(&tz)
                .format("%Y-%m-%d %H:%M:%S %Z")
                .to_string(),
        };
        writeln!(out, "{line}")?;
    }
    Ok(Outcome::Ok)
}
