//! Node liveness: NotReady after node_timeout without a heartbeat, Ready again on the next one,
//! Left after forget_after; and forgetting a node by hand.

use op_proto::NodeStatus;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_nodes_go_not_ready_then_left_and_come_back() {
    let m = TestManager::start_with(|a| {
        a.node_timeout = Some("2s".into());
        a.forget_after = Some("4s".into());
        a.heartbeat_flush = Some("500ms".into());
        a.sync_wait = Some("1s".into());
    })
    .await;
    let (admin, agent) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    a.register(&agent).await;
    assert_eq!(
        admin.get_node("node-2").await.unwrap().status,
        NodeStatus::Ready
    );
    let status = |want: NodeStatus| {
        let admin = admin.clone();
        move || {
            let admin = admin.clone();
            async move {
                let n = admin.get_node("node-2").await.ok()?;
                (n.status == want).then_some(())
            }
        }
    };
    wait_until("node-2 NotReady", DEADLINE, status(NodeStatus::NotReady)).await;
    // One heartbeat brings it back at once (not at the next flush).
    a.sync(&agent, 0, 0).await;
    assert_eq!(
        admin.get_node("node-2").await.unwrap().status,
        NodeStatus::Ready
    );
    wait_until(
        "node-2 NotReady again",
        DEADLINE,
        status(NodeStatus::NotReady),
    )
    .await;
    wait_until("node-2 Left", DEADLINE, status(NodeStatus::Left)).await;
    // A Left node must register again before it may sync.
    let err = a
        .client(&agent)
        .sync(0, 0, &a.heartbeat())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("unknown_node"));
    a.register(&agent).await;
    assert_eq!(
        admin.get_node("node-2").await.unwrap().status,
        NodeStatus::Ready
    );
    let metrics = admin.metrics().await.unwrap();
    assert!(
        metrics.contains("op_manager_node_status_changes_total{status=\"NotReady\"} 2"),
        "{metrics}"
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_can_forget_a_node() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    let b = FakeAgent::new(3);
    a.register(&agent).await;
    b.register(&agent).await;
    admin.forget_node(a.node_id).await.unwrap();
    let nodes = admin.list_nodes().await.unwrap();
    let listed: Vec<_> = nodes
        .iter()
        .map(|n| (n.hostname.as_str(), n.status))
        .collect();
    assert_eq!(
        listed,
        [("node-3", NodeStatus::Ready), ("node-2", NodeStatus::Left)]
    );
    // Forgetting revokes the node's credential: it must enroll again.
    assert_eq!(
        a.client(&agent)
            .sync(0, 0, &a.heartbeat())
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
    let err = admin.forget_node(uuid::Uuid::new_v4()).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    let audit = admin.audit(None, None).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "node.forget" && e.target == "node-2" && e.actor == "admin")
    );
    m.stop().await;
}
