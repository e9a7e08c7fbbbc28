//! Handing a new secrets key to every member (`op-manager secrets rotate-key`, issue 24).
//!
//! `POST /raft/secrets-key` (peer-authenticated by the cluster secret, like every raft route)
//! carries the key ring in hex: the new key first, the one it replaces behind it. The member
//! writes it to its `secrets.key` and uses it at once. The rotating member hands it to every
//! other member before it re-seals any secret, and stops if one cannot be reached, so no secret
//! is ever sealed under a key a member lacks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::secrets::{KeyRing, SecretsKey};

/// The body of `POST /raft/secrets-key`. Never logged (`Debug` shows the count only).
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyRingMessage {
    pub keys: Vec<String>,
}

impl std::fmt::Debug for KeyRingMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRingMessage")
            .field("keys", &self.keys.len())
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRingAck {
    pub node_id: u64,
    pub key_id: String,
}

impl KeyRingMessage {
    pub fn of(ring: &KeyRing) -> KeyRingMessage {
        KeyRingMessage {
            keys: ring.hex_keys(),
        }
    }

    pub fn ring(&self) -> Result<KeyRing, String> {
        let keys = self
            .keys
            .iter()
            .map(|k| SecretsKey::from_hex(k))
            .collect::<Result<Vec<_>, _>>()?;
        KeyRing::from_keys(keys).ok_or_else(|| "an empty key ring".to_string())
    }
}

/// Sends `ring` to every other member; the number of members that hold it now (this one
/// included), or which member did not take it.
pub async fn hand_out(cluster: &Cluster, ring: &KeyRing) -> Result<usize, String> {
    let members: Vec<(u64, String)> = {
        let m = cluster.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, member)| (*id, member.raft_addr.clone()))
            .collect()
    };
    let body = KeyRingMessage::of(ring);
    let mut count = 1;
    for (id, url) in members {
        if id == cluster.id() {
            continue;
        }
        let ack: Result<KeyRingAck, _> = cluster
            .peers
            .post(&url, "/raft/secrets-key", &body, Duration::from_secs(10))
            .await;
        match ack {
            Ok(_) => count += 1,
            Err(e) => {
                return Err(format!(
                    "member {id} ({url}) did not take the new secrets key ({e}); nothing was re-sealed, the old key still serves; rotate again once every member is up"
                ));
            }
        }
    }
    Ok(count)
}
