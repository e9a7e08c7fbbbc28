//! Faults around the daemons (issue 16): a stderr nobody reads, a full state disk. What an
//! operator must see is checked where they would look, on the manager.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use op_proto::{NodeInfo, NodeStatus};
use op_testkit::{Agent, AgentOptions, Manager, ManagerOptions, wait_until};

use crate::support::{LONG, job, runs_of};

async fn node(m: &Manager, name: &str) -> Option<NodeInfo> {
    m.client()
        .list_nodes()
        .await
        .ok()?
        .into_iter()
        .find(|n| n.hostname == name)
}

#[tokio::test]
async fn daemons_whose_stderr_nobody_reads_serve_and_run_jobs() {
    // Both start with every stderr write failing (EPIPE): a panic on the first log line used to
    // kill the manager at start (exit 101) and the agent's tasks one by one.
    let m = Manager::start_with_dead_stderr(ManagerOptions::default());
    let agent = Agent::start(
        AgentOptions::new("deaf-1", "127.0.0.2")
            .manager(&m)
            .dead_stderr(),
    );
    let c = m.client();
    wait_until(LONG, "the agent Ready", || async {
        node(&m, "deaf-1")
            .await
            .is_some_and(|n| n.status == NodeStatus::Ready)
    })
    .await;
    c.save_job(&job(
        r#"{"JobName":"deaf","Command":"echo heard","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    // The agent applies the job set and its runs reach the manager.
    wait_until(LONG, "three runs stored", || async {
        runs_of(&c, "deaf").await.len() >= 3
    })
    .await;
    assert!(m.is_running() && agent.is_running());
}

/// A tmpfs of `size` mounted on `dir` for the test's life. CI runs as root; a test that cannot
/// mount fails loudly rather than passing without having checked anything.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `path` until a write fails; returns the filler's size.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 16 * 1024];
    let mut written = 0;
    while f.write_all(&chunk).and_then(|()| f.sync_data()).is_ok() {
        written += chunk.len() as u64;
    }
    // Whatever still fits in smaller pieces, so SQLite finds no free block either.
    while f
        .write_all(&[0u8; 512])
        .and_then(|()| f.sync_data())
        .is_ok()
    {
        written += 512;
    }
    written
}

#[tokio::test]
async fn a_full_state_disk_is_reported_and_the_once_job_runs_when_space_returns() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!(
            "SKIPPED a_full_state_disk_is_reported_and_the_once_job_runs_when_space_returns: \
             mounting the small filesystem it needs takes root (CI runs it as root)"
        );
        return;
    }
    let m = Manager::start();
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let _fs = Tmpfs::mount(&state, "4m");
    let ran = root.path().join("once-ran");
    let agent = Agent::start(
        AgentOptions::new("full-1", "127.0.0.2")
            .manager(&m)
            .state_dir(&state)
            .arg("--log-dir")
            .arg(&root.path().join("logs").display().to_string()),
    );
    let c = m.client();
    wait_until(LONG, "the agent Ready", || async {
        node(&m, "full-1")
            .await
            .is_some_and(|n| n.status == NodeStatus::Ready)
    })
    .await;

    let filler = state.join("filler");
    assert!(fill(&filler) > 0);
    c.save_job(&job(
        r#"{"JobName":"tick","Command":"true","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    let once = format!(
        r#"{{"JobName":"once-full","Command":"echo ran >> {}","OnceJob":1}}"#,
        ran.display()
    );
    let saved = c.save_job(&job(&once)).await.unwrap();
    assert_eq!(saved.once.expect("selection").selected.len(), 1);

    // The manager shows the node Degraded, says why, and counts the refused fires.
    wait_until(
        LONG,
        "the node Degraded for its full state disk",
        || async {
            node(&m, "full-1").await.is_some_and(|n| {
                n.status == NodeStatus::Degraded
                    && n.degraded
                        .as_deref()
                        .is_some_and(|r| r.starts_with("state disk full"))
                    && n.stats.refused_fires > 0
            })
        },
    )
    .await;
    assert!(
        !ran.exists(),
        "the once-job ran although it could not be recorded"
    );

    // Space returns: the once-job runs, once, without a restart, and the node is Ready again.
    std::fs::remove_file(&filler).unwrap();
    wait_until(LONG, "the once-job ran", || async { ran.exists() }).await;
    wait_until(LONG, "the node Ready again", || async {
        node(&m, "full-1")
            .await
            .is_some_and(|n| n.status == NodeStatus::Ready && n.degraded.is_none())
    })
    .await;
    wait_until(LONG, "the once-job's run stored", || async {
        runs_of(&c, "once-full").await.len() == 1
    })
    .await;
    // A barrier instead of a pause: a later once-job runs only after the agent has applied its
    // job set again, with the first once-job in its ledger; it must not have run that one twice.
    let after = root.path().join("after-ran");
    c.save_job(&job(&format!(
        r#"{{"JobName":"once-after","Command":"echo ran >> {}","OnceJob":1}}"#,
        after.display()
    )))
    .await
    .unwrap();
    wait_until(LONG, "the later once-job ran", || async { after.exists() }).await;
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "ran\n");
    assert!(agent.is_running());
}
