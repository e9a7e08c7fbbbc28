//! A manager whose data dir's filesystem fills up (a real tmpfs of a few MiB): writes are
//! refused with 503 `disk_full` and `/healthz` says why while the disk is below `disk_reserve`,
//! and writes resume by themselves once space is freed. If the disk fills past the check
//! anyway (here: `disk_reserve` 0), raft stops for good (openraft 0.9) and the manager exits
//! non-zero so that systemd starts it again; started again after space is freed, it has every
//! acknowledged write and accepts new ones.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use op_testkit::{Manager, ManagerOptions, wait_until};

use crate::support::LONG;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a small tmpfs and needs root (CI runs as root)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs on {} failed",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    st.blocks_available() as u64 * st.fragment_size() as u64
}

/// Writes zeros to `path` until the filesystem has at most `leave` bytes free (0: until full).
fn fill(path: &Path, leave: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        let free = free_bytes(path.parent().unwrap());
        if free <= leave {
            break;
        }
        let n = usize::try_from((free - leave).min(chunk.len() as u64)).unwrap();
        if f.write_all(&chunk[..n]).and_then(|()| f.flush()).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
}

fn job(name: &str) -> String {
    format!(
        r#"{{"JobName":"{name}","Command":"echo {}","CronExpr":"0 0 1 1 *"}}"#,
        "x".repeat(4000)
    )
}

async fn health(m: &Manager) -> (u16, String) {
    let r = reqwest::get(format!("{}/healthz", m.api_url))
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_they_resume_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(&tmp.path().join("data"), "48m");
    let m = Manager::start_in(
        tmp,
        ManagerOptions {
            args: vec!["--disk-reserve".into(), "8MiB".into()],
            ..ManagerOptions::default()
        },
    );
    let c = m.client();
    c.save_job_text("before", &job("before")).await.unwrap();
    assert_eq!(health(&m).await.0, 200);

    let filler = m.data_dir().join("filler");
    fill(&filler, 4 << 20);
    let e = c.save_job_text("during", &job("during")).await.unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(503), Some("disk_full")),
        "{e}"
    );
    assert!(e.to_string().contains("disk is full"), "{e}");
    let (status, text) = health(&m).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("disk is full"), "{text}");

    std::fs::remove_file(&filler).unwrap();
    c.save_job_text("after", &job("after")).await.unwrap();
    assert_eq!(health(&m).await, (200, "ok\n".to_string()));
    let names: Vec<String> = c
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.record.spec.name)
        .collect();
    assert!(names.contains(&"before".to_string()) && names.contains(&"after".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_stopped_by_a_full_disk_exits_non_zero_and_restarts_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(&tmp.path().join("data"), "32m");
    let mut m = Manager::start_in(
        tmp,
        ManagerOptions {
            args: vec!["--disk-reserve".into(), "0".into()],
            ..ManagerOptions::default()
        },
    );
    let c = m.client();
    c.save_job_text("before", &job("before")).await.unwrap();

    let filler = m.data_dir().join("filler");
    fill(&filler, 0);
    // SQLite reuses its WAL's space for a while: write until a write fails.
    let mut acknowledged = vec!["before".to_string()];
    for i in 0..2000 {
        let name = format!("full-{i}");
        match c.save_job_text(&name, &job(&name)).await {
            Ok(_) => acknowledged.push(name),
            Err(_) => break,
        }
    }
    let mut status = None;
    wait_until(LONG, "the manager exits after raft stopped", || {
        status = status.or_else(|| m.exited());
        let done = status.is_some();
        async move { done }
    })
    .await;
    let status = status.unwrap();
    assert!(!status.success(), "exit status {status:?}");
    assert!(m.log().contains("raft stopped"), "{}", m.log());

    std::fs::remove_file(&filler).unwrap();
    m.restart();
    let c = m.client();
    let names: Vec<String> = c
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.record.spec.name)
        .collect();
    for name in &acknowledged {
        assert!(names.contains(name), "{name} was acknowledged and is gone");
    }
    c.save_job_text("after", &job("after")).await.unwrap();
    assert_eq!(health(&m).await, (200, "ok\n".to_string()));
}
