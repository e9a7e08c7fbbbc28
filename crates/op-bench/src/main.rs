//! `op-bench`: the project's measurements, each a subcommand that starts what it needs in a temp
//! dir, measures, prints `name value unit  conditions` lines (or JSON with `--json`), and stops
//! everything it started. Timing figures live here, never in tests (DESIGN.md section 10).

mod agent;
mod binaries;
mod fleet;
mod limits;
mod manager;
mod procfs;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "op-bench", version, about = "op-agent benchmarks")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Args)]
struct Common {
    /// The op-agent binary [default: `op-agent` next to this executable].
    #[arg(long, global = true)]
    agent_bin: Option<PathBuf>,
    /// The op-manager binary [default: `op-manager` next to this executable].
    #[arg(long, global = true)]
    manager_bin: Option<PathBuf>,
    /// An extra flag for every manager a scenario starts (repeat for more), e.g.
    /// `--manager-arg=--sync-wait=5s`.
    #[arg(long, global = true, allow_hyphen_values = true)]
    manager_arg: Vec<String>,
    /// Print the figures as a JSON array.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Idle RSS and CPU of an agent holding 10 cron jobs.
    AgentFootprint {
        /// How long to watch the agent.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Cron jobs to load (each runs `true` once a minute).
        #[arg(long, default_value_t = 10)]
        jobs: usize,
    },
    /// Start-time error (start - planned) of a 1 Hz cron job.
    CronPrecision {
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Latency of synchronous `POST /api/opAgent` calls running `true`.
    Invoke {
        /// Calls to measure (after 20 warm-up calls).
        #[arg(long, default_value_t = 500)]
        count: usize,
    },
    /// Job save → seen by every simulated agent, and the manager's RSS and CPU holding them.
    Propagation(scenarios::propagation::Options),
    /// Run records per second accepted through raft, and the acknowledgement latency.
    Ingest {
        /// Simulated agents reporting runs.
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// Runs finishing per second across the fleet [default: as many as the manager accepts].
        #[arg(long)]
        rate: Option<f64>,
        /// How long the agents report.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// The manager's CPU and RSS holding simulated agents that only heartbeat.
    Idle {
        /// Simulated agents.
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// How long to watch the manager once every agent is parked.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// A real manager and N real agents: upload one package and time until every agent has it,
    /// with the manager's CPU seconds.
    /// Raft writes while one reader per simulated node follows a run (`agentcli logs --follow`).
    Follow {
        /// Simulated nodes, each with one reader following a run.
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// How long the idle rate is measured, and then the rate while following.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// One job failing on every simulated agent at once, then recovering: the webhook's latency
    /// after the last host's result, and the manager's CPU per fire (notifications, issue 19).
    Incident {
        /// Simulated agents, each reporting its run of every fire.
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Fires, alternately all failing and all succeeding (at least 2).
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// A fleet running one job every minute: the manager's CPU per minute and RSS while it takes
    /// each fire's runs and judges who missed it (missed-fire detection, issue 20).
    CronFleet {
        /// Simulated agents, each reporting its run of every fire.
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Agents that never report (their fires are missed).
        #[arg(long, default_value_t = 10)]
        silent: usize,
        /// How long to watch (at least a minute).
        #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    #[command(alias = "package-fanout")]
    Package {
        /// Agents to start.
        #[arg(long, default_value_t = 20)]
        agents: usize,
        /// Package size (random, incompressible content): `100M`, `100MiB`, `1G`; a bare number
        /// is MiB.
        #[arg(long = "size", alias = "size-mib", default_value = "100M", value_parser = parse_mib)]
        size_mib: usize,
        /// The manager's download_concurrency.
        #[arg(long, default_value_t = 100)]
        cap: usize,
    },
    /// Packages from peers: a package to N real agents while the manager's package egress is
    /// capped; time until all have it and the share of bytes the manager sent.
    PackagePeers {
        /// Agents to start.
        #[arg(long, default_value_t = 20)]
        agents: usize,
        /// Package size (random content): `200MiB`, `1G`; a bare number is MiB.
        #[arg(long, default_value = "200MiB", value_parser = parse_mib)]
        size: usize,
        /// The manager's `--download-rate-limit` (bytes per second), e.g. `50MiB`.
        #[arg(long, default_value = "50MiB")]
        manager_egress: String,
    },
    /// `exec --all -- true` through a real manager to real `op-agent` processes, until every
    /// result is back.
    FanoutReal {
        #[arg(long, default_value_t = 20)]
        agents: usize,
        /// Invocations to measure (after 3 warm-up ones).
        #[arg(long, default_value_t = 30)]
        count: usize,
        /// Then stop this many agents (SIGSTOP: their connections stay open) and time 3 more
        /// invocations until they end (`fanout_real_stopped_elapsed`).
        #[arg(long, default_value_t = 0)]
        stopped: usize,
        /// Threads that spin beside the fleet while it is measured, so the machine is busy (`2`
        /// on a 2-core machine: every core contended).
        #[arg(long, default_value_t = 0)]
        hog: usize,
    },
    /// A cluster with the default raft timings: kill -9 the leader while a client saves jobs;
    /// time until a save is accepted again (op-manager beside this executable).
    #[command(alias = "failover")]
    ClusterFailover {
        #[arg(long, default_value_t = 3)]
        members: usize,
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// Run-record ingestion through raft: a cluster of N managers, then one manager.
    ClusterIngest {
        #[arg(long, default_value_t = 3)]
        members: usize,
        /// Simulated agents posting at the same time. 32 saturates both a cluster and one
        /// manager on 2 cores (with 8, each was still short of it: 34k and 61k records/s
        /// against 41-43k and 61-69k with 32), so the ratio compares capacities.
        #[arg(long, default_value_t = 32)]
        senders: usize,
        /// Runs per batch.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Page load of the web console (overview, nodes, jobs, runs) on a large simulated fleet.
    Console {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value_t = 500)]
        jobs: usize,
        /// Finished runs stored per node (over 10 jobs each).
        #[arg(long, default_value_t = 100)]
        runs_per_node: usize,
        /// Loads of each page to measure (after 5 warm-up ones).
        #[arg(long, default_value_t = 30)]
        count: usize,
    },
    /// `exec --all -- true` to simulated agents (the fleet simulator, answering at once), until
    /// every result is back, with the manager's CPU per invocation.
    #[command(alias = "fanout-sim")]
    Fanout {
        /// Simulated agents.
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Invocations to measure (after 3 warm-up ones).
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
    /// Job save → first run on every real agent (real op-agent processes on this machine).
    PropagationReal {
        /// Real agents to start.
        #[arg(long, default_value_t = 3)]
        agents: usize,
        /// Saves to time (each a new revision of a once-job).
        #[arg(long, default_value_t = 10)]
        saves: usize,
    },
}

/// A size in MiB: `100`, `100M`, `100MiB`, `1G`, `1GiB`.
fn parse_mib(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: usize = n
        .parse()
        .map_err(|_| format!("{text:?}: expected a size such as 100M or 1G"))?;
    let factor = match unit.trim() {
        "" | "M" | "MiB" | "MB" | "m" => 1,
        "G" | "GiB" | "GB" | "g" => 1024,
        other => return Err(format!("{text:?}: unknown unit {other:?}; use M or G")),
    };
    n.checked_mul(factor)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{text:?}: out of range"))
}

/// Runs the chosen scenario with the binaries it needs.
async fn run(cli: Cli) -> anyhow::Result<Vec<report::Figure>> {
    let common = cli.common;
    let agent_bin = || binaries::locate("op-agent", common.agent_bin.clone());
    let manager_bin = || binaries::locate("op-manager", common.manager_bin.clone());
    let margs = &common.manager_arg;
    match cli.scenario {
        Scenario::AgentFootprint { duration, jobs } => {
            scenarios::footprint::run(&agent_bin()?, duration, jobs).await
        }
        Scenario::CronPrecision { duration } => {
            scenarios::cron_precision::run(&agent_bin()?, duration).await
        }
        Scenario::Invoke { count } => scenarios::invoke::run(&agent_bin()?, count).await,
        Scenario::Propagation(options) => {
            scenarios::propagation::run(&manager_bin()?, margs, options).await
        }
        Scenario::Ingest {
            agents,
            rate,
            duration,
        } => scenarios::ingest::run(&manager_bin()?, margs, agents, rate, duration).await,
        Scenario::Idle { agents, duration } => {
            scenarios::idle::run(&manager_bin()?, margs, agents, duration).await
        }
        Scenario::Incident { agents, rounds } => {
            scenarios::incident::run(&manager_bin()?, margs, agents, rounds).await
        }
        Scenario::CronFleet {
            agents,
            silent,
            duration,
        } => scenarios::cron_fleet::run(&manager_bin()?, margs, agents, silent, duration).await,
        Scenario::Follow { agents, duration } => {
            scenarios::follow::run(&manager_bin()?, margs, agents, duration).await
        }
        Scenario::Package {
            agents,
            size_mib,
            cap,
        } => {
            scenarios::package_fanout::run(
                &agent_bin()?,
                &manager_bin()?,
                margs,
                agents,
                size_mib,
                cap,
            )
            .await
        }
        Scenario::PackagePeers {
            agents,
            size,
            manager_egress,
        } => {
            scenarios::package_peers::run(
                &agent_bin()?,
                &manager_bin()?,
                margs,
                agents,
                size,
                &manager_egress,
            )
            .await
        }
        Scenario::FanoutReal {
            agents,
            count,
            stopped,
            hog,
        } => {
            scenarios::fanout::real(
                &agent_bin()?,
                &manager_bin()?,
                margs,
                agents,
                count,
                stopped,
                hog,
            )
            .await
        }
        Scenario::Fanout { agents, count } => {
            scenarios::fanout::sim(&manager_bin()?, margs, agents, count).await
        }
        Scenario::ClusterFailover { members, rounds } => {
            scenarios::cluster::failover(members, rounds).await
        }
        Scenario::ClusterIngest {
            members,
            senders,
            batch,
            duration,
        } => scenarios::cluster::ingest(members, senders, batch, duration).await,
        Scenario::Console {
            nodes,
            jobs,
            runs_per_node,
            count,
        } => scenarios::console::run(&manager_bin()?, nodes, jobs, runs_per_node, count).await,
        Scenario::PropagationReal { agents, saves } => {
            scenarios::propagation_real::run(&manager_bin()?, margs, &agent_bin()?, agents, saves)
                .await
        }
    }
}

/// Installs SIGINT and SIGTERM handlers now, and resolves when either arrives, so a scenario is
/// dropped (and the processes it started are killed) instead of op-bench dying with children left
/// behind. Installing before the scenario starts leaves no window in which a signal kills us.
fn interrupted() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        let (Ok(mut int), Ok(mut term)) = (int, term) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("op-bench: {e}");
            return ExitCode::from(1);
        }
    };
    let json = cli.common.json;
    let result = runtime.block_on(async {
        let stop = interrupted();
        tokio::select! {
            r = run(cli) => r,
            sig = stop => Err(anyhow::anyhow!("interrupted by {sig}; stopped what was started")),
        }
    });
    match result {
        Ok(figures) => match report::print(&figures, json) {
            // A closed pipe (`op-bench ... | head`) is not an error.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("op-bench: {e}");
                ExitCode::from(1)
            }
            _ => ExitCode::SUCCESS,
        },
        Err(e) => {
            eprintln!("op-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
