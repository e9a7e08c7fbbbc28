//! `op-manager`: parse flags, set up logging, and call the library.

use std::process::ExitCode;

use clap::Parser;
use op_manager::cli::{Cli, CliCommand};
use op_manager::config::LogFormat;
use op_manager::{Config, Listeners};
use tokio_util::sync::CancellationToken;

/// Many agents mean many sockets: use the hard limit of open files.
fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "could not raise the open-files limit");
    }
}

/// Caps glibc's malloc at two arenas unless `MALLOC_ARENA_MAX` says otherwise. By default every
/// thread that allocates (tokio's workers and each `spawn_blocking` thread that reads the store)
/// gets its own arena, memory freed on another thread goes back to the arena it came from, and
/// with thousands of parked agents RSS drifts up: `op-bench idle --agents 10000` measured about
/// 290-305 MiB with the default and about 262-275 MiB with two arenas, at the same CPU.
/// Must run before any thread is started.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Everything op-manager writes under its data dir (state.db, raft.db and their WAL files,
/// snapshots, package blobs, the identity and token files) and every backup it writes is its
/// owner's only (docs/security.md): directories 0700, files 0600. One rule at the root rather
/// than a mode at each of the many places SQLite and the blob store create files. `certs init`
/// keeps its explicit modes (certificates 0644, keys 0600) and runs without it.
fn private_files() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    // Never blocks and never panics on a failed stderr; failures are counted (`op-log`).
    op_log::init(filter, format == LogFormat::Json);
}

async fn serve(config: Config) -> anyhow::Result<()> {
    op_tls::catch_hangup(config.tls.is_some() || config.peer_tls.is_some())
        .map_err(|e| anyhow::anyhow!("cannot install the SIGHUP handler: {e}"))?;
    let listeners = Listeners::bind(&config)?;
    let shutdown = CancellationToken::new();
    let running = op_manager::start(config, listeners, shutdown.clone()).await?;
    // Tests and the quick start read this line to find the ports picked for `:0`.
    op_log::print_stdout(&format!(
        "op-manager listening api={} raft={}",
        running.api_url, running.raft_url
    ));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        stop.cancel();
    });
    running.wait().await?;
    Ok(())
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    raise_open_files_limit();
    let cli = Cli::parse();
    if cli.print_config_reference {
        print!("{}", op_manager::config::reference());
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            op_log::print_stderr(&format!("op-manager: {e}"));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            op_log::print_stderr(&format!("op-manager: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    if !matches!(cli.command, Some(CliCommand::Certs(_))) {
        private_files();
    }
    let result = match cli.command {
        Some(CliCommand::Certs(args)) => op_manager::cli::certs_command(args),
        Some(CliCommand::Token(args)) => {
            runtime.block_on(op_manager::cli::token_command(&config.data_dir, args))
        }
        Some(CliCommand::Backup(args)) => op_manager::backup::backup(&config.data_dir, &args.to)
            .map(|m| {
                println!(
                    "backed up {} (raft index {}, {} package blobs) to {}",
                    config.data_dir.display(),
                    m.last_applied
                        .as_ref()
                        .and_then(|l| l.get("index"))
                        .map_or_else(|| "?".to_string(), |i| i.to_string()),
                    m.blobs.len(),
                    args.to.display()
                );
            })
            .map_err(anyhow::Error::from),
        Some(CliCommand::Restore(args)) => {
            let node_id = args.node_id.or(config.node_id).unwrap_or(1);
            runtime
                .block_on(op_manager::backup::restore(
                    &args.from,
                    &config.data_dir,
                    node_id,
                ))
                .map(|m| {
                    println!(
                        "restored the backup of {} made {} into {} as node {node_id}; start: op-manager --data-dir {} --node-id {node_id}",
                        m.source_data_dir,
                        m.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                        config.data_dir.display(),
                        config.data_dir.display(),
                    );
                })
                .map_err(anyhow::Error::from)
        }
        Some(CliCommand::Recover) => op_manager::cli::recover_command(&config.data_dir),
        Some(CliCommand::Secrets(args)) => {
            runtime.block_on(op_manager::cli::secrets_command(&config.data_dir, args))
        }
        None => {
            init_logging(config.log_format);
            raise_nofile_limit();
            runtime.block_on(serve(config))
        }
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            op_log::print_stderr(&format!("op-manager: {e:#}"));
            ExitCode::FAILURE
        }
    };
    op_log::flush(std::time::Duration::from_secs(1));
    code
}

/// Raises this process's open-files limit to its hard limit (as a service manager's
/// `LimitNOFILE` would): every agent holds a connection, and the default soft limit (often
/// 1,024) would cap the fleet far below what the machine allows. `max_connections` is derived
/// from the raised limit.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
