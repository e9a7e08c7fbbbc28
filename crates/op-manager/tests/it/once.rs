//! Once-jobs: selection at save time (Ready nodes matching WhiteHosts/BlackHosts), reports of
//! unknown and not-Ready hosts, and targets following the runs agents report.

use op_proto::agent::RunBatch;
use op_proto::api::TargetState;
use op_proto::{NodeStatus, RunStatus, Trigger};
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_job_selects_ready_matching_nodes_and_reports_the_rest() {
    let m = TestManager::start_with(|a| {
        a.node_timeout = Some("2s".into());
        a.heartbeat_flush = Some("500ms".into());
        a.sync_wait = Some("1s".into());
    })
    .await;
    let (admin, agent) = (m.admin(), m.agent());
    let agents: Vec<FakeAgent> = (2..=4).map(FakeAgent::new).collect();
    for a in &agents {
        a.register(&agent).await;
    }
    // node-2 and node-3 keep beating; node-4 falls silent and becomes NotReady.
    let keep = agents[..2].to_vec();
    let beating = agent.clone();
    let beats = tokio::spawn(async move {
        loop {
            for a in &keep {
                let _ = a.client(&beating).sync(0, 0, &a.heartbeat()).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    wait_until("node-4 NotReady", DEADLINE, || async {
        let n = admin.get_node("node-4").await.ok()?;
        (n.status == NodeStatus::NotReady).then_some(())
    })
    .await;
    assert_eq!(
        admin.get_node("127.0.0.2").await.unwrap().status,
        NodeStatus::Ready
    );

    let saved = save(
        &admin,
        json!({
            "JobName": "ls-l", "Command": "ls -l /tmp", "OnceJob": 1,
            "WhiteHosts": ["127.0.0.2", "node-3", "127.0.0.4", "127.0.0.9"],
            "BlackHosts": ["node-3"]
        }),
    )
    .await;
    let once = saved.once.unwrap();
    let selected: Vec<_> = once.selected.iter().map(|h| h.hostname.as_str()).collect();
    assert_eq!(selected, ["node-2"]);
    assert_eq!(once.selected[0].ips, "127.0.0.2");
    assert_eq!(once.unknown, ["127.0.0.9"]);
    assert_eq!(once.not_ready, ["127.0.0.4"]);

    // An empty white list means every Ready host; not-Ready ones are named.
    let all = save(
        &admin,
        json!({"JobName": "ll-all", "Command": "ls", "OnceJob": 1}),
    )
    .await;
    let all = all.once.unwrap();
    let mut selected: Vec<_> = all.selected.iter().map(|h| h.hostname.clone()).collect();
    selected.sort();
    assert_eq!(selected, ["node-2", "node-3"]);
    assert_eq!(all.not_ready, ["node-4"]);
    assert!(all.unknown.is_empty());

    // Desired state: only targets get a once-job.
    assert_eq!(agents[0].job_names(&agent).await, ["ll-all", "ls-l"]);
    assert_eq!(agents[1].job_names(&agent).await, ["ll-all"]);
    assert_eq!(agents[2].job_names(&agent).await, Vec::<String>::new());

    // Targets follow the runs.
    let targets = admin.once_targets("ls-l", None).await.unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].state, TargetState::Pending);
    let a2 = &agents[0];
    let mut run = a2.run("ls-l", saved.revision, Trigger::Once, RunStatus::Running);
    let post = |r: op_proto::RunRecord, a: &FakeAgent| RunBatch {
        node_id: a.node_id,
        runs: vec![r],
    };
    a2.client(&agent)
        .post_runs(&post(run.clone(), a2))
        .await
        .unwrap();
    assert_eq!(
        admin.once_targets("ls-l", None).await.unwrap()[0].state,
        TargetState::Running
    );
    assert_eq!(a2.job_names(&agent).await, ["ll-all"], "no longer pending");
    run.status = RunStatus::Ok;
    a2.client(&agent)
        .post_runs(&post(run.clone(), a2))
        .await
        .unwrap();
    let t = &admin
        .once_targets("ls-l", Some(saved.revision))
        .await
        .unwrap()[0];
    assert_eq!((t.state, t.run_id), (TargetState::Done, Some(run.run_id)));

    let a3 = &agents[1];
    let failed = a3.run("ll-all", 1, Trigger::Once, RunStatus::Failed);
    a3.client(&agent)
        .post_runs(&post(failed, a3))
        .await
        .unwrap();
    let states: Vec<_> = admin
        .once_targets("ll-all", None)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.hostname, t.state))
        .collect();
    assert_eq!(
        states,
        [
            ("node-2".to_string(), TargetState::Pending),
            ("node-3".to_string(), TargetState::Failed)
        ]
    );
    beats.abort();
    m.stop().await;
}
