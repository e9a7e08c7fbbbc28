//! The agent sync: the right jobs per node after host selection, and the long-poll's timing
//! (wakes on a save well under a second; otherwise returns when the wait ends).

use std::time::{Duration, Instant};

use op_proto::agent::RunBatch;
use op_proto::{RunStatus, Trigger};
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_returns_the_jobs_selected_for_each_node() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    let agents: Vec<FakeAgent> = (2..=4).map(FakeAgent::new).collect();
    for a in &agents {
        a.register(&agent).await;
    }
    let cron = "*/10 * * * * * *";
    for task in [
        json!({"JobName": "everywhere", "Command": "true", "CronExpr": cron}),
        json!({"JobName": "only-3", "Command": "true", "CronExpr": cron, "WhiteHosts": ["127.0.0.3"]}),
        json!({"JobName": "not-2", "Command": "true", "CronExpr": cron, "BlackHosts": ["node-2"]}),
        json!({"JobName": "cidr", "Command": "true", "CronExpr": cron, "WhiteHosts": ["127.0.0.0/30"]}),
        json!({"JobName": "glob", "Command": "true", "CronExpr": cron, "WhiteHosts": ["node-*"], "BlackHosts": ["127.0.0.3"]}),
        json!({"JobName": "no-substring", "Command": "true", "CronExpr": cron, "WhiteHosts": ["127.0.0.20"]}),
        json!({"JobName": "off", "Command": "true", "CronExpr": cron, "Enabled": 0}),
        json!({"JobName": "api-only", "Command": "echo {host}"}),
    ] {
        save(&admin, task).await;
    }
    assert_eq!(
        agents[0].job_names(&agent).await,
        ["api-only", "cidr", "everywhere", "glob"]
    );
    assert_eq!(
        agents[1].job_names(&agent).await,
        ["api-only", "cidr", "everywhere", "not-2", "only-3"]
    );
    assert_eq!(
        agents[2].job_names(&agent).await,
        ["api-only", "everywhere", "glob", "not-2"]
    );
    let state = agents[0].sync(&agent, 0, 0).await;
    assert_eq!(state.managers, vec![m.url.clone()]);
    assert!(state.settings.is_some() && state.directives.is_empty());
    let everywhere = state
        .jobs
        .iter()
        .find(|j| j.spec.name == "everywhere")
        .unwrap();
    assert_eq!(everywhere.revision, 1);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_save_and_otherwise_waits() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    a.register(&agent).await;
    let first = a.sync(&agent, 0, 30).await;
    assert!(first.index > 0, "index 0 returns at once");

    // Nothing changes: the call returns when its wait ends, with the same index.
    let started = Instant::now();
    let same = a.sync(&agent, first.index, 2).await;
    let waited = started.elapsed();
    assert_eq!(same.index, first.index);
    assert!(
        waited >= Duration::from_millis(1900),
        "returned early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(15), "took {waited:?}");

    // Park a call, then save: it returns well before its 30 s wait.
    let parked_client = agent.clone();
    let parked_agent = a.clone();
    let index = first.index;
    let parked = tokio::spawn(async move {
        let s = parked_agent.sync(&parked_client, index, 30).await;
        (s, Instant::now())
    });
    wait_until("the sync call is parked", DEADLINE, || async {
        let text = admin.metrics().await.ok()?;
        text.lines()
            .any(|l| l == "op_manager_syncs_parked 1")
            .then_some(())
    })
    .await;
    let saved_at = Instant::now();
    save(
        &admin,
        json!({"JobName": "new", "Command": "true", "CronExpr": "*/10 * * * * * *"}),
    )
    .await;
    let (state, returned_at) = tokio::time::timeout(DEADLINE, parked)
        .await
        .unwrap()
        .unwrap();
    let latency = returned_at.duration_since(saved_at);
    assert!(
        latency < Duration::from_secs(5),
        "save -> sync return took {latency:?}"
    );
    assert!(state.index > index);
    assert_eq!(state.jobs.len(), 1);

    // The enrollment token only registers: an unregistered node cannot sync with it.
    let stranger = FakeAgent::new(9);
    let err = agent.sync(0, 0, &stranger.heartbeat()).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_flushed_and_show_in_node_listings() {
    let m = TestManager::start_with(|a| a.heartbeat_flush = Some("1s".into())).await;
    let (admin, agent) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    a.register(&agent).await;
    let registered = admin
        .get_node(&a.node_id.to_string())
        .await
        .unwrap()
        .last_seen;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut hb = a.heartbeat();
    hb.stats.outbox_depth = 7;
    a.client(&agent).sync(0, 0, &hb).await.unwrap();
    // Listings show the beat at once; the stored record catches up at the next flush.
    assert!(admin.get_node("node-2").await.unwrap().last_seen > registered);
    wait_until("heartbeat data flushed", DEADLINE, || async {
        let n = admin.get_node("127.0.0.2").await.ok()?;
        (n.stats.outbox_depth == 7).then_some(())
    })
    .await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_parked_syncs_at_once() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    a.register(&agent).await;
    let index = a.sync(&agent, 0, 0).await.index;
    let parked = {
        let (agent, a) = (agent.clone(), a.clone());
        tokio::spawn(async move { a.client(&agent).sync(index, 15, &a.heartbeat()).await })
    };
    wait_until("the sync call is parked", DEADLINE, || async {
        let text = admin.metrics().await.ok()?;
        text.lines()
            .any(|l| l == "op_manager_syncs_parked 1")
            .then_some(())
    })
    .await;
    let started = Instant::now();
    m.stop().await;
    let stopped = started.elapsed();
    assert!(
        stopped < Duration::from_secs(10),
        "shutdown took {stopped:?}"
    );
    // The parked call ended with the shutdown, not with its 15 s wait.
    let answer = tokio::time::timeout(Duration::from_secs(5), parked).await;
    assert!(answer.is_ok(), "the parked sync outlived the manager");
}

/// Parks `a`'s sync at `index` (wait 30 s) and waits until the manager counts `parked` calls.
async fn park(
    m: &TestManager,
    a: &FakeAgent,
    index: u64,
    parked: usize,
) -> tokio::task::JoinHandle<(
    Result<op_proto::agent::DesiredState, op_client::ClientError>,
    Instant,
)> {
    let (agent, a) = (m.agent(), a.clone());
    let call = tokio::spawn(async move {
        let answer = a.client(&agent).sync(index, 30, &a.heartbeat()).await;
        (answer, Instant::now())
    });
    let admin = m.admin();
    let line = format!("op_manager_syncs_parked {parked}");
    wait_until("the sync call is parked", DEADLINE, || async {
        let text = admin.metrics().await.ok()?;
        text.lines().any(|l| l == line).then_some(())
    })
    .await;
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_sync_wakes_for_a_change_of_its_own_node() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    let (a, b) = (FakeAgent::new(2), FakeAgent::new(3));
    a.register(&agent).await;
    b.register(&agent).await;
    let saved = save(
        &admin,
        json!({"JobName": "once", "Command": "true", "OnceJob": 1}),
    )
    .await;
    let state = a.sync(&agent, 0, 0).await;
    assert_eq!(state.jobs.len(), 1, "a is a pending target");

    // a's once-job target moves (its run is reported): only a's desired state changes, and
    // its parked call returns at once without the job.
    let parked = park(&m, &a, state.index, 1).await;
    let b_index = b.sync(&agent, 0, 0).await.index;
    let parked_b = park(&m, &b, b_index, 2).await;
    let reported = Instant::now();
    let run = a.run("once", saved.revision, Trigger::Once, RunStatus::Ok);
    a.client(&agent)
        .post_runs(&RunBatch {
            node_id: a.node_id,
            runs: vec![run],
        })
        .await
        .unwrap();
    let (answer, at) = tokio::time::timeout(DEADLINE, parked)
        .await
        .unwrap()
        .unwrap();
    let answer = answer.unwrap();
    assert!(answer.index > state.index);
    assert!(answer.jobs.is_empty(), "{:?}", answer.jobs);
    assert!(at.duration_since(reported) < Duration::from_secs(5));

    // Forgetting a node ends its parked call with unknown_node, so the agent registers again.
    let parked = park(&m, &a, answer.index, 2).await;
    let forgot = Instant::now();
    admin.forget_node(a.node_id).await.unwrap();
    let (answer, at) = tokio::time::timeout(DEADLINE, parked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.unwrap_err().code(), Some("unknown_node"));
    assert!(at.duration_since(forgot) < Duration::from_secs(5));

    // b was not concerned by either change and is still parked.
    assert!(!parked_b.is_finished());
    parked_b.abort();
    m.stop().await;
}
