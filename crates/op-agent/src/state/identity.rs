//! The node's identity: the guard that refuses to start when it was lost, the explicit reset
//! (`op-agent reset-identity`), and the machine id sent at registration.
//!
//! The identity is the node id in `agent.db`, with the credential the manager issued for it
//! (`node.token`) and the once-job ledger beside it. If `agent.db` vanishes (deleted, truncated,
//! unreadable) while `node.token` remains, starting anyway
//! would make a new node that holds another node's credential (the manager refuses it forever)
//! and has forgotten which once-jobs it ran. So [`check`] stops the start with an error naming
//! [`reset`]'s command, and enrolling as a new node is the operator's decision.
//!
//! After a reset, the next registration carries [`IdentityReset`] (from the marker file
//! [`RESET_FILE`]) and the machine id: the manager retires the node this host was (same
//! hostname and machine id) and hands its once-job history back, which the link writes into the
//! ledger before any once-job can run. A clone gets a new machine id (or hostname) and so starts
//! with no history and retires nothing.

use std::path::{Path, PathBuf};

use op_proto::agent::IdentityReset;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::DB_FILE;
use crate::error::AgentError;

/// The node's own credential, issued by a manager at enrollment (mode 0600). The link reads and
/// writes it; it lives here because it is half of the identity [`check`] guards.
pub const NODE_TOKEN_FILE: &str = "node.token";

/// Written by [`reset`], removed after the first registration that carried it.
pub const RESET_FILE: &str = "identity-reset.json";

/// Why the identity in `dir` cannot be used, if it cannot: `agent.db` is missing, empty,
/// unreadable or holds no node id while the state dir shows the host was a node.
pub fn check(dir: &Path) -> Result<(), AgentError> {
    let Some(evidence) = enrolled_evidence(dir) else {
        return Ok(());
    };
    let path = dir.join(DB_FILE);
    let problem = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "is missing".to_string(),
        Err(e) => format!("cannot be read ({e})"),
        Ok(m) if m.len() == 0 => "is empty".to_string(),
        Ok(_) => match stored_node_id(&path) {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => "holds no node id".to_string(),
            Err(e) => format!("cannot be read ({e})"),
        },
    };
    Err(AgentError::IdentityLost {
        db: path,
        problem,
        evidence,
        state_dir: dir.to_path_buf(),
    })
}

/// What shows that this state dir belonged to an enrolled node, if anything does: the node's
/// credential. (An agent syncs only once enrolled, so a job set cached from a manager always
/// comes with one.)
fn enrolled_evidence(dir: &Path) -> Option<String> {
    let token = dir.join(NODE_TOKEN_FILE);
    std::fs::read_to_string(&token)
        .is_ok_and(|t| !t.trim().is_empty())
        .then(|| format!("{} (the node's credential)", token.display()))
}

/// The node id stored in the database at `path`, read without creating or changing anything.
fn stored_node_id(path: &Path) -> rusqlite::Result<Option<Uuid>> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let id: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(id.and_then(|s| Uuid::parse_str(&s).ok()))
}

/// What [`reset`] did, for the operator.
#[derive(Debug, Default)]
pub struct ResetReport {
    /// The node id of the old state, when it could be read.
    pub previous_node_id: Option<Uuid>,
    pub removed: Vec<PathBuf>,
}

/// `op-agent reset-identity`. Removes the node's identity and what belongs to it: `agent.db`
/// (node id, run history and undelivered outbox, once-job ledger, directives taken) with its WAL
/// files, `node.token` (the old node's credential) and `desired.json` (the old node's job set,
/// which may hold once-jobs it ran). Keeps `api-token`, `logs/` and the deploy dir. Writes
/// [`RESET_FILE`], so the next start enrolls as a new node that the manager links to the node
/// this host was. Run it only while the agent is stopped.
pub fn reset(dir: &Path) -> Result<ResetReport, AgentError> {
    if !dir.is_dir() {
        return Err(AgentError::Config(format!(
            "state dir {} does not exist",
            dir.display()
        )));
    }
    let db = dir.join(DB_FILE);
    let previous_node_id = stored_node_id(&db).ok().flatten();
    let mut report = ResetReport {
        previous_node_id,
        removed: Vec::new(),
    };
    // The marker first: if the removal stops half-way, running the command again finishes it,
    // and a start in between is refused by `check` or enrolls with the marker.
    let marker = IdentityReset { previous_node_id };
    let text = serde_json::to_vec(&marker).map_err(|e| AgentError::Task(e.to_string()))?;
    super::desired::write_atomic_mode(&dir.join(RESET_FILE), &text, 0o600)?;
    let wal = |suffix: &str| {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    for path in [
        dir.join(NODE_TOKEN_FILE),
        dir.join(super::desired::FILE),
        wal("-wal"),
        wal("-shm"),
        db.clone(),
    ] {
        match std::fs::remove_file(&path) {
            Ok(()) => report.removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AgentError::io("removing", path, e)),
        }
    }
    Ok(report)
}

/// The reset the next registration must announce, if [`reset`] ran and no registration took it
/// yet.
pub fn pending_reset(dir: &Path) -> Result<Option<IdentityReset>, AgentError> {
    let path = dir.join(RESET_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AgentError::Corrupt {
                path,
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::io("reading", path, e)),
    }
}

/// Forgets the reset marker once a registration carried it.
pub fn reset_announced(dir: &Path) {
    let path = dir.join(RESET_FILE);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove the identity reset marker");
    }
}

/// This host's machine id as the manager sees it: a hash of `/etc/machine-id` specific to
/// op-agent (the id itself is meant to stay private), empty when the host has none.
pub fn machine_id() -> String {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .map(|id| app_specific(&id))
        .unwrap_or_default()
}

fn app_specific(id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"op-agent machine id\0");
    h.update(id.as_bytes());
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;

    #[test]
    fn a_fresh_dir_and_a_standalone_dir_start() {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path()).unwrap();
        StateStore::open(dir.path(), 10, 1 << 20).unwrap();
        std::fs::remove_file(dir.path().join(DB_FILE)).unwrap();
        // No credential, no managed job set: nothing to lose.
        check(dir.path()).unwrap();
    }

    #[test]
    fn a_lost_database_beside_a_credential_is_refused_until_reset() {
        let dir = tempfile::tempdir().unwrap();
        let id = StateStore::open(dir.path(), 10, 1 << 20)
            .unwrap()
            .node_id()
            .unwrap();
        std::fs::write(dir.path().join(NODE_TOKEN_FILE), "id.secret\n").unwrap();
        check(dir.path()).unwrap();

        std::fs::write(dir.path().join(DB_FILE), b"").unwrap();
        let err = check(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        assert!(err.contains("op-agent reset-identity --state-dir"), "{err}");
        std::fs::write(dir.path().join(DB_FILE), vec![0u8; 8192]).unwrap();
        let err = check(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{err}");
        std::fs::remove_file(dir.path().join(DB_FILE)).unwrap();
        let err = check(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is missing"), "{err}");
        assert!(StateStore::open(dir.path(), 10, 1 << 20).is_err());

        let report = reset(dir.path()).unwrap();
        assert_eq!(report.previous_node_id, None);
        check(dir.path()).unwrap();
        assert!(!dir.path().join(NODE_TOKEN_FILE).exists());
        let fresh = StateStore::open(dir.path(), 10, 1 << 20)
            .unwrap()
            .node_id()
            .unwrap();
        assert_ne!(fresh, id);
        assert_eq!(
            pending_reset(dir.path()).unwrap(),
            Some(IdentityReset::default())
        );
        reset_announced(dir.path());
        assert_eq!(pending_reset(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_reset_of_a_readable_state_names_the_old_node() {
        let dir = tempfile::tempdir().unwrap();
        let id = StateStore::open(dir.path(), 10, 1 << 20)
            .unwrap()
            .node_id()
            .unwrap();
        let report = reset(dir.path()).unwrap();
        assert_eq!(report.previous_node_id, Some(id));
        assert_eq!(
            pending_reset(dir.path()).unwrap().unwrap().previous_node_id,
            Some(id)
        );
    }

    #[test]
    fn the_machine_id_is_never_sent_as_is() {
        let m = app_specific("0123456789abcdef0123456789abcdef");
        assert_eq!(m.len(), 32);
        assert!(!m.contains("0123456789abcdef"));
    }
}
