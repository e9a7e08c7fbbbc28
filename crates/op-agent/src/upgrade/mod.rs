//! The agent upgrades itself (issue 22).
//!
//! An agent release is the package with the reserved name of this platform
//! (`op-agent-linux-x86_64`, [`op_proto::agent_upgrade`]); the manager sends its declared
//! version and deadline beside it ([`op_proto::agent::DesiredState::agent_release`]). It is not
//! deployed like other packages: the [`Upgrader`] downloads it and verifies its size and sha256
//! with the deployer's [`download::fetch`](crate::deploy::download::fetch), checks the ELF header,
//! writes it as `STATE_DIR/bin/op-agent-<version>`, records the upgrade as pending
//! ([`files::Pending`]), keeps the running binary as `bin/previous` and switches the
//! `bin/current` symlink, then stops the agent the ordinary way (no new fires; running jobs get
//! `shutdown_grace`; the outbox and the once-job ledger are durable) and exits with
//! [`EXIT_UPGRADE`]. The [`guard`] (what the shipped systemd unit starts) then starts the new
//! binary through `bin/current`, watches it until it confirms its first sync, and restores the
//! previous binary when it does not. The restored agent reports the failure as the package's
//! deploy failure (so a rollout halts on it, and `agent.upgrade_failed` is raised), and never
//! retries that content.
//!
//! An agent not started by the guard refuses to replace itself (the report says why): nothing
//! would bring it back if the new binary were bad.

pub mod files;
pub mod guard;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use op_proto::agent_upgrade::AgentRelease;
use op_proto::package::{InstalledPackage, PackageRef, PackageState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::deploy::Source;
use files::{Failed, Pending};

/// The exit code of an agent that stopped so the guard starts its upgraded binary.
pub const EXIT_UPGRADE: u8 = 75;

/// Set by the guard in the agent's environment.
pub const GUARDED_ENV: &str = "OP_AGENT_GUARDED";

static RESTART: AtomicBool = AtomicBool::new(false);

/// True once the agent stopped to let the guard start a new binary.
pub fn restart_requested() -> bool {
    RESTART.load(Ordering::SeqCst)
}

/// True when this agent was started by `op-agent guard`.
pub fn guarded() -> bool {
    std::env::var_os(GUARDED_ENV).is_some_and(|v| v == "1")
}

/// Follows the agent release of the desired state; cheap to clone.
#[derive(Clone)]
pub struct Upgrader {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    source: Arc<dyn Source>,
    /// The agent's own shutdown: cancelled to stop for the new binary.
    stop: CancellationToken,
    guarded: bool,
    report: Mutex<Option<InstalledPackage>>,
    changed: watch::Sender<u64>,
    /// The sha256 of the release being installed, if any.
    working: Mutex<Option<String>>,
    /// The first sync's confirmation was written (or was not needed).
    confirmed: AtomicBool,
}

impl Upgrader {
    pub fn new(
        state_dir: &std::path::Path,
        source: Arc<dyn Source>,
        stop: CancellationToken,
    ) -> Upgrader {
        Upgrader {
            inner: Arc::new(Inner {
                dir: files::bin_dir(state_dir),
                source,
                stop,
                guarded: guarded(),
                report: Mutex::new(None),
                changed: watch::Sender::new(0),
                working: Mutex::new(None),
                confirmed: AtomicBool::new(false),
            }),
        }
    }

    /// What the heartbeat reports for the agent release (none when there is none).
    pub fn report(&self) -> Option<InstalledPackage> {
        self.inner
            .report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Bumped whenever [`Upgrader::report`] changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Called after every sync that reached a manager: a new binary confirms it runs (or says
    /// it is not the version declared), once.
    pub fn synced(&self) {
        if self.inner.confirmed.swap(true, Ordering::SeqCst) {
            return;
        }
        let dir = &self.inner.dir;
        let Some(pending) = files::load_pending(dir) else {
            return;
        };
        let name = if pending.version == crate::version() {
            files::CONFIRMED
        } else {
            tracing::error!(declared = %pending.version, running = crate::version(), "this binary is not the version its release declared; the guard restores the previous one");
            files::MISMATCH
        };
        if let Err(e) = files::write_atomic(dir, name, crate::version().as_bytes()) {
            tracing::error!(error = %e, "cannot confirm the upgrade to the guard");
            self.inner.confirmed.store(false, Ordering::SeqCst);
        } else if name == files::CONFIRMED {
            tracing::info!(
                version = crate::version(),
                "upgrade confirmed: this agent reached a manager"
            );
        }
    }

    /// The agent release of the desired state (the reserved package of this platform), if any.
    pub fn set_desired(&self, pkg: Option<&PackageRef>, release: Option<&AgentRelease>) {
        let Some(pkg) = pkg else {
            self.set_report(None);
            return;
        };
        let fail = |version: u64, error: String| InstalledPackage {
            name: pkg.name.clone(),
            version,
            sha256: String::new(),
            state: PackageState::Failed,
            target_version: Some(pkg.version),
            error: Some(error),
            fetched: None,
        };
        let Some(release) = release else {
            self.set_report(Some(fail(
                0,
                "the manager sent no declared version for this agent release".into(),
            )));
            return;
        };
        if release.version == crate::version() {
            self.set_report(Some(InstalledPackage {
                name: pkg.name.clone(),
                version: pkg.version,
                sha256: pkg.sha256.clone(),
                state: PackageState::Installed,
                target_version: None,
                error: None,
                fetched: None,
            }));
            return;
        }
        if let Some(f) = files::load_failed(&self.inner.dir).filter(|f| f.sha256 == pkg.sha256) {
            self.set_report(Some(fail(0, failure_text(&f))));
            return;
        }
        if !self.inner.guarded {
            self.set_report(Some(fail(
                0,
                format!(
                    "this agent was not started by `op-agent guard`, so it cannot replace itself with {} (nothing would restore it); start it through the shipped systemd unit, or upgrade it with its package manager",
                    release.version
                ),
            )));
            return;
        }
        {
            let mut working = self.inner.working.lock().unwrap_or_else(|p| p.into_inner());
            if working.as_deref() == Some(pkg.sha256.as_str()) {
                return;
            }
            *working = Some(pkg.sha256.clone());
        }
        let (me, pkg, release) = (self.clone(), pkg.clone(), release.clone());
        tokio::spawn(async move {
            let result = me.install(&pkg, &release).await;
            *me.inner.working.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if let Err(e) = result {
                tracing::warn!(version = %release.version, error = %e, "agent upgrade failed; this binary keeps running");
                me.set_report(Some(InstalledPackage {
                    name: pkg.name.clone(),
                    version: 0,
                    sha256: String::new(),
                    state: PackageState::Failed,
                    target_version: Some(pkg.version),
                    error: Some(e),
                    fetched: None,
                }));
            }
        });
    }

    fn set_report(&self, report: Option<InstalledPackage>) {
        let mut cur = self.inner.report.lock().unwrap_or_else(|p| p.into_inner());
        if *cur != report {
            *cur = report;
            drop(cur);
            self.inner.changed.send_modify(|n| *n += 1);
        }
    }

    /// Download, verify, write, switch, stop. Returns only on failure (or when stopping).
    async fn install(&self, pkg: &PackageRef, release: &AgentRelease) -> Result<(), String> {
        op_proto::agent_upgrade::validate_version(&release.version)?;
        self.set_report(Some(InstalledPackage {
            name: pkg.name.clone(),
            version: 0,
            sha256: String::new(),
            state: PackageState::Downloading,
            target_version: Some(pkg.version),
            error: None,
            fetched: None,
        }));
        let dir = self.inner.dir.clone();
        crate::state::private_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let part = dir.join(format!(".download-{}.part", pkg.version));
        tokio::select! {
            r = crate::deploy::download::fetch(self.inner.source.as_ref(), pkg, &part, Duration::from_secs(60)) => r.map_err(|e| e.to_string())?,
            _ = self.inner.stop.cancelled() => return Ok(()),
        }
        tracing::info!(version = %release.version, "agent release downloaded and verified; switching");
        let (d, p, r) = (dir.clone(), pkg.clone(), release.clone());
        tokio::task::spawn_blocking(move || switch(&d, &part, &p, &r))
            .await
            .map_err(|e| format!("install task failed: {e}"))??;
        tracing::info!(version = %release.version, "stopping so that the guard starts the new agent");
        RESTART.store(true, Ordering::SeqCst);
        self.inner.stop.cancel();
        Ok(())
    }
}

/// What the report says about an upgrade the guard rolled back.
pub fn failure_text(f: &Failed) -> String {
    let mut text = format!("agent {} rolled back: {}", f.version, f.reason);
    let out = f.output.trim();
    text.push_str("; its last output: ");
    if out.is_empty() {
        text.push_str("(none)");
    } else {
        // The tail, within the report's budget.
        let start = out.len().saturating_sub(1000);
        let start = (start..out.len())
            .find(|i| out.is_char_boundary(*i))
            .unwrap_or(0);
        text.push_str(&out[start..]);
    }
    text
}

/// Writes the verified download as `op-agent-<version>`, records the upgrade as pending and
/// switches `current` (after keeping the running binary as `previous`).
fn switch(
    dir: &std::path::Path,
    part: &std::path::Path,
    pkg: &PackageRef,
    release: &AgentRelease,
) -> Result<(), String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let io =
        |what: &str, p: &std::path::Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    let mut head = [0u8; 64];
    let n = std::fs::File::open(part)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| io("reading", part, e))?;
    if let Err(e) = op_proto::agent_upgrade::check_elf(&head[..n], std::env::consts::ARCH) {
        let _ = std::fs::remove_file(part);
        return Err(format!("refused the agent release: {e}"));
    }
    std::fs::set_permissions(part, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("setting the mode of", part, e))?;
    let binary = files::binary_path(dir, &release.version);
    std::fs::rename(part, &binary).map_err(|e| io("renaming into", &binary, e))?;
    files::sync_dir(dir);
    // The binary running now is what a failed upgrade returns to.
    let running =
        std::env::current_exe().map_err(|e| format!("cannot find the running binary: {e}"))?;
    let previous = running.starts_with(dir).then(|| running.clone());
    let pending = Pending {
        version: release.version.clone(),
        sha256: pkg.sha256.clone(),
        package_version: pkg.version,
        previous: previous.clone(),
        deadline_secs: release.deadline_secs.max(1),
        since: files::now(),
        exits: 0,
    };
    files::remove(dir, files::CONFIRMED);
    files::remove(dir, files::MISMATCH);
    files::save_pending(dir, &pending).map_err(|e| io("writing", &dir.join(files::PENDING), e))?;
    files::switch_link(dir, files::PREVIOUS, &running)
        .map_err(|e| io("switching", &dir.join(files::PREVIOUS), e))?;
    files::switch_link(
        dir,
        files::CURRENT,
        std::path::Path::new(binary.file_name().unwrap_or_default()),
    )
    .map_err(|e| io("switching", &dir.join(files::CURRENT), e))?;
    let mut keep = vec![binary];
    keep.extend(previous);
    files::prune(dir, &keep);
    Ok(())
}
