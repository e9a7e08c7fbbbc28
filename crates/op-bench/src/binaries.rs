//! Where the measured binaries are, how they were built, and a guard that kills a started one.
//!
//! `op-bench` looks for `op-agent` and `op-manager` beside its own executable, so one
//! `cargo build --release -p op-manager -p op-bench` (or `--profile dist`) gives a set that
//! belongs together; `--agent-bin` and `--manager-bin` point elsewhere.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Finds binary `name`: the flag, else `name` beside this executable.
pub fn locate(name: &str, flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match flag {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("executable has no directory")?
            .join(name),
    };
    if !path.is_file() {
        let flag = name.trim_start_matches("op-");
        bail!(
            "no {name} binary at {}; build it with `cargo build --release -p {name}` or pass --{flag}-bin",
            path.display()
        );
    }
    Ok(path)
}

/// The cargo profile a binary was built with, from its directory name (`dist`, `release`,
/// `debug`), for the conditions of each figure.
pub fn profile(bin: &Path) -> String {
    bin.parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// Makes the kernel SIGKILL the started process if op-bench dies first (even by SIGKILL, when no
/// guard gets to run).
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A started process that is SIGKILLed when the guard drops, unless [`ChildGuard::terminate`]
/// stopped it first: an error anywhere in a scenario leaves no process behind.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(Some(child))
    }

    pub fn pid(&self) -> i32 {
        self.0.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.0.as_mut()
    }

    /// SIGTERM, then wait up to `grace` for the exit (SIGKILL after it).
    pub fn terminate(&mut self, what: &str, grace: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.0.take() else {
            return Ok(());
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + grace;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what} did not stop within {}s of SIGTERM", grace.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
