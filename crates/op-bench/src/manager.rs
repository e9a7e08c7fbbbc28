//! A real `op-manager` process in a temp dir, for one measurement.
//!
//! The manager listens on `127.0.0.1:0` (API and raft); its first stdout line names the URLs, and
//! its data dir holds the admin and agent tokens. [`ManagerProcess::start`] returns once it has a
//! raft leader, so the first write of a scenario is not a measurement of the election. Dropping the
//! guard SIGKILLs it if it is still running, so a failed measurement leaves no process behind.

#![allow(clippy::disallowed_methods)] // A benchmark starts the binary it measures.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use op_client::Client;

use crate::binaries::{ChildGuard, die_with_parent};

/// How long a starting manager may take to elect itself.
const LEADER_WAIT: Duration = Duration::from_secs(60);

pub struct ManagerProcess {
    child: ChildGuard,
    /// Kept open: a manager writing to a closed stdout would fail.
    _stdout: BufReader<ChildStdout>,
    dir: tempfile::TempDir,
    pub api_url: String,
    /// A client with the admin token.
    pub admin: Client,
    pub admin_token: String,
    pub agent_token: String,
}

impl ManagerProcess {
    /// Starts `bin` with default settings plus `extra_args` (e.g. `--sync-wait 5s`).
    pub async fn start(bin: &Path, extra_args: &[String]) -> anyhow::Result<ManagerProcess> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let log_path = dir.path().join("manager.log");
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--raft-listen", "127.0.0.1:0"])
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path)?);
        die_with_parent(&mut cmd);
        for (k, _) in std::env::vars() {
            if k.starts_with("OP_") {
                cmd.env_remove(k);
            }
        }
        let mut child = ChildGuard::new(
            cmd.spawn()
                .with_context(|| format!("starting {}", bin.display()))?,
        );
        let stdout = child
            .child_mut()
            .and_then(|c| c.stdout.take())
            .context("no stdout")?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        // "op-manager listening api=URL raft=URL"
        let Some(api_url) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("api="))
            .map(str::to_string)
        else {
            bail!(
                "manager did not start: {line:?}; its log:\n{}",
                tail(&log_path)
            );
        };
        let token = |name: &str| -> anyhow::Result<String> {
            let path = data.join(name);
            Ok(std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_string())
        };
        let manager = ManagerProcess {
            admin: Client::new(&api_url, Some(&token("admin.token")?))?,
            admin_token: token("admin.token")?,
            agent_token: token("agent.token")?,
            api_url,
            child,
            _stdout: stdout,
            dir,
        };
        manager.wait_leader().await?;
        Ok(manager)
    }

    async fn wait_leader(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            if let Ok(status) = self.admin.cluster().await
                && status.leader.is_some()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "manager has no raft leader after {}s; its log:\n{}",
                    LEADER_WAIT.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// The value of an unlabelled metric from `/metrics` (e.g. `op_manager_syncs_parked`).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.admin.metrics().await?;
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| value.trim().parse::<f64>().ok())
            .with_context(|| format!("the manager reports no metric {name}"))
    }

    /// The last lines of the manager's log, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("manager.log"))
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.child.terminate("manager", Duration::from_secs(60))
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
