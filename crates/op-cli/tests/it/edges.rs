//! Sharp edges a new user met in the first hour (issue 17), each through the real binary: host
//! arguments, `logs adhoc`, closed pipes, one row per node, downloads over a local file, duration
//! flags, bare `cluster`, token files, the seed's habits and progress of a stuck fan-out.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use op_proto::NodeStatus;
use op_testkit::{Agent, AgentOptions, Manager, wait_until};

use crate::offline::with_closed_stdout;

const LONG: Duration = Duration::from_secs(40);

fn agentcli() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin!("agentcli"))
}

/// `agentcli` pointed at `m` with its admin token, run from `cwd`.
fn cli_in(m: &Manager, cwd: &Path) -> Command {
    let mut cmd = agentcli();
    cmd.env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &m.admin_token)
        .env("TZ", "UTC")
        .env("HOME", "/nonexistent")
        .current_dir(cwd);
    cmd
}

fn cli(m: &Manager) -> Command {
    cli_in(m, &std::env::temp_dir())
}

/// Runs and returns (exit code, stdout, stderr).
fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(cmd: &mut Command) -> String {
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{cmd:?}: {err}");
    out
}

/// This machine's hostname, which an agent reports by default.
fn this_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

async fn ready(m: &Manager, n: usize) {
    let c = m.client();
    wait_until(LONG, "agents Ready", || async {
        c.list_nodes()
            .await
            .map(|v| v.iter().filter(|n| n.status == NodeStatus::Ready).count() == n)
            .unwrap_or(false)
    })
    .await;
}

/// Issue 17 items 3, 5, 7 and 16: the local agent (this machine's hostname, two addresses, none
/// of them 127.0.0.1) and another one.
#[tokio::test]
async fn logs_hosts_adhoc_closed_pipe_and_one_row_per_node() {
    let m = Manager::start();
    let me = this_hostname();
    let mut local = AgentOptions::new(&me, "127.0.0.9").manager(&m);
    local.ips.push("10.77.0.9".into());
    let _local = Agent::start(local);
    let _other = Agent::start(AgentOptions::new("node-b", "127.0.0.10").manager(&m));
    ready(&m, 2).await;

    // Item 16: one row per node, so the seed's `awk 'NR>1{print $1}'` lists each host once.
    let nodes = ok(cli(&m).args(["get", "nodes"]));
    let mut names: Vec<&str> = nodes
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    names.sort();
    let mut want = vec![me.as_str(), "node-b"];
    want.sort();
    assert_eq!(names, want, "{nodes}");
    assert!(nodes.contains("127.0.0.9,10.77.0.9"), "{nodes}");
    let wide = ok(cli(&m).args(["get", "nodes", "-o", "wide"]));
    assert_eq!(wide.lines().count(), 3, "{wide}");

    // Item 7: exec runs are the job `adhoc`, as the README says.
    ok(cli(&m).args(["exec", "--all", "--", "echo hello-adhoc"]));
    let c = m.client();
    wait_until(LONG, "both adhoc runs reached the manager", || async {
        c.runs(&op_proto::api::RunQuery {
            job: Some("adhoc".into()),
            ..Default::default()
        })
        .await
        .map(|r| r.len() == 2)
        .unwrap_or(false)
    })
    .await;
    let logs = ok(cli(&m).args(["logs", "adhoc", "ALL", "5"]));
    assert_eq!(logs.matches("hello-adhoc").count(), 2, "{logs}");

    // Item 3: 127.0.0.1 is this machine, so the README's `logs JOB 127.0.0.1 -o wide` shows the
    // local agent's run, on one row with both its addresses.
    let wide = ok(cli(&m).args(["logs", "adhoc", "127.0.0.1", "-o", "wide"]));
    assert!(wide.contains(&me), "{wide}");
    assert!(!wide.contains("node-b"), "{wide}");
    assert!(wide.contains("127.0.0.9,10.77.0.9"), "{wide}");
    assert_eq!(wide.lines().count(), 2, "{wide}");
    // An unknown host is an error naming the closest hosts, not an empty answer.
    let (code, out, err) = run(cli(&m).args(["logs", "adhoc", "node-c"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("no node matches \"node-c\""), "{err}");
    assert!(err.contains("close matches: node-b"), "{err}");

    // Item 5: `logs -o json | head` ends quietly.
    let out = with_closed_stdout(cli(&m).args(["logs", "adhoc", "-o", "json"]));
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 17 items 4 and 17: a download never replaces a local file silently; the seed's
/// `download VERSION` and bare `rollback` get a hint naming the package argument.
#[tokio::test]
async fn download_keeps_a_local_file_and_seed_forms_get_hints() {
    let m = Manager::start();
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("tool.sh"), "echo v1\n").unwrap();
    ok(cli_in(&m, src.path()).args(["upload", "tool.sh", "/tmp/op-edges"]));

    std::fs::write(dir.path().join("tool.sh"), "mine\n").unwrap();
    let (code, _, err) = run(cli_in(&m, dir.path()).args(["download", "tool.sh"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tool.sh")).unwrap(),
        "mine\n"
    );
    ok(cli_in(&m, dir.path()).args(["download", "tool.sh", "--force"]));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tool.sh")).unwrap(),
        "echo v1\n"
    );

    let (code, _, err) = run(cli_in(&m, dir.path()).args(["download", "1730000000"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("agentcli download NAME [VERSION]"), "{err}");
    let (code, _, err) = run(cli(&m).arg("rollback"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("agentcli rollback NAME [VERSION]"), "{err}");
}

/// Issue 17 items 8, 9 and 10: durations where people write them, and bare `cluster`.
#[tokio::test]
async fn durations_in_flags_and_bare_cluster() {
    let m = Manager::start();
    ok(cli(&m).args(["token", "create", "--name", "old", "--scope", "viewer"]));
    let audit = ok(cli(&m).args(["audit", "--since", "1h"]));
    assert!(audit.contains("old"), "{audit}");
    let json = ok(cli(&m).args(["audit", "--since", "1h", "-o", "json"]));
    assert!(json.contains("old"), "{json}");
    let (code, _, err) = run(cli(&m).args(["audit", "--since", "yesterday"]));
    assert_eq!(code, 2);
    assert!(err.contains("duration like 1h"), "{err}");

    let created = ok(cli(&m).args([
        "token",
        "create",
        "--name",
        "month",
        "--scope",
        "viewer",
        "--expires-in",
        "30d",
        "-o",
        "json",
    ]));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let expires = created["info"]["expires_at"].as_str().unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(expires).unwrap();
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours() as f64 / 24.0;
    assert!((29.9..=30.0).contains(&days), "{days} days");

    let bare = ok(cli(&m).arg("cluster"));
    let status = ok(cli(&m).args(["cluster", "status"]));
    assert_eq!(bare.lines().next(), status.lines().next(), "{bare}");
    assert!(bare.contains("leader 1"), "{bare}");
}

/// Issue 17 items 15 and 17: token_file relative to agentcli.toml (and `~/`), the wording for a
/// missing token, and the seed's JSON config explained.
#[tokio::test]
async fn token_file_missing_token_and_seed_config() {
    let m = Manager::start();
    let home = tempfile::tempdir().unwrap();
    let conf = home.path().join("conf");
    let elsewhere = home.path().join("elsewhere");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(conf.join("admin.token"), &m.admin_token).unwrap();
    std::fs::write(home.path().join("home.token"), &m.admin_token).unwrap();
    let base = || {
        let mut cmd = agentcli();
        cmd.env("OP_MANAGER", &m.api_url)
            .env("HOME", home.path())
            .env_remove("OP_TOKEN")
            .current_dir(&elsewhere);
        cmd
    };
    for token_file in ["admin.token", "~/home.token"] {
        std::fs::write(
            conf.join("agentcli.toml"),
            format!("token_file = \"{token_file}\"\n"),
        )
        .unwrap();
        ok(base()
            .arg("--config")
            .arg(conf.join("agentcli.toml"))
            .args(["get", "nodes"]));
    }

    let (code, _, err) = run(base().args(["get", "nodes"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("none was given") && err.contains("OP_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("check no token"), "{err}");

    std::fs::write(
        elsewhere.join("agentCli.conf.json"),
        "{\"ManagerAddr\": \"127.0.0.1:8090\"}",
    )
    .unwrap();
    let (code, _, err) = run(base()
        .arg("--config")
        .arg(elsewhere.join("agentCli.conf.json"))
        .args(["get", "nodes"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("is JSON") && err.contains("token_file"),
        "{err}"
    );
    let (_, _, err) = run(base().args(["get", "nodes"]));
    assert!(
        err.contains("agentCli.conf.json") && err.contains("TOML"),
        "{err}"
    );
}

/// Issue 17 items 18 and 20: `run` of a SynFlag 0 job says it went to the background, and
/// `exec --all` with one agent stopped names that host while it waits.
#[tokio::test]
async fn background_run_says_so_and_a_stuck_host_is_named() {
    // No acknowledgement asked: the stopped host is waited for (as one of release 0.1.0 is), so
    // the caller's progress line names it.
    let m = Manager::start_with(op_testkit::ManagerOptions {
        args: vec!["--directive-ack-timeout".into(), "0s".into()],
        ..Default::default()
    });
    let _a = Agent::start(AgentOptions::new("node-a", "127.0.0.11").manager(&m));
    let b = Agent::start(AgentOptions::new("node-stuck", "127.0.0.12").manager(&m));
    ready(&m, 2).await;

    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("bg.json");
    std::fs::write(
        &job,
        r#"{"JobName": "bg", "Command": "true", "CronExpr": "", "OnceJob": 0, "Timeout": 10,
            "SynFlag": 0, "Enabled": 1, "WhiteHosts": [], "BlackHosts": []}"#,
    )
    .unwrap();
    ok(cli(&m).arg("save").arg(&job));
    let (code, out, err) = run(cli(&m).args(["run", "bg"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("invocation"), "{out}");
    assert!(
        err.contains("runs in the background") && err.contains("--wait"),
        "{err}"
    );
    let (_, _, err) = run(cli(&m).args(["run", "bg", "--async"]));
    assert!(!err.contains("runs in the background"), "{err}");

    b.pause();
    let mut child = cli(&m)
        .args(["exec", "--all", "--deadline", "2m", "--", "echo hi"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let line = loop {
        let line = rx
            .recv_timeout(LONG.saturating_sub(started.elapsed()))
            .unwrap_or_else(|_| panic!("no progress line naming the stuck host: {seen:?}"));
        if line.contains("still waiting") {
            break line;
        }
        seen.push(line);
    };
    assert!(
        line.contains("node-stuck") && !line.contains("node-a"),
        "{line}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    b.resume();
}

/// An empty name (`agentcli delete ''`, often an empty shell variable) made a path with an empty
/// segment, and the manager could only say "no such route; see the API reference". Every
/// command now says the name is empty, exits 2 and sends nothing.
#[tokio::test]
async fn an_empty_name_is_named_as_such_and_nothing_is_sent() {
    let m = Manager::start();
    for args in [
        &["delete", ""][..],
        &["get", "jobs", ""],
        &["get", "nodes", ""],
        &["logs", ""],
        &[
            "notify",
            "add",
            "",
            "--webhook",
            "https://hooks.example.com/op",
        ],
        &["notify", "remove", ""],
        &["window", "remove", ""],
        &["token", "revoke", ""],
        &["secret", "rm", ""],
        &["rollout", "status", ""],
        &["rollback", ""],
        &["analysis", "jobs", ""],
    ] {
        let (code, out, err) = run(cli(&m).args(args));
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(
            err.contains("a name is empty") && !err.contains("no such route"),
            "{args:?}: {err}"
        );
    }
    assert!(m.client().notify_rules().await.unwrap().is_empty());
}
