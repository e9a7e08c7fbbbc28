//! Per-node agent credentials: the shared agent token only enrolls; each node then presents its
//! own credential, which speaks for that node and no other (DESIGN section 9).

use op_proto::agent::{OutputChunk, RegisterRequest, RunBatch};
use op_proto::api::{CreateTokenRequest, Scope};
use op_proto::{API_VERSION, RunStatus, Trigger};

use crate::common::*;

fn registration(a: &FakeAgent) -> RegisterRequest {
    RegisterRequest {
        api_version: API_VERSION,
        node_id: a.node_id,
        hostname: a.hostname.clone(),
        ips: vec![a.ip],
        labels: Default::default(),
        agent_version: "0.1.0-test".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        machine_id: String::new(),
        reset: None,
        capabilities: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_credential_speaks_for_its_own_node_only() {
    let m = TestManager::start().await;
    let (admin, enroll) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    let b = FakeAgent::new(3);
    a.register(&enroll).await;
    b.register(&enroll).await;
    let a_token = a.token.lock().unwrap().clone().expect("a node credential");
    let as_a = enroll.with_token(&a_token);

    // a's credential posting runs for b: 403, and nothing is stored.
    let forged = RunBatch {
        node_id: b.node_id,
        runs: vec![b.run("x", 1, Trigger::Cron, RunStatus::Ok)],
    };
    let err = as_a.post_runs(&forged).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert!(admin.runs(&Default::default()).await.unwrap().is_empty());
    // ... reading b's desired state: 403.
    let err = as_a.sync(0, 0, &b.heartbeat()).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    // ... registering as b (to rename it or take its jobs): 403.
    let err = as_a.register(&registration(&b)).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert_eq!(admin.get_node("node-3").await.unwrap().node_id, b.node_id);
    // ... answering an output request in b's name: 403.
    let chunk = OutputChunk {
        request_id: uuid::Uuid::now_v7(),
        run_id: uuid::Uuid::now_v7(),
        node_id: b.node_id,
        offset: 0,
        data: String::new(),
        size: 0,
        finished: true,
        error: None,
    };
    let err = as_a.post_output(&chunk).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");

    // The enrollment token cannot take over an enrolled node by sending its id.
    let err = enroll.register(&registration(&b)).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert!(err.to_string().contains("already enrolled"), "{err}");
    // Nor act for any node beyond registering.
    let err = enroll.sync(0, 0, &a.heartbeat()).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");

    // Each node's own credential works for itself.
    a.client(&enroll)
        .post_runs(&RunBatch {
            node_id: a.node_id,
            runs: vec![a.run("x", 1, Trigger::Cron, RunStatus::Ok)],
        })
        .await
        .unwrap();
    a.register(&enroll).await;
    b.sync(&enroll, 0, 0).await;

    // Node credentials stay out of the operator's token list unless asked for.
    let listed = admin.list_tokens().await.unwrap();
    assert!(listed.iter().all(|t| t.node_id.is_none()), "{listed:?}");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_tokens_cannot_use_the_agent_protocol_and_forget_revokes() {
    let m = TestManager::start().await;
    let (admin, enroll) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    a.register(&enroll).await;
    let operator = admin
        .create_token(&CreateTokenRequest {
            name: "ops".into(),
            scope: Scope::Operator,
            expires_in_secs: None,
        })
        .await
        .unwrap();
    let as_operator = enroll.with_token(&operator.secret);
    let err = as_operator.sync(0, 0, &a.heartbeat()).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = as_operator.register(&registration(&a)).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");

    // Forgetting the node revokes its credential at once; it enrolls again with the shared token.
    let own = a.client(&enroll);
    admin.forget_node(a.node_id).await.unwrap();
    let err = own.sync(0, 0, &a.heartbeat()).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    *a.token.lock().unwrap() = None;
    a.register(&enroll).await;
    assert!(a.token.lock().unwrap().is_some());
    a.sync(&enroll, 0, 0).await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_credential_holds_a_bounded_number_of_long_polls() {
    let m = TestManager::start().await;
    let enroll = m.agent();
    let a = FakeAgent::new(2);
    a.register(&enroll).await;
    let own = a.client(&enroll);
    let index = own.sync(0, 0, &a.heartbeat()).await.unwrap().index;
    let parked: Vec<_> = (0..op_manager::auth::MAX_SYNCS_PER_TOKEN)
        .map(|_| {
            let (own, hb) = (own.clone(), a.heartbeat());
            tokio::spawn(async move { own.sync(index, 5, &hb).await })
        })
        .collect();
    let admin = m.admin();
    wait_until("every sync parked", DEADLINE, || async {
        let text = admin.metrics().await.ok()?;
        text.lines()
            .any(|l| {
                l == format!(
                    "op_manager_syncs_parked {}",
                    op_manager::auth::MAX_SYNCS_PER_TOKEN
                )
            })
            .then_some(())
    })
    .await;
    let err = own.sync(index, 5, &a.heartbeat()).await.unwrap_err();
    assert_eq!(err.code(), Some("too_many_syncs"), "{err}");
    for p in parked {
        p.await.unwrap().unwrap();
    }
    // The slots are free again.
    own.sync(index, 0, &a.heartbeat()).await.unwrap();
    m.stop().await;
}

/// Issue 16, defect 5: a node's credential posted a run of a job not selected for it, with
/// another host's name and IPs, and `logs` showed it under that host. The host now comes from
/// the node's registration, a run of a job never given to the node is refused alone (named in
/// the ack, so the agent's outbox neither retries it nor holds back the rest), and runs the
/// node had every right to send still go in: an ad-hoc run, and a run of a job whose selection
/// moved away from the node after it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_stored_under_the_registered_host_and_only_for_jobs_given_to_the_node() {
    use serde_json::json;
    let m = TestManager::start().await;
    let (admin, enroll) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    let b = FakeAgent::new(3);
    a.register(&enroll).await;
    b.register(&enroll).await;
    let cron = "0 0 */6 * * * *";
    save(
        &admin,
        json!({"JobName": "everywhere", "Command": "true", "CronExpr": cron}),
    )
    .await;
    save(
        &admin,
        json!({"JobName": "only-b", "Command": "true", "CronExpr": cron, "WhiteHosts": ["node-3"]}),
    )
    .await;
    save(
        &admin,
        json!({"JobName": "moving", "Command": "true", "CronExpr": cron, "WhiteHosts": ["node-2"]}),
    )
    .await;
    assert!(a.job_names(&enroll).await.contains(&"moving".to_string()));
    // a ran `moving`; then it was moved to b before a could report the run.
    let moved = a.run("moving", 1, Trigger::Cron, RunStatus::Ok);
    save(
        &admin,
        json!({"JobName": "moving", "Command": "true", "CronExpr": cron, "WhiteHosts": ["node-3"]}),
    )
    .await;
    assert!(!a.job_names(&enroll).await.contains(&"moving".to_string()));

    // Forged: b's job, with b's name and address, from a's credential.
    let mut forged = a.run("only-b", 1, Trigger::Cron, RunStatus::Ok);
    forged.hostname = b.hostname.clone();
    forged.ips = vec![b.ip];
    // A job a holds, claiming to come from b.
    let mut disguised = a.run("everywhere", 1, Trigger::Cron, RunStatus::Ok);
    disguised.hostname = b.hostname.clone();
    disguised.ips = vec![b.ip];
    // Neither the ad-hoc command of an invocation nor its job are selections.
    let mut adhoc = a.run("adhoc", 0, Trigger::Adhoc, RunStatus::Ok);
    adhoc.invocation_id = Some(uuid::Uuid::now_v7());
    let ack = a
        .client(&enroll)
        .post_runs(&RunBatch {
            node_id: a.node_id,
            runs: vec![
                forged.clone(),
                disguised.clone(),
                moved.clone(),
                adhoc.clone(),
            ],
        })
        .await
        .unwrap();
    assert_eq!((ack.accepted, ack.duplicates), (3, 0), "{ack:?}");
    assert_eq!(ack.refused.len(), 1, "{ack:?}");
    assert_eq!(ack.refused[0].run_id, forged.run_id);
    assert!(
        ack.refused[0].reason.contains("never selected"),
        "{:?}",
        ack.refused[0]
    );

    let err = admin.run(forged.run_id).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "the refused run left no trace");
    for id in [disguised.run_id, moved.run_id, adhoc.run_id] {
        let stored = admin.run(id).await.unwrap();
        assert_eq!(stored.hostname, "node-2", "{stored:?}");
        assert_eq!(stored.ips, vec![a.ip], "{stored:?}");
    }
    // `logs everywhere node-3` finds nothing of a's.
    let on_b = admin
        .runs(&op_proto::api::RunQuery {
            job: Some("everywhere".into()),
            host: Some("node-3".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(on_b.is_empty(), "{on_b:?}");

    // A record of another node in the batch is refused alone too, not the whole batch.
    let ok = a.run("everywhere", 1, Trigger::Cron, RunStatus::Ok);
    let ack = a
        .client(&enroll)
        .post_runs(&RunBatch {
            node_id: a.node_id,
            runs: vec![
                b.run("everywhere", 1, Trigger::Cron, RunStatus::Ok),
                ok.clone(),
            ],
        })
        .await
        .unwrap();
    assert_eq!((ack.accepted, ack.refused.len()), (1, 1), "{ack:?}");
    admin.run(ok.run_id).await.unwrap();
    m.stop().await;
}
