//! Notification rule commands (issue 19). A rule is stored whole, as JSON, under its name. The
//! API checks a rule fully before proposing it (its template compiled by `op-notify`); apply
//! repeats the structural checks, which are pure, so a command that bypassed the API still
//! cannot store a rule naming an unknown kind or a relative secret path.

use chrono::{DateTime, Utc};
use op_proto::events::{NotifyRule, NotifyRuleInfo};
use rusqlite::{Connection, params};

use super::{Outcome, audit};
use crate::codec::{ms, to_json};
use crate::command::{CommandResult, Rejection};
use crate::read;

pub(super) fn put(conn: &Connection, rule: &NotifyRule, at: DateTime<Utc>, actor: &str) -> Outcome {
    if let Err(e) = rule.validate() {
        return Ok(Err(Rejection::invalid(e.to_string())));
    }
    let created = read::notify::rule(conn, &rule.name)?.is_none();
    conn.execute(
        "INSERT INTO notify_rules(name, rule, updated_at, updated_by) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET rule = excluded.rule, updated_at = excluded.updated_at,
         updated_by = excluded.updated_by",
        params![rule.name, to_json(rule), ms(at), actor],
    )?;
    audit(
        conn,
        at,
        actor,
        if created {
            "notify.add"
        } else {
            "notify.update"
        },
        &rule.name,
        &rule.channel.receiver(),
    )?;
    Ok(Ok(CommandResult::NotifyRule {
        rule: Box::new(NotifyRuleInfo {
            rule: rule.clone(),
            updated_at: at,
            updated_by: actor.to_string(),
        }),
        created,
    }))
}

pub(super) fn remove(conn: &Connection, name: &str, at: DateTime<Utc>, actor: &str) -> Outcome {
    let removed = conn.execute("DELETE FROM notify_rules WHERE name = ?1", [name])?;
    if removed == 0 {
        return Ok(Err(Rejection::not_found(format!(
            "no notification rule named {name:?} (see agentcli notify list)"
        ))));
    }
    audit(conn, at, actor, "notify.remove", name, "")?;
    Ok(Ok(CommandResult::Done))
}
