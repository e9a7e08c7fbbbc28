//! agentcli against a real manager with real agents: the seed's usage, table snapshots, analysis,
//! top and exit codes.

use std::time::Duration;

use assert_cmd::Command;
use op_proto::NodeStatus;
use op_testkit::{Agent, AgentOptions, Manager, ManagerOptions, wait_until};

use crate::snapshot::assert_snapshot;

const LONG: Duration = Duration::from_secs(40);

fn seed(file: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../op-proto/tests/data/seed")
        .join(file)
}

/// `agentcli` pointed at `m` with its admin token.
pub(crate) fn cli(m: &Manager) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("agentcli"));
    cmd.env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &m.admin_token)
        .env("TZ", "UTC")
        .env("HOME", "/nonexistent")
        .current_dir(std::env::temp_dir());
    cmd
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) async fn fleet(m: &Manager, n: usize) -> Vec<Agent> {
    let agents: Vec<Agent> = (1..=n)
        .map(|i| {
            Agent::start(
                AgentOptions::new(&format!("node-{i}"), &format!("127.0.0.{}", i + 1)).manager(m),
            )
        })
        .collect();
    let c = m.client();
    wait_until(LONG, "agents Ready", || async {
        c.list_nodes()
            .await
            .map(|v| v.iter().filter(|n| n.status == NodeStatus::Ready).count() == n)
            .unwrap_or(false)
    })
    .await;
    agents
}

#[tokio::test]
async fn seed_ll_json_usage_and_table_snapshots() {
    let m = Manager::start();
    let _agents = fleet(&m, 2).await;
    let saved = stdout(cli(&m).arg("save").arg(seed("ll.json")));
    assert_snapshot("save_ll", &saved);

    let c = m.client();
    wait_until(LONG, "both hosts ran ls-l", || async {
        c.once_targets("ls-l", None)
            .await
            .map(|t| {
                t.iter()
                    .all(|t| t.state == op_proto::api::TargetState::Done)
                    && t.len() == 2
            })
            .unwrap_or(false)
    })
    .await;

    assert_snapshot("get_jobs", &stdout(cli(&m).args(["get", "jobs"])));
    assert_snapshot(
        "get_jobs_detail",
        &stdout(cli(&m).args(["get", "jobs", "ls-l"])),
    );
    assert_snapshot("get_nodes", &stdout(cli(&m).args(["get", "nodes"])));

    // logs: every host's output; with a host, only that host (the seed's `logs ls-l IP --o wide`).
    let logs = stdout(cli(&m).args(["logs", "ls-l"]));
    let header: Vec<&str> = logs
        .lines()
        .next()
        .unwrap()
        .split('\t')
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        ["JOBNAME", "HOSTIPS", "ENDTIME", "OUTPUT", "ERROR"],
        "{logs}"
    );
    assert!(
        logs.contains("127.0.0.2") && logs.contains("127.0.0.3"),
        "{logs}"
    );
    assert!(logs.contains("total "), "the /tmp listing: {logs}");
    let wide = stdout(cli(&m).args(["logs", "ls-l", "127.0.0.3", "--o", "wide"]));
    let header = wide.lines().next().unwrap();
    let cols: Vec<&str> = header.split('\t').map(str::trim).collect();
    assert_eq!(
        cols,
        [
            "JOBNAME",
            "COMMAND",
            "HOSTNAME",
            "HOSTIPS",
            "STARTTIME",
            "ENDTIME",
            "OUTPUT",
            "ERROR"
        ]
    );
    assert!(
        wide.contains("node-2") && !wide.contains("node-1"),
        "{wide}"
    );
    assert!(wide.contains("ls -l /tmp"), "{wide}");
    let short = stdout(cli(&m).args(["logs", "ls-l", "node-1", "-o", "short"]));
    assert!(short.starts_with("total "), "{short}");

    // -o json is valid JSON everywhere.
    for args in [
        vec!["get", "jobs"],
        vec!["get", "jobs", "ls-l"],
        vec!["get", "nodes"],
        vec!["logs", "ls-l"],
        vec!["analysis", "jobs"],
        vec!["cluster", "status"],
        vec!["version"],
        vec!["token", "list"],
        vec!["audit"],
    ] {
        let out = cli(&m).args(&args).args(["-o", "json"]).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    }
    let wide_nodes = stdout(cli(&m).args(["get", "nodes", "-o", "wide"]));
    assert!(
        wide_nodes.lines().next().unwrap().contains("LOAD"),
        "{wide_nodes}"
    );
}

#[tokio::test]
async fn analysis_finds_each_problem_kind() {
    let m = Manager::start_with(ManagerOptions {
        args: vec!["--node-timeout".into(), "4s".into()],
        ..Default::default()
    });
    let agents = fleet(&m, 3).await;
    let c = m.client();
    // A job failing the same way on every host, and a healthy cron job.
    c.save_job_text(
        "broken",
        r#"{"JobName":"broken","Command":"ls /nonexistent-dir","CronExpr":"*/2 * * * * * *"}"#,
    )
    .await
    .unwrap();
    c.save_job_text(
        "steady",
        r#"{"JobName":"steady","Command":"true","CronExpr":"*/1 * * * * * *"}"#,
    )
    .await
    .unwrap();
    wait_until(LONG, "broken failed on 3 hosts", || async {
        let runs = c
            .runs(&op_proto::api::RunQuery {
                job: Some("broken".into()),
                per_node: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        runs.len() == 3
    })
    .await;

    // node-3 stops: its steady job stops running, and a once-job saved now stays pending there.
    agents[2].pause();
    c.save_job_text(
        "once-later",
        r#"{"JobName":"once-later","Command":"echo hi","OnceJob":1}"#,
    )
    .await
    .unwrap();
    // "has not run for a long time" needs more than twice the interval and at least 10 s.
    // A timeout says what analysis printed last (it once timed out on a loaded CI machine).
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let out = cli(&m).args(["analysis", "jobs"]).output().unwrap();
        let text = format!(
            "exit {:?}\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if text.contains("has not run for a long time") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "analysis never noticed the stalled host in {LONG:?}; its last answer:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let out = cli(&m).args(["analysis", "jobs"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a found problem exits 1");
    let text = String::from_utf8(out.stdout).unwrap();
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap()
        .split('\t')
        .map(str::trim)
        .collect();
    assert_eq!(header, ["JOBNAME", "HOST", "MESSAGE"], "{text}");
    for host in ["node-1", "node-2", "node-3"] {
        assert!(
            text.lines().any(|l| l.starts_with("broken")
                && l.contains(host)
                && l.contains("last run failed")),
            "broken on {host}: {text}"
        );
    }
    assert!(
        text.lines().any(|l| l.starts_with("steady")
            && l.contains("node-3")
            && l.contains("has not run for a long time")),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("steady") && l.contains("node-1")),
        "healthy hosts are not reported: {text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("once-later")
            && l.contains("node-3")
            && l.contains("did not run yet")),
        "{text}"
    );
    assert!(
        text.contains("broken: exit 2 on 3 of 3 hosts: ls: cannot access '/nonexistent-dir': No such file or directory"),
        "{text}"
    );
    // One job by name, and a clean job exits 0.
    let out = cli(&m)
        .args(["analysis", "jobs", "steady"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    agents[2].resume();
    c.delete_job("broken").await.unwrap();
    wait_until(LONG, "node-3 catches up", || async {
        cli(&m)
            .args(["analysis", "jobs", "steady"])
            .output()
            .unwrap()
            .status
            .code()
            == Some(0)
    })
    .await;
}

#[tokio::test]
async fn top_once_shows_a_running_job() {
    let m = Manager::start();
    let _agents = fleet(&m, 1).await;
    m.client()
        .save_job_text(
            "long",
            r#"{"JobName":"long","Command":"sleep 60","OnceJob":1}"#,
        )
        .await
        .unwrap();
    wait_until(LONG, "top shows the run", || async {
        let out = stdout(cli(&m).args(["top", "--once"]));
        out.lines()
            .any(|l| l.starts_with("long") && l.contains("node-1") && l.contains("once"))
    })
    .await;
    let out = stdout(cli(&m).args(["top", "--once"]));
    assert!(out.contains("1 Ready, 0 NotReady"), "{out}");
}

#[tokio::test]
async fn exit_codes_for_success_problem_unreachable_and_bad_token() {
    let m = Manager::start();
    cli(&m).args(["get", "jobs"]).assert().code(0);
    cli(&m)
        .args(["get", "jobs", "no-such-job"])
        .assert()
        .code(2);
    let bad = cli(&m)
        .arg("save")
        .arg(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../op-proto/tests/data/bad/unknown-key.json"),
        )
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(1),
        "a refused file is a found problem"
    );

    let out = cli(&m)
        .env("OP_MANAGER", "http://127.0.0.1:9")
        .args(["get", "nodes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("cannot reach the manager at http://127.0.0.1:9"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    let out = cli(&m)
        .env("OP_TOKEN", "nope.nope")
        .args(["get", "nodes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("refused the credentials") && err.contains("OP_TOKEN"),
        "{err}"
    );

    // A viewer may read but not write.
    let viewer = stdout(cli(&m).args(["token", "create", "--name", "v", "--scope", "viewer"]));
    let viewer = viewer.trim();
    cli(&m)
        .env("OP_TOKEN", viewer)
        .args(["get", "jobs"])
        .assert()
        .code(0);
    let out = cli(&m)
        .env("OP_TOKEN", viewer)
        .arg("save")
        .arg(seed("ll.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
}

#[tokio::test]
async fn forget_revokes_the_node_credential_and_the_agent_enrolls_again() {
    let m = Manager::start();
    let agents = fleet(&m, 1).await;
    let token_file = agents[0].path("state").join("node.token");
    // Registration answers before the agent has written the credential down.
    wait_until(LONG, "the agent keeps its credential", || async {
        std::fs::read_to_string(&token_file).is_ok_and(|t| !t.trim().is_empty())
    })
    .await;
    let first = std::fs::read_to_string(&token_file).unwrap();
    let out = stdout(cli(&m).args(["forget", "node-1"]));
    assert!(out.contains("forgotten"), "{out}");
    // The agent's credential is refused; it enrolls again with the shared token.
    let c = m.client();
    wait_until(LONG, "node-1 enrolled again", || async {
        let again = std::fs::read_to_string(&token_file).unwrap_or_default();
        let ready = c
            .get_node("node-1")
            .await
            .map(|n| n.status == NodeStatus::Ready)
            .unwrap_or(false);
        ready && !again.is_empty() && again != first
    })
    .await;
    cli(&m).args(["forget", "no-such-node"]).assert().code(2);
}

/// `token list` says `expired` for a token past its expiry (it said `active`), and an operator
/// asking for token management is told that it needs an admin token (the message said
/// "operator or admin").
#[tokio::test]
async fn token_list_marks_expired_tokens_and_token_management_names_admin() {
    let m = Manager::start();
    stdout(cli(&m).args([
        "token",
        "create",
        "--name",
        "brief",
        "--scope",
        "viewer",
        "--expires-in",
        "1",
    ]));
    let operator = stdout(cli(&m).args(["token", "create", "--name", "op", "--scope", "operator"]));
    let brief = m
        .client()
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "brief")
        .unwrap();
    let expiry = brief.expires_at.unwrap();
    wait_until(LONG, "the token's expiry passes", || async {
        chrono::Utc::now() > expiry
    })
    .await;
    let list = stdout(cli(&m).args(["token", "list"]));
    let row = list.lines().find(|l| l.contains("brief")).unwrap();
    assert!(row.contains("expired") && !row.contains("active"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().any(|w| w == "op") && l.contains("active")),
        "{list}"
    );

    let out = cli(&m)
        .env("OP_TOKEN", operator.trim())
        .args(["token", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("permission denied") && err.contains("needs an admin token"),
        "{err}"
    );
    assert!(!err.contains("operator or admin"), "{err}");
}

#[tokio::test]
async fn get_nodes_wide_shows_each_agents_clock_skew() {
    let m = Manager::start();
    // node-1's agent reports a clock 12 s behind (the test-only offset); node-2's is right.
    let _slow = Agent::start(
        AgentOptions::new("node-1", "127.0.0.2")
            .manager(&m)
            .env("OP_TEST_CLOCK_OFFSET", "-12"),
    );
    let _right = Agent::start(AgentOptions::new("node-2", "127.0.0.3").manager(&m));
    let c = m.client();
    wait_until(LONG, "both agents report their clocks", || async {
        c.list_nodes()
            .await
            .map(|v| v.iter().filter(|n| n.clock_skew_ms.is_some()).count() == 2)
            .unwrap_or(false)
    })
    .await;
    let out = stdout(cli(&m).args(["get", "nodes", "-o", "wide"]));
    let header = out.lines().next().unwrap();
    assert!(header.trim_end().ends_with("CLOCKSKEW"), "{out}");
    let row = |host: &str| {
        out.lines()
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("no {host} in {out}"))
            .split_whitespace()
            .last()
            .unwrap()
            .to_string()
    };
    assert_eq!(row("node-1"), "-12s", "{out}");
    // Same machine: a skew of the request's travel time only.
    let right = row("node-2");
    assert!(
        right.starts_with("+0.") || right.starts_with("-0."),
        "{out}"
    );
    let nodes = c.list_nodes().await.unwrap();
    let skew = |host: &str| {
        nodes
            .iter()
            .find(|n| n.hostname == host)
            .and_then(|n| n.clock_skew_ms)
            .unwrap()
    };
    assert!((skew("node-1") + 12_000).abs() < 1_000, "{nodes:?}");
    assert!(skew("node-2").abs() < 1_000, "{nodes:?}");
}
