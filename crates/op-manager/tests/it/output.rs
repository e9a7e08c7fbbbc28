//! Output requests (`GET /v1/runs/{id}/output`) reach the node's parked sync without raft: an
//! agent that asks for light answers (`partial=1`, what `op-agent` sends) gets the request alone,
//! an older agent (no flag) gets its full desired state with the request among the directives,
//! and neither costs a raft write.

use std::time::Duration;

use op_client::Client;
use op_proto::Trigger;
use op_proto::agent::{DesiredState, Directive, Heartbeat, OutputChunk};
use op_proto::node::RunningRun;
use uuid::Uuid;

use crate::common::{DEADLINE, FakeAgent, TestManager, wait_until};

fn upload_of(state: &DesiredState) -> Option<(Uuid, Uuid, u64, String)> {
    state.directives.iter().find_map(|d| match d {
        Directive::UploadOutput {
            request_id,
            run_id,
            offset,
            reply_to,
        } => Some((*request_id, *run_id, *offset, reply_to.clone())),
        _ => None,
    })
}

/// Commands this (single) manager wrote through raft, but the coalesced heartbeats.
async fn writes_but_heartbeats(admin: &Client) -> u64 {
    let text = admin.metrics().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("op_manager_commands_total{") && !l.contains("\"heartbeats\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Answers the request in `state` as an agent would, and returns the reader's bytes.
async fn answer(
    agent: &FakeAgent,
    node: &Client,
    state: &DesiredState,
    reader: tokio::task::JoinHandle<op_client::Result<op_client::OutputPiece>>,
) -> Vec<u8> {
    let (request_id, run_id, offset, _) = upload_of(state).expect("an output request");
    use base64::Engine;
    node.post_output(&OutputChunk {
        request_id,
        run_id,
        node_id: agent.node_id,
        offset,
        data: base64::engine::general_purpose::STANDARD.encode(b"hello\n"),
        size: 6,
        finished: true,
        error: None,
    })
    .await
    .unwrap();
    reader.await.unwrap().unwrap().data
}

#[tokio::test]
async fn an_output_request_wakes_the_parked_sync_alone_and_writes_nothing_through_raft() {
    let m = TestManager::start().await;
    let admin = m.admin();
    let agent = FakeAgent::new(2);
    agent.register(&m.agent()).await;
    let node = agent.client(&m.agent());
    let run_id = Uuid::now_v7();
    let beat = Heartbeat {
        running: vec![RunningRun {
            run_id,
            job: "slow".into(),
            trigger: Trigger::Cron,
            started_at: chrono::Utc::now(),
        }],
        ..agent.heartbeat()
    };
    // The first answer is the full state; the heartbeat tells where the run is.
    let full = node.sync(0, 0, &beat).await.unwrap();
    let index = full.index;
    wait_until("the run seen running", DEADLINE, || async {
        let nodes = admin.list_nodes().await.ok()?;
        nodes
            .iter()
            .any(|n| n.running.iter().any(|r| r.run_id == run_id))
            .then_some(())
    })
    .await;
    let before = writes_but_heartbeats(&admin).await;

    // Parked first, then the reader asks: the sync returns with the request alone.
    let parked = {
        let node = node.clone();
        let beat = beat.clone();
        tokio::spawn(async move { node.sync(index, 60, &beat).await })
    };
    let reader = {
        let admin = admin.clone();
        tokio::spawn(async move { admin.run_output(run_id, 0, 30).await })
    };
    let light = parked.await.unwrap().unwrap();
    assert!(light.directives_only, "{light:?}");
    assert!(light.jobs.is_empty() && light.managers.is_empty());
    let (_, asked_run, asked_offset, reply_to) = upload_of(&light).unwrap();
    assert_eq!(
        (asked_run, asked_offset, reply_to),
        (run_id, 0, m.url.clone())
    );
    assert_eq!(answer(&agent, &node, &light, reader).await, b"hello\n");

    // An older agent (no `partial=1`) gets the full state, unchanged, with the request.
    let old = {
        let node = node.clone();
        let beat = beat.clone();
        tokio::spawn(async move { node.sync_as::<DesiredState>(index, 60, &beat).await })
    };
    let reader = {
        let admin = admin.clone();
        tokio::spawn(async move { admin.run_output(run_id, 0, 30).await })
    };
    let old = old.await.unwrap().unwrap();
    assert!(!old.directives_only);
    assert_eq!((old.index, &old.jobs), (index, &full.jobs));
    assert!(!old.managers.is_empty());
    assert_eq!(answer(&agent, &node, &old, reader).await, b"hello\n");

    // A request nobody picks up is forgotten when its reader gives up: the next sync parks.
    let gone = admin.run_output(run_id, 0, 1).await.unwrap_err();
    assert_eq!(gone.status(), Some(503), "{gone:?}");
    let quiet = tokio::time::timeout(Duration::from_secs(2), node.sync(index, 60, &beat)).await;
    assert!(quiet.is_err(), "nothing waits for the node: {quiet:?}");

    // None of it went through raft (the heartbeats are buffered; none changed the status).
    assert_eq!(
        writes_but_heartbeats(&admin).await,
        before,
        "raft writes for output requests"
    );
    m.stop().await;
}

/// Between a run's end (the heartbeat no longer lists it) and the delivery of its record, the
/// manager knows the run from neither; `logs --follow` names the node it saw running the run,
/// and the request still reaches that node instead of failing with 404 (the docs-commands test
/// met this race on a loaded machine).
#[tokio::test]
async fn a_run_between_its_end_and_its_record_is_read_through_the_named_node() {
    let m = TestManager::start().await;
    let admin = m.admin();
    let agent = FakeAgent::new(2);
    agent.register(&m.agent()).await;
    let node = agent.client(&m.agent());
    let beat = agent.heartbeat();
    let index = node.sync(0, 0, &beat).await.unwrap().index;
    let run_id = Uuid::now_v7();

    // Known to nobody: without the node the answer is 404.
    let unknown = admin.run_output(run_id, 0, 1).await.unwrap_err();
    assert_eq!(unknown.status(), Some(404), "{unknown:?}");
    // A node that is not in the fleet is no way around that.
    let stranger = admin
        .run_output_on(run_id, Some(Uuid::now_v7()), 0, 1)
        .await
        .unwrap_err();
    assert_eq!(stranger.status(), Some(404), "{stranger:?}");

    let parked = {
        let node = node.clone();
        let beat = beat.clone();
        tokio::spawn(async move { node.sync(index, 60, &beat).await })
    };
    let reader = {
        let admin = admin.clone();
        let node_id = agent.node_id;
        tokio::spawn(async move { admin.run_output_on(run_id, Some(node_id), 0, 30).await })
    };
    let light = parked.await.unwrap().unwrap();
    assert_eq!(answer(&agent, &node, &light, reader).await, b"hello\n");
    m.stop().await;
}
