//! Notification rule commands (issue 19). A rule is stored whole, as JSON, under its name. The
//! API checks a rule fully before proposing it (its template compiled by `op-notify`); apply
//! repeats the structural checks, which are pure, so a command that bypassed the API still
//! cannot store a rule naming an unknown kind or a relative secret path.
//!
//! Each rule has a delivery row (`notify_delivery`): the event id its receiver acknowledged up
//! to and the channel's health, moved only by the leader's delivery worker (`NotifyDelivered`,
//! `NotifyFailed`). A new rule starts at the newest event, so saving a rule replays no history;
//! replacing a rule keeps its position.

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
    // The newest event so far is "acknowledged": only events after the rule was saved are sent.
    // OR IGNORE: a replaced rule keeps its position (and a rule from before the delivery table
    // gets one now).
    conn.execute(
        "INSERT OR IGNORE INTO notify_delivery(rule, acknowledged)
         VALUES (?1, (SELECT COALESCE(MAX(id), 0) FROM events))",
        [&rule.name],
    )?;
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
    let saved = read::notify::rule(conn, &rule.name)?.unwrap_or_else(|| NotifyRuleInfo {
        rule: rule.clone(),
        updated_at: at,
        updated_by: actor.to_string(),
        delivery: Default::default(),
    });
    Ok(Ok(CommandResult::NotifyRule {
        rule: Box::new(saved),
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
    conn.execute("DELETE FROM notify_delivery WHERE rule = ?1", [name])?;
    audit(conn, at, actor, "notify.remove", name, "")?;
    Ok(Ok(CommandResult::Done))
}

/// `NotifyDelivered`: moves the rule's position forward (never back) and records the success.
/// A rule removed meanwhile has no row, and nothing changes.
pub(super) fn delivered(
    conn: &Connection,
    rule: &str,
    event_id: u64,
    at: DateTime<Utc>,
) -> Outcome {
    conn.execute(
        "UPDATE notify_delivery SET acknowledged = MAX(acknowledged, ?2), last_success = ?3,
         failures = 0 WHERE rule = ?1",
        params![rule, i64::try_from(event_id).unwrap_or(i64::MAX), ms(at)],
    )?;
    Ok(Ok(CommandResult::Done))
}

/// `NotifyFailed`: records the channel's failure, unless the rule is gone or the event was
/// acknowledged meanwhile (a late report of an old leader).
pub(super) fn failed(
    conn: &Connection,
    rule: &str,
    event_id: u64,
    failures: u32,
    error: &str,
    at: DateTime<Utc>,
) -> Outcome {
    conn.execute(
        "UPDATE notify_delivery SET failures = ?3, last_error = ?4, last_failure = ?5
         WHERE rule = ?1 AND acknowledged < ?2",
        params![
            rule,
            i64::try_from(event_id).unwrap_or(i64::MAX),
            failures,
            error,
            ms(at)
        ],
    )?;
    Ok(Ok(CommandResult::Done))
}
