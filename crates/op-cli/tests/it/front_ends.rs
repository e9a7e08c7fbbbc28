//! The CLI and the web console tell the same story: one failed run and one package rollout, read
//! through the real `agentcli` binary and through the console's pages over HTTP, described
//! identically (both use `op_proto::analysis`).

use std::time::Duration;

use assert_cmd::Command;
use op_proto::NodeStatus;
use op_proto::api::RunQuery;
use op_testkit::{Agent, AgentOptions, Manager, wait_until};

const LONG: Duration = Duration::from_secs(40);

fn cli(m: &Manager) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("agentcli"));
    cmd.env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &m.admin_token)
        .env("TZ", "UTC")
        .env("HOME", "/nonexistent")
        .current_dir(std::env::temp_dir());
    cmd
}

/// Runs `agentcli ARGS` and returns its stdout, whatever the exit code (a found problem is 1).
fn cli_text(m: &Manager, args: &[&str]) -> String {
    let out = cli(m).args(args).output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "agentcli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A console session over plain HTTP: the login form's nonce cookie and CSRF field, then the
/// session cookie.
struct Console {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

fn cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_string)
        .collect()
}

impl Console {
    async fn login(m: &Manager) -> Console {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = m.api_url.trim_end_matches('/').to_string();
        let form = http.get(format!("{base}/ui/login")).send().await.unwrap();
        let nonce = cookies(&form).join("; ");
        let page = form.text().await.unwrap();
        let csrf = between(&page, "name=\"csrf\" value=\"", "\"").expect("the login form's csrf");
        let body = format!("token={}&csrf={csrf}&next=%2Fui", m.admin_token);
        let resp = http
            .post(format!("{base}/ui/login"))
            .header(reqwest::header::COOKIE, nonce)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_redirection(), "login: {}", resp.status());
        let cookie = cookies(&resp)
            .into_iter()
            .find(|c| c.starts_with("op_session="))
            .expect("a session cookie");
        Console { http, base, cookie }
    }

    async fn page(&self, path: &str) -> String {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.text().await.unwrap()
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// Undoes `html::esc` for the characters these texts use.
fn unescape(s: &str) -> String {
    s.replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `(headline, signature)` of the first failure group on a console job page.
fn console_failure_group(page: &str) -> Option<(String, String)> {
    let section = between(page, "Failures across hosts</h2>", "</section>")?;
    let headline = between(section, "<li><strong>", "</strong>")?;
    let signature = between(section, ": <code>", "</code>")?;
    Some((unescape(headline), unescape(signature)))
}

/// `(headline, signature)` of the job's line under FAILURES ACROSS HOSTS.
fn cli_failure_group(text: &str, job: &str) -> Option<(String, String)> {
    let groups = text.split("FAILURES ACROSS HOSTS\n").nth(1)?;
    let line = groups
        .lines()
        .find(|l| l.starts_with(&format!("{job}: ")))?;
    let rest = &line[job.len() + 2..];
    let (headline, signature) = rest.split_once(": ")?;
    Some((headline.to_string(), signature.to_string()))
}

/// The standing text of `host` in `agentcli analysis packages NAME` (empty when current).
fn cli_standing(text: &str, host: &str) -> Option<String> {
    let row = text.lines().find(|l| l.contains(host))?;
    Some(row.split('\t').next_back()?.trim().to_string())
}

/// The standing text of `host` on the console's package page.
fn console_standing(page: &str, host: &str) -> Option<String> {
    let row = between(page, &format!("<tr data-host=\"{host}\""), "</tr>")?;
    let badge = between(row, "data-label=\"Standing\">", "</td>")?;
    let text = badge.rsplit("</span> ").next()?.strip_suffix("</span>")?;
    Some(unescape(text))
}

#[tokio::test]
async fn cli_and_console_describe_a_failed_run_and_a_package_alike() {
    let m = Manager::start();
    let _agent = Agent::start(AgentOptions::new("node-1", "127.0.0.2").manager(&m));
    let c = m.client();
    wait_until(LONG, "the agent Ready", || async {
        c.list_nodes()
            .await
            .is_ok_and(|v| v.iter().any(|n| n.status == NodeStatus::Ready))
    })
    .await;

    // A job that prints its error on stderr, then `fine` on stdout, then exits 3: the merged
    // output ends with `fine`, and the signature is still the error (DESIGN 13.2).
    c.save_job_text(
        "etl",
        r#"{"JobName":"etl","OnceJob":1,
            "Command":"echo 'boom: no such table' >&2; echo fine; exit 3"}"#,
    )
    .await
    .unwrap();
    let query = RunQuery {
        job: Some("etl".into()),
        ..RunQuery::default()
    };
    wait_until(LONG, "the etl run stored", || async {
        c.runs(&query)
            .await
            .is_ok_and(|r| r.iter().any(|r| r.status.is_final()))
    })
    .await;
    // The manager stored and returns the stderr tail the agent sent.
    let run = c.runs(&query).await.unwrap().remove(0);
    assert_eq!(run.stderr_tail, "boom: no such table\n", "{run:?}");

    let console = Console::login(&m).await;
    let analysis = cli_text(&m, &["analysis", "jobs", "etl"]);
    let from_cli = cli_failure_group(&analysis, "etl").unwrap_or_else(|| panic!("{analysis}"));
    let page = console.page("/ui/jobs/etl").await;
    let from_console = console_failure_group(&page)
        .unwrap_or_else(|| panic!("no failure group on the job page:\n{page}"));
    assert_eq!(
        from_cli,
        (
            "exit 3 on 1 of 1 hosts".to_string(),
            "boom: no such table".to_string()
        ),
        "{analysis}"
    );
    assert_eq!(from_console, from_cli, "the console and the CLI disagree");
    // The problem line and logs' ERROR column name the same error.
    assert!(
        analysis.contains("last run failed: exit status 3: boom: no such table"),
        "{analysis}"
    );
    let logs = cli_text(&m, &["logs", "etl"]);
    assert!(
        logs.lines()
            .nth(1)
            .is_some_and(|l| l.trim_end().ends_with("exit status 3: boom: no such table")),
        "{logs}"
    );
    // The console's run page and the job page's runs say it the same way.
    let run_page = console.page(&format!("/ui/runs/{}", run.run_id)).await;
    assert!(
        run_page.contains("<dt>Error</dt><dd>exit status 3: boom: no such table</dd>"),
        "{run_page}"
    );
    assert!(
        page.contains("class=\"clip\">exit status 3: boom: no such table</td>"),
        "{page}"
    );

    // A package the agent cannot deploy: its deploy dir lies under a regular file.
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let file = dir.path().join("tool.sh");
    std::fs::write(&file, "#!/bin/sh\necho tool\n").unwrap();
    let deploy = blocker.join("deploy");
    cli(&m)
        .arg("upload")
        .arg(&file)
        .arg(&deploy)
        .assert()
        .success();
    // The agent's report moves between failed and retrying; both front ends read it at about the
    // same time, and must agree on whatever they read.
    let deadline = tokio::time::Instant::now() + LONG;
    let (from_cli, from_console) = loop {
        let text = cli_text(&m, &["analysis", "packages", "tool.sh"]);
        let page = console.page("/ui/packages/tool.sh").await;
        let seen = (
            cli_standing(&text, "node-1"),
            console_standing(&page, "node-1"),
        );
        if let (Some(a), Some(b)) = &seen
            && a.starts_with("failed: ")
            && a == b
        {
            break (a.clone(), b.clone());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the front ends never showed the failed deploy alike; last seen {seen:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(from_cli, from_console);
    assert!(
        from_cli.contains("not-a-dir"),
        "the reason names the path: {from_cli}"
    );
}
