//! Disaster recovery (issue 12): back up a running manager with agents attached, destroy its
//! data dir, restore the backup, start the manager again, and find the jobs, the runs and the
//! packages back, with the same agents reconnecting and new work flowing.

use std::collections::BTreeSet;
use std::process::Command;

use op_proto::NodeStatus;
use op_testkit::{Manager, bin, wait_until};
use sha2::{Digest, Sha256};

use crate::support::{LONG, fleet, job, runs_of};

fn op_manager(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("op-manager"))
        .args(args)
        .output()
        .expect("run op-manager");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn backup_destroy_restore_brings_everything_back_and_agents_reconnect() {
    let mut m = Manager::start();
    let agents = fleet(&m, 2, &[]).await;
    let c = m.client();
    c.save_job(&job(
        r#"{"JobName":"tick","Command":"echo tick","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    c.save_job(&job(
        r#"{"JobName":"api-only","Command":"echo {who}","Params":["who"]}"#,
    ))
    .await
    .unwrap();
    let content = b"#!/bin/sh\necho restored\n".to_vec();
    let pkg = c
        .upload_package_bytes("tool.sh", None, content.clone())
        .await
        .unwrap();
    wait_until(LONG, "runs of tick from both agents", || async {
        runs_of(&c, "tick")
            .await
            .iter()
            .map(|r| r.node_id)
            .collect::<BTreeSet<_>>()
            .len()
            == 2
    })
    .await;
    for a in &agents {
        let installed = a.deploy_dir().join("tool.sh");
        wait_until(LONG, "the package deployed on every agent", || async {
            installed.exists()
        })
        .await;
    }

    // Everything stored before the backup must come back.
    let jobs_before: BTreeSet<String> = c
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.record.spec.name)
        .collect();
    let runs_before: BTreeSet<_> = runs_of(&c, "tick")
        .await
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("manager.tar.gz");
    let data_dir = m.data_dir();
    let (ok, out) = op_manager(&[
        "backup",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--to",
        archive.to_str().unwrap(),
    ]);
    assert!(ok, "backup of a running manager: {out}");
    assert!(out.contains("1 package blobs"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The disaster: the manager and its whole data dir are gone.
    m.kill9();
    std::fs::remove_dir_all(&data_dir).unwrap();

    let (ok, out) = op_manager(&[
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(ok, "restore: {out}");
    // A second restore into the same dir is refused: it never overwrites state.
    let (ok, out) = op_manager(&[
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("already holds"), "{out}");
    // A damaged archive is refused, not half restored.
    let bytes = std::fs::read(&archive).unwrap();
    let damaged = tmp.path().join("damaged.tar.gz");
    std::fs::write(&damaged, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let other = tmp.path().join("other");
    let (ok, out) = op_manager(&[
        "restore",
        "--from",
        damaged.to_str().unwrap(),
        "--data-dir",
        other.to_str().unwrap(),
    ]);
    assert!(!ok, "a truncated backup must not restore: {out}");

    // Same address, restored data dir (the admin token file came back with it).
    m.restart();
    let c = m.client();
    let jobs_after: BTreeSet<String> = c
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.record.spec.name)
        .collect();
    assert_eq!(jobs_after, jobs_before);
    let runs_after: BTreeSet<_> = runs_of(&c, "tick")
        .await
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert!(
        runs_before.is_subset(&runs_after),
        "runs lost: {:?}",
        runs_before.difference(&runs_after).collect::<Vec<_>>()
    );
    let versions = c.package_versions("tool.sh").await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![pkg.version]
    );
    let mut body = c.package_content("tool.sh", pkg.version, 0).await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next_chunk().await.unwrap() {
        bytes.extend_from_slice(&chunk);
    }
    assert_eq!(hex::encode(Sha256::digest(&bytes)), pkg.sha256);

    // The same agents come back (no new node records) and keep delivering runs.
    wait_until(LONG, "both agents Ready again", || async {
        c.list_nodes()
            .await
            .is_ok_and(|n| n.len() == 2 && n.iter().all(|n| n.status == NodeStatus::Ready))
    })
    .await;
    wait_until(
        LONG,
        "new runs from both agents after the restore",
        || async {
            runs_of(&c, "tick")
                .await
                .iter()
                .filter(|r| !runs_before.contains(&r.run_id))
                .map(|r| r.node_id)
                .collect::<BTreeSet<_>>()
                .len()
                == 2
        },
    )
    .await;
    // The restored node is a working one-member cluster: it accepts writes that reach agents.
    c.save_job(&job(
        r#"{"JobName":"after","Command":"echo after","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    wait_until(LONG, "the job saved after the restore runs", || async {
        !runs_of(&c, "after").await.is_empty()
    })
    .await;
    let cluster = c.cluster().await.unwrap();
    assert_eq!(cluster.members.len(), 1, "{cluster:?}");
    let log = m.log();
    let restored = log.rsplit("----- restart -----").next().unwrap_or("");
    assert!(
        !restored.contains("ERROR") && !restored.contains("panicked"),
        "the restored manager logged errors:\n{restored}"
    );
    drop(agents);
}
