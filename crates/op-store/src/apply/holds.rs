//! Pauses and maintenance windows (issue 23). Both concern every node's desired state (each agent
//! decides at each fire whether one covers it), so a change wakes every node's sync; they change
//! rarely. The proposer checks them (a window that never opens is refused before it is written).

use chrono::{DateTime, Utc};
use op_proto::holds::{HoldScope, Pause, Window};
use rusqlite::{Connection, params};

use super::{Changes, Outcome, audit, bump_desired_all};
use crate::codec::to_json;
use crate::command::{CommandResult, Rejection};

pub(super) fn pause(conn: &Connection, index: u64, pause: &Pause, ch: &mut Changes) -> Outcome {
    if let Err(e) = pause.scope.check() {
        return Ok(Err(Rejection::invalid(e)));
    }
    conn.execute(
        "INSERT INTO pauses(scope, info) VALUES (?1, ?2)
         ON CONFLICT(scope) DO UPDATE SET info = excluded.info",
        params![pause.scope.text(), to_json(pause)],
    )?;
    let detail = pause
        .until
        .map(|u| format!("until {}", u.to_rfc3339()))
        .unwrap_or_default();
    audit(
        conn,
        pause.at,
        &pause.by,
        "pause",
        &pause.scope.text(),
        &detail,
    )?;
    bump_desired_all(conn, index, ch)?;
    Ok(Ok(CommandResult::Done))
}

pub(super) fn resume(
    conn: &Connection,
    index: u64,
    scope: &HoldScope,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let removed = conn.execute("DELETE FROM pauses WHERE scope = ?1", [scope.text()])?;
    if removed == 0 {
        return Ok(Err(Rejection::not_found(format!(
            "nothing is paused with {} (see agentcli pause --list)",
            scope.text()
        ))));
    }
    audit(conn, at, actor, "resume", &scope.text(), "")?;
    bump_desired_all(conn, index, ch)?;
    Ok(Ok(CommandResult::Done))
}

pub(super) fn set_window(
    conn: &Connection,
    index: u64,
    window: &Window,
    ch: &mut Changes,
) -> Outcome {
    if let Err(e) = window.scope.check() {
        return Ok(Err(Rejection::invalid(e)));
    }
    conn.execute(
        "INSERT INTO windows(name, info) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET info = excluded.info",
        params![window.name, to_json(window)],
    )?;
    audit(
        conn,
        window.at,
        &window.by,
        "window.set",
        &window.name,
        &format!(
            "cron {:?} for {}s, {}",
            window.cron,
            window.duration_secs,
            window.scope.text()
        ),
    )?;
    bump_desired_all(conn, index, ch)?;
    Ok(Ok(CommandResult::Done))
}

pub(super) fn remove_window(
    conn: &Connection,
    index: u64,
    name: &str,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let removed = conn.execute("DELETE FROM windows WHERE name = ?1", [name])?;
    if removed == 0 {
        return Ok(Err(Rejection::not_found(format!(
            "no maintenance window named {name:?} (see agentcli window list)"
        ))));
    }
    audit(conn, at, actor, "window.remove", name, "")?;
    bump_desired_all(conn, index, ch)?;
    Ok(Ok(CommandResult::Done))
}
