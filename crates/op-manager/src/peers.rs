//! Packages from peers (issue 26), manager side: the chunk list of a version's blob.
//!
//! The list ([`op_proto::chunks::ChunkManifest`]) is derived from the blob alone, so it does not
//! go through raft: each manager computes it on first need (versions uploaded before chunks
//! existed included) and keeps it at `blobs/chunks/<sha256>.json`, next to the blob; every manager
//! derives the same list from the same blob. A cached list is checked against its blob's hash and
//! size when read, and recomputed when it does not match; GC deletes lists whose blob is gone.
//!
//! Chunk tickets: a node that wants chunks from peer agents asks its manager for a ticket
//! ([`op_proto::chunks::Ticket`]: node, package, version, expiry of [`TICKET_TTL_SECS`]) signed
//! with the fleet's ed25519 key. That key is derived from the cluster's secrets key
//! ([`crate::secrets::SecretsKey::derive`]), so every member that holds the secrets key signs with
//! the same key and nothing new is stored; the private half is never written or shown, only the
//! public half is handed out. A forgotten node's credential is gone, so it gets no new tickets,
//! and the ones it had expire within minutes. Rotating the secrets key rotates the ticket key.

use std::io::Read;
use std::path::{Path, PathBuf};

use op_proto::chunks::{CHUNK_SIZE, ChunkManifest};
use sha2::{Digest, Sha256};

use crate::blobs::BlobStore;
use crate::secrets::SecretsKey;

/// How long a chunk ticket is good for.
pub const TICKET_TTL_SECS: i64 = 300;

/// The fleet's ticket signing key, derived from the secrets key.
pub struct TicketSigner {
    pair: ring::signature::Ed25519KeyPair,
}

impl TicketSigner {
    pub fn from_secrets_key(key: &SecretsKey) -> TicketSigner {
        let seed = key.derive("chunk tickets ed25519");
        // A 32-byte seed always makes a key pair.
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .expect("a 32-byte ed25519 seed");
        TicketSigner { pair }
    }

    /// The public key, hex (safe to show and to send to agents).
    pub fn public_key(&self) -> String {
        use ring::signature::KeyPair;
        hex::encode(self.pair.public_key().as_ref())
    }

    /// `ticket`, encoded with its signature.
    pub fn sign(&self, ticket: &op_proto::chunks::Ticket) -> String {
        let sig = self.pair.sign(&ticket.signed_bytes());
        ticket.encode(sig.as_ref())
    }
}

/// Where the chunk list of blob `sha256` is kept.
pub fn manifest_path(blobs: &BlobStore, sha256: &str) -> PathBuf {
    chunks_dir(blobs).join(format!("{sha256}.json"))
}

pub fn chunks_dir(blobs: &BlobStore) -> PathBuf {
    let blob = blobs.path("x");
    blob.parent()
        .map(|d| d.join("chunks"))
        .unwrap_or_else(|| PathBuf::from("chunks"))
}

/// Reads the blob at `blob` (named `sha256`) in chunks of [`CHUNK_SIZE`] and hashes each, and the
/// whole. Blocking. Fails when the content does not hash to `sha256` (a damaged blob must not be
/// described as if it were right).
pub fn compute(blob: &Path, sha256: &str) -> std::io::Result<ChunkManifest> {
    let mut file = std::fs::File::open(blob)?;
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let mut part = Sha256::new();
        let mut in_chunk = 0u64;
        while in_chunk < CHUNK_SIZE {
            let want = (CHUNK_SIZE - in_chunk).min(buf.len() as u64) as usize;
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            part.update(&buf[..n]);
            whole.update(&buf[..n]);
            in_chunk += n as u64;
        }
        if in_chunk == 0 {
            break;
        }
        size += in_chunk;
        chunks.push(hex::encode(part.finalize()));
        if in_chunk < CHUNK_SIZE {
            break;
        }
    }
    let got = hex::encode(whole.finalize());
    if got != sha256 {
        return Err(std::io::Error::other(format!(
            "blob {sha256} on disk hashes to {got}: damaged, not describing it"
        )));
    }
    Ok(ChunkManifest {
        sha256: sha256.to_string(),
        size,
        chunk_size: CHUNK_SIZE,
        chunks,
    })
}

/// The chunk list of blob `sha256` whose file is `blob`: the cached one when it matches the
/// blob's size, else computed and cached (written to a temp file and renamed, so a reader never
/// sees half a list). Blocking.
pub fn load_or_compute(
    blobs: &BlobStore,
    blob: &Path,
    sha256: &str,
) -> std::io::Result<ChunkManifest> {
    let path = manifest_path(blobs, sha256);
    let size = std::fs::metadata(blob)?.len();
    if let Ok(text) = std::fs::read(&path)
        && let Ok(m) = serde_json::from_slice::<ChunkManifest>(&text)
        && m.sha256 == sha256
        && m.size == size
        && m.chunk_size == CHUNK_SIZE
        && m.is_consistent()
    {
        return Ok(m);
    }
    let m = compute(blob, sha256)?;
    let dir = chunks_dir(blobs);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{sha256}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(&m).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(m)
}

/// Deletes the chunk lists of blobs that are no longer here. Blocking; returns how many.
pub fn gc(blobs: &BlobStore) -> std::io::Result<u64> {
    let dir = chunks_dir(blobs);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut deleted = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(sha) = name.strip_suffix(".json") else {
            continue;
        };
        if crate::blobs::is_blob_name(sha) && !blobs.has(sha) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(content: &[u8]) -> (tempfile::TempDir, BlobStore, PathBuf, String) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs")).unwrap();
        let sha = hex::encode(Sha256::digest(content));
        let path = blobs.path(&sha);
        std::fs::write(&path, content).unwrap();
        (dir, blobs, path, sha)
    }

    #[test]
    fn the_list_matches_the_content_is_cached_and_collected() {
        let content: Vec<u8> = (0..(CHUNK_SIZE as usize * 2 + 1000))
            .map(|i| (i % 251) as u8)
            .collect();
        let (_dir, blobs, path, sha) = store_with(&content);
        let m = load_or_compute(&blobs, &path, &sha).unwrap();
        assert_eq!((m.size, m.chunks.len()), (content.len() as u64, 3));
        for (k, h) in m.chunks.iter().enumerate() {
            let (a, b) = m.range(k).unwrap();
            assert_eq!(
                *h,
                hex::encode(Sha256::digest(&content[a as usize..b as usize]))
            );
        }
        assert!(manifest_path(&blobs, &sha).is_file());
        // A cached list that does not fit the blob is recomputed, never trusted.
        std::fs::write(manifest_path(&blobs, &sha), b"{\"garbage\":1}").unwrap();
        assert_eq!(load_or_compute(&blobs, &path, &sha).unwrap(), m);
        // Gone blob, gone list.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(gc(&blobs).unwrap(), 1);
        assert!(!manifest_path(&blobs, &sha).exists());
    }

    #[test]
    fn every_member_with_the_secrets_key_signs_alike_and_only_that_key_verifies() {
        use op_proto::chunks::Ticket;
        use ring::signature::{ED25519, UnparsedPublicKey};
        let key = SecretsKey::generate();
        let a = TicketSigner::from_secrets_key(&key);
        let b = TicketSigner::from_secrets_key(&SecretsKey::from_hex(&key.to_hex()).unwrap());
        assert_eq!(a.public_key(), b.public_key());
        let t = Ticket {
            node: uuid::Uuid::new_v4(),
            package: "tool".into(),
            version: 3,
            expires: 1,
        };
        let (back, sig) = Ticket::decode(&a.sign(&t)).unwrap();
        let pk = hex::decode(a.public_key()).unwrap();
        assert!(
            UnparsedPublicKey::new(&ED25519, &pk)
                .verify(&back.signed_bytes(), &sig)
                .is_ok()
        );
        let other = TicketSigner::from_secrets_key(&SecretsKey::generate());
        assert_ne!(other.public_key(), a.public_key());
        let (_, forged) = Ticket::decode(&other.sign(&t)).unwrap();
        assert!(
            UnparsedPublicKey::new(&ED25519, &pk)
                .verify(&t.signed_bytes(), &forged)
                .is_err()
        );
        // The public key is not the secrets key nor shows it.
        assert!(!a.public_key().contains(&key.to_hex()[..16]));
    }

    #[test]
    fn a_damaged_blob_gets_no_list() {
        let (_dir, blobs, path, sha) = store_with(b"hello chunks");
        std::fs::write(&path, b"hellO chunks").unwrap();
        let err = load_or_compute(&blobs, &path, &sha).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        assert!(!manifest_path(&blobs, &sha).exists());
    }
}
