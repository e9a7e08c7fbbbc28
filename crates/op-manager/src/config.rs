//! Manager configuration in two stages: [`ConfigArgs`] (flags, each also an `OP_*` environment
//! variable) and [`RawConfig`] (the TOML file, same keys with `_`) are merged as
//! flag > env > file > default and resolved ONCE into a validated [`Config`] with typed
//! durations, sizes and paths. Nothing else in the manager reads flags, files or the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::error::ManagerError;

/// Every setting as a flag; clap also reads the named environment variable. All optional, so
/// the file and the defaults can fill in what neither gives.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML config file (keys as below with `_`, e.g. `node_timeout = "30s"`).
    #[arg(long, env = "OP_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./op-data].
    #[arg(long, env = "OP_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// API listener (agents, CLI) [default: 0.0.0.0:8090]; port 0 picks a free port.
    #[arg(long, env = "OP_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Raft listener (peer managers only) [default: 127.0.0.1:8091].
    #[arg(long, env = "OP_RAFT_LISTEN")]
    pub raft_listen: Option<SocketAddr>,
    /// URL agents and peers use for this manager's API [default: from --listen].
    #[arg(long, env = "OP_ADVERTISE_API")]
    pub advertise_api: Option<String>,
    /// URL peers use for this manager's raft listener [default: from --raft-listen].
    #[arg(long, env = "OP_ADVERTISE_RAFT")]
    pub advertise_raft: Option<String>,
    /// Raft node id of this manager. Only read when the data dir is new: it is then stored in
    /// `cluster.json` [default: 1 for a new cluster; a joining node gets the next free id].
    #[arg(long, env = "OP_NODE_ID")]
    pub node_id: Option<u64>,
    /// Join the cluster of this member (its raft URL, e.g. http://10.0.0.1:8091) on first start,
    /// instead of starting a new one-member cluster. Ignored once the data dir belongs to a
    /// cluster, unless this node is not a member yet.
    #[arg(long, env = "OP_JOIN")]
    pub join: Option<String>,
    /// Credential for --join: an admin token of the cluster, or its cluster secret (the content
    /// of a member's DATA_DIR/cluster.secret).
    #[arg(long, env = "OP_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// A file holding the --join credential.
    #[arg(long, env = "OP_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// Raft heartbeat period of the leader [default: 200ms].
    #[arg(long, env = "OP_RAFT_HEARTBEAT")]
    pub raft_heartbeat: Option<String>,
    /// Shortest raft election timeout; the longest is twice this. Followers start an election
    /// after hearing nothing for the longest timeout (the leader lease) plus a random timeout,
    /// so failover takes about 3x this [default: 600ms].
    #[arg(long, env = "OP_RAFT_ELECTION_TIMEOUT")]
    pub raft_election_timeout: Option<String>,
    /// A node is NotReady when not seen for this long [default: 30s].
    #[arg(long, env = "OP_NODE_TIMEOUT")]
    pub node_timeout: Option<String>,
    /// A NotReady node is forgotten (Left) after this long [default: 10d].
    #[arg(long, env = "OP_FORGET_AFTER")]
    pub forget_after: Option<String>,
    /// Events: how long the leader waits after a fire's first result before it groups the fire's
    /// failures into events (sooner when every selected host reported), and after a first node
    /// change before it reports the changes as one event [default: 10s].
    #[arg(long, env = "OP_EVENT_WINDOW")]
    pub event_window: Option<String>,
    /// Notifications: the wait before retrying a delivery the receiver did not accept; doubled
    /// after each failure up to notify_retry_max [default: 1s].
    #[arg(long, env = "OP_NOTIFY_RETRY_INITIAL")]
    pub notify_retry_initial: Option<String>,
    /// Notifications: the longest wait between retries of a failing delivery [default: 5m].
    #[arg(long, env = "OP_NOTIFY_RETRY_MAX")]
    pub notify_retry_max: Option<String>,
    /// Missed fires: how often the leader judges the cron fires whose grace has passed
    /// [default: 5s].
    #[arg(long, env = "OP_FIRE_CHECK_EVERY")]
    pub fire_check_every: Option<String>,
    /// Missed fires: how long after a fire's grace the leader waits for its runs' records to
    /// arrive before it judges the fire, and how long after a save a job's fires start to be
    /// judged [default: 5s].
    #[arg(long, env = "OP_FIRE_SETTLE")]
    pub fire_settle: Option<String>,
    /// A node whose clock differs from the manager's by more than this raises
    /// `node.clock_skew` [default: 2s].
    #[arg(long, env = "OP_CLOCK_SKEW_THRESHOLD")]
    pub clock_skew_threshold: Option<String>,
    /// Heartbeats are flushed to the store as one command this often [default: 3s, at most half
    /// of node_timeout].
    #[arg(long, env = "OP_HEARTBEAT_FLUSH")]
    pub heartbeat_flush: Option<String>,
    /// Fan-out: a host whose agent has not acknowledged its directive this long after release is
    /// reported `unresponsive` and the invocation stops waiting for it; 0 waits for the deadline
    /// [default: 5s].
    #[arg(long, env = "OP_DIRECTIVE_ACK_TIMEOUT")]
    pub directive_ack_timeout: Option<String>,
    /// How long an agent's sync call parks when nothing changes [default: 10s, at most half of
    /// node_timeout].
    #[arg(long, env = "OP_SYNC_WAIT")]
    pub sync_wait: Option<String>,
    /// The console's load chart keeps one sample of each node's load this often, the last 60
    /// of them, in memory on the manager the agent reports to [default: 60s].
    #[arg(long, env = "OP_LOAD_SAMPLE_EVERY")]
    pub load_sample_every: Option<String>,
    /// Most run records an agent sends per batch [default: 500].
    #[arg(long, env = "OP_RUN_BATCH_MAX")]
    pub run_batch_max: Option<usize>,
    /// Runs kept per (job, node) [default: 100].
    #[arg(long, env = "OP_RETENTION_RUNS")]
    pub retention_runs: Option<u32>,
    /// Runs older than this are deleted [default: 7d].
    #[arg(long, env = "OP_RETENTION_MAX_AGE")]
    pub retention_max_age: Option<String>,
    /// Byte budget of all stored run records [default: 1GiB].
    #[arg(long, env = "OP_RETENTION_MAX_BYTES")]
    pub retention_max_bytes: Option<String>,
    /// Audit entries older than this are deleted [default: 90d].
    #[arg(long, env = "OP_AUDIT_MAX_AGE")]
    pub audit_max_age: Option<String>,
    /// Most audit entries kept [default: 100000].
    #[arg(long, env = "OP_AUDIT_MAX_ENTRIES")]
    pub audit_max_entries: Option<u64>,
    /// Left nodes and old once-job targets are deleted after this long [default: 30d].
    #[arg(long, env = "OP_HISTORY_MAX_AGE")]
    pub history_max_age: Option<String>,
    /// Most ended (finished or superseded) rollouts kept, newest first [default: 1000].
    #[arg(long, env = "OP_RETENTION_ROLLOUTS")]
    pub retention_rollouts: Option<u64>,
    /// Ended rollouts older than this are deleted [default: 90d].
    #[arg(long, env = "OP_ROLLOUT_MAX_AGE")]
    pub rollout_max_age: Option<String>,
    /// How often retention runs [default: 60s].
    #[arg(long, env = "OP_PRUNE_INTERVAL")]
    pub prune_interval: Option<String>,
    /// Largest JSON request body [default: 1MiB].
    #[arg(long, env = "OP_JSON_BODY_LIMIT")]
    pub json_body_limit: Option<String>,
    /// Largest run batch body [default: 64MiB].
    #[arg(long, env = "OP_RUNS_BODY_LIMIT")]
    pub runs_body_limit: Option<String>,
    /// Time a connection (API or raft) may go without a request in progress before it is
    /// closed: a new connection must send its request head within it, a kept-alive one its next
    /// [default: 30s].
    #[arg(long, env = "OP_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<String>,
    /// Slowest accepted request body, in bytes per second averaged over body_rate_window; a
    /// slower one gets 408 and its connection closed (0 = no minimum) [default: 1KiB].
    #[arg(long, env = "OP_BODY_MIN_RATE")]
    pub body_min_rate: Option<String>,
    /// Time over which body_min_rate is averaged [default: 30s].
    #[arg(long, env = "OP_BODY_RATE_WINDOW")]
    pub body_rate_window: Option<String>,
    /// Free space the data dir's filesystem must keep: below it, writes get 503 disk_full
    /// until space returns, so raft never hits a full disk (0 = no check) [default: 64MiB].
    #[arg(long, env = "OP_DISK_RESERVE")]
    pub disk_reserve: Option<String>,
    /// Raft log entries between snapshots [default: 2000].
    #[arg(long, env = "OP_RAFT_SNAPSHOT_LOGS")]
    pub raft_snapshot_logs: Option<u64>,
    /// Most package downloads served at once by this manager; more get 429 + Retry-After
    /// [default: 100].
    #[arg(long, env = "OP_DOWNLOAD_CONCURRENCY")]
    pub download_concurrency: Option<usize>,
    /// Most package bytes this manager sends per second, over all downloads together (a token
    /// bucket; size grammar, e.g. 50MiB), for sites that must cap manager egress; 0 = no limit
    /// [default: 0].
    #[arg(long, env = "OP_DOWNLOAD_RATE_LIMIT")]
    pub download_rate_limit: Option<String>,
    /// Agents may get chunk tickets to fetch package chunks from peer agents that hold the
    /// version; false: no tickets, every agent downloads from a manager as before [default:
    /// true].
    #[arg(long, env = "OP_PEER_DISTRIBUTION")]
    pub peer_distribution: Option<bool>,
    /// Most API connections (agents, agentcli, browsers) open at once; past it a new
    /// connection is closed at once, so clients can never take the descriptors the manager's
    /// own files need [default: the open-files limit minus a tenth of it (at least 256)].
    #[arg(long, env = "OP_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Largest package upload [default: 1GiB].
    #[arg(long, env = "OP_UPLOAD_MAX_BYTES")]
    pub upload_max_bytes: Option<String>,
    /// How often unreferenced package blobs are deleted (also right after a version is deleted)
    /// [default: 10m].
    #[arg(long, env = "OP_BLOB_GC_INTERVAL")]
    pub blob_gc_interval: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "OP_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// PEM certificate (chain) of the API listener; with --tls-key, the API speaks only HTTPS.
    #[arg(long, env = "OP_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "OP_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA whose client certificates the API accepts (agents, operators).
    #[arg(long, env = "OP_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Refuse API clients without a certificate signed by --client-ca (mutual TLS) [default:
    /// false].
    #[arg(long, env = "OP_REQUIRE_CLIENT_CERT", num_args = 0..=1, default_missing_value = "true")]
    pub require_client_cert: Option<bool>,
    /// PEM CA of the peer managers' certificates; with TLS on, raft peers always use mutual TLS
    /// with --tls-cert/--tls-key as this manager's certificate [default: --client-ca].
    #[arg(long, env = "OP_PEER_CA")]
    pub peer_ca: Option<PathBuf>,
}

/// The TOML file: the same keys as the flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub raft_listen: Option<SocketAddr>,
    pub advertise_api: Option<String>,
    pub advertise_raft: Option<String>,
    pub node_id: Option<u64>,
    pub join: Option<String>,
    pub join_token: Option<String>,
    pub join_token_file: Option<PathBuf>,
    pub raft_heartbeat: Option<String>,
    pub raft_election_timeout: Option<String>,
    pub node_timeout: Option<String>,
    pub forget_after: Option<String>,
    pub event_window: Option<String>,
    pub notify_retry_initial: Option<String>,
    pub notify_retry_max: Option<String>,
    pub fire_check_every: Option<String>,
    pub fire_settle: Option<String>,
    pub clock_skew_threshold: Option<String>,
    pub heartbeat_flush: Option<String>,
    pub directive_ack_timeout: Option<String>,
    pub sync_wait: Option<String>,
    pub load_sample_every: Option<String>,
    pub run_batch_max: Option<usize>,
    pub retention_runs: Option<u32>,
    pub retention_max_age: Option<String>,
    pub retention_max_bytes: Option<String>,
    pub audit_max_age: Option<String>,
    pub audit_max_entries: Option<u64>,
    pub history_max_age: Option<String>,
    pub retention_rollouts: Option<u64>,
    pub rollout_max_age: Option<String>,
    pub prune_interval: Option<String>,
    pub json_body_limit: Option<String>,
    pub runs_body_limit: Option<String>,
    pub header_read_timeout: Option<String>,
    pub body_min_rate: Option<String>,
    pub body_rate_window: Option<String>,
    pub disk_reserve: Option<String>,
    pub raft_snapshot_logs: Option<u64>,
    pub download_concurrency: Option<usize>,
    pub download_rate_limit: Option<String>,
    pub peer_distribution: Option<bool>,
    pub max_connections: Option<usize>,
    pub upload_max_bytes: Option<String>,
    pub blob_gc_interval: Option<String>,
    pub log_format: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub require_client_cert: Option<bool>,
    pub peer_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute data directory.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub raft_listen: SocketAddr,
    pub advertise_api: Option<String>,
    pub advertise_raft: Option<String>,
    /// The raft node id asked for by flag or file; None = 1 for a new cluster, or the next free
    /// id when joining. The id in `cluster.json` wins once the data dir has one.
    pub node_id: Option<u64>,
    /// Raft URL of a member to join on first start (None: start a new cluster).
    pub join: Option<String>,
    /// Credential presented when joining (admin token or cluster secret).
    pub join_token: Option<String>,
    /// Leader heartbeat period (default 200 ms).
    pub raft_heartbeat: Duration,
    /// Shortest election timeout; the longest is twice this (default 600 ms).
    pub raft_election_timeout: Duration,
    pub node_timeout: Duration,
    pub forget_after: Duration,
    /// How long a fire's results and a batch of node changes are collected before they become
    /// events (default 10 s).
    pub event_window: Duration,
    /// The first retry wait of a failed notification delivery (default 1 s), doubled up to
    /// `notify_retry_max` (default 5 min).
    pub notify_retry_initial: Duration,
    pub notify_retry_max: Duration,
    /// How often the leader judges cron fires past their grace (default 5 s).
    pub fire_check_every: Duration,
    /// How long after a fire's grace its runs may take to arrive before it is judged (5 s).
    pub fire_settle: Duration,
    /// A clock off by more than this raises `node.clock_skew` (default 2 s).
    pub clock_skew_threshold: Duration,
    pub heartbeat_flush: Duration,
    /// How long a released fan-out host's agent has to acknowledge its directive (default 5 s;
    /// zero: no acknowledgement is asked, every host has the whole deadline).
    pub directive_ack_timeout: Duration,
    pub sync_wait: Duration,
    /// Spacing of the load samples kept for the console's chart (default 60 s).
    pub load_sample_every: Duration,
    pub run_batch_max: usize,
    pub retention: op_store::RetentionLimits,
    pub prune_interval: Duration,
    pub json_body_limit: usize,
    pub runs_body_limit: usize,
    pub header_read_timeout: Duration,
    /// Slowest accepted request body in bytes per second (0: no minimum).
    pub body_min_rate: u64,
    pub body_rate_window: Duration,
    /// Free bytes the data dir's filesystem keeps; writes are refused below (0: no check).
    pub disk_reserve: u64,
    pub raft_snapshot_logs: u64,
    /// Most package downloads served at once (default 100).
    pub download_concurrency: usize,
    /// Package bytes sent per second over all downloads (0: no limit).
    pub download_rate_limit: u64,
    /// Chunk tickets for peer distribution are granted (default true).
    pub peer_distribution: bool,
    /// Most API connections open at once ([`default_max_connections`] unless set).
    pub max_connections: usize,
    /// Largest package upload in bytes (default 1 GiB).
    pub upload_max_bytes: u64,
    /// Period of the blob garbage collector (default 10 minutes).
    pub blob_gc_interval: Duration,
    pub log_format: LogFormat,
    /// TLS of the API listener; `None` serves plain HTTP.
    pub tls: Option<op_tls::ServerTls>,
    /// Mutual TLS of the raft listener and of every request to peers: set whenever `tls` is.
    pub peer_tls: Option<op_tls::ServerTls>,
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(&ConfigArgs::default(), RawConfig::default())
            .expect("the defaults are valid")
    }
}

fn bad(key: &str, msg: impl std::fmt::Display) -> ManagerError {
    ManagerError::Config(format!("{key}: {msg}"))
}

fn duration(key: &str, value: Option<String>, default: &str) -> Result<Duration, ManagerError> {
    let text = value.unwrap_or_else(|| default.to_string());
    op_proto::units::parse_duration(&text).map_err(|e| bad(key, e))
}

fn size(key: &str, value: Option<String>, default: &str) -> Result<u64, ManagerError> {
    let text = value.unwrap_or_else(|| default.to_string());
    op_proto::units::parse_size(&text).map_err(|e| bad(key, e))
}

impl Config {
    /// The time bounds of every connection the manager serves.
    pub fn conn_limits(&self) -> op_tls::guard::ConnLimits {
        op_tls::guard::ConnLimits {
            head_timeout: self.header_read_timeout,
            body_min_rate: self.body_min_rate,
            body_rate_window: self.body_rate_window,
        }
    }

    /// Loads the file named by `--config` (if any) and resolves everything.
    pub fn load(args: &ConfigArgs) -> Result<Config, ManagerError> {
        let raw = match &args.config {
            Some(path) => read_file(path)?,
            None => RawConfig::default(),
        };
        Config::resolve(args, raw)
    }

    /// Merges flags/env over the file over the defaults, and validates.
    pub fn resolve(a: &ConfigArgs, f: RawConfig) -> Result<Config, ManagerError> {
        let a = a.clone();
        let data_dir = a
            .data_dir
            .or(f.data_dir)
            .unwrap_or_else(|| PathBuf::from("./op-data"));
        let data_dir = absolute(&data_dir)?;
        let node_timeout = duration("node_timeout", a.node_timeout.or(f.node_timeout), "30s")?;
        let forget_after = duration("forget_after", a.forget_after.or(f.forget_after), "10d")?;
        // Unset, these two follow a short node_timeout down, so `--node-timeout 2s` alone is valid.
        let heartbeat_flush = match a.heartbeat_flush.or(f.heartbeat_flush) {
            Some(v) => duration("heartbeat_flush", Some(v), "")?,
            None => Duration::from_secs(3).min(node_timeout / 2),
        };
        let sync_wait = match a.sync_wait.or(f.sync_wait) {
            Some(v) => duration("sync_wait", Some(v), "")?,
            None => Duration::from_secs(10).min(node_timeout / 2),
        };
        let retention = op_store::RetentionLimits {
            runs_per_job_node: a.retention_runs.or(f.retention_runs).unwrap_or(100),
            run_max_age_secs: duration(
                "retention_max_age",
                a.retention_max_age.or(f.retention_max_age),
                "7d",
            )?
            .as_secs(),
            run_max_bytes: size(
                "retention_max_bytes",
                a.retention_max_bytes.or(f.retention_max_bytes),
                "1GiB",
            )?,
            audit_max_age_secs: duration(
                "audit_max_age",
                a.audit_max_age.or(f.audit_max_age),
                "90d",
            )?
            .as_secs(),
            audit_max_entries: a
                .audit_max_entries
                .or(f.audit_max_entries)
                .unwrap_or(100_000),
            history_max_age_secs: duration(
                "history_max_age",
                a.history_max_age.or(f.history_max_age),
                "30d",
            )?
            .as_secs(),
            rollouts_kept: a
                .retention_rollouts
                .or(f.retention_rollouts)
                .unwrap_or(op_store::DEFAULT_ROLLOUTS_KEPT),
            rollout_max_age_secs: duration(
                "rollout_max_age",
                a.rollout_max_age.or(f.rollout_max_age),
                "90d",
            )?
            .as_secs(),
        };
        let log_format = match a
            .log_format
            .or(f.log_format)
            .unwrap_or_else(|| "text".into())
            .as_str()
        {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(bad(
                    "log_format",
                    format!("{other:?}; expected text or json"),
                ));
            }
        };
        let require_client_cert = a
            .require_client_cert
            .or(f.require_client_cert)
            .unwrap_or(false);
        let client_ca = a.client_ca.or(f.client_ca);
        let path = |p: Option<PathBuf>| p.as_deref().map(absolute).transpose();
        let tls = op_tls::ServerTls::from_settings(
            path(a.tls_cert.or(f.tls_cert))?,
            path(a.tls_key.or(f.tls_key))?,
            path(client_ca)?,
            require_client_cert,
        )
        .map_err(ManagerError::Config)?;
        let join_token = match (
            a.join_token.or(f.join_token),
            a.join_token_file.or(f.join_token_file),
        ) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| bad("join_token_file", format!("{}: {e}", path.display())))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let peer_ca = a.peer_ca.or(f.peer_ca);
        let peer_tls = match &tls {
            None if peer_ca.is_some() => {
                return Err(bad(
                    "peer_ca",
                    "peer mutual TLS needs tls_cert and tls_key too",
                ));
            }
            None => None,
            Some(t) => {
                let ca = match peer_ca.as_deref() {
                    Some(p) => absolute(p)?,
                    None => t.client_ca.clone().ok_or_else(|| {
                        bad(
                            "peer_ca",
                            "with TLS on, raft peers use mutual TLS: set peer_ca (or client_ca) \
                             to the CA of the managers' certificates",
                        )
                    })?,
                };
                Some(op_tls::ServerTls {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    client_ca: Some(ca),
                    require_client_cert: true,
                })
            }
        };
        let config = Config {
            tls,
            peer_tls,
            data_dir,
            listen: a
                .listen
                .or(f.listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8090))),
            raft_listen: a
                .raft_listen
                .or(f.raft_listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8091))),
            advertise_api: a.advertise_api.or(f.advertise_api),
            advertise_raft: a.advertise_raft.or(f.advertise_raft),
            node_id: a.node_id.or(f.node_id),
            join: a.join.or(f.join),
            join_token,
            raft_heartbeat: duration(
                "raft_heartbeat",
                a.raft_heartbeat.or(f.raft_heartbeat),
                "200ms",
            )?,
            raft_election_timeout: duration(
                "raft_election_timeout",
                a.raft_election_timeout.or(f.raft_election_timeout),
                "600ms",
            )?,
            node_timeout,
            forget_after,
            event_window: duration("event_window", a.event_window.or(f.event_window), "10s")?,
            notify_retry_initial: duration(
                "notify_retry_initial",
                a.notify_retry_initial.or(f.notify_retry_initial),
                "1s",
            )?,
            notify_retry_max: duration(
                "notify_retry_max",
                a.notify_retry_max.or(f.notify_retry_max),
                "5m",
            )?,
            fire_check_every: duration(
                "fire_check_every",
                a.fire_check_every.or(f.fire_check_every),
                "5s",
            )?,
            fire_settle: duration("fire_settle", a.fire_settle.or(f.fire_settle), "5s")?,
            clock_skew_threshold: duration(
                "clock_skew_threshold",
                a.clock_skew_threshold.or(f.clock_skew_threshold),
                "2s",
            )?,
            heartbeat_flush,
            directive_ack_timeout: duration(
                "directive_ack_timeout",
                a.directive_ack_timeout.or(f.directive_ack_timeout),
                "5s",
            )?,
            sync_wait,
            load_sample_every: duration(
                "load_sample_every",
                a.load_sample_every.or(f.load_sample_every),
                "60s",
            )?,
            run_batch_max: a.run_batch_max.or(f.run_batch_max).unwrap_or(500),
            retention,
            prune_interval: duration(
                "prune_interval",
                a.prune_interval.or(f.prune_interval),
                "60s",
            )?,
            json_body_limit: size(
                "json_body_limit",
                a.json_body_limit.or(f.json_body_limit),
                "1MiB",
            )? as usize,
            runs_body_limit: size(
                "runs_body_limit",
                a.runs_body_limit.or(f.runs_body_limit),
                "64MiB",
            )? as usize,
            header_read_timeout: duration(
                "header_read_timeout",
                a.header_read_timeout.or(f.header_read_timeout),
                "30s",
            )?,
            body_min_rate: size("body_min_rate", a.body_min_rate.or(f.body_min_rate), "1KiB")?,
            body_rate_window: duration(
                "body_rate_window",
                a.body_rate_window.or(f.body_rate_window),
                "30s",
            )?,
            disk_reserve: size("disk_reserve", a.disk_reserve.or(f.disk_reserve), "64MiB")?,
            raft_snapshot_logs: a
                .raft_snapshot_logs
                .or(f.raft_snapshot_logs)
                .unwrap_or(2000),
            download_concurrency: a
                .download_concurrency
                .or(f.download_concurrency)
                .unwrap_or(100),
            download_rate_limit: size(
                "download_rate_limit",
                a.download_rate_limit.or(f.download_rate_limit),
                "0",
            )?,
            peer_distribution: a.peer_distribution.or(f.peer_distribution).unwrap_or(true),
            max_connections: a
                .max_connections
                .or(f.max_connections)
                .unwrap_or_else(default_max_connections),
            upload_max_bytes: size(
                "upload_max_bytes",
                a.upload_max_bytes.or(f.upload_max_bytes),
                "1GiB",
            )?,
            blob_gc_interval: duration(
                "blob_gc_interval",
                a.blob_gc_interval.or(f.blob_gc_interval),
                "10m",
            )?,
            log_format,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ManagerError> {
        if self.node_id == Some(0) {
            return Err(bad("node_id", "must be at least 1"));
        }
        if let Some(j) = &self.join {
            op_client::normalize_base_url(j).map_err(|e| bad("join", e))?;
        }
        if self.raft_heartbeat < Duration::from_millis(10) {
            return Err(bad("raft_heartbeat", "must be at least 10ms"));
        }
        if self.raft_election_timeout < self.raft_heartbeat * 3 {
            return Err(bad(
                "raft_election_timeout",
                "must be at least 3 heartbeats, or followers would elect while the leader is fine",
            ));
        }
        if self.node_timeout < Duration::from_secs(1) {
            return Err(bad("node_timeout", "must be at least 1s"));
        }
        if self.heartbeat_flush.is_zero() || self.heartbeat_flush * 2 > self.node_timeout {
            return Err(bad(
                "heartbeat_flush",
                "must be more than 0 and at most half of node_timeout, or Ready nodes would look stale",
            ));
        }
        if self.directive_ack_timeout > Duration::from_secs(3600) {
            return Err(bad("directive_ack_timeout", "must be at most 1h"));
        }
        if self.load_sample_every < Duration::from_secs(1) {
            return Err(bad("load_sample_every", "must be at least 1s"));
        }
        if self.event_window.is_zero() || self.event_window > Duration::from_secs(3600) {
            return Err(bad("event_window", "must be more than 0 and at most 1h"));
        }
        if self.notify_retry_initial.is_zero() {
            return Err(bad("notify_retry_initial", "must be more than 0"));
        }
        if self.notify_retry_max < self.notify_retry_initial {
            return Err(bad(
                "notify_retry_max",
                "must be at least notify_retry_initial",
            ));
        }
        if self.fire_check_every.is_zero() || self.fire_check_every > Duration::from_secs(3600) {
            return Err(bad(
                "fire_check_every",
                "must be more than 0 and at most 1h",
            ));
        }
        if self.fire_settle > Duration::from_secs(3600) {
            return Err(bad("fire_settle", "must be at most 1h"));
        }
        if self.clock_skew_threshold.is_zero() {
            return Err(bad("clock_skew_threshold", "must be more than 0"));
        }
        if self.forget_after <= self.node_timeout {
            return Err(bad("forget_after", "must be longer than node_timeout"));
        }
        if self.sync_wait.is_zero()
            || self.sync_wait > Duration::from_secs(op_proto::agent::MAX_SYNC_WAIT_SECS)
        {
            return Err(bad(
                "sync_wait",
                format!("must be 1s..={}s", op_proto::agent::MAX_SYNC_WAIT_SECS),
            ));
        }
        if self.sync_wait >= self.node_timeout {
            return Err(bad(
                "sync_wait",
                "must be shorter than node_timeout: each sync call is an agent's heartbeat",
            ));
        }
        if self.json_body_limit < 1024 || self.runs_body_limit < 1024 {
            return Err(bad(
                "json_body_limit/runs_body_limit",
                "must be at least 1KiB",
            ));
        }
        if self.header_read_timeout.is_zero() || self.body_rate_window.is_zero() {
            return Err(bad(
                "header_read_timeout/body_rate_window",
                "must be more than 0",
            ));
        }
        if self.run_batch_max == 0 {
            return Err(bad("run_batch_max", "must be at least 1"));
        }
        if self.prune_interval < Duration::from_secs(1) {
            return Err(bad("prune_interval", "must be at least 1s"));
        }
        if self.max_connections == 0 {
            return Err(bad("max_connections", "must be at least 1"));
        }
        if self.download_concurrency == 0 {
            return Err(bad(
                "download_concurrency",
                "must be at least 1, or no agent could ever download a package",
            ));
        }
        if self.upload_max_bytes == 0 {
            return Err(bad("upload_max_bytes", "must be more than 0"));
        }
        if self.blob_gc_interval < Duration::from_secs(1) {
            return Err(bad("blob_gc_interval", "must be at least 1s"));
        }
        if self.raft_snapshot_logs < 10 {
            return Err(bad("raft_snapshot_logs", "must be at least 10"));
        }
        for (key, url) in [
            ("advertise_api", &self.advertise_api),
            ("advertise_raft", &self.advertise_raft),
        ] {
            if let Some(u) = url {
                op_client::normalize_base_url(u).map_err(|e| bad(key, e))?;
            }
        }
        Ok(())
    }
}

/// The configuration reference (docs/config.md): every flag of [`ConfigArgs`], its environment
/// variable, its key in the TOML file ([`RawConfig`]'s fields, read from the serde derive), its
/// default and its meaning, as a markdown table. Printed by the hidden `--print-config-reference`.
pub fn reference() -> String {
    use op_proto::config_reference::{ConfigKey, markdown, serde_fields};
    let file_keys = serde_fields::<RawConfig>();
    let cmd = <ConfigArgs as clap::Args>::augment_args(clap::Command::new("op-manager"));
    let keys: Vec<ConfigKey> = cmd
        .get_arguments()
        .filter_map(|a| {
            let flag = a.get_long()?;
            if a.is_hide_set() || flag == "help" || flag == "version" {
                return None;
            }
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            Some(ConfigKey::from_help(
                flag,
                a.get_env().and_then(|e| e.to_str()),
                &help,
                file_keys,
            ))
        })
        .collect();
    markdown(&keys)
}

fn read_file(path: &Path) -> Result<RawConfig, ManagerError> {
    let text = std::fs::read_to_string(path).map_err(|e| ManagerError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    toml::from_str(&text).map_err(|e| ManagerError::Config(format!("{}: {e}", path.display())))
}

fn absolute(p: &Path) -> Result<PathBuf, ManagerError> {
    std::path::absolute(p).map_err(|e| ManagerError::Io {
        path: p.to_path_buf(),
        source: e,
    })
}

/// The open-files limit of this process less a tenth of it (at least 256) for the manager's
/// own files: its SQLite databases, raft log, blobs and peer connections.
pub fn default_max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    let reserve = (soft / 10).max(256);
    soft.saturating_sub(reserve).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_key_has_a_flag_and_a_line_in_the_reference() {
        let reference = reference();
        for key in op_proto::config_reference::serde_fields::<RawConfig>() {
            assert!(
                reference.contains(&format!("| `{key}` |")),
                "file key {key} has no flag of the same name:\n{reference}"
            );
        }
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let file: RawConfig = toml::from_str("node_timeout = \"40s\"\nsync_wait = \"5s\"").unwrap();
        let args = ConfigArgs {
            sync_wait: Some("7s".into()),
            ..ConfigArgs::default()
        };
        let c = Config::resolve(&args, file).unwrap();
        assert_eq!(c.node_timeout, Duration::from_secs(40));
        assert_eq!(c.sync_wait, Duration::from_secs(7));
        assert_eq!(c.forget_after, Duration::from_secs(10 * 86_400));
        assert_eq!(c.listen.port(), 8090);
        assert_eq!(c.download_concurrency, 100);
        assert_eq!(c.upload_max_bytes, 1 << 30);
        let file: RawConfig =
            toml::from_str("download_concurrency = 2\nupload_max_bytes = \"10MiB\"").unwrap();
        let c = Config::resolve(&ConfigArgs::default(), file).unwrap();
        assert_eq!((c.download_concurrency, c.upload_max_bytes), (2, 10 << 20));
        assert_eq!(c.download_rate_limit, 0);
        let file: RawConfig = toml::from_str("download_rate_limit = \"50MiB\"").unwrap();
        let c = Config::resolve(&ConfigArgs::default(), file).unwrap();
        assert_eq!(c.download_rate_limit, 50 << 20);
        let args = ConfigArgs {
            download_rate_limit: Some("fast".into()),
            ..ConfigArgs::default()
        };
        let err = Config::resolve(&args, RawConfig::default()).unwrap_err();
        assert!(err.to_string().contains("download_rate_limit"), "{err}");
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        assert!(toml::from_str::<RawConfig>("node_timout = \"1s\"").is_err());
        let args = ConfigArgs {
            node_timeout: Some("2s".into()),
            heartbeat_flush: Some("3s".into()),
            ..ConfigArgs::default()
        };
        let err = Config::resolve(&args, RawConfig::default()).unwrap_err();
        assert!(err.to_string().contains("heartbeat_flush"), "{err}");
        // Left unset, the flush and the wait follow a short timeout down.
        let args = ConfigArgs {
            node_timeout: Some("2s".into()),
            ..ConfigArgs::default()
        };
        let c = Config::resolve(&args, RawConfig::default()).unwrap();
        assert_eq!(
            (c.heartbeat_flush, c.sync_wait),
            (Duration::from_secs(1), Duration::from_secs(1))
        );
        let args = ConfigArgs {
            node_timeout: Some("soon".into()),
            ..ConfigArgs::default()
        };
        assert!(Config::resolve(&args, RawConfig::default()).is_err());
    }

    #[test]
    fn event_window_defaults_to_10s_and_refuses_zero() {
        let c = Config::resolve(&ConfigArgs::default(), RawConfig::default()).unwrap();
        assert_eq!(c.event_window, Duration::from_secs(10));
        let file: RawConfig = toml::from_str("event_window = \"1s\"").unwrap();
        let c = Config::resolve(&ConfigArgs::default(), file).unwrap();
        assert_eq!(c.event_window, Duration::from_secs(1));
        let args = ConfigArgs {
            event_window: Some("0s".into()),
            ..ConfigArgs::default()
        };
        let err = Config::resolve(&args, RawConfig::default()).unwrap_err();
        assert!(err.to_string().contains("event_window"), "{err}");
    }

    #[test]
    fn notify_retry_defaults_and_refuses_a_maximum_below_the_first_wait() {
        let c = Config::resolve(&ConfigArgs::default(), RawConfig::default()).unwrap();
        assert_eq!(c.notify_retry_initial, Duration::from_secs(1));
        assert_eq!(c.notify_retry_max, Duration::from_secs(300));
        let file: RawConfig =
            toml::from_str("notify_retry_initial = \"200ms\"\nnotify_retry_max = \"1s\"").unwrap();
        let c = Config::resolve(&ConfigArgs::default(), file).unwrap();
        assert_eq!(c.notify_retry_initial, Duration::from_millis(200));
        assert_eq!(c.notify_retry_max, Duration::from_secs(1));
        let args = ConfigArgs {
            notify_retry_initial: Some("10s".into()),
            notify_retry_max: Some("1s".into()),
            ..ConfigArgs::default()
        };
        let err = Config::resolve(&args, RawConfig::default()).unwrap_err();
        assert!(err.to_string().contains("notify_retry_max"), "{err}");
    }
}
