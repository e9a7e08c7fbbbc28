//! Talking to peer managers: JSON over HTTP to each peer's `raft_addr`. [`Peers`] is the one
//! HTTP client for everything a manager asks another (openraft's append/vote/snapshot RPCs,
//! forwarded writes, read barriers, membership changes, blobs); it stamps every request with
//! this cluster's id, this node's id and the cluster secret. [`Network`] adapts it to openraft.
//!
//! With TLS on, the transport is mutual TLS: [`http_client`] trusts only the peer CA and presents
//! this manager's certificate, and the raft listener requires a certificate from that CA.
//! Peers reach only this listener; agents and the CLI never do (invariant 4).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use op_proto::ErrorBody;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{LogId, Vote};
use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::log_store::Encoded;
use super::messages::{CLUSTER_HEADER, NODE_HEADER, code};
use super::types::{Member, NodeId, TypeConfig};

/// Largest raft RPC body accepted: a batch of large run records, or a JSON-encoded snapshot chunk.
pub const RAFT_BODY_LIMIT: usize = 256 << 20;

/// How often the same refusal by the same peer is logged (raft retries many times a second).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(30);

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection: the request was not sent, so it is safe to send again.
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    /// Sent, but no complete answer: the request may or may not have taken effect.
    #[error("{url}: no answer: {message}")]
    NoAnswer { url: String, message: String },
    /// The peer answered with an error.
    #[error("{url}: {} ({})", .body.message, .body.code)]
    Refused {
        url: String,
        status: u16,
        body: ErrorBody,
    },
}

impl PeerError {
    /// The peer's error code, when it answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            PeerError::Refused { body, .. } => Some(&body.code),
            _ => None,
        }
    }
}

/// The HTTP client for peer requests, with this node's credentials.
#[derive(Clone)]
pub struct Peers {
    http: reqwest::Client,
    cluster_id: String,
    secret: String,
    node_id: NodeId,
    /// Set when a peer refused our vote because we are not a member: we were removed.
    removed: Arc<AtomicBool>,
    /// When each (peer, code) refusal was last logged.
    logged: Arc<Mutex<HashMap<(String, String), Instant>>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// A `reqwest` client for talking to peers (and to a member while joining): with `tls`, it
/// trusts only the peer CA and presents this manager's certificate.
pub fn http_client(
    tls: Option<&op_tls::ServerTls>,
) -> Result<reqwest::Client, crate::ManagerError> {
    use crate::ManagerError;
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    if let Some(t) = tls {
        // Trust only the peer CA and present this manager's own certificate.
        let files = op_client::ClientTls {
            ca: t.client_ca.clone(),
            cert: Some(t.cert.clone()),
            key: Some(t.key.clone()),
        };
        b = files
            .apply(b)
            .map_err(|e| ManagerError::Config(format!("peer client: {e}")))?;
    }
    b.build()
        .map_err(|e| ManagerError::Config(format!("peer HTTP client: {e}")))
}

/// Reads an error answer into an [`ErrorBody`] (a peer of another version may send text).
async fn error_body(resp: Response) -> ErrorBody {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    serde_json::from_str::<ErrorBody>(&text).unwrap_or_else(|_| {
        ErrorBody::new(
            code::FAILED,
            if text.trim().is_empty() {
                status.to_string()
            } else {
                text.trim().to_string()
            },
        )
    })
}

/// Maps a transport error: a connect failure means the request never left.
fn transport(url: &str, e: reqwest::Error) -> PeerError {
    if e.is_connect() {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message = s.to_string();
            source = s.source();
        }
        PeerError::Unreachable {
            url: url.to_string(),
            message,
        }
    } else {
        PeerError::NoAnswer {
            url: url.to_string(),
            message: e.to_string(),
        }
    }
}

/// Sends `req` and decodes a 2xx JSON answer.
pub async fn send_json<T: DeserializeOwned>(
    url: &str,
    req: RequestBuilder,
) -> Result<T, PeerError> {
    let resp = req.send().await.map_err(|e| transport(url, e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(PeerError::Refused {
            url: url.to_string(),
            status: status.as_u16(),
            body: error_body(resp).await,
        });
    }
    resp.json().await.map_err(|e| PeerError::NoAnswer {
        url: url.to_string(),
        message: format!("undecodable answer: {e}"),
    })
}

impl Peers {
    pub fn new(
        cluster_id: String,
        secret: String,
        node_id: NodeId,
        http: reqwest::Client,
    ) -> Peers {
        Peers {
            http,
            cluster_id,
            secret,
            node_id,
            removed: Arc::new(AtomicBool::new(false)),
            logged: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// True once a peer told us we are not a member any more.
    pub fn removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    pub fn mark_removed(&self) {
        self.removed.store(true, Ordering::SeqCst);
    }

    /// A request to `base` + `path` carrying this node's credentials.
    pub fn request(&self, method: Method, base: &str, path: &str) -> (String, RequestBuilder) {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let req = self
            .http
            .request(method, &url)
            .bearer_auth(&self.secret)
            .header(CLUSTER_HEADER, &self.cluster_id)
            .header(NODE_HEADER, self.node_id.to_string());
        (url, req)
    }

    /// POSTs `body` as JSON and decodes the JSON answer, within `timeout`.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, PeerError> {
        let (url, req) = self.request(Method::POST, base, path);
        send_json(&url, req.timeout(timeout).json(body)).await
    }

    /// Logs a peer's refusal at error level, at most once per `REFUSAL_LOG_EVERY` per kind.
    fn log_refusal(&self, target: NodeId, url: &str, body: &ErrorBody) {
        let key = (url.to_string(), body.code.clone());
        let now = Instant::now();
        if let Ok(mut logged) = self.logged.lock() {
            if logged
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < REFUSAL_LOG_EVERY)
            {
                return;
            }
            logged.insert(key, now);
        }
        tracing::error!(peer = target, url, code = %body.code, "raft peer refused us: {}", body.message);
    }
}

/// Creates one [`PeerClient`] per target; they share one HTTP connection pool.
#[derive(Clone)]
pub struct Network {
    peers: Peers,
    /// The JSON the log stored its newest entries as.
    encoded: Encoded,
}

impl Network {
    pub fn new(peers: Peers, encoded: Encoded) -> Network {
        Network { peers, encoded }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        self.encoded.replicating();
        PeerClient {
            target,
            base: node.raft_addr.trim_end_matches('/').to_string(),
            peers: self.peers.clone(),
            encoded: self.encoded.clone(),
            append: None,
        }
    }
}

type AppendResult =
    Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>>;

/// The answer of an append task; a task that panicked counts as a network failure. (The error
/// type is openraft's, as the trait returns it.)
#[allow(clippy::result_large_err)]
fn joined(result: Result<AppendResult, tokio::task::JoinError>) -> AppendResult {
    match result {
        Ok(r) => r,
        Err(e) => Err(RPCError::Network(NetworkError::new(
            &std::io::Error::other(e),
        ))),
    }
}

/// What identifies an append: openraft sends the same one again after a timeout.
type AppendKey = (
    Vote<NodeId>,
    Option<LogId<NodeId>>,
    Option<LogId<NodeId>>,
    Option<LogId<NodeId>>,
);

fn append_key(rpc: &AppendEntriesRequest<TypeConfig>) -> AppendKey {
    (
        rpc.vote,
        rpc.prev_log_id,
        rpc.entries.first().map(|e| e.log_id),
        rpc.entries.last().map(|e| e.log_id),
    )
}

/// An append on its way to the peer, in its own task so that it outlives openraft's timeout.
struct InFlight {
    key: AppendKey,
    task: tokio::task::JoinHandle<AppendResult>,
}

pub struct PeerClient {
    target: NodeId,
    base: String,
    peers: Peers,
    encoded: Encoded,
    /// openraft gives an append one heartbeat period, then drops it and sends it again. A batch
    /// of run records, or a new member catching up, can take longer to send, write durably and
    /// acknowledge than that, and would then be sent again forever. So each append runs in a
    /// task that the timeout does not cancel: the retry waits for the same task, and a
    /// different append waits for it to finish first (the peer takes them in order anyway).
    append: Option<InFlight>,
}

/// Requests that outlive openraft's per-RPC timeout still end: a peer that never answers is
/// given up on after this long.
const APPEND_LIMIT: Duration = Duration::from_secs(30);

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        endpoint: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        call(
            &self.peers,
            self.target,
            &self.base,
            endpoint,
            req,
            option.hard_ttl(),
        )
        .await
    }
}

async fn call<Req, Resp, E>(
    peers: &Peers,
    target: NodeId,
    base: &str,
    endpoint: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId, E>>>
where
    Req: Serialize,
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    call_with(peers, target, base, endpoint, body, timeout).await
}

/// The body of an append request: the JSON openraft's `AppendEntriesRequest` serializes to, with
/// each entry the log still holds encoded copied as the log stored it (the same encoder wrote
/// it) rather than encoded again for every follower.
pub(super) fn append_body(
    rpc: &AppendEntriesRequest<TypeConfig>,
    encoded: &Encoded,
) -> serde_json::Result<Vec<u8>> {
    let stored: Vec<Option<Arc<str>>> = rpc.entries.iter().map(|e| encoded.text(e)).collect();
    let size = stored.iter().flatten().map(|t| t.len() + 1).sum::<usize>() + 256;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(b"{\"vote\":");
    serde_json::to_writer(&mut out, &rpc.vote)?;
    out.extend_from_slice(b",\"prev_log_id\":");
    serde_json::to_writer(&mut out, &rpc.prev_log_id)?;
    out.extend_from_slice(b",\"entries\":[");
    for (i, (entry, text)) in rpc.entries.iter().zip(&stored).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match text {
            Some(text) => out.extend_from_slice(text.as_bytes()),
            None => serde_json::to_writer(&mut out, entry)?,
        }
    }
    out.extend_from_slice(b"],\"leader_commit\":");
    serde_json::to_writer(&mut out, &rpc.leader_commit)?;
    out.push(b'}');
    Ok(out)
}

/// Sends `body` (JSON) to the peer's `/raft/{endpoint}` and reads its answer.
async fn call_with<Resp, E>(
    peers: &Peers,
    target: NodeId,
    base: &str,
    endpoint: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId, E>>>
where
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    {
        let (url, builder) = peers.request(Method::POST, base, &format!("/raft/{endpoint}"));
        let resp = builder
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        if !resp.status().is_success() {
            // Refused before raft saw it (secret, cluster, membership): say so loudly but not
            // on every retry, and let openraft back off as from an unreachable peer.
            let body = error_body(resp).await;
            if body.code == code::NOT_A_MEMBER {
                peers.mark_removed();
            }
            peers.log_refusal(target, &url, &body);
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(format!("{url}: {}", body.message)),
            )));
        }
        let result: Result<Resp, RaftError<NodeId, E>> = resp
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let _ = option;
        let key = append_key(&rpc);
        if let Some(prev) = &mut self.append {
            // Cancelled here by openraft's timeout, the task (and `self.append`) stays.
            let result = (&mut prev.task).await;
            let same = prev.key == key;
            self.append = None;
            if same {
                return joined(result);
            }
        }
        let (peers, target, base) = (self.peers.clone(), self.target, self.base.clone());
        let encoded = self.encoded.clone();
        let task = tokio::spawn(async move {
            let body = append_body(&rpc, &encoded)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            call_with(&peers, target, &base, "append", body, APPEND_LIMIT).await
        });
        let flight = self.append.insert(InFlight { key, task });
        let result = (&mut flight.task).await;
        self.append = None;
        joined(result)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use op_store::Command;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::raft::types::Entry;

    #[test]
    fn an_append_body_is_what_openraft_would_send() {
        let entry = |index: u64| Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), index),
            payload: EntryPayload::Normal(Command::FlushEvents {
                at: chrono::DateTime::from_timestamp(1_700_000_000 + index as i64, 0).unwrap(),
            }),
        };
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 6)),
            entries: vec![entry(7), entry(8)],
            leader_commit: Some(LogId::new(CommittedLeaderId::new(3, 1), 7)),
        };
        let want = serde_json::to_value(&rpc).unwrap();
        // Nothing cached: every entry encoded here.
        let body = append_body(&rpc, &Encoded::default()).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            want
        );
        // Both entries as the log stored them, and one of them only (the other encoded here).
        for held in [vec![entry(7), entry(8)], vec![entry(8)]] {
            let encoded = Encoded::holding(held);
            assert!(encoded.text(&entry(8)).is_some());
            let body = append_body(&rpc, &encoded).unwrap();
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
                want
            );
        }
        // A heartbeat: no entries.
        let beat = AppendEntriesRequest::<TypeConfig> {
            entries: Vec::new(),
            ..rpc.clone()
        };
        let body = append_body(&beat, &Encoded::default()).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::to_value(&beat).unwrap()
        );
        // The follower decodes it into the same request.
        let back: AppendEntriesRequest<TypeConfig> = serde_json::from_slice(&body).unwrap();
        assert_eq!(back.prev_log_id, beat.prev_log_id);
    }

    /// The follower gets the entries the leader sent, and each entry's JSON byte for byte as the
    /// leader stored it.
    #[test]
    fn an_append_request_keeps_each_entry_as_the_leader_stored_it() {
        let all = crate::raft::wire::tests::entries();
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(4, 2),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 0)),
            entries: all.clone(),
            leader_commit: None,
        };
        // The leader's log holds the first entries' JSON; the rest it encodes for the request.
        let encoded = Encoded::holding(all[..3].to_vec());
        let body = append_body(&rpc, &encoded).unwrap();
        let (got, texts) = crate::raft::wire::AppendRequest::parse(&body)
            .unwrap()
            .decode()
            .unwrap();
        let want: AppendEntriesRequest<TypeConfig> = serde_json::from_slice(&body).unwrap();
        assert_eq!(got.vote, want.vote);
        assert_eq!(got.prev_log_id, want.prev_log_id);
        assert_eq!(got.leader_commit, want.leader_commit);
        assert_eq!(got.entries, want.entries);
        assert_eq!(got.entries, all);
        let stored: Vec<String> = all
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert_eq!(texts, stored);
        // A heartbeat and a body that is not a request.
        let beat = AppendEntriesRequest::<TypeConfig> {
            entries: vec![],
            ..rpc
        };
        let body = append_body(&beat, &Encoded::default()).unwrap();
        let (got, texts) = crate::raft::wire::AppendRequest::parse(&body)
            .unwrap()
            .decode()
            .unwrap();
        assert!(got.entries.is_empty() && texts.is_empty());
        assert!(crate::raft::wire::AppendRequest::parse(br#"{"vote":1}"#).is_err());
        let bad = br#"{"vote":{"leader_id":{"term":1,"node_id":1},"committed":true},"prev_log_id":null,"entries":[{"log_id":1}],"leader_commit":null}"#;
        assert!(
            crate::raft::wire::AppendRequest::parse(bad)
                .unwrap()
                .decode()
                .is_err()
        );
    }
}
