//! Tokens: how secrets are made, hashed and checked, and the first-start bootstrap that writes
//! `admin.token` and `agent.token`.
//!
//! A token reads `ID.SECRET`. Only SHA-256(token) is stored (and replicated); a request's token is
//! found by its public id, then its hash is compared in constant time, so neither the lookup nor
//! the comparison leaks how much of a guess was right. The authenticator keeps the token table in
//! memory and reloads it when the hub says tokens changed.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use op_proto::api::Scope;
use op_store::{NewToken, Store, TokenRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::RwLock;

use crate::hub::Hub;

/// Who is calling: the token's name (the audit actor) and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: String,
    pub name: String,
    pub scope: Scope,
    /// For a node's own agent credential, the node it belongs to.
    pub node_id: Option<uuid::Uuid>,
}

impl Caller {
    /// Checks that this agent caller may speak for `node`: only the node's own credential may
    /// (the shared enrollment token can only register).
    pub fn speaks_for(&self, node: uuid::Uuid) -> Result<(), crate::api::error::ApiError> {
        use crate::api::error::ApiError;
        match self.node_id {
            Some(own) if own == node => Ok(()),
            Some(own) => Err(ApiError::Denied(format!(
                "this credential belongs to node {own}, not {node}"
            ))),
            None => Err(ApiError::Denied(
                "an enrollment token can only register a node; use the node credential \
                 returned at registration"
                    .into(),
            )),
        }
    }
}

/// A freshly generated token: the command to store it and the secret to show once.
pub struct Generated {
    pub token: NewToken,
    pub secret: String,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Makes a new token `ID.SECRET` (6 random bytes of id, 32 of secret).
pub fn generate(name: &str, scope: Scope, expires_at: Option<DateTime<Utc>>) -> Generated {
    let id = random_hex(6);
    let secret = format!("{id}.{}", random_hex(32));
    Generated {
        token: NewToken {
            id,
            name: name.to_string(),
            scope,
            secret_sha256: sha256_hex(&secret),
            expires_at,
            node_id: None,
        },
        secret,
    }
}

pub struct Authenticator {
    store: Arc<Store>,
    hub: Arc<Hub>,
    table: RwLock<(u64, HashMap<String, TokenRecord>)>,
}

impl Authenticator {
    pub fn new(store: Arc<Store>, hub: Arc<Hub>) -> Authenticator {
        Authenticator {
            store,
            hub,
            table: RwLock::new((0, HashMap::new())),
        }
    }

    /// The caller presenting `token`, if it is known, not revoked and not expired.
    pub async fn verify(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Caller>, op_store::StoreError> {
        let seq = self.hub.tokens_seq();
        if self.table.read().await.0 != seq {
            let store = self.store.clone();
            let rows = tokio::task::spawn_blocking(move || store.tokens())
                .await
                .map_err(|_| op_store::StoreError::Poisoned)??;
            let map = rows.into_iter().map(|t| (t.info.id.clone(), t)).collect();
            *self.table.write().await = (seq, map);
        }
        let Some((id, _)) = token.split_once('.') else {
            return Ok(None);
        };
        let table = self.table.read().await;
        let Some(record) = table.1.get(id) else {
            return Ok(None);
        };
        let presented = sha256_hex(token);
        let matches: bool = presented
            .as_bytes()
            .ct_eq(record.secret_sha256.as_bytes())
            .into();
        let expired = record.info.expires_at.is_some_and(|e| e <= now);
        if !matches || record.info.revoked || expired {
            return Ok(None);
        }
        Ok(Some(Caller {
            token_id: record.info.id.clone(),
            name: record.info.name.clone(),
            scope: record.info.scope,
            node_id: record.info.node_id,
        }))
    }
}

/// Writes a secret to `path` with mode 0600, atomically (temp file + rename).
pub fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_hash_and_differ() {
        let a = generate("a", Scope::Admin, None);
        let b = generate("a", Scope::Admin, None);
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(&format!("{}.", a.token.id)));
        assert_eq!(a.token.secret_sha256, sha256_hex(&a.secret));
        assert_eq!(a.token.secret_sha256.len(), 64);
    }
}
