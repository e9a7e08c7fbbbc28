//! What the daemons keep on disk is their owner's only (issue 17, item 14): the manager's data
//! dir (state.db, raft.db and their WAL files, blobs, identity and tokens), a backup and a data
//! dir restored from it, and the agent's state (agent.db, desired.json, run output files). They
//! were 0644 in 0755 directories, readable by every user of the machine.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use op_testkit::{Manager, bin, wait_until};

use crate::support::{LONG, fleet, runs_of};

/// Every directory under `root` (itself included) is 0700 and every file 0600.
fn assert_private(root: &Path) {
    let mut wrong = Vec::new();
    let mut files = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        if mode != 0o700 {
            wrong.push(format!("{} {mode:o}", dir.display()));
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                files += 1;
                let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
                if mode != 0o600 {
                    wrong.push(format!("{} {mode:o}", entry.path().display()));
                }
            }
        }
    }
    assert!(files > 0, "nothing under {}", root.display());
    assert!(wrong.is_empty(), "not private:\n{}", wrong.join("\n"));
}

fn op_manager(args: &[&str]) {
    let out = Command::new(bin("op-manager")).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "op-manager {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn manager_data_backups_and_agent_state_are_private() {
    let m = Manager::start();
    let agents = fleet(&m, 1, &[]).await;
    let c = m.client();
    c.save_job_text(
        "once",
        r#"{"JobName":"once","Command":"echo private","OnceJob":1}"#,
    )
    .await
    .unwrap();
    c.upload_package_bytes("notes.txt", None, b"a blob".to_vec())
        .await
        .unwrap();
    wait_until(LONG, "the once-job's run arrived", || async {
        runs_of(&c, "once").await.len() == 1
    })
    .await;
    // The package deployed too: the agent's state then holds its copy for peers.
    wait_until(LONG, "the package installed", || async {
        c.list_nodes().await.is_ok_and(|nodes| {
            nodes.iter().all(|n| {
                n.packages.iter().any(|p| {
                    p.name == "notes.txt" && p.state == op_proto::package::PackageState::Installed
                })
            })
        })
    })
    .await;

    let data = m.data_dir();
    assert!(data.join("state.db").is_file() && data.join("raft.db").is_file());
    assert_private(&data);
    let state = agents[0].path("state");
    assert!(state.join("agent.db").is_file() && state.join("logs").is_dir());
    assert_private(&state);

    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("manager.tar.gz");
    let restored = tmp.path().join("restored");
    op_manager(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        archive.to_str().unwrap(),
    ]);
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup");
    op_manager(&[
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert_private(&restored);
}
