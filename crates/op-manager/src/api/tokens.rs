//! `/v1/tokens` (admin): list, create (the secret is shown once), revoke.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use op_proto::api::{CreatePolicyTokenRequest, CreatedToken, Scope, TokenInfo};
use op_proto::policy::Policy;
use op_store::{Command, CommandResult};

use super::error::ApiError;
use super::extract::ApiJson;
use crate::app::App;
use crate::auth::{self, Caller};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Also list the nodes' own credentials (one per enrolled agent).
    #[serde(default)]
    nodes: bool,
}

/// Refuses, to a policy token, any token (to make, list or revoke) that is not within its own
/// policy: one without a policy, an agent token or node credential, or one whose policy
/// reaches further. A token without a policy (an admin's) may touch any.
pub(super) fn check_within(
    caller: &Caller,
    scope: Scope,
    policy: Option<&op_proto::policy::TokenPolicy>,
) -> Result<(), String> {
    let Some(mine) = &caller.policy else {
        return Ok(());
    };
    let theirs = match policy {
        Some(p) if scope != Scope::Agent => Policy::check(p)?,
        _ => return Err("a token without a policy (or an agent's) is outside any policy".into()),
    };
    mine.covers(&theirs)
}

pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    super::extract::ApiQuery(q): super::extract::ApiQuery<ListQuery>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let tokens = app.read(|s| s.tokens()).await?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| t.info)
            .filter(|t| q.nodes || t.node_id.is_none())
            .filter(|t| check_within(&caller, t.scope, t.policy.as_ref()).is_ok())
            .collect(),
    ))
}

pub async fn create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreatePolicyTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let now = Utc::now();
    let bad = |m: String| ApiError::bad("invalid_policy", m);
    // Checked before anything is written: a bad glob, host selector or verb creates nothing.
    let policy = match &req.policy {
        Some(p) => {
            if req.scope == Scope::Agent {
                return Err(bad(
                    "a policy applies to viewer, operator and admin tokens, not agent tokens"
                        .into(),
                ));
            }
            Some(Policy::check_for(p, req.scope).map_err(bad)?)
        }
        None => None,
    };
    // A policy token that may make tokens makes only narrower ones (never an unrestricted one).
    if caller.policy.is_some() && policy.is_none() {
        return Err(ApiError::Denied(format!(
            "token {:?} has a policy; the tokens it creates need one within it",
            caller.name
        )));
    }
    check_within(&caller, req.scope, req.policy.as_ref()).map_err(|e| {
        ApiError::Denied(format!(
            "token {:?} may create only tokens within its own policy: {e}",
            caller.name
        ))
    })?;
    // A token that expires as it is made would be created, shown once and be useless: refused.
    const MAX_EXPIRY_SECS: u64 = 100 * 365 * 86_400;
    let expires_at = match req.expires_in_secs {
        Some(0) => {
            return Err(ApiError::bad(
                "invalid_body",
                "expires_in_secs is 0: the token would expire at once; give at least 1 second, \
                 or leave it out for a token that never expires",
            ));
        }
        Some(secs) => Some(
            now + chrono::Duration::try_seconds(secs.min(i64::MAX as u64) as i64)
                .filter(|_| secs <= MAX_EXPIRY_SECS)
                .ok_or_else(|| {
                    ApiError::bad(
                        "invalid_body",
                        format!("expires_in_secs {secs} is too large; at most 100 years ({MAX_EXPIRY_SECS} s)"),
                    )
                })?,
        ),
        None => None,
    };
    let mut generated = auth::generate(req.name.trim(), req.scope, expires_at);
    generated.token.policy = req.policy;
    match app
        .write(Command::CreateToken {
            token: generated.token,
            at: now,
            actor: caller.name,
        })
        .await?
    {
        CommandResult::Token { info } => Ok((
            StatusCode::CREATED,
            Json(CreatedToken {
                info,
                secret: generated.secret,
            }),
        )),
        _ => Err(ApiError::Internal(
            "unexpected answer to CreateToken".into(),
        )),
    }
}

pub async fn revoke(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    // A policy token revokes only tokens it could have made: not the admin's, nor another
    // team's (an unknown id is left to the store's answer).
    if caller.policy.is_some() {
        let wanted = id.clone();
        let target = app
            .read(move |s| s.tokens())
            .await?
            .into_iter()
            .find(|t| t.info.id == wanted);
        if let Some(t) = target {
            check_within(&caller, t.info.scope, t.info.policy.as_ref()).map_err(|e| {
                ApiError::Denied(format!(
                    "token {:?} may revoke only tokens within its own policy: {e}",
                    caller.name
                ))
            })?;
        }
    }
    match app
        .write(Command::RevokeToken {
            id,
            at: Utc::now(),
            actor: caller.name,
        })
        .await?
    {
        CommandResult::Token { info } => Ok(Json(info)),
        _ => Err(ApiError::Internal(
            "unexpected answer to RevokeToken".into(),
        )),
    }
}
