//! op-manager: the management node of op-agent.
//!
//! The manager stores jobs, nodes, once-job targets, run records, packages, invocations, tokens
//! and the audit log in `op-store`, changed only through openraft (a single manager is a
//! one-member cluster), and serves the HTTP API that agents, the CLI and tests use. Entry points: [`start`] (returns once
//! the manager serves) and [`run`] (until `shutdown`). `main.rs` only parses flags.
//!
//! Data directory layout:
//! - `state.db` (+ `-wal`, `-shm`): the state machine (op-store).
//! - `raft.db`: the raft log, vote and committed id.
//! - `snapshots/current.db`, `snapshots/current.meta.json`: the latest raft snapshot.
//! - `blobs/<sha256>`: package content, one file per distinct content; `blobs/tmp/`: uploads in
//!   progress (cleared at start).
//! - `admin.token`, `agent.token`: secrets made on first start (mode 0600).
//! - `manager.addr`: the API URL of the running manager; `raft.addr`: its raft URL.
//! - `manager.lock`: held while a manager uses the directory.

pub mod acks;
pub mod api;
pub mod app;
pub mod auth;
pub mod backup;
pub mod blobs;
pub mod cli;
pub mod clock;
pub mod config;
pub mod downloads;
pub mod error;
pub mod events;
pub mod fanout;
pub mod heartbeat;
pub mod hub;
pub mod ingest;
pub mod liveness;
pub mod load_history;
pub mod memory;
pub mod metrics;
pub mod missed;
pub mod notify;
pub mod output;
pub mod peers;
pub mod raft;
pub mod retention;
pub mod rollouts;
pub mod runon;
pub mod secrets;
pub mod state;
pub mod ui;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nix::fcntl::{Flock, FlockArg};
use op_proto::api::Scope;
use op_store::{Command, META_CLUSTER_ID, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::ManagerError;

use crate::app::App;
use crate::auth::Authenticator;
use crate::blobs::BlobStore;
use crate::downloads::DownloadGate;
use crate::heartbeat::HeartbeatBuffer;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// The two sockets a manager serves, bound by the caller (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    pub api: TcpListener,
    pub raft: TcpListener,
}

impl Listeners {
    pub fn bind(config: &Config) -> Result<Listeners, ManagerError> {
        let api = TcpListener::bind(config.listen).map_err(|e| ManagerError::Listen {
            what: "api listener",
            source: e,
        })?;
        let raft = TcpListener::bind(config.raft_listen).map_err(|e| ManagerError::Listen {
            what: "raft listener",
            source: e,
        })?;
        Ok(Listeners { api, raft })
    }
}

/// A manager that is serving.
pub struct Running {
    pub api_url: String,
    pub raft_url: String,
    pub api_addr: SocketAddr,
    pub raft_addr: SocketAddr,
    task: JoinHandle<Result<(), ManagerError>>,
}

impl Running {
    /// Waits until the manager has shut down (after `shutdown` was cancelled).
    pub async fn wait(self) -> Result<(), ManagerError> {
        self.task
            .await
            .map_err(|e| ManagerError::Raft(format!("manager task failed: {e}")))?
    }
}

/// Starts a manager and waits for it to shut down.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ManagerError> {
    start(config, listeners, shutdown).await?.wait().await
}

/// The URL for a bound address: the advertised one if configured; an unspecified bind address is
/// replaced by this host's name so that other machines can use it.
fn url_for(advertised: Option<&str>, addr: SocketAddr, scheme: &str) -> String {
    if let Some(u) = advertised {
        return op_client::normalize_base_url(u).unwrap_or_else(|_| u.to_string());
    }
    if addr.ip().is_unspecified() {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "127.0.0.1".into());
        return format!("{scheme}://{host}:{}", addr.port());
    }
    format!("{scheme}://{addr}")
}

fn io_err(path: &Path, e: std::io::Error) -> ManagerError {
    ManagerError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: op_tls::guard::ConnLimits,
    cap: Option<Arc<op_tls::guard::ConnCap>>,
    handle: axum_server::Handle<SocketAddr>,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
) -> Result<JoinHandle<std::io::Result<()>>, ManagerError> {
    let listen_err = |e| ManagerError::Listen {
        what: "listener",
        source: e,
    };
    listener.set_nonblocking(true).map_err(listen_err)?;
    // The peer address feeds the authentication-failure limiter.
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    // Every connection is bounded in time (op_tls::guard): silent, slow-head and dripping-body
    // clients are closed. hyper's own header-read timeout stays as a second bound on HTTP/1. A
    // read buffer capped at hyper's minimum (8 KiB, also the largest request head) keeps each
    // idle keep-alive connection at one 8 KiB buffer instead of a 16 KiB one: 80 MB less at
    // 10,000 parked agents (valgrind massif, BENCHMARKS.md). Bodies still stream through it in
    // 8 KiB reads.
    let mut guard = op_tls::guard::GuardAcceptor::new(limits);
    if let Some(cap) = cap {
        guard = guard.capped(cap);
    }
    Ok(match tls {
        None => {
            let mut server = axum_server::from_tcp(listener)
                .map_err(listen_err)?
                .handle(handle)
                .acceptor(guard);
            server
                .http_builder()
                .http1()
                .header_read_timeout(limits.head_timeout)
                .max_buf_size(8192);
            tokio::spawn(server.serve(service))
        }
        Some(config) => {
            let mut server = axum_server::tls_rustls::from_tcp_rustls(listener, config)
                .map_err(listen_err)?
                .handle(handle)
                .map(move |tls| tls.acceptor(guard.clone()));
            server
                .http_builder()
                .http1()
                .header_read_timeout(limits.head_timeout)
                .max_buf_size(8192);
            tokio::spawn(server.serve(service))
        }
    })
}

/// Starts a manager on `listeners` and returns once it serves the API (raft has a leader and the
/// first-start tokens exist). Cancel `shutdown` to stop it, then [`Running::wait`].
pub async fn start(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<Running, ManagerError> {
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    // The data dir is the owner's only (main.rs sets the umask for what is created inside); a
    // directory made by an older release, or by hand, is tightened here.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err(&dir, e))?;
    }
    let lock_path = dir.join("manager.lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io_err(&lock_path, e))?;
    let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        ManagerError::Config(format!(
            "{}: another op-manager uses this data directory ({e})",
            dir.display()
        ))
    })?;

    let api_addr = listeners.api.local_addr().map_err(|e| io_err(&dir, e))?;
    let raft_addr = listeners.raft.local_addr().map_err(|e| io_err(&dir, e))?;
    // The certificate files are read now, so a bad one stops the start with its name.
    let api_tls = match &config.tls {
        Some(t) => Some(
            t.rustls()
                .map_err(|e| ManagerError::Config(e.to_string()))?,
        ),
        None => None,
    };
    // With TLS on, peers speak mutual TLS on the raft listener (DESIGN 9).
    let raft_tls = match &config.peer_tls {
        Some(t) => Some(
            t.rustls()
                .map_err(|e| ManagerError::Config(format!("peer TLS: {e}")))?,
        ),
        None => None,
    };
    let peer_http = raft::network::http_client(config.peer_tls.as_ref())?;
    let scheme = if api_tls.is_some() { "https" } else { "http" };
    let raft_scheme = if raft_tls.is_some() { "https" } else { "http" };
    let api_url = url_for(config.advertise_api.as_deref(), api_addr, scheme);
    let raft_url = url_for(config.advertise_raft.as_deref(), raft_addr, raft_scheme);

    let state_path = dir.join("state.db");
    let store = Arc::new(
        tokio::task::spawn_blocking(move || Store::open(state_path))
            .await
            .map_err(|e| ManagerError::Raft(e.to_string()))??,
    );
    let me = raft::Member {
        api_addr: api_url.clone(),
        raft_addr: raft_url.clone(),
    };
    let (identity, join) = identity(&config, &dir, &store, &peer_http).await?;
    let keeper = Arc::new(secrets::Keeper::open(&dir)?);
    check_secrets_key(&store, &keeper).await?;
    let hub = Arc::new(Hub::new(config.retention.run_max_bytes / 10));
    let cluster = Arc::new(
        raft::open(
            identity,
            &dir,
            store.clone(),
            hub.clone(),
            raft::RaftSettings {
                snapshot_logs: config.raft_snapshot_logs,
                heartbeat: config.raft_heartbeat,
                election_timeout: config.raft_election_timeout,
                peer_http: peer_http.clone(),
                data_dir: dir.clone(),
                disk_reserve: config.disk_reserve,
            },
        )
        .await?,
    );
    if join == Join::No {
        cluster.initialize_alone(me.clone()).await?;
    }

    let blob_dir = dir.join("blobs");
    let blobs = Arc::new(BlobStore::open(blob_dir.clone()).map_err(|e| io_err(&blob_dir, e))?);
    let metrics = Arc::new(Metrics::new());
    let downloads = DownloadGate::new(
        config.download_concurrency,
        config.download_rate_limit,
        metrics.downloads.clone(),
    );
    let (ingest, ingest_queue) = ingest::RunIngest::new();
    let writer = state::Writer::new(cluster.clone(), metrics.clone());
    let app = Arc::new(App {
        auth: Arc::new(Authenticator::new(store.clone(), hub.clone())),
        beats: Arc::new(HeartbeatBuffer::new(config.load_sample_every)),
        acks: Default::default(),
        peer_dir: Default::default(),
        ticket_public: Default::default(),
        conn_cap: op_tls::guard::ConnCap::new(config.max_connections),
        ingest,
        metrics,
        writer,
        blobs,
        downloads,
        shutdown: shutdown.clone(),
        api_url: api_url.clone(),
        raft_url: raft_url.clone(),
        outputs: Default::default(),
        secrets: keeper.clone(),
        config,
        store,
        raft: cluster.raft.clone(),
        cluster: cluster.clone(),
        hub,
    });
    let raft_handle = axum_server::Handle::new();
    let raft_server = serve(
        listeners.raft,
        raft::server::router(
            Arc::new(raft::server::RaftListener {
                cluster: cluster.clone(),
                auth: app.auth.clone(),
                metrics: app.metrics.clone(),
                outputs: app.outputs.clone(),
                secrets: keeper.clone(),
            }),
            blobs::replicate::routes(app.replicas()),
        ),
        app.config.conn_limits(),
        // Peers only: few connections, and never to be refused.
        None,
        raft_handle.clone(),
        raft_tls.clone(),
    )?;
    if let Join::Via(url) = &join {
        tracing::info!(join = %url, node_id = cluster.id(), "asking to be added to the cluster");
        raft::membership::request_membership(&cluster, url, &me).await?;
        tracing::info!(node_id = cluster.id(), "joined the cluster as a voter");
    }
    // A single manager is its own majority: wait for it to lead, so the first-start tokens can
    // be written before we announce ourselves. A member of a larger cluster serves at once (its
    // applied state, forwarding to the leader once there is one) even while no majority is up.
    if cluster.alone().await {
        cluster.wait_for_leader(Duration::from_secs(60)).await?;
    }
    bootstrap(&app).await?;
    let api_handle = axum_server::Handle::new();
    let api_server = serve(
        listeners.api,
        {
            // The console calls the API router in process, so it is built once and shared.
            let api = api::router(app.clone());
            api.clone()
                .merge(ui::router(app.clone(), api, peer_http.clone()))
        },
        app.config.conn_limits(),
        Some(app.conn_cap.clone()),
        api_handle.clone(),
        api_tls.clone(),
    )?;
    let mut tasks = vec![];
    let raft_stopped = Arc::new(std::sync::OnceLock::new());
    if let (Some(tls), Some(served)) = (&app.config.tls, api_tls) {
        tasks.push(tls.watch(served, shutdown.clone()));
    }
    if let (Some(tls), Some(served)) = (&app.config.peer_tls, raft_tls) {
        tasks.push(tls.watch(served, shutdown.clone()));
    }
    // Each background worker takes the handles it uses, not the whole App.
    let config = &app.config;
    tasks.extend([
        tokio::spawn(heartbeat::flush_loop(
            app.beats.clone(),
            app.writer.clone(),
            app.metrics.clone(),
            config.heartbeat_flush,
            shutdown.clone(),
        )),
        tokio::spawn(acks::flush_loop(
            app.acks.clone(),
            app.store.clone(),
            app.writer.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(liveness::run(
            liveness::Liveness {
                store: app.store.clone(),
                writer: app.writer.clone(),
                beats: app.beats.clone(),
                clock: Arc::new(clock::SystemClock),
                node_timeout: config.node_timeout,
                forget_after: config.forget_after,
                metrics: app.metrics.clone(),
            },
            shutdown.clone(),
        )),
        tokio::spawn(events::run(
            events::EventTimer {
                store: app.store.clone(),
                writer: app.writer.clone(),
                clock: Arc::new(clock::SystemClock),
                window: config.event_window,
            },
            shutdown.clone(),
        )),
        tokio::spawn(notify::run(
            notify::Notifier {
                store: app.store.clone(),
                writer: app.writer.clone(),
                hub: app.hub.clone(),
                metrics: app.metrics.clone(),
                policy: op_notify::RetryPolicy {
                    initial: config.notify_retry_initial,
                    factor: 2,
                    max: config.notify_retry_max,
                },
            },
            shutdown.clone(),
        )),
        tokio::spawn(missed::run(
            missed::FireJudge {
                store: app.store.clone(),
                writer: app.writer.clone(),
                beats: app.beats.clone(),
                clock: Arc::new(clock::SystemClock),
                every: config.fire_check_every,
                settle: config.fire_settle,
                skew_threshold: config.clock_skew_threshold,
            },
            shutdown.clone(),
        )),
        tokio::spawn(runon::run(
            runon::RunOnFirer {
                store: app.store.clone(),
                writer: app.writer.clone(),
                beats: app.beats.clone(),
                clock: Arc::new(clock::SystemClock),
                every: std::time::Duration::from_millis(200),
                ack_timeout: config.directive_ack_timeout,
            },
            shutdown.clone(),
        )),
        tokio::spawn(rollouts::run(
            rollouts::RolloutDriver {
                store: app.store.clone(),
                writer: app.writer.clone(),
                beats: app.beats.clone(),
                clock: Arc::new(clock::SystemClock),
                every: std::time::Duration::from_millis(500),
            },
            shutdown.clone(),
        )),
        tokio::spawn(retention::run(
            retention::Retention {
                writer: app.writer.clone(),
                hub: app.hub.clone(),
                metrics: app.metrics.clone(),
                limits: config.retention,
                every: config.prune_interval,
            },
            shutdown.clone(),
        )),
        tokio::spawn(blobs::gc_loop(
            app.blobs.clone(),
            app.store.clone(),
            app.hub.clone(),
            app.metrics.clone(),
            config.blob_gc_interval,
            shutdown.clone(),
        )),
        tokio::spawn(fanout::driver::run(
            app.store.clone(),
            app.writer.clone(),
            app.hub.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(ingest::run(
            app.writer.clone(),
            app.metrics.clone(),
            ingest_queue,
            shutdown.clone(),
        )),
        tokio::spawn(memory::trim_loop(shutdown.clone())),
        tokio::spawn(blobs::replicate::sync_loop(
            app.replicas(),
            app.store.clone(),
            app.hub.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(raft::events::watch(
            cluster.clone(),
            app.metrics.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(exit_on_raft_stop(
            cluster.raft.clone(),
            shutdown.clone(),
            raft_stopped.clone(),
        )),
    ]);
    for (name, url) in [("manager.addr", &api_url), ("raft.addr", &raft_url)] {
        let path = dir.join(name);
        std::fs::write(&path, format!("{url}\n")).map_err(|e| io_err(&path, e))?;
    }
    tracing::info!(api = %api_url, raft = %raft_url, data_dir = %dir.display(), "op-manager serving");

    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        // Parked sync calls see the same token and return at once; give the rest a moment.
        api_handle.graceful_shutdown(Some(Duration::from_secs(5)));
        let _ = api_server.await;
        // A background write can wait up to LEADER_WAIT for a leader that will not come (the
        // other members are stopping too): give the tasks a moment, then drop what is left.
        // Nothing is lost: an agent resends what was not acknowledged, heartbeats come again.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        for mut t in tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
            }
        }
        raft_handle.graceful_shutdown(Some(Duration::from_secs(2)));
        let _ = raft_server.await;
        if let Err(e) = app.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        drop(lock);
        if let Some(why) = raft_stopped.get() {
            return Err(ManagerError::Raft(format!(
                "{why}; exiting so that the service manager starts op-manager again"
            )));
        }
        tracing::info!("op-manager stopped");
        Ok(())
    });
    Ok(Running {
        api_url,
        raft_url,
        api_addr,
        raft_addr,
        task,
    })
}

/// openraft 0.9 stops for good on a storage error (a full disk, an I/O error): the `Raft` then
/// answers every call with `Fatal` and cannot be resumed in place. When that happens outside a
/// shutdown, the manager records why, shuts down and exits non-zero, so that systemd
/// (`Restart=on-failure`) starts it again on the same data dir, which recovers from its log.
/// `/healthz` answers 503 from the moment raft stops.
async fn exit_on_raft_stop(
    raft: raft::Raft,
    shutdown: CancellationToken,
    stopped: Arc<std::sync::OnceLock<String>>,
) {
    let mut metrics = raft.metrics();
    loop {
        let why = {
            let m = metrics.borrow_and_update();
            match &m.running_state {
                Err(e) => Some(format!("raft stopped: {e}")),
                Ok(()) if m.state == openraft::ServerState::Shutdown => {
                    Some("raft shut down".to_string())
                }
                Ok(()) => None,
            }
        };
        let gone = match why {
            Some(why) => Some(why),
            None => tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = metrics.changed() => changed.err().map(|_| "raft stopped".to_string()),
            },
        };
        if let Some(why) = gone {
            if shutdown.is_cancelled() {
                return;
            }
            tracing::error!(error = %why, "raft stopped; op-manager exits so that it is started again");
            let _ = stopped.set(why);
            shutdown.cancel();
            return;
        }
    }
}

/// Whether this start joins an existing cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Join {
    /// Start (or restart) on this data dir's own state; a new data dir becomes a new cluster.
    No,
    /// Ask the member at this raft URL to add this node.
    Via(String),
}

/// This data dir's cluster identity: loaded, obtained from the member named by `--join`, or made
/// for a new cluster. A data dir from before cluster identities adopts its stored cluster id.
async fn identity(
    config: &Config,
    dir: &Path,
    store: &Arc<Store>,
    peer_http: &reqwest::Client,
) -> Result<(raft::Identity, Join), ManagerError> {
    use raft::messages::JoinRequest;
    if let Some(identity) = raft::Identity::load(dir)? {
        if config.node_id.is_some_and(|n| n != identity.node_id) {
            return Err(ManagerError::Config(format!(
                "node_id: this data dir is node {} of cluster {}; --node-id cannot change it",
                identity.node_id, identity.cluster_id
            )));
        }
        let join = match &config.join {
            // A node whose join was interrupted asks again; a member ignores --join.
            Some(url) if !dir.join("raft.db").is_file() || !was_member(dir, identity.node_id) => {
                Join::Via(
                    op_client::normalize_base_url(url)
                        .map_err(|e| ManagerError::Config(format!("join: {e}")))?,
                )
            }
            _ => Join::No,
        };
        return Ok((identity, join));
    }
    let stored_id = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.meta(META_CLUSTER_ID))
            .await
            .map_err(|e| ManagerError::Raft(e.to_string()))??
    };
    if let Some(cluster_id) = stored_id {
        // State from a build without cluster.json: keep its cluster, make a secret.
        let identity = raft::Identity {
            cluster_id,
            node_id: config.node_id.unwrap_or(1),
            secret: raft::identity::new_secret(),
        };
        identity.save(dir)?;
        return Ok((identity, Join::No));
    }
    match &config.join {
        None => {
            let identity = raft::Identity::new_cluster(config.node_id.unwrap_or(1));
            // A new cluster's first member makes the secrets key (before the identity, whose
            // file means "initialized": a crash in between makes both again).
            let ring = secrets::KeyRing::default().rotated(secrets::SecretsKey::generate());
            let key_path = dir.join(secrets::KEY_FILE);
            ring.save(dir).map_err(|e| io_err(&key_path, e))?;
            identity.save(dir)?;
            Ok((identity, Join::No))
        }
        Some(url) => {
            let url = op_client::normalize_base_url(url)
                .map_err(|e| ManagerError::Config(format!("join: {e}")))?;
            let token = config.join_token.as_deref().ok_or_else(|| {
                ManagerError::Config(
                    "join: --join needs --join-token (an admin token or the cluster secret)".into(),
                )
            })?;
            let answer = raft::membership::request_identity(
                &url,
                token,
                &JoinRequest {
                    node_id: config.node_id,
                    cluster_id: None,
                },
                peer_http,
            )
            .await?;
            if let Some(key) = answer.secrets_key.as_deref() {
                let key = secrets::SecretsKey::from_hex(key).map_err(|e| {
                    ManagerError::Join(format!("the member sent a secrets key that is {e}"))
                })?;
                let key_path = dir.join(secrets::KEY_FILE);
                secrets::KeyRing::default()
                    .rotated(key)
                    .save(dir)
                    .map_err(|e| io_err(&key_path, e))?;
            }
            let identity = raft::Identity {
                cluster_id: answer.cluster_id,
                node_id: answer.node_id,
                secret: answer.secret,
            };
            identity.save(dir)?;
            tracing::info!(cluster_id = %identity.cluster_id, node_id = identity.node_id, "got the cluster identity");
            Ok((identity, Join::Via(url)))
        }
    }
}

/// Says at start, clearly, when this member holds secrets it cannot open: no key file, or a key
/// other than the one they were sealed with. It then refuses to serve them (the sync answers
/// leave them out, the secrets API says why) and never makes a key of its own.
async fn check_secrets_key(
    store: &Arc<Store>,
    keeper: &secrets::Keeper,
) -> Result<(), ManagerError> {
    let sealed = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.sealed_secrets())
            .await
            .map_err(|e| ManagerError::Raft(e.to_string()))??
    };
    let ring = keeper.ring();
    match ring.current() {
        None if !sealed.is_empty() => tracing::error!(
            secrets = sealed.len(),
            "this manager's state holds secrets but it has no secrets key (DATA_DIR/secrets.key is missing): it refuses to serve them until secrets.key is copied from another member (docs/security.md)"
        ),
        None => tracing::info!(
            "no secrets key on this member; secrets cannot be set until it has one (op-manager secrets rotate-key, docs/security.md)"
        ),
        Some(key) => {
            let (_, failed) = keeper.open_many(&sealed);
            if let Some((name, e)) = failed.iter().next() {
                tracing::error!(secret = %name, failed = failed.len(), error = %e, "secrets that this manager's secrets.key does not open: it refuses to serve them");
            }
            tracing::info!(
                key_id = key.id(),
                secrets = sealed.len(),
                "secrets key loaded"
            );
        }
    }
    Ok(())
}

/// True when the state applied here names `node_id` as a voter (so `--join` has nothing left
/// to do; a node stopped while still a learner asks again).
fn was_member(dir: &Path, node_id: u64) -> bool {
    let Ok(Some(text)) = Store::meta_of_file(&dir.join("state.db"), op_store::META_MEMBERSHIP)
    else {
        return false;
    };
    serde_json::from_str::<raft::types::StoredMembership>(&text)
        .is_ok_and(|m| m.membership().voter_ids().any(|v| v == node_id))
}

/// First start of a cluster: name it, and create the admin and agent tokens, writing their
/// secrets to `admin.token` and `agent.token`. Runs on the leader only; a store that already has
/// tokens is left alone (an operator may have removed the files on purpose).
async fn bootstrap(app: &App) -> Result<(), ManagerError> {
    if !raft::is_leader(&app.raft) {
        return Ok(());
    }
    let boot = |e: error::DomainError| ManagerError::Bootstrap(e.to_string());
    if app
        .read(|s| s.meta(META_CLUSTER_ID))
        .await
        .map_err(boot)?
        .is_none()
    {
        app.write(Command::InitCluster {
            cluster_id: app.cluster.identity.cluster_id.clone(),
            at: Utc::now(),
        })
        .await
        .map_err(boot)?;
    }
    if !app.read(|s| s.tokens()).await.map_err(boot)?.is_empty() {
        return Ok(());
    }
    for (name, scope, file) in [
        ("admin", Scope::Admin, "admin.token"),
        ("agent", Scope::Agent, "agent.token"),
    ] {
        let generated = auth::generate(name, scope, None);
        app.write(Command::CreateToken {
            token: generated.token,
            at: Utc::now(),
            actor: "op-manager".into(),
        })
        .await
        .map_err(boot)?;
        let path = app.config.data_dir.join(file);
        auth::write_secret_file(&path, &generated.secret).map_err(|e| io_err(&path, e))?;
        tracing::info!(path = %path.display(), "created the {name} token");
    }
    Ok(())
}
