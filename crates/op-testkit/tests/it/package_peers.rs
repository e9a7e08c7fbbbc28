//! Issue 26, packages from peers: the manager's egress cap (`--download-rate-limit`).

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
        .get(format!("{}/v1/agent/packages/three.bin/999/chunks", m.api_url))
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
