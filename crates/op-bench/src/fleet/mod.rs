//! The fleet simulator: N agents inside this process, each speaking the real agent protocol over
//! real HTTP to a real manager (DESIGN.md section 5.1).
//!
//! Each [`SimAgent`] has its own node id, hostname (`sim-00042`) and IP string (`10.0.0.43`). It
//! enrolls with the shared agent token, then speaks with the node credential the registration
//! returned, holding the node's watch as `op-agent`'s link does: a beat goes up at once, after a
//! state that carried directives, and once per sync wait, with the index held; a changed job set
//! is "applied" (reported to the scenario as an [`Applied`] event with the instant it arrived). Of each answer a simulated
//! agent reads the index, the jobs' names and revisions, and its directives: each ad-hoc run is
//! answered at once with a finished `ok` record (as if `true` ran), so fan-out can be measured
//! against simulated agents, and each output request with an empty piece of a run still going
//! (the `follow` scenario), which comes alone in a light answer (`directives_only`). Run reports
//! are in [`runs`]. What a real agent does with its jobs (scheduling, processes, the outbox on disk) is
//! deliberately absent: the simulator measures the manager, not the agent.
//!
//! Cost: one task per agent on the benchmark's one runtime. Each watch is its own upgraded
//! HTTP/1.1 connection, opened through a `reqwest` pool shared by [`AGENTS_PER_POOL`] agents
//! (each pool from its own loopback source address); run reports and output pieces go through
//! the pool's kept connections. Registration runs at most [`REGISTER_CONCURRENCY`] at a time,
//! which also paces new connections so the manager's accept backlog never overflows.

pub mod runs;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use op_client::{Client, WatchState};
use op_proto::API_VERSION;
use op_proto::agent::{AgentSettings, Directive, Heartbeat, RegisterRequest, RunBatch};
use op_proto::node::LoadInfo;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::manager::ManagerProcess;

/// Agents per shared HTTP connection pool.
pub const AGENTS_PER_POOL: usize = 1000;
/// Registrations in flight at once.
pub const REGISTER_CONCURRENCY: usize = 64;
/// Version string the simulated agents report.
const SIM_VERSION: &str = "op-bench-sim";

/// The loopback source address of connection pool `pool`: 127.0.0.1 for the first, then .2, ...
/// (the whole of 127.0.0.0/8 reaches the loopback interface).
pub fn source_address(pool: usize) -> IpAddr {
    let n = pool as u32 + 1;
    IpAddr::V4(Ipv4Addr::new(127, (n >> 16) as u8, (n >> 8) as u8, n as u8))
}

/// Whether the manager listens on a loopback address (then the pools may speak from several).
fn manager_is_loopback(api_url: &str) -> bool {
    reqwest::Url::parse(api_url)
        .ok()
        .and_then(|u| u.host_str().and_then(|h| h.parse::<IpAddr>().ok()))
        .is_some_and(|ip| ip.is_loopback())
}

/// One simulated machine.
#[derive(Debug, Clone)]
pub struct SimAgent {
    pub node_id: Uuid,
    pub hostname: String,
    pub ip: IpAddr,
}

impl SimAgent {
    /// The `i`-th agent of a fleet: `sim-00000` at 10.0.0.1, `sim-00001` at 10.0.0.2, ...
    pub fn new(i: usize) -> SimAgent {
        let n = (i + 1) as u32;
        SimAgent {
            node_id: Uuid::new_v4(),
            hostname: format!("sim-{i:05}"),
            ip: IpAddr::V4(Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8)),
        }
    }

    pub fn registration(&self) -> RegisterRequest {
        RegisterRequest {
            api_version: API_VERSION,
            node_id: self.node_id,
            hostname: self.hostname.clone(),
            ips: vec![self.ip],
            labels: [("role".to_string(), "sim".to_string())].into(),
            agent_version: SIM_VERSION.into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            machine_id: String::new(),
            reset: None,
            capabilities: Vec::new(),
        }
    }

    /// A heartbeat as big as a real idle agent's (load and memory filled in).
    pub fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            node_id: self.node_id,
            agent_version: SIM_VERSION.into(),
            load: Some(LoadInfo {
                load1: 0.12,
                load5: 0.08,
                load15: 0.05,
                cpus: 2,
                mem_total_kb: 8_000_000,
                mem_available_kb: 6_000_000,
            }),
            running: Vec::new(),
            packages: Vec::new(),
            stats: Default::default(),
            degraded: None,
            sent_at: None,
            received: Vec::new(),
            facts: None,
            peer_url: None,
        }
    }
}

/// A simulated agent received a job set different from the one it held, at `at`.
#[derive(Debug)]
pub struct Applied {
    pub agent: usize,
    pub at: Instant,
    /// (job name, revision) of every job in the new set.
    pub jobs: Vec<(String, u64)>,
}

/// What the sync loops have done so far.
#[derive(Debug, Default)]
pub struct Counters {
    /// Desired states received (watch frames).
    pub syncs: AtomicU64,
    /// Heartbeats sent up the watches.
    pub beats: AtomicU64,
    /// Sync calls (and re-registrations) that failed.
    pub errors: AtomicU64,
    /// Agents whose first sync returned.
    pub synced: AtomicUsize,
    /// Bytes of the sync answers (JSON bodies) received.
    pub answer_bytes: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn failed(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.to_string());
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok()?.clone()
    }
}

pub struct Fleet {
    pub agents: Arc<Vec<SimAgent>>,
    /// One per connection pool, presenting the shared enrollment token (registration only).
    enroll: Vec<Client>,
    /// One per agent, sharing its pool's connections, presenting the node's own credential.
    clients: Vec<Option<Client>>,
    /// The settings the manager handed out at registration (sync wait, batch size).
    pub settings: AgentSettings,
    /// The agents ask for state deltas on their watches.
    deltas: bool,
    pub counters: Arc<Counters>,
    applied: mpsc::UnboundedReceiver<Applied>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Fleet {
    /// Registers `n` agents with `manager` and starts each one's sync loop as soon as it is
    /// registered. Returns when every agent is registered (their first syncs may still be running).
    pub async fn start(manager: &ManagerProcess, n: usize) -> anyhow::Result<Fleet> {
        Fleet::start_with(manager, n, true).await
    }

    /// [`Fleet::start`], the agents asking for state deltas on their watches (as `op-agent`
    /// does) or, without `deltas`, for whole states only (as agents before deltas did).
    pub async fn start_with(
        manager: &ManagerProcess,
        n: usize,
        deltas: bool,
    ) -> anyhow::Result<Fleet> {
        let pools = n.div_ceil(AGENTS_PER_POOL).max(1);
        let loopback = manager_is_loopback(&manager.api_url);
        let enroll = (0..pools)
            .map(|pool| {
                let http = reqwest::Client::builder()
                    // Each pool speaks from its own loopback address (127.0.0.1, .2, ...), so
                    // the local ports of one address are never short: 50,000 agents through one
                    // source address would need more than the 28,232 ephemeral ports there are.
                    .local_address(loopback.then(|| source_address(pool)))
                    .http1_only()
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(10))
                    // Agents cycle every sync wait; keep their idle connections well beyond that.
                    .pool_idle_timeout(Duration::from_secs(300))
                    .build()?;
                Ok(Client::with_http(
                    http,
                    &manager.api_url,
                    Some(&manager.agent_token),
                )?)
            })
            .collect::<anyhow::Result<Vec<Client>>>()?;
        let agents: Arc<Vec<SimAgent>> = Arc::new((0..n).map(SimAgent::new).collect());
        let counters = Arc::new(Counters::default());
        let (tx, applied) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let mut fleet = Fleet {
            agents: agents.clone(),
            enroll,
            clients: vec![None; n],
            settings: AgentSettings::default(),
            deltas,
            counters,
            applied,
            shutdown,
            tasks: JoinSet::new(),
        };

        let permits = Arc::new(Semaphore::new(REGISTER_CONCURRENCY));
        let mut registering = JoinSet::new();
        for i in 0..n {
            let permit = permits.clone().acquire_owned().await?;
            let client = fleet.enroll_for(i).clone();
            let req = agents[i].registration();
            registering.spawn(async move {
                let answer = client.register(&req).await;
                drop(permit);
                (i, answer)
            });
            // Start the sync loops of those already registered, so the fleet ramps as it goes.
            while let Some(done) = registering.try_join_next() {
                fleet.registered(done?, &tx)?;
            }
        }
        while let Some(done) = registering.join_next().await {
            fleet.registered(done?, &tx)?;
        }
        Ok(fleet)
    }

    fn registered(
        &mut self,
        (i, answer): (
            usize,
            Result<op_proto::agent::RegisterResponse, op_client::ClientError>,
        ),
        tx: &mpsc::UnboundedSender<Applied>,
    ) -> anyhow::Result<()> {
        let resp = answer.with_context(|| format!("registering simulated agent {i}"))?;
        self.settings = resp.settings;
        // From now on the agent presents its own credential, as a real one does.
        let token = resp
            .node_token
            .with_context(|| format!("the manager issued simulated agent {i} no credential"))?;
        let own = self.enroll_for(i).with_token(&token);
        self.clients[i] = Some(own.clone());
        let lp = SyncLoop {
            agent: i,
            sim: self.agents[i].clone(),
            client: own,
            enroll: self.enroll_for(i).clone(),
            wait_secs: self.settings.sync_wait_secs,
            deltas: self.deltas,
            counters: self.counters.clone(),
            applied: tx.clone(),
        };
        self.tasks.spawn(lp.run(self.shutdown.clone()));
        Ok(())
    }

    /// The enrollment client of agent `i`'s connection pool.
    fn enroll_for(&self, i: usize) -> &Client {
        &self.enroll[i % self.enroll.len()]
    }

    /// The client agent `i` speaks with: its own credential over its pool's connections.
    /// Panics for an agent that is not registered, which [`Fleet::start`] rules out.
    pub fn client_for(&self, i: usize) -> &Client {
        self.clients[i]
            .as_ref()
            .expect("Fleet::start registers every agent")
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Waits until every agent has synced once and the manager holds all but 1 % of them parked
    /// (at any instant a few agents are between one sync answer and the next call); returns the
    /// parked count. Fails, with the last sync error, when that does not happen within `limit`.
    pub async fn wait_parked(
        &self,
        manager: &ManagerProcess,
        limit: Duration,
    ) -> anyhow::Result<usize> {
        let n = self.len();
        let want = n - n / 100;
        let deadline = Instant::now() + limit;
        let mut parked = 0;
        loop {
            let synced = self.counters.synced.load(Ordering::Relaxed);
            if synced == n {
                // Agents on a watch, and any still long-polling.
                parked = manager.metric("op_manager_watches_open").await? as usize
                    + manager.metric("op_manager_syncs_parked").await? as usize;
                if parked >= want {
                    return Ok(parked);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "after {}s, {synced} of {n} simulated agents have synced and {parked} are parked; \
                     {} sync errors, the last: {}",
                    limit.as_secs(),
                    self.counters.errors.load(Ordering::Relaxed),
                    self.counters.last_error().as_deref().unwrap_or("none")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The next job-set change any agent received, or None at `deadline`.
    pub async fn next_applied(&mut self, deadline: Instant) -> Option<Applied> {
        tokio::time::timeout_at(deadline.into(), self.applied.recv())
            .await
            .ok()
            .flatten()
    }

    /// Cancelled when the fleet stops; for loops that act for its agents (run reports).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Forgets the changes received so far.
    pub fn drain_applied(&mut self) {
        while self.applied.try_recv().is_ok() {}
    }

    /// Stops every sync loop and waits for them (their connections close).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// What a simulated agent reads of a sync answer ([`op_proto::agent::DesiredState`]): the index
/// to pass back and which revision of which job it holds. A real agent also validates every job
/// and schedules it, on its own machine; here that would only take CPU from the manager measured
/// beside it.
#[derive(Debug, serde::Deserialize)]
struct SyncAnswer {
    index: u64,
    jobs: Vec<AnswerJob>,
    /// Ad-hoc runs and kills; a simulated agent answers each run at once (see [`runs::answer`]).
    #[serde(default)]
    directives: Vec<Directive>,
    /// A light answer: output requests alone, the state held unchanged.
    #[serde(default)]
    directives_only: bool,
}

#[derive(Debug, serde::Deserialize)]
struct AnswerJob {
    revision: u64,
    spec: AnswerSpec,
}

/// The job's task-file form, of which only the name is read.
#[derive(Debug, serde::Deserialize)]
struct AnswerSpec {
    #[serde(rename = "JobName")]
    name: String,
}

/// One agent's register-and-sync loop, as in `op-agent`'s link (one manager, no rotation).
struct SyncLoop {
    agent: usize,
    sim: SimAgent,
    /// The node's own credential (replaced when the node has to enroll again).
    client: Client,
    /// The shared enrollment token, for a node the manager forgot.
    enroll: Client,
    wait_secs: u64,
    deltas: bool,
    counters: Arc<Counters>,
    applied: mpsc::UnboundedSender<Applied>,
}

impl SyncLoop {
    /// Answers each new run directive with a finished `ok` record, as a real agent running `true`
    /// would, and waits until the manager has it (like a real agent's outbox). Returns false when
    /// the fleet stops meanwhile.
    async fn answer(
        &self,
        directives: &[Directive],
        answered: &mut HashSet<Uuid>,
        shutdown: &CancellationToken,
    ) -> bool {
        self.answer_uploads(directives).await;
        let runs: Vec<&op_proto::agent::RunDirective> = directives
            .iter()
            .filter_map(|d| match d {
                Directive::Run(r) => Some(r.as_ref()),
                // Nothing to kill (every run ended at once); output requests are answered above.
                Directive::Kill { .. } | Directive::UploadOutput { .. } => None,
            })
            .collect();
        // Forget runs whose directive has ended; the set holds only what the manager still sends.
        answered.retain(|id| runs.iter().any(|r| r.run_id == *id));
        let new: Vec<_> = runs
            .into_iter()
            .filter(|r| !answered.contains(&r.run_id))
            .collect();
        if new.is_empty() {
            return true;
        }
        let batch = RunBatch {
            node_id: self.sim.node_id,
            runs: new.iter().map(|r| runs::answer(&self.sim, r)).collect(),
        };
        let mut failures: u32 = 0;
        loop {
            let posted = tokio::select! {
                r = self.client.post_runs(&batch) => r,
                _ = shutdown.cancelled() => return false,
            };
            match posted {
                Ok(_) => break,
                Err(e) => {
                    self.counters.failed(e);
                    failures = failures.saturating_add(1);
                    let pause = Duration::from_millis(50 << failures.min(6));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.cancelled() => return false,
                    }
                }
            }
        }
        answered.extend(new.iter().map(|r| r.run_id));
        true
    }

    /// Answers every output request among `directives` (see [`SyncLoop::upload_nothing`]).
    async fn answer_uploads(&self, directives: &[Directive]) {
        for d in directives {
            if let Directive::UploadOutput {
                request_id,
                run_id,
                offset,
                ..
            } = d
            {
                self.upload_nothing(*request_id, *run_id, *offset).await;
            }
        }
    }

    /// Answers an output request as an agent whose run is still going and wrote nothing new:
    /// an empty piece, not finished (what `agentcli logs --follow` gets between lines). The
    /// simulator has one manager, which is the `reply_to` of every request.
    async fn upload_nothing(&self, request_id: Uuid, run_id: Uuid, offset: u64) {
        let chunk = op_proto::agent::OutputChunk {
            request_id,
            run_id,
            node_id: self.sim.node_id,
            offset,
            data: String::new(),
            size: offset,
            finished: false,
            error: None,
        };
        if let Err(e) = self.client.post_output(&chunk).await {
            self.counters.failed(e);
        }
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let beat = self.sim.heartbeat();
        let mut index = 0;
        let mut jobs: Option<Vec<(String, u64)>> = None;
        let mut failures: u32 = 0;
        // Runs already answered, of the directives still in the desired state.
        let mut answered: HashSet<Uuid> = HashSet::new();
        let wait = Duration::from_secs(self.wait_secs.max(1));
        let mut watch: Option<op_client::Watch> = None;
        // When the next periodic beat is due, and whether the last state needs none at once.
        let mut next_beat = tokio::time::Instant::now();
        let mut quiet_state = false;
        loop {
            // The watch as a real agent holds it: a beat up (now, after a state with run
            // directives or output requests, and once per sync wait), the desired state down
            // when it changes.
            let beat_stands =
                std::mem::take(&mut quiet_state) && next_beat > tokio::time::Instant::now();
            let frame = match watch.as_mut() {
                None => {
                    let opened = tokio::select! {
                        r = self.client.watch(self.deltas) => r,
                        _ = shutdown.cancelled() => return,
                    };
                    match opened {
                        Ok(w) => {
                            watch = Some(w);
                            quiet_state = false;
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                Some(w) => {
                    let sent = if beat_stands {
                        Ok(())
                    } else {
                        next_beat = tokio::time::Instant::now() + wait;
                        let sent = tokio::select! {
                            r = w.beat(index, &beat) => r,
                            _ = shutdown.cancelled() => return,
                        };
                        if sent.is_ok() {
                            self.counters.beats.fetch_add(1, Ordering::Relaxed);
                        }
                        sent
                    };
                    match sent {
                        Err(e) => Err(e),
                        Ok(()) => tokio::select! {
                            r = w.next_frame() => r.map(Some),
                            _ = tokio::time::sleep_until(next_beat) => Ok(None),
                            _ = shutdown.cancelled() => return,
                        },
                    }
                }
            };
            let answer = frame.and_then(|frame| match frame {
                None => Ok(None),
                Some(frame) => {
                    self.counters
                        .answer_bytes
                        .fetch_add(frame.len() as u64, Ordering::Relaxed);
                    watch
                        .as_ref()
                        .map(|w| w.decode::<SyncAnswer>(&frame))
                        .transpose()
                }
            });
            // A delta names the jobs held (by name and revision) instead of sending them.
            let answer = match answer {
                Ok(Some(WatchState::Delta(d))) => {
                    let held = jobs.as_deref().unwrap_or(&[]);
                    let sent = d
                        .state
                        .jobs
                        .into_iter()
                        .map(|j| (j.spec.name, j.revision))
                        .collect();
                    match op_proto::watch::merge_jobs(d.base, index, &d.kept, sent, |k| {
                        held.iter()
                            .find(|(n, r)| *n == k.name && *r == k.revision)
                            .cloned()
                    }) {
                        Ok(merged) => Ok(Some(SyncAnswer {
                            jobs: merged
                                .into_iter()
                                .map(|(name, revision)| AnswerJob {
                                    revision,
                                    spec: AnswerSpec { name },
                                })
                                .collect(),
                            ..d.state
                        })),
                        Err(e) => Err(op_client::ClientError::Decode {
                            url: "watch".into(),
                            message: e.to_string(),
                        }),
                    }
                }
                Ok(Some(WatchState::Whole(s))) => Ok(Some(s)),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match answer {
                Ok(None) => failures = 0,
                Ok(Some(state)) if state.directives_only => {
                    // Output requests alone: the runs answered so far are still answered.
                    failures = 0;
                    self.answer_uploads(&state.directives).await;
                }
                Ok(Some(state)) => {
                    let at = Instant::now();
                    failures = 0;
                    let seen: Vec<(String, u64)> = state
                        .jobs
                        .into_iter()
                        .map(|j| (j.spec.name, j.revision))
                        .collect();
                    if jobs.as_ref() != Some(&seen) {
                        if jobs.is_none() {
                            self.counters.synced.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = self.applied.send(Applied {
                            agent: self.agent,
                            at,
                            jobs: seen.clone(),
                        });
                        jobs = Some(seen);
                    }
                    index = state.index;
                    quiet_state = state.directives.is_empty();
                    self.counters.syncs.fetch_add(1, Ordering::Relaxed);
                    if !self
                        .answer(&state.directives, &mut answered, &shutdown)
                        .await
                    {
                        return;
                    }
                }
                Err(e) => {
                    watch = None;
                    self.counters.failed(&e);
                    if e.code() == Some("unknown_node") {
                        // The manager forgot this node (and revoked its credential): enroll again,
                        // as a real agent does, and speak with the new credential.
                        match self.enroll.register(&self.sim.registration()).await {
                            Ok(resp) => {
                                if let Some(token) = resp.node_token {
                                    self.client = self.enroll.with_token(&token);
                                }
                            }
                            Err(e) => self.counters.failed(e),
                        }
                    }
                    failures = failures.saturating_add(1);
                    let pause = Duration::from_millis(250 << failures.min(7));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }
}
