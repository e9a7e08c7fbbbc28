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

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Most peers named in one ticket answer.
pub const MAX_SOURCES: usize = 4;

/// A peer URL not heard of for this long is not handed out.
const PEER_FRESH: Duration = Duration::from_secs(120);

/// Where the agents that sync with this member serve chunks (`Heartbeat::peer_url`), as their
/// heartbeats last said. In memory only: a member names as sources the agents that sync with
/// it (an agent switching members is known again at its first sync there).
#[derive(Default)]
pub struct PeerDirectory {
    urls: Mutex<HashMap<uuid::Uuid, (String, Instant)>>,
    /// Per version, the nodes told to fetch it from the managers while no peer held it.
    seeding: Mutex<HashMap<(String, u64), Seeds>>,
}

/// The nodes fetching one version from the managers, and since when.
type Seeds = Vec<(uuid::Uuid, Instant)>;

/// Nodes that fetch a version no peer holds yet from the managers at once; the others wait.
pub const MAX_SEEDS: usize = 2;
/// A seed that has not finished in this long no longer holds others back.
const SEED_WINDOW: Duration = Duration::from_secs(60);
/// How long a node waits before asking again while seeds fetch.
pub const SEED_WAIT_SECS: u64 = 2;

impl PeerDirectory {
    /// Records (or, with None, forgets) where `node` serves.
    pub fn record(&self, node: uuid::Uuid, url: Option<&str>) {
        let mut m = self.urls.lock().unwrap_or_else(|p| p.into_inner());
        match url {
            Some(u) => {
                m.insert(node, (u.to_string(), Instant::now()));
            }
            None => {
                m.remove(&node);
            }
        }
        if m.len() > 64 && rand::random::<u8>() == 0 {
            m.retain(|_, (_, at)| at.elapsed() < PEER_FRESH * 4);
        }
    }

    /// For `node` asking for `name` `version` that no peer holds: None when it should fetch
    /// from the managers (it is one of the first [`MAX_SEEDS`]), else how long to wait. Seeds
    /// in `holders` (they have it now, yet serve nobody) no longer hold others back.
    pub fn seed_or_wait(
        &self,
        node: uuid::Uuid,
        name: &str,
        version: u64,
        holders: &[uuid::Uuid],
    ) -> Option<u64> {
        let mut m = self.seeding.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, seeds| {
            seeds.retain(|(_, at)| at.elapsed() < SEED_WINDOW);
            !seeds.is_empty()
        });
        let seeds = m.entry((name.to_string(), version)).or_default();
        seeds.retain(|(n, _)| !holders.contains(n));
        if seeds.iter().any(|(n, _)| *n == node) || seeds.len() < MAX_SEEDS {
            if !seeds.iter().any(|(n, _)| *n == node) {
                seeds.push((node, Instant::now()));
            }
            None
        } else {
            Some(SEED_WAIT_SECS)
        }
    }

    /// Where `node` serves, if heard of lately.
    pub fn url(&self, node: uuid::Uuid) -> Option<String> {
        let m = self.urls.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&node)
            .filter(|(_, at)| at.elapsed() < PEER_FRESH)
            .map(|(u, _)| u.clone())
    }
}

/// Bits two addresses share from the left (0 across families).
pub fn common_prefix(a: IpAddr, b: IpAddr) -> u32 {
    match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) => (u32::from(x) ^ u32::from(y)).leading_zeros(),
        (IpAddr::V6(x), IpAddr::V6(y)) => (u128::from(x) ^ u128::from(y)).leading_zeros(),
        _ => 0,
    }
}

/// A candidate source: node, its URL, its rack label and addresses.
pub struct Candidate {
    pub node: uuid::Uuid,
    pub url: String,
    pub rack: Option<String>,
    pub ips: Vec<IpAddr>,
}

/// Picks at most [`MAX_SOURCES`] of `candidates` for a node in `rack` with addresses `ips`: the
/// same rack first, then the longest common address prefix; ties in random order, so load
/// spreads over equally near peers.
pub fn choose(
    rack: Option<&str>,
    ips: &[IpAddr],
    mut candidates: Vec<Candidate>,
) -> Vec<Candidate> {
    use rand::seq::SliceRandom;
    candidates.shuffle(&mut rand::rng());
    let score = |c: &Candidate| {
        let same_rack = rack.is_some() && c.rack.as_deref() == rack;
        let prefix = c
            .ips
            .iter()
            .flat_map(|a| ips.iter().map(move |b| common_prefix(*a, *b)))
            .max()
            .unwrap_or(0);
        (same_rack, prefix)
    };
    // Stable sort: equal scores keep their shuffled order.
    candidates.sort_by_key(|c| std::cmp::Reverse(score(c)));
    candidates.truncate(MAX_SOURCES);
    candidates
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
    fn sources_prefer_the_rack_then_the_nearest_address_and_are_few() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cand = |n: u128, rack: Option<&str>, addr: &str| Candidate {
            node: uuid::Uuid::from_u128(n),
            url: format!("http://{addr}:7070"),
            rack: rack.map(str::to_string),
            ips: vec![ip(addr)],
        };
        let picked = choose(
            Some("r1"),
            &[ip("10.1.2.3")],
            vec![
                cand(1, Some("r2"), "10.1.2.4"),
                cand(2, Some("r1"), "10.9.0.1"),
                cand(3, None, "10.1.9.9"),
                cand(4, None, "192.168.0.1"),
                cand(5, None, "10.1.2.200"),
                cand(6, None, "172.16.0.1"),
            ],
        );
        let ids: Vec<u128> = picked.iter().map(|c| c.node.as_u128()).collect();
        assert_eq!(ids, vec![2, 1, 5, 3]);
        assert_eq!(common_prefix(ip("10.0.0.0"), ip("10.0.0.1")), 31);
        assert_eq!(common_prefix(ip("10.0.0.1"), ip("::1")), 0);
    }

    #[test]
    fn a_few_nodes_seed_a_version_the_others_wait_until_they_hold_it() {
        let d = PeerDirectory::default();
        let ids: Vec<uuid::Uuid> = (0..4).map(|_| uuid::Uuid::new_v4()).collect();
        assert_eq!(d.seed_or_wait(ids[0], "p", 1, &[]), None);
        assert_eq!(d.seed_or_wait(ids[1], "p", 1, &[]), None);
        assert_eq!(d.seed_or_wait(ids[2], "p", 1, &[]), Some(SEED_WAIT_SECS));
        // A seed asking again stays a seed; another version has its own seeds.
        assert_eq!(d.seed_or_wait(ids[0], "p", 1, &[]), None);
        assert_eq!(d.seed_or_wait(ids[3], "p", 2, &[]), None);
        // A seed that holds it (yet serves nobody) lets the next one fetch.
        assert_eq!(d.seed_or_wait(ids[2], "p", 1, &[ids[0]]), None);
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
