//! A real `op-agent` process in a temp dir, for one measurement.
//!
//! The agent runs with a jobs dir (standalone mode) or connected to a manager, with basic auth,
//! on `127.0.0.1:0`; its first stdout line gives the address. Dropping the guard SIGKILLs it if it is still running, so a
//! failed measurement leaves no process behind.

#![allow(clippy::disallowed_methods)] // A benchmark starts the binary it measures.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub const USER: &str = "bench";
pub const PASS: &str = "bench-password";

/// Finds the agent binary: the flag, else `op-agent` beside this executable.
pub fn locate(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    locate_bin(flag, "op-agent", "--agent-bin")
}

/// Finds a workspace binary: the flag, else `name` beside this executable.
pub fn locate_bin(flag: Option<PathBuf>, name: &str, flag_name: &str) -> anyhow::Result<PathBuf> {
    let path = match flag {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("executable has no directory")?
            .join(name),
    };
    if !path.is_file() {
        bail!(
            "no {name} binary at {}; build it with `cargo build --release -p {name}` or pass {flag_name}",
            path.display()
        );
    }
    Ok(path)
}

/// The cargo profile the agent binary was built with, from its directory name (`dist`,
/// `release`, `debug`), for the conditions of each figure.
pub fn profile(bin: &Path) -> String {
    bin.parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unknown".into())
}

pub struct AgentProcess {
    child: Option<Child>,
    /// Kept for its lifetime: the agent's state and jobs live here until the guard drops.
    _dir: tempfile::TempDir,
    pub base: String,
    pub http: reqwest::Client,
}

impl AgentProcess {
    /// Starts the agent with `jobs` (file name, task JSON) in its jobs dir.
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
        let args = vec!["--jobs-dir".into(), jobs_dir.display().to_string()];
        AgentProcess::spawn(bin, dir, &args)
    }

    /// Starts an agent connected to a manager, named `name` with the identity IP `ip`.
    pub fn start_managed(
        bin: &Path,
        name: &str,
        ip: &str,
        manager: &str,
        token: &str,
    ) -> anyhow::Result<AgentProcess> {
        let args: Vec<String> = [
            "--node-name",
            name,
            "--ip",
            ip,
            "--manager",
            manager,
            "--manager-token",
            token,
        ]
        .map(String::from)
        .to_vec();
        AgentProcess::spawn(bin, tempfile::tempdir()?, &args)
    }

    fn spawn(bin: &Path, dir: tempfile::TempDir, extra: &[String]) -> anyhow::Result<AgentProcess> {
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
        .args(extra)
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
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
            bail!("agent did not start: {line:?}");
        };
        Ok(AgentProcess {
            base: format!("http://{addr}"),
            child: Some(child),
            _dir: dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        })
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

/// Reads `VmRSS` and `VmHWM` (KiB) of a process.
pub fn rss_kib(pid: i32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// CPU time (user + system) of a process, in seconds.
pub fn cpu_secs(pid: i32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("bad stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command name.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}
