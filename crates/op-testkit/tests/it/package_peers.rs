//! Issue 26, packages from peers: the manager's egress cap (`--download-rate-limit`), the chunk
//! list agents verify chunks with, and the chunk tickets peers check.

use std::process::Command;
use std::time::{Duration, Instant};

use op_testkit::{Manager, ManagerOptions, bin};

/// Bytes that do not compress, so downloads really move them.
fn noise(len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len + 8);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    data
}

fn agentcli(m: &Manager, args: &[&str]) -> std::process::Output {
    let out = Command::new(bin("agentcli"))
        .args(args)
        .env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &m.admin_token)
        .output()
        .expect("agentcli runs");
    assert!(
        out.status.success(),
        "agentcli {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn the_download_rate_limit_caps_the_managers_package_egress() {
    let m = Manager::start_with(ManagerOptions {
        args: vec!["--download-rate-limit".into(), "2MiB".into()],
        ..Default::default()
    });
    let work = tempfile::tempdir().unwrap();
    let data = noise(7 << 20);
    let f = work.path().join("big.bin");
    std::fs::write(&f, &data).unwrap();
    agentcli(&m, &["upload", f.to_str().unwrap(), ""]);
    std::fs::remove_file(&f).unwrap();
    let dest = work.path().join("got.bin");
    let start = Instant::now();
    agentcli(&m, &["download", "big.bin", "-o", dest.to_str().unwrap()]);
    let spent = start.elapsed();
    assert!(
        std::fs::read(&dest).unwrap() == data,
        "the exact bytes arrive"
    );
    // 7 MiB at 2 MiB/s, the bucket starting with one second's worth: at least 2.5 s.
    assert!(spent >= Duration::from_millis(2400), "took only {spent:?}");
    let metrics = m.client().metrics().await.unwrap();
    let sent: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("op_manager_package_download_bytes_total ")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no package_download_bytes in\n{metrics}"));
    assert!(sent >= (7 << 20) as f64, "sent {sent}");
}

#[tokio::test]
async fn the_chunk_list_lets_an_agent_verify_each_range_on_its_own() {
    use op_proto::chunks::{CHUNK_SIZE, ChunkManifest};
    use sha2::{Digest, Sha256};

    let m = Manager::start();
    let work = tempfile::tempdir().unwrap();
    let data = noise((2 * CHUNK_SIZE + 12_345) as usize);
    let f = work.path().join("three.bin");
    std::fs::write(&f, &data).unwrap();
    agentcli(&m, &["upload", f.to_str().unwrap(), ""]);
    let versions: Vec<serde_json::Value> = reqwest::Client::new()
        .get(format!("{}/v1/packages/three.bin", m.api_url))
        .bearer_auth(&m.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let version = versions[0]["version"].as_u64().expect("a version");
    let http = reqwest::Client::new();
    let chunks_url = format!("{}/v1/agent/packages/three.bin/{version}/chunks", m.api_url);
    // Agents only: an admin token is refused, no token is refused.
    let r = http
        .get(&chunks_url)
        .bearer_auth(&m.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http.get(&chunks_url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!(
            "{}/v1/agent/packages/three.bin/999/chunks",
            m.api_url
        ))
        .bearer_auth(&m.agent_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let list: ChunkManifest = http
        .get(&chunks_url)
        .bearer_auth(&m.agent_token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.size, data.len() as u64);
    assert_eq!(list.sha256, hex::encode(Sha256::digest(&data)));
    assert_eq!(list.chunks.len(), 3);
    for (k, want) in list.chunks.iter().enumerate() {
        let (a, b) = list.range(k).unwrap();
        let got = http
            .get(format!(
                "{}/v1/packages/three.bin/{version}/content",
                m.api_url
            ))
            .bearer_auth(&m.agent_token)
            .header("range", format!("bytes={a}-{}", b - 1))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], &data[a as usize..b as usize]);
        assert_eq!(*want, hex::encode(Sha256::digest(&got)), "chunk {k}");
    }
    // The list was kept beside the blob; asking again answers the same.
    let cached = m
        .data_dir()
        .join("blobs/chunks")
        .join(format!("{}.json", list.sha256));
    assert!(cached.is_file(), "{} kept", cached.display());
    let again: ChunkManifest = http
        .get(&chunks_url)
        .bearer_auth(&m.agent_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, list);
}

/// GET `path` with `token`: the status and the body.
async fn get_as(m: &Manager, token: &str, path: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", m.api_url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_node_gets_a_ticket_peers_accept_and_a_forgotten_node_gets_none() {
    use op_agent::deploy::peers::verify_ticket;
    use op_proto::chunks::{TicketError, TicketGrant};

    let m = Manager::start();
    let agents = crate::support::fleet(&m, 1, &[]).await;
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("tool.bin");
    std::fs::write(&f, noise(1000)).unwrap();
    agentcli(&m, &["upload", f.to_str().unwrap(), ""]);
    let versions: Vec<serde_json::Value> =
        serde_json::from_str(&get_as(&m, &m.admin_token, "/v1/packages/tool.bin").await.1).unwrap();
    let version = versions[0]["version"].as_u64().unwrap();
    let node_token = std::fs::read_to_string(agents[0].path("state").join("node.token"))
        .unwrap()
        .trim()
        .to_string();
    let path = format!("/v1/agent/packages/tool.bin/{version}/ticket");
    let (status, body) = get_as(&m, &node_token, &path).await;
    assert_eq!(status, 200, "{body}");
    let grant: TicketGrant = serde_json::from_str(&body).unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(
        grant.expires > now && grant.expires <= now + 600,
        "minutes, not more"
    );
    let t = verify_ticket(&grant.public_key, &grant.ticket, "tool.bin", version, now).unwrap();
    let node = m.client().list_nodes().await.unwrap()[0].node_id;
    assert_eq!(t.node, node);
    // Agents get the same public key at registration (and in every sync answer's settings).
    let reg: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/agent/register", m.api_url))
        .bearer_auth(&m.agent_token)
        .json(&serde_json::json!({
            "api_version": op_proto::API_VERSION,
            "node_id": uuid::Uuid::new_v4(),
            "hostname": "another",
            "ips": ["127.0.0.9"],
            "agent_version": "test",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        reg["settings"]["ticket_public_key"].as_str(),
        Some(grant.public_key.as_str()),
        "{reg}"
    );
    // Not for another version, not once expired, not with another key.
    assert!(
        verify_ticket(
            &grant.public_key,
            &grant.ticket,
            "tool.bin",
            version + 1,
            now
        )
        .is_err()
    );
    assert_eq!(
        verify_ticket(
            &grant.public_key,
            &grant.ticket,
            "tool.bin",
            version,
            grant.expires
        ),
        Err(TicketError::Expired)
    );
    let other_key = "11".repeat(32);
    assert_eq!(
        verify_ticket(&other_key, &grant.ticket, "tool.bin", version, now),
        Err(TicketError::BadSignature)
    );
    // The enrollment token and operators get no tickets; an unknown version gets none.
    assert_eq!(get_as(&m, &m.agent_token, &path).await.0, 403);
    assert_eq!(get_as(&m, &m.admin_token, &path).await.0, 403);
    assert_eq!(
        get_as(&m, &node_token, "/v1/agent/packages/tool.bin/999/ticket")
            .await
            .0,
        404
    );
    // Forgotten: its credential gets nothing more.
    let mut agents = agents;
    agents[0].stop();
    m.client().forget_node(node).await.unwrap();
    let (status, body) = get_as(&m, &node_token, &path).await;
    assert!(status == 401 || status == 404, "{status} {body}");
}

#[tokio::test]
async fn peer_distribution_off_grants_no_tickets() {
    let m = Manager::start_with(ManagerOptions {
        args: vec!["--peer-distribution".into(), "false".into()],
        ..Default::default()
    });
    let agents = crate::support::fleet(&m, 1, &[]).await;
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("tool.bin");
    std::fs::write(&f, noise(1000)).unwrap();
    agentcli(&m, &["upload", f.to_str().unwrap(), ""]);
    let versions: Vec<serde_json::Value> =
        serde_json::from_str(&get_as(&m, &m.admin_token, "/v1/packages/tool.bin").await.1).unwrap();
    let version = versions[0]["version"].as_u64().unwrap();
    let node_token = std::fs::read_to_string(agents[0].path("state").join("node.token"))
        .unwrap()
        .trim()
        .to_string();
    let (status, body) = get_as(
        &m,
        &node_token,
        &format!("/v1/agent/packages/tool.bin/{version}/ticket"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("peer distribution is off"), "{body}");
    // The package still arrives, from the manager, as before.
    op_testkit::wait_until(crate::support::LONG, "the package on the agent", || async {
        agents[0].deploy_dir().join("tool.bin").is_file()
    })
    .await;
}

/// The version number of the only version of `name`.
async fn only_version(m: &Manager, name: &str) -> u64 {
    let versions: Vec<serde_json::Value> = serde_json::from_str(
        &get_as(m, &m.admin_token, &format!("/v1/packages/{name}"))
            .await
            .1,
    )
    .unwrap();
    versions[0]["version"].as_u64().expect("a version")
}

/// The value of metric `name` (with its labels, e.g. `x_total{source="peer"}`) in `text`, 0 when
/// absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

async fn agent_metrics(a: &op_testkit::Agent) -> String {
    reqwest::Client::new()
        .get(format!("{}/metrics", a.url()))
        .basic_auth(op_testkit::AGENT_USER, Some(op_testkit::AGENT_PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn manager_sent(m: &Manager) -> f64 {
    metric(
        &m.client().metrics().await.unwrap(),
        "op_manager_package_download_bytes_total",
    )
}

/// Waits until every agent holds exactly `data` as `name`.
async fn all_hold(agents: &[op_testkit::Agent], name: &str, data: &[u8], within: Duration) {
    op_testkit::wait_until(within, "every agent holds the package", || async {
        agents.iter().all(|a| {
            std::fs::metadata(a.deploy_dir().join(name)).is_ok_and(|m| m.len() == data.len() as u64)
        })
    })
    .await;
    for a in agents {
        assert!(
            std::fs::read(a.deploy_dir().join(name)).unwrap() == data,
            "{} holds the exact content",
            a.options.node_name
        );
    }
}

#[tokio::test]
async fn ten_agents_get_a_package_mostly_from_each_other() {
    let m = Manager::start_with(ManagerOptions {
        args: vec!["--download-rate-limit".into(), "4MiB".into()],
        ..Default::default()
    });
    let agents = crate::support::fleet(&m, 10, &[]).await;
    let work = tempfile::tempdir().unwrap();
    let size = 20 << 20;
    let data = noise(size);
    let f = work.path().join("big.bin");
    std::fs::write(&f, &data).unwrap();
    agentcli(&m, &["upload", f.to_str().unwrap(), ""]);
    // From the manager alone, 200 MiB at 4 MiB/s would take 50 s.
    all_hold(&agents, "big.bin", &data, Duration::from_secs(120)).await;
    let sent = manager_sent(&m).await;
    let total = (10 * size) as f64;
    assert!(
        sent < 0.4 * total,
        "the manager sent {sent} of {total} bytes ({:.1} %)",
        100.0 * sent / total
    );
    let (mut from_peers, mut served) = (0.0, 0.0);
    for a in &agents {
        let text = agent_metrics(a).await;
        from_peers += metric(
            &text,
            "op_agent_package_fetched_bytes_total{source=\"peer\"}",
        );
        served += metric(&text, "op_agent_peer_served_bytes_total");
    }
    assert!(from_peers >= 0.5 * total, "from peers: {from_peers}");
    assert!(
        served >= from_peers,
        "served {served}, fetched {from_peers}"
    );
    // Each keeps the verified copy it serves from.
    let version = only_version(&m, "big.bin").await;
    for a in &agents {
        let copy = a
            .path("state")
            .join(format!("peer-store/big.bin/{version}"));
        assert_eq!(std::fs::metadata(&copy).unwrap().len(), size as u64);
    }
}

#[tokio::test]
async fn a_peer_serving_corrupted_chunks_is_reported_and_the_others_end_right() {
    use op_testkit::{Agent, AgentOptions};
    let m = Manager::start();
    let first = Agent::start(AgentOptions::new("node-1", "127.0.0.2").manager(&m));
    let work = tempfile::tempdir().unwrap();
    let size = (3 << 22) + 1000;
    let data = noise(size);
    let f = work.path().join("big.bin");
    std::fs::write(&f, &data).unwrap();
    agentcli(&m, &["upload", f.to_str().unwrap(), ""]);
    all_hold(
        std::slice::from_ref(&first),
        "big.bin",
        &data,
        crate::support::LONG,
    )
    .await;
    let version = only_version(&m, "big.bin").await;
    let copy = first
        .path("state")
        .join(format!("peer-store/big.bin/{version}"));
    // The test flips bytes in every chunk of the copy the first agent serves from.
    let mut bad = std::fs::read(&copy).unwrap();
    for k in 0..4 {
        bad[k * (4 << 20) + 17] ^= 0xff;
    }
    std::fs::write(&copy, &bad).unwrap();
    // Without a ticket, nothing is served.
    let r = reqwest::Client::new()
        .get(format!(
            "{}/v1/peer/packages/big.bin/{version}/chunks/0",
            first.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // With the node's own ticket the chunk is served; the same ticket on another version, or
    // altered, is refused.
    let node_token = std::fs::read_to_string(first.path("state").join("node.token"))
        .unwrap()
        .trim()
        .to_string();
    let (status, body) = get_as(
        &m,
        &node_token,
        &format!("/v1/agent/packages/big.bin/{version}/ticket"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let grant: op_proto::chunks::TicketGrant = serde_json::from_str(&body).unwrap();
    let peer_get = |v: u64, ticket: String| {
        let url = format!("{}/v1/peer/packages/big.bin/{v}/chunks/1", first.url());
        async move {
            reqwest::Client::new()
                .get(url)
                .header("x-op-ticket", ticket)
                .send()
                .await
                .unwrap()
        }
    };
    let served = peer_get(version, grant.ticket.clone()).await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.bytes().await.unwrap().len(), 4 << 20);
    assert_eq!(
        peer_get(version + 1, grant.ticket.clone()).await.status(),
        401
    );
    let (body, sig) = grant.ticket.split_once('.').unwrap();
    let mut altered = body.to_string();
    altered.replace_range(2..4, if &body[2..4] == "00" { "01" } else { "00" });
    assert_eq!(
        peer_get(version, format!("{altered}.{sig}")).await.status(),
        401
    );
    let others: Vec<Agent> = (2..=4)
        .map(|i| {
            Agent::start(
                AgentOptions::new(&format!("node-{i}"), &format!("127.0.0.{}", i + 1)).manager(&m),
            )
        })
        .collect();
    all_hold(&others, "big.bin", &data, Duration::from_secs(60)).await;
    let mut bad_chunks = 0.0;
    for a in &others {
        bad_chunks += metric(&agent_metrics(a).await, "op_agent_peer_bad_chunks_total");
    }
    assert!(bad_chunks >= 1.0, "the bad source was counted");
    assert!(
        others
            .iter()
            .any(|a| a.log().contains("fails its sha256") && a.log().contains(&first.url())),
        "the bad source was named in a log"
    );
    // The fetchers report it to the manager, and operators see it with where bytes came from.
    op_testkit::wait_until(crate::support::LONG, "the bad source reported", || async {
        let fetched = fetched_by_host(&m, "big.bin").await;
        fetched.values().any(|f| {
            f.version == version
                && f.bad_sources
                    .iter()
                    .any(|b| b.reason == "sha256" && b.url == first.url() && b.count >= 1)
        }) && ["node-2", "node-3", "node-4"]
            .iter()
            .all(|h| fetched.get(*h).is_some_and(|f| f.version == version))
    })
    .await;
    let text =
        String::from_utf8(agentcli(&m, &["analysis", "packages", "big.bin"]).stdout).unwrap();
    assert!(text.contains("BADSOURCE"), "{text}");
    let bad_line = text
        .lines()
        .find(|l| l.contains(&first.url()))
        .unwrap_or_else(|| panic!("no line names the bad source:\n{text}"));
    assert!(bad_line.contains("sha256"), "{text}");
    assert!(
        text.contains("FROMPEERS") && text.contains("from peers: "),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &agentcli(&m, &["analysis", "packages", "big.bin", "-o", "json"]).stdout,
    )
    .unwrap();
    let hosts = json["sources"].as_array().expect("sources per host");
    for h in ["node-2", "node-3", "node-4"] {
        let s = hosts
            .iter()
            .find(|s| s["hostname"] == h)
            .unwrap_or_else(|| panic!("{h} in {json}"));
        let (p, m_) = (
            s["from_peers"].as_u64().unwrap(),
            s["from_managers"].as_u64().unwrap(),
        );
        assert_eq!(p + m_, size as u64, "{s}");
    }
    // The console's package page: a From peers column, the bad source counted on its host.
    let page = crate::support::console_get(&m, &m.admin_token, "/ui/packages/big.bin").await;
    assert!(page.contains("<th>From peers</th>"), "{page}");
    assert!(page.contains("id=\"from-peers\""), "{page}");
    assert!(page.contains("bad source"), "{page}");
    assert!(
        hosts.iter().any(|s| s["bad_sources"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["url"] == first.url()))),
        "{json}"
    );
}

#[tokio::test]
async fn with_peer_serving_off_everything_comes_from_the_manager() {
    let m = Manager::start();
    let agents = crate::support::fleet(&m, 4, &["--peer-serve", "false"]).await;
    let work = tempfile::tempdir().unwrap();
    let size = (2 << 22) + 5;
    let data = noise(size);
    let f = work.path().join("big.bin");
    std::fs::write(&f, &data).unwrap();
    agentcli(&m, &["upload", f.to_str().unwrap(), ""]);
    all_hold(&agents, "big.bin", &data, Duration::from_secs(60)).await;
    assert!(manager_sent(&m).await >= (4 * size) as f64);
    for a in &agents {
        let text = agent_metrics(a).await;
        assert_eq!(
            metric(
                &text,
                "op_agent_package_fetched_bytes_total{source=\"peer\"}"
            ),
            0.0
        );
        assert!(!a.path("state").join("peer-store").exists());
    }
}

/// Waits until the manager's node list shows every node named in `names` with `name` `version`
/// installed.
async fn manager_sees_installed(m: &Manager, names: &[&str], name: &str, version: u64) {
    let c = m.client();
    op_testkit::wait_until(
        crate::support::LONG,
        "the manager sees the holders",
        || async {
            let Ok(nodes) = c.list_nodes().await else {
                return false;
            };
            names.iter().all(|h| {
                nodes.iter().any(|n| {
                    n.hostname == *h
                        && n.packages.iter().any(|p| {
                            p.name == name
                                && p.version == version
                                && p.state == op_proto::package::PackageState::Installed
                        })
                })
            })
        },
    )
    .await;
}

/// Per node name, what its last heartbeat says about where the bytes of `name` came from.
async fn fetched_by_host(
    m: &Manager,
    name: &str,
) -> std::collections::BTreeMap<String, op_proto::package::FetchSources> {
    m.client()
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|n| {
            let f = n
                .packages
                .iter()
                .find(|p| p.name == name)?
                .fetched
                .clone()?;
            Some((n.hostname, f))
        })
        .collect()
}

#[tokio::test]
async fn peers_killed_or_frozen_mid_serve_cost_seconds_and_every_file_arrives() {
    use op_testkit::{Agent, AgentOptions};
    let m = Manager::start();
    // Two seeds that serve slowly (1 MiB/s shared by their uploads), so a chunk to a peer takes
    // many seconds and stopping them lands in the middle of serving.
    let seed = |i: u32| {
        Agent::start(
            AgentOptions::new(&format!("node-{i}"), &format!("127.0.0.{}", i + 1))
                .manager(&m)
                .arg("--peer-upload-rate-limit")
                .arg("1MiB"),
        )
    };
    let seeds = [seed(1), seed(2)];
    let work = tempfile::tempdir().unwrap();
    let size = (4 << 22) + 333;
    let data = noise(size);
    let f = work.path().join("big.bin");
    std::fs::write(&f, &data).unwrap();
    agentcli(&m, &["upload", f.to_str().unwrap(), ""]);
    all_hold(&seeds, "big.bin", &data, crate::support::LONG).await;
    let [frozen, mut killed] = seeds;
    let version = only_version(&m, "big.bin").await;
    manager_sees_installed(&m, &["node-1", "node-2"], "big.bin", version).await;
    // Fetchers that give up on a silent peer after 2 s (the default is 10 s).
    let fetchers: Vec<Agent> = (3..=5)
        .map(|i| {
            Agent::start(
                AgentOptions::new(&format!("node-{i}"), &format!("127.0.0.{}", i + 1))
                    .manager(&m)
                    .arg("--peer-timeout")
                    .arg("2s"),
            )
        })
        .collect();
    op_testkit::wait_until(crate::support::LONG, "the seeds serving chunks", || async {
        metric(
            &agent_metrics(&frozen).await,
            "op_agent_peer_served_bytes_total",
        ) > 0.0
            && metric(
                &agent_metrics(&killed).await,
                "op_agent_peer_served_bytes_total",
            ) > 0.0
    })
    .await;
    // Mid-serve: one peer freezes (its connections stay open, it answers nothing), the other
    // dies (its connections break, new ones are refused).
    let stopped_at = Instant::now();
    frozen.pause();
    killed.kill9();
    all_hold(&fetchers, "big.bin", &data, Duration::from_secs(45)).await;
    let spent = stopped_at.elapsed();
    frozen.resume();
    // Each fetcher gave up on each peer once, 2 s at most, not once per chunk.
    assert!(spent < Duration::from_secs(40), "took {spent:?}");
    let logs: Vec<String> = fetchers.iter().map(|a| a.log()).collect();
    assert!(
        logs.iter().any(|l| l.contains("stopped answering")
            && (l.contains(&frozen.url()) || l.contains(&killed.url()))),
        "a fetcher logged the peer it gave up on"
    );
    // ...and reported it in its heartbeat: the manager knows the source went bad.
    op_testkit::wait_until(
        crate::support::LONG,
        "unreachable sources reported",
        || async {
            let fetched = fetched_by_host(&m, "big.bin").await;
            fetched.values().any(|f| {
                f.version == version
                    && f.bad_sources.iter().any(|b| {
                        b.reason == "unreachable"
                            && (b.url == frozen.url() || b.url == killed.url())
                    })
            })
        },
    )
    .await;
    // Every fetcher says where all its bytes came from.
    op_testkit::wait_until(crate::support::LONG, "every fetcher's sources", || async {
        let fetched = fetched_by_host(&m, "big.bin").await;
        ["node-3", "node-4", "node-5"].iter().all(|h| {
            fetched.get(*h).is_some_and(|f| {
                f.version == version && f.from_peers + f.from_managers == size as u64
            })
        })
    })
    .await;
}
