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

    // The common case (no RunAs, no cgroup: nothing to do between fork and exec but setsid)
    // starts the process without copying the agent's memory map (see `spawn_light`).
    if plan.user.is_none() && plan.cgroup_procs.is_empty() {
        match spawn_light(&plan, &out_write, &err_write) {
            Light::Started(pid) => {
                drop((out_write, err_write));
                return Ok(Spawned {
                    pid,
                    stdout: out_read,
                    stderr: err_read,
                });
            }
            Light::Failed(e) => {
                return Err(format!("could not start {}: {e}", plan.shell.display()));
            }
            Light::Unavailable => {}
        }
    }

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

/// What [`spawn_light`] did.
enum Light {
    Started(i32),
    /// The process could not be started (as `fork` + `exec` would have failed too).
    Failed(std::io::Error),
    /// This C library cannot do it (no `POSIX_SPAWN_SETSID` or no `addchdir_np`): fork instead.
    Unavailable,
}

/// `posix_spawn` with `POSIX_SPAWN_SETSID`: the C library starts the child with
/// `CLONE_VM | CLONE_VFORK`, so the agent's memory map is not copied and its pages are not made
/// copy-on-write (after a `fork` every write of the agent's faults once). Measured: copying the
/// map, the faults after it and unmapping the copy in the child were about a tenth of an
/// agent's CPU in `exec --all -- true` to 20 agents on one machine. The child gets what
/// `std::process::Command` would give it: the agent's environment without its `OP_*` settings
/// plus the run's, stdin from /dev/null, stdout and stderr on the pipes, the work dir, an empty
/// signal mask and SIGPIPE at its default.
fn spawn_light(plan: &SpawnPlan<'_>, out: &OwnedFd, err: &OwnedFd) -> Light {
    use std::ffi::OsString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};

    type AddChdir =
        unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, *const libc::c_char) -> i32;
    static ADDCHDIR: std::sync::OnceLock<Option<AddChdir>> = std::sync::OnceLock::new();
    let addchdir = *ADDCHDIR.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; a found symbol has this C signature
        // (glibc 2.29+, musl 1.1.24+). Absent (older or static C libraries): the fork path.
        let sym = unsafe {
            libc::dlsym(
                libc::RTLD_DEFAULT,
                c"posix_spawn_file_actions_addchdir_np".as_ptr(),
            )
        };
        (!sym.is_null()).then(|| unsafe { std::mem::transmute::<*mut libc::c_void, AddChdir>(sym) })
    });
    let Some(addchdir) = addchdir else {
        return Light::Unavailable;
    };
    // A pipe end on 0, 1 or 2 would need care dup2 cannot give, and a relative shell path
    // Command's own resolution: leave both to Command.
    if out.as_raw_fd() <= 2 || err.as_raw_fd() <= 2 || !plan.shell.is_absolute() {
        return Light::Unavailable;
    }
    let cstr = |b: &[u8]| CString::new(b.to_vec());
    let (Ok(shell), Ok(command), Ok(dir)) = (
        cstr(plan.shell.as_os_str().as_bytes()),
        cstr(plan.command.as_bytes()),
        cstr(plan.work_dir.as_os_str().as_bytes()),
    ) else {
        return Light::Failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a NUL byte in the command or a path",
        ));
    };
    // The environment as Command builds it: the agent's without OP_*, then the run's (a later
    // value of the same name wins).
    let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os()
        .filter(|(k, _)| !k.as_bytes().starts_with(b"OP_"))
        .collect();
    for (k, v) in &plan.env {
        env.insert(k.into(), v.into());
    }
    let mut envp = Vec::with_capacity(env.len());
    for (k, v) in env {
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend(v.into_vec());
        match CString::new(kv) {
            Ok(c) => envp.push(c),
            Err(_) => {
                return Light::Failed(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a NUL byte in an environment variable",
                ));
            }
        }
    }
    let dash_c = c"-c";
    let argv: [*mut libc::c_char; 4] = [
        shell.as_ptr() as *mut _,
        dash_c.as_ptr() as *mut _,
        command.as_ptr() as *mut _,
        std::ptr::null_mut(),
    ];
    let mut envp_ptrs: Vec<*mut libc::c_char> = envp.iter().map(|c| c.as_ptr() as *mut _).collect();
    envp_ptrs.push(std::ptr::null_mut());

    // SAFETY: the attribute and file-action objects are initialised before use and destroyed
    // on every path below; every pointer passed points into values that outlive the calls.
    unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        if libc::posix_spawnattr_init(&mut attr) != 0 {
            return Light::Unavailable;
        }
        if libc::posix_spawn_file_actions_init(&mut fa) != 0 {
            libc::posix_spawnattr_destroy(&mut attr);
            return Light::Unavailable;
        }
        let result = (|| {
            let flags = libc::POSIX_SPAWN_SETSID as libc::c_int
                | libc::POSIX_SPAWN_SETSIGMASK as libc::c_int
                | libc::POSIX_SPAWN_SETSIGDEF as libc::c_int;
            if libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short) != 0 {
                // POSIX_SPAWN_SETSID is glibc 2.26+.
                return Light::Unavailable;
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            if libc::posix_spawnattr_setsigmask(&mut attr, &empty) != 0
                || libc::posix_spawnattr_setsigdefault(&mut attr, &pipe) != 0
                || libc::posix_spawn_file_actions_addopen(
                    &mut fa,
                    0,
                    c"/dev/null".as_ptr(),
                    libc::O_RDONLY,
                    0,
                ) != 0
                || libc::posix_spawn_file_actions_adddup2(&mut fa, out.as_raw_fd(), 1) != 0
                || libc::posix_spawn_file_actions_adddup2(&mut fa, err.as_raw_fd(), 2) != 0
                || addchdir(&mut fa, dir.as_ptr()) != 0
            {
                return Light::Unavailable;
            }
            let spawned = reaper().spawn_tracked(|| {
                let mut pid: libc::pid_t = 0;
                let rc = libc::posix_spawn(
                    &mut pid,
                    shell.as_ptr(),
                    &fa,
                    &attr,
                    argv.as_ptr(),
                    envp_ptrs.as_ptr(),
                );
                if rc != 0 {
                    return Err(std::io::Error::from_raw_os_error(rc));
                }
                Ok(((), pid))
            });
            match spawned {
                Ok(((), pid)) => Light::Started(pid),
                Err(e) => Light::Failed(e),
            }
        })();
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut attr);
        result
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
    fn the_light_path_gives_what_command_gives() {
        use std::io::Read;
        // SAFETY: this test's process runs this test alone (nextest), so nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("OP_SPAWN_TEST_SECRET", "leak") };
        let dir = tempfile::tempdir().unwrap();
        let shell = find_shell();
        let plan = SpawnPlan {
            shell: &shell,
            command: "read x; echo \"[$x] $(pwd) ${OP_SPAWN_TEST_SECRET:-unset} $G\"; \
                      echo oops >&2; exec sleep 30",
            work_dir: dir.path(),
            env: vec![("G".into(), "hi".into())],
            user: None,
            cgroup_procs: Vec::new(),
        };
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let Light::Started(pid) = spawn_light(&plan, &out_w, &err_w) else {
            panic!("posix_spawn with setsid is available on this machine");
        };
        drop((out_w, err_w));
        let mut out = std::fs::File::from(out_r);
        let mut line = String::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0] as char);
        }
        let canon = dir.path().canonicalize().unwrap();
        assert_eq!(line, format!("[] {} unset hi", canon.display()));
        let mut err = String::new();
        let mut e = std::fs::File::from(err_r);
        while e.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            err.push(byte[0] as char);
        }
        assert_eq!(err, "oops");
        // Its own session (so its own group), led by it.
        let stat = super::super::process::parse_stat(
            &std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap(),
        )
        .unwrap();
        assert_eq!(stat.pgrp, pid);
        let sid: i32 = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(sid, pid);
        super::super::process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        let (exit, _) = reaper().reap_leader(pid).unwrap();
        assert_eq!(exit, super::super::process::ExitKind::Signal(libc::SIGKILL));
    }

    #[test]
    fn shell_is_found() {
        assert!(find_shell().is_file());
    }
}
