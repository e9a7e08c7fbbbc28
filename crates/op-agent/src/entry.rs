//! The process entry of the agent binaries: parse flags, set up logging, bind the listener, turn
//! SIGTERM/SIGINT into a shutdown, run the library, map the outcome to an exit code (0 ok,
//! 1 runtime error, 2 bad configuration, [`crate::upgrade::EXIT_UPGRADE`] stopped to start an
//! upgraded binary).
//!
//! `op-agent` and `op-agent-next` (a test target) both call [`main`], each with its own
//! compiled-in version: that version is what `--version`, the heartbeats and the facts report.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tokio_util::sync::CancellationToken;

use crate::config::{AgentCommand, Cli, Config, LogFormat};

/// Runs the agent binary whose version is `version`.
pub fn main(version: &'static str) -> ExitCode {
    crate::set_version(version);
    limit_malloc_arenas();
    let matches = Cli::command().version(version).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if cli.print_config_reference {
        print!("{}", crate::config::reference());
        return ExitCode::SUCCESS;
    }
    if let Some(AgentCommand::ResetIdentity { state_dir }) = &cli.command {
        return reset_identity(state_dir);
    }
    if let Some(AgentCommand::Guard { args }) = &cli.command {
        return crate::upgrade::guard::run(args);
    }
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            op_log::print_stderr(&format!("op-agent: {e}"));
            return ExitCode::from(2);
        }
    };
    init_tracing(&config);

    // One worker by default (`worker_threads`): the agent's work is timers, pipes and small
    // HTTP requests. Each more thread only adds memory (see `op-bench agent-footprint`).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        // Blocking threads serve SQLite and /proc work, which serialize anyway; nothing blocks
        // on a process forever here (exits are awaited with pidfds or dedicated threads).
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            op_log::print_stderr(&format!("op-agent: cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(serve(config)) {
        // Stopped so that the guard starts the upgraded binary.
        Ok(()) if crate::upgrade::restart_requested() => {
            ExitCode::from(crate::upgrade::EXIT_UPGRADE)
        }
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            op_log::print_stderr(&format!("op-agent: {e:#}"));
            ExitCode::from(1)
        }
    };
    op_log::flush(std::time::Duration::from_secs(1));
    code
}

async fn serve(config: Config) -> anyhow::Result<()> {
    op_tls::catch_hangup(config.tls.is_some())
        .map_err(|e| anyhow::anyhow!("cannot install the SIGHUP handler: {e}"))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts that pass port 0 read the real address from this line; a stdout that
    // nobody reads is no reason not to run.
    op_log::print_stdout(&format!("listening on {addr}"));
    tracing::info!(%addr, "listening");

    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        trigger.cancel();
    });
    tokio::spawn(crate::footprint::trim());
    crate::run(config, listener, shutdown).await?;
    Ok(())
}

/// `op-agent reset-identity`: says what it removed and what happens next.
fn reset_identity(state_dir: &std::path::Path) -> ExitCode {
    match crate::state::identity::reset(state_dir) {
        Ok(report) => {
            let previous = report.previous_node_id.map_or_else(
                || "unknown (its database was lost)".to_string(),
                |id| id.to_string(),
            );
            println!(
                "identity reset in {}; the old node id was {previous}",
                state_dir.display()
            );
            for path in &report.removed {
                println!("removed {}", path.display());
            }
            println!(
                "kept api-token, logs/ and deployed packages. At its next start the agent enrolls as a new node; \
                 the manager retires the node with this hostname and machine id and hands its once-job history back."
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("op-agent reset-identity: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Never blocks and never panics on a failed stderr; failures are counted (`op-log`).
    op_log::init(filter, config.log_format == LogFormat::Json);
}

/// glibc gives each thread that allocates its own arena, and memory freed in an arena is rarely
/// returned. The agent's threads are few and mostly idle, so one arena loses nothing and keeps
/// the resident size small and flat when many jobs fire at once. `MALLOC_ARENA_MAX` overrides.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tuning parameter; called before any other
        // thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
