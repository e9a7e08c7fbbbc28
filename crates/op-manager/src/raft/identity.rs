//! Which cluster a data directory belongs to, and as which node: `DATA_DIR/cluster.json`
//! (`{"cluster_id": ..., "node_id": ...}`) and `DATA_DIR/cluster.secret` (mode 0600), the secret
//! every raft RPC must present.
//!
//! The identity is written once, before raft first starts on the directory: by a new cluster's
//! first node (fresh id and secret), or by a joining node from what the member it asked answered.
//! From then on the node id comes from here, not from flags, so a restart with another
//! `--node-id` cannot turn a member into a stranger with the same log. `op-manager recover`
//! replaces the secret (so lost members that come back cannot reach the recovered node).

use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::ManagerError;

/// File names inside the data dir.
pub const IDENTITY_FILE: &str = "cluster.json";
pub const SECRET_FILE: &str = "cluster.secret";

/// This node's place in its cluster.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub cluster_id: String,
    pub node_id: u64,
    /// Shared by every member; never logged.
    #[serde(skip)]
    pub secret: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path, source: std::io::Error) -> ManagerError {
    ManagerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A new random cluster secret (256 bits, hex).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Identity {
    /// A new cluster whose first node is `node_id`.
    pub fn new_cluster(node_id: u64) -> Identity {
        Identity {
            cluster_id: uuid::Uuid::new_v4().to_string(),
            node_id,
            secret: new_secret(),
        }
    }

    /// Reads the identity of `dir`; None when the directory has none yet.
    pub fn load(dir: &Path) -> Result<Option<Identity>, ManagerError> {
        let path = dir.join(IDENTITY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, e)),
        };
        let mut identity: Identity = serde_json::from_str(&text).map_err(|e| {
            ManagerError::Config(format!("{}: not a cluster identity: {e}", path.display()))
        })?;
        let secret_path = dir.join(SECRET_FILE);
        identity.secret = std::fs::read_to_string(&secret_path)
            .map_err(|e| io_err(&secret_path, e))?
            .trim()
            .to_string();
        if identity.secret.len() < 32 {
            return Err(ManagerError::Config(format!(
                "{}: the cluster secret is too short (at least 32 characters)",
                secret_path.display()
            )));
        }
        Ok(Some(identity))
    }

    /// Writes the secret, then `cluster.json` (the file whose presence means "initialized").
    pub fn save(&self, dir: &Path) -> Result<(), ManagerError> {
        let secret_path = dir.join(SECRET_FILE);
        crate::auth::write_secret_file(&secret_path, &self.secret)
            .map_err(|e| io_err(&secret_path, e))?;
        let path = dir.join(IDENTITY_FILE);
        let tmp: PathBuf = dir.join(format!("{IDENTITY_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(self).map_err(|e| {
            ManagerError::Config(format!("cannot encode the cluster identity: {e}"))
        })?;
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_without_leaking_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Identity::load(dir.path()).unwrap().is_none());
        let id = Identity::new_cluster(3);
        id.save(dir.path()).unwrap();
        let back = Identity::load(dir.path()).unwrap().unwrap();
        assert_eq!(back, id);
        let json = std::fs::read_to_string(dir.path().join(IDENTITY_FILE)).unwrap();
        assert!(!json.contains(&id.secret), "{json}");
        assert!(!format!("{id:?}").contains(&id.secret));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
