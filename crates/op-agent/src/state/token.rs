//! The generated API token.
//!
//! Every endpoint but `/healthz` needs a credential (DESIGN.md section 9). When the operator
//! configured none, the agent does not run open: it creates a random bearer token once, stores it
//! in `STATE_DIR/api-token` readable by its owner only, and logs where it is.

use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::error::AgentError;

pub const FILE: &str = "api-token";

/// Returns the stored token, creating it on first use, and the file it lives in.
pub fn ensure(dir: &Path) -> Result<(String, PathBuf), AgentError> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_string(), path)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(AgentError::io("reading", path, e)),
    }
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    super::desired::write_atomic_mode(&path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok((token, path))
}

#[cfg(test)]
mod tests {
    #[test]
    fn created_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, path) = super::ensure(dir.path()).unwrap();
        let (b, _) = super::ensure(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 48);
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
