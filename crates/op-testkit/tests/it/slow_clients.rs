//! Every listener closes connections that send nothing and answers (408) or closes request
//! bodies that drip: the manager's API and raft listener and the agent's API, with the bounds
//! shortened to seconds. Answers that take long (a parked sync) are not cut.

use std::time::{Duration, Instant};

use op_testkit::{AGENT_PASSWORD, AGENT_USER, Agent, AgentOptions, Manager, ManagerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::LONG;

const HEAD_TIMEOUT: &str = "2s";
const RATE_WINDOW: &str = "2s";
/// Far more than the bounds, far less than "forever".
const CLOSED_WITHIN: Duration = Duration::from_secs(15);

fn limits() -> Vec<String> {
    [
        "--header-read-timeout",
        HEAD_TIMEOUT,
        "--body-min-rate",
        "1KiB",
        "--body-rate-window",
        RATE_WINDOW,
    ]
    .map(String::from)
    .to_vec()
}

fn host_port(url: &str) -> String {
    url.split("://")
        .nth(1)
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_string()
}

/// Reads until the peer closes, or until an answer's head is complete; `None` if neither
/// happened within `limit`.
async fn answer_or_close(
    stream: &mut tokio::net::tcp::OwnedReadHalf,
    limit: Duration,
) -> Option<String> {
    let mut got = Vec::new();
    let done = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                return;
            }
        }
    })
    .await;
    done.ok()
        .map(|()| String::from_utf8_lossy(&got).to_string())
}

/// A connection that sends nothing is closed after the head timeout, not before, not never.
async fn silent_connection_is_closed(what: &str, addr: &str) {
    let start = Instant::now();
    let (mut read, _write) = TcpStream::connect(addr).await.unwrap().into_split();
    let answer = answer_or_close(&mut read, CLOSED_WITHIN).await;
    let took = start.elapsed();
    assert!(
        answer.is_some(),
        "{what}: a connection that sent nothing is still open after {CLOSED_WITHIN:?}"
    );
    assert!(
        took >= Duration::from_millis(1500),
        "{what}: closed after only {took:?}"
    );
}

/// A request whose body drips at 100 bytes/s (well under 1 KiB/s) gets 408 or is closed soon
/// after the rate window, while the client keeps dripping.
async fn dripping_body_is_cut(what: &str, addr: &str, head: String) {
    let (mut read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    let dripper = tokio::spawn(async move {
        // A body generator at a fixed rate, not a wait.
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if write.write_all(b"          ").await.is_err() {
                return;
            }
        }
    });
    let answer = answer_or_close(&mut read, CLOSED_WITHIN).await;
    dripper.abort();
    let answer = answer.unwrap_or_else(|| {
        panic!("{what}: a body dripping at 100 B/s was still accepted after {CLOSED_WITHIN:?}")
    });
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{what}: {answer}"
    );
}

fn put_head(addr: &str, path: &str, auth: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{extra}Content-Type: application/json\r\n\
         Content-Length: 1000000\r\n\r\n{{\"x\":\""
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_dripping_clients_are_cut_off_on_every_listener() {
    let m = Manager::start_with(ManagerOptions {
        args: [limits(), vec!["--sync-wait".into(), "4s".into()]].concat(),
        ..ManagerOptions::default()
    });
    let agent = Agent::start({
        let mut o = AgentOptions::new("slow-1", "127.0.0.2").manager(&m);
        o.extra_args = limits();
        o
    });
    let api = host_port(&m.api_url);
    let raft = host_port(&m.raft_url);
    let agent_addr = agent.addr.clone();

    let identity: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.data_dir().join("cluster.json")).unwrap())
            .unwrap();
    let secret = std::fs::read_to_string(m.data_dir().join("cluster.secret")).unwrap();
    let secret = secret.trim();
    let cluster = identity["cluster_id"].as_str().unwrap();
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{AGENT_USER}:{AGENT_PASSWORD}"))
    };

    tokio::join!(
        silent_connection_is_closed("manager API", &api),
        silent_connection_is_closed("raft listener", &raft),
        silent_connection_is_closed("agent API", &agent_addr),
        dripping_body_is_cut(
            "manager API",
            &api,
            put_head(
                &api,
                "/v1/tokens",
                &format!("Authorization: Bearer {}\r\n", m.admin_token),
                ""
            )
        ),
        dripping_body_is_cut(
            "raft listener",
            &raft,
            put_head(
                &raft,
                "/raft/vote",
                &format!("Authorization: Bearer {secret}\r\n"),
                &format!("x-op-cluster: {cluster}\r\nx-op-node: 2\r\n")
            )
        ),
        dripping_body_is_cut(
            "agent API",
            &agent_addr,
            put_head(
                &agent_addr,
                "/api/opAgent",
                &format!("Authorization: Basic {basic}\r\n"),
                ""
            )
        ),
    );

    // The agent's sync parks 4 s, twice the head timeout, on a connection with nothing to read:
    // answers in progress are never cut, so every sync succeeds.
    let metrics = || async {
        reqwest::Client::new()
            .get(format!("{}/metrics", agent.url()))
            .basic_auth(AGENT_USER, Some(AGENT_PASSWORD))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let count = |text: &str, result: &str| -> u64 {
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "op_agent_sync_requests_total{{result=\"{result}\"}}"
                ))
            })
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    op_testkit::wait_until(LONG, "three parked syncs", || async {
        count(&metrics().await, "ok") >= 3
    })
    .await;
    assert_eq!(count(&metrics().await, "error"), 0, "{}", agent.log());
}

/// One HTTP/1.1 exchange on `stream`, kept alive: the answer's status and body (its length must
/// be given by `Content-Length`).
async fn exchange(
    stream: &mut TcpStream,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: manager\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .expect("request written");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await.expect("answer read");
        assert!(
            n > 0,
            "the connection was closed instead of answering {method} {path}"
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("Content-Length in {head:?}"));
    while got.len() < head_end + length {
        let n = stream.read(&mut buf).await.expect("body read");
        assert!(
            n > 0,
            "the connection was closed inside the answer to {method} {path}"
        );
        got.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&got[head_end..head_end + length]).to_string();
    (status, body)
}

/// A crowd of connections never takes the descriptors the manager's own files need. Found at
/// 10,000 simulated agents posting a fire's runs at once: the manager ran out of descriptors,
/// SQLite could not open a file while applying, raft stopped and the manager exited. Here the
/// manager's open-files limit is lowered to 300 and 400 connections are opened: past
/// `--max-connections 100` they are closed at once, and a write on a connection opened before
/// the crowd still commits. That connection is a plain socket: an HTTP client's pool may open a
/// new connection while its idle one is on the way back to the pool, and the cap refuses that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_connections_is_capped_and_the_manager_keeps_writing() {
    let m = Manager::start_with(ManagerOptions {
        args: ["--max-connections", "100"].map(String::from).to_vec(),
        ..ManagerOptions::default()
    });
    let pid = m.pid().expect("the manager runs");
    let lowered = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=300:300"])
        .status()
        .expect("prlimit runs");
    assert!(lowered.success(), "prlimit failed");
    let addr = host_port(&m.api_url);
    let token = m.admin_token.clone();
    // One kept-alive connection, opened before the crowd.
    let mut kept = TcpStream::connect(&addr).await.expect("connect");
    let (status, body) = exchange(&mut kept, &token, "GET", "/v1/jobs", "").await;
    assert_eq!(status, 200, "{body}");

    let mut crowd = Vec::new();
    for _ in 0..400 {
        if let Ok(s) = TcpStream::connect(&addr).await {
            crowd.push(s);
        }
    }
    // The connections past the cap are closed by the manager at once (EOF on read); the ones
    // held are watched side by side, so this takes one wait, not one per connection.
    let reads = crowd.iter_mut().map(|s| async move {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await,
            Ok(Ok(0))
        )
    });
    let closed = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    assert!(
        closed >= 250,
        "only {closed} of 400 connections were closed"
    );
    // Each refusal is counted, and the open count stays at the cap (read on the connection
    // that was open before the crowd).
    let (status, text) = exchange(&mut kept, &token, "GET", "/metrics", "").await;
    assert_eq!(status, 200, "{text}");
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics:\n{text}"))
    };
    let refused = value("op_manager_connections_refused_total");
    assert!(
        refused >= closed as u64,
        "{closed} connections were closed at once but {refused} refusals were counted"
    );
    let open = value("op_manager_connections_open");
    assert!(
        (1..=100).contains(&open),
        "{open} connections open, with a cap of 100"
    );

    // The write goes through on the connection that was open before the crowd, and commits.
    for i in 0..5 {
        let name = format!("after-crowd-{i}");
        let (status, body) = exchange(
            &mut kept,
            &token,
            "PUT",
            &format!("/v1/jobs/{name}"),
            &format!(r#"{{"JobName":"{name}","Command":"true"}}"#),
        )
        .await;
        assert!(
            (200..300).contains(&status),
            "a save while the crowd holds its connections: {status} {body}\n{}",
            m.log()
        );
    }
    drop(crowd);
    let fresh = m.client();
    op_testkit::wait_until(
        LONG,
        "the manager answers a new connection after the crowd",
        || async { fresh.list_jobs().await.is_ok() },
    )
    .await;
    let jobs = fresh.list_jobs().await.expect("jobs");
    assert_eq!(jobs.len(), 5, "{jobs:?}");
}
