//! The agent's watch (`op_proto::watch`): the state pushed when it changes, a connection that
//! outlives the HTTP idle bound, a silent agent's watch closed, and hostile frames and requests
//! refused without harm.

use std::time::Duration;

use op_client::{Client, WatchState};
use op_proto::agent::{DesiredJob, DesiredState};
use op_proto::watch::{StateDelta, WatchDown, encode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const FRAME_WAIT: Duration = Duration::from_secs(15);

async fn next_down(w: &mut op_client::Watch) -> WatchState<DesiredState> {
    tokio::time::timeout(FRAME_WAIT, w.next::<DesiredState>())
        .await
        .expect("a state within 15 s")
        .expect("a state, not an error")
}

async fn next_state(w: &mut op_client::Watch) -> DesiredState {
    match next_down(w).await {
        WatchState::Whole(s) => s,
        WatchState::Delta(d) => panic!("a whole state was expected, got a delta: {d:?}"),
    }
}

async fn next_delta(w: &mut op_client::Watch) -> StateDelta<DesiredState> {
    match next_down(w).await {
        WatchState::Delta(d) => d,
        WatchState::Whole(s) => panic!("a delta was expected, got a whole state: {s:?}"),
    }
}

async fn metric(admin: &Client, name: &str) -> f64 {
    let text = admin.metrics().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_pushes_each_change_and_outlives_the_http_idle_bound() {
    // Connections without a request in progress close after 1 s; a watch is not one of them.
    let m = TestManager::start_with(|a| a.header_read_timeout = Some("1s".into())).await;
    let (admin, agent) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    a.register(&agent).await;
    let mut w = a.client(&agent).watch(false).await.unwrap();
    // The first beat of a watch is always answered with the full state (a reconnect resyncs).
    w.beat(0, &a.heartbeat()).await.unwrap();
    let first = next_state(&mut w).await;
    assert!(first.index > 0 && first.jobs.is_empty() && first.settings.is_some());
    w.beat(first.index, &a.heartbeat()).await.unwrap();
    assert_eq!(metric(&admin, "op_manager_watches_open").await, 1.0);

    // Past the idle bound (an idle connection opened after the watch has been closed by it), a
    // save reaches the agent unasked.
    let mut idle = TcpStream::connect(m.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(FRAME_WAIT, idle.read(&mut byte))
        .await
        .expect("the idle bound closes an idle connection");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    save(
        &admin,
        json!({"JobName": "pushed", "Command": "true", "CronExpr": "*/10 * * * * * *"}),
    )
    .await;
    let second = next_state(&mut w).await;
    assert!(second.index > first.index);
    let names: Vec<&str> = second.jobs.iter().map(|j| j.spec.name.as_str()).collect();
    assert_eq!(names, ["pushed"]);

    // A beat that names an older index is answered with the state at once. The answer names
    // that beat (its send time, on the agent's clock) beside its arrival (on the manager's), so
    // the agent measures the clocks' offset on one message, never on a late frame.
    let mut beat = a.heartbeat();
    let sent = chrono::Utc::now() - chrono::Duration::seconds(30);
    beat.sent_at = Some(sent);
    let before = chrono::Utc::now();
    w.beat(first.index, &beat).await.unwrap();
    let third = next_state(&mut w).await;
    assert_eq!(third.index, second.index);
    assert_eq!(third.beat_sent_at, Some(sent));
    assert!(third.received_at.unwrap() >= before);

    // The node's beats arrive: it is Ready, seen after the watch opened.
    let nodes = admin.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].status, op_proto::NodeStatus::Ready);
    drop(w);
    wait_until(
        "the watch to be counted closed",
        Duration::from_secs(10),
        || {
            let admin = admin.clone();
            async move { (metric(&admin, "op_manager_watches_open").await == 0.0).then_some(()) }
        },
    )
    .await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_watch_is_closed_and_a_forgotten_node_is_told() {
    let m = TestManager::start_with(|a| a.node_timeout = Some("2s".into())).await;
    let (admin, agent) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    a.register(&agent).await;
    // A stopped agent keeps its socket open and sends nothing: closed after node_timeout.
    let mut silent = a.client(&agent).watch(false).await.unwrap();
    silent.beat(0, &a.heartbeat()).await.unwrap();
    next_state(&mut silent).await;
    let closed = tokio::time::timeout(FRAME_WAIT, silent.next_frame())
        .await
        .expect("the manager closes a silent watch");
    assert!(closed.is_err(), "{closed:?}");

    // A node forgotten while it watches is told so, with the code a sync call answers.
    let b = FakeAgent::new(3);
    b.register(&agent).await;
    let mut w = b.client(&agent).watch(false).await.unwrap();
    w.beat(0, &b.heartbeat()).await.unwrap();
    next_state(&mut w).await;
    admin.forget_node(b.node_id).await.unwrap();
    let told = tokio::time::timeout(FRAME_WAIT, w.next::<DesiredState>())
        .await
        .expect("an answer within 15 s");
    let e = told.expect_err("an error frame");
    assert_eq!(e.code(), Some("unknown_node"), "{e}");
    m.stop().await;
}

/// Opens a watch by hand over a raw socket, as a hostile client could: returns the stream after
/// the manager's 101.
async fn raw_watch(m: &TestManager, token: &str) -> TcpStream {
    let addr = m.url.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "GET /v1/agent/watch HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Connection: upgrade\r\nUpgrade: op-watch\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "the head ended early");
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// The next frame's JSON, read by hand.
async fn raw_frame<R: tokio::io::AsyncRead + Unpin>(s: &mut R) -> Vec<u8> {
    let read = async {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.unwrap();
        body
    };
    tokio::time::timeout(FRAME_WAIT, read)
        .await
        .expect("a frame")
}

/// The error frame the manager sends before closing, then the end of the stream.
async fn refusal(s: &mut TcpStream) -> op_proto::watch::WatchError {
    let body = raw_frame(s).await;
    let mut rest = Vec::new();
    tokio::time::timeout(FRAME_WAIT, s.read_to_end(&mut rest))
        .await
        .expect("closed")
        .unwrap();
    assert!(rest.is_empty(), "nothing follows the refusal");
    match serde_json::from_slice::<WatchDown<serde_json::Value>>(&body).unwrap() {
        WatchDown::Error(e) => e,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_hears_alive_once_per_sync_wait() {
    let m = TestManager::start_with(|a| a.sync_wait = Some("1s".into())).await;
    let a = FakeAgent::new(2);
    a.register(&m.agent()).await;
    let token = a.token.lock().unwrap().clone().unwrap();
    let mut s = raw_watch(&m, &token).await;
    let beat = |index: u64| {
        encode(&serde_json::to_vec(&json!({"index": index, "beat": a.heartbeat()})).unwrap())
    };
    s.write_all(&beat(0)).await.unwrap();
    let first: WatchDown<DesiredState> = serde_json::from_slice(&raw_frame(&mut s).await).unwrap();
    let WatchDown::State(first) = first else {
        panic!("expected the state first")
    };
    // Beats that need no state hear nothing until a sync wait has passed with nothing sent down;
    // then `alive`. The agent beats every 200 ms meanwhile.
    let (mut rd, mut wr) = s.into_split();
    let next = beat(first.index);
    let beating = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        loop {
            every.tick().await;
            if wr.write_all(&next).await.is_err() {
                return;
            }
        }
    });
    assert_eq!(raw_frame(&mut rd).await, op_proto::watch::ALIVE);
    beating.abort();
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_watch_requests_and_frames_are_refused() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    a.register(&agent).await;
    let token = a.token.lock().unwrap().clone().unwrap();

    // Without the upgrade, with the fleet's enrollment token, with an operator's token, with none.
    let plain = a
        .client(&agent)
        .request(reqwest::Method::GET, "/v1/agent/watch")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    assert!(plain.text().await.unwrap().contains("upgrade_required"));
    for (client, status) in [
        (agent.clone(), 403),
        (admin.clone(), 403),
        (Client::new(&m.url, None).unwrap(), 401),
    ] {
        let e = client.watch(false).await.err().expect("refused");
        assert_eq!(e.status(), Some(status), "{e}");
    }

    // Not JSON; a beat for another node; a length of 4 GiB: each refused, the watch closed.
    let mut s = raw_watch(&m, &token).await;
    s.write_all(&encode(b"not json")).await.unwrap();
    assert_eq!(refusal(&mut s).await.code, "invalid_json");
    let mut s = raw_watch(&m, &token).await;
    let other = FakeAgent::new(3);
    let beat = json!({"index": 0, "beat": other.heartbeat()});
    s.write_all(&encode(&serde_json::to_vec(&beat).unwrap()))
        .await
        .unwrap();
    assert_eq!(refusal(&mut s).await.status, 403);
    let mut s = raw_watch(&m, &token).await;
    s.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    assert_eq!(refusal(&mut s).await.code, "invalid_frame");

    // The manager is unharmed: the node still watches and gets its state.
    let mut w = a.client(&agent).watch(false).await.unwrap();
    w.beat(0, &a.heartbeat()).await.unwrap();
    assert!(next_state(&mut w).await.index > 0);
    m.stop().await;
}

fn names_and_revisions(jobs: &[DesiredJob]) -> Vec<(String, u64)> {
    jobs.iter()
        .map(|j| (j.spec.name.clone(), j.revision))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_asks_is_sent_only_the_jobs_that_changed() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    for name in ["alpha", "bravo", "charlie"] {
        save(
            &admin,
            json!({"JobName": name, "Command": "true", "CronExpr": "0 0 * * * * *"}),
        )
        .await;
    }
    let a = FakeAgent::new(2);
    a.register(&agent).await;
    let client = a.client(&agent);
    let mut w = client.watch(true).await.unwrap();
    // A watch's first state is whole, deltas asked or not (a reconnect resyncs).
    w.beat(0, &a.heartbeat()).await.unwrap();
    let first = next_state(&mut w).await;
    assert_eq!(first.jobs.len(), 3);

    // One job saved again: only it is sent; the two others are named at their places.
    save(
        &admin,
        json!({"JobName": "bravo", "Command": "echo changed", "CronExpr": "0 0 * * * * *"}),
    )
    .await;
    let delta = next_delta(&mut w).await;
    assert_eq!(delta.base, first.index);
    assert_eq!(
        names_and_revisions(&delta.state.jobs),
        [("bravo".into(), 2)]
    );
    let kept: Vec<(usize, &str)> = delta.kept.iter().map(|k| (k.at, k.name.as_str())).collect();
    assert_eq!(kept, [(0, "alpha"), (2, "charlie")]);
    // The rest of the state is whole.
    assert!(delta.state.settings.is_some() && delta.state.holds.is_some());
    let second = delta.clone().resolve(first.index, &first.jobs).unwrap();
    // What the agent rebuilds is what a whole answer says (a sync call asks for one).
    let whole = client.sync(0, 0, &a.heartbeat()).await.unwrap();
    assert_eq!(second.index, whole.index);
    assert_eq!(second.jobs, whole.jobs);
    // A delta does not fit a state other than its base.
    assert!(delta.resolve(first.index + 1, &first.jobs).is_err());

    // A deleted job: nothing sent, the others kept.
    admin.delete_job("charlie").await.unwrap();
    let delta = next_delta(&mut w).await;
    assert_eq!(delta.base, second.index);
    assert!(delta.state.jobs.is_empty());
    let third = delta.resolve(second.index, &second.jobs).unwrap();
    assert_eq!(
        names_and_revisions(&third.jobs),
        [("alpha".into(), 1), ("bravo".into(), 2)]
    );

    // Counted by kind, with their bytes.
    let states = |kind: &str| format!("op_manager_watch_states_total{{kind=\"{kind}\"}}");
    assert_eq!(metric(&admin, &states("whole")).await, 1.0);
    assert_eq!(metric(&admin, &states("delta")).await, 2.0);
    assert!(metric(&admin, "op_manager_watch_state_bytes_total{kind=\"delta\"}").await > 0.0);

    // A new watch (a reconnect) starts whole again.
    drop(w);
    let mut w = client.watch(true).await.unwrap();
    w.beat(third.index, &a.heartbeat()).await.unwrap();
    let again = next_state(&mut w).await;
    assert_eq!(again.jobs, third.jobs);

    // An agent that does not ask is sent whole states only.
    let b = FakeAgent::new(3);
    b.register(&agent).await;
    let mut plain = b.client(&agent).watch(false).await.unwrap();
    plain.beat(0, &b.heartbeat()).await.unwrap();
    next_state(&mut plain).await;
    save(
        &admin,
        json!({"JobName": "alpha", "Command": "echo changed", "CronExpr": "0 0 * * * * *"}),
    )
    .await;
    assert_eq!(next_state(&mut plain).await.jobs.len(), 2);
    let delta = next_delta(&mut w).await;
    assert_eq!(
        names_and_revisions(&delta.state.jobs),
        [("alpha".into(), 2)]
    );
    m.stop().await;
}
