//! Packages from peers (issue 26), agent side: checking a chunk ticket another node presents.
//!
//! An agent cannot check other nodes' credentials, so a node that wants chunks from it presents a
//! ticket its manager signed (`op_proto::chunks::Ticket`: node, package, version, expiry of
//! minutes). It is checked here with the fleet's ticket public key (ed25519, hex): the signature,
//! the expiry, and that it names the version asked for. A forgotten node gets no new tickets from
//! any manager, and the ones it holds expire.

//!
//! Serving ([`PeerShare`]): an agent with `--peer-serve true` keeps a verified copy of each package
//! version it downloaded under `STATE_DIR/peer-store/NAME/VERSION` (the archive as downloaded,
//! hashed again while it is copied, with `VERSION.json` naming its sha256 and size), deletes it
//! when the deployer no longer keeps that version, and serves its chunks on the API listener to
//! nodes that present a valid ticket, at most [`MAX_UPLOADS`] at a time and under an optional
//! byte rate (`--peer-upload-rate-limit`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use op_proto::chunks::{Ticket, TicketError};
use op_tls::bucket::TokenBucket;
use ring::signature::{ED25519, UnparsedPublicKey};
use sha2::{Digest, Sha256};

/// Chunks served to peers at the same time; more are answered 429.
pub const MAX_UPLOADS: usize = 4;

/// What an agent shares with its peers, and how.
pub struct PeerShare {
    dir: PathBuf,
    /// This agent's API base URL, as peers reach it.
    pub url: String,
    public_key: RwLock<Option<String>>,
    pub uploads: Arc<tokio::sync::Semaphore>,
    pub bucket: Option<TokenBucket>,
    pub served_bytes: AtomicU64,
    pub refused: AtomicU64,
}

impl std::fmt::Debug for PeerShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerShare").field("dir", &self.dir).finish()
    }
}

/// A version this agent holds and verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Held {
    pub sha256: String,
    pub size: u64,
}

fn safe_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

impl PeerShare {
    /// Serving from `state_dir/peer-store`, with `rate` bytes per second at most (0: no limit).
    pub fn new(state_dir: &Path, url: String, rate: u64) -> PeerShare {
        PeerShare {
            dir: state_dir.join("peer-store"),
            url,
            public_key: RwLock::new(None),
            uploads: Arc::new(tokio::sync::Semaphore::new(MAX_UPLOADS)),
            bucket: (rate > 0).then(|| TokenBucket::new(rate)),
            served_bytes: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The fleet's ticket public key, from the manager's settings (None: peer distribution off).
    pub fn set_public_key(&self, key: Option<String>) {
        *self.public_key.write().unwrap_or_else(|p| p.into_inner()) = key;
    }

    pub fn public_key(&self) -> Option<String> {
        self.public_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn paths(&self, name: &str, version: u64) -> Option<(PathBuf, PathBuf)> {
        safe_name(name).then(|| {
            let d = self.dir.join(name);
            (
                d.join(version.to_string()),
                d.join(format!("{version}.json")),
            )
        })
    }

    /// Keeps a copy of the verified download `part` as `name` `version`. The copy is hashed
    /// while it is written and kept only if it has `sha256` and `size`. Blocking.
    pub fn keep(
        &self,
        name: &str,
        version: u64,
        sha256: &str,
        size: u64,
        part: &Path,
    ) -> std::io::Result<()> {
        use std::io::{Read, Write};
        let Some((content, meta)) = self.paths(name, version) else {
            return Err(std::io::Error::other(format!("package name {name:?}")));
        };
        if self.held(name, version).is_some_and(|h| h.sha256 == sha256) {
            return Ok(());
        }
        let dir = content.parent().unwrap_or(&self.dir).to_path_buf();
        // Part of the agent's state: private like the rest of it (0700 dirs, 0600 files).
        crate::state::private_dir(&dir)?;
        let tmp = dir.join(format!(".{version}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut from = std::fs::File::open(part)?;
            let mut to = std::io::BufWriter::new(crate::state::create_private_file(&tmp)?);
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut n_total = 0u64;
            loop {
                let n = from.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                to.write_all(&buf[..n])?;
                n_total += n as u64;
            }
            to.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            let got = hex::encode(hasher.finalize());
            if got != sha256 || n_total != size {
                return Err(std::io::Error::other(format!(
                    "the copy for peers hashes to {got} ({n_total} bytes), not {sha256}"
                )));
            }
            let held = Held {
                sha256: sha256.to_string(),
                size,
            };
            crate::state::create_private_file(&meta)?
                .write_all(&serde_json::to_vec(&held).map_err(std::io::Error::other)?)?;
            std::fs::rename(&tmp, &content)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&meta);
        }
        result
    }

    /// The version `name` `version` if a verified copy is here.
    pub fn held(&self, name: &str, version: u64) -> Option<Held> {
        let (content, meta) = self.paths(name, version)?;
        let held: Held = serde_json::from_slice(&std::fs::read(meta).ok()?).ok()?;
        (std::fs::metadata(&content).ok()?.len() == held.size).then_some(held)
    }

    /// The file of a held version (check [`PeerShare::held`] first).
    pub fn content_path(&self, name: &str, version: u64) -> Option<PathBuf> {
        self.paths(name, version).map(|(c, _)| c)
    }

    /// Deletes the copies of `name` whose version `keep` rejects. Blocking.
    pub fn prune(&self, name: &str, keep: impl Fn(u64, &str) -> bool) {
        if !safe_name(name) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(self.dir.join(name)) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name();
            let Some(v) = file.to_str().and_then(|f| f.parse::<u64>().ok()) else {
                continue;
            };
            let sha = self.held(name, v).map(|h| h.sha256).unwrap_or_default();
            if !keep(v, &sha) {
                if let Some((content, meta)) = self.paths(name, v) {
                    let _ = std::fs::remove_file(content);
                    let _ = std::fs::remove_file(meta);
                }
                tracing::debug!(package = %name, version = v, "no longer kept: not served to peers");
            }
        }
    }

    pub fn count_served(&self, n: u64) {
        self.served_bytes.fetch_add(n, Ordering::Relaxed);
    }
}

/// The ticket in `encoded` if it is signed by `public_key_hex`, unexpired at `now` (unix
/// seconds) and for `package` `version`.
pub fn verify_ticket(
    public_key_hex: &str,
    encoded: &str,
    package: &str,
    version: u64,
    now: i64,
) -> Result<Ticket, TicketError> {
    let (ticket, sig) = Ticket::decode(encoded)?;
    let key = hex::decode(public_key_hex.trim()).map_err(|_| TicketError::BadSignature)?;
    UnparsedPublicKey::new(&ED25519, &key)
        .verify(&ticket.signed_bytes(), &sig)
        .map_err(|_| TicketError::BadSignature)?;
    ticket.check(package, version, now)?;
    Ok(ticket)
}

/// What the manager said about fetching a version from peers: the ticket to present, the peers
/// that hold it (nearest first) and the version's chunk list.
#[derive(Debug, Clone)]
pub struct PeerPlan {
    pub ticket: String,
    pub sources: Vec<op_proto::chunks::PeerSource>,
    pub manifest: op_proto::chunks::ChunkManifest,
    /// No peer has it yet and others fetch it from the managers: ask again after this long.
    pub wait_secs: Option<u64>,
}

/// Why a chunk did not come from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// At its upload cap (429): it frees up soon.
    Busy,
    /// It refused this node's ticket (401, 403): reported as a bad source.
    Refused(String),
    /// No answer, a broken connection, or nothing sent for `--peer-timeout`: reported, and not
    /// asked again during this download.
    Unreachable(String),
    /// Another answer (it no longer holds the version, a server error): not asked again during
    /// this download.
    Failed(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Busy => write!(f, "busy (at its upload cap)"),
            PeerError::Refused(m) | PeerError::Unreachable(m) | PeerError::Failed(m) => {
                write!(f, "{m}")
            }
        }
    }
}

/// How long a chunk waits for busy peers before it is fetched from a manager.
const BUSY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

impl PeerPlan {
    /// True when the plan describes `pkg` (same content) and names at least one peer.
    pub fn fits(&self, pkg: &op_proto::package::PackageRef) -> bool {
        !self.sources.is_empty()
            && self.manifest.sha256 == pkg.sha256
            && self.manifest.size == pkg.size
            && self.manifest.is_consistent()
    }
}

/// Where the bytes of one download came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStats {
    pub from_peers: u64,
    pub from_managers: u64,
    /// Peers that failed this download: a chunk failing its sha256, a refused ticket, no answer.
    pub bad_sources: Vec<op_proto::package::BadSource>,
}

/// The peers one download no longer asks, and the bad sources it reports.
#[derive(Default)]
struct Avoid {
    skip: std::collections::HashSet<String>,
    bad: Vec<op_proto::package::BadSource>,
}

impl Avoid {
    fn skips(&self, url: &str) -> bool {
        self.skip.contains(url)
    }

    /// Not asked again this download; with a reason, reported as a bad source too.
    fn drop_peer(&mut self, peer: &op_proto::chunks::PeerSource, reason: Option<&str>) {
        self.skip.insert(peer.url.clone());
        let Some(reason) = reason else { return };
        match self
            .bad
            .iter_mut()
            .find(|b| b.url == peer.url && b.reason == reason)
        {
            Some(b) => b.count += 1,
            None => self.bad.push(op_proto::package::BadSource {
                url: peer.url.clone(),
                node: Some(peer.node),
                reason: reason.to_string(),
                count: 1,
            }),
        }
    }
}

/// Downloads `pkg` into `part` chunk by chunk, [`PARALLEL`] chunks at a time: each from a peer
/// of `plan` (rotating over them, so the load spreads), and when peers fail, from a manager
/// through `source`. Every chunk is checked against its sha256 before it is written. A peer
/// whose chunk fails its hash, that refuses the ticket or that stops answering for `silence`
/// (`--peer-timeout`) is reported (log, metric, [`FetchStats::bad_sources`]) and not asked again
/// for this download; so a peer killed or frozen mid-serve costs at most `silence` once. The
/// whole file is then checked against the version's sha256.
pub async fn fetch_chunks(
    source: &dyn super::Source,
    pkg: &op_proto::package::PackageRef,
    part: &Path,
    plan: &PeerPlan,
    idle: std::time::Duration,
    silence: std::time::Duration,
    metrics: Option<&crate::metrics::Metrics>,
) -> Result<FetchStats, super::DeployError> {
    use futures_util::StreamExt;
    let io = |action: &'static str| {
        move |e: std::io::Error| super::DeployError::Io {
            action,
            path: part.to_path_buf(),
            source: e,
        }
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(part)
        .map_err(io("opening"))?;
    file.set_len(pkg.size).map_err(io("writing"))?;
    let file = Arc::new(file);
    let avoid = std::sync::Mutex::new(Avoid::default());
    let (peer_bytes, manager_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let count = plan.manifest.chunks.len();
    // A whole chunk from one peer, however slow, is bounded too.
    let whole = idle.max(silence);
    let results: Vec<Result<(), super::DeployError>> = futures_util::stream::iter(0..count)
        .map(|k| {
            let (file, avoid, peer_bytes, manager_bytes) =
                (file.clone(), &avoid, &peer_bytes, &manager_bytes);
            async move {
                let want = &plan.manifest.chunks[k];
                let (start, end) = plan.manifest.range(k).unwrap_or((0, 0));
                let data =
                    from_peers(source, pkg, plan, k, want, whole, silence, avoid, metrics).await;
                let bytes = match data {
                    Some(b) => {
                        peer_bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        b
                    }
                    None => {
                        let b = manager_range(source, pkg, start, end, idle).await?;
                        if hex::encode(Sha256::digest(&b)) != *want {
                            return Err(super::DeployError::Download(format!(
                                "chunk {k} from the manager fails its sha256"
                            )));
                        }
                        manager_bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        b
                    }
                };
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    file.write_all_at(&bytes, start)
                })
                .await
                .map_err(|e| super::DeployError::Task(e.to_string()))?
                .map_err(io("writing"))
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let from_peers = peer_bytes.load(Ordering::Relaxed);
    let from_managers = manager_bytes.load(Ordering::Relaxed);
    if let Some(m) = metrics {
        m.package_fetched(true, from_peers);
        m.package_fetched(false, from_managers);
    }
    let bad_sources = avoid.into_inner().unwrap_or_else(|p| p.into_inner()).bad;
    for r in results {
        r?;
    }
    file.sync_all().map_err(io("writing"))?;
    drop(file);
    // The whole file, as a download from a manager is checked.
    let p = part.to_path_buf();
    let got = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use std::io::Read;
        let mut f = std::fs::File::open(&p)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(|e| super::DeployError::Task(e.to_string()))?
    .map_err(io("reading"))?;
    if got != pkg.sha256 {
        let _ = std::fs::remove_file(part);
        return Err(super::DeployError::Checksum {
            expected: pkg.sha256.clone(),
            got,
        });
    }
    Ok(FetchStats {
        from_peers,
        from_managers,
        bad_sources,
    })
}

/// Chunk `k` (`want` its sha256) from the peers of `plan`, starting at peer `k` so the load
/// spreads; busy peers are waited for a while ([`BUSY_PATIENCE`]). None: no peer could give it
/// (then it comes from a manager).
#[allow(clippy::too_many_arguments)]
async fn from_peers(
    source: &dyn super::Source,
    pkg: &op_proto::package::PackageRef,
    plan: &PeerPlan,
    k: usize,
    want: &str,
    whole: std::time::Duration,
    silence: std::time::Duration,
    avoid: &std::sync::Mutex<Avoid>,
    metrics: Option<&crate::metrics::Metrics>,
) -> Option<bytes::Bytes> {
    let lock = || avoid.lock().unwrap_or_else(|p| p.into_inner());
    let n = plan.sources.len();
    let patience = tokio::time::Instant::now() + BUSY_PATIENCE;
    let mut round = 0u32;
    loop {
        let mut busy = false;
        for i in 0..n {
            let peer = &plan.sources[(k + i) % n];
            if lock().skips(&peer.url) {
                continue;
            }
            let got = tokio::time::timeout(
                whole,
                source.peer_chunk(&peer.url, pkg, k, &plan.ticket, silence),
            )
            .await
            .unwrap_or_else(|_| {
                Err(PeerError::Unreachable(format!(
                    "{}: no whole chunk within {} s",
                    peer.url,
                    whole.as_secs()
                )))
            });
            match got {
                Ok(bytes) if hex::encode(Sha256::digest(&bytes)) == want => return Some(bytes),
                Ok(_) => {
                    tracing::warn!(package = %pkg.name, version = pkg.version, chunk = k, peer = %peer.url, node = %peer.node, "a peer sent a chunk that fails its sha256: dropped, peer reported and not asked again");
                    if let Some(m) = metrics {
                        m.peer_bad_chunk();
                    }
                    lock().drop_peer(peer, Some("sha256"));
                }
                Err(PeerError::Busy) => busy = true,
                Err(PeerError::Refused(e)) => {
                    tracing::warn!(package = %pkg.name, version = pkg.version, chunk = k, peer = %peer.url, node = %peer.node, error = %e, "a peer refused this node's ticket: peer reported and not asked again");
                    lock().drop_peer(peer, Some("refused"));
                }
                Err(PeerError::Unreachable(e)) => {
                    tracing::warn!(package = %pkg.name, version = pkg.version, chunk = k, peer = %peer.url, node = %peer.node, error = %e, "a peer stopped answering: peer reported and not asked again; fetching from another source");
                    lock().drop_peer(peer, Some("unreachable"));
                }
                Err(PeerError::Failed(e)) => {
                    tracing::debug!(package = %pkg.name, chunk = k, peer = %peer.url, error = %e, "peer fetch failed; trying another source");
                    lock().drop_peer(peer, None);
                }
            }
        }
        // Peers at their upload cap free up soon: wait for them rather than load the managers,
        // for a while.
        if !busy || tokio::time::Instant::now() >= patience {
            return None;
        }
        round += 1;
        let ms = 100u64 * u64::from(round.min(10));
        tokio::time::sleep(std::time::Duration::from_millis(
            ms + rand::random::<u64>() % (ms + 1),
        ))
        .await;
    }
}

/// Chunks fetched at once.
pub const PARALLEL: usize = 4;

/// Bytes `start..end` of `pkg` from a manager (waiting out a busy one).
async fn manager_range(
    source: &dyn super::Source,
    pkg: &op_proto::package::PackageRef,
    start: u64,
    end: u64,
    idle: std::time::Duration,
) -> Result<bytes::Bytes, super::DeployError> {
    use futures_util::StreamExt;
    let opened = loop {
        match source.open(pkg, start).await {
            Ok(o) => break o,
            Err(super::FetchError::Busy(after)) => {
                tokio::time::sleep(super::download::busy_pause(after)).await;
            }
            Err(super::FetchError::Failed(m)) => return Err(super::DeployError::Download(m)),
        }
    };
    let mut skip = start - opened.start.min(start);
    let mut body = opened.body;
    let mut out = Vec::with_capacity((end - start) as usize);
    while (out.len() as u64) < end - start {
        let next = tokio::time::timeout(idle, body.next()).await.map_err(|_| {
            super::DeployError::Stalled {
                secs: idle.as_secs(),
            }
        })?;
        let mut piece = match next {
            None => break,
            Some(Ok(b)) => b,
            Some(Err(m)) => return Err(super::DeployError::Download(m)),
        };
        if skip > 0 {
            let s = (skip as usize).min(piece.len());
            piece = piece.slice(s..);
            skip -= s as u64;
        }
        let room = (end - start) as usize - out.len();
        out.extend_from_slice(&piece[..piece.len().min(room)]);
    }
    if (out.len() as u64) != end - start {
        return Err(super::DeployError::Download(format!(
            "the manager sent {} of {} bytes of a chunk",
            out.len(),
            end - start
        )));
    }
    Ok(bytes::Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    /// A manager with `data`, and peers that each misbehave one way (`hang` answers nothing for
    /// the whole `silence`, as a frozen peer does through the real client), or serve well.
    struct Fake {
        data: Vec<u8>,
        chunk: u64,
        calls: std::sync::Mutex<Vec<String>>,
    }

    impl super::super::Source for Fake {
        fn open<'a>(
            &'a self,
            _pkg: &'a op_proto::package::PackageRef,
            offset: u64,
        ) -> futures_util::future::BoxFuture<
            'a,
            Result<super::super::Opened, super::super::FetchError>,
        > {
            use futures_util::StreamExt;
            let body = bytes::Bytes::from(self.data[offset as usize..].to_vec());
            Box::pin(async move {
                Ok(super::super::Opened {
                    start: offset,
                    body: futures_util::stream::once(async move { Ok(body) }).boxed(),
                })
            })
        }

        fn peer_chunk<'a>(
            &'a self,
            url: &'a str,
            _pkg: &'a op_proto::package::PackageRef,
            k: usize,
            _ticket: &'a str,
            silence: std::time::Duration,
        ) -> futures_util::future::BoxFuture<'a, Result<bytes::Bytes, PeerError>> {
            self.calls.lock().unwrap().push(url.to_string());
            let (a, b) =
                op_proto::chunks::chunk_range(self.data.len() as u64, self.chunk, k).unwrap();
            let good = bytes::Bytes::from(self.data[a as usize..b as usize].to_vec());
            Box::pin(async move {
                match url {
                    "http://hang" => {
                        tokio::time::sleep(silence).await;
                        Err(PeerError::Unreachable("no answer".into()))
                    }
                    "http://refuse" => Err(PeerError::Refused("401".into())),
                    "http://corrupt" => {
                        let mut bad = good.to_vec();
                        bad[0] ^= 1;
                        Ok(bad.into())
                    }
                    _ => Ok(good),
                }
            })
        }
    }

    #[tokio::test]
    async fn bad_peers_are_reported_once_each_and_the_file_still_arrives_right() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let chunk = 1000u64;
        let chunks: Vec<String> = data
            .chunks(chunk as usize)
            .map(|c| hex::encode(Sha256::digest(c)))
            .collect();
        let pkg = op_proto::package::PackageRef {
            name: "tool".into(),
            version: 3,
            sha256: hex::encode(Sha256::digest(&data)),
            size: data.len() as u64,
            deploy_dir: String::new(),
        };
        let source = |url: &str| op_proto::chunks::PeerSource {
            node: uuid::Uuid::new_v4(),
            url: url.into(),
        };
        let plan = PeerPlan {
            ticket: "t".into(),
            sources: [
                "http://hang",
                "http://refuse",
                "http://corrupt",
                "http://good",
            ]
            .map(source)
            .to_vec(),
            manifest: op_proto::chunks::ChunkManifest {
                sha256: pkg.sha256.clone(),
                size: pkg.size,
                chunk_size: chunk,
                chunks,
            },
            wait_secs: None,
        };
        let fake = Fake {
            data: data.clone(),
            chunk,
            calls: Default::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("tool.part");
        let silence = std::time::Duration::from_millis(300);
        let started = std::time::Instant::now();
        let stats = fetch_chunks(
            &fake,
            &pkg,
            &part,
            &plan,
            std::time::Duration::from_secs(60),
            silence,
            None,
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(&part).unwrap(), data);
        assert_eq!(stats.from_peers + stats.from_managers, data.len() as u64);
        assert!(stats.from_peers > 0, "the good peer served");
        let mut reasons: Vec<(String, String, u64)> = stats
            .bad_sources
            .iter()
            .map(|b| (b.url.clone(), b.reason.clone(), b.count))
            .collect();
        reasons.sort();
        let urls: Vec<&str> = reasons.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(urls, ["http://corrupt", "http://hang", "http://refuse"]);
        let find = |u: &str| reasons.iter().find(|r| r.0 == u).unwrap().1.clone();
        assert_eq!(find("http://corrupt"), "sha256");
        assert_eq!(find("http://hang"), "unreachable");
        assert_eq!(find("http://refuse"), "refused");
        // 40 chunks, yet the silent peer was asked only by the chunks in flight when it first
        // went silent: it cost about one `silence`, not forty.
        let hung = fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|u| *u == "http://hang")
            .count();
        assert!(hung <= PARALLEL, "asked the silent peer {hung} times");
        assert!(
            started.elapsed() < silence * 20,
            "took {:?}",
            started.elapsed()
        );
    }

    fn pair(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    #[test]
    fn only_a_fresh_ticket_of_the_fleet_key_for_this_version_passes() {
        let fleet = pair(1);
        let pk = hex::encode(fleet.public_key().as_ref());
        let t = Ticket {
            node: uuid::Uuid::new_v4(),
            package: "tool".into(),
            version: 4,
            expires: 2000,
        };
        let good = t.encode(fleet.sign(&t.signed_bytes()).as_ref());
        assert_eq!(verify_ticket(&pk, &good, "tool", 4, 1999).unwrap(), t);
        assert_eq!(
            verify_ticket(&pk, &good, "tool", 4, 2000),
            Err(TicketError::Expired)
        );
        assert!(matches!(
            verify_ticket(&pk, &good, "tool", 5, 1),
            Err(TicketError::OtherVersion { .. })
        ));
        // Signed by another key.
        let forged = t.encode(pair(2).sign(&t.signed_bytes()).as_ref());
        assert_eq!(
            verify_ticket(&pk, &forged, "tool", 4, 1),
            Err(TicketError::BadSignature)
        );
        // A real signature with the ticket changed after signing (a later expiry).
        let (_, sig) = Ticket::decode(&good).unwrap();
        let longer = Ticket {
            expires: 9_999_999,
            ..t.clone()
        };
        assert_eq!(
            verify_ticket(&pk, &longer.encode(&sig), "tool", 4, 3000),
            Err(TicketError::BadSignature)
        );
        assert_eq!(
            verify_ticket(&pk, "garbage", "tool", 4, 1),
            Err(TicketError::Malformed)
        );
    }
}
