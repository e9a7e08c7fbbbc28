//! Process-level primitives: waiting without reaping, reaping with rusage, signalling a process
//! group safely, and keeping the agent free of zombies.
//!
//! The rules that make "never signal a group that isn't ours" hold:
//! - A job's leader is the group's id (it called `setsid`). We do not reap the leader until we
//!   are done signalling its group: while its zombie exists, neither its pid nor its group id can
//!   be reused by another process. Exit is observed with a pidfd (or `waitid(WNOWAIT)` on old
//!   kernels), which does not reap.
//! - The agent is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a job's orphaned grandchildren are
//!   re-parented to us, not to PID 1, so they also keep the group id reserved until we reap them,
//!   and they never linger as zombies when the host's PID 1 reaps slowly (or not at all).
//! - The [`Reaper`] reaps every zombie child that is not a tracked leader. Leaders are registered
//!   under the same lock that `spawn` runs under, so a sweep can never reap a leader whose status
//!   its supervisor still needs. We never call `waitpid(-1)`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use op_proto::run::Rusage;

/// How a leader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

/// One line of `/proc/PID/stat`, the fields we need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

/// Parses `/proc/PID/stat`. The command name may hold spaces and parentheses, so the fields are
/// read after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let pid = text.split_whitespace().next()?.parse().ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Every process visible in /proc.
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name();
        let pid: i32 = name.to_str()?.parse().ok()?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(&text)
    })
    .collect()
}

/// A run's live processes, from one pass over /proc: how many are in its group `pgid`, and the
/// pids of those outside it, which left it with `setsid` (`setsid sleep 1000 &`,
/// `nohup setsid ... &`), with their descendants. Zombies are dead: they only await reaping.
///
/// The agent is a child subreaper, so whatever a run starts stays its descendant (an orphan is
/// re-parented to the agent, not to PID 1). A run's processes are the agent's descendants that
/// carry the run's `OP_RUN_ID` in their environment, the members of its group, and everything
/// below either (a child that cleared its environment is still found through its parent). Only
/// the agent's own descendants outside the group have their environment read, so the pass costs
/// little more than reading every `/proc/*/stat`.
pub fn run_members(pgid: i32, run_id: &str) -> (usize, Vec<i32>) {
    let me = std::process::id() as i32;
    let procs: Vec<ProcStat> = all_processes()
        .into_iter()
        .filter(|p| !matches!(p.state, 'Z' | 'X' | 'x') && p.pid != me)
        .collect();
    let parent: HashMap<i32, i32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
    let ours = |mut pid: i32| {
        // Bounded: a parent chain longer than this is no process tree of ours.
        for _ in 0..256 {
            match parent.get(&pid) {
                Some(&pp) if pp == me => return true,
                Some(&pp) if pp > 1 => pid = pp,
                _ => return false,
            }
        }
        false
    };
    let marker = format!("OP_RUN_ID={run_id}");
    let mut found: HashSet<i32> = procs
        .iter()
        .filter(|p| p.pgrp == pgid || (ours(p.pid) && environ_has(p.pid, &marker)))
        .map(|p| p.pid)
        .collect();
    loop {
        let before = found.len();
        for p in &procs {
            if found.contains(&p.ppid) {
                found.insert(p.pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    let in_group = procs.iter().filter(|p| p.pgrp == pgid).count();
    let escaped = procs
        .iter()
        .filter(|p| p.pgrp != pgid && found.contains(&p.pid))
        .map(|p| p.pid)
        .collect();
    (in_group, escaped)
}

fn environ_has(pid: i32, var: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == var.as_bytes()))
}

/// Sends `sig` to each of `pids` (processes found by [`run_members`] a moment ago).
pub fn signal_each(pids: &[i32], sig: Signal) {
    for &pid in pids {
        if let Err(e) = nix::sys::signal::kill(Pid::from_raw(pid), sig)
            && e != nix::errno::Errno::ESRCH
        {
            tracing::warn!(pid, signal = %sig, error = %e, "could not signal a process of the run");
        }
    }
}

/// Sends `sig` to group `pgid`. Callers guarantee the group is ours (its leader is unreaped).
pub fn signal_group(pgid: i32, sig: Signal) {
    if let Err(e) = killpg(Pid::from_raw(pgid), sig)
        && e != nix::errno::Errno::ESRCH
    {
        tracing::warn!(pgid, signal = %sig, error = %e, "could not signal process group");
    }
}

/// Tracks job leaders and reaps every other zombie child.
pub struct Reaper {
    leaders: Mutex<HashSet<i32>>,
    /// Whether `PR_SET_CHILD_SUBREAPER` took: only then are a run's orphans surely ours.
    subreaper: bool,
}

/// The process-wide reaper: children belong to the process, so there is exactly one.
pub fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER.get_or_init(|| {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            tracing::warn!(
                error = %io::Error::last_os_error(),
                "could not become a child subreaper; orphaned job processes go to PID 1"
            );
        }
        Reaper {
            leaders: Mutex::new(HashSet::new()),
            subreaper: rc == 0,
        }
    })
}

impl Reaper {
    /// Runs `spawn` (which returns the new leader's pid) under the leader lock, so no sweep can
    /// see the new child before it is registered.
    pub fn spawn_tracked<T>(
        &self,
        spawn: impl FnOnce() -> io::Result<(T, i32)>,
    ) -> io::Result<(T, i32)> {
        let mut leaders = self.leaders.lock().unwrap_or_else(|p| p.into_inner());
        let (value, pid) = spawn()?;
        leaders.insert(pid);
        Ok((value, pid))
    }

    /// Reaps the exited leader `pid` (it must have exited) and returns its status and rusage.
    /// Under the leader lock (the wait returns at once: the leader has exited), so the agent's
    /// children change only by exits and re-parenting while [`Reaper::only_leaders`] reads them.
    pub fn reap_leader(&self, pid: i32) -> io::Result<(ExitKind, Rusage)> {
        let mut leaders = self.leaders.lock().unwrap_or_else(|p| p.into_inner());
        let result = wait4(pid);
        leaders.remove(&pid);
        result
    }

    /// True when every child of the agent is the leader of a run (alive, or its zombie): then no
    /// run has a process left but its leader, and a run whose leader exited has none at all, so
    /// [`run_members`] (a read of every process in /proc) would find nothing.
    ///
    /// Why that holds: the agent is a child subreaper, so every process a run started is a
    /// descendant of the agent, through the run's leader while it lives; once the leader exited
    /// its children were re-parented to the agent before the exit could be seen, so they are
    /// direct children of the agent that are not leaders. Children are listed from
    /// `/proc/self/task/*/children` under the leader lock: no leader is spawned or reaped while
    /// they are read, and no other child is reaped (only [`Reaper::sweep`] reaps others, under
    /// the same lock), so no entry can drop out of a list while it is read. False, so the
    /// caller scans, whenever that cannot be known: no subreaper, no `children` files (kernels
    /// without `CONFIG_PROC_CHILDREN`), a read error, or any child that is not a leader.
    pub fn only_leaders(&self) -> bool {
        if !self.subreaper {
            return false;
        }
        let leaders = self.leaders.lock().unwrap_or_else(|p| p.into_inner());
        own_children().is_some_and(|children| children.iter().all(|c| leaders.contains(c)))
    }

    /// Reaps every zombie child of ours that is not a tracked leader: orphaned grandchildren
    /// re-parented to us as subreaper.
    ///
    /// `waitid(WNOWAIT)` names a waitable child without reaping it, so the common cases need no
    /// /proc scan: no zombie child at all (nothing to do), or orphans only (reaped one by one).
    /// Only when a tracked leader's zombie is among them (its supervisor has not reaped it yet)
    /// does the sweep read every process in /proc to find the others. Measured: the scans were
    /// the largest share of an agent's CPU in a fan-out of `true` to 20 agents on one machine.
    pub fn sweep(&self) {
        use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
        let me = std::process::id() as i32;
        let leaders = self.leaders.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let next = waitid(
                Id::All,
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
            );
            let pid = match next {
                Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)) => pid,
                Err(nix::errno::Errno::EINTR) => continue,
                // StillAlive: no zombie child; ECHILD: no child at all.
                _ => return,
            };
            if leaders.contains(&pid.as_raw()) {
                break;
            }
            match nix::sys::wait::waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        for p in all_processes() {
            if p.ppid == me && p.state == 'Z' && !leaders.contains(&p.pid) {
                // WNOHANG: never block, and a pid that is no longer our zombie is simply skipped.
                let _ = nix::sys::wait::waitpid(
                    Pid::from_raw(p.pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
        }
    }
}

/// The agent's children, from the `children` file of each of its threads (a child belongs to
/// the thread that started it, an orphan to the thread that adopted it). None when a file cannot
/// be read.
fn own_children() -> Option<Vec<i32>> {
    let mut out = Vec::new();
    let mut text = String::new();
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("children");
        text.clear();
        match std::fs::File::open(&path).and_then(|mut f| {
            use std::io::Read;
            f.read_to_string(&mut text)
        }) {
            Ok(_) => {}
            // A thread that ended after the listing: its children moved to a live thread. Only
            // leaders can have been among them (the agent starts no other process, and an
            // orphan is adopted by the main thread, which lives as long as the agent).
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        }
        for pid in text.split_whitespace() {
            out.push(pid.parse().ok()?);
        }
    }
    Some(out)
}

/// Waits until process `pid` (our unreaped child) has exited, without reaping it.
pub async fn wait_exit(pid: i32) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 {
        // SAFETY: the syscall just returned this fd to us; nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: `owned` is a valid open fd that the AsyncFd owns (and closes) for its lifetime.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
        };
        if let Ok(afd) = registered {
            // A pidfd becomes readable when the process terminates; it stays readable.
            let _ = afd.readable().await;
            return;
        }
    }
    wait_exit_on_thread(pid).await;
}

/// Kernels before 5.3 (still common on long-lived fleets): a blocking waitid that leaves the
/// zombie in place, on a thread of its own so that long runs never occupy the runtime's bounded
/// blocking pool.
async fn wait_exit_on_thread(pid: i32) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("wait-{pid}"))
        .stack_size(64 * 1024)
        .spawn(move || {
            use nix::sys::wait::{Id, WaitPidFlag, waitid};
            while let Err(nix::errno::Errno::EINTR) = waitid(
                Id::Pid(Pid::from_raw(pid)),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
            ) {}
            let _ = tx.send(());
        });
    match spawned {
        Ok(_) => {
            let _ = rx.await;
        }
        Err(e) => {
            // Without a thread, poll /proc for the zombie: slower, still correct.
            tracing::warn!(pid, error = %e, "cannot start an exit-wait thread; polling");
            poll_until(Duration::from_secs(100 * 365 * 24 * 3600), || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|t| parse_stat(&t))
                    .is_none_or(|p| p.state == 'Z' || p.state == 'X')
            })
            .await;
        }
    }
}

fn wait4(pid: i32) -> io::Result<(ExitKind, Rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; wait4 fills it in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our own child.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if rc == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let kind = if libc::WIFSIGNALED(status) {
        ExitKind::Signal(libc::WTERMSIG(status))
    } else {
        ExitKind::Code(libc::WEXITSTATUS(status))
    };
    let ms = |tv: libc::timeval| (tv.tv_sec as u64) * 1000 + (tv.tv_usec as u64) / 1000;
    Ok((
        kind,
        Rusage {
            user_ms: ms(ru.ru_utime),
            sys_ms: ms(ru.ru_stime),
            max_rss_kb: ru.ru_maxrss.max(0) as u64,
        },
    ))
}

/// Kills, with SIGKILL, every process whose environment carries `OP_RUN_ID=<run_id>`: the
/// leftovers of runs that were in flight when a previous agent died. Identifying them by their
/// environment (not by a stored pid or group id) means a reused pid is never hit. Returns how
/// many were killed.
pub fn kill_run_leftovers(run_ids: &HashSet<String>) -> usize {
    if run_ids.is_empty() {
        return 0;
    }
    let me = std::process::id() as i32;
    let mut killed = 0;
    for p in all_processes() {
        if p.pid == me || p.state == 'Z' {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{}/environ", p.pid)) else {
            continue;
        };
        let hit = env.split(|b| *b == 0).any(|var| {
            var.strip_prefix(b"OP_RUN_ID=")
                .and_then(|v| std::str::from_utf8(v).ok())
                .is_some_and(|v| run_ids.contains(v))
        });
        if hit && nix::sys::signal::kill(Pid::from_raw(p.pid), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// Polls until `cond` holds or `limit` passes; returns whether it held. Used only while a kill
/// is in progress, where a 50 ms poll of /proc is cheap and bounded.
pub async fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep((deadline - now).min(Duration::from_millis(50))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_names() {
        let s = parse_stat("1234 (a (b) c) S 1 1234 1234 0 -1 4194560").unwrap();
        assert_eq!(
            s,
            ProcStat {
                pid: 1234,
                state: 'S',
                ppid: 1,
                pgrp: 1234
            }
        );
        assert!(parse_stat("garbage").is_none());
    }

    #[tokio::test]
    // A test child, reaped with wait4 below rather than through std's Child.
    #[allow(clippy::disallowed_methods, clippy::zombie_processes)]
    async fn exit_is_seen_without_reaping_on_both_paths() {
        for use_thread in [false, true] {
            let child = std::process::Command::new("sleep")
                .arg("0.1")
                .spawn()
                .unwrap();
            let pid = child.id() as i32;
            if use_thread {
                wait_exit_on_thread(pid).await;
            } else {
                wait_exit(pid).await;
            }
            // Exited but not reaped: still a zombie, so its pid cannot be reused yet.
            let stat =
                parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap()).unwrap();
            assert_eq!(stat.state, 'Z');
            let (exit, _) = wait4(pid).unwrap();
            assert_eq!(exit, ExitKind::Code(0));
        }
    }

    #[test]
    // Test children, reaped with wait4 below rather than through std's Child.
    #[allow(clippy::disallowed_methods, clippy::zombie_processes)]
    fn only_leaders_sees_a_child_that_is_not_a_leader() {
        let r = reaper();
        let leader = r
            .spawn_tracked(|| {
                let c = std::process::Command::new("sleep").arg("5").spawn()?;
                Ok(((), c.id() as i32))
            })
            .unwrap()
            .1;
        assert!(own_children().unwrap().contains(&leader));
        assert!(r.only_leaders(), "a leader alone");
        let other = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let other = other.id() as i32;
        assert!(!r.only_leaders(), "a child that is no leader");
        let _ = nix::sys::signal::kill(Pid::from_raw(other), Signal::SIGKILL);
        wait4(other).unwrap();
        assert!(r.only_leaders(), "the other child reaped");
        let _ = nix::sys::signal::kill(Pid::from_raw(leader), Signal::SIGKILL);
        r.reap_leader(leader).unwrap();
        assert!(!own_children().unwrap().contains(&leader));
    }

    #[test]
    fn we_are_visible() {
        let me = std::process::id() as i32;
        assert!(all_processes().iter().any(|p| p.pid == me));
    }
}
