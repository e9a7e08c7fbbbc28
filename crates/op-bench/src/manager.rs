//! A real `op-manager` process in a temp dir, for the fan-out measurements.
//!
//! It listens on `127.0.0.1:0`; its first stdout line gives the API URL, and the admin and agent
//! tokens are read from its data dir. Dropping the guard SIGKILLs it.

#![allow(clippy::disallowed_methods)] // A benchmark starts the binary it measures.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{Context, bail};

pub struct ManagerProcess {
    child: Option<Child>,
    _stdout: BufReader<ChildStdout>,
    dir: tempfile::TempDir,
    pub url: String,
    pub admin_token: String,
    pub agent_token: String,
}

impl ManagerProcess {
    pub fn start(bin: &Path) -> anyhow::Result<ManagerProcess> {
        let dir = tempfile::tempdir()?;
        let log = std::fs::File::create(dir.path().join("manager.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--raft-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
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
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some(url) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("api="))
            .map(str::to_string)
        else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("manager did not start: {line:?}");
        };
        let read = |name: &str| -> anyhow::Result<String> {
            Ok(std::fs::read_to_string(dir.path().join("data").join(name))
                .with_context(|| format!("reading {name}"))?
                .trim()
                .to_string())
        };
        Ok(ManagerProcess {
            admin_token: read("admin.token")?,
            agent_token: read("agent.token")?,
            child: Some(child),
            _stdout: stdout,
            dir,
            url,
        })
    }

    /// The manager's log so far (for an error message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("manager.log")).unwrap_or_default()
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
