//! `agentcli audit [--since T|DURATION] [--limit N]`: who changed what, newest last.

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::Ctx;
use crate::Outcome;
use crate::cli::Format;
use crate::output::{Table, local_time, write_json};

pub async fn run(ctx: &Ctx, since: Option<&str>, limit: u32) -> anyhow::Result<Outcome> {
    let since = since.map(|s| since_instant(s, Utc::now())).transpose()?;
    let entries = ctx.call(ctx.client.audit(since, Some(limit))).await?;
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &entries)?;
        return Ok(Outcome::Ok);
    }
    let mut t = Table::new(&["TIME", "ACTOR", "ACTION", "TARGET", "DETAIL"]);
    for e in &entries {
        t.row([
            local_time(e.at),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            e.detail.clone(),
        ]);
    }
    t.write(&mut out)?;
    Ok(Outcome::Ok)
}

/// `--since`: an RFC 3339 instant, or a duration back from `now` (`1h`, `30m`, `7d`, `3600`).
fn since_instant(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = op_proto::units::parse_duration(text)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .with_context(|| {
            format!(
                "--since {text:?} is neither a time like 2026-11-25T00:00:00Z nor a duration like 1h or 7d"
            )
        })?;
    Ok(now - ago)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_an_instant_or_a_duration() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s: &str| since_instant(s, now).unwrap().to_rfc3339();
        assert_eq!(at("1h"), "2026-11-25T11:00:00+00:00");
        assert_eq!(at("7d"), "2026-11-18T12:00:00+00:00");
        assert_eq!(at("60"), "2026-11-25T11:59:00+00:00");
        assert_eq!(at("2026-11-01T00:00:00Z"), "2026-11-01T00:00:00+00:00");
        assert!(since_instant("yesterday", now).is_err());
    }
}
