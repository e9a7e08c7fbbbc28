//! A real `op-agent` process in a temp dir, for one measurement.
//!
//! The agent runs with a jobs dir (standalone mode) or against a manager, with basic auth, on
//! `127.0.0.1:0`; its first stdout line gives the address. Dropping the guard SIGKILLs it if it is
//! still running, so a failed measurement leaves no process behind.

#![allow(clippy::disallowed_methods)] // A benchmark starts the binary it measures.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub const USER: &str = "bench";
pub const PASS: &str = "bench-password";

pub struct AgentProcess {
    child: Option<Child>,
    /// Kept for its lifetime: the agent's state and jobs live here until the guard drops.
    dir: tempfile::TempDir,
    pub base: String,
    pub http: reqwest::Client,
}

impl AgentProcess {
    /// Starts a standalone agent with `jobs` (file name, task JSON) in its jobs dir.
    pub fn start(bin: &Path, jobs: &[(String, serde_json::Value)]) -> anyhow::Result<AgentProcess> {
        let dir = tempfile::tempdir()?;
        let jobs_dir = dir.path().join("jobs");
        std::fs::create_dir_all(&jobs_dir)?;
        for (name, body) in jobs {
            std::fs::write(
                jobs_dir.join(format!("{name}.json")),
                serde_json::to_vec_pretty(body)?,
            )?;
        }
        let mode = vec!["--jobs-dir".into(), jobs_dir.into_os_string()];
        AgentProcess::launch(bin, dir, mode)
    }

    /// Starts an agent managed by the manager at `manager_url`, reporting `node_name` and `ip` as
    /// its identity (distinct per agent, so several share one machine).
    pub fn start_managed(
        bin: &Path,
        manager_url: &str,
        manager_token: &str,
        node_name: &str,
        ip: &str,
    ) -> anyhow::Result<AgentProcess> {
        let dir = tempfile::tempdir()?;
        let mode = ["--manager", manager_url, "--manager-token", manager_token]
            .into_iter()
            .chain(["--node-name", node_name, "--ip", ip])
            .map(Into::into)
            .collect();
        AgentProcess::launch(bin, dir, mode)
    }

    fn launch(
        bin: &Path,
        dir: tempfile::TempDir,
        mode: Vec<std::ffi::OsString>,
    ) -> anyhow::Result<AgentProcess> {
        let log = std::fs::File::create(dir.path().join("agent.log"))?;
        let mut cmd = Command::new(bin);
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--auth-user",
            USER,
            "--auth-password",
            PASS,
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--deploy-dir")
        .arg(dir.path().join("deploy"))
        .args(mode)
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
        crate::binaries::die_with_parent(&mut cmd);
        for (k, _) in std::env::vars() {
            if k.starts_with("OP_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
            bail!("agent did not start: {line:?}; its log:\n{log}");
        };
        Ok(AgentProcess {
            base: format!("http://{addr}"),
            child: Some(child),
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        })
    }

    /// Where the agent deploys packages (`--deploy-dir`).
    pub fn deploy_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("deploy")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .basic_auth(USER, Some(PASS))
            .send()
            .await?
            .error_for_status()?;
        Ok(resp.json().await?)
    }

    /// Waits until the agent holds `n` jobs.
    pub async fn wait_jobs(&self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.get_json("/v1/status").await?;
            if status["jobs"].as_array().map(Vec::len) == Some(n) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("agent did not load {n} jobs");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGSTOP: the agent freezes with its connections open, as a hung host's does.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        if let Some(child) = &self.child {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)?;
        }
        Ok(())
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )?;
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("agent did not stop within 60 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
