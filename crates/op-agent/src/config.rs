//! Agent configuration: flags, `OP_*` environment variables and an optional TOML file.
//!
//! Two stages, as everywhere in the project: [`Cli`] and [`FileConfig`] mirror what a person
//! writes (every field optional), and [`Config::resolve`] merges them once, with the precedence
//! flag > env > file > default, into a validated [`Config`] with typed durations, sizes and
//! absolute paths. Nothing else in the crate reads flags, files or the environment for settings.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::error::AgentError;

/// Defaults, named so that docs, `--help` and code agree.
pub mod defaults {
    pub const LISTEN: &str = "0.0.0.0:7070";
    pub const STATE_DIR: &str = "/var/lib/op-agent";
    /// The seed's deploy dir: its task files hard-code `/data/op-agent/src/...` in commands, so
    /// keeping it makes them work unchanged.
    pub const DEPLOY_DIR: &str = "/data/op-agent/src";
    pub const SHUTDOWN_GRACE_SECS: u64 = 30;
    /// `--peer-timeout`: a peer silent this long during a chunk fetch is given up on.
    pub const PEER_TIMEOUT_SECS: u64 = crate::deploy::PEER_TIMEOUT_SECS;
    pub const OUTPUT_TAIL: u64 = op_proto::run::DEFAULT_OUTPUT_TAIL as u64;
    pub const LOG_KEEP_RUNS: u64 = 50;
    pub const LOG_KEEP_BYTES: u64 = 64 * 1024 * 1024;
    pub const HISTORY_KEEP_RUNS: u64 = 100;
    pub const OUTBOX_BYTES: u64 = 64 * 1024 * 1024;
    pub const LOG_LEVEL: &str = "info";
    /// Package versions kept besides the current one, for instant rollback.
    pub const PACKAGE_KEEP: u64 = 3;
    /// Most bytes of file content one package archive may unpack to.
    pub const PACKAGE_MAX_BYTES: u64 = 4 << 30;
    /// Most members one package archive may have.
    pub const PACKAGE_MAX_ENTRIES: u64 = 100_000;
    /// Time a connection may go without a request in progress.
    pub const HEADER_READ_TIMEOUT_SECS: u64 = 30;
    /// Slowest accepted request body, bytes per second.
    pub const BODY_MIN_RATE: u64 = 1024;
    pub const BODY_RATE_WINDOW_SECS: u64 = 30;
    /// Async worker threads: the agent's work is timers, pipes and small HTTP requests.
    pub const WORKER_THREADS: usize = 1;
}

/// Command-line flags. Each also reads an `OP_*` environment variable; a flag wins over its
/// variable, and both win over the config file.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "op-agent",
    version,
    about = "op-agent: runs cron jobs, once-jobs and API-invoked jobs on this machine",
    after_help = "Examples:\n  op-agent --jobs-dir /etc/op-agent/jobs --auth-user opuser --auth-password secret\n  op-agent --config /etc/op-agent/agent.toml --listen 127.0.0.1:0"
)]
pub struct Cli {
    /// TOML config file; its keys are the long flag names with '_' for '-'.
    #[arg(long, env = "OP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the agent API [default: 0.0.0.0:7070]. Port 0 picks a free port; the bound
    /// address is printed on stdout as `listening on ADDR`.
    #[arg(long, env = "OP_LISTEN")]
    pub listen: Option<String>,
    /// Durable state: node id, run history, once-job ledger, outbox [default: /var/lib/op-agent].
    #[arg(long, env = "OP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Run output files, LOG_DIR/JOB/RUN_ID.log [default: STATE_DIR/logs].
    #[arg(long, env = "OP_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// Where packages are deployed; exported to jobs as OP_DEPLOY_DIR and used as their working
    /// directory when the job sets no WorkDir and the dir exists [default: /data/op-agent/src].
    #[arg(long, env = "OP_DEPLOY_DIR")]
    pub deploy_dir: Option<PathBuf>,
    /// Node name used for host selection and reports [default: the hostname].
    #[arg(long, env = "OP_NODE_NAME")]
    pub node_name: Option<String>,
    /// This node's IP address (repeatable) [default: the non-loopback addresses of the host].
    #[arg(long = "ip", env = "OP_IP", value_delimiter = ',')]
    pub ip: Vec<String>,
    /// Labels for job selection, `k=v,k2=v2`.
    #[arg(long, env = "OP_LABELS")]
    pub labels: Option<String>,
    /// User name for HTTP basic auth (the seed API's credential).
    #[arg(long, env = "OP_AUTH_USER")]
    pub auth_user: Option<String>,
    /// Password for HTTP basic auth.
    #[arg(long, env = "OP_AUTH_PASSWORD", hide_env_values = true)]
    pub auth_password: Option<String>,
    /// Bearer token accepted by the API. Without any credential configured the agent generates a
    /// token at first start and stores it in STATE_DIR/api-token.
    #[arg(long, env = "OP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Standalone mode: run the task files (*.json) in this directory, following edits.
    #[arg(long, env = "OP_JOBS_DIR")]
    pub jobs_dir: Option<PathBuf>,
    /// Manager API URL (repeatable). Accepted and stored; runs are queued in the outbox for it.
    #[arg(long = "manager", env = "OP_MANAGER", value_delimiter = ',')]
    pub manager: Vec<String>,
    /// Bearer token the agent presents to managers (used by the manager link).
    #[arg(long, env = "OP_MANAGER_TOKEN", hide_env_values = true)]
    pub manager_token: Option<String>,
    /// How long shutdown waits for running jobs before killing them [default: 30s].
    #[arg(long, env = "OP_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// Time a connection to the API may go without a request in progress before it is
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
    /// Bytes of output kept in each run record, e.g. `64KiB` [default: 64KiB].
    #[arg(long, env = "OP_OUTPUT_TAIL")]
    pub output_tail: Option<String>,
    /// Output files kept per job [default: 50].
    #[arg(long, env = "OP_LOG_KEEP_RUNS")]
    pub log_keep_runs: Option<u64>,
    /// Bytes of output files kept per job; also the cap of one run's file [default: 64MiB].
    #[arg(long, env = "OP_LOG_KEEP_BYTES")]
    pub log_keep_bytes: Option<String>,
    /// Run records kept per job in the local history [default: 100].
    #[arg(long, env = "OP_HISTORY_KEEP_RUNS")]
    pub history_keep_runs: Option<u64>,
    /// Byte budget of the outbox of undelivered runs; beyond it the oldest are dropped and
    /// counted [default: 64MiB].
    #[arg(long, env = "OP_OUTBOX_BYTES")]
    pub outbox_bytes: Option<String>,
    /// Package versions kept besides the current one, for instant rollback [default: 3].
    #[arg(long, env = "OP_PACKAGE_KEEP")]
    pub package_keep: Option<u64>,
    /// Most bytes one package archive may unpack to; more is refused as a bomb [default: 4GiB].
    #[arg(long, env = "OP_PACKAGE_MAX_BYTES")]
    pub package_max_bytes: Option<String>,
    /// Most members one package archive may have [default: 100000].
    #[arg(long, env = "OP_PACKAGE_MAX_ENTRIES")]
    pub package_max_entries: Option<u64>,
    /// Async worker threads (1 to 64); more only add memory unless the host runs many jobs
    /// at once [default: 1].
    #[arg(long, env = "OP_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Log filter (tracing EnvFilter syntax) [default: $RUST_LOG, else info].
    #[arg(long, env = "OP_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "OP_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// PEM certificate (chain) of the agent's API; with --tls-key it speaks only HTTPS.
    #[arg(long, env = "OP_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "OP_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA whose client certificates the agent's API accepts.
    #[arg(long, env = "OP_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Refuse API clients without a certificate signed by --client-ca (mutual TLS) [default:
    /// false].
    #[arg(long, env = "OP_REQUIRE_CLIENT_CERT", num_args = 0..=1, default_missing_value = "true")]
    pub require_client_cert: Option<bool>,
    /// PEM CA that signs the managers' certificates (for https:// managers) [default: the
    /// system's roots].
    #[arg(long, env = "OP_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate the agent presents to managers (mutual TLS).
    #[arg(long, env = "OP_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// PEM key of --client-cert.
    #[arg(long, env = "OP_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// Serve the chunks of package versions this agent holds to other agents of the fleet that
    /// present a manager-signed ticket (packages from peers) [default: true].
    #[arg(long, env = "OP_PEER_SERVE", num_args = 0..=1, default_missing_value = "true")]
    pub peer_serve: Option<bool>,
    /// Most bytes per second served to peers, e.g. `20MiB` (0 = no limit) [default: 0].
    #[arg(long, env = "OP_PEER_UPLOAD_RATE_LIMIT")]
    pub peer_upload_rate_limit: Option<String>,
    /// How long a chunk fetch waits on a peer that stops answering (no response or no bytes)
    /// before it moves to another source, e.g. `10s` [default: 10s].
    #[arg(long, env = "OP_PEER_TIMEOUT")]
    pub peer_timeout: Option<String>,
    /// Print the configuration reference (docs/config.md) and exit.
    #[arg(long, hide = true)]
    pub print_config_reference: bool,
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
}

/// Maintenance commands; without one, the agent runs.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AgentCommand {
    /// Make this host a new node at its next start, after its state was lost or cloned.
    ///
    /// Removes agent.db (node id, run history, undelivered runs, once-job ledger), node.token
    /// and desired.json; keeps api-token, logs/ and deployed packages. At the next start the
    /// agent enrolls as a new node; the manager retires the node this host was (same hostname
    /// and machine id) and hands its once-job history back, so no once-job runs twice. A clone
    /// needs a new /etc/machine-id and hostname first, or it takes over the original's node.
    /// Stop the agent before running it.
    #[command(after_help = "Example:
  systemctl stop op-agent
  op-agent reset-identity --state-dir /var/lib/op-agent
  systemctl start op-agent")]
    ResetIdentity {
        /// The agent's state dir (its --state-dir).
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Run the agent under the upgrade guard (what the shipped systemd unit starts).
    ///
    /// Starts the agent binary that `STATE_DIR/bin/current` points to (a self-upgraded one), or
    /// this binary when there is none, with the given agent flags, and restarts it when it
    /// exits. While a self-upgrade is unconfirmed it watches the new agent: if it does not reach
    /// a manager within the release's deadline, reports another version than declared, or exits
    /// 3 times, the previous binary is restored and started, and the failure (with the new
    /// binary's last output) is reported by the restored agent. Does not depend on the new
    /// binary working. SIGTERM and SIGINT go to the agent; the guard exits with it.
    #[command(after_help = "Example (the shipped systemd unit):
  op-agent guard --config /etc/op-agent/agent.toml")]
    Guard {
        /// The agent's flags (as for `op-agent` itself).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The TOML file, key for key. Unknown keys are an error, so a typo never goes unnoticed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub deploy_dir: Option<PathBuf>,
    pub node_name: Option<String>,
    pub ip: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub auth_user: Option<String>,
    pub auth_password: Option<String>,
    pub token: Option<String>,
    pub jobs_dir: Option<PathBuf>,
    pub manager: Option<Vec<String>>,
    pub manager_token: Option<String>,
    pub shutdown_grace: Option<String>,
    pub header_read_timeout: Option<String>,
    pub body_min_rate: Option<SizeValue>,
    pub body_rate_window: Option<String>,
    pub output_tail: Option<SizeValue>,
    pub log_keep_runs: Option<u64>,
    pub log_keep_bytes: Option<SizeValue>,
    pub history_keep_runs: Option<u64>,
    pub outbox_bytes: Option<SizeValue>,
    pub package_keep: Option<u64>,
    pub package_max_bytes: Option<SizeValue>,
    pub package_max_entries: Option<u64>,
    pub worker_threads: Option<usize>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub require_client_cert: Option<bool>,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub peer_serve: Option<bool>,
    pub peer_upload_rate_limit: Option<SizeValue>,
    pub peer_timeout: Option<String>,
}

/// A size written as a number of bytes or a string such as `64KiB`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    fn text(&self) -> String {
        match self {
            SizeValue::Bytes(n) => n.to_string(),
            SizeValue::Text(s) => s.clone(),
        }
    }
}

/// Credentials the API accepts.
#[derive(Clone, Default)]
pub struct AuthConfig {
    pub basic: Option<(String, String)>,
    pub token: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    // Never print secrets, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("basic_user", &self.basic.as_ref().map(|(u, _)| u))
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// A secret string whose `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration the library runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub deploy_dir: PathBuf,
    pub node_name: String,
    pub ips: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
    pub auth: AuthConfig,
    pub jobs_dir: Option<PathBuf>,
    pub managers: Vec<String>,
    /// Secret; kept out of `Debug` output by [`Secret`].
    pub manager_token: Option<Secret>,
    pub shutdown_grace: Duration,
    /// The time bounds of every connection to the API.
    pub conn_limits: op_tls::guard::ConnLimits,
    pub output_tail: usize,
    pub log_keep_runs: usize,
    pub log_keep_bytes: u64,
    pub history_keep_runs: usize,
    pub outbox_bytes: u64,
    /// Package versions kept besides the current one (default 3).
    pub package_keep: usize,
    /// Bounds on what one package archive may unpack to (defaults 4 GiB, 100,000 members).
    pub package_limits: crate::deploy::Limits,
    /// Async worker threads of the runtime (default 1).
    pub worker_threads: usize,
    pub log_level: String,
    pub log_format: LogFormat,
    /// TLS of the agent's API; `None` serves plain HTTP.
    pub tls: Option<op_tls::ServerTls>,
    /// What the agent trusts and presents when it calls managers.
    pub manager_tls: op_client::ClientTls,
    /// Serve held package versions to peers (`--peer-serve`, default true).
    pub peer_serve: bool,
    /// Bytes per second served to peers (0 = no limit).
    pub peer_upload_rate_limit: u64,
    /// How long a peer may stay silent during a chunk fetch (`--peer-timeout`).
    pub peer_timeout: Duration,
}

/// The configuration reference (docs/config.md): every flag of [`Cli`], its environment
/// variable, its key in the TOML file ([`FileConfig`]'s fields, read from the serde derive), its
/// default and its meaning, as a markdown table. Printed by the hidden `--print-config-reference`.
pub fn reference() -> String {
    use op_proto::config_reference::{ConfigKey, markdown, serde_fields};
    let file_keys = serde_fields::<FileConfig>();
    let cmd = <Cli as clap::CommandFactory>::command();
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

impl Config {
    /// Reads the file named by `--config`/`OP_CONFIG` (if any) and merges it with the flags.
    pub fn load(cli: &Cli) -> Result<Config, AgentError> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| AgentError::io("reading config file", path, e))?;
                parse_file(&text)
                    .map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        Config::resolve(cli, &file)
    }

    /// Merges flags (which already include env vars) over the file over the defaults.
    pub fn resolve(cli: &Cli, file: &FileConfig) -> Result<Config, AgentError> {
        let listen_text =
            pick(&cli.listen, &file.listen).unwrap_or_else(|| defaults::LISTEN.into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            AgentError::Config(format!(
                "listen {listen_text:?} is not an address like 0.0.0.0:7070"
            ))
        })?;
        let state_dir = absolute(
            pick(&cli.state_dir, &file.state_dir).unwrap_or_else(|| defaults::STATE_DIR.into()),
        )?;
        let log_dir =
            absolute(pick(&cli.log_dir, &file.log_dir).unwrap_or_else(|| state_dir.join("logs")))?;
        let deploy_dir = absolute(
            pick(&cli.deploy_dir, &file.deploy_dir).unwrap_or_else(|| defaults::DEPLOY_DIR.into()),
        )?;
        let jobs_dir = pick(&cli.jobs_dir, &file.jobs_dir)
            .map(absolute)
            .transpose()?;

        let node_name = match pick(&cli.node_name, &file.node_name) {
            Some(n) if n.trim().is_empty() => {
                return Err(AgentError::Config("node_name must not be empty".into()));
            }
            Some(n) => n,
            None => hostname(),
        };

        let ip_texts = if !cli.ip.is_empty() {
            cli.ip.clone()
        } else {
            file.ip.clone().unwrap_or_default()
        };
        let ips = if ip_texts.is_empty() {
            host_ips()
        } else {
            ip_texts
                .iter()
                .map(|s| {
                    s.trim()
                        .parse::<IpAddr>()
                        .map_err(|_| AgentError::Config(format!("ip {s:?} is not an IP address")))
                })
                .collect::<Result<Vec<_>, _>>()?
        };

        let labels = match &cli.labels {
            Some(text) => parse_labels(text)?,
            None => file.labels.clone().unwrap_or_default(),
        };

        let user = pick(&cli.auth_user, &file.auth_user);
        let password = pick(&cli.auth_password, &file.auth_password);
        let basic = match (user, password) {
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some((u, p)),
            (None, None) => None,
            _ => {
                return Err(AgentError::Config(
                    "auth_user and auth_password must be set together, both non-empty".into(),
                ));
            }
        };
        let token = pick(&cli.token, &file.token).filter(|t| !t.is_empty());

        let managers = if !cli.manager.is_empty() {
            cli.manager.clone()
        } else {
            file.manager.clone().unwrap_or_default()
        };
        for m in &managers {
            if !(m.starts_with("http://") || m.starts_with("https://")) {
                return Err(AgentError::Config(format!(
                    "manager {m:?} must be a URL starting with http:// or https://"
                )));
            }
        }
        if !managers.is_empty() && jobs_dir.is_some() {
            return Err(AgentError::Config(
                "jobs_dir and manager cannot be combined: with a manager, the jobs come from the \
                 manager's desired state (use jobs_dir only for a standalone agent)"
                    .into(),
            ));
        }

        let shutdown_grace = match pick(&cli.shutdown_grace, &file.shutdown_grace) {
            Some(text) => parse_duration("shutdown_grace", &text)?,
            None => Duration::from_secs(defaults::SHUTDOWN_GRACE_SECS),
        };
        let size =
            |key: &str, flag: &Option<String>, file: &Option<SizeValue>, default: u64| match flag
                .clone()
                .or_else(|| file.as_ref().map(SizeValue::text))
            {
                Some(text) => op_proto::units::parse_size(&text)
                    .map_err(|e| AgentError::Config(format!("{key}: {e}"))),
                None => Ok(default),
            };
        let seconds = |key: &str, flag: &Option<String>, file: &Option<String>, default: u64| {
            let value = match pick(flag, file) {
                Some(text) => parse_duration(key, &text)?,
                None => Duration::from_secs(default),
            };
            if value.is_zero() {
                return Err(AgentError::Config(format!("{key} must be more than 0")));
            }
            Ok(value)
        };
        let conn_limits = op_tls::guard::ConnLimits {
            head_timeout: seconds(
                "header_read_timeout",
                &cli.header_read_timeout,
                &file.header_read_timeout,
                defaults::HEADER_READ_TIMEOUT_SECS,
            )?,
            body_min_rate: size(
                "body_min_rate",
                &cli.body_min_rate,
                &file.body_min_rate,
                defaults::BODY_MIN_RATE,
            )?,
            body_rate_window: seconds(
                "body_rate_window",
                &cli.body_rate_window,
                &file.body_rate_window,
                defaults::BODY_RATE_WINDOW_SECS,
            )?,
        };
        let output_tail = size(
            "output_tail",
            &cli.output_tail,
            &file.output_tail,
            defaults::OUTPUT_TAIL,
        )?;
        if output_tail == 0 || output_tail > 16 * 1024 * 1024 {
            return Err(AgentError::Config(
                "output_tail must be between 1 byte and 16MiB".into(),
            ));
        }
        let log_keep_bytes = size(
            "log_keep_bytes",
            &cli.log_keep_bytes,
            &file.log_keep_bytes,
            defaults::LOG_KEEP_BYTES,
        )?;
        let outbox_bytes = size(
            "outbox_bytes",
            &cli.outbox_bytes,
            &file.outbox_bytes,
            defaults::OUTBOX_BYTES,
        )?;
        let package_max_bytes = size(
            "package_max_bytes",
            &cli.package_max_bytes,
            &file.package_max_bytes,
            defaults::PACKAGE_MAX_BYTES,
        )?;
        let package_max_entries = cli
            .package_max_entries
            .or(file.package_max_entries)
            .unwrap_or(defaults::PACKAGE_MAX_ENTRIES);
        let worker_threads = cli
            .worker_threads
            .or(file.worker_threads)
            .unwrap_or(defaults::WORKER_THREADS);
        if !(1..=64).contains(&worker_threads) {
            return Err(AgentError::Config(format!(
                "worker_threads must be between 1 and 64, not {worker_threads}"
            )));
        }
        if package_max_bytes == 0 || package_max_entries == 0 {
            return Err(AgentError::Config(
                "package_max_bytes and package_max_entries must be more than 0".into(),
            ));
        }
        let log_keep_runs = cli
            .log_keep_runs
            .or(file.log_keep_runs)
            .unwrap_or(defaults::LOG_KEEP_RUNS);
        let history_keep_runs = cli
            .history_keep_runs
            .or(file.history_keep_runs)
            .unwrap_or(defaults::HISTORY_KEEP_RUNS);
        if log_keep_runs == 0 || history_keep_runs == 0 {
            return Err(AgentError::Config(
                "log_keep_runs and history_keep_runs must be at least 1".into(),
            ));
        }
        let log_format = match pick(&cli.log_format, &file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(AgentError::Config(format!(
                    "log_format {other:?} is not text or json"
                )));
            }
        };

        let path = |p: Option<PathBuf>| p.map(absolute).transpose();
        let require_client_cert =
            pick(&cli.require_client_cert, &file.require_client_cert).unwrap_or(false);
        let client_ca = path(pick(&cli.client_ca, &file.client_ca))?;
        let tls = op_tls::ServerTls::from_settings(
            path(pick(&cli.tls_cert, &file.tls_cert))?,
            path(pick(&cli.tls_key, &file.tls_key))?,
            client_ca,
            require_client_cert,
        )
        .map_err(AgentError::Config)?;
        let manager_tls = op_client::ClientTls {
            ca: path(pick(&cli.ca, &file.ca))?,
            cert: path(pick(&cli.client_cert, &file.client_cert))?,
            key: path(pick(&cli.client_key, &file.client_key))?,
        };
        if manager_tls.cert.is_some() != manager_tls.key.is_some() {
            return Err(AgentError::Config(
                "client_cert and client_key: set both, or neither".into(),
            ));
        }

        let peer_upload_rate_limit = size(
            "peer_upload_rate_limit",
            &cli.peer_upload_rate_limit,
            &file.peer_upload_rate_limit,
            0,
        )?;
        let peer_serve = pick(&cli.peer_serve, &file.peer_serve).unwrap_or(true);
        let peer_timeout = seconds(
            "peer_timeout",
            &cli.peer_timeout,
            &file.peer_timeout,
            defaults::PEER_TIMEOUT_SECS,
        )?;

        Ok(Config {
            tls,
            manager_tls,
            peer_serve,
            peer_upload_rate_limit,
            peer_timeout,
            listen,
            state_dir,
            log_dir,
            deploy_dir,
            node_name,
            ips,
            labels,
            auth: AuthConfig { basic, token },
            jobs_dir,
            managers,
            manager_token: pick(&cli.manager_token, &file.manager_token)
                .filter(|t| !t.is_empty())
                .map(Secret),
            shutdown_grace,
            conn_limits,
            output_tail: output_tail as usize,
            log_keep_runs: log_keep_runs as usize,
            log_keep_bytes,
            history_keep_runs: history_keep_runs as usize,
            outbox_bytes,
            package_keep: cli
                .package_keep
                .or(file.package_keep)
                .unwrap_or(defaults::PACKAGE_KEEP) as usize,
            package_limits: crate::deploy::Limits {
                max_bytes: package_max_bytes,
                max_entries: package_max_entries,
            },
            worker_threads,
            // RUST_LOG is honoured as the last resort, as in most Rust daemons.
            log_level: pick(&cli.log_level, &file.log_level)
                .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
                .unwrap_or_else(|| defaults::LOG_LEVEL.into()),
            log_format,
        })
    }

    /// Every default, with state (and logs) under `state_dir` and the API on `127.0.0.1:0`: what
    /// in-process tests and benchmarks start from.
    pub fn local(state_dir: &Path) -> Config {
        let cli = Cli {
            state_dir: Some(state_dir.to_path_buf()),
            deploy_dir: Some(state_dir.join("deploy")),
            listen: Some("127.0.0.1:0".into()),
            ..Cli::default()
        };
        Config::resolve(&cli, &FileConfig::default())
            .expect("the defaults with an explicit state dir are valid")
    }
}

/// Parses the TOML config file.
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

fn pick<T: Clone>(flag: &Option<T>, file: &Option<T>) -> Option<T> {
    flag.clone().or_else(|| file.clone())
}

fn absolute(path: PathBuf) -> Result<PathBuf, AgentError> {
    std::path::absolute(&path).map_err(|e| AgentError::io("resolving path", path, e))
}

/// `k=v,k2=v2` into a map; an empty string is no labels.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, AgentError> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(AgentError::Config(format!(
                "label {pair:?} is not key=value (labels are written k=v,k2=v2)"
            )));
        };
        if k.trim().is_empty() {
            return Err(AgentError::Config(format!(
                "label {pair:?} has an empty key"
            )));
        }
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(labels)
}

fn parse_duration(key: &str, text: &str) -> Result<Duration, AgentError> {
    op_proto::units::parse_duration(text).map_err(|e| AgentError::Config(format!("{key}: {e}")))
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The host's addresses that identify it to others: no loopback, no IPv6 link-local.
fn host_ips() -> Vec<IpAddr> {
    let mut ips = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return ips;
    };
    for ifa in addrs {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        let link_local_v6 = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
        if ip.is_loopback() || ip.is_unspecified() || link_local_v6 || ips.contains(&ip) {
            continue;
        }
        ips.push(ip);
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut full = vec!["op-agent"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).unwrap()
    }

    #[test]
    fn every_file_key_has_a_flag_and_a_line_in_the_reference() {
        let reference = reference();
        for key in op_proto::config_reference::serde_fields::<FileConfig>() {
            assert!(
                reference.contains(&format!("| `{key}` |")),
                "file key {key} has no flag of the same name:\n{reference}"
            );
        }
        assert!(!reference.contains("print-config-reference"));
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let file = parse_file(
            "listen = \"127.0.0.1:9000\"\nstate_dir = \"/tmp/x\"\noutput_tail = \"1KiB\"\n[labels]\nrole = \"db\"\n",
        )
        .unwrap();
        let c = Config::resolve(&cli(&["--listen", "127.0.0.1:9100"]), &file).unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.log_dir, PathBuf::from("/tmp/x/logs"));
        assert_eq!(c.output_tail, 1024);
        assert_eq!(c.labels.get("role").map(String::as_str), Some("db"));
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        let c = Config::resolve(&cli(&["--labels", "a=1, b=2"]), &file).unwrap();
        assert_eq!(c.labels.len(), 2);
        assert_eq!(c.worker_threads, 1, "one async worker by default");
        let file = parse_file("worker_threads = 3").unwrap();
        assert_eq!(Config::resolve(&cli(&[]), &file).unwrap().worker_threads, 3);
        let c = Config::resolve(&cli(&["--worker-threads", "2"]), &file).unwrap();
        assert_eq!(c.worker_threads, 2);
    }

    #[test]
    fn unknown_file_key_is_an_error() {
        let err = parse_file("listen_addr = \"x\"").unwrap_err();
        assert!(err.contains("listen_addr"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let f = FileConfig::default();
        for (args, key) in [
            (vec!["--listen", "nope"], "listen"),
            (vec!["--ip", "10.0.0.300"], "ip"),
            (vec!["--labels", "novalue"], "label"),
            (vec!["--auth-user", "u"], "auth_user"),
            (vec!["--manager", "ftp://x"], "manager"),
            (vec!["--shutdown-grace", "soon"], "shutdown_grace"),
            (vec!["--worker-threads", "0"], "worker_threads"),
            (vec!["--worker-threads", "65"], "worker_threads"),
        ] {
            let err = Config::resolve(&cli(&args), &f).unwrap_err().to_string();
            assert!(err.contains(key), "{args:?}: {err}");
        }
    }

    #[test]
    fn repeatable_ips() {
        let c = Config::resolve(
            &cli(&["--ip", "10.0.0.1", "--ip", "10.0.0.2"]),
            &FileConfig::default(),
        )
        .unwrap();
        assert_eq!(c.ips.len(), 2);
    }
}
