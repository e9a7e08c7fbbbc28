//! The link to the managers: register, keep a long-poll sync open, apply the desired state, and
//! carry the outbox's batches.
//!
//! The link owns the connection: which manager to talk to ([`Managers`]), the node's credential
//! and the kept client. Two users share it:
//! - the **sync loop** registers, then opens the node's watch (`op_proto::watch`): one kept
//!   connection carrying a heartbeat (load, running runs, counters) up every sync wait and after
//!   every state applied, and the node's full desired state down whenever it changes (and on
//!   every reconnect). A manager without the watch is long-polled instead: `POST /v1/agent/sync`
//!   over and over, each call the heartbeat, returning the full desired state at once when it
//!   changed and otherwise when the manager's wait ends. A new job set goes to the
//!   scheduler and is cached in `desired.json`, so the jobs keep running across restarts with no
//!   manager (invariant 6). Because every answer is the full state, a reconnect cannot miss an
//!   update.
//! - the **outbox's drain** ([`crate::outbox::Drain`]) sends finished runs through the
//!   [`courier::ManagerCourier`] this module hands out: a batch goes to the manager in use, and
//!   only once the sync loop has registered. The queue and the loop are the outbox's.
//!
//! On failure both move to the next manager and back off exponentially with jitter
//! ([`crate::backoff`]), so a restarted manager is not stormed by every agent at the same
//! instant. The manager list starts as the configured `--manager` URLs and follows what the
//! managers announce.
//!
//! What the state contains besides jobs is handed to the components that own it: packages go to
//! the [`Deployer`], which downloads them from the current manager ([`packages::ManagerSource`]);
//! this module only moves state between the manager and them. When the deployer's report changes
//! (a download started, a version is in place, a deploy failed) the parked sync is dropped and a
//! new one sent at once, so the manager learns within a moment rather than at the end of the wait.
//! A run's start does the same (coalesced over a few ms, so a fan-out's starts share one beat):
//! the beat lists the running runs, which `top`, the console and `logs --follow` read.

pub mod courier;
mod heartbeat;
mod output;
mod packages;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use op_client::{Client, ClientError, WatchState};
use op_proto::agent::{AgentSettings, DesiredJob, DesiredState, Directive, RegisterRequest};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff::{backoff, pause};
use crate::deploy::{DeploySettings, Deployer};
use crate::directives::Directives;
use crate::executor::Executor;
use crate::metrics::Metrics;
use crate::schedule::Scheduler;
use crate::state::desired::{self, CachedJobs};
use crate::state::identity::NODE_TOKEN_FILE;

/// How long a heartbeat sent for a run's start waits for more starts to join it.
const START_COALESCE: Duration = Duration::from_millis(5);

/// Time limit of one ordinary request (register, run batch).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the link needs from the rest of the agent.
pub struct LinkParts {
    /// The configured `--manager` URLs.
    pub managers: Vec<String>,
    /// The credential presented to managers.
    pub token: Option<String>,
    /// What the agent trusts and presents over TLS.
    pub tls: op_client::ClientTls,
    pub register: RegisterRequest,
    pub scheduler: Scheduler,
    pub executor: Executor,
    /// Where the directives of each desired state go.
    pub directives: Directives,
    pub metrics: Metrics,
    pub state_dir: std::path::PathBuf,
    /// The state index of the cached job set, so an unchanged state is not re-sent at start.
    pub cached_index: u64,
    /// How packages of the desired state are deployed.
    pub deploy: DeploySettings,
    pub state: crate::state::StateStore,
    /// This host's facts as probed at start.
    pub facts: op_proto::facts::Facts,
    /// The agent's own shutdown: a self-upgrade stops the agent through it (issue 22).
    pub stop: CancellationToken,
}

/// The managers this agent knows and which one it is using.
#[derive(Debug)]
pub struct Managers {
    configured: Vec<String>,
    list: Vec<String>,
    current: usize,
}

impl Managers {
    pub fn new(configured: Vec<String>) -> Managers {
        // Start at a random member so that a fleet spreads over the managers.
        let current = if configured.is_empty() {
            0
        } else {
            rand::rng().random_range(0..configured.len())
        };
        Managers {
            list: configured.clone(),
            configured,
            current,
        }
    }

    pub fn current(&self) -> String {
        self.list
            .get(self.current)
            .cloned()
            .unwrap_or_else(|| self.configured[0].clone())
    }

    /// Moves to the next manager after a failure.
    pub fn rotate(&mut self) {
        if !self.list.is_empty() {
            self.current = (self.current + 1) % self.list.len();
        }
    }

    /// Adopts the member list a manager announced; the configured URLs stay as a fallback so an
    /// agent whose whole learned list is gone can still find its way back.
    pub fn learn(&mut self, announced: &[String]) {
        if announced.is_empty() {
            return;
        }
        let current = self.current();
        let mut list: Vec<String> = announced.to_vec();
        for c in &self.configured {
            if !list.iter().any(|l| same_url(l, c)) {
                list.push(c.clone());
            }
        }
        self.current = list.iter().position(|l| same_url(l, &current)).unwrap_or(0);
        self.list = list;
    }
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The running link: its tasks, and the courier the outbox's drain sends through.
pub struct Link {
    /// They return when `shutdown` is cancelled.
    pub tasks: Vec<JoinHandle<()>>,
    pub courier: Arc<courier::ManagerCourier>,
}

/// Starts the link's tasks; they return when `shutdown` is cancelled.
pub fn spawn(parts: LinkParts, shutdown: CancellationToken) -> Link {
    let managers = Arc::new(Mutex::new(Managers::new(parts.managers.clone())));
    let (registered_tx, registered_rx) = watch::channel(false);
    let node_token_path = parts.state_dir.join(NODE_TOKEN_FILE);
    let node_token = match std::fs::read_to_string(&node_token_path) {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => None,
    };
    let shared = Arc::new(Shared {
        managers,
        enroll_token: parts.token.clone(),
        node_token: Mutex::new(node_token),
        node_token_path,
        tls: parts.tls.clone(),
        node_id: parts.register.node_id,
        client: Mutex::new(None),
        watch_client: Mutex::new(None),
    });
    let deployer = Deployer::new(
        parts.deploy,
        Arc::new(packages::ManagerSource::new(shared.clone())),
        shutdown.clone(),
    );
    parts.scheduler.hold_once_jobs_while(deployer.deploying());
    let upgrader = crate::upgrade::Upgrader::new(
        &parts.state_dir,
        Arc::new(packages::ManagerSource::new(shared.clone())),
        parts.stop.clone(),
    );
    let outputs = output::OutputSender::new(
        parts.state.clone(),
        parts.executor.clone(),
        parts.register.node_id,
        shared.clone(),
    );
    let sync = SyncLoop {
        outputs,
        deployer: deployer.clone(),
        upgrader,
        shared: shared.clone(),
        register: parts.register,
        scheduler: parts.scheduler,
        executor: parts.executor,
        directives: parts.directives,
        metrics: parts.metrics.clone(),
        state_dir: parts.state_dir,
        index: parts.cached_index,
        applied_jobs: None,
        applied_labels: None,
        applied_holds: None,
        facts_hash: parts.facts.hash(),
        facts: parts.facts,
        facts_probed: std::time::Instant::now(),
        facts_acked: None,
        facts_changed: false,
        received: Vec::new(),
        settings: AgentSettings::default(),
        registered: registered_tx,
        state: parts.state.clone(),
    };
    let stop_deployer = shutdown.clone();
    let tasks = vec![
        tokio::spawn(sync.run(shutdown)),
        tokio::spawn(async move {
            stop_deployer.cancelled().await;
            deployer.wait().await;
        }),
    ];
    Link {
        tasks,
        courier: Arc::new(courier::ManagerCourier::new(shared, registered_rx)),
    }
}

struct Shared {
    managers: Arc<Mutex<Managers>>,
    /// The configured `--manager-token`: the fleet's enrollment token, which can only register.
    enroll_token: Option<String>,
    /// The node's own credential, issued at enrollment and kept in `node_token_path`.
    node_token: Mutex<Option<String>>,
    node_token_path: std::path::PathBuf,
    tls: op_client::ClientTls,
    node_id: Uuid,
    /// The client of the manager in use, kept across calls: building one loads the system's
    /// root certificates (hundreds of files), and a kept one reuses its connections. Measured:
    /// rebuilding it per call was a third of an agent's CPU in a fan-out of `true`.
    client: Mutex<Option<(String, Client)>>,
    /// The HTTP/1.1 client the watch is opened with (`op_client::Watch`), kept likewise.
    watch_client: Mutex<Option<(String, Client)>>,
}

impl Shared {
    fn current(&self) -> String {
        self.managers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .current()
    }

    fn rotate(&self) {
        self.managers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rotate();
    }

    fn learn(&self, list: &[String]) {
        self.managers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .learn(list);
    }

    /// The credential to present: the node's own once enrolled, else the enrollment token.
    fn credential(&self) -> Option<String> {
        self.node_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .or_else(|| self.enroll_token.clone())
    }

    fn has_node_token(&self) -> bool {
        self.node_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Keeps the credential the manager issued at enrollment, in memory and on disk.
    fn adopt_node_token(&self, token: String) {
        if let Err(e) = crate::state::desired::write_atomic_mode(
            &self.node_token_path,
            format!("{token}\n").as_bytes(),
            0o600,
        ) {
            // Still usable until a restart, which then enrolls again (and is refused while
            // this credential lives): say so loudly.
            tracing::error!(path = %self.node_token_path.display(), error = %e, "cannot store the node credential");
        }
        *self.node_token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
        self.forget_clients();
    }

    fn forget_clients(&self) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.watch_client.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Forgets a credential the manager no longer accepts (the node was forgotten or its token
    /// revoked), so the next registration enrolls again with the enrollment token.
    fn drop_node_token(&self) {
        let _ = std::fs::remove_file(&self.node_token_path);
        *self.node_token.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.forget_clients();
    }

    /// A fresh client for `url` with the current credential and the TLS settings.
    fn new_client(&self, url: &str) -> Result<Client, ClientError> {
        Client::with_tls(url, self.credential().as_deref(), &self.tls)
    }

    fn client(&self, url: &str) -> Result<Client, ClientError> {
        let mut cached = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((u, c)) = cached.as_ref()
            && u == url
        {
            return Ok(c.clone());
        }
        let c = self.new_client(url)?.with_timeout(REQUEST_TIMEOUT);
        *cached = Some((url.to_string(), c.clone()));
        Ok(c)
    }

    /// Opens this node's watch on the manager at `url`. Plain HTTP is HTTP/1.1 and goes
    /// through the kept client; over TLS a second client that speaks only HTTP/1.1 is kept for
    /// it (the manager would agree to HTTP/2, which has no upgrade).
    async fn open_watch(&self, url: &str, deltas: bool) -> Result<op_client::Watch, ClientError> {
        if url.starts_with("http://") {
            return self.client(url)?.watch(deltas).await;
        }
        let client = {
            let mut cached = self.watch_client.lock().unwrap_or_else(|p| p.into_inner());
            match cached.as_ref() {
                Some((u, c)) if u == url => c.clone(),
                _ => {
                    let c = Client::with_tls_http1(url, self.credential().as_deref(), &self.tls)?
                        .with_timeout(REQUEST_TIMEOUT);
                    *cached = Some((url.to_string(), c.clone()));
                    c
                }
            }
        };
        client.watch(deltas).await
    }
}

/// The manager (or a proxy before it) answered the watch's request, but not with the watch: an
/// older manager (`not_found`), a proxy that drops `Upgrade` (`upgrade_required`, or a 200), or
/// one that refuses it. The agent long-polls that manager instead. Refusals another call would
/// get too (credentials, an unknown node, a busy manager) are not this.
fn has_no_watch(e: &ClientError) -> bool {
    match e {
        ClientError::Decode { .. } => true,
        _ => {
            matches!(e.status(), Some(400 | 404 | 405 | 426 | 501 | 502))
                && !matches!(e.code(), Some("unknown_node" | "too_many_syncs"))
        }
    }
}

/// Waits for news the manager should hear at once rather than at the end of the wait: a deploy
/// or an upgrade moved on, the agent turned Degraded or healthy, a run started (then the starts
/// of the next few ms join it, one beat for a fan-out). False when a channel closed.
async fn news<A, B, C, D>(
    deploys: &mut watch::Receiver<A>,
    upgrades: &mut watch::Receiver<B>,
    health: &mut watch::Receiver<C>,
    starts: &mut watch::Receiver<D>,
) -> bool {
    tokio::select! {
        r = deploys.changed() => r.is_ok(),
        r = upgrades.changed() => r.is_ok(),
        r = health.changed() => r.is_ok(),
        r = starts.changed() => {
            if r.is_ok() {
                tokio::time::sleep(START_COALESCE).await;
            }
            r.is_ok()
        }
    }
}

/// True for answers that another manager would give too (bad credentials, another API version):
/// worth a log line at error level, and no point in hammering.
fn is_refusal(e: &ClientError) -> bool {
    matches!(e.status(), Some(400 | 401 | 403))
}

struct SyncLoop {
    deployer: Deployer,
    /// The agent release (issue 22): not deployed like other packages.
    upgrader: crate::upgrade::Upgrader,
    outputs: Arc<output::OutputSender>,
    shared: Arc<Shared>,
    register: RegisterRequest,
    scheduler: Scheduler,
    executor: Executor,
    directives: Directives,
    metrics: Metrics,
    state_dir: std::path::PathBuf,
    index: u64,
    applied_jobs: Option<Vec<DesiredJob>>,
    /// The labels the manager selects this node by (its own and manager-set), last applied.
    applied_labels: Option<std::collections::BTreeMap<String, String>>,
    /// The pauses, windows and drain last applied (issue 23).
    applied_holds: Option<op_proto::holds::Holds>,
    /// This host's facts as last probed, their hash and when.
    facts: op_proto::facts::Facts,
    facts_hash: String,
    facts_probed: std::time::Instant,
    /// The hash of the facts the manager holds ("" none); `None` while the manager has not said
    /// (an older manager never does, and is sent no facts).
    facts_acked: Option<String>,
    /// The facts changed since the job set was last given to the scheduler.
    facts_changed: bool,
    /// The run directives of the last full answer applied: every sync call acknowledges them
    /// (`Heartbeat::received`), so the manager knows they reached this agent.
    received: Vec<uuid::Uuid>,
    settings: AgentSettings,
    registered: watch::Sender<bool>,
    state: crate::state::StateStore,
}

impl SyncLoop {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        let mut registered_at: Option<String> = None;
        let mut deploys = self.deployer.subscribe();
        let mut upgrades = self.upgrader.subscribe();
        let mut health = self.executor.health().subscribe();
        let mut starts = self.executor.starts();
        // The watch in use, with its manager's URL, and the manager found to have none.
        let mut watch: Option<(String, op_client::Watch)> = None;
        let mut no_watch: Option<String> = None;
        // Deltas are asked for on every watch but the one opened after a delta that did not
        // fit what this agent holds: that one carries whole states, so a manager that keeps
        // sending bad deltas cannot make the agent reopen without end.
        let mut deltas = true;
        // On a watch, when the next periodic beat is due, and whether the last state needs no
        // beat at once: a beat follows a state only when it has something to say (run directives
        // to acknowledge, facts the manager lacks). A job saved for 50,000 agents then costs the
        // manager 50,000 answers, not 50,000 answers and 50,000 beats read and written.
        let mut next_beat: Option<tokio::time::Instant> = None;
        let mut quiet_state = false;
        while !shutdown.is_cancelled() {
            let after_quiet_state = std::mem::take(&mut quiet_state);
            let url = self.shared.current();
            let client = match self.shared.client(&url) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(manager = %url, error = %e, "bad manager URL");
                    self.shared.rotate();
                    if !pause(backoff(failures), &shutdown).await {
                        break;
                    }
                    failures += 1;
                    continue;
                }
            };
            if registered_at.as_deref() != Some(url.as_str()) {
                // A new registration asks again whether the manager has a watch (it may have
                // been upgraded meanwhile).
                no_watch = None;
                watch = None;
                match client.register(&self.register).await {
                    Ok(resp) => {
                        tracing::info!(manager = %url, node_id = %resp.node_id, "registered");
                        for old in &resp.replaced {
                            tracing::info!(replaced = %old, "identity reset: this node replaces its old node, whose once-job history it keeps");
                        }
                        if self.register.reset.take().is_some() {
                            crate::state::identity::reset_announced(&self.state_dir);
                        }
                        // Before any desired state is applied: a once-job revision the manager
                        // knows this node (or the node it replaced) ran never starts again.
                        match self.state.adopt_once_history(resp.once_history).await {
                            Ok(added) if !added.is_empty() => {
                                tracing::info!(
                                    revisions = added.len(),
                                    "once-job ledger rebuilt from the manager's records"
                                );
                                self.scheduler.once_jobs_ran(added).await;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                // Without the history, once-jobs could run twice: do not sync.
                                tracing::error!(error = %e, "cannot write the once-job history into the ledger");
                                if !pause(backoff(failures), &shutdown).await {
                                    break;
                                }
                                failures = failures.saturating_add(1);
                                continue;
                            }
                        }
                        self.shared.learn(&resp.managers);
                        self.settings = resp.settings;
                        if let Some(share) = self.deployer.peers() {
                            share.set_public_key(self.settings.ticket_public_key.clone());
                        }
                        self.facts_acked = resp.facts_hash;
                        registered_at = Some(url.clone());
                        let _ = self.registered.send(true);
                        if let Some(token) = resp.node_token {
                            tracing::info!(manager = %url, "enrolled: this node has its own credential now");
                            self.shared.adopt_node_token(token);
                            // `client` still carries the enrollment token, which may only
                            // register: sync with a client made for the new credential.
                            continue;
                        }
                    }
                    Err(e) if e.status() == Some(401) && self.shared.has_node_token() => {
                        tracing::warn!(manager = %url, "the node credential was refused (revoked, or the node was forgotten); enrolling again");
                        self.shared.drop_node_token();
                        // Register again at once with a client that carries the enrollment token.
                        continue;
                    }
                    Err(e) => {
                        self.log_failure(&url, "register", &e);
                        self.shared.rotate();
                        if !pause(backoff(failures), &shutdown).await {
                            break;
                        }
                        failures = failures.saturating_add(1);
                        continue;
                    }
                }
            }
            // News that came while the state was applied goes up now, in this beat.
            let news_waiting = deploys.has_changed().unwrap_or(true)
                || upgrades.has_changed().unwrap_or(true)
                || health.has_changed().unwrap_or(true)
                || starts.has_changed().unwrap_or(true);
            deploys.borrow_and_update();
            upgrades.borrow_and_update();
            health.borrow_and_update();
            starts.borrow_and_update();
            self.reprobe_facts().await;
            let mut reports = self.deployer.report();
            reports.extend(self.upgrader.report());
            let mut beat =
                heartbeat::build(self.shared.node_id, &self.executor, &self.metrics, reports);
            let wait = self.settings.sync_wait_secs;
            // Against the manager's receive time this gives the clocks' offset (directives).
            let sent_at = Utc::now();
            beat.sent_at = Some(heartbeat::reported_now());
            beat.received = self.received.clone();
            // Peers can fetch from here only with tickets, so say where only when they exist.
            beat.peer_url = self
                .deployer
                .peers()
                .filter(|p| p.public_key().is_some())
                .map(|p| p.url.clone());
            // Facts only when the manager holds others (or none): they rarely change.
            if self
                .facts_acked
                .as_ref()
                .is_some_and(|h| *h != self.facts_hash)
            {
                beat.facts = Some(self.facts.clone());
            }
            // The watch when the manager has one: the beat goes up whole first (a frame cut by
            // the select below would break the stream), then an answer is awaited as a sync
            // call's would be; none within the wait means nothing changed.
            if watch.as_ref().is_some_and(|(u, _)| *u != url) {
                watch = None;
            }
            let mut sent = Ok(());
            // A beat already sent on this watch stands until its wait is over.
            let beat_stands = after_quiet_state
                && !news_waiting
                && watch.is_some()
                && next_beat.is_some_and(|t| t > tokio::time::Instant::now());
            if watch.is_none() && no_watch.as_deref() != Some(url.as_str()) {
                match self.shared.open_watch(&url, deltas).await {
                    Ok(w) => {
                        watch = Some((url.clone(), w));
                        deltas = true;
                    }
                    Err(e) if has_no_watch(&e) => {
                        tracing::info!(manager = %url, "the manager has no watch; long-polling instead");
                        no_watch = Some(url.clone());
                    }
                    Err(e) => sent = Err(e),
                }
            }
            // A manager that sent nothing, not even `alive`, for the silence limit froze or was
            // cut off with the connection still open: give it up and move on, as a sync call
            // that timed out would.
            if let Some((_, w)) = watch.as_ref()
                && w.silent_for() > op_proto::watch::silence_limit(Duration::from_secs(wait.max(1)))
            {
                sent = Err(ClientError::Timeout {
                    url: url.clone(),
                    secs: w.silent_for().as_secs(),
                });
            }
            if sent.is_ok()
                && !beat_stands
                && let Some((_, w)) = watch.as_mut()
            {
                next_beat = Some(tokio::time::Instant::now() + Duration::from_secs(wait.max(1)));
                sent = match tokio::time::timeout(REQUEST_TIMEOUT, w.beat(self.index, &beat)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(ClientError::Timeout {
                        url: url.clone(),
                        secs: REQUEST_TIMEOUT.as_secs(),
                    }),
                };
            }
            let beat_at = next_beat
                .filter(|_| watch.is_some())
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(wait.max(1)));
            let answer = match sent {
                Err(e) => Err(e),
                Ok(()) => {
                    let exchange = async {
                        match watch.as_mut() {
                            Some((_, w)) => tokio::select! {
                                r = w.next::<DesiredState>() => r.map(Some),
                                _ = tokio::time::sleep_until(beat_at) => Ok(None),
                            },
                            None => client
                                .sync(self.index, wait, &beat)
                                .await
                                .map(|s| Some(WatchState::Whole(s))),
                        }
                    };
                    tokio::select! {
                        r = exchange => r,
                        // Something the manager should hear now: a new beat at once.
                        ok = news(&mut deploys, &mut upgrades, &mut health, &mut starts) => {
                            if ok { continue } else { break }
                        }
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            if answer.is_err() {
                watch = None;
            }
            // A delta (on a watch, from the last state sent there) becomes the whole state from
            // the one held; one that does not fit is a state this agent cannot know: reopen the
            // watch, whose first state is whole.
            let answer = match answer {
                Ok(Some(WatchState::Whole(state))) => Ok(Some(state)),
                Ok(Some(WatchState::Delta(delta))) => {
                    match delta.resolve(self.index, self.applied_jobs.as_deref().unwrap_or(&[])) {
                        Ok(state) => Ok(Some(state)),
                        Err(e) => {
                            tracing::warn!(manager = %url, error = %e, "a state delta does not fit the state held; reopening the watch for a whole state");
                            watch = None;
                            deltas = false;
                            continue;
                        }
                    }
                }
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match answer {
                Ok(None) => {
                    // The watch stayed open through the wait and took the beat: in touch.
                    failures = 0;
                    self.metrics.sync_ok(Duration::ZERO);
                }
                Ok(Some(state)) => {
                    failures = 0;
                    self.metrics
                        .sync_ok((Utc::now() - sent_at).to_std().unwrap_or_default());
                    // A watch's answer is not the reply to the beat just sent (it may have come
                    // long after a beat, or waited in the socket while this process was
                    // stopped): the clocks' offset is taken on the beat it names, whose send
                    // time it echoes (on the reported clock, less the test offset). None named:
                    // no offset is assumed.
                    let asked_at = if watch.is_some() {
                        state
                            .beat_sent_at
                            .map(|s| s - heartbeat::reported_offset())
                            .or(state.received_at)
                            .unwrap_or_else(Utc::now)
                    } else {
                        sent_at
                    };
                    // Nothing in it to acknowledge and no facts to send: the beat waits for
                    // its time (output requests come in light answers, always answered).
                    quiet_state =
                        watch.is_some() && state.directives.is_empty() && !state.directives_only;
                    self.apply(state, asked_at).await;
                    quiet_state &= self
                        .facts_acked
                        .as_ref()
                        .is_none_or(|h| *h == self.facts_hash);
                    self.upgrader.synced();
                }
                Err(e) if e.status() == Some(401) && self.shared.has_node_token() => {
                    tracing::warn!(manager = %url, "the node credential was refused (revoked, or the node was forgotten); enrolling again");
                    self.shared.drop_node_token();
                    registered_at = None;
                }
                Err(e) if e.code() == Some("unknown_node") => {
                    // The manager forgot this node (or never knew it): register again at once.
                    tracing::info!(manager = %url, "manager does not know this node; registering again");
                    registered_at = None;
                }
                Err(e) => {
                    self.metrics.sync_failed();
                    self.log_failure(&url, "sync", &e);
                    registered_at = None;
                    self.shared.rotate();
                    if !pause(backoff(failures), &shutdown).await {
                        break;
                    }
                    failures = failures.saturating_add(1);
                }
            }
        }
    }

    fn log_failure(&self, url: &str, what: &str, e: &ClientError) {
        if e.status() == Some(403) && self.shared.has_node_token() {
            // The credential speaks for another node than agent.db's (a state dir put together
            // from two hosts): another manager would say the same.
            tracing::error!(manager = %url, error = %e, "{what} refused: node.token and agent.db belong to different nodes; stop the agent and run: op-agent reset-identity --state-dir {}", self.state_dir.display());
        } else if is_refusal(e) {
            tracing::error!(manager = %url, error = %e, "{what} refused; check the agent's --manager-token and versions");
        } else {
            tracing::warn!(manager = %url, error = %e, "{what} failed; trying the next manager");
        }
    }

    /// Probes the facts again once [`crate::facts::REPROBE_EVERY`] has passed; a change goes to
    /// the scheduler (with the next job set) and to the manager (with the next beat).
    async fn reprobe_facts(&mut self) {
        if self.facts_probed.elapsed() < crate::facts::REPROBE_EVERY {
            return;
        }
        self.facts_probed = std::time::Instant::now();
        let Ok(facts) = tokio::task::spawn_blocking(crate::facts::probe).await else {
            return;
        };
        if facts != self.facts {
            tracing::info!(facts = %facts.summary(), "the host's facts changed");
            self.facts_hash = facts.hash();
            self.scheduler.set_facts(facts.clone());
            self.facts = facts;
            self.facts_changed = true;
        }
    }

    async fn apply(&mut self, state: DesiredState, sent_at: chrono::DateTime<Utc>) {
        // Directives first: they are what a caller is waiting for, and they run on their own.
        let (uploads, directives): (Vec<_>, Vec<_>) = state
            .directives
            .iter()
            .cloned()
            .partition(|d| matches!(d, Directive::UploadOutput { .. }));
        for d in uploads {
            if let Directive::UploadOutput {
                request_id,
                run_id,
                offset,
                reply_to,
            } = d
            {
                self.outputs.answer(request_id, run_id, offset, reply_to);
            }
        }
        if state.directives_only {
            // A light answer (output requests only): the desired state held is unchanged.
            return;
        }
        if let Some(hash) = state.facts_hash.clone() {
            self.facts_acked = Some(hash);
        }
        self.received = directives
            .iter()
            .filter_map(|d| match d {
                Directive::Run(r) => Some(r.run_id),
                _ => None,
            })
            .collect();
        // Secrets first: the run directives below and the jobs' next fires use them. Kept in
        // memory only (the job set cached below holds the `secret:NAME` references).
        self.executor.set_secrets(state.secrets.clone());
        if !directives.is_empty() {
            // Our clock minus the manager's, as of the moment the request left (the network
            // latency makes it a little small, so a deadline errs on the early side).
            let skew = state
                .received_at
                .map_or(chrono::Duration::zero(), |r| sent_at - r);
            self.directives.apply(directives, skew);
        }
        self.shared.learn(&state.managers);
        // The agent release of this platform goes to the upgrader; no reserved name is ever
        // deployed as a file.
        let own = op_proto::agent_upgrade::own_package_name();
        let (releases, packages): (Vec<_>, Vec<_>) = state
            .packages
            .iter()
            .cloned()
            .partition(|p| op_proto::agent_upgrade::is_reserved(&p.name));
        self.deployer.set_desired(&packages);
        self.upgrader.set_desired(
            releases.iter().find(|p| p.name == own),
            state.agent_release.as_ref(),
        );
        if let Some(settings) = state.settings.clone() {
            self.settings = settings;
            if let Some(share) = self.deployer.peers() {
                share.set_public_key(self.settings.ticket_public_key.clone());
            }
        }
        // Manager-set labels: the scheduler's own check of each job's selection must see them,
        // and a change re-checks the job set even when the set itself is the same.
        let labels_changed = state.labels.is_some() && state.labels != self.applied_labels;
        if labels_changed && let Some(labels) = state.labels.clone() {
            self.scheduler.set_labels(labels);
            self.applied_labels = state.labels.clone();
        }
        // Pauses, windows and drain (issue 23): before the job set, so a job that arrives with
        // its pause never fires unpaused.
        if let Some(holds) = state.holds.clone()
            && self.applied_holds.as_ref() != Some(&holds)
        {
            self.scheduler.set_holds(holds.clone());
            let (dir, cached) = (self.state_dir.clone(), holds.clone());
            match tokio::task::spawn_blocking(move || desired::save_holds(&dir, &cached)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "caching the pauses and windows failed"),
                Err(e) => tracing::warn!(error = %e, "caching the pauses and windows failed"),
            }
            self.applied_holds = Some(holds);
        }
        // Changed facts re-check the job set too (`fact.` selectors).
        let facts_changed = std::mem::take(&mut self.facts_changed);
        if labels_changed || facts_changed || self.applied_jobs.as_ref() != Some(&state.jobs) {
            tracing::info!(
                index = state.index,
                jobs = state.jobs.len(),
                "applying the manager's job set"
            );
            let cached = CachedJobs {
                version: 1,
                saved_at: Utc::now(),
                source: "manager".into(),
                index: state.index,
                jobs: state.jobs.clone(),
            };
            // Cache before applying: after a crash the agent restarts with what it last ran.
            let dir = self.state_dir.clone();
            match tokio::task::spawn_blocking(move || desired::save(&dir, &cached)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.executor
                        .health()
                        .state_write_failed("caching the job set", &e);
                    tracing::warn!(error = %e, "cannot cache the desired job set");
                }
                Err(e) => tracing::warn!(error = %e, "cannot cache the desired job set"),
            }
            self.scheduler.set_jobs_applied(state.jobs.clone()).await;
            self.applied_jobs = Some(state.jobs);
        }
        self.index = state.index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managers_rotate_and_learn() {
        let mut m = Managers::new(vec!["http://a:1".into()]);
        assert_eq!(m.current(), "http://a:1");
        m.learn(&["http://b:1".into(), "http://a:1/".into()]);
        assert_eq!(m.current(), "http://a:1/");
        m.rotate();
        assert_eq!(m.current(), "http://b:1");
        // The configured URL stays as a fallback even when a manager stops announcing it.
        m.learn(&["http://c:1".into()]);
        assert_eq!(
            m.list,
            vec!["http://c:1".to_string(), "http://a:1".to_string()]
        );
    }
}
