//! Where the manager is and who we are: flags, environment and the config file, resolved once.
//!
//! Precedence is flag > environment > file. The file is the first of `./agentcli.toml`,
//! `~/.config/op-agent/agentcli.toml` and `/etc/op-agent/agentcli.toml` that exists (or `--config`).
//! Connection errors are turned into one line that says which thing to check.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use op_client::{Client, ClientError};
use serde::Deserialize;

use crate::cli::ConnArgs;

/// The default manager address, where `op-manager` listens out of the box.
pub const DEFAULT_MANAGER: &str = "http://127.0.0.1:8090";

/// `agentcli.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// Manager API URL.
    manager: Option<String>,
    /// API token.
    token: Option<String>,
    /// A file holding the token (relative to the config file).
    token_file: Option<PathBuf>,
    /// PEM CA of the manager's certificate (relative to the config file).
    ca: Option<PathBuf>,
    /// PEM client certificate and key (relative to the config file).
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// The resolved connection settings.
#[derive(Debug, Clone)]
pub struct Conn {
    pub manager: String,
    pub token: Option<String>,
    /// Where the token came from, for error messages (empty when there is none).
    pub token_source: String,
    pub tls: op_client::ClientTls,
    /// Reads from the manager's applied state (`--stale`).
    pub stale: bool,
}

/// The Go agentCli's config file, which operators coming from the seed still have around.
const SEED_CONFIG: &str = "agentCli.conf.json";

/// What the config file is, for someone holding the seed's JSON file.
const TOML_HINT: &str = "agentcli reads TOML from agentcli.toml (or --config FILE) with the keys \
     manager, token, token_file, ca, cert and key, e.g. manager = \"http://10.0.0.1:8090\" and \
     token_file = \"admin.token\"";

fn config_candidates() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("agentcli.toml")];
    if let Some(home) = std::env::var_os("HOME") {
        paths.push(PathBuf::from(home).join(".config/op-agent/agentcli.toml"));
    }
    paths.push(PathBuf::from("/etc/op-agent/agentcli.toml"));
    paths
}

fn load_file(explicit: Option<&Path>) -> anyhow::Result<(FileConfig, Option<PathBuf>)> {
    let path = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => config_candidates().into_iter().find(|p| p.is_file()),
    };
    let Some(path) = path else {
        if Path::new(SEED_CONFIG).is_file() {
            eprintln!(
                "agentcli: note: {SEED_CONFIG} (the Go agentCli's file) is not read; {TOML_HINT}"
            );
        }
        return Ok((FileConfig::default(), None));
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    if text.trim_start().starts_with('{') {
        anyhow::bail!("config file {} is JSON; {TOML_HINT}", path.display());
    }
    let config: FileConfig = toml::from_str(&text)
        .map_err(|e| anyhow!("config file {}: {}", path.display(), e.message()))?;
    Ok((config, Some(path)))
}

/// A path from the config file: `~/x` is under $HOME, a relative path is under the file's dir.
fn in_dir(dir: &Path, path: PathBuf) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~")
        && let Some(home) = env("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    dir.join(path)
}

fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// A non-empty environment variable.
fn env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

impl ConnArgs {
    /// The flags, each completed from its environment variable when not given.
    fn with_env(&self) -> ConnArgs {
        let text = |name| env(name).map(|v| v.to_string_lossy().into_owned());
        let path = |name| env(name).map(PathBuf::from);
        ConnArgs {
            manager: self.manager.clone().or_else(|| text("OP_MANAGER")),
            token: self.token.clone().or_else(|| text("OP_TOKEN")),
            token_file: self.token_file.clone().or_else(|| path("OP_TOKEN_FILE")),
            config: self.config.clone().or_else(|| path("OP_CLI_CONFIG")),
            ca: self.ca.clone().or_else(|| path("OP_CA")),
            cert: self.cert.clone().or_else(|| path("OP_CERT")),
            key: self.key.clone().or_else(|| path("OP_KEY")),
            stale: self.stale
                || text("OP_STALE").is_some_and(|v| !matches!(v.as_str(), "0" | "false" | "no")),
        }
    }
}

impl Conn {
    pub fn resolve(args: &ConnArgs) -> anyhow::Result<Conn> {
        let args = &args.with_env();
        let (file, file_path) = load_file(args.config.as_deref())?;
        // Paths in the file are relative to the file, wherever agentcli runs from.
        let file_dir = file_path
            .as_deref()
            .and_then(|p| std::path::absolute(p).ok())
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let manager = args
            .manager
            .clone()
            .or(file.manager)
            .unwrap_or_else(|| DEFAULT_MANAGER.to_string());
        let (token, token_source) = if let Some(t) = &args.token {
            (Some(t.trim().to_string()), "--token / OP_TOKEN".to_string())
        } else if let Some(f) = &args.token_file {
            (
                Some(read_token_file(f)?),
                format!("token file {}", f.display()),
            )
        } else if let Some(t) = file.token {
            let src = format!("token in {}", file_path.unwrap_or_default().display());
            (Some(t), src)
        } else if let Some(f) = file.token_file {
            let f = in_dir(&file_dir, f);
            (
                Some(read_token_file(&f)?),
                format!("token file {}", f.display()),
            )
        } else {
            (None, String::new())
        };
        let rel = |p: PathBuf| in_dir(&file_dir, p);
        let tls = op_client::ClientTls {
            ca: args.ca.clone().or(file.ca.map(rel)),
            cert: args.cert.clone().or(file.cert.map(rel)),
            key: args.key.clone().or(file.key.map(rel)),
        };
        Ok(Conn {
            manager,
            token,
            token_source,
            tls,
            stale: args.stale,
        })
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        Client::with_tls(&self.manager, self.token.as_deref(), &self.tls)
            .map(|c| c.with_stale_reads(self.stale))
            .map_err(|e| anyhow!(e))
    }

    /// Turns a client error into one line that says what to check.
    pub fn explain(&self, err: ClientError) -> anyhow::Error {
        match &err {
            ClientError::Connect { message, .. } => anyhow!(
                "cannot reach the manager at {}: {message}; check --manager / OP_MANAGER and that op-manager is running",
                self.manager
            ),
            ClientError::Timeout { secs, .. } => anyhow!(
                "the manager at {} did not answer within {secs} s; check the network and the manager's health",
                self.manager
            ),
            ClientError::Api { status: 401, body } if self.token.is_none() => anyhow!(
                "the manager wants a token and none was given ({}): pass --token or \
                 --token-file, set OP_TOKEN or OP_TOKEN_FILE, or put token or token_file in \
                 agentcli.toml",
                body.message
            ),
            ClientError::Api { status: 401, body } => anyhow!(
                "the manager refused the credentials ({}): {}; check {}",
                body.code,
                body.message,
                self.token_source
            ),
            // The manager names the scope the request needs (only admin manages tokens).
            ClientError::Api { status: 403, body } => {
                anyhow!("permission denied: {}", body.message)
            }
            ClientError::Api { body, .. } => {
                let mut msg = body.message.clone();
                for d in &body.details {
                    msg.push_str("; ");
                    msg.push_str(d);
                }
                anyhow!(msg)
            }
            _ => anyhow!(err),
        }
    }
}

/// Runs an async block on a small runtime: the CLI does one thing at a time.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime can always be built")
        .block_on(fut)
}
