//! Restarts of the real binary on the same data dir: after SIGTERM and after kill -9, jobs,
//! nodes, runs and tokens are all still there, and the manager keeps its promises.

use op_proto::agent::RunBatch;
use op_proto::api::{CreateTokenRequest, RunQuery, Scope};
use op_proto::{RunStatus, Trigger};
use serde_json::json;

use crate::common::*;

struct Before {
    viewer_secret: String,
    agent: FakeAgent,
    runs: usize,
}

async fn fill(m: &ManagerProcess) -> Before {
    let admin = m.client("admin.token");
    let agent = m.client("agent.token");
    save(
        &admin,
        json!({"JobName": "cycleTest.py", "Command": "true", "CronExpr": "*/1 * * * * * *"}),
    )
    .await;
    let a = FakeAgent::new(2);
    a.register(&agent).await;
    save(
        &admin,
        json!({"JobName": "ls-l", "Command": "ls -l /tmp", "OnceJob": 1}),
    )
    .await;
    let runs: Vec<_> = (0..50)
        .map(|_| a.run("cycleTest.py", 1, Trigger::Cron, RunStatus::Ok))
        .collect();
    let ack = a
        .client(&agent)
        .post_runs(&RunBatch {
            node_id: a.node_id,
            runs,
        })
        .await
        .unwrap();
    assert_eq!(ack.accepted, 50);
    let viewer = admin
        .create_token(&CreateTokenRequest {
            name: "viewer".into(),
            scope: Scope::Viewer,
            expires_in_secs: None,
        })
        .await
        .unwrap();
    Before {
        viewer_secret: viewer.secret,
        agent: a,
        runs: 50,
    }
}

async fn check(m: &ManagerProcess, before: &Before) {
    let viewer = op_client::Client::new(&m.url, Some(&before.viewer_secret)).unwrap();
    let jobs: Vec<_> = viewer
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| (j.record.spec.name, j.record.revision))
        .collect();
    assert_eq!(
        jobs,
        [("cycleTest.py".to_string(), 1), ("ls-l".to_string(), 1)]
    );
    let node = viewer.get_node("node-2").await.unwrap();
    assert_eq!(node.node_id, before.agent.node_id);
    let runs = viewer
        .runs(&RunQuery {
            job: Some("cycleTest.py".into()),
            ..RunQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), before.runs);
    let targets = viewer.once_targets("ls-l", None).await.unwrap();
    assert_eq!(targets.len(), 1);
    // The original tokens still work, and the agent still gets its desired state.
    let agent = m.client("agent.token");
    assert_eq!(
        before.agent.job_names(&agent).await,
        ["cycleTest.py", "ls-l"]
    );
    let tokens = m.client("admin.token").list_tokens().await.unwrap();
    assert_eq!(tokens.len(), 3);
    // And writes go on: redelivered runs are still recognized as duplicates.
    let cluster = viewer.cluster().await.unwrap();
    assert_eq!(cluster.leader, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigterm_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let m = ManagerProcess::spawn(dir.path(), &[]);
    let before = fill(&m).await;
    tokio::task::spawn_blocking(move || m.terminate())
        .await
        .unwrap();
    let m = ManagerProcess::spawn(dir.path(), &[]);
    check(&m, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_kill_9_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshot often, so the restart also goes through a snapshot plus a log suffix.
    let m = ManagerProcess::spawn(dir.path(), &["--raft-snapshot-logs", "10"]);
    let before = fill(&m).await;
    let extra = m.client("agent.token");
    let again = before
        .agent
        .client(&extra)
        .post_runs(&RunBatch {
            node_id: before.agent.node_id,
            runs: vec![],
        })
        .await
        .unwrap();
    assert_eq!(again.accepted, 0);
    tokio::task::spawn_blocking(move || m.kill9())
        .await
        .unwrap();
    let m = ManagerProcess::spawn(dir.path(), &["--raft-snapshot-logs", "10"]);
    check(&m, &before).await;
    assert!(
        dir.path().join("snapshots/current.db").exists(),
        "a snapshot was built"
    );
    // A second start of the same dir is refused while this one runs.
    let second = std::panic::catch_unwind(|| ManagerProcess::spawn(dir.path(), &[]));
    assert!(second.is_err(), "two managers on one data dir");
}
