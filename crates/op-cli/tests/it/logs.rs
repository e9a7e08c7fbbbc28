//! `agentcli logs --follow` and `--full` against a real manager and a real agent: the output comes
//! from the agent's log file through the manager's output requests.

use std::io::Read;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use op_client::ClientError;
use op_proto::NodeStatus;
use op_testkit::{Agent, AgentOptions, Manager, wait_until};
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(40);

fn cli(m: &Manager) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("agentcli"));
    cmd.env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &m.admin_token)
        .env("TZ", "UTC")
        .env("HOME", "/nonexistent")
        .current_dir(std::env::temp_dir());
    cmd
}

async fn one_agent(m: &Manager) -> Agent {
    let agent = Agent::start(AgentOptions::new("node-1", "127.0.0.2").manager(m));
    let c = m.client();
    wait_until(LONG, "the agent Ready", || async {
        c.list_nodes()
            .await
            .map(|v| v.iter().any(|n| n.status == NodeStatus::Ready))
            .unwrap_or(false)
    })
    .await;
    agent
}

/// Collects a child's pipe in the background.
fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

#[tokio::test]
async fn follow_streams_a_running_run_until_it_ends() {
    let m = Manager::start();
    let _agent = one_agent(&m).await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let script = dir.path().join("slow.sh");
    std::fs::write(
        &script,
        format!(
            "echo first-line\nwhile [ ! -e {gate} ]; do sleep 0.1; done\necho second-line\n",
            gate = gate.display()
        ),
    )
    .unwrap();

    // An unknown host is an error, not an endless wait.
    m.client()
        .save_job_text(
            "slow",
            &format!(
                r#"{{"JobName":"slow","Command":"sh {}","Enabled":0}}"#,
                script.display()
            ),
        )
        .await
        .unwrap();
    let bad = cli(&m)
        .args(["logs", "slow", "no-such-host", "--follow"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("no-such-host"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // Follow before the run exists: agentcli waits for it to start.
    let mut child = cli(&m)
        .args(["logs", "slow", "node-1", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    wait_until(LONG, "agentcli says it waits", || async {
        text(&err).contains("waiting for one to start")
    })
    .await;
    m.client()
        .save_job_text(
            "slow",
            &format!(
                r#"{{"JobName":"slow","Command":"sh {}","OnceJob":1}}"#,
                script.display()
            ),
        )
        .await
        .unwrap();
    // The first line arrives while the run is still blocked on the gate.
    wait_until(LONG, "the first line streamed", || async {
        text(&out).contains("first-line")
    })
    .await;
    assert!(!text(&out).contains("second-line"));
    assert!(child.try_wait().unwrap().is_none(), "follow ended early");
    std::fs::write(&gate, "").unwrap();
    let status = exit_of(&mut child, &err).await;
    // The pipes drain after exit.
    wait_until(LONG, "all output read", || async {
        text(&out).contains("second-line") && text(&err).contains("ended")
    })
    .await;
    assert!(status.success(), "{}", text(&err));
    assert_eq!(text(&out), "first-line\nsecond-line\n");
    assert!(text(&err).contains("ended: ok"), "{}", text(&err));
}

/// The sum of the manager's metric lines named `name` whose labels pass `labels`.
async fn metric(m: &Manager, name: &str, labels: impl Fn(&str) -> bool) -> f64 {
    let text = m.client().metrics().await.unwrap();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') && labels(rest))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Commands written through raft, but the coalesced heartbeats (the idle rate).
async fn writes_but_heartbeats(m: &Manager) -> f64 {
    metric(m, "op_manager_commands_total", |l| {
        !l.contains("\"heartbeats\"")
    })
    .await
}

/// Output pieces readers asked for (each `--follow` poll is one).
async fn output_polls(m: &Manager) -> f64 {
    metric(m, "op_manager_http_request_duration_seconds_count", |l| {
        l.contains("route=\"/v1/runs/{id}/output\"")
    })
    .await
}

#[tokio::test]
async fn following_a_run_writes_nothing_through_raft_per_poll() {
    let m = Manager::start();
    let _agent = one_agent(&m).await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let script = dir.path().join("slow.sh");
    std::fs::write(
        &script,
        format!(
            "echo first-line\nwhile [ ! -e {gate} ]; do sleep 0.1; done\necho second-line\n",
            gate = gate.display()
        ),
    )
    .unwrap();
    m.client()
        .save_job_text(
            "slow",
            &format!(
                r#"{{"JobName":"slow","Command":"sh {}","OnceJob":1}}"#,
                script.display()
            ),
        )
        .await
        .unwrap();
    let mut child = cli(&m)
        .args(["logs", "slow", "node-1", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    wait_until(LONG, "the first line streamed", || async {
        text(&out).contains("first-line")
    })
    .await;
    // While the run waits, agentcli asks for more twice a second: none of it is a raft write.
    let writes = writes_but_heartbeats(&m).await;
    let polls = output_polls(&m).await;
    wait_until(LONG, "ten more polls", || async {
        output_polls(&m).await >= polls + 10.0
    })
    .await;
    assert_eq!(
        writes_but_heartbeats(&m).await,
        writes,
        "raft writes while following: {}",
        m.client().metrics().await.unwrap()
    );
    std::fs::write(&gate, "").unwrap();
    exit_of(&mut child, &err).await;
    wait_until(LONG, "all output read", || async {
        text(&out).contains("second-line") && text(&err).contains("ended: ok")
    })
    .await;
}

#[tokio::test]
async fn full_fetches_the_whole_output_from_the_agent() {
    let m = Manager::start();
    let _agent = one_agent(&m).await;
    // About 1.3 MB: far beyond the stored 64 KiB tail and several output pieces.
    m.client()
        .save_job_text(
            "big",
            r#"{"JobName":"big","Command":"seq 1 200000","OnceJob":1}"#,
        )
        .await
        .unwrap();
    let c = m.client();
    wait_until(LONG, "the run recorded", || async {
        c.runs(&op_proto::api::RunQuery {
            job: Some("big".into()),
            ..Default::default()
        })
        .await
        .map(|r| !r.is_empty())
        .unwrap_or(false)
    })
    .await;
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();

    let tail = cli(&m)
        .args(["logs", "big", "-o", "json"])
        .output()
        .unwrap();
    assert!(tail.status.success());
    let runs: Vec<op_proto::RunRecord> = serde_json::from_slice(&tail.stdout).unwrap();
    assert!(runs[0].output_truncated);
    assert_eq!(runs[0].output_bytes, expected.len() as u64);

    let full = cli(&m)
        .args(["logs", "big", "--full", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        full.status.success(),
        "{}",
        String::from_utf8_lossy(&full.stderr)
    );
    let runs: Vec<op_proto::RunRecord> = serde_json::from_slice(&full.stdout).unwrap();
    assert!(!runs[0].output_truncated);
    assert!(
        runs[0].output == expected,
        "the whole output, byte for byte"
    );

    let plain = cli(&m).args(["logs", "big", "--full"]).output().unwrap();
    assert!(plain.status.success());
    let plain = String::from_utf8(plain.stdout).unwrap();
    assert!(
        plain.starts_with("==> big on node-1 (127.0.0.2)"),
        "{}",
        &plain[..200]
    );
    assert!(plain.ends_with("199999\n200000\n"));

    // The endpoint's failure cases: a bad id, an unknown run.
    let c = m.client();
    let unknown = c.run_output(Uuid::now_v7(), 0, 1).await.unwrap_err();
    assert!(
        matches!(unknown, ClientError::Api { status: 404, .. }),
        "{unknown:?}"
    );
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/runs/not-a-uuid/output", m.api_url))
        .bearer_auth(&m.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/runs/{}/output", m.api_url, runs[0].run_id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the output needs a token");
}

#[tokio::test]
async fn output_of_a_run_whose_agent_is_gone_is_unavailable() {
    let m = Manager::start();
    let mut agent = one_agent(&m).await;
    m.client()
        .save_job_text(
            "hello",
            r#"{"JobName":"hello","Command":"echo hi","OnceJob":1}"#,
        )
        .await
        .unwrap();
    let c = m.client();
    let query = op_proto::api::RunQuery {
        job: Some("hello".into()),
        ..Default::default()
    };
    wait_until(LONG, "the run recorded", || async {
        c.runs(&query).await.map(|r| !r.is_empty()).unwrap_or(false)
    })
    .await;
    let run = c.runs(&query).await.unwrap().remove(0);
    let piece = c.run_output(run.run_id, 0, 10).await.unwrap();
    assert_eq!(piece.data, b"hi\n");
    assert!(piece.is_last());
    agent.stop();
    let gone = c.run_output(run.run_id, 0, 1).await.unwrap_err();
    assert!(
        matches!(gone, ClientError::Api { status: 503, .. }),
        "{gone:?}"
    );
}

/// A manager whose parked syncs last 15 s: without a heartbeat sent at a run's start, a run of a
/// second would end before the manager heard of it.
fn slow_sync_manager() -> Manager {
    Manager::start_with(op_testkit::ManagerOptions {
        args: vec!["--sync-wait".into(), "15s".into()],
        ..Default::default()
    })
}

/// Waits for a child to exit, failing with its stderr after `LONG`.
async fn exit_of(
    child: &mut std::process::Child,
    err: &Arc<Mutex<Vec<u8>>>,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("follow never ended: {}", text(err));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_one_second_run_is_seen_by_top_and_followed_to_its_end() {
    let m = slow_sync_manager();
    let _agent = one_agent(&m).await;
    m.client()
        .save_job_text(
            "blink",
            r#"{"JobName":"blink","Command":"echo blink-start; sleep 1; echo blink-end","Enabled":0}"#,
        )
        .await
        .unwrap();
    let mut child = cli(&m)
        .args(["logs", "blink", "node-1", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    wait_until(LONG, "agentcli says it waits", || async {
        text(&err).contains("waiting for one to start")
    })
    .await;
    m.client()
        .save_job_text(
            "blink",
            r#"{"JobName":"blink","Command":"echo blink-start; sleep 1; echo blink-end","CronExpr":"*/4 * * * * * *"}"#,
        )
        .await
        .unwrap();
    // `top --once` sees the first run while it lives: its start reached the manager at once. (A
    // cron fire, not a once-job: nothing else wakes the agent's parked sync at that moment.)
    let c = m.client();
    let mut seen_by_top = false;
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let top = cli(&m).args(["top", "--once"]).output().unwrap();
        assert!(
            top.status.success(),
            "{}",
            String::from_utf8_lossy(&top.stderr)
        );
        if String::from_utf8_lossy(&top.stdout)
            .lines()
            .any(|l| l.starts_with("blink") && l.contains("node-1"))
        {
            seen_by_top = true;
            break;
        }
        let recorded = c
            .runs(&op_proto::api::RunQuery {
                job: Some("blink".into()),
                ..Default::default()
            })
            .await
            .map(|r| !r.is_empty())
            .unwrap_or(false);
        if recorded || std::time::Instant::now() >= deadline {
            break;
        }
    }
    assert!(seen_by_top, "top never showed the one-second run");
    let status = exit_of(&mut child, &err).await;
    wait_until(LONG, "all output read", || async {
        text(&out).contains("blink-end") && text(&err).contains("ended")
    })
    .await;
    assert!(status.success(), "{}", text(&err));
    assert_eq!(text(&out), "blink-start\nblink-end\n");
    assert!(text(&err).contains("ended: ok"), "{}", text(&err));
}

#[tokio::test]
async fn follow_of_a_run_that_ended_before_it_was_seen_prints_it_and_ends() {
    let m = slow_sync_manager();
    let _agent = one_agent(&m).await;
    m.client()
        .save_job_text(
            "quick",
            r#"{"JobName":"quick","Command":"echo quick-line","Enabled":0}"#,
        )
        .await
        .unwrap();
    let mut child = cli(&m)
        .args(["logs", "quick", "node-1", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    wait_until(LONG, "agentcli says it waits", || async {
        text(&err).contains("waiting for one to start")
    })
    .await;
    // The run lasts a few ms: it is over between two of the follow's polls.
    m.client()
        .save_job_text(
            "quick",
            r#"{"JobName":"quick","Command":"echo quick-line","CronExpr":"*/4 * * * * * *"}"#,
        )
        .await
        .unwrap();
    let status = exit_of(&mut child, &err).await;
    wait_until(LONG, "all output read", || async {
        text(&out).contains("quick-line") && text(&err).contains("ended")
    })
    .await;
    assert_eq!(status.code(), Some(0), "{}", text(&err));
    assert_eq!(text(&out), "quick-line\n");
}
