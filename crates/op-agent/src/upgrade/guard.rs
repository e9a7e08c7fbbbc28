//! `op-agent guard`: the watchdog of self-upgrades, and the process the shipped systemd unit
//! starts. It is the Debian package's own binary, so it never depends on a self-upgraded binary
//! working.
//!
//! It starts the binary `STATE_DIR/bin/current` points to (or its own binary when there is none,
//! or when its own version is newer: a `dpkg` upgrade wins over an older self-upgrade) with the
//! agent's flags, and follows it:
//! - the agent exits with [`EXIT_UPGRADE`]: it switched `current`; start it at once;
//! - an upgrade is pending (`pending.json`): the new agent must write `confirmed` (after its first
//!   sync) before the deadline. `mismatch` (it is not the declared version), the deadline passing,
//!   or a third exit restore the previous binary (`current` back, `failed.json` written with the
//!   reason and the new binary's last output) and start it;
//! - any other exit: started again after a pause (1 s, doubling to 30 s), except exit 0 (stopped)
//!   and 2 (bad configuration), which the guard exits with;
//! - SIGTERM/SIGINT/SIGHUP are passed to the agent; on SIGTERM/SIGINT the guard exits with it.
//!
//! The records live on disk, so a guard killed and started again continues where it was.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

use super::files::{self, Failed, Pending};
use super::{EXIT_UPGRADE, GUARDED_ENV};
use crate::config::{Cli, Config};

/// Exits of a new binary that make the guard give up on it.
pub const MAX_EXITS: u32 = 3;
/// How much of the agent's last stderr is kept for a failure report.
const OUTPUT_KEEP: usize = 4096;

static STOPPING: AtomicBool = AtomicBool::new(false);
static CHILD: AtomicI32 = AtomicI32::new(0);

fn say(msg: &str) {
    op_log::print_stderr(&format!("op-agent guard: {msg}"));
}

/// Runs the guard with the agent's flags `args`; returns the agent's last exit code.
pub fn run(args: &[String]) -> ExitCode {
    let cli = match Cli::try_parse_from(
        std::iter::once("op-agent".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(c) => c,
        Err(e) => {
            say(&format!("bad agent flags: {e}"));
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            say(&e.to_string());
            return ExitCode::from(2);
        }
    };
    let dir = files::bin_dir(&config.state_dir);
    if let Err(e) =
        crate::state::private_dir(&config.state_dir).and_then(|()| crate::state::private_dir(&dir))
    {
        say(&format!("cannot create {}: {e}", dir.display()));
        return ExitCode::from(1);
    }
    let shipped = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            say(&format!("cannot find its own binary: {e}"));
            return ExitCode::from(1);
        }
    };
    // Signals are taken by one thread and passed on; blocked here before any thread starts, so
    // every thread inherits the mask (the agent's mask is reset when it is started).
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        say(&format!("cannot block signals: {e}"));
        return ExitCode::from(1);
    }
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            if sig != Signal::SIGHUP {
                STOPPING.store(true, Ordering::SeqCst);
            }
            let pid = CHILD.load(Ordering::SeqCst);
            if pid > 0 {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    });
    Guard {
        dir,
        shipped,
        args: args.to_vec(),
    }
    .run()
}

struct Guard {
    dir: PathBuf,
    shipped: PathBuf,
    args: Vec<String>,
}

/// How one start of the agent ended.
enum Ended {
    Exited(ExitStatus),
    /// The guard stopped it: the upgrade failed this way.
    RolledBack,
    /// It could not be started.
    NotStarted(String),
}

impl Guard {
    fn run(&self) -> ExitCode {
        let mut pause = Duration::from_secs(1);
        loop {
            if STOPPING.load(Ordering::SeqCst) {
                return ExitCode::SUCCESS;
            }
            let mut pending = self.check_pending();
            let binary = self.choose();
            let started = Instant::now();
            let output = Arc::new(Mutex::new(VecDeque::with_capacity(OUTPUT_KEEP)));
            let ended = match self.start(&binary, &output) {
                Ok(child) => self.follow(child, &mut pending, &output),
                Err(e) => Ended::NotStarted(format!("cannot start {}: {e}", binary.display())),
            };
            if STOPPING.load(Ordering::SeqCst) {
                return match ended {
                    Ended::Exited(s) => code_of(s),
                    _ => ExitCode::SUCCESS,
                };
            }
            let last = String::from_utf8_lossy(
                &output
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .copied()
                    .collect::<Vec<u8>>(),
            )
            .to_string();
            let how = match ended {
                Ended::RolledBack => continue,
                Ended::Exited(s) if s.code() == Some(i32::from(EXIT_UPGRADE)) => {
                    pause = Duration::from_secs(1);
                    continue;
                }
                Ended::Exited(s) => {
                    if pending.is_none() {
                        match s.code() {
                            Some(0) => return ExitCode::SUCCESS,
                            Some(2) => {
                                say("the agent refused its configuration; not restarting it");
                                return ExitCode::from(2);
                            }
                            _ => {}
                        }
                    }
                    describe(s)
                }
                Ended::NotStarted(m) => m,
            };
            if let Some(mut p) = pending {
                p.exits += 1;
                if p.exits >= MAX_EXITS {
                    self.restore(
                        &p,
                        format!(
                            "it stopped {} times within its {} s deadline (last: {how})",
                            p.exits, p.deadline_secs
                        ),
                        last,
                    );
                    continue;
                }
                if let Err(e) = files::save_pending(&self.dir, &p) {
                    say(&format!("cannot record the exit: {e}"));
                }
                say(&format!(
                    "the new agent {} stopped ({how}); starting it again",
                    p.version
                ));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            if started.elapsed() > Duration::from_secs(60) {
                pause = Duration::from_secs(1);
            }
            say(&format!(
                "the agent stopped ({how}); starting it again in {} s",
                pause.as_secs()
            ));
            self.sleep_unless_stopping(pause);
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    fn sleep_unless_stopping(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !STOPPING.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pending upgrade, if one is still to be watched; restores one whose time is up.
    fn check_pending(&self) -> Option<Pending> {
        let p = files::load_pending(&self.dir)?;
        // Killed between recording the upgrade and switching: nothing switched, nothing to watch
        // (the agent tries again).
        let switched = files::link_target(&self.dir, files::CURRENT)
            .is_some_and(|t| t == files::binary_path(&self.dir, &p.version));
        if !switched {
            files::remove(&self.dir, files::PENDING);
            return None;
        }
        if p.expired(files::now()) {
            self.restore(
                &p,
                format!("it did not reach a manager within {} s", p.deadline_secs),
                String::new(),
            );
            return None;
        }
        Some(p)
    }

    /// The binary to start: `current` when it is there and executable and not older than this
    /// (the shipped) binary, else the shipped one.
    fn choose(&self) -> PathBuf {
        let Some(target) = files::link_target(&self.dir, files::CURRENT) else {
            return self.shipped.clone();
        };
        if !files::is_executable(&target) {
            say(&format!(
                "{} is not an executable file; starting {}",
                target.display(),
                self.shipped.display()
            ));
            return self.shipped.clone();
        }
        if let Some(v) = files::version_of(&target)
            && files::load_pending(&self.dir).is_none()
            && op_proto::agent_upgrade::compare_versions(crate::version(), &v)
                == std::cmp::Ordering::Greater
        {
            say(&format!(
                "the installed agent {} is newer than the self-upgraded {v}; starting it",
                crate::version()
            ));
            files::remove(&self.dir, files::CURRENT);
            return self.shipped.clone();
        }
        target
    }

    #[allow(clippy::disallowed_methods)] // The guard starts the agent itself: it is the agent's supervisor, not a job.
    fn start(&self, binary: &Path, output: &Arc<Mutex<VecDeque<u8>>>) -> std::io::Result<Child> {
        let mut cmd = std::process::Command::new(binary);
        cmd.args(&self.args)
            .env(GUARDED_ENV, "1")
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        // The guard blocks SIGTERM, SIGINT and SIGHUP in every thread (one thread takes them and
        // passes them on); a blocked mask is inherited across exec, so without this the agent
        // would never see the SIGTERM passed to it and a stop would wait for SIGKILL.
        // SAFETY: runs in the child between fork and exec and calls only async-signal-safe
        // functions (sigemptyset, pthread_sigmask) on a set on the stack.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                match libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) {
                    0 => Ok(()),
                    e => Err(std::io::Error::from_raw_os_error(e)),
                }
            });
        }
        let mut child = cmd.spawn()?;
        CHILD.store(child.id() as i32, Ordering::SeqCst);
        if let Some(mut err) = child.stderr.take() {
            let keep = output.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut stderr = std::io::stderr();
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let _ = stderr.write_all(&buf[..n]);
                    let mut k = keep.lock().unwrap_or_else(|p| p.into_inner());
                    k.extend(&buf[..n]);
                    while k.len() > OUTPUT_KEEP {
                        k.pop_front();
                    }
                }
            });
        }
        Ok(child)
    }

    /// Waits for the agent to exit, watching a pending upgrade meanwhile.
    fn follow(
        &self,
        mut child: Child,
        pending: &mut Option<Pending>,
        output: &Arc<Mutex<VecDeque<u8>>>,
    ) -> Ended {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    CHILD.store(0, Ordering::SeqCst);
                    // Let the output thread take the last lines.
                    std::thread::sleep(Duration::from_millis(50));
                    return Ended::Exited(status);
                }
                Ok(None) => {}
                Err(e) => {
                    say(&format!("cannot wait for the agent: {e}"));
                }
            }
            if let Some(p) = pending.as_ref() {
                let verdict = if let Some(v) =
                    files::read_marker(&self.dir, files::CONFIRMED).filter(|v| *v == p.version)
                {
                    say(&format!(
                        "the new agent {v} reached a manager: upgrade confirmed"
                    ));
                    files::remove(&self.dir, files::PENDING);
                    files::remove(&self.dir, files::CONFIRMED);
                    files::remove(&self.dir, files::FAILED);
                    let mut keep = vec![files::binary_path(&self.dir, &p.version)];
                    keep.extend(p.previous.clone());
                    files::prune(&self.dir, &keep);
                    *pending = None;
                    None
                } else if let Some(v) = files::read_marker(&self.dir, files::MISMATCH) {
                    Some(format!(
                        "the new binary reports version {v}, not the declared {}",
                        p.version
                    ))
                } else if p.expired(files::now()) {
                    Some(format!(
                        "it did not reach a manager within {} s",
                        p.deadline_secs
                    ))
                } else {
                    None
                };
                if let Some(reason) = verdict {
                    stop(&mut child);
                    let last = String::from_utf8_lossy(
                        &output
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .iter()
                            .copied()
                            .collect::<Vec<u8>>(),
                    )
                    .to_string();
                    if let Some(p) = pending.take() {
                        self.restore(&p, reason, last);
                    }
                    return Ended::RolledBack;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Puts the previous binary back and records why.
    fn restore(&self, p: &Pending, reason: String, output: String) {
        say(&format!(
            "the new agent {} failed: {reason}; restoring the previous binary",
            p.version
        ));
        let restored = match &p.previous {
            Some(prev) if files::is_executable(prev) => match prev.file_name() {
                Some(name) => files::switch_link(&self.dir, files::CURRENT, Path::new(name)),
                None => Ok(()),
            },
            _ => std::fs::remove_file(self.dir.join(files::CURRENT)).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
        };
        if let Err(e) = restored {
            say(&format!(
                "cannot switch back: {e}; removing the new binary so that the shipped one starts"
            ));
            let _ = std::fs::remove_file(self.dir.join(files::CURRENT));
        }
        let failed = Failed {
            version: p.version.clone(),
            sha256: p.sha256.clone(),
            package_version: p.package_version,
            reason,
            output,
            at: files::now(),
        };
        if let Err(e) = files::save_failed(&self.dir, &failed) {
            say(&format!("cannot record the failure: {e}"));
        }
        files::remove(&self.dir, files::PENDING);
        files::remove(&self.dir, files::CONFIRMED);
        files::remove(&self.dir, files::MISMATCH);
        let _ = std::fs::remove_file(files::binary_path(&self.dir, &p.version));
    }
}

/// SIGTERM, then SIGKILL after 10 s.
fn stop(child: &mut Child) {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            CHILD.store(0, Ordering::SeqCst);
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    CHILD.store(0, Ordering::SeqCst);
}

fn describe(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended".into(),
    }
}

fn code_of(s: ExitStatus) -> ExitCode {
    match s.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    }
}
