//! `fanout-real` and `fanout`: how long `exec --all -- true` takes until every host's result is
//! back at the caller, through one real manager.
//!
//! - `fanout-real`: N real `op-agent` processes connected to the manager (DESIGN section 10:
//!   20 agents, p50 under 100 ms).
//! - `fanout` (formerly `fanout-sim`): N agents of the fleet simulator ([`crate::fleet`]), which
//!   answer each run directive at once with an `ok` record. It measures the manager's side of a
//!   fleet-wide fan-out, without N processes to fork.
//!
//! Each invocation is timed from the request until the summary line of the NDJSON stream; before
//! each one the bench waits until every agent is connected again (its watch open, or its sync
//! call parked), so every sample starts from the steady state a fleet is in between two operator
//! commands.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use op_client::{Client, Started};
use op_proto::invoke::{InvocationEvent, InvokeRequest};

use crate::agent::AgentProcess;
use crate::fleet::Fleet;
use crate::manager::ManagerProcess;
use crate::procfs::{cpu_secs, rss_kib};
use crate::report::{Figure, percentile, spread};

/// Invocations run and thrown away before measuring.
const WARMUP: usize = 3;

pub async fn real(
    agent_bin: &Path,
    manager_bin: &Path,
    manager_args: &[String],
    agents: usize,
    count: usize,
    stopped: usize,
    hog: usize,
) -> anyhow::Result<Vec<Figure>> {
    anyhow::ensure!(
        stopped < agents,
        "--stopped must leave at least one agent running"
    );
    // Spinning threads, stopped (and joined) when `_hogs` is dropped, however this returns.
    let _hogs = Hogs::start(hog);
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
    let mut stopped_ms = Vec::new();
    if stopped > 0 {
        for a in &fleet[..stopped] {
            a.pause()?;
        }
        let timed = measure_stopped(&m.admin, agents, stopped).await;
        for a in &fleet[..stopped] {
            a.resume()?;
        }
        stopped_ms = timed.map_err(|e| anyhow::anyhow!("{e:#}\nmanager log:\n{}", m.log_tail()))?;
    }
    for a in fleet {
        a.stop()?;
    }
    m.stop()?;
    let build = crate::binaries::profile(agent_bin);
    let busy = if hog > 0 {
        format!(", {hog} spinning threads beside (--hog)")
    } else {
        String::new()
    };
    let cond = format!(
        "`exec --all -- true` on {agents} real agents, {count} sequential invocations after \
         {WARMUP} warm-up, one manager, loopback, {build} build{busy}"
    );
    let mut figures = samples.figures("fanout_real", &cond);
    if !stopped_ms.is_empty() {
        let cond = format!(
            "`exec --all -- true` on {agents} real agents of which {stopped} stopped (SIGSTOP, \
             connections open), {STOPPED_ROUNDS} invocations, manager args {manager_args:?}, \
             one manager, loopback, {build} build{busy}; request → summary"
        );
        figures.push(Figure::new(
            "fanout_real_stopped_elapsed",
            percentile(&stopped_ms, 50.0),
            "ms",
            format!("{cond}, median"),
        ));
        figures.push(Figure::new(
            "fanout_real_stopped_elapsed_max",
            percentile(&stopped_ms, 100.0),
            "ms",
            cond,
        ));
    }
    Ok(figures)
}

/// Threads that spin until dropped: a busy machine for `fanout-real --hog N`.
struct Hogs {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hogs {
    fn start(n: usize) -> Hogs {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 1;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005) + 1);
                        }
                    }
                })
            })
            .collect();
        Hogs { stop, threads }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Invocations timed with stopped agents.
const STOPPED_ROUNDS: usize = 3;

/// Times [`STOPPED_ROUNDS`] invocations on a fleet whose first `stopped` agents are stopped:
/// each must end with the running agents ok and the stopped ones unresponsive.
async fn measure_stopped(
    client: &Client,
    agents: usize,
    stopped: usize,
) -> anyhow::Result<Vec<f64>> {
    let req = InvokeRequest {
        all: true,
        command: Some("true".into()),
        wait: Some(true),
        ..InvokeRequest::default()
    };
    let mut out = Vec::new();
    for i in 0..STOPPED_ROUNDS {
        // A stopped agent's watch stays open until the manager gives up on it (node_timeout).
        wait_parked(client, agents - stopped).await?;
        let t0 = Instant::now();
        let Started::Stream(mut stream) = client.exec(&req).await? else {
            bail!("the manager did not stream the results");
        };
        let summary = loop {
            if let InvocationEvent::Summary(s) =
                stream.next().await?.context("stream ended early")?
            {
                break s;
            }
        };
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
        if summary.ok as usize != agents - stopped || summary.unresponsive as usize != stopped {
            bail!("invocation {i} with {stopped} stopped agent(s): {summary:?}");
        }
    }
    Ok(out)
}

pub async fn sim(
    manager_bin: &Path,
    manager_args: &[String],
    agents: usize,
    count: usize,
) -> anyhow::Result<Vec<Figure>> {
    anyhow::ensure!(
        agents > 0 && count > 0,
        "--agents and --count must be at least 1"
    );
    crate::limits::check_fleet(agents)?;
    let m = ManagerProcess::start(manager_bin, manager_args).await?;
    let pid = m.pid();
    let fleet = Fleet::start(&m, agents).await?;
    fleet
        .wait_parked(&m, crate::scenarios::propagation::ramp_limit(agents))
        .await?;
    let cpu0 = cpu_secs(pid)?;
    let samples = measure(&m.admin, agents, count)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\nmanager log:\n{}", m.log_tail()));
    let cpu = cpu_secs(pid)? - cpu0;
    let (_, rss_peak) = rss_kib(pid)?;
    fleet.stop().await;
    m.stop()?;
    let samples = samples?;
    let build = crate::binaries::profile(manager_bin);
    let cond = format!(
        "`exec --all -- true` on {agents} simulated agents (answering each run at once), {count} \
         sequential invocations after {WARMUP} warm-up, one manager, loopback, manager {build} build"
    );
    let mut figures = samples.figures("fanout", &cond);
    figures.push(Figure::new(
        "fanout_manager_cpu_per_invocation",
        cpu / (WARMUP + count) as f64,
        "s",
        format!("{cond}; manager CPU (user+sys) per invocation, re-parking included"),
    ));
    figures.push(Figure::new(
        "fanout_manager_rss_peak",
        rss_peak as f64 / 1024.0,
        "MiB",
        format!("{cond}; VmHWM since start"),
    ));
    Ok(figures)
}

struct Samples {
    all: Vec<f64>,
    first: Vec<f64>,
}

impl Samples {
    fn figures(&self, prefix: &str, cond: &str) -> Vec<Figure> {
        let mut figures = spread(&format!("{prefix}_all_results"), &self.all, "ms", cond);
        figures.push(Figure::new(
            &format!("{prefix}_first_result_p50"),
            percentile(&self.first, 50.0),
            "ms",
            cond,
        ));
        figures
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

/// Waits until the manager reports `n` agents connected and idle: open watches and parked sync
/// calls (of agents that long-poll) together.
async fn wait_parked(client: &Client, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = client.metrics().await?;
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as usize
        };
        let parked = gauge("op_manager_watches_open ") + gauge("op_manager_syncs_parked ");
        if parked >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {parked} of {n} agents connected (watch or parked sync) within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
