//! Tokens: how secrets are made, hashed and checked, and the first-start bootstrap that writes
//! `admin.token` and `agent.token`.
//!
//! A token reads `ID.SECRET`. Only SHA-256(token) is stored (and replicated); a request's token is
//! found by its public id, then its hash is compared in constant time, so neither the lookup nor
//! the comparison leaks how much of a guess was right. The authenticator keeps the tokens it has
//! seen in memory and, when the hub says tokens changed, reads each one again (by id) the next time
//! it is presented.

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

use crate::error::DomainError;
use crate::hub::Hub;

/// Who is calling: the token's name (the audit actor) and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: String,
    pub name: String,
    pub scope: Scope,
    /// For a node's own agent credential, the node it belongs to.
    pub node_id: Option<uuid::Uuid>,
    /// The token's policy, when it has one (docs/security.md): checked by the guard for the
    /// verb, and by the handlers that list or target jobs and hosts.
    pub policy: Option<Arc<op_proto::policy::Policy>>,
}

impl Caller {
    /// May this caller see and act on the job called `name`? (Its policy's job globs.)
    pub fn sees_job(&self, name: &str) -> bool {
        self.policy.as_ref().is_none_or(|p| p.sees_job(name))
    }

    /// May this caller target `host`? (Its policy's host selectors.)
    pub fn reaches_host(&self, host: &op_proto::HostIdentity) -> bool {
        self.policy.as_ref().is_none_or(|p| p.reaches_host(host))
    }

    /// The nodes this caller may see: the hosts it reaches, each showing only the running
    /// runs of jobs it sees (another team's run on a shared host is not its business). Every
    /// answer and page that shows nodes passes here, after the heartbeat overlay (which
    /// brings the freshest `running`).
    pub fn narrow_nodes(&self, nodes: &mut Vec<op_proto::NodeInfo>) {
        nodes.retain(|n| self.reaches_host(&n.identity()));
        for n in nodes {
            n.running.retain(|r| self.sees_job(&r.job));
        }
    }

    /// A job's `Env` as this caller may see it: a viewer gets the names, never the values
    /// (issue 24; `secret:NAME` references stay, they hold no value). Every answer and page
    /// that shows a job definition (API, console page, console editor) passes here.
    pub fn redact_env(&self, env: &mut std::collections::BTreeMap<String, String>) {
        if !self.scope.can_operate() {
            op_proto::secret::redact_env(env);
        }
    }

    /// [`Caller::sees_job`] as an answer: a 403 naming the job.
    pub fn check_job(&self, name: &str) -> Result<(), DomainError> {
        if self.sees_job(name) {
            Ok(())
        } else {
            Err(DomainError::Denied(format!(
                "token {:?} may not see or act on job {name:?} (its policy's jobs)",
                self.name
            )))
        }
    }

    /// May this caller see a rollout? One of a job's revisions: when it sees the job (a
    /// package's: always, as package listings are not filtered).
    pub fn sees_rollout(&self, r: &op_proto::rollout::RolloutInfo) -> bool {
        r.kind != op_proto::rollout::RolloutKind::Job || self.sees_job(&r.subject)
    }

    /// May this caller see a pause or window of `scope`? One on a job: when it sees the job.
    pub fn sees_hold(&self, scope: &op_proto::holds::HoldScope) -> bool {
        match scope {
            op_proto::holds::HoldScope::Job(name) => self.sees_job(name),
            _ => true,
        }
    }

    /// May this caller pause, hold or pin `scope`? A job of its own, yes. The whole fleet or
    /// every host with a label reaches other teams' jobs and hosts: only for a token whose
    /// policy limits neither jobs nor hosts (docs/security.md, "Token policies").
    pub fn check_hold(&self, scope: &op_proto::holds::HoldScope) -> Result<(), DomainError> {
        use op_proto::holds::HoldScope;
        match scope {
            HoldScope::Job(name) => self.check_job(name),
            HoldScope::All => self.check_fleet_wide("the whole fleet"),
            HoldScope::Label { key, value } => {
                self.check_fleet_wide(&format!("every host labelled {key}={value}"))
            }
        }
    }

    /// Refuses an action that reaches `what` (every job on many hosts) to a policy token
    /// limited to some jobs or hosts.
    pub fn check_fleet_wide(&self, what: &str) -> Result<(), DomainError> {
        match &self.policy {
            Some(p) if p.restricts_jobs() || p.restricts_hosts() => {
                Err(DomainError::Denied(format!(
                    "token {:?} is limited to some jobs or hosts, and this reaches {what}; \
                     name one of its jobs instead",
                    self.name
                )))
            }
            _ => Ok(()),
        }
    }

    /// [`Caller::reaches_host`] as an answer: a 403 naming the host, for actions on one node
    /// (drain, upgrade pins).
    pub fn check_node(&self, node: &op_proto::NodeInfo) -> Result<(), DomainError> {
        if self.reaches_host(&node.identity()) {
            Ok(())
        } else {
            Err(DomainError::Denied(format!(
                "token {:?} may not target host {:?} (its policy's hosts)",
                self.name, node.hostname
            )))
        }
    }

    /// Checks that this agent caller may speak for `node`: only the node's own credential may
    /// (the shared enrollment token can only register).
    pub fn speaks_for(&self, node: uuid::Uuid) -> Result<(), DomainError> {
        match self.node_id {
            Some(own) if own == node => Ok(()),
            Some(own) => Err(DomainError::Denied(format!(
                "this credential belongs to node {own}, not {node}"
            ))),
            None => Err(DomainError::Denied(
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
            policy: None,
        },
        secret,
    }
}

/// Failed authentications per client address: shared with the agent's API (op_tls).
pub use op_tls::auth_failures::{
    AUTH_BLOCK, AUTH_FAILURE_WINDOW, FailureLimiter, MAX_AUTH_FAILURES,
};

/// Long-polls in progress per credential: a node needs one at a time, so a credential holding
/// many is a misbehaving or stolen one, and each parked call costs the manager memory.
#[derive(Debug, Default)]
pub struct SyncSlots(std::sync::Mutex<HashMap<String, u32>>);

/// Concurrent syncs one credential may hold.
pub const MAX_SYNCS_PER_TOKEN: u32 = 4;

/// A held slot; released when dropped.
pub struct SyncSlot<'a> {
    slots: &'a SyncSlots,
    token_id: String,
}

impl SyncSlots {
    /// A slot for `token_id`, or `None` when it already holds [`MAX_SYNCS_PER_TOKEN`].
    pub fn take(&self, token_id: &str) -> Option<SyncSlot<'_>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(token_id.to_string()).or_insert(0);
        if *n >= MAX_SYNCS_PER_TOKEN {
            return None;
        }
        *n += 1;
        Some(SyncSlot {
            slots: self,
            token_id: token_id.to_string(),
        })
    }
}

impl Drop for SyncSlot<'_> {
    fn drop(&mut self) {
        let mut map = self.slots.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.token_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.token_id);
            }
        }
    }
}

pub struct Authenticator {
    pub failures: FailureLimiter,
    pub syncs: SyncSlots,
    store: Arc<Store>,
    hub: Arc<Hub>,
    /// Tokens by id, each with the `tokens_seq` it was read at; an entry read before the current
    /// sequence is read again (only that one row). Only tokens that exist are kept, so a caller
    /// presenting made-up ids cannot grow it.
    table: RwLock<HashMap<String, (u64, TokenRecord)>>,
}

impl Authenticator {
    pub fn new(store: Arc<Store>, hub: Arc<Hub>) -> Authenticator {
        Authenticator {
            failures: FailureLimiter::default(),
            syncs: SyncSlots::default(),
            store,
            hub,
            table: RwLock::new(HashMap::new()),
        }
    }

    /// The caller presenting `token`, if it is known, not revoked and not expired.
    pub async fn verify(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Caller>, op_store::StoreError> {
        // Read the sequence before the store: a change applied meanwhile leaves the entry tagged
        // older than its content, which only costs one more read. Each token change (every node
        // that enrolls adds one) re-reads just the tokens presented afterwards, one row each;
        // reloading the whole table for every change made enrolling 10,000 nodes quadratic.
        let seq = self.hub.tokens_seq();
        let Some((id, _)) = token.split_once('.') else {
            return Ok(None);
        };
        let fresh = matches!(self.table.read().await.get(id), Some((s, _)) if *s == seq);
        if !fresh {
            let store = self.store.clone();
            let key = id.to_string();
            let row = tokio::task::spawn_blocking(move || store.token(&key))
                .await
                .map_err(|_| op_store::StoreError::Poisoned)??;
            let mut table = self.table.write().await;
            match row {
                Some(record) => {
                    table.insert(id.to_string(), (seq, record));
                }
                None => {
                    table.remove(id);
                    return Ok(None);
                }
            }
        }
        let table = self.table.read().await;
        let Some((_, record)) = table.get(id) else {
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
            policy: record
                .info
                .policy
                .as_ref()
                .map(|p| Arc::new(op_proto::policy::Policy::stored(p))),
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
