//! `agentcli events` against a real manager with real agents (issue 19): a job failing the same
//! way on several hosts is one `run.failed` naming them, its fix one `run.recovered`; two ways of
//! failing are two events; nodes going silent together are one `node.not_ready`.

use std::time::Duration;

use op_proto::JobSpec;
use op_proto::events::Event;
use op_testkit::{Manager, ManagerOptions, wait_until};

use crate::fleet::{cli, fleet};

const LONG: Duration = Duration::from_secs(40);

/// A manager that groups a fire's results for at most 3 s (the fire closes sooner once every
/// selected host reported).
fn manager(extra: &[&str]) -> Manager {
    let mut args = vec!["--event-window".to_string(), "3s".to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Manager::start_with(ManagerOptions {
        args,
        ..Default::default()
    })
}

/// Every event, as `agentcli events -o json` prints them (one JSON object per line).
fn events(m: &Manager) -> Vec<Event> {
    let out = cli(m).args(["events", "-o", "json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn of_kind<'a>(events: &'a [Event], kind: &str) -> Vec<&'a Event> {
    events.iter().filter(|e| e.kind.as_str() == kind).collect()
}

fn once_job(name: &str, command: &str) -> JobSpec {
    let mut spec = JobSpec::new(name, command);
    spec.once_job = true;
    spec
}

async fn wait_for(m: &Manager, kind: &str, n: usize) -> Vec<Event> {
    wait_until(LONG, &format!("{n} {kind} event(s)"), || async {
        of_kind(&events(m), kind).len() >= n
    })
    .await;
    events(m)
}

#[tokio::test]
async fn a_job_failing_on_three_agents_is_one_event_and_its_fix_one_recovery() {
    // A window long enough for the last of three agents starting on a loaded machine (with 3 s
    // the third failure once arrived after the event had gone out naming two hosts).
    let m = Manager::start_with(ManagerOptions {
        args: vec!["--event-window".to_string(), "10s".to_string()],
        ..Default::default()
    });
    let _agents = fleet(&m, 3).await;
    let c = m.client();
    c.save_job(&once_job("backup", "echo 'disk full' >&2; exit 3"))
        .await
        .unwrap();
    let all = wait_for(&m, "run.failed", 1).await;
    let failed = of_kind(&all, "run.failed");
    assert_eq!(failed.len(), 1, "{all:?}");
    assert_eq!(failed[0].job.as_deref(), Some("backup"));
    assert_eq!(failed[0].hosts, ["node-1", "node-2", "node-3"], "{all:?}");
    assert!(failed[0].summary.contains("disk full"), "{all:?}");
    assert!(!failed[0].url.is_empty());

    // The table names the same event.
    let table = String::from_utf8(cli(&m).arg("events").output().unwrap().stdout).unwrap();
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap()
        .split('\t')
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        ["ID", "TIME", "KIND", "JOB", "HOSTS", "SUMMARY"],
        "{table}"
    );
    assert!(table.contains("node-1,node-2,node-3"), "{table}");

    // The fix: a new revision that succeeds everywhere.
    c.save_job(&once_job("backup", "true")).await.unwrap();
    let all = wait_for(&m, "run.recovered", 1).await;
    assert_eq!(of_kind(&all, "run.failed").len(), 1, "{all:?}");
    let recovered = of_kind(&all, "run.recovered");
    assert_eq!(recovered.len(), 1, "{all:?}");
    assert_eq!(recovered[0].incident, Some(failed[0].id));

    // Filters: by kind and by job.
    let out = cli(&m)
        .args([
            "events",
            "-o",
            "json",
            "--kind",
            "run.recovered",
            "--job",
            "backup",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    let out = cli(&m)
        .args(["events", "--kind", "run.exploded"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown kind is refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown event kind"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn two_ways_of_failing_are_two_events() {
    let m = manager(&[]);
    let agents = fleet(&m, 3).await;
    // node-3 fails another way: a marker in its own deploy dir says so.
    std::fs::create_dir_all(agents[2].deploy_dir()).unwrap();
    std::fs::write(agents[2].deploy_dir().join("refuse"), "").unwrap();
    m.client()
        .save_job(&once_job(
            "sync",
            "if [ -e \"$OP_DEPLOY_DIR/refuse\" ]; then echo 'connection refused' >&2; \
             else echo 'disk full' >&2; fi; exit 1",
        ))
        .await
        .unwrap();
    let all = wait_for(&m, "run.failed", 2).await;
    let mut failed: Vec<(Vec<String>, String)> = of_kind(&all, "run.failed")
        .iter()
        .map(|e| (e.hosts.clone(), e.signature.clone().unwrap_or_default()))
        .collect();
    failed.sort();
    assert_eq!(
        failed,
        [
            (
                vec!["node-1".to_string(), "node-2".to_string()],
                "disk full".to_string()
            ),
            (vec!["node-3".to_string()], "connection refused".to_string()),
        ],
        "{all:?}"
    );
}

#[tokio::test]
async fn twenty_nodes_going_silent_together_are_one_event() {
    let m = manager(&["--node-timeout", "2s"]);
    // A follower started before anything happened prints the event when it is applied.
    let mut follower = std::process::Command::new(assert_cmd::cargo::cargo_bin!("agentcli"))
        .args([
            "events",
            "--follow",
            "-o",
            "json",
            "--kind",
            "node.not_ready",
        ])
        .env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &m.admin_token)
        .env("HOME", "/nonexistent")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let enroll = m.client_with(&m.agent_token);
    for i in 0..20 {
        enroll
            .register(&op_proto::agent::RegisterRequest {
                api_version: op_proto::API_VERSION,
                node_id: uuid::Uuid::new_v4(),
                hostname: format!("rack-{i:02}"),
                ips: vec![],
                labels: Default::default(),
                agent_version: "0.1.0-test".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                machine_id: String::new(),
                reset: None,
                capabilities: Vec::new(),
            })
            .await
            .unwrap();
    }
    // None of them heartbeats: the leader times them out, and the window groups them.
    let all = wait_for(&m, "node.not_ready", 1).await;
    let c = m.client();
    wait_until(LONG, "every node NotReady", || async {
        c.list_nodes()
            .await
            .is_ok_and(|n| n.iter().all(|n| n.status == op_proto::NodeStatus::NotReady))
    })
    .await;
    let down = of_kind(&all, "node.not_ready");
    assert_eq!(down.len(), 1, "{all:?}");
    assert_eq!(down[0].host_count, 20, "{all:?}");
    let all = events(&m);
    assert_eq!(of_kind(&all, "node.not_ready").len(), 1, "{all:?}");

    let line = lines
        .recv_timeout(LONG)
        .expect("the follower printed the event");
    let followed: Event = serde_json::from_str(&line).unwrap();
    assert_eq!(followed.id, down[0].id);
    assert!(
        follower.try_wait().unwrap().is_none(),
        "--follow keeps going"
    );
    follower.kill().unwrap();
    follower.wait().unwrap();
}
