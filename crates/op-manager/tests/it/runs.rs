//! Run ingestion (idempotent by run id) and the run queries, including the seed's per-node limit.

use op_proto::agent::RunBatch;
use op_proto::api::RunQuery;
use op_proto::{RunStatus, Trigger};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_batches_are_idempotent_and_queryable() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    let a2 = FakeAgent::new(2);
    let a3 = FakeAgent::new(3);
    for a in [&a2, &a3] {
        a.register(&agent).await;
    }
    // Runs are stored only for jobs selected for their node.
    save(
        &admin,
        serde_json::json!({"JobName": "cycleTest.py", "Command": "true", "CronExpr": "0 0 */6 * * * *"}),
    )
    .await;
    let mut batches = Vec::new();
    for a in [&a2, &a3] {
        let mut runs = Vec::new();
        for i in 0..5 {
            let mut r = a.run("cycleTest.py", 1, Trigger::Cron, RunStatus::Ok);
            r.started_at = Some(r.started_at.unwrap() + chrono::Duration::seconds(i));
            if i == 4 {
                r.status = RunStatus::Failed;
            }
            runs.push(r);
        }
        batches.push(RunBatch {
            node_id: a.node_id,
            runs,
        });
    }
    let first = a2.client(&agent).post_runs(&batches[0]).await.unwrap();
    assert_eq!((first.accepted, first.duplicates), (5, 0));
    let again = a2.client(&agent).post_runs(&batches[0]).await.unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 5));
    a3.client(&agent).post_runs(&batches[1]).await.unwrap();

    let q = |f: &dyn Fn(&mut RunQuery)| {
        let mut q = RunQuery {
            job: Some("cycleTest.py".into()),
            ..RunQuery::default()
        };
        f(&mut q);
        q
    };
    let all = admin.runs(&q(&|_| {})).await.unwrap();
    assert_eq!(all.len(), 10, "stored once");
    assert!(
        all.windows(2).all(|w| w[0].started_at >= w[1].started_at),
        "newest first"
    );

    // The seed's `logs cycleTest.py ALL 2`: the latest 2 per host.
    let per_node = admin
        .runs(&q(&|q| {
            q.host = Some("ALL".into());
            q.per_node = Some(2);
        }))
        .await
        .unwrap();
    assert_eq!(per_node.len(), 4);
    for a in [&a2, &a3] {
        let mine: Vec<_> = per_node.iter().filter(|r| r.node_id == a.node_id).collect();
        assert_eq!(mine.len(), 2);
        assert_eq!(
            mine[0].status,
            RunStatus::Failed,
            "the newest run is included"
        );
    }
    for host in ["node-2", "127.0.0.2", &a2.node_id.to_string()] {
        let h = host.to_string();
        let runs = admin.runs(&q(&|q| q.host = Some(h.clone()))).await.unwrap();
        assert_eq!(runs.len(), 5, "host {host}");
        assert!(runs.iter().all(|r| r.node_id == a2.node_id));
    }
    let none = admin
        .runs(&q(&|q| q.host = Some("127.0.0.20".into())))
        .await
        .unwrap();
    assert!(none.is_empty(), "an IP never matches by substring");
    let failed = admin
        .runs(&q(&|q| q.status = Some(RunStatus::Failed)))
        .await
        .unwrap();
    assert_eq!(failed.len(), 2);
    let limited = admin.runs(&q(&|q| q.limit = Some(3))).await.unwrap();
    assert_eq!(limited.len(), 3);

    let one = admin.run(all[0].run_id).await.unwrap();
    assert_eq!(one, all[0]);
    let err = admin.run(uuid::Uuid::now_v7()).await.unwrap_err();
    assert_eq!(err.status(), Some(404));

    // A batch may only carry its own node's runs: another node's record is refused alone (the
    // agent then stops sending it).
    let bad = RunBatch {
        node_id: a2.node_id,
        runs: vec![a3.run("cycleTest.py", 1, Trigger::Cron, RunStatus::Ok)],
    };
    let ack = a2.client(&agent).post_runs(&bad).await.unwrap();
    assert_eq!((ack.accepted, ack.refused.len()), (0, 1), "{ack:?}");
    assert!(ack.refused[0].reason.contains("names node"), "{ack:?}");
    m.stop().await;
}

/// The run duration histogram counts each newly stored run that has both times, once: a batch
/// delivered again (a lost acknowledgement) adds nothing. Ingest takes the durations before the
/// records move into the raft command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_duration_histogram_counts_each_new_finished_run_once() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    a.register(&agent).await;
    save(
        &admin,
        serde_json::json!({"JobName": "timed.py", "Command": "true", "CronExpr": "0 0 */6 * * * *"}),
    )
    .await;
    let mut ok = a.run("timed.py", 1, Trigger::Cron, RunStatus::Ok);
    ok.ended_at = Some(ok.started_at.unwrap() + chrono::Duration::seconds(2));
    let mut unfinished = a.run("timed.py", 1, Trigger::Cron, RunStatus::Ok);
    unfinished.ended_at = None;
    let failed = a.run("timed.py", 1, Trigger::Cron, RunStatus::Failed);
    let batch = RunBatch {
        node_id: a.node_id,
        runs: vec![ok, unfinished, failed],
    };
    for _ in 0..2 {
        a.client(&agent).post_runs(&batch).await.unwrap();
    }
    let text = admin.metrics().await.unwrap();
    for line in [
        "op_manager_run_duration_seconds_count{status=\"ok\"} 1",
        "op_manager_run_duration_seconds_count{status=\"failed\"} 1",
        "op_manager_run_duration_seconds_sum{status=\"ok\"} 2.0",
        "op_manager_runs_stored_total 3",
        "op_manager_runs_duplicate_total 3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}
