//! `op-bench`: the project's measurements, each a subcommand that starts what it needs in a temp
//! dir, measures, prints `name value unit  conditions` lines (or JSON with `--json`), and stops
//! everything it started. Timing figures live here, never in tests (DESIGN.md section 10).

mod agent;
mod manager;
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
    /// A real manager and N real agents: upload one package and time until every agent has it,
    /// with the manager's CPU seconds (op-manager and op-agent beside this executable).
    PackageFanout {
        /// Agents to start.
        #[arg(long, default_value_t = 20)]
        agents: usize,
        /// Package size in MiB (random, incompressible content).
        #[arg(long, default_value_t = 100)]
        size_mib: usize,
        /// The manager's download_concurrency.
        #[arg(long, default_value_t = 100)]
        cap: usize,
    },
    /// `exec --all -- true` through a real manager to real agents, until every result is back.
    FanoutReal {
        #[arg(long, default_value_t = 20)]
        agents: usize,
        /// Invocations to measure (after 3 warm-up ones).
        #[arg(long, default_value_t = 30)]
        count: usize,
    },
    /// A cluster with the default raft timings: kill -9 the leader while a client saves jobs;
    /// time until a save is accepted again (op-manager beside this executable).
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
        /// Simulated agents posting at the same time.
        #[arg(long, default_value_t = 8)]
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
    /// The same with simulated agents (protocol-only tasks in this process).
    FanoutSim {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
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
    let result = runtime.block_on(async {
        let bin = agent::locate(cli.common.agent_bin.clone())?;
        match cli.scenario {
            Scenario::AgentFootprint { duration, jobs } => {
                scenarios::footprint::run(&bin, duration, jobs).await
            }
            Scenario::CronPrecision { duration } => {
                scenarios::cron_precision::run(&bin, duration).await
            }
            Scenario::Invoke { count } => scenarios::invoke::run(&bin, count).await,
            Scenario::PackageFanout {
                agents,
                size_mib,
                cap,
            } => scenarios::package_fanout::run(&bin, agents, size_mib, cap).await,
            Scenario::FanoutReal { agents, count } => {
                let manager = agent::locate_bin(
                    cli.common.manager_bin.clone(),
                    "op-manager",
                    "--manager-bin",
                )?;
                scenarios::fanout::real(&bin, &manager, agents, count).await
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
            } => {
                let manager = agent::locate_bin(
                    cli.common.manager_bin.clone(),
                    "op-manager",
                    "--manager-bin",
                )?;
                scenarios::console::run(&manager, nodes, jobs, runs_per_node, count).await
            }
            Scenario::FanoutSim { agents, count } => {
                let manager = agent::locate_bin(
                    cli.common.manager_bin.clone(),
                    "op-manager",
                    "--manager-bin",
                )?;
                scenarios::fanout::sim(&manager, agents, count).await
            }
        }
    });
    match result {
        Ok(figures) => match report::print(&figures, cli.common.json) {
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
