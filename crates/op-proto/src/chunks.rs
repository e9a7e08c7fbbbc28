//! Package chunks (issue 26): a version's content as a list of fixed-size pieces, each named by
//! its sha256, so that a piece fetched from any source (a manager or, later, a peer agent) can be
//! verified on its own before it is written.
//!
//! The list is derived data: every manager computes the same list from the same blob (the blob
//! is named by its sha256, the chunk size is fixed here), so it is not written through raft; a
//! manager computes it on first need and keeps it beside the blob.

use serde::{Deserialize, Serialize};

/// Size of every chunk but the last (4 MiB).
pub const CHUNK_SIZE: u64 = 4 << 20;

/// The chunk list of one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkManifest {
    /// sha256 of the whole blob.
    pub sha256: String,
    /// Bytes in the blob.
    pub size: u64,
    /// Bytes per chunk (the last one may be shorter).
    pub chunk_size: u64,
    /// sha256 (lowercase hex) of each chunk, in order.
    pub chunks: Vec<String>,
}

impl ChunkManifest {
    /// Byte range `start..end` of chunk `k`, or None past the end.
    pub fn range(&self, k: usize) -> Option<(u64, u64)> {
        chunk_range(self.size, self.chunk_size, k)
    }

    /// True when the list is consistent with its size and chunk size (a list read from disk or
    /// received over the wire is checked before use).
    pub fn is_consistent(&self) -> bool {
        self.chunk_size > 0
            && self.chunks.len() as u64 == chunk_count(self.size, self.chunk_size)
            && self
                .chunks
                .iter()
                .chain(std::iter::once(&self.sha256))
                .all(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    }
}

/// How many chunks a blob of `size` bytes has (an empty blob has none).
pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size.max(1))
}

/// Byte range `start..end` of chunk `k` of a blob of `size` bytes.
pub fn chunk_range(size: u64, chunk_size: u64, k: usize) -> Option<(u64, u64)> {
    let start = (k as u64).checked_mul(chunk_size)?;
    (start < size).then(|| (start, (start + chunk_size).min(size)))
}

/// What a chunk ticket grants: node `node` may fetch chunks of `package` version `version` from
/// peer agents until `expires` (unix seconds). Signed by the fleet's ticket key (ed25519), which
/// every manager of a cluster derives from the same secret; peers verify it with the public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub node: uuid::Uuid,
    pub package: String,
    pub version: u64,
    pub expires: i64,
}

/// Why a ticket is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("malformed ticket")]
    Malformed,
    #[error("the ticket's signature is not the fleet's")]
    BadSignature,
    #[error("the ticket expired")]
    Expired,
    #[error("the ticket is for {package} {version}, not this version")]
    OtherVersion { package: String, version: u64 },
}

impl Ticket {
    /// The bytes the signature covers (a domain string first, so a signature over anything
    /// else never passes as a ticket).
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "op-agent chunk ticket v1\n{}\n{}\n{}\n{}",
            self.node, self.package, self.version, self.expires
        )
        .into_bytes()
    }

    /// The ticket as sent in the `x-op-ticket` header: hex(JSON) "." hex(signature).
    pub fn encode(&self, signature: &[u8]) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{}.{}", to_hex(&json), to_hex(signature))
    }

    /// Splits an encoded ticket into the ticket and its signature (not yet verified).
    pub fn decode(text: &str) -> Result<(Ticket, Vec<u8>), TicketError> {
        let (body, sig) = text.trim().split_once('.').ok_or(TicketError::Malformed)?;
        let json = from_hex(body).ok_or(TicketError::Malformed)?;
        let sig = from_hex(sig).ok_or(TicketError::Malformed)?;
        let t: Ticket = serde_json::from_slice(&json).map_err(|_| TicketError::Malformed)?;
        Ok((t, sig))
    }

    /// Checks what the signature check leaves: not expired at `now`, and naming this version.
    pub fn check(&self, package: &str, version: u64, now: i64) -> Result<(), TicketError> {
        if self.expires <= now {
            return Err(TicketError::Expired);
        }
        if self.package != package || self.version != version {
            return Err(TicketError::OtherVersion {
                package: self.package.clone(),
                version: self.version,
            });
        }
        Ok(())
    }
}

/// The manager's answer to a ticket request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketGrant {
    /// The encoded ticket, for the `x-op-ticket` header.
    pub ticket: String,
    pub expires: i64,
    /// The fleet's ticket public key (ed25519, hex), to check tickets with.
    pub public_key: String,
    /// Peers that hold the version, nearest first (at most a few); empty when none do.
    #[serde(default)]
    pub sources: Vec<PeerSource>,
    /// No peer holds the version yet but a few nodes are fetching it from the managers: ask
    /// again after this many seconds, when they can serve it (instead of every node loading
    /// the managers at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_secs: Option<u64>,
}

/// A peer agent that holds a version: its node id and the base URL of its API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSource {
    pub node: uuid::Uuid,
    pub url: String,
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_blob_exactly() {
        let size = 2 * CHUNK_SIZE + 5;
        assert_eq!(chunk_count(size, CHUNK_SIZE), 3);
        assert_eq!(chunk_range(size, CHUNK_SIZE, 0), Some((0, CHUNK_SIZE)));
        assert_eq!(
            chunk_range(size, CHUNK_SIZE, 2),
            Some((2 * CHUNK_SIZE, size))
        );
        assert_eq!(chunk_range(size, CHUNK_SIZE, 3), None);
        assert_eq!(chunk_count(0, CHUNK_SIZE), 0);
        assert_eq!(chunk_count(CHUNK_SIZE, CHUNK_SIZE), 1);
        let h = "a".repeat(64);
        let m = ChunkManifest {
            sha256: h.clone(),
            size,
            chunk_size: CHUNK_SIZE,
            chunks: vec![h.clone(); 3],
        };
        assert!(m.is_consistent());
        let short = ChunkManifest {
            chunks: vec![h; 2],
            ..m
        };
        assert!(!short.is_consistent());
    }

    #[test]
    fn tickets_round_trip_and_check_expiry_and_version() {
        let t = Ticket {
            node: uuid::Uuid::nil(),
            package: "tool".into(),
            version: 7,
            expires: 1000,
        };
        let text = t.encode(&[1, 2, 255]);
        assert_eq!(Ticket::decode(&text).unwrap(), (t.clone(), vec![1, 2, 255]));
        assert_eq!(Ticket::decode("zz.00"), Err(TicketError::Malformed));
        assert_eq!(Ticket::decode("nodot"), Err(TicketError::Malformed));
        assert!(t.check("tool", 7, 999).is_ok());
        assert_eq!(t.check("tool", 7, 1000), Err(TicketError::Expired));
        assert!(matches!(
            t.check("tool", 8, 1),
            Err(TicketError::OtherVersion { .. })
        ));
    }
}
