//! A watch whose deltas do not fit (issue 25): between a real agent and a real manager, a proxy
//! rewrites the first state delta's base, as a faulty manager or a corrupting middle box would.
//! The agent must refuse it, reopen its watch without asking for deltas, and apply every job
//! from the whole states that follow, so a bad delta costs one reconnect, never a wrong job set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use op_testkit::{Agent, AgentOptions, Manager, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{LONG, job, job_sets};

const WATCH_REQUEST: &[u8] = b"GET /v1/agent/watch";
const HEAD_END: &[u8] = b"\r\n\r\n";
const UPGRADED: &[u8] = b"HTTP/1.1 101";

/// What the proxy saw and did.
#[derive(Default)]
struct Seen {
    /// Each watch request in order: whether it asked for deltas.
    watches: Mutex<Vec<bool>>,
    /// Delta frames whose base was rewritten.
    corrupted: AtomicUsize,
    /// Delta frames passed on as they were.
    deltas: AtomicUsize,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A TCP proxy to `upstream` that passes every byte on, records each watch request, and once
/// turns the base of a delta frame into one the agent never held.
async fn start_proxy(upstream: String) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(up(client_read, server_write, shared.clone()));
            tokio::spawn(down(server_read, client_write, shared.clone()));
        }
    });
    (url, seen)
}

/// Agent → manager: passed on as is; each watch request's head is read for the delta header.
async fn up(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Seen>,
) {
    let mut stream = Vec::new();
    let mut scanned = 0;
    let mut buf = vec![0u8; 16384];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        stream.extend_from_slice(&buf[..n]);
        while let Some(at) = find(&stream[scanned..], WATCH_REQUEST) {
            let start = scanned + at;
            let Some(end) = find(&stream[start..], HEAD_END) else {
                break;
            };
            let head = String::from_utf8_lossy(&stream[start..start + end]).to_ascii_lowercase();
            seen.watches
                .lock()
                .unwrap()
                .push(head.contains("op-watch-deltas: 1"));
            scanned = start + end;
        }
    }
    let _ = to.shutdown().await;
}

/// Manager → agent: HTTP passed on as is until a `101`; then frame by frame, the first delta
/// of the whole run with its base moved.
async fn down(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Seen>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut framed = false;
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut out = Vec::new();
        if !framed {
            match find(&pending, UPGRADED) {
                Some(at) => match find(&pending[at..], HEAD_END) {
                    Some(end) => {
                        let head_end = at + end + HEAD_END.len();
                        out.extend(pending.drain(..head_end));
                        framed = true;
                    }
                    None => continue,
                },
                None => {
                    // Hold back only a tail that may begin the status line of a `101`.
                    let keep = (1..UPGRADED.len())
                        .rev()
                        .find(|&k| pending.len() >= k && pending.ends_with(&UPGRADED[..k]))
                        .unwrap_or(0);
                    out.extend(pending.drain(..pending.len() - keep));
                }
            }
        }
        if framed {
            while pending.len() >= 4 {
                let len = u32::from_be_bytes(pending[..4].try_into().unwrap()) as usize;
                if pending.len() < 4 + len {
                    break;
                }
                let frame: Vec<u8> = pending.drain(..4 + len).collect();
                let mut value: serde_json::Value = match serde_json::from_slice(&frame[4..]) {
                    Ok(v) => v,
                    Err(_) => {
                        out.extend(frame);
                        continue;
                    }
                };
                let Some(base) = value
                    .get_mut("delta")
                    .and_then(|d| d.get_mut("base"))
                    .filter(|b| b.is_u64())
                else {
                    out.extend(frame);
                    continue;
                };
                if seen.corrupted.load(Ordering::SeqCst) > 0 {
                    seen.deltas.fetch_add(1, Ordering::SeqCst);
                    out.extend(frame);
                    continue;
                }
                *base = serde_json::json!(base.as_u64().unwrap() + 1_000_000);
                seen.corrupted.fetch_add(1, Ordering::SeqCst);
                let json = serde_json::to_vec(&value).unwrap();
                out.extend((json.len() as u32).to_be_bytes());
                out.extend(json);
            }
        }
        if to.write_all(&out).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Saves a job that never fires (its set only has to reach the agent).
async fn save(c: &op_client::Client, name: &str) {
    let text = format!(r#"{{"JobName":"{name}","Command":"true","CronExpr":"0 0 1 1 * * 2099"}}"#);
    c.save_job(&job(&text)).await.unwrap();
}

#[tokio::test]
async fn a_delta_that_does_not_fit_makes_the_agent_reopen_for_whole_states() {
    let m = Manager::start();
    let upstream = m.api_url.trim_start_matches("http://").to_string();
    let (url, seen) = start_proxy(upstream).await;
    let mut o = AgentOptions::new("node-1", "127.0.0.2");
    o.managers = vec![url];
    o.manager_token = Some(m.agent_token.clone());
    let agent = Agent::start(o);
    let c = m.client();

    save(&c, "first").await;
    wait_until(LONG, "the first job applied", || async {
        job_sets(&agent, 1) >= 1
    })
    .await;
    // The second save goes down as a delta (the first job named, the second sent): its base is
    // rewritten on the way, so it does not fit what the agent holds.
    save(&c, "second").await;
    wait_until(LONG, "both jobs applied from a whole state", || async {
        job_sets(&agent, 2) >= 1
    })
    .await;
    assert_eq!(seen.corrupted.load(Ordering::SeqCst), 1);
    assert!(
        agent
            .log()
            .contains("a state delta does not fit the state held"),
        "{}",
        agent.log()
    );
    let watches = seen.watches.lock().unwrap().clone();
    assert!(
        watches.len() >= 2 && watches[0] && !watches[1],
        "the first watch asks for deltas, the one opened after the bad delta does not: {watches:?}"
    );

    // On that watch the next save comes whole, and is applied.
    save(&c, "third").await;
    wait_until(LONG, "the third job applied", || async {
        job_sets(&agent, 3) >= 1
    })
    .await;
    let watches = seen.watches.lock().unwrap().clone();
    assert_eq!(watches.len(), 2, "no further reconnect: {watches:?}");
    assert_eq!(
        seen.deltas.load(Ordering::SeqCst),
        0,
        "no delta on a watch that did not ask for them"
    );
}
