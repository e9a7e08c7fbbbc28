//! Starting a job's process: the one place in the project that creates processes
//! (ARCHITECTURE.md invariant 5; `clippy.toml` forbids `Command::new` elsewhere).
//!
//! The process runs `SHELL -c COMMAND` in its own session (so its own process group, with the
//! leader's pid as group id, and no controlling terminal), with stdin from /dev/null and stdout
//! and stderr on two pipes: `output.rs` reads both, merging them into the run's log and keeping
//! stderr's tail apart for the failure signature. `RunAs` switches to the user's uid, primary
//! gid and supplementary groups before exec.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::process::reaper;

/// A resolved `RunAs` user.
#[derive(Debug, Clone)]
pub struct RunAsUser {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
    pub home: PathBuf,
}

/// Looks a user up in the passwd and group databases. The error is the run's failure reason.
pub fn resolve_user(name: &str) -> Result<RunAsUser, String> {
    let user = match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => u,
        Ok(None) => return Err(format!("RunAs user {name:?} does not exist on this host")),
        Err(e) => return Err(format!("looking up RunAs user {name:?}: {e}")),
    };
    let cname = CString::new(name).map_err(|_| format!("RunAs user {name:?} contains NUL"))?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid)
        .map_err(|e| format!("reading the groups of RunAs user {name:?}: {e}"))?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    Ok(RunAsUser {
        name: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
        home: user.dir,
    })
}

/// Everything needed to start one process.
pub struct SpawnPlan<'a> {
    pub shell: &'a Path,
    pub command: &'a str,
    pub work_dir: &'a Path,
    /// Added to the agent's environment (after removing the agent's own `OP_*` settings).
    pub env: Vec<(String, String)>,
    pub user: Option<&'a RunAsUser>,
    /// `cgroup.procs` files the child joins before anything else (see `cgroup.rs`).
    pub cgroup_procs: Vec<CString>,
}

/// A started process: its pid (= its process group id) and the read ends of its output pipes.
pub struct Spawned {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Finds bash, else sh: the seed ran `bash -c`, and minimal hosts may only have `sh`.
pub fn find_shell() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/bin", "/usr/bin"].map(PathBuf::from))
        .collect();
    for shell in ["bash", "sh"] {
        if let Some(found) = dirs.iter().map(|d| d.join(shell)).find(|p| p.is_file()) {
            return found;
        }
    }
    PathBuf::from("/bin/sh")
}

/// Starts the process. The error is a one-line reason for the run record.
#[allow(clippy::disallowed_methods)] // The executor is the one place allowed to spawn.
pub fn spawn(plan: SpawnPlan<'_>) -> Result<Spawned, String> {
    if !plan.work_dir.is_dir() {
        return Err(format!(
            "work dir {} does not exist or is not a directory",
            plan.work_dir.display()
        ));
    }
    // O_CLOEXEC: a write end must reach only this child (as its fd 1 or 2). A copy leaking into
    // a job started concurrently would hold the pipe open and delay its EOF.
    let (out_read, out_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("creating the stdout pipe: {e}"))?;
    let (err_read, err_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("creating the stderr pipe: {e}"))?;

    let mut cmd = Command::new(plan.shell);
    cmd.arg("-c")
        .arg(plan.command)
        .current_dir(plan.work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_write))
        .stderr(Stdio::from(err_write));
    // The agent's own settings (OP_TOKEN, OP_AUTH_PASSWORD, ...) are secrets a job must not see.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("OP_")) {
            cmd.env_remove(key);
        }
    }
    if let Some(user) = plan.user {
        cmd.env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    cmd.envs(plan.env);

    let creds = plan.user.map(|u| (u.uid, u.gid, u.groups.clone()));
    let cgroups = plan.cgroup_procs;
    // SAFETY: the closure runs in the child between fork and exec. It calls only
    // async-signal-safe functions (open/write/close, setsid, setgroups, setgid, setuid) and does
    // not allocate: the paths and the group list were built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // Join the run's cgroup first, while still privileged, so nothing of the job runs
            // outside its limits.
            super::cgroup::join_in_child(&cgroups)?;
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some((uid, gid, groups)) = &creds
                && (libc::setgroups(groups.len(), groups.as_ptr()) == -1
                    || libc::setgid(*gid) == -1
                    || libc::setuid(*uid) == -1)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }

    let result = reaper().spawn_tracked(|| {
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        // Dropping std's Child neither waits nor kills; the supervisor owns the pid from here.
        drop(child);
        Ok(((), pid))
    });
    // Close our copies of the write ends now, so EOF arrives when the job's processes close theirs.
    drop(cmd);
    match result {
        Ok(((), pid)) => Ok(Spawned {
            pid,
            stdout: out_read,
            stderr: err_read,
        }),
        Err(e) => Err(format!("could not start {}: {e}", plan.shell.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_is_a_reason_not_a_panic() {
        let err = resolve_user("no-such-user-op-agent").unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let root = resolve_user("root").unwrap();
        assert_eq!(root.uid, 0);
    }

    #[test]
    fn shell_is_found() {
        assert!(find_shell().is_file());
    }
}
