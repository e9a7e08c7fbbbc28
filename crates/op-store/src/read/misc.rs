//! Tokens and the audit log.

use chrono::{DateTime, Utc};
use op_proto::api::{AuditEntry, Scope, TokenInfo};
use rusqlite::{Connection, OptionalExtension};

use crate::Store;
use crate::codec::{from_ms, ms};
use crate::command::TokenRecord;
use crate::error::Result;

/// Most audit entries one query returns.
pub const MAX_AUDIT_LIMIT: u32 = 10_000;

pub(crate) fn tokens(conn: &Connection) -> Result<Vec<TokenRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, scope, hash, created_at, expires_at, revoked, node_id, policy FROM tokens
         ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([], token_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// One token by id (the tokens table's primary key).
pub(crate) fn token(conn: &Connection, id: &str) -> Result<Option<TokenRecord>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, name, scope, hash, created_at, expires_at, revoked, node_id, policy FROM tokens
             WHERE id = ?1",
        )?
        .query_row([id], token_row)
        .optional()?)
}

/// An audit row selected as `id, at, actor, action, target, detail`.
fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get::<_, i64>(0)? as u64,
        at: from_ms(r.get(1)?),
        actor: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        detail: r.get(5)?,
    })
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        info: TokenInfo {
            id: r.get(0)?,
            name: r.get(1)?,
            // Only valid scopes are ever written; viewer is the safe reading of anything else.
            scope: Scope::parse(&r.get::<_, String>(2)?).unwrap_or(Scope::Viewer),
            created_at: from_ms(r.get(4)?),
            expires_at: r.get::<_, Option<i64>>(5)?.map(from_ms),
            revoked: r.get::<_, i64>(6)? != 0,
            node_id: r
                .get::<_, Option<String>>(7)?
                .and_then(|n| uuid::Uuid::parse_str(&n).ok()),
            // A policy that no longer reads is kept as the narrowest one: read only, no job
            // (the empty glob matches no job name), no host.
            policy: r.get::<_, Option<String>>(8)?.map(|p| {
                serde_json::from_str(&p).unwrap_or_else(|_| op_proto::policy::TokenPolicy {
                    jobs: vec![String::new()],
                    hosts: vec![String::new()],
                    verbs: vec!["read".into()],
                })
            }),
        },
        secret_sha256: r.get(3)?,
    })
}

impl Store {
    /// Every token, with its hash (for the authenticator; never sent to clients).
    pub fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(tokens)
    }

    /// One token by id, with its hash (for the authenticator; never sent to clients).
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.read(|conn| token(conn, id))
    }

    /// Audit entries at or after `since`, oldest first, at most `limit`.
    pub fn audit(&self, since: Option<DateTime<Utc>>, limit: u32) -> Result<Vec<AuditEntry>> {
        let since = since.map_or(i64::MIN, ms);
        let limit = limit.clamp(1, MAX_AUDIT_LIMIT);
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, at, actor, action, target, detail FROM audit
                 WHERE at >= ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(rusqlite::params![since, limit], audit_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// One page of the audit log, newest first: entries with an id below `before` (all when
    /// `None`), at most `limit`, and the total number of entries.
    pub fn audit_page(&self, before: Option<u64>, limit: u32) -> Result<(Vec<AuditEntry>, u64)> {
        let before = before.map_or(i64::MAX, |b| b as i64);
        let limit = limit.clamp(1, MAX_AUDIT_LIMIT);
        self.read(|conn| {
            let total: i64 = conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))?;
            let mut stmt = conn.prepare_cached(
                "SELECT id, at, actor, action, target, detail FROM audit
                 WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(rusqlite::params![before, limit], audit_row)?;
            let rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, total as u64))
        })
    }
}
