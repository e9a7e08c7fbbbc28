//! `package` (formerly `package-fanout`): one real manager, N real `op-agent` processes on this
//! machine, one package of random content. Measures the upload, then the time from the stored upload until every agent
//! reports the version installed, and the manager's CPU seconds in each phase (utime + stime from
//! `/proc/PID/stat`), so "bounded by disk and loopback, not by the manager's CPU" can be checked.

use std::path::Path;
use std::time::{Duration, Instant};

use op_proto::package::PackageState;

use crate::agent::AgentProcess;
use crate::manager::ManagerProcess;
use crate::procfs::cpu_secs;
use crate::report::Figure;

/// `bytes` of pseudo-random content (xorshift): incompressible, the same on every run.
pub(super) fn random_content(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 8);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(bytes);
    out
}

/// Starts `agents` real agents enrolled with `m` (`bench-1` at 127.0.0.2, ...) and waits until
/// every one has registered.
pub(super) async fn start_fleet(
    agent_bin: &Path,
    m: &ManagerProcess,
    agents: usize,
    limit: Duration,
) -> anyhow::Result<Vec<AgentProcess>> {
    let fleet: Vec<AgentProcess> = (1..=agents)
        .map(|i| {
            AgentProcess::start_managed(
                agent_bin,
                &m.api_url,
                &m.agent_token,
                &format!("bench-{i}"),
                &format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250),
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let deadline = Instant::now() + limit;
    while m.admin.list_nodes().await?.len() < agents {
        anyhow::ensure!(Instant::now() < deadline, "agents did not register in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(fleet)
}

/// Waits until `agents` nodes report version `v` installed; returns how long that took.
pub(super) async fn wait_installed(
    c: &op_client::Client,
    v: &op_proto::package::PackageVersion,
    agents: usize,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    loop {
        let nodes = c.list_nodes().await?;
        let done = nodes
            .iter()
            .filter(|n| {
                n.packages.iter().any(|p| {
                    p.name == v.name && p.version == v.version && p.state == PackageState::Installed
                })
            })
            .count();
        if done == agents {
            return Ok(t0.elapsed());
        }
        anyhow::ensure!(
            t0.elapsed() < limit,
            "only {done}/{agents} agents got the package"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(
    agent_bin: &Path,
    manager_bin: &Path,
    manager_args: &[String],
    agents: usize,
    size_mib: usize,
    cap: usize,
) -> anyhow::Result<Vec<Figure>> {
    anyhow::ensure!(
        agents > 0 && size_mib > 0,
        "--agents and --size must be at least 1"
    );
    let mut args = vec!["--download-concurrency".to_string(), cap.to_string()];
    args.extend(manager_args.iter().cloned());
    let m = ManagerProcess::start(manager_bin, &args).await?;
    let pid = m.pid();
    let fleet = start_fleet(agent_bin, &m, agents, Duration::from_secs(60)).await?;
    let c = &m.admin;
    let content = random_content(size_mib << 20);

    let cpu0 = cpu_secs(pid)?;
    let t0 = Instant::now();
    let v = c
        .upload_package_bytes("bench.bin", Some(""), content)
        .await?;
    let upload = t0.elapsed();
    let cpu1 = cpu_secs(pid)?;

    let fanout = wait_installed(c, &v, agents, Duration::from_secs(1800)).await?;
    let cpu2 = cpu_secs(pid)?;
    let metrics = c.metrics().await?;
    let peak = metrics
        .lines()
        .find_map(|l| l.strip_prefix("op_manager_package_downloads_peak "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    for a in &fleet {
        let got = std::fs::metadata(a.deploy_dir().join("bench.bin"))?.len();
        anyhow::ensure!(
            got == (size_mib << 20) as u64,
            "agent {} holds {got} bytes",
            a.pid()
        );
    }
    for a in fleet {
        a.stop()?;
    }
    m.stop()?;

    let profile = crate::binaries::profile(agent_bin);
    let cond = format!(
        "{size_mib} MiB package, {agents} agents and the manager on one machine, loopback, download cap {cap}, {profile} build"
    );
    let total_mib = (size_mib * agents) as f64;
    Ok(vec![
        Figure::new("package_upload", upload.as_secs_f64(), "s", cond.clone()),
        Figure::new("package_upload_manager_cpu", cpu1 - cpu0, "s", cond.clone()),
        Figure::new(
            "package_fanout_wall",
            fanout.as_secs_f64(),
            "s",
            cond.clone(),
        ),
        Figure::new(
            "package_fanout_throughput",
            total_mib / fanout.as_secs_f64(),
            "MiB/s",
            cond.clone(),
        ),
        Figure::new("package_fanout_manager_cpu", cpu2 - cpu1, "s", cond.clone()),
        Figure::new("package_fanout_download_peak", peak, "downloads", cond),
    ])
}
