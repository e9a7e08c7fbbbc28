//! Issue 16, defect 2: a lost `agent.db` must not make a new node silently. Before the fix, an
//! agent whose `agent.db` was zeroed or deleted started as a new node, ran a once-job it had
//! already run (from its cached job set, with an empty ledger), and then looped forever on "this
//! credential belongs to node X, not Y". Now the start is refused, naming
//! `op-agent reset-identity`; after the reset the host enrolls as a new node, the manager retires
//! the old one and hands its once-job history over, and the once-job does not run again.

use std::path::Path;

use op_proto::NodeStatus;
use op_proto::api::TargetState;
use op_testkit::{Agent, AgentOptions, Manager, wait_until};

use crate::support::{LONG, runs_of};

fn times_ran(marker: &Path) -> usize {
    std::fs::read_to_string(marker)
        .unwrap_or_default()
        .lines()
        .count()
}

async fn lost_state_is_refused_until_reset(lose: impl FnOnce(&Path)) {
    let m = Manager::start();
    let c = m.client();
    let mut a = Agent::start(AgentOptions::new("node-1", "127.0.0.2").manager(&m));
    wait_until(LONG, "the agent is Ready", || async {
        c.get_node("node-1")
            .await
            .is_ok_and(|n| n.status == NodeStatus::Ready)
    })
    .await;
    let old_id = c.get_node("node-1").await.unwrap().node_id;
    let marker = a.path("once-ran");
    let once = |name: &str| {
        format!(
            r#"{{"JobName":"{name}","Command":"echo {name} >> {}","OnceJob":1}}"#,
            marker.display()
        )
    };
    c.save_job_text("setup-once", &once("setup-once"))
        .await
        .unwrap();
    wait_until(LONG, "setup-once ran and was reported", || async {
        runs_of(&c, "setup-once").await.len() == 1
    })
    .await;
    a.stop();
    assert_eq!(times_ran(&marker), 1);

    let state = a.path("state");
    lose(&state.join("agent.db"));
    a.restart();
    let status = a.wait_exit(LONG);
    assert_eq!(status.code(), Some(1), "{}", a.log());
    let expected = format!("op-agent reset-identity --state-dir {}", state.display());
    assert!(a.log().contains(&expected), "{}", a.log());
    assert_eq!(times_ran(&marker), 1, "the refused start ran nothing");

    let out = a.command(&["reset-identity", "--state-dir", state.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("node.token"), "{stdout}");
    a.restart();
    wait_until(
        LONG,
        "the host is a new node and the old one retired",
        || async {
            c.list_nodes().await.is_ok_and(|nodes| {
                let new = nodes.iter().any(|n| {
                    n.hostname == "node-1" && n.node_id != old_id && n.status == NodeStatus::Ready
                });
                let old = nodes
                    .iter()
                    .any(|n| n.node_id == old_id && n.status == NodeStatus::Left);
                new && old
            })
        },
    )
    .await;
    let new_id = c
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.hostname == "node-1" && n.status == NodeStatus::Ready)
        .expect("the new node")
        .node_id;
    assert_ne!(new_id, old_id);
    // The old node's once-job history is the new node's.
    let targets = c.once_targets("setup-once", None).await.unwrap();
    assert!(
        targets
            .iter()
            .any(|t| t.node_id == new_id && t.state == TargetState::Done),
        "{targets:?}"
    );
    // The new node is in step with the manager: a once-job saved now runs there, and the one
    // that ran before the reset does not run again.
    c.save_job_text("after-reset", &once("after-reset"))
        .await
        .unwrap();
    wait_until(LONG, "after-reset ran on the new node", || async {
        runs_of(&c, "after-reset")
            .await
            .iter()
            .any(|r| r.node_id == new_id)
    })
    .await;
    assert_eq!(
        times_ran(&marker),
        2,
        "{:?}",
        std::fs::read_to_string(&marker)
    );
    assert_eq!(runs_of(&c, "setup-once").await.len(), 1);
    assert!(
        a.log().contains("once-job ledger rebuilt"),
        "the agent wrote the history into its ledger:\n{}",
        a.log()
    );
    // The reset marker was taken by the registration: a restart is an ordinary one.
    assert!(!state.join("identity-reset.json").exists());
}

#[tokio::test]
async fn a_zeroed_agent_db_is_refused_and_reset_identity_keeps_once_jobs_once() {
    lost_state_is_refused_until_reset(|db| {
        std::fs::write(db, b"").unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_deleted_agent_db_is_refused_and_reset_identity_keeps_once_jobs_once() {
    lost_state_is_refused_until_reset(|db| {
        std::fs::remove_file(db).unwrap();
        for suffix in ["-wal", "-shm"] {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    })
    .await;
}
