//! `fanout-real` and `fanout-sim`: how long `exec --all -- true` takes until every host's result
//! is back at the caller, through one real manager.
//!
//! - `fanout-real`: N real `op-agent` processes connected to the manager (DESIGN section 10:
//!   20 agents, p50 under 100 ms).
//! - `fanout-sim`: N simulated agents in this process, each a task speaking the agent protocol
//!   (register, long-poll sync, answer each run directive at once with an `ok` record). It
//!   measures the manager's side of a fleet-wide fan-out, without N processes to fork.
//!
//! Each invocation is timed from the request until the summary line of the NDJSON stream; before
//! each one the bench waits until every agent's sync call is parked again, so every sample starts
//! from the steady state a fleet is in between two operator commands.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use op_client::{Client, Started};
use op_proto::agent::{Directive, Heartbeat, RegisterRequest, RunBatch};
use op_proto::invoke::{InvocationEvent, InvokeRequest};
use op_proto::{API_VERSION, RunRecord, RunStatus, Trigger};
use uuid::Uuid;

use crate::agent::AgentProcess;
use crate::manager::ManagerProcess;
use crate::report::{Figure, percentile};

/// Invocations run and thrown away before measuring.
const WARMUP: usize = 3;

pub async fn real(
    agent_bin: &Path,
    manager_bin: &Path,
    manager_args: &[String],
    agents: usize,
    count: usize,
) -> anyhow::Result<Vec<Figure>> {
    let m = ManagerProcess::start(manager_bin, manager_args).await?;
    let fleet: Vec<AgentProcess> = (0..agents)
        .map(|i| {
            AgentProcess::start_managed(
                agent_bin,
                &m.api_url,
                &m.agent_token,
                &format!("bench-{i:03}"),
                &format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250),
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let samples = measure(&m.admin, agents, count)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\nmanager log:\n{}", m.log_tail()))?;
    drop(fleet);
    let cond = format!(
        "`exec --all -- true` on {agents} real agents, {count} sequential invocations after {WARMUP} warm-up, one manager, loopback, release build"
    );
    Ok(samples.figures("fanout_real", &cond))
}

pub async fn sim(
    manager_bin: &Path,
    manager_args: &[String],
    agents: usize,
    count: usize,
) -> anyhow::Result<Vec<Figure>> {
    crate::limits::check_fleet(agents)?;
    let m = ManagerProcess::start(manager_bin, manager_args).await?;
    let agent_client = Client::new(&m.api_url, Some(&m.agent_token))?;
    let mut tasks = Vec::with_capacity(agents);
    for i in 0..agents {
        let sim = SimAgent {
            node_id: Uuid::new_v4(),
            hostname: format!("sim-{i:05}"),
            ip: format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256),
        };
        // Each simulated agent presents its own node credential, as a real one does.
        let own = sim.register(&agent_client).await?;
        tasks.push(tokio::spawn(sim.run(own)));
    }
    let samples = measure(&m.admin, agents, count)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\nmanager log:\n{}", m.log_tail()));
    for t in tasks {
        t.abort();
    }
    let samples = samples?;
    let cond = format!(
        "`exec --all -- true` on {agents} simulated agents (tasks in op-bench answering at once), {count} sequential invocations after {WARMUP} warm-up, one manager, loopback, release build"
    );
    Ok(samples.figures("fanout_sim", &cond))
}

struct Samples {
    all: Vec<f64>,
    first: Vec<f64>,
}

impl Samples {
    fn figures(&self, prefix: &str, cond: &str) -> Vec<Figure> {
        vec![
            Figure::new(
                &format!("{prefix}_all_results_p50"),
                percentile(&self.all, 50.0),
                "ms",
                cond,
            ),
            Figure::new(
                &format!("{prefix}_all_results_p99"),
                percentile(&self.all, 99.0),
                "ms",
                cond,
            ),
            Figure::new(
                &format!("{prefix}_all_results_max"),
                percentile(&self.all, 100.0),
                "ms",
                cond,
            ),
            Figure::new(
                &format!("{prefix}_first_result_p50"),
                percentile(&self.first, 50.0),
                "ms",
                cond,
            ),
        ]
    }
}

/// Waits for `agents` parked syncs, then times `WARMUP + count` invocations.
async fn measure(client: &Client, agents: usize, count: usize) -> anyhow::Result<Samples> {
    let mut samples = Samples {
        all: Vec::with_capacity(count),
        first: Vec::with_capacity(count),
    };
    let req = InvokeRequest {
        all: true,
        command: Some("true".into()),
        wait: Some(true),
        ..InvokeRequest::default()
    };
    for i in 0..WARMUP + count {
        wait_parked(client, agents).await?;
        let t0 = Instant::now();
        let Started::Stream(mut stream) = client.exec(&req).await? else {
            bail!("the manager did not stream the results");
        };
        let mut first = None;
        let summary = loop {
            match stream.next().await?.context("stream ended early")? {
                InvocationEvent::Result(_) if first.is_none() => first = Some(t0.elapsed()),
                InvocationEvent::Summary(s) => break s,
                _ => {}
            }
        };
        let all = t0.elapsed();
        if summary.ok as usize != agents {
            bail!("invocation {i}: {summary:?}");
        }
        if i >= WARMUP {
            samples.all.push(all.as_secs_f64() * 1000.0);
            samples
                .first
                .push(first.unwrap_or(all).as_secs_f64() * 1000.0);
        }
    }
    Ok(samples)
}

/// Waits until the manager reports `n` parked sync calls (every agent idle and connected).
async fn wait_parked(client: &Client, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = client.metrics().await?;
        let parked = text
            .lines()
            .find_map(|l| l.strip_prefix("op_manager_syncs_parked "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as usize;
        if parked >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {parked} of {n} agents parked their sync call within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A simulated agent: the protocol only, no processes.
struct SimAgent {
    node_id: Uuid,
    hostname: String,
    ip: String,
}

impl SimAgent {
    /// Enrolls with the shared token; returns the client with this node's own credential.
    async fn register(&self, client: &Client) -> anyhow::Result<Client> {
        let resp = client
            .register(&RegisterRequest {
                api_version: API_VERSION,
                node_id: self.node_id,
                hostname: self.hostname.clone(),
                ips: vec![self.ip.parse()?],
                labels: Default::default(),
                agent_version: "sim".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
            })
            .await?;
        let token = resp
            .node_token
            .ok_or_else(|| anyhow::anyhow!("the manager issued no node credential"))?;
        Ok(client.with_token(&token))
    }

    async fn run(self, client: Client) {
        let mut index = 0;
        let mut done: HashSet<Uuid> = HashSet::new();
        let beat = Heartbeat {
            node_id: self.node_id,
            agent_version: "sim".into(),
            load: None,
            running: vec![],
            packages: vec![],
            stats: Default::default(),
        };
        loop {
            let Ok(state) = client.sync(index, 10, &beat).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            index = state.index;
            for d in state.directives {
                let Directive::Run(d) = d else { continue };
                if !done.insert(d.run_id) {
                    continue;
                }
                let now = chrono::Utc::now();
                let record = RunRecord {
                    run_id: d.run_id,
                    job: d.spec.name.clone(),
                    job_revision: d.revision,
                    node_id: self.node_id,
                    hostname: self.hostname.clone(),
                    ips: vec![],
                    trigger: Trigger::Adhoc,
                    attempt: 0,
                    invocation_id: Some(d.invocation_id),
                    params: d.params.clone(),
                    command: d.spec.command.clone(),
                    planned_at: Some(now),
                    started_at: Some(now),
                    ended_at: Some(now),
                    status: RunStatus::Ok,
                    exit_code: Some(0),
                    signal: None,
                    error: None,
                    output: String::new(),
                    output_truncated: false,
                    output_bytes: 0,
                    rusage: None,
                    notes: Vec::new(),
                };
                let batch = RunBatch {
                    node_id: self.node_id,
                    runs: vec![record],
                };
                // Like a real agent's outbox: try again until the manager has it.
                while client.post_runs(&batch).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}
