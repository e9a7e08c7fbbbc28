//! Token commands. Only the SHA-256 of a secret is ever stored or replicated.

use chrono::{DateTime, Utc};
use op_proto::api::TokenInfo;
use rusqlite::{Connection, params};

use super::{Changes, Outcome, audit};
use crate::codec::ms;
use crate::command::{CommandResult, NewToken, Rejection};
use crate::error::Result;
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
    // One row by primary key and one lookup in the active-name index: enrolling 10,000 nodes
    // read (and decoded) the whole table for each new credential before.
    if read::misc::token(conn, &token.id)?.is_some() {
        return Ok(Err(Rejection::conflict(format!(
            "a token with id {} exists",
            token.id
        ))));
    }
    let name_taken: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM tokens WHERE name = ?1 AND revoked = 0)",
        [&token.name],
        |r| r.get(0),
    )?;
    if name_taken {
        return Ok(Err(Rejection::conflict(format!(
            "a token named {:?} exists; revoke it first or pick another name",
            token.name
        ))));
    }
    conn.execute(
        "INSERT INTO tokens(id, name, scope, hash, created_at, expires_at, revoked, node_id, policy)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8)",
        params![
            token.id,
            token.name,
            token.scope.as_str(),
            token.secret_sha256,
            ms(at),
            token.expires_at.map(ms),
            token.node_id.map(|n| n.to_string()),
            token
                .policy
                .as_ref()
                .map(|p| serde_json::to_string(p).unwrap_or_default())
        ],
    )?;
    audit(
        conn,
        at,
        actor,
        "token.create",
        &token.name,
        &match &token.policy {
            Some(p) => format!(
                "id {} scope {} policy {}",
                token.id,
                token.scope.as_str(),
                p.summary()
            ),
            None => format!("id {} scope {}", token.id, token.scope.as_str()),
        },
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
            node_id: token.node_id,
            policy: token.policy.clone(),
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
    let Some(mut token) = read::misc::token(conn, id)? else {
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

/// True when `node_id` holds a credential that is neither revoked nor expired at `at`.
pub(super) fn node_has_live_token(
    conn: &Connection,
    node_id: uuid::Uuid,
    at: DateTime<Utc>,
) -> Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM tokens WHERE node_id = ?1 AND revoked = 0
         AND (expires_at IS NULL OR expires_at > ?2)",
        params![node_id.to_string(), ms(at)],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// Revokes every credential of `node_id` (the node was forgotten); true if any was live.
pub(super) fn revoke_node(
    conn: &Connection,
    node_id: uuid::Uuid,
    ch: &mut Changes,
) -> Result<bool> {
    let n = conn.execute(
        "UPDATE tokens SET revoked = 1 WHERE node_id = ?1 AND revoked = 0",
        [node_id.to_string()],
    )?;
    if n > 0 {
        ch.tokens = true;
    }
    Ok(n > 0)
}
