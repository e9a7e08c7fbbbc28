//! Token commands. Only the SHA-256 of a secret is ever stored or replicated.

use chrono::{DateTime, Utc};
use op_proto::api::TokenInfo;
use rusqlite::{Connection, params};

use super::{Changes, Outcome, audit};
use crate::codec::ms;
use crate::command::{CommandResult, NewToken, Rejection};
use crate::read;

pub(super) fn create(
    conn: &Connection,
    token: &NewToken,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    if token.name.trim().is_empty() || token.name.len() > 128 {
        return Ok(Err(Rejection::invalid(
            "token name must be 1..128 characters",
        )));
    }
    let tokens = read::misc::tokens(conn)?;
    if tokens.iter().any(|t| t.info.id == token.id) {
        return Ok(Err(Rejection::conflict(format!(
            "a token with id {} exists",
            token.id
        ))));
    }
    if tokens
        .iter()
        .any(|t| t.info.name == token.name && !t.info.revoked)
    {
        return Ok(Err(Rejection::conflict(format!(
            "a token named {:?} exists; revoke it first or pick another name",
            token.name
        ))));
    }
    conn.execute(
        "INSERT INTO tokens(id, name, scope, hash, created_at, expires_at, revoked)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
        params![
            token.id,
            token.name,
            token.scope.as_str(),
            token.secret_sha256,
            ms(at),
            token.expires_at.map(ms)
        ],
    )?;
    audit(
        conn,
        at,
        actor,
        "token.create",
        &token.name,
        &format!("id {} scope {}", token.id, token.scope.as_str()),
    )?;
    ch.tokens = true;
    Ok(Ok(CommandResult::Token {
        info: TokenInfo {
            id: token.id.clone(),
            name: token.name.clone(),
            scope: token.scope,
            created_at: at,
            expires_at: token.expires_at,
            revoked: false,
        },
    }))
}

pub(super) fn revoke(
    conn: &Connection,
    id: &str,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let Some(mut token) = read::misc::tokens(conn)?
        .into_iter()
        .find(|t| t.info.id == id)
    else {
        return Ok(Err(Rejection::not_found(format!(
            "no token with id {id:?}"
        ))));
    };
    if !token.info.revoked {
        conn.execute("UPDATE tokens SET revoked = 1 WHERE id = ?1", [id])?;
        token.info.revoked = true;
        audit(conn, at, actor, "token.revoke", &token.info.name, id)?;
        ch.tokens = true;
    }
    Ok(Ok(CommandResult::Token { info: token.info }))
}
