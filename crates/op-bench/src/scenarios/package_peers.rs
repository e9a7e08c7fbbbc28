//! `package-peers` (issue 26, packages from peers): one real manager whose package egress is
//! capped (`--download-rate-limit`), N real `op-agent` processes on this machine (peer serving on,
//! as by default), one package of random content. Measures the time from the stored upload until
//! every agent reports the version installed (each agent checks every chunk and the whole file's
//! sha256 before it installs; the bench then compares every deployed file with the content), and
//! the share of the N copies' bytes the manager sent (its `op_manager_package_download_bytes_total`
//! against N × size). Run it again with `--manager-arg=--peer-distribution=false` for the same
//! fleet without peers.

use std::path::Path;
use std::time::Duration;

use crate::agent::{PASS, USER};
use crate::manager::ManagerProcess;
use crate::report::Figure;
use crate::scenarios::package_fanout::{random_content, start_fleet, wait_installed};

/// The value of the unlabelled metric `name` in a Prometheus text page (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(key, _)| *key == name)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0.0)
}

pub async fn run(
    agent_bin: &Path,
    manager_bin: &Path,
    manager_args: &[String],
    agents: usize,
    size_mib: usize,
    egress: &str,
) -> anyhow::Result<Vec<Figure>> {
    anyhow::ensure!(
        agents > 0 && size_mib > 0,
        "--agents and --size must be at least 1"
    );
    let rate = op_proto::units::parse_size(egress)
        .map_err(|e| anyhow::anyhow!("--manager-egress {egress:?}: {e}"))?;
    anyhow::ensure!(rate > 0, "--manager-egress must be more than 0");
    let mut args = vec!["--download-rate-limit".to_string(), egress.to_string()];
    args.extend(manager_args.iter().cloned());
    let peers_off = args
        .windows(2)
        .any(|w| w[0] == "--peer-distribution" && w[1] == "false")
        || args.iter().any(|a| a == "--peer-distribution=false");
    let m = ManagerProcess::start(manager_bin, &args).await?;
    let fleet = start_fleet(agent_bin, &m, agents, Duration::from_secs(120)).await?;
    let c = &m.admin;
    let size = (size_mib as u64) << 20;
    let content = std::sync::Arc::new(random_content(size as usize));
    let sent0 = m
        .metric("op_manager_package_download_bytes_total")
        .await
        .unwrap_or(0.0);
    let v = c
        .upload_package_bytes("bench-peers.bin", Some(""), content.to_vec())
        .await?;
    let all_have = wait_installed(c, &v, agents, Duration::from_secs(3600)).await?;
    let sent = m.metric("op_manager_package_download_bytes_total").await? - sent0;
    // Every copy, checked on disk.
    for a in &fleet {
        let path = a.deploy_dir().join("bench-peers.bin");
        let want = content.clone();
        let same = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            Ok(std::fs::read(path)? == *want)
        })
        .await??;
        anyhow::ensure!(same, "agent {} holds other content", a.pid());
    }
    // What each agent served its peers; the most any one of them uploaded.
    let mut most_served = 0.0f64;
    for a in &fleet {
        let text = a
            .http
            .get(format!("{}/metrics", a.base))
            .basic_auth(USER, Some(PASS))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        most_served = most_served.max(metric(&text, "op_agent_peer_served_bytes_total"));
    }
    for a in fleet {
        a.stop()?;
    }
    m.stop()?;

    let profile = crate::binaries::profile(agent_bin);
    let cond = format!(
        "{size_mib} MiB package to {agents} agents, manager egress {egress}/s, peer distribution {}, \
         manager and agents on one machine, loopback, {profile} build",
        if peers_off { "off" } else { "on" }
    );
    let total = (agents as u64 * size) as f64;
    Ok(vec![
        Figure::new(
            "package_peers_all_have",
            all_have.as_secs_f64(),
            "s",
            cond.clone(),
        ),
        Figure::new(
            "package_peers_manager_bytes_share",
            100.0 * sent / total,
            "%",
            cond.clone(),
        ),
        Figure::new(
            "package_peers_manager_bytes",
            sent / (1u64 << 20) as f64,
            "MiB",
            cond.clone(),
        ),
        Figure::new(
            "package_peers_max_agent_upload",
            most_served / (1u64 << 20) as f64,
            "MiB",
            cond,
        ),
    ])
}
