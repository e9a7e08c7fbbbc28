//! Helpers shared by the scenarios.

use std::time::Duration;

use op_client::Client;
use op_proto::api::RunQuery;
use op_proto::{JobSpec, NodeStatus, RunRecord};
use op_testkit::{AGENT_PASSWORD, AGENT_USER, Agent, AgentOptions, Manager, wait_until};

/// Generous: these run on a loaded 2-core CI machine.
pub const LONG: Duration = Duration::from_secs(30);

/// Starts `n` agents named `node-1..` with IPs `127.0.0.2..` connected to `m`, and waits until the
/// manager lists them all Ready.
pub async fn fleet(m: &Manager, n: usize, extra: &[&str]) -> Vec<Agent> {
    let agents: Vec<Agent> = (1..=n)
        .map(|i| {
            let mut o =
                AgentOptions::new(&format!("node-{i}"), &format!("127.0.0.{}", i + 1)).manager(m);
            for a in extra {
                o = o.arg(a);
            }
            Agent::start(o)
        })
        .collect();
    let c = m.client();
    wait_until(LONG, "every agent Ready", || async {
        c.list_nodes()
            .await
            .map(|nodes| {
                nodes
                    .iter()
                    .filter(|n| n.status == NodeStatus::Ready)
                    .count()
                    == n
            })
            .unwrap_or(false)
    })
    .await;
    agents
}

pub fn job(text: &str) -> JobSpec {
    JobSpec::from_task_json(text).expect("valid task file")
}

/// How many times the agent applied a job set of `n` jobs.
pub fn job_sets(a: &op_testkit::Agent, n: usize) -> usize {
    a.log()
        .lines()
        .filter(|l| {
            l.contains("applying the manager's job set") && l.contains(&format!("jobs={n}"))
        })
        .count()
}

/// Runs of `job` the manager stores, all of them.
pub async fn runs_of(c: &Client, job: &str) -> Vec<RunRecord> {
    c.runs(&RunQuery {
        job: Some(job.to_string()),
        limit: Some(10_000),
        ..RunQuery::default()
    })
    .await
    .expect("runs query")
}

/// The agent's own record of its runs of `job` (its local history).
pub async fn local_runs(agent: &Agent, job: &str) -> Vec<RunRecord> {
    reqwest::Client::new()
        .get(format!("{}/v1/runs?job={job}&limit=1000", agent.url()))
        .basic_auth(AGENT_USER, Some(AGENT_PASSWORD))
        .send()
        .await
        .expect("agent answers")
        .json()
        .await
        .expect("run list")
}

/// A console session for `token` (the login form's CSRF nonce, then the session cookie).
pub async fn console_get(m: &op_testkit::Manager, token: &str, path: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http
        .get(format!("{}/ui/login", m.api_url))
        .send()
        .await
        .unwrap();
    let cookie_of = |resp: &reqwest::Response, name: &str| -> String {
        resp.headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .unwrap_or_default()
            .to_string()
    };
    let login = cookie_of(&form, "op_login");
    let html = form.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the login form has a csrf field")
        .to_string();
    let signed = http
        .post(format!("{}/ui/login", m.api_url))
        .header(reqwest::header::COOKIE, &login)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        // Tokens and the nonce are hex and dots: nothing to escape.
        .body(format!("token={token}&csrf={csrf}&next=%2Fui"))
        .send()
        .await
        .unwrap();
    let session = cookie_of(&signed, "op_session");
    assert!(!session.is_empty(), "signed in: {}", signed.status());
    http.get(format!("{}{path}", m.api_url))
        .header(reqwest::header::COOKIE, session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `agentcli ARGS` against `m` as `token` (the manager's admin token when `None`), in a clean
/// environment (no config file of the machine's user is read).
pub async fn agentcli_as(
    m: &op_testkit::Manager,
    token: Option<&str>,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = std::process::Command::new(op_testkit::bin("agentcli"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", m.dir.path())
        .env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", token.unwrap_or(&m.admin_token))
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("agentcli runs"))
        .await
        .unwrap()
}

/// `agentcli ARGS` against `m` as its admin.
pub async fn agentcli(m: &op_testkit::Manager, args: &[&str]) -> std::process::Output {
    agentcli_as(m, None, args).await
}

/// Bytes of a child's output as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
