//! Packages from peers (issue 26), manager side: chunk tickets and the sources named with them.
//! (The chunk list of a version's blob is `crate::blobs::chunks`.)
//!
//! Chunk tickets: a node that wants chunks from peer agents asks its manager for a ticket
//! ([`op_proto::chunks::Ticket`]: node, package, version, expiry of [`TICKET_TTL_SECS`]) signed
//! with the fleet's ed25519 key. That key is derived from the cluster's secrets key
//! ([`crate::secrets::SecretsKey::derive`]), so every member that holds the secrets key signs with
//! the same key and nothing new is stored; the private half is never written or shown, only the
//! public half is handed out. A forgotten node's credential is gone, so it gets no new tickets,
//! and the ones it had expire within minutes. Rotating the secrets key rotates the ticket key.
//!
//! Sources: [`PeerDirectory`] (where agents serve, which versions they hold, seeds of versions
//! nobody holds yet) and [`choose`] (same rack, then nearest address, ties shuffled).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// The ticket key's public half, kept for the secrets key it was derived from: every desired
/// state carries it (`AgentSettings::ticket_public_key`), and deriving an ed25519 key pair was
/// a sixth of the manager's CPU per answer (issue 25, perf at 5,000 agents).
#[derive(Default)]
pub struct TicketPublicKey(Mutex<Option<(SecretsKey, String)>>);

impl TicketPublicKey {
    /// The public key of the ticket key derived from `key`, hex.
    pub fn of(&self, key: &SecretsKey) -> String {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, public)) = memo.as_ref()
            && k == key
        {
            return public.clone();
        }
        let public = TicketSigner::from_secrets_key(key).public_key();
        *memo = Some((key.clone(), public.clone()));
        public
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
    /// Which nodes syncing with this member last reported which versions installed: the index a
    /// ticket request reads instead of the whole node list.
    held: Mutex<Held>,
    /// Per version, the nodes told to fetch it from the managers while no peer held it.
    seeding: Mutex<HashMap<(String, u64), Seeds>>,
}

/// Per version the nodes that report it installed, and per node what it reported and when.
#[derive(Default)]
struct Held {
    by_version: HashMap<(String, u64), std::collections::HashSet<uuid::Uuid>>,
    by_node: HashMap<uuid::Uuid, (Vec<(String, u64)>, Instant)>,
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

    /// Records the versions `node` reports installed in its heartbeat (`packages`).
    pub fn record_installed(
        &self,
        node: uuid::Uuid,
        packages: &[op_proto::package::InstalledPackage],
    ) {
        let now: Vec<(String, u64)> = packages
            .iter()
            .filter(|p| p.state == op_proto::package::PackageState::Installed && p.version > 0)
            .map(|p| (p.name.clone(), p.version))
            .collect();
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let h = &mut *h;
        let before = h.by_node.remove(&node).map(|(v, _)| v).unwrap_or_default();
        for key in before.iter().filter(|k| !now.contains(k)) {
            if let Some(set) = h.by_version.get_mut(key) {
                set.remove(&node);
                if set.is_empty() {
                    h.by_version.remove(key);
                }
            }
        }
        for key in &now {
            h.by_version.entry(key.clone()).or_default().insert(node);
        }
        if !now.is_empty() {
            h.by_node.insert(node, (now, Instant::now()));
        }
        // Nodes gone silent (forgotten, moved to another member) leave the index in time.
        if h.by_node.len() > 64 && rand::random::<u8>() == 0 {
            let stale: Vec<uuid::Uuid> = h
                .by_node
                .iter()
                .filter(|(_, (_, at))| at.elapsed() >= PEER_FRESH * 4)
                .map(|(n, _)| *n)
                .collect();
            for n in stale {
                if let Some((keys, _)) = h.by_node.remove(&n) {
                    for key in keys {
                        if let Some(set) = h.by_version.get_mut(&key) {
                            set.remove(&n);
                            if set.is_empty() {
                                h.by_version.remove(&key);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The nodes heard of lately that report `name` `version` installed.
    pub fn holders(&self, name: &str, version: u64) -> Vec<uuid::Uuid> {
        let h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        h.by_version
            .get(&(name.to_string(), version))
            .map(|set| {
                set.iter()
                    .filter(|n| {
                        h.by_node
                            .get(n)
                            .is_some_and(|(_, at)| at.elapsed() < PEER_FRESH)
                    })
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_public_key_follows_the_secrets_key() {
        let memo = TicketPublicKey::default();
        let (a, b) = (SecretsKey::generate(), SecretsKey::generate());
        let of_a = TicketSigner::from_secrets_key(&a).public_key();
        assert_eq!(memo.of(&a), of_a);
        assert_eq!(memo.of(&a), of_a);
        // A rotated key gives its own public key, not the kept one.
        assert_eq!(memo.of(&b), TicketSigner::from_secrets_key(&b).public_key());
        assert_ne!(memo.of(&b), of_a);
        assert_eq!(memo.of(&a), of_a);
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
    fn the_holders_index_follows_what_each_node_last_reported() {
        use op_proto::package::{InstalledPackage, PackageState};
        let pkg = |name: &str, version: u64, state: PackageState| InstalledPackage {
            name: name.into(),
            version,
            sha256: String::new(),
            state,
            target_version: None,
            error: None,
            fetched: None,
        };
        let d = PeerDirectory::default();
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        d.record_installed(a, &[pkg("p", 1, PackageState::Installed)]);
        d.record_installed(
            b,
            &[
                pkg("p", 1, PackageState::Installed),
                pkg("q", 3, PackageState::Downloading),
            ],
        );
        let mut both = d.holders("p", 1);
        both.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(both, want);
        assert!(d.holders("q", 3).is_empty(), "downloading is not holding");
        // a moves to version 2: it no longer holds 1.
        d.record_installed(a, &[pkg("p", 2, PackageState::Installed)]);
        assert_eq!(d.holders("p", 1), vec![b]);
        assert_eq!(d.holders("p", 2), vec![a]);
        d.record_installed(b, &[]);
        assert!(d.holders("p", 1).is_empty());
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
}
