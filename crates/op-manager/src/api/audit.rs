//! `/v1/audit`: who changed what, oldest first; and [`visible`], the rule that narrows the log
//! to what a policy token may see (this API and the console's audit page both use it).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use op_proto::api::AuditEntry;
use op_proto::holds::HoldScope;
use op_store::Store;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::ApiQuery;
use crate::app::App;
use crate::auth::Caller;
use crate::error::DomainError;

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    since: Option<DateTime<Utc>>,
    limit: Option<u32>,
}

/// A policy token sees only the entries about what it may see ([`visible`]).
pub async fn list(
    State(app): State<Arc<App>>,
    axum::Extension(caller): axum::Extension<Caller>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(1000);
    let entries = app.read(move |s| s.audit(q.since, limit)).await?;
    Ok(Json(visible(&app, &caller, entries).await?))
}

/// The entries of `entries` that `caller` may see. A token without a policy sees them all; a
/// policy token only those about its own things, each placed by the rule its listings use
/// (docs/security.md, "Token policies"). An entry that cannot be placed is hidden.
pub async fn visible(
    app: &App,
    caller: &Caller,
    entries: Vec<AuditEntry>,
) -> Result<Vec<AuditEntry>, DomainError> {
    if caller.policy.is_none() {
        return Ok(entries);
    }
    let caller = caller.clone();
    app.read(move |s| {
        let mut kept = Vec::with_capacity(entries.len());
        for e in entries {
            if sees_entry(s, &caller, &e)? {
                kept.push(e);
            }
        }
        Ok(kept)
    })
    .await
}

/// May the policy token `caller` see entry `e`? Read from the store as it is now: a node, window
/// or token since forgotten, removed or renamed can no longer be placed, and is hidden.
fn sees_entry(s: &Store, caller: &Caller, e: &AuditEntry) -> op_store::Result<bool> {
    let action = e.action.as_str();
    let (kind, _) = action.split_once('.').unwrap_or((action, ""));
    Ok(match kind {
        // Every exec runs under one pseudo-job name: its entries (the command included) cannot
        // be told apart by team.
        _ if e.target == op_proto::invoke::ADHOC_JOB => false,
        "job" | "invocation" => caller.sees_job(&e.target),
        "node" => {
            let nodes = s.find_nodes(&e.target)?;
            !nodes.is_empty() && nodes.iter().all(|n| caller.reaches_host(&n.identity()))
        }
        // A pin names one host (or a label, which no node lookup finds: hidden).
        "agent" if action != "agent.release" => {
            let nodes = s.find_nodes(&e.target)?;
            !nodes.is_empty() && nodes.iter().all(|n| caller.reaches_host(&n.identity()))
        }
        // A release goes to every agent, as only a token limited to no jobs or hosts may make.
        "agent" => caller.check_fleet_wide("every agent").is_ok(),
        "token" => {
            let tokens = if action == "token.revoke" {
                s.token(&e.detail)?.into_iter().collect()
            } else {
                let mut all = s.tokens()?;
                all.retain(|t| t.info.name == e.target);
                all
            };
            !tokens.is_empty()
                && tokens.iter().all(|t| {
                    super::tokens::check_within(caller, t.info.scope, t.info.policy.as_ref())
                        .is_ok()
                })
        }
        "pause" | "resume" => match hold_scope(&e.target) {
            Some(scope) => caller.sees_hold(&scope),
            None => false,
        },
        "window" => s
            .windows()?
            .iter()
            .find(|w| w.name == e.target)
            .is_some_and(|w| caller.sees_hold(&w.scope)),
        "package" => own_package(s, caller, &e.target)?,
        "rollout" => match uuid::Uuid::parse_str(&e.target)
            .ok()
            .map(|id| s.rollout(id))
            .transpose()?
            .flatten()
        {
            Some(r) if r.kind == op_proto::rollout::RolloutKind::Package => {
                caller.sees_rollout(&r) && own_package(s, caller, &r.subject)?
            }
            Some(r) => caller.sees_rollout(&r),
            None => false,
        },
        // Secrets, notification rules and anything else belong to no team's jobs or hosts.
        _ => false,
    })
}

/// A package is a team's when every stored version of it is targeted within the token's hosts
/// (the rule for changing it, `check_own_package`); one with no version left cannot be placed.
fn own_package(s: &Store, caller: &Caller, name: &str) -> op_store::Result<bool> {
    let Some(policy) = caller.policy.as_ref().filter(|p| p.restricts_hosts()) else {
        return Ok(true);
    };
    let versions = s.package_versions(name)?;
    Ok(!versions.is_empty() && versions.iter().all(|v| policy.confines(&v.target).is_ok()))
}

/// The scope a pause entry names, as `HoldScope::text` wrote it.
fn hold_scope(text: &str) -> Option<HoldScope> {
    if text == "all" {
        return Some(HoldScope::All);
    }
    if let Some(job) = text.strip_prefix("job=") {
        return Some(HoldScope::Job(job.to_string()));
    }
    let (key, value) = text.strip_prefix("label:")?.split_once('=')?;
    Some(HoldScope::Label {
        key: key.into(),
        value: value.into(),
    })
}
