//! A scenario that cannot run says why at once, and one that is stopped leaves nothing running.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::op_bench;

#[test]
fn too_few_open_files_is_a_clear_error() {
    let mut cmd = op_bench(&["propagation", "--agents", "2000"]);
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 512,
                rlim_max: 512,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("open files") && stderr.contains("ulimit -Hn"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it should fail before starting anything"
    );
}

/// Pids of the live `op-manager` processes whose parent is `parent`.
fn managers_of(parent: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if head.ends_with("(op-manager") && fields.get(1) == Some(&parent.to_string().as_str()) {
            pids.push(pid);
        }
    }
    pids
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a long idle run, waits for its manager, sends `sig` to op-bench and checks that the
/// manager goes too.
fn stopped_by(sig: Signal) -> std::process::ExitStatus {
    let mut bench = op_bench(&["idle", "--agents", "10", "--duration", "300s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut manager = Vec::new();
    wait_for(
        Duration::from_secs(30),
        "op-bench to start a manager",
        || {
            manager = managers_of(bench.id());
            !manager.is_empty()
        },
    );
    kill(Pid::from_raw(bench.id() as i32), sig).unwrap();
    let status = bench.wait().unwrap();
    wait_for(Duration::from_secs(30), "the manager to be gone", || {
        manager.iter().all(|p| !alive(*p))
    });
    status
}

#[test]
fn sigterm_stops_the_manager_and_fails() {
    let status = stopped_by(Signal::SIGTERM);
    assert_eq!(status.code(), Some(1));
}

#[test]
fn sigkill_of_op_bench_still_takes_the_manager_down() {
    let status = stopped_by(Signal::SIGKILL);
    assert_eq!(status.code(), None, "killed by a signal");
}
