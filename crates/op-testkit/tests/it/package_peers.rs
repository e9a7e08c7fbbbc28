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
