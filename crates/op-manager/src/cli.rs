//! The `op-manager` command line: serving (the default), `op-manager token ...`, which talks to
//! the running manager through its API (op-client), authenticated by `DATA_DIR/admin.token`
//! unless `--token` is given, and `op-manager recover`, which works on a stopped manager's data
//! dir.

use std::path::Path;

use clap::{Args, Parser, Subcommand};
use op_client::Client;
use op_proto::api::{CreateTokenRequest, Scope};

use crate::config::ConfigArgs;

#[derive(Debug, Parser)]
#[command(
    name = "op-manager",
    version,
    about = "The op-agent management node: stores jobs, nodes and runs (replicated with raft) and serves the API",
    after_help = "Examples:\n  op-manager --data-dir /var/lib/op-manager\n  op-manager --listen 127.0.0.1:0 --raft-listen 127.0.0.1:0\n  op-manager --data-dir d2 --listen 0.0.0.0:8092 --raft-listen 10.0.0.2:8093 \\\n             --join http://10.0.0.1:8091 --join-token-file admin.token\n  op-manager recover --data-dir /var/lib/op-manager\n  op-manager backup --data-dir /var/lib/op-manager --to /backup/manager.tar.gz\n  op-manager restore --from /backup/manager.tar.gz --data-dir /var/lib/op-manager\n  op-manager token create --scope operator --name ci\n  op-manager token list\n  op-manager token revoke 3f2a9c01b7de\n  op-manager secrets rotate-key"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print the configuration reference (docs/config.md) and exit.
    #[arg(long, hide = true)]
    pub print_config_reference: bool,
    #[command(subcommand)]
    pub command: Option<CliCommand>,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Manage API tokens of a running manager.
    Token(TokenArgs),
    /// Make TLS certificates (a development CA).
    Certs(CertsArgs),
    /// Write a consistent snapshot of this node's data dir (state and package blobs) to a
    /// .tar.gz; safe while the manager runs.
    Backup(BackupArgs),
    /// Make a new data dir from a backup: a one-member cluster to start with `op-manager`.
    Restore(RestoreArgs),
    /// After losing a majority of the managers: make this stopped manager's data dir a
    /// one-member cluster (it keeps its state; writes it never received are lost). Start it
    /// afterwards, then add new members with --join. Never restart the lost members with their
    /// old data dirs.
    Recover,
    /// The secrets key of a running cluster (docs/security.md).
    Secrets(SecretsArgs),
}

#[derive(Debug, Args)]
pub struct SecretsArgs {
    /// Manager API URL [default: DATA_DIR/manager.addr, else http://127.0.0.1:8090].
    #[arg(long, env = "OP_MANAGER", global = true)]
    pub manager: Option<String>,
    /// Admin token [default: the content of DATA_DIR/admin.token].
    #[arg(long, env = "OP_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM CA that signs the manager's certificate (for an https:// manager).
    #[arg(long, env = "OP_CA", global = true)]
    pub ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub action: SecretsAction,
}

#[derive(Debug, Subcommand)]
pub enum SecretsAction {
    /// Make a new secrets key, hand it to every member (each keeps the previous key beside it
    /// in DATA_DIR/secrets.key), then re-seal every secret under it. Every member must be up.
    /// On a cluster from before secrets, this makes its first key. Back the new key up after.
    #[command(after_help = "\
Example:
  op-manager secrets rotate-key --data-dir /var/lib/op-manager
  cp /var/lib/op-manager/secrets.key /safe/place/op-manager-secrets.key")]
    RotateKey,
}

/// Runs a `secrets` subcommand against the running manager.
pub async fn secrets_command(data_dir: &Path, args: SecretsArgs) -> anyhow::Result<()> {
    let (manager, token) = manager_and_token(data_dir, args.manager, args.token)?;
    let tls = op_client::ClientTls {
        ca: args.ca,
        cert: None,
        key: None,
    };
    let client = Client::with_tls(&manager, Some(&token), &tls)?;
    match args.action {
        SecretsAction::RotateKey => {
            let answer = client.rotate_secrets_key().await?;
            println!(
                "secrets key rotated: key {} now seals {} secret(s) on {} member(s); back up DATA_DIR/secrets.key of any member",
                answer["key_id"].as_str().unwrap_or("?"),
                answer["secrets"],
                answer["members"]
            );
        }
    }
    Ok(())
}

/// The manager URL and admin token: given, else from the data dir.
fn manager_and_token(
    data_dir: &Path,
    manager: Option<String>,
    token: Option<String>,
) -> anyhow::Result<(String, String)> {
    let manager = match manager {
        Some(m) => m,
        None => std::fs::read_to_string(data_dir.join("manager.addr"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "http://127.0.0.1:8090".into()),
    };
    let token = match token {
        Some(t) => t,
        None => {
            let path = data_dir.join("admin.token");
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    anyhow::anyhow!("{}: {e}; pass --token or --data-dir", path.display())
                })?
        }
    };
    Ok((manager, token))
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  op-manager backup --data-dir /var/lib/op-manager --to /backup/op-manager-$(date +%F).tar.gz"
)]
pub struct BackupArgs {
    /// The archive to write (made as FILE.partial, then renamed; mode 0600).
    #[arg(long)]
    pub to: std::path::PathBuf,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  op-manager restore --from /backup/op-manager-2026-11-25.tar.gz --data-dir /var/lib/op-manager\n  op-manager --data-dir /var/lib/op-manager"
)]
pub struct RestoreArgs {
    /// The archive `op-manager backup` wrote.
    #[arg(long)]
    pub from: std::path::PathBuf,
    /// Raft node id of the restored manager; start it with the same --node-id [default: 1].
    #[arg(long)]
    pub node_id: Option<u64>,
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub action: CertsAction,
}

#[derive(Debug, Subcommand)]
pub enum CertsAction {
    /// Write a new CA, a server certificate for the managers and client certificates into DIR.
    #[command(after_help = "\
Example:
  op-manager certs init --dir /etc/op-agent/tls --hosts mgr-1,mgr-2,10.0.0.5 --agents web-1,web-2 --clients ops

Writes ca.pem/ca.key, server.pem/server.key (valid for --hosts, localhost and 127.0.0.1),
agent-NAME.pem/.key (valid for the host NAME: the agent's client certificate towards the
managers and the server certificate of its own API, op-agent --tls-cert) and
client-NAME.pem/.key. Keys are mode 0600; nothing is overwritten.
Keep ca.key offline: whoever holds it can mint certificates your fleet trusts.")]
    Init {
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Names and IPs of the managers, comma-separated.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// One certificate per agent host name or IP, comma-separated: its client certificate
        /// and the server certificate of its own API.
        #[arg(long, value_delimiter = ',')]
        agents: Vec<String>,
        /// One client certificate per operator name, comma-separated.
        #[arg(long, value_delimiter = ',')]
        clients: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

/// Runs a `certs` subcommand.
pub fn certs_command(args: CertsArgs) -> anyhow::Result<()> {
    match args.action {
        CertsAction::Init {
            dir,
            hosts,
            agents,
            clients,
            days,
        } => {
            let written = op_tls::certs::init(
                &dir,
                &op_tls::certs::InitRequest {
                    hosts,
                    agents,
                    clients,
                    days,
                },
            )?;
            for path in written {
                println!("{}", path.display());
            }
            Ok(())
        }
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Manager API URL [default: DATA_DIR/manager.addr, else http://127.0.0.1:8090].
    #[arg(long, env = "OP_MANAGER")]
    pub manager: Option<String>,
    /// Admin token [default: the content of DATA_DIR/admin.token].
    #[arg(long, env = "OP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA that signs the manager's certificate (for an https:// manager).
    #[arg(long, env = "OP_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for a manager that requires one.
    #[arg(long, env = "OP_CERT")]
    pub cert: Option<std::path::PathBuf>,
    /// PEM key of --cert.
    #[arg(long, env = "OP_KEY")]
    pub key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub action: TokenAction,
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token and print its secret (shown only this once).
    Create {
        /// admin, operator, viewer or agent.
        #[arg(long)]
        scope: String,
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. 30d [default: never expires].
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

/// Runs a `token` subcommand; the output is for people (and stable enough for scripts).
pub async fn token_command(data_dir: &Path, args: TokenArgs) -> anyhow::Result<()> {
    let manager = match args.manager {
        Some(m) => m,
        None => std::fs::read_to_string(data_dir.join("manager.addr"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "http://127.0.0.1:8090".into()),
    };
    let token = match args.token {
        Some(t) => t,
        None => {
            let path = data_dir.join("admin.token");
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    anyhow::anyhow!("{}: {e}; pass --token or --data-dir", path.display())
                })?
        }
    };
    let tls = op_client::ClientTls {
        ca: args.ca,
        cert: args.cert,
        key: args.key,
    };
    let client = Client::with_tls(&manager, Some(&token), &tls)?;
    match args.action {
        TokenAction::Create {
            scope,
            name,
            expires_in,
        } => {
            let scope = Scope::parse(&scope).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown scope {scope:?}; expected admin, operator, viewer or agent"
                )
            })?;
            let expires_in_secs = expires_in
                .map(|e| op_proto::units::parse_duration(&e).map(|d| d.as_secs()))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--expires-in: {e}"))?;
            let created = client
                .create_token(&CreateTokenRequest {
                    name,
                    scope,
                    expires_in_secs,
                })
                .await?;
            println!("{}", created.secret);
            eprintln!(
                "created token {} ({}, scope {}); the secret above is shown only once",
                created.info.id,
                created.info.name,
                created.info.scope.as_str()
            );
        }
        TokenAction::List => {
            println!("ID\tNAME\tSCOPE\tCREATED\tEXPIRES\tREVOKED");
            for t in client.list_tokens().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    t.id,
                    t.name,
                    t.scope.as_str(),
                    t.created_at.format("%Y-%m-%d %H:%M:%S"),
                    t.expires_at.map_or_else(
                        || "never".to_string(),
                        |e| e.format("%Y-%m-%d %H:%M:%S").to_string()
                    ),
                    if t.revoked { "yes" } else { "no" }
                );
            }
        }
        TokenAction::Revoke { id } => {
            let info = client.revoke_token(&id).await?;
            println!("revoked token {} ({})", info.id, info.name);
        }
    }
    Ok(())
}

/// Runs `recover` on the stopped manager's data dir and says what happened and what is next.
pub fn recover_command(data_dir: &Path) -> anyhow::Result<()> {
    let r = crate::raft::recover::recover(data_dir)?;
    println!(
        "recovered: node {} is now the only member of cluster {} (term {}, log index {})",
        r.node_id, r.cluster_id, r.term, r.index
    );
    if !r.dropped.is_empty() {
        let dropped: Vec<String> = r.dropped.iter().map(u64::to_string).collect();
        println!("dropped members: {}", dropped.join(", "));
    }
    println!(
        "the cluster secret was replaced; start op-manager on {}, then add members with --join (empty data dirs)",
        data_dir.display()
    );
    Ok(())
}
