//! Secrets (issue 24): the cluster's secrets key and sealing with it.
//!
//! The key (256 bits) lives in `DATA_DIR/secrets.key` (mode 0600), outside the replicated state:
//! the raft log, snapshots, `state.db` and backups hold only values sealed with
//! XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`), a random 192-bit nonce per value and the
//! secret's name as associated data (so a ciphertext moved to another name does not open).
//!
//! Who has the key: the member that starts a new cluster makes it; a joining member gets it with
//! the cluster identity (`POST /raft/join`); `op-manager secrets rotate-key` makes a new one, hands
//! it to every member over the peer channel, then re-seals every secret under it. A member whose
//! state holds secrets but that has no key (or another key) says so at start and refuses to serve
//! them; it never makes a key for an existing cluster.
//!
//! The file holds the current key's hex on its first line; a second line, when present, is the
//! key before the last rotation (kept so that a member still opens values sealed under it while a
//! rotation is under way). Nothing here logs or formats a key or a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use op_store::SealedSecret;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The key file inside the data dir.
pub const KEY_FILE: &str = "secrets.key";

/// Why a secret cannot be sealed or opened here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "this manager has no secrets key (DATA_DIR/secrets.key is missing), so it cannot serve secrets; copy secrets.key from another member (mode 0600) and restart it (docs/security.md)"
    )]
    NoKey,
    #[error(
        "secret {name:?} was sealed with key {key_id}, which this manager does not hold (its secrets.key is another key); copy secrets.key from another member and restart it"
    )]
    WrongKey { name: String, key_id: String },
    #[error("secret {name:?} does not open with this manager's key: its sealed value is damaged")]
    Damaged { name: String },
}

/// One 256-bit key. `Debug` shows its id only.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretsKey {
    key: [u8; 32],
    id: String,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey").field("id", &self.id).finish()
    }
}

impl SecretsKey {
    fn from_bytes(key: [u8; 32]) -> SecretsKey {
        let mut h = Sha256::new();
        h.update(b"op-agent secrets key id\0");
        h.update(key);
        let id = hex::encode(&h.finalize()[..8]);
        SecretsKey { key, id }
    }

    /// A new random key.
    pub fn generate() -> SecretsKey {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        SecretsKey::from_bytes(key)
    }

    /// The key from its hex form (as in the key file and the join answer).
    pub fn from_hex(text: &str) -> Result<SecretsKey, String> {
        let bytes = hex::decode(text.trim()).map_err(|_| "not hex".to_string())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "not a 256-bit key (64 hex digits)".to_string())?;
        Ok(SecretsKey::from_bytes(key))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.key)
    }

    /// A 256-bit key for another purpose derived from this one (SHA-256 over a domain string,
    /// the purpose and the key): the same on every member that holds this key, and revealing
    /// nothing about it. Used for the fleet's chunk-ticket signing key (`crate::peers`).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"op-agent derived key\0");
        h.update(purpose.as_bytes());
        h.update(b"\0");
        h.update(self.key);
        h.finalize().into()
    }

    /// The key's id: the first 8 bytes of a SHA-256 of it, hex. Safe to show.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.key).into())
    }

    /// Seals `value` under this key, with `name` as associated data.
    pub fn seal(&self, name: &str, value: &str) -> SealedSecret {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            // Encryption fails only for a message beyond the cipher's limit (256 GiB).
            .unwrap_or_default();
        SealedSecret {
            key_id: self.id.clone(),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        }
    }

    /// Opens a value sealed under this key for `name`.
    pub fn open(&self, name: &str, sealed: &SealedSecret) -> Result<String, SecretError> {
        let damaged = || SecretError::Damaged {
            name: name.to_string(),
        };
        if sealed.key_id != self.id {
            return Err(SecretError::WrongKey {
                name: name.to_string(),
                key_id: sealed.key_id.clone(),
            });
        }
        let nonce = hex::decode(&sealed.nonce).map_err(|_| damaged())?;
        let ciphertext = hex::decode(&sealed.ciphertext).map_err(|_| damaged())?;
        if nonce.len() != 24 {
            return Err(damaged());
        }
        let plain = self
            .cipher()
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| damaged())?;
        String::from_utf8(plain).map_err(|_| damaged())
    }
}

/// The keys of a key file: the current one first, then the one before the last rotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<SecretsKey>,
}

impl KeyRing {
    pub fn current(&self) -> Option<&SecretsKey> {
        self.keys.first()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A ring of `keys`, the current one first; None when there are none.
    pub fn from_keys(keys: Vec<SecretsKey>) -> Option<KeyRing> {
        (!keys.is_empty()).then_some(KeyRing { keys })
    }

    /// The keys in hex, the current one first (for the peer channel).
    pub fn hex_keys(&self) -> Vec<String> {
        self.keys.iter().map(SecretsKey::to_hex).collect()
    }

    /// Opens a sealed value with whichever of our keys sealed it.
    pub fn open(&self, name: &str, sealed: &SealedSecret) -> Result<String, SecretError> {
        let Some(current) = self.current() else {
            return Err(SecretError::NoKey);
        };
        match self.keys.iter().find(|k| k.id == sealed.key_id) {
            Some(k) => k.open(name, sealed),
            None => current.open(name, sealed),
        }
    }

    /// Reads `DATA_DIR/secrets.key`; an empty ring when there is none.
    pub fn load(dir: &Path) -> Result<KeyRing, String> {
        let path = dir.join(KEY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeyRing::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                SecretsKey::from_hex(l).map_err(|e| format!("{}: a line is {e}", path.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeyRing { keys })
    }

    /// Writes the ring to `DATA_DIR/secrets.key` (mode 0600, replaced atomically).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let text: Vec<String> = self.keys.iter().map(SecretsKey::to_hex).collect();
        crate::auth::write_secret_file(&dir.join(KEY_FILE), &text.join("\n"))
    }

    /// The ring after a rotation to `key`: `key` first, the current key kept behind it.
    pub fn rotated(&self, key: SecretsKey) -> KeyRing {
        let mut keys = vec![key];
        if let Some(old) = self.current()
            && old.id != keys[0].id
        {
            keys.push(old.clone());
        }
        KeyRing { keys }
    }
}

/// This manager's secrets key(s), shared by the API, the sync handler and the raft listener.
pub struct Keeper {
    dir: PathBuf,
    ring: RwLock<KeyRing>,
    /// Every secret opened, as of a generation of the sync hub (which moves whenever a secret
    /// changes, since that changes every node's desired state): sync answers then cost no
    /// store read and no decryption. Emptied when the key changes.
    opened: std::sync::Mutex<Option<(u64, std::sync::Arc<Opened>)>>,
    /// Held while the cache is refilled, so the syncs a change wakes all at once read the store
    /// once, not once each.
    pub refill: tokio::sync::Mutex<()>,
}

/// What [`Keeper::open_many`] answers: the values, and why the others did not open.
pub type Opened = (BTreeMap<String, String>, BTreeMap<String, SecretError>);

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper")
            .field("ring", &self.ring())
            .finish_non_exhaustive()
    }
}

impl Keeper {
    /// The keeper of `dir`'s key file (which may not exist).
    pub fn open(dir: &Path) -> Result<Keeper, crate::ManagerError> {
        let ring = KeyRing::load(dir).map_err(crate::ManagerError::Config)?;
        Ok(Keeper {
            dir: dir.to_path_buf(),
            ring: RwLock::new(ring),
            opened: Default::default(),
            refill: Default::default(),
        })
    }

    pub fn ring(&self) -> KeyRing {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current key, for sealing; [`SecretError::NoKey`] without one.
    pub fn current(&self) -> Result<SecretsKey, SecretError> {
        // Read in place: every desired state sent asks (the ticket key), so no ring copy.
        self.ring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .current()
            .cloned()
            .ok_or(SecretError::NoKey)
    }

    /// Makes this member's key file hold `ring`, then uses it.
    pub fn install(&self, ring: KeyRing) -> std::io::Result<()> {
        ring.save(&self.dir)?;
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
        *self.opened.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// Every secret opened as of hub generation `generation`, if that is what is cached.
    pub fn cached(&self, generation: u64) -> Option<std::sync::Arc<Opened>> {
        match &*self.opened.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((g, opened)) if *g == generation => Some(opened.clone()),
            _ => None,
        }
    }

    /// Caches `opened` as of hub generation `generation` (read before the store was).
    pub fn cache(&self, generation: u64, opened: Opened) -> std::sync::Arc<Opened> {
        let opened = std::sync::Arc::new(opened);
        *self.opened.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, opened.clone()));
        opened
    }

    /// Opens every secret in `sealed` that `names` lists; a name it cannot open is absent from
    /// the answer, with the reason in the second map.
    pub fn open_many<'a>(
        &self,
        sealed: impl IntoIterator<Item = &'a (String, SealedSecret)>,
    ) -> (BTreeMap<String, String>, BTreeMap<String, SecretError>) {
        let ring = self.ring();
        let mut open = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for (name, s) in sealed {
            match ring.open(name, s) {
                Ok(v) => {
                    open.insert(name.clone(), v);
                }
                Err(e) => {
                    failed.insert(name.clone(), e);
                }
            }
        }
        (open, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_with_the_same_key_and_name() {
        let key = SecretsKey::generate();
        let sealed = key.seal("db/pw", "hunter2");
        assert!(!sealed.ciphertext.contains(&hex::encode("hunter2")));
        assert_eq!(key.open("db/pw", &sealed).unwrap(), "hunter2");
        // Another name (the associated data) does not open it.
        assert!(matches!(
            key.open("db/other", &sealed),
            Err(SecretError::Damaged { .. })
        ));
        // Another key does not either, even when it claims the right id.
        let other = SecretsKey::generate();
        assert!(matches!(
            other.open("db/pw", &sealed),
            Err(SecretError::WrongKey { .. })
        ));
        let forged = SealedSecret {
            key_id: other.id().to_string(),
            ..sealed.clone()
        };
        assert!(matches!(
            other.open("db/pw", &forged),
            Err(SecretError::Damaged { .. })
        ));
        // A changed byte of the ciphertext is detected.
        let mut bytes = hex::decode(&sealed.ciphertext).unwrap();
        bytes[0] ^= 1;
        let tampered = SealedSecret {
            ciphertext: hex::encode(bytes),
            ..sealed.clone()
        };
        assert!(key.open("db/pw", &tampered).is_err());
        // Two seals of one value differ (a random nonce each).
        assert_ne!(key.seal("db/pw", "hunter2"), sealed);
        assert!(!format!("{key:?}").contains(&key.to_hex()));
    }

    #[test]
    fn the_key_file_is_private_and_keeps_the_previous_key() {
        let dir = tempfile::tempdir().unwrap();
        assert!(KeyRing::load(dir.path()).unwrap().is_empty());
        let first = SecretsKey::generate();
        let ring = KeyRing::default().rotated(first.clone());
        ring.save(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = KeyRing::load(dir.path()).unwrap();
        assert_eq!(back, ring);
        let old_sealed = first.seal("a", "v1");
        let second = SecretsKey::generate();
        let rotated = back.rotated(second.clone());
        assert_eq!(rotated.current(), Some(&second));
        assert_eq!(rotated.open("a", &old_sealed).unwrap(), "v1");
        assert_eq!(rotated.open("a", &second.seal("a", "v2")).unwrap(), "v2");
        assert_eq!(
            KeyRing::default().open("a", &old_sealed),
            Err(SecretError::NoKey)
        );
    }
}
