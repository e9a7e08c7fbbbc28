//! op-agent: the daemon that runs jobs on one machine.
//!
//! [`run`] wires the parts together and owns the shutdown order:
//! - [`config`]: flags, env and file merged into a validated [`Config`];
//! - [`state`]: the durable state dir (node id, run history, once-job ledger, cached job set);
//! - [`outbox`]: finished runs waiting for a manager (a queue in the state database, with its
//!   byte budget) and the drain loop that sends them through the link;
//! - [`executor`]: the only code that starts processes; runs one execution to its final record;
//! - [`schedule`]: when jobs run (cron, once, retries, concurrency policy), on the [`clock`] it
//!   is given;
//! - [`jobs_dir`]: standalone mode's job source; [`jobs`]: the job table the API reads;
//! - [`invoke`] and [`api`]: the HTTP API, including the seed's `/api/opAgent`;
//! - [`metrics`]: counters behind `/metrics` and `/v1/status`; [`health`]: the faults the
//!   heartbeat reports (state disk full, a stalled scheduler or executor).
//!
//! - [`directives`]: the manager's run-now and kill orders, each run once;
//! - [`link`]: with `--manager`, registers, keeps a long-poll sync open (the desired state replaces
//!   the standalone jobs dir) and carries the outbox's batches to the manager in use
//!   ([`backoff`]: the pause between attempts both use);
//! - [`deploy`]: brings the desired packages onto this machine (download, verify, unpack safely,
//!   switch atomically, keep versions for rollback) and reports what it holds.

pub mod api;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod deploy;
pub mod directives;
pub mod entry;
mod error;
pub mod executor;
pub mod facts;
pub mod footprint;
pub mod health;
pub mod invoke;
pub mod jobs;
pub mod jobs_dir;
pub mod link;
pub mod metrics;
pub mod outbox;
pub mod schedule;
pub mod state;
pub mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use op_proto::HostIdentity;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::AgentError;

/// The version of the `op-agent` binary built from this crate.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

static VERSION: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The version this agent reports (`--version`, heartbeats, facts): the one its binary's entry
/// set ([`entry::main`]), else [`BUILD_VERSION`].
pub fn version() -> &'static str {
    VERSION.get().copied().unwrap_or(BUILD_VERSION)
}

/// Sets the reported version; the first call wins.
pub fn set_version(v: &'static str) {
    let _ = VERSION.set(v);
}

use crate::api::{AgentFacts, AppInner, AppState};
use crate::executor::{ExecSettings, Executor};
use crate::invoke::Invoker;
use crate::jobs::JobTable;
use crate::metrics::Metrics;
use crate::schedule::SchedulerParts;
use crate::state::StateStore;

/// The URL peers reach this agent's API at: the bound address, or when bound to every address,
/// the first of the node's addresses (non-loopback first).
fn peer_url(bound: std::net::SocketAddr, config: &Config) -> String {
    let ip = if bound.ip().is_unspecified() {
        config
            .ips
            .iter()
            .find(|ip| !ip.is_loopback())
            .or(config.ips.first())
            .copied()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    } else {
        bound.ip()
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", std::net::SocketAddr::new(ip, bound.port()))
}

/// Runs the agent until `shutdown` is cancelled, then stops in order: no new fires or
/// invocations; running jobs get `shutdown_grace` to finish and are then killed (recorded
/// `killed`); the HTTP server drains; the state is left consistent.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    state::private_dir(&config.log_dir)
        .map_err(|e| AgentError::io("creating log dir", &config.log_dir, e))?;
    let state = StateStore::open(
        &config.state_dir,
        config.history_keep_runs,
        config.outbox_bytes,
    )?;
    let node_id = state.node_id()?;
    let metrics = Metrics::new();
    let peer_share = match (config.peer_serve, listener.local_addr()) {
        (true, Ok(bound)) => Some(Arc::new(deploy::peers::PeerShare::new(
            &config.state_dir,
            peer_url(bound, &config),
            config.peer_upload_rate_limit,
        ))),
        _ => None,
    };
    let settings = ExecSettings::from_config(&config, node_id);

    // Runs a previous agent left in flight become `lost` before anything new starts.
    executor::recover_in_flight(&state, &settings, &metrics)?;
    let queued = outbox::Outbox::new(state.clone()).totals_now()?;
    metrics.outbox(queued.depth, queued.bytes, queued.dropped);

    let health = health::Health::new();
    let (executor, finished) =
        Executor::new(settings, state.clone(), metrics.clone(), health.clone());
    let table = JobTable::default();
    // Probed once before anything is scheduled, so `fact.` selectors hold from the first fire;
    // the link probes again now and then and reports a change.
    let facts = facts::probe();
    let host = HostIdentity {
        hostname: config.node_name.clone(),
        ips: config.ips.clone(),
        labels: config.labels.clone(),
        facts: Some(facts.clone()),
    };
    let sources = CancellationToken::new();
    tokio::spawn(health::watchdog(
        health,
        config.state_dir.clone(),
        sources.clone(),
    ));
    let (scheduler, scheduler_task) = schedule::spawn(
        SchedulerParts {
            executor: executor.clone(),
            state: state.clone(),
            metrics: metrics.clone(),
            table: table.clone(),
            host,
            finished,
            clock: Arc::new(clock::SystemClock),
        },
        sources.clone(),
    )?;

    // Cancelled when shutdown begins: neither the API nor the manager's directives start runs
    // from then on.
    let closing = CancellationToken::new();
    let mut link_tasks = Vec::new();
    let mode = if let Some(dir) = &config.jobs_dir {
        let mut jobs_dir =
            jobs_dir::JobsDir::new(dir.clone(), state.clone(), config.state_dir.clone());
        // The first scan happens before the API serves, so the jobs are there from the start.
        if let Some(set) = jobs_dir.scan() {
            scheduler.set_jobs_applied(set).await;
        }
        tokio::spawn(jobs_dir::follow(
            jobs_dir,
            scheduler.clone(),
            sources.clone(),
        ));
        "standalone"
    } else {
        // Keep running the last known job set until a manager sends a new one.
        let mut cached_index = 0;
        // The pauses, windows and drain last received, before any job can fire (issue 23).
        match state::desired::load_holds(&config.state_dir) {
            Ok(Some(holds)) => scheduler.set_holds(holds),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "ignoring the cached pauses and windows"),
        }
        match state::desired::load(&config.state_dir) {
            Ok(Some(cached)) => {
                if cached.source == "manager" {
                    cached_index = cached.index;
                }
                scheduler.set_jobs_applied(cached.jobs).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "ignoring the cached job set"),
        }
        if config.managers.is_empty() {
            "cached"
        } else {
            // A CA or client certificate that does not load stops the start, naming the file.
            if let Some(first) = config.managers.first() {
                op_client::Client::with_tls(first, None, &config.manager_tls)
                    .map_err(|e| AgentError::Config(e.to_string()))?;
            }
            let link = link::spawn(
                link::LinkParts {
                    managers: config.managers.clone(),
                    token: config.manager_token.as_ref().map(|t| t.0.clone()),
                    tls: config.manager_tls.clone(),
                    register: op_proto::agent::RegisterRequest {
                        api_version: op_proto::API_VERSION,
                        node_id,
                        hostname: config.node_name.clone(),
                        ips: config.ips.clone(),
                        labels: config.labels.clone(),
                        agent_version: crate::version().to_string(),
                        os: std::env::consts::OS.to_string(),
                        arch: std::env::consts::ARCH.to_string(),
                        machine_id: state::identity::machine_id(),
                        reset: state::identity::pending_reset(&config.state_dir)?,
                        capabilities: vec![op_proto::agent::CAPABILITY_DIRECTIVE_ACK.to_string()],
                    },
                    scheduler: scheduler.clone(),
                    executor: executor.clone(),
                    directives: directives::Directives::new(
                        executor.clone(),
                        state.clone(),
                        closing.clone(),
                    ),
                    metrics: metrics.clone(),
                    state_dir: config.state_dir.clone(),
                    cached_index,
                    state: state.clone(),
                    facts,
                    stop: shutdown.clone(),
                    deploy: deploy::DeploySettings {
                        keep: config.package_keep,
                        limits: config.package_limits,
                        peers: peer_share.clone(),
                        metrics: Some(metrics.clone()),
                        peer_timeout: config.peer_timeout,
                        ..deploy::DeploySettings::new(config.deploy_dir.clone())
                    },
                },
                sources.clone(),
            );
            // The outbox drains through the link's connection once a manager knows this node.
            let drain = outbox::Drain {
                outbox: outbox::Outbox::new(state.clone()),
                courier: link.courier,
                metrics: metrics.clone(),
                node_id,
            };
            link_tasks = link.tasks;
            link_tasks.push(tokio::spawn(drain.run(sources.clone())));
            "managed"
        }
    };

    let credentials = match (&config.auth.basic, &config.auth.token) {
        (None, None) => {
            let (token, path) = state::token::ensure(&config.state_dir)?;
            tracing::warn!(path = %path.display(), "no credential configured: the API accepts the bearer token stored in this file");
            api::auth::Credentials::new(None, Some(&token))
        }
        (basic, token) => api::auth::Credentials::new(
            basic.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
            token.as_deref(),
        ),
    };

    let app = api::router(AppState(Arc::new(AppInner {
        invoker: Invoker {
            table,
            executor: executor.clone(),
            closing: closing.clone(),
        },
        executor: executor.clone(),
        state: state.clone(),
        metrics: metrics.clone(),
        credentials,
        auth_failures: Default::default(),
        facts: AgentFacts {
            node_id,
            hostname: config.node_name.clone(),
            ips: config.ips.clone(),
            labels: config.labels.clone(),
            managers: config.managers.clone(),
            mode: mode.into(),
            started_at: Utc::now(),
        },
        log_dir: config.log_dir.clone(),
        peers: peer_share.clone(),
    })));

    let listener = listener.into_std().map_err(AgentError::Server)?;
    let handle = axum_server::Handle::new();
    // Every connection is bounded in time: silent, slow-head and dripping-body clients are
    // closed (op_tls::guard).
    let limits = config.conn_limits;
    let guard = op_tls::guard::GuardAcceptor::new(limits);
    let mut server_task = match &config.tls {
        None => {
            let mut server = axum_server::from_tcp(listener)
                .map_err(AgentError::Server)?
                .handle(handle.clone())
                .acceptor(guard);
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(limits.head_timeout));
            tokio::spawn(
                server.serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>()),
            )
        }
        Some(tls) => {
            let served = tls
                .rustls()
                .map_err(|e| AgentError::Config(e.to_string()))?;
            // Reloads the certificate when its files change or on SIGHUP.
            drop(tls.watch(served.clone(), shutdown.clone()));
            let mut server = axum_server::tls_rustls::from_tcp_rustls(listener, served)
                .map_err(AgentError::Server)?
                .handle(handle.clone())
                .map(|tls| tls.acceptor(guard));
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(limits.head_timeout));
            tokio::spawn(
                server.serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>()),
            )
        }
    };
    tracing::info!(%node_id, mode, "agent running");

    tokio::select! {
        _ = shutdown.cancelled() => {}
        result = &mut server_task => {
            // The server stopped on its own: fatal for an agent, whose API is part of its job.
            sources.cancel();
            closing.cancel();
            executor.kill_all("agent stopped: its HTTP server failed").await;
            return Err(match result {
                Ok(Ok(())) => AgentError::Server(std::io::Error::other("the HTTP server stopped unexpectedly")),
                Ok(Err(e)) => AgentError::Server(e),
                Err(e) => AgentError::Task(e.to_string()),
            });
        }
    }

    tracing::info!("shutting down: no new runs");
    closing.cancel();
    sources.cancel();
    let _ = scheduler_task.await;
    for task in link_tasks {
        let _ = task.await;
    }

    let running = executor.running();
    if !running.is_empty() {
        tracing::info!(runs = running.len(), grace = ?config.shutdown_grace, "waiting for running jobs");
        let all_done = async {
            for h in &running {
                h.wait().await;
            }
        };
        if tokio::time::timeout(config.shutdown_grace, all_done)
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace over: killing the remaining runs");
            executor
                .kill_all("agent shut down before the run finished")
                .await;
        }
    }

    // In-flight HTTP requests (sync invocations) have their answers now.
    handle.graceful_shutdown(Some(Duration::from_secs(5)));
    match server_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(AgentError::Server(e)),
        Err(e) => return Err(AgentError::Task(e.to_string())),
    }
    tracing::info!("agent stopped");
    Ok(())
}
