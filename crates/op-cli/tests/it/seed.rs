//! The seed README's four usage cases, typed as its README shows them, through the real binaries
//! and with the seed's own task files. The only change to the files is the root: the seed deploys
//! under /data/op-agent/src, the test under a temp dir standing in for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use op_proto::RunStatus;
use op_proto::api::RunQuery;
use op_testkit::{AGENT_PASSWORD, AGENT_USER, Agent, AgentOptions, Manager, wait_until};

const LONG: Duration = Duration::from_secs(40);

fn cli(m: &Manager, cwd: &Path) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("agentcli"));
    cmd.env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &m.admin_token)
        .env("HOME", "/nonexistent")
        .current_dir(cwd);
    cmd
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A seed task file with its root moved under `root`.
fn seed_file(name: &str, root: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../op-proto/tests/data/seed")
            .join(name),
    )
    .unwrap();
    let text = text.replace(
        "/data/op-agent/src",
        &root.join("data/op-agent/src").display().to_string(),
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or("")
        .split('\t')
        .map(|c| c.trim().to_string())
        .collect()
}

#[tokio::test]
async fn the_seed_readme_usage_cases() {
    let m = Manager::start();
    let agents: Vec<Agent> = (1..=2)
        .map(|i| {
            Agent::start(
                AgentOptions::new(&format!("op-agent-test0{i}"), &format!("127.0.0.{}", i + 1))
                    .manager(&m),
            )
        })
        .collect();
    let c = m.client();
    wait_until(LONG, "agents Ready", || async {
        c.list_nodes().await.map(|n| n.len() == 2).unwrap_or(false)
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let src = root.join("data/op-agent/src");
    let w = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    };
    let has_python = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("python").is_file());
    assert!(has_python, "the seed's commands call `python`");

    // --- 1. ls -l /tmp once on every machine: see tests in fleet.rs (ll.json); here once more.
    let ll = seed_file("ll.json", root, root);
    ok(cli(&m, root).arg("save").arg(&ll));
    wait_until(LONG, "ls-l on both hosts", || async {
        c.runs(&RunQuery {
            job: Some("ls-l".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
            == 2
    })
    .await;
    let logs = ok(cli(&m, root).args(["logs", "ls-l"]));
    assert_eq!(
        header(&logs),
        ["JOBNAME", "HOSTIPS", "ENDTIME", "OUTPUT", "ERROR"]
    );
    let wide = ok(cli(&m, root).args(["logs", "ls-l", "127.0.0.3", "--o", "wide"]));
    assert!(
        wide.contains("op-agent-test02") && !wide.contains("op-agent-test01"),
        "{wide}"
    );

    // --- 2. A python project pushed to every machine, run once.
    w(
        "python_project_dir/test.py",
        "print('python project says hi')\n",
    );
    let up = ok(cli(&m, root)
        .args(["upload", "python_project_dir"])
        .arg(&src));
    assert!(up.contains("python_project_dir.tar.gz"), "{up}");
    ok(cli(&m, root)
        .arg("save")
        .arg(seed_file("python_test.json", root, root)));
    let jobs = ok(cli(&m, root).args(["get", "jobs"]));
    assert!(jobs.lines().any(|l| l.starts_with("test.py")), "{jobs}");
    let detail = ok(cli(&m, root).args(["get", "jobs", "test.py"]));
    assert!(
        detail.contains("Is it a one-time task:") && detail.contains("Yes"),
        "{detail}"
    );
    wait_until(LONG, "test.py on both hosts", || async {
        let runs = c
            .runs(&RunQuery {
                job: Some("test.py".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        runs.len() == 2
    })
    .await;
    let logs = ok(cli(&m, root).args(["logs", "test.py"]));
    assert_eq!(logs.matches("python project says hi").count(), 2, "{logs}");
    let wide = ok(cli(&m, root).args(["logs", "test.py", "127.0.0.2", "--o", "wide"]));
    assert!(
        wide.contains("op-agent-test01") && wide.contains("python project says hi"),
        "{wide}"
    );

    // --- 3. A cron job every 5 seconds running an uploaded script.
    w(
        "cycleTest.py",
        "import time\nprint('cycle', int(time.time()))\n",
    );
    ok(cli(&m, root).args(["upload", "cycleTest.py"]).arg(&src));
    ok(cli(&m, root)
        .arg("save")
        .arg(seed_file("cycleTest.json", root, root)));
    let detail = ok(cli(&m, root).args(["get", "jobs", "cycleTest.py"]));
    assert!(
        detail.contains("*/5 * * * * * *") && detail.contains("Next fire times:"),
        "{detail}"
    );
    wait_until(LONG, "cycleTest.py ran twice on each host", || async {
        let runs = c
            .runs(&RunQuery {
                job: Some("cycleTest.py".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        runs.iter()
            .filter(|r| r.status == RunStatus::Ok && r.output.starts_with("cycle "))
            .count()
            >= 4
    })
    .await;
    let logs = ok(cli(&m, root).args(["logs", "cycleTest.py"]));
    assert_eq!(
        logs.matches("cycle ").count(),
        2,
        "one (the latest) run per host: {logs}"
    );
    let wide = ok(cli(&m, root).args(["logs", "cycleTest.py", "127.0.0.3", "--o", "wide"]));
    assert!(wide.contains("op-agent-test02"), "{wide}");

    // --- 4. An API job called over HTTP with parameters, with the seed's curl line.
    w(
        "apiTest.py",
        "import argparse\np = argparse.ArgumentParser()\np.add_argument('--host')\np.add_argument('--port')\na = p.parse_args()\nprint('host=%s port=%s' % (a.host, a.port))\n",
    );
    ok(cli(&m, root).args(["upload", "apiTest.py"]).arg(&src));
    ok(cli(&m, root)
        .arg("save")
        .arg(seed_file("apiTest.json", root, root)));
    ok(cli(&m, root).args(["get", "jobs", "apiTest.py"]));
    let agent = &agents[0];
    wait_until(
        LONG,
        "the agent holds apiTest.py and its script",
        || async { src.join("apiTest.py").exists() },
    )
    .await;
    let body = r#"{"jobname":"apiTest.py", "host":"192.168.1.1", "port":"3306"}"#;
    let url = format!("{}/api/opAgent", agent.url());
    let mut result = String::new();
    // `?wait=true` overrides the file's SynFlag 0: the answer carries the run's output.
    let sync_url = format!("{url}?wait=true");
    wait_until(LONG, "the seed's curl call succeeds", || {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--connect-timeout",
                "2",
                "-u",
                &format!("{AGENT_USER}:{AGENT_PASSWORD}"),
                &sync_url,
                "-d",
                body,
            ])
            .output()
            .unwrap();
        result = String::from_utf8_lossy(&out.stdout).to_string();
        let done = result.contains("host=192.168.1.1 port=3306");
        async move { done }
    })
    .await;
    assert!(result.contains(r#""Code":"OK""#), "{result}");
    // SynFlag 0 (the file's mode): the call returns a run id at once; the run lands in the logs.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--connect-timeout",
            "2",
            "-u",
            &format!("{AGENT_USER}:{AGENT_PASSWORD}"),
            &url,
            "-d",
            body,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#""Code":"OK""#) && text.contains("run_id"),
        "{text}"
    );
    wait_until(LONG, "the API runs reach the manager's logs", || async {
        let out = cli(&m, root)
            .args(["logs", "apiTest.py", "127.0.0.2", "5"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .matches("host=192.168.1.1 port=3306")
            .count()
            >= 2
    })
    .await;
}
