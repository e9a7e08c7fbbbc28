//! Agent self-upgrade (issue 22): the declared version and deadline of each uploaded agent
//! release, and the pins that keep hosts on a version. Both live in the `meta` table (no schema
//! change): `agent_release:<sha256>` and `agent_pin:<target>`, JSON values.

use chrono::{DateTime, Utc};
use op_proto::agent_upgrade::{AgentPin, AgentRelease};
use rusqlite::Connection;

use super::{Changes, Outcome, audit, bump_desired_all};
use crate::codec::to_json;
use crate::command::{CommandResult, Rejection};
use crate::set_meta;

pub(crate) const RELEASE_PREFIX: &str = "agent_release:";
pub(crate) const PIN_PREFIX: &str = "agent_pin:";

pub(super) fn set_release(
    conn: &Connection,
    sha256: &str,
    release: &AgentRelease,
    at: DateTime<Utc>,
    actor: &str,
) -> Outcome {
    if let Err(e) = op_proto::agent_upgrade::validate_version(&release.version) {
        return Ok(Err(Rejection::invalid(e)));
    }
    set_meta(
        conn,
        &format!("{RELEASE_PREFIX}{sha256}"),
        &to_json(release),
    )?;
    audit(
        conn,
        at,
        actor,
        "agent.release",
        &release.version,
        &format!(
            "sha256 {sha256}, deadline {}s{}",
            release.deadline_secs,
            if release.forced { ", forced" } else { "" }
        ),
    )?;
    Ok(Ok(CommandResult::Done))
}

pub(super) fn set_pin(
    conn: &Connection,
    index: u64,
    target: &str,
    version: Option<&str>,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let key = format!("{PIN_PREFIX}{target}");
    match version {
        Some(v) => {
            if let Err(e) = op_proto::agent_upgrade::validate_version(v) {
                return Ok(Err(Rejection::invalid(e)));
            }
            let pin = AgentPin {
                target: target.to_string(),
                version: v.to_string(),
            };
            set_meta(conn, &key, &to_json(&pin))?;
            audit(conn, at, actor, "agent.pin", target, v)?;
        }
        None => {
            let removed = conn.execute("DELETE FROM meta WHERE key = ?1", [&key])?;
            if removed == 0 {
                return Ok(Err(Rejection::not_found(format!(
                    "{target} is not pinned (see agentcli agent upgrade status)"
                ))));
            }
            audit(conn, at, actor, "agent.unpin", target, "")?;
        }
    }
    bump_desired_all(conn, index, ch)?;
    Ok(Ok(CommandResult::Done))
}
