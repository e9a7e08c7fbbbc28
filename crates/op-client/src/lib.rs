//! A typed async client for the op-manager HTTP API.
//!
//! One method per route, taking and returning `op-proto` types. Used by `agentcli`, the agent's
//! link to its managers, `op-manager token ...`, the tests and the benchmarks, so the API has one
//! Rust caller to keep in step with it. Every request carries the API version header and the
//! bearer token. Errors tell "could not reach the manager" apart from "the manager said no", and
//! the latter carries the server's [`ErrorBody`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use op_proto::agent::{
    DesiredState, Heartbeat, RegisterRequest, RegisterResponse, RunBatch, RunBatchAck,
};
use op_proto::api::{
    AddMemberRequest, AuditEntry, ClusterStatus, CreateTokenRequest, CreatedToken, JobView,
    OnceTarget, RunQuery, SaveJobResponse, TokenInfo, TransferLeaderRequest, VersionInfo, code,
};
use op_proto::invoke::{
    InvocationAccepted, InvocationBrief, InvocationEvent, InvocationQuery, InvocationView,
    InvokeRequest, NDJSON,
};
use op_proto::package::{PackageVersion, RollbackRequest};
use op_proto::{API_VERSION, API_VERSION_HEADER, ErrorBody, JobSpec, NodeInfo, RunRecord};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Default time limit of one request (a sync call adds its wait to it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence tolerated on an invocation stream. The manager writes a progress line every
/// 10 s while nothing else happens, so this much silence means the connection is dead.
pub const STREAM_IDLE: Duration = Duration::from_secs(45);

/// Time limit of a whole package upload or download. Large packages on slow links take long;
/// a stalled transfer is caught by the server's idle timeout (uploads) or by the caller's timeout
/// around each [`PackageContent::next_chunk`] (downloads).
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

mod events;
mod watch;

pub use bytes::Bytes;
pub use events::{EventQuery, EventStream};
pub use watch::{Watch, WatchState};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid manager URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("{url}: no answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The manager answered with an error status.
    #[error("{status}: {}", .body.message)]
    Api { status: u16, body: ErrorBody },
    /// 429: the manager is at its download cap; come back after `retry_after` (plus jitter).
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the manager is busy: {}", .body.message)]
    Busy {
        retry_after: Option<Duration>,
        body: ErrorBody,
    },
    #[error("{url}: unexpected response: {message}")]
    Decode { url: String, message: String },
    #[error("{url}: the result stream broke off: {message}")]
    Stream { url: String, message: String },
    /// A name the request is about was empty (`agentcli delete ''`): the path would have an
    /// empty segment, which the manager can only answer with "no such route".
    #[error("a name is empty: {path} needs one; nothing was sent")]
    EmptyName { path: String },
}

/// The targeting of an upload as the flags gave it (`--host`, `--exclude`, `--label KEY=VALUE`),
/// sent as repeated query parameters; the manager parses and checks every entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadTarget {
    pub hosts: Vec<String>,
    pub exclude: Vec<String>,
    pub labels: Vec<String>,
}

impl ClientError {
    /// The server's error code (`not_found`, `unauthorized`, ...), when the server answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } | ClientError::Busy { body, .. } => Some(&body.code),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Busy { .. } => Some(429),
            _ => None,
        }
    }

    /// True when the manager could not be reached at all (worth trying another one).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::Timeout { .. }
        )
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A piece of a run's output (see [`Client::run_output`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPiece {
    pub data: Vec<u8>,
    pub next_offset: u64,
    /// Bytes of the output file when the agent read it.
    pub size: u64,
    pub finished: bool,
}

impl OutputPiece {
    /// True when the run has ended and this piece reached the end of its output.
    pub fn is_last(&self) -> bool {
        self.finished && self.next_offset >= self.size
    }
}

/// A client for one manager.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    timeout: Duration,
    /// Ask for reads from the manager's own applied state (no round trip to the leader).
    stale: bool,
}

/// `http://host:port` from `host:port`, `http://host:port/` or `https://...`.
pub fn normalize_base_url(url: &str) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let parsed = reqwest::Url::parse(&with_scheme).map_err(|e| ClientError::BadUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ClientError::BadUrl {
            url: url.to_string(),
            reason: "expected http://HOST:PORT or https://HOST:PORT".into(),
        });
    }
    Ok(with_scheme)
}

/// What a client trusts and presents over TLS (`https://` managers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM CA that signs the managers' certificates; without it, the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate and key, presented to managers that ask (mutual TLS).
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl ClientTls {
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// Sets these trust and identity files on `b` (also used by the manager's peer client).
    pub fn apply(&self, mut b: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| ClientError::Tls(format!("{}: {e}", p.display())))
        };
        if let Some(ca) = &self.ca {
            let pem = read(ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::Tls(format!("{}: not a PEM CA file: {e}", ca.display()))
            })?;
            if certs.is_empty() {
                return Err(ClientError::Tls(format!(
                    "{}: holds no CERTIFICATE block",
                    ca.display()
                )));
            }
            // Only this CA: a manager with a certificate from anywhere else is refused.
            b = b.tls_certs_only(certs);
        }
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                let mut pem = read(c)?;
                pem.push(b'\n');
                pem.extend(read(k)?);
                let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    ClientError::Tls(format!(
                        "{} / {}: not a usable certificate and key: {e}",
                        c.display(),
                        k.display()
                    ))
                })?;
                b = b.identity(id);
            }
            (None, None) => {}
            _ => {
                return Err(ClientError::Tls(
                    "a client certificate needs both its certificate and its key file".into(),
                ));
            }
        }
        Ok(b)
    }
}

impl Client {
    /// A client for the manager at `base_url`, authenticating with `token` (if any).
    pub fn new(base_url: &str, token: Option<&str>) -> Result<Client> {
        Client::with_tls(base_url, token, &ClientTls::default())
    }

    /// [`Client::with_tls`] speaking HTTP/1.1 only, as the watch needs (`Client::watch`): an
    /// upgrade is an HTTP/1.1 exchange, and over TLS the manager would otherwise agree to HTTP/2.
    pub fn with_tls_http1(base_url: &str, token: Option<&str>, tls: &ClientTls) -> Result<Client> {
        let builder = tls.apply(
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .http1_only(),
        )?;
        let http = builder.build().map_err(|e| ClientError::Transport {
            url: base_url.to_string(),
            source: e,
        })?;
        Client::with_http(http, base_url, token)
    }

    /// [`Client::new`] with TLS trust and identity files.
    pub fn with_tls(base_url: &str, token: Option<&str>, tls: &ClientTls) -> Result<Client> {
        let builder =
            tls.apply(reqwest::Client::builder().connect_timeout(Duration::from_secs(5)))?;
        let http = builder.build().map_err(|e| ClientError::Transport {
            url: base_url.to_string(),
            source: e,
        })?;
        Client::with_http(http, base_url, token)
    }

    /// A client that sends through `http`, so many clients can share one connection pool (the
    /// benchmark's fleet simulator holds thousands of agents on a few pools).
    pub fn with_http(http: reqwest::Client, base_url: &str, token: Option<&str>) -> Result<Client> {
        Ok(Client {
            http,
            base: normalize_base_url(base_url)?,
            token: token.map(|t| t.trim().to_string()),
            timeout: DEFAULT_TIMEOUT,
            stale: false,
        })
    }

    /// The same client with another per-request time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The same client (sharing its connections) presenting another credential: a node's own
    /// credential after enrollment, for example.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: Some(token.trim().to_string()),
            ..self.clone()
        }
    }

    /// The same client asking for stale reads: each manager answers from what it has applied,
    /// which may lag the leader by a moment, instead of the default linearizable read.
    pub fn with_stale_reads(mut self, stale: bool) -> Client {
        self.stale = stale;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A request to `path` (starting with `/`) with the version header and credentials set; for
    /// callers that need something the typed methods do not offer.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(API_VERSION_HEADER, API_VERSION.to_string())
            .timeout(self.timeout);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if self.stale {
            req = req.header(op_proto::api::STALE_READ_HEADER, "1");
        }
        req
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, path: &str, req: RequestBuilder) -> Result<Response> {
        if has_empty_segment(path) {
            return Err(ClientError::EmptyName {
                path: path.split('?').next().unwrap_or(path).to_string(),
            });
        }
        let resp = req.send().await.map_err(|e| self.transport(path, e))?;
        let status = resp.status();
        // 101: the watch switched protocols (`Client::watch`).
        if status.is_success() || status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or_else(|_| {
            ErrorBody::new(
                status_code(status),
                if text.trim().is_empty() {
                    status.canonical_reason().unwrap_or("error").to_string()
                } else {
                    text.trim().to_string()
                },
            )
        });
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ClientError::Busy { retry_after, body });
        }
        Err(ClientError::Api {
            status: status.as_u16(),
            body,
        })
    }

    fn transport(&self, path: &str, e: reqwest::Error) -> ClientError {
        let url = self.url(path);
        if e.is_connect() {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message = s.to_string();
                source = s.source();
            }
            ClientError::Connect { url, message }
        } else if e.is_timeout() {
            ClientError::Timeout {
                url,
                secs: self.timeout.as_secs(),
            }
        } else {
            ClientError::Transport { url, source: e }
        }
    }

    async fn json<T: DeserializeOwned>(&self, path: &str, req: RequestBuilder) -> Result<T> {
        let resp = self.send(path, req).await?;
        let bytes = resp.bytes().await.map_err(|e| self.transport(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: self.url(path),
            message: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(path, self.request(Method::GET, path)).await
    }

    async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.json(path, self.request(Method::PUT, path).json(body))
            .await
    }

    /// `DELETE path`, ignoring the answer's body.
    async fn delete(&self, path: &str) -> Result<()> {
        self.send(path, self.request(Method::DELETE, path)).await?;
        Ok(())
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.json(path, self.request(Method::POST, path).json(body))
            .await
    }

    // --- health and version ---

    /// `GET /healthz`: Ok when the manager answers.
    pub async fn healthz(&self) -> Result<()> {
        self.send("/healthz", self.request(Method::GET, "/healthz"))
            .await?;
        Ok(())
    }

    pub async fn version(&self) -> Result<VersionInfo> {
        self.get("/v1/version").await
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> Result<String> {
        let resp = self
            .send("/metrics", self.request(Method::GET, "/metrics"))
            .await?;
        resp.text().await.map_err(|e| self.transport("/metrics", e))
    }

    pub async fn cluster(&self) -> Result<ClusterStatus> {
        self.get("/v1/cluster").await
    }

    /// `POST /v1/cluster/members` (admin): add a manager; returns once it is a voter.
    pub async fn add_member(&self, req: &AddMemberRequest) -> Result<ClusterStatus> {
        let path = "/v1/cluster/members";
        // Catching up a new member can take a while (a snapshot of a large state).
        let long = self.request(Method::POST, path).timeout(TRANSFER_TIMEOUT);
        self.json(path, long.json(req)).await
    }

    /// `DELETE /v1/cluster/members/ID` (admin).
    pub async fn remove_member(&self, id: u64) -> Result<ClusterStatus> {
        let path = format!("/v1/cluster/members/{id}");
        self.json(&path, self.request(Method::DELETE, &path)).await
    }

    /// `POST /v1/cluster/leader` (admin): hand leadership to `to` (or the best other voter).
    pub async fn transfer_leader(&self, to: Option<u64>) -> Result<ClusterStatus> {
        self.post("/v1/cluster/leader", &TransferLeaderRequest { to })
            .await
    }

    // --- jobs ---

    pub async fn list_jobs(&self) -> Result<Vec<JobView>> {
        self.get("/v1/jobs").await
    }

    pub async fn get_job(&self, name: &str) -> Result<JobView> {
        self.get(&format!("/v1/jobs/{}", path_segment(name))).await
    }

    /// Saves a task file as written (the seed's JSON). The server validates it.
    pub async fn save_job_text(&self, name: &str, task_json: &str) -> Result<SaveJobResponse> {
        self.save_job_text_with(name, task_json, &[]).await
    }

    /// [`Self::save_job_text`] with query parameters (a rollout: `rollout`, `step_wait`, ...).
    pub async fn save_job_text_with(
        &self,
        name: &str,
        task_json: &str,
        query: &[(&str, String)],
    ) -> Result<SaveJobResponse> {
        let path = format!("/v1/jobs/{}", path_segment(name));
        let mut req = self
            .request(Method::PUT, &path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(task_json.to_string());
        if !query.is_empty() {
            req = req.query(query);
        }
        self.json(&path, req).await
    }

    // --- rollouts (issue 21) ---

    pub async fn rollouts(&self) -> Result<Vec<op_proto::rollout::RolloutInfo>> {
        self.get("/v1/rollouts").await
    }

    pub async fn rollout(&self, id: &str) -> Result<op_proto::rollout::RolloutStatus> {
        self.get(&format!("/v1/rollouts/{}", path_segment(id)))
            .await
    }

    /// Every package's default rollout.
    pub async fn package_rollouts(&self) -> Result<Vec<op_proto::rollout::PackageRollout>> {
        self.get("/v1/rollouts/defaults").await
    }

    /// The default rollout of package `name` (a 404 when it has none).
    pub async fn package_rollout(&self, name: &str) -> Result<op_proto::rollout::PackageRollout> {
        self.get(&format!("/v1/packages/{}/rollout", path_segment(name)))
            .await
    }

    /// Sets the default rollout of package `name`: uploads without a rollout are staged by it.
    pub async fn set_package_rollout(
        &self,
        name: &str,
        request: &op_proto::rollout::RolloutRequest,
    ) -> Result<op_proto::rollout::PackageRollout> {
        let path = format!("/v1/packages/{}/rollout", path_segment(name));
        self.put(&path, request).await
    }

    /// Clears the default rollout of package `name`.
    pub async fn clear_package_rollout(&self, name: &str) -> Result<()> {
        let path = format!("/v1/packages/{}/rollout", path_segment(name));
        self.delete(&path).await
    }

    /// `pause`, `resume`, `abort` or `promote`.
    pub async fn rollout_action(
        &self,
        id: &str,
        action: &str,
    ) -> Result<op_proto::rollout::RolloutInfo> {
        let path = format!("/v1/rollouts/{}/{}", path_segment(id), path_segment(action));
        self.json(&path, self.request(Method::POST, &path)).await
    }

    /// Saves a job spec (sent in its task-file form).
    pub async fn save_job(&self, spec: &JobSpec) -> Result<SaveJobResponse> {
        let text = serde_json::to_string(spec).map_err(|e| ClientError::Decode {
            url: self.url("/v1/jobs"),
            message: e.to_string(),
        })?;
        self.save_job_text(&spec.name, &text).await
    }

    pub async fn delete_job(&self, name: &str) -> Result<()> {
        let path = format!("/v1/jobs/{}", path_segment(name));
        self.delete(&path).await
    }

    pub async fn enable_job(&self, name: &str) -> Result<JobView> {
        self.post(&format!("/v1/jobs/{}/enable", path_segment(name)), &())
            .await
    }

    pub async fn disable_job(&self, name: &str) -> Result<JobView> {
        self.post(&format!("/v1/jobs/{}/disable", path_segment(name)), &())
            .await
    }

    /// Once-job targets of `name` at `revision` (None = the current revision).
    pub async fn once_targets(&self, name: &str, revision: Option<u64>) -> Result<Vec<OnceTarget>> {
        let mut path = format!("/v1/jobs/{}/once", path_segment(name));
        if let Some(r) = revision {
            path.push_str(&format!("?revision={r}"));
        }
        self.get(&path).await
    }

    // --- nodes ---

    /// Every node, Ready first.
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        self.get("/v1/nodes").await
    }

    /// One node by id, hostname or IP.
    pub async fn get_node(&self, key: &str) -> Result<NodeInfo> {
        self.get(&format!("/v1/nodes/{}", path_segment(key))).await
    }

    /// Sets and removes manager labels of a node (by id, hostname or IP); the node as it is now.
    pub async fn label_node(
        &self,
        key: &str,
        req: &op_proto::api::LabelRequest,
    ) -> Result<NodeInfo> {
        self.post(&format!("/v1/nodes/{}/labels", path_segment(key)), req)
            .await
    }

    /// Stores an agent release (issue 22): `name` is the reserved package name of a platform,
    /// `query` the declared version, deadline, force and rollout fields.
    pub async fn upload_agent_release<S>(
        &self,
        name: &str,
        query: &[(&str, String)],
        len: Option<u64>,
        body: S,
    ) -> Result<op_proto::agent_upgrade::UpgradeStarted>
    where
        S: futures_util::TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Bytes: From<S::Ok>,
    {
        let path = format!("/v1/agents/upgrade/{}", path_segment(name));
        let mut req = self
            .request(Method::PUT, &path)
            .timeout(TRANSFER_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .query(query)
            .body(reqwest::Body::wrap_stream(body));
        if let Some(n) = len {
            req = req.header(reqwest::header::CONTENT_LENGTH, n);
        }
        self.json(&path, req).await
    }

    /// The agent releases, pins and each host's agent version and upgrade state.
    pub async fn agent_upgrade_status(&self) -> Result<op_proto::agent_upgrade::UpgradeStatus> {
        self.get("/v1/agents/upgrade").await
    }

    /// Pins (a version) or unpins hosts.
    pub async fn agent_pin(
        &self,
        req: &op_proto::agent_upgrade::PinRequest,
    ) -> Result<op_proto::agent_upgrade::UpgradeStatus> {
        self.post("/v1/agents/upgrade/pins", req).await
    }

    /// Drains (`true`) or undrains a node (by id, hostname or IP); the node as it is now.
    pub async fn drain_node(&self, key: &str, drain: bool) -> Result<NodeInfo> {
        let verb = if drain { "drain" } else { "undrain" };
        self.post(&format!("/v1/nodes/{}/{verb}", path_segment(key)), &())
            .await
    }

    /// Every pause (issue 23), expired or not.
    pub async fn pauses(&self) -> Result<Vec<op_proto::holds::Pause>> {
        self.get("/v1/pauses").await
    }

    /// Pauses a scope (replacing its earlier pause); the pause as saved.
    pub async fn pause(
        &self,
        req: &op_proto::holds::PauseRequest,
    ) -> Result<op_proto::holds::Pause> {
        self.post("/v1/pauses", req).await
    }

    /// Ends the pause of exactly this scope.
    pub async fn resume(&self, req: &op_proto::holds::ResumeRequest) -> Result<()> {
        let path = "/v1/pauses/resume";
        self.send(path, self.request(Method::POST, path).json(req))
            .await?;
        Ok(())
    }

    /// Every maintenance window, by name.
    pub async fn windows(&self) -> Result<Vec<op_proto::holds::Window>> {
        self.get("/v1/windows").await
    }

    /// Creates or replaces a maintenance window; the window as saved.
    pub async fn put_window(
        &self,
        name: &str,
        req: &op_proto::holds::WindowRequest,
    ) -> Result<op_proto::holds::Window> {
        let path = format!("/v1/windows/{}", path_segment(name));
        self.put(&path, req).await
    }

    pub async fn remove_window(&self, name: &str) -> Result<()> {
        let path = format!("/v1/windows/{}", path_segment(name));
        self.delete(&path).await
    }

    /// Forgets a node: it becomes Left until its agent registers again.
    pub async fn forget_node(&self, id: Uuid) -> Result<()> {
        let path = format!("/v1/nodes/{id}");
        self.delete(&path).await
    }

    // --- runs ---

    /// Runs matching `query`, newest first.
    pub async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        let req = self.request(Method::GET, "/v1/runs").query(query);
        self.json("/v1/runs", req).await
    }

    pub async fn run(&self, id: Uuid) -> Result<RunRecord> {
        self.get(&format!("/v1/runs/{id}")).await
    }

    // --- audit and tokens ---

    pub async fn audit(
        &self,
        since: Option<DateTime<Utc>>,
        limit: Option<u32>,
    ) -> Result<Vec<AuditEntry>> {
        #[derive(Serialize)]
        struct Q {
            #[serde(skip_serializing_if = "Option::is_none")]
            since: Option<DateTime<Utc>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            limit: Option<u32>,
        }
        let req = self
            .request(Method::GET, "/v1/audit")
            .query(&Q { since, limit });
        self.json("/v1/audit", req).await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        self.get("/v1/tokens").await
    }

    pub async fn create_token(&self, req: &CreateTokenRequest) -> Result<CreatedToken> {
        self.post("/v1/tokens", req).await
    }

    /// Creates a token with a policy (job globs, host selectors, verbs).
    pub async fn create_policy_token(
        &self,
        req: &op_proto::api::CreatePolicyTokenRequest,
    ) -> Result<CreatedToken> {
        self.post("/v1/tokens", req).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        let path = format!("/v1/tokens/{}", path_segment(id));
        self.json(&path, self.request(Method::DELETE, &path)).await
    }

    // --- secrets ---

    /// Every secret's name and last change (never a value).
    pub async fn list_secrets(&self) -> Result<Vec<op_proto::secret::SecretInfo>> {
        self.get("/v1/secrets").await
    }

    /// Creates or replaces a secret. `name` is sent as a path (`db/pw` stays two segments; the
    /// manager checks the name).
    pub async fn set_secret(
        &self,
        name: &str,
        value: &str,
    ) -> Result<op_proto::secret::SecretInfo> {
        let path = format!("/v1/secrets/{}", secret_path(name));
        let body = op_proto::secret::SetSecretRequest {
            value: value.to_string(),
        };
        self.json(&path, self.request(Method::PUT, &path).json(&body))
            .await
    }

    pub async fn remove_secret(&self, name: &str) -> Result<()> {
        let path = format!("/v1/secrets/{}", secret_path(name));
        self.delete(&path).await
    }

    /// Rotates the cluster's secrets key (admin): a new key on every member, every secret
    /// re-sealed under it.
    pub async fn rotate_secrets_key(&self) -> Result<serde_json::Value> {
        self.post("/v1/cluster/secrets-key/rotate", &()).await
    }

    // --- notification rules ---

    /// Every saved notification rule.
    pub async fn notify_rules(&self) -> Result<Vec<op_proto::events::NotifyRuleInfo>> {
        self.get("/v1/notify").await
    }

    /// Creates or replaces a rule (the manager checks it fully and saves nothing it refuses).
    pub async fn put_notify_rule(
        &self,
        rule: &op_proto::events::NotifyRule,
    ) -> Result<op_proto::events::NotifyRuleInfo> {
        let path = format!("/v1/notify/{}", path_segment(&rule.name));
        self.put(&path, rule).await
    }

    pub async fn remove_notify_rule(&self, name: &str) -> Result<()> {
        let path = format!("/v1/notify/{}", path_segment(name));
        self.delete(&path).await
    }

    /// Sends a sample event through rule `name` from the manager called; a failed delivery is
    /// a 502 whose code is [`op_proto::events::DELIVERY_FAILED`].
    pub async fn test_notify_rule(&self, name: &str) -> Result<op_proto::events::NotifyTestAnswer> {
        let path = format!("/v1/notify/{}/test", path_segment(name));
        self.json(&path, self.request(Method::POST, &path)).await
    }

    // --- packages ---

    /// The current version of every package.
    pub async fn list_packages(&self) -> Result<Vec<PackageVersion>> {
        self.get("/v1/packages").await
    }

    /// Every version of `name`, oldest first.
    pub async fn package_versions(&self, name: &str) -> Result<Vec<PackageVersion>> {
        self.get(&format!("/v1/packages/{}", path_segment(name)))
            .await
    }

    pub async fn package_version(&self, name: &str, version: u64) -> Result<PackageVersion> {
        self.get(&format!("/v1/packages/{}/{version}", path_segment(name)))
            .await
    }

    /// Uploads a package from a stream of chunks. `deploy_dir`: None inherits the package's last
    /// deploy dir, `Some("")` means the agents' default. `len`, when known, is sent as
    /// Content-Length so an oversize upload is refused before it is sent.
    pub async fn upload_package<S>(
        &self,
        name: &str,
        deploy_dir: Option<&str>,
        len: Option<u64>,
        body: S,
    ) -> Result<PackageVersion>
    where
        S: futures_util::TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Bytes: From<S::Ok>,
    {
        self.upload_package_full(name, deploy_dir, &UploadTarget::default(), len, body, &[])
            .await
    }

    /// Uploads a new version that goes only to the hosts `target` selects (the manager checks
    /// every entry; an empty target = every host).
    pub async fn upload_package_targeted<S>(
        &self,
        name: &str,
        deploy_dir: Option<&str>,
        target: &UploadTarget,
        len: Option<u64>,
        body: S,
    ) -> Result<PackageVersion>
    where
        S: futures_util::TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Bytes: From<S::Ok>,
    {
        self.upload_package_full(name, deploy_dir, target, len, body, &[])
            .await
    }

    /// [`Self::upload_package`] with more query parameters (a rollout: `rollout`, `step_wait`,
    /// `halt_on`, `auto_rollback`).
    pub async fn upload_package_with<S>(
        &self,
        name: &str,
        deploy_dir: Option<&str>,
        len: Option<u64>,
        body: S,
        query: &[(&str, String)],
    ) -> Result<PackageVersion>
    where
        S: futures_util::TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Bytes: From<S::Ok>,
    {
        self.upload_package_full(name, deploy_dir, &UploadTarget::default(), len, body, query)
            .await
    }

    /// Uploads a version with its targeting and more query parameters (a rollout).
    pub async fn upload_package_full<S>(
        &self,
        name: &str,
        deploy_dir: Option<&str>,
        target: &UploadTarget,
        len: Option<u64>,
        body: S,
        query: &[(&str, String)],
    ) -> Result<PackageVersion>
    where
        S: futures_util::TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Bytes: From<S::Ok>,
    {
        let path = format!("/v1/packages/{}", path_segment(name));
        let mut req = self
            .request(Method::PUT, &path)
            .timeout(TRANSFER_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        if let Some(dir) = deploy_dir {
            req = req.query(&[("deploy_dir", dir)]);
        }
        for (key, values) in [
            ("host", &target.hosts),
            ("exclude", &target.exclude),
            ("label", &target.labels),
        ] {
            for v in values {
                req = req.query(&[(key, v)]);
            }
        }
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(n) = len {
            req = req.header(reqwest::header::CONTENT_LENGTH, n);
        }
        self.json(&path, req).await
    }

    /// Uploads a package held in memory for the hosts `target` selects.
    pub async fn upload_package_bytes_targeted(
        &self,
        name: &str,
        deploy_dir: Option<&str>,
        target: &UploadTarget,
        content: Vec<u8>,
    ) -> Result<PackageVersion> {
        let len = content.len() as u64;
        let once =
            futures_util::stream::once(
                async move { Ok::<_, std::io::Error>(Bytes::from(content)) },
            );
        self.upload_package_targeted(name, deploy_dir, target, Some(len), once)
            .await
    }

    /// Uploads a package held in memory.
    pub async fn upload_package_bytes(
        &self,
        name: &str,
        deploy_dir: Option<&str>,
        content: Vec<u8>,
    ) -> Result<PackageVersion> {
        let len = content.len() as u64;
        let once =
            futures_util::stream::once(
                async move { Ok::<_, std::io::Error>(Bytes::from(content)) },
            );
        self.upload_package(name, deploy_dir, Some(len), once).await
    }

    /// Moves the current version of `name` to `version` (None = the previous one).
    pub async fn rollback_package(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<PackageVersion> {
        self.post(
            &format!("/v1/packages/{}/rollback", path_segment(name)),
            &RollbackRequest { version },
        )
        .await
    }

    /// Deletes one version (refused while it is current or installed somewhere).
    pub async fn delete_package_version(&self, name: &str, version: u64) -> Result<()> {
        let path = format!("/v1/packages/{}/{version}", path_segment(name));
        self.delete(&path).await
    }

    /// Starts downloading the content of `name` `version` from byte `offset` (0 = all of it).
    /// The answer says where the body starts: a server that ignores the range sends it all.
    pub async fn package_content(
        &self,
        name: &str,
        version: u64,
        offset: u64,
    ) -> Result<PackageContent> {
        let path = format!("/v1/packages/{}/{version}/content", path_segment(name));
        let mut req = self.request(Method::GET, &path).timeout(TRANSFER_TIMEOUT);
        if offset > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        let resp = self.send(&path, req).await?;
        let start = if resp.status() == StatusCode::PARTIAL_CONTENT {
            offset
        } else {
            0
        };
        let sha256 = resp
            .headers()
            .get("x-op-sha256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(PackageContent {
            length: resp.content_length(),
            resp,
            start,
            sha256,
            url: self.url(&path),
        })
    }

    // --- agent protocol ---

    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse> {
        self.post("/v1/agent/register", req).await
    }

    /// One long-poll: returns at once when the manager's state for this node differs from
    /// `index`, else when it changes or after `wait_secs`. The heartbeat rides in the body.
    pub async fn sync(
        &self,
        index: u64,
        wait_secs: u64,
        heartbeat: &Heartbeat,
    ) -> Result<DesiredState> {
        // `partial=1`: an output request may come alone, as a light answer
        // (`DesiredState::directives_only`); an older manager ignores the flag.
        self.sync_query(index, wait_secs, heartbeat, "&partial=1")
            .await
    }

    /// [`Client::sync`] without light answers (always the full state, as an older agent asks),
    /// decoding the answer into the caller's own type: the benchmark's
    /// simulated agents read only the index and each job's name and revision, so thousands of
    /// them cost the machine they share with the manager little.
    pub async fn sync_as<T: DeserializeOwned>(
        &self,
        index: u64,
        wait_secs: u64,
        heartbeat: &Heartbeat,
    ) -> Result<T> {
        self.sync_query(index, wait_secs, heartbeat, "").await
    }

    async fn sync_query<T: DeserializeOwned>(
        &self,
        index: u64,
        wait_secs: u64,
        heartbeat: &Heartbeat,
        extra: &str,
    ) -> Result<T> {
        let path = format!("/v1/agent/sync?index={index}&wait={wait_secs}{extra}");
        let req = self
            .request(Method::POST, &path)
            .timeout(self.timeout + Duration::from_secs(wait_secs))
            .json(heartbeat);
        self.json(&path, req).await
    }

    /// Answers an output request (`Directive::UploadOutput`).
    pub async fn post_output(&self, chunk: &op_proto::agent::OutputChunk) -> Result<()> {
        let path = "/v1/agent/output";
        self.send(path, self.request(Method::POST, path).json(chunk))
            .await?;
        Ok(())
    }

    /// A piece of a run's full output from `offset`: the bytes, and where the next piece starts
    /// and whether the run has finished (then an empty piece means the end). Waits up to
    /// `wait_secs` for the agent.
    pub async fn run_output(&self, id: Uuid, offset: u64, wait_secs: u64) -> Result<OutputPiece> {
        self.run_output_on(id, None, offset, wait_secs).await
    }

    /// [`Client::run_output`] naming the node that runs it, for a run that may have ended
    /// between the heartbeat that listed it and the delivery of its record: in that moment the
    /// manager knows the run from neither and would answer 404.
    pub async fn run_output_on(
        &self,
        id: Uuid,
        node: Option<Uuid>,
        offset: u64,
        wait_secs: u64,
    ) -> Result<OutputPiece> {
        let mut path = format!("/v1/runs/{id}/output?offset={offset}&wait={wait_secs}");
        if let Some(node) = node {
            path.push_str(&format!("&node={node}"));
        }
        let req = self
            .request(Method::GET, &path)
            .timeout(self.timeout + Duration::from_secs(wait_secs));
        let resp = self.send(&path, req).await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let next_offset = header("x-op-next-offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(offset);
        let size = header("x-op-size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let finished = header("x-op-finished").as_deref() == Some("true");
        let data = resp
            .bytes()
            .await
            .map_err(|e| self.transport(&path, e))?
            .to_vec();
        Ok(OutputPiece {
            data,
            next_offset,
            size,
            finished,
        })
    }

    /// Delivers finished runs; idempotent by run id.
    pub async fn post_runs(&self, batch: &RunBatch) -> Result<RunBatchAck> {
        self.post("/v1/agent/runs", batch).await
    }

    // --- invocations ---

    /// Runs a saved job on the selected hosts. Whether the answer streams or returns at once
    /// follows `req.wait` (absent: the job's SynFlag).
    pub async fn run_job(&self, name: &str, req: &InvokeRequest) -> Result<Started> {
        self.invoke(&format!("/v1/jobs/{}/run", path_segment(name)), req)
            .await
    }

    /// Runs an ad-hoc command (`req.command`) on the selected hosts.
    pub async fn exec(&self, req: &InvokeRequest) -> Result<Started> {
        self.invoke("/v1/exec", req).await
    }

    async fn invoke(&self, path: &str, req: &InvokeRequest) -> Result<Started> {
        // No overall time limit: a waiting invocation streams for as long as its hosts'
        // deadlines allow. Each read has its own idle limit instead (see `InvocationStream`).
        let mut builder = self
            .http
            .request(Method::POST, self.url(path))
            .header(API_VERSION_HEADER, API_VERSION.to_string())
            .json(req);
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        self.started(path, builder).await
    }

    /// The answer of a run, exec or retry: a stream when the manager streams, else the 202.
    async fn started(&self, path: &str, builder: reqwest::RequestBuilder) -> Result<Started> {
        let resp = tokio::time::timeout(self.timeout, self.send(path, builder))
            .await
            .map_err(|_| ClientError::Timeout {
                url: self.url(path),
                secs: self.timeout.as_secs(),
            })??;
        let streamed = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(NDJSON));
        if streamed {
            return Ok(Started::Stream(InvocationStream(Ndjson::new(
                resp,
                self.url(path),
                Some(STREAM_IDLE),
            ))));
        }
        let bytes = resp.bytes().await.map_err(|e| self.transport(path, e))?;
        serde_json::from_slice(&bytes)
            .map(Started::Accepted)
            .map_err(|e| ClientError::Decode {
                url: self.url(path),
                message: e.to_string(),
            })
    }

    /// Progress and every host's result of one invocation.
    pub async fn invocation(&self, id: Uuid) -> Result<InvocationView> {
        self.get(&format!("/v1/invocations/{id}")).await
    }

    /// Recent invocations, newest first.
    pub async fn invocations(&self, query: &InvocationQuery) -> Result<Vec<InvocationBrief>> {
        let req = self.request(Method::GET, "/v1/invocations").query(query);
        self.json("/v1/invocations", req).await
    }

    /// Runs a finished invocation again on its hosts that ended with `req.statuses` (default:
    /// every host that did not succeed), as a new invocation that names the old one.
    pub async fn retry_invocation(
        &self,
        id: Uuid,
        req: &op_proto::invoke::RetryRequest,
    ) -> Result<Started> {
        let path = format!("/v1/invocations/{id}/retry");
        let mut builder = self
            .http
            .request(Method::POST, self.url(&path))
            .header(API_VERSION_HEADER, API_VERSION.to_string())
            .json(req);
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        self.started(&path, builder).await
    }

    /// Cancels an invocation: hosts not started are cancelled, running ones are killed.
    pub async fn cancel_invocation(&self, id: Uuid) -> Result<InvocationView> {
        self.post(&format!("/v1/invocations/{id}/cancel"), &())
            .await
    }
}

/// How an invocation was answered.
#[derive(Debug)]
pub enum Started {
    /// It runs; follow it with [`Client::invocation`].
    Accepted(InvocationAccepted),
    /// The results, as they arrive.
    Stream(InvocationStream),
}

/// The NDJSON answer of a waiting invocation, read one event at a time.
#[derive(Debug)]
pub struct InvocationStream(Ndjson);

impl InvocationStream {
    /// The next event; `None` once the manager ended the stream (after the summary).
    pub async fn next(&mut self) -> Result<Option<InvocationEvent>> {
        self.0.next().await
    }
}

/// An NDJSON answer read one value at a time: invocation streams and `GET /v1/events`.
#[derive(Debug)]
pub(crate) struct Ndjson {
    resp: Response,
    buf: Vec<u8>,
    url: String,
    /// Longest the manager may stay silent; `None`: as long as it likes (a follow).
    idle: Option<Duration>,
}

impl Ndjson {
    pub(crate) fn new(resp: Response, url: String, idle: Option<Duration>) -> Ndjson {
        Ndjson {
            resp,
            buf: Vec::new(),
            url,
            idle,
        }
    }

    /// The next value; `None` once the manager ended the stream.
    pub(crate) async fn next<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| ClientError::Decode {
                        url: self.url.clone(),
                        message: format!("{e}: {}", String::from_utf8_lossy(line)),
                    });
            }
            let chunk = match self.idle {
                Some(idle) => tokio::time::timeout(idle, self.resp.chunk())
                    .await
                    .map_err(|_| ClientError::Stream {
                        url: self.url.clone(),
                        message: format!("nothing for {} s", idle.as_secs()),
                    })?,
                None => self.resp.chunk().await,
            }
            .map_err(|e| ClientError::Stream {
                url: self.url.clone(),
                message: e.to_string(),
            })?;
            match chunk {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None if self.buf.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                // A last line without its newline.
                None => self.buf.push(b'\n'),
            }
        }
    }
}

/// A package download in progress.
#[derive(Debug)]
pub struct PackageContent {
    resp: Response,
    /// The offset of the first byte of the body in the whole content.
    pub start: u64,
    /// Bytes in the body (not the whole content when resuming), when the server said.
    pub length: Option<u64>,
    /// The content's sha256 as the server stored it.
    pub sha256: Option<String>,
    url: String,
}

impl PackageContent {
    /// The next chunk of the body; None at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        self.resp.chunk().await.map_err(|e| ClientError::Transport {
            url: self.url.clone(),
            source: e,
        })
    }
}

/// Percent-encodes one path segment (job names are plain, but hostnames and ids come from users).
/// A secret name as a URL path: each `/`-separated part escaped, the slashes kept.
fn secret_path(name: &str) -> String {
    name.split('/')
        .map(path_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// True when the path part of `path` (`/v1/notify/NAME?...`) has an empty segment: a name that
/// went into it was empty. Every request passes here, so no command sends one.
fn has_empty_segment(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    path.strip_prefix('/')
        .is_some_and(|rest| rest.split('/').any(str::is_empty))
}

fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn status_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => code::BAD_REQUEST,
        401 => code::UNAUTHORIZED,
        403 => code::FORBIDDEN,
        404 => code::NOT_FOUND,
        409 => code::CONFLICT,
        413 => code::PAYLOAD_TOO_LARGE,
        429 => code::TOO_MANY_REQUESTS,
        503 => code::UNAVAILABLE,
        _ => "http_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            normalize_base_url("127.0.0.1:8090").unwrap(),
            "http://127.0.0.1:8090"
        );
        assert_eq!(normalize_base_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(normalize_base_url("https://h").unwrap(), "https://h");
        assert!(normalize_base_url("ftp://h").is_err());
        assert!(normalize_base_url("").is_err());
    }

    #[test]
    fn an_empty_segment_is_found() {
        for bad in ["/v1/notify/", "/v1/jobs//runs", "/v1/jobs/?x=1"] {
            assert!(has_empty_segment(bad), "{bad}");
        }
        for ok in ["/v1/notify/ops", "/v1/jobs/a/runs?after=", "/healthz"] {
            assert!(!has_empty_segment(ok), "{ok}");
        }
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(path_segment("ls-l"), "ls-l");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(path_segment("::1"), "::1");
    }

    #[tokio::test]
    async fn closed_port_is_a_connect_error() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("127.0.0.1:{port}"), None).unwrap();
        let err = client.version().await.unwrap_err();
        assert!(err.is_unreachable(), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("cannot connect to http://127.0.0.1:"),
            "{err}"
        );
    }
}
