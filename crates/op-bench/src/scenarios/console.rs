//! `console`: how long the web console's main pages take to answer on a large fleet.
//!
//! A real manager is given `nodes` registered nodes (each sends one heartbeat with load and a
//! package, through the agent protocol), `jobs` cron jobs and `runs_per_node` finished runs per
//! node, over 10 jobs per node (a fifth of them failed). Then the bench signs in to `/ui` with the
//! admin token like a browser (login form, CSRF field, session cookie) and times complete GETs of
//! the overview, nodes, jobs and runs pages: request to last byte, after warm-up, sequentially.
//! DESIGN target: under 200 ms with 1,000 nodes and 500 jobs.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use op_client::Client;
use op_proto::agent::{Heartbeat, RegisterRequest, RunBatch};
use op_proto::node::LoadInfo;
use op_proto::package::{InstalledPackage, PackageState};
use op_proto::{API_VERSION, RunRecord, RunStatus, Trigger};
use uuid::Uuid;

use crate::manager::ManagerProcess;
use crate::report::{Figure, percentile};

const WARMUP: usize = 5;
/// Distinct jobs each node runs.
const JOBS_PER_NODE: usize = 10;
const PAGES: [(&str, &str); 4] = [
    ("overview", "/ui"),
    ("nodes", "/ui/nodes"),
    ("jobs", "/ui/jobs"),
    ("runs", "/ui/runs"),
];

pub async fn run(
    manager_bin: &Path,
    nodes: usize,
    jobs: usize,
    runs_per_node: usize,
    count: usize,
) -> anyhow::Result<Vec<Figure>> {
    let m = ManagerProcess::start(manager_bin, &[]).await?;
    let admin = Client::new(&m.api_url, Some(&m.admin_token))?;
    let agent = Client::new(&m.api_url, Some(&m.agent_token))?;
    let names: Vec<String> = (0..jobs).map(|j| format!("job-{j:04}")).collect();
    for name in &names {
        admin
            .save_job_text(
                name,
                &format!(
                    r#"{{"JobName": "{name}", "Command": "echo {name}", "CronExpr": "*/5 * * * *", "Timeout": 60}}"#
                ),
            )
            .await
            .with_context(|| format!("saving {name}"))?;
    }
    // Nodes register and report, a few dozen at a time.
    let ids: Vec<Uuid> = (0..nodes).map(|_| Uuid::new_v4()).collect();
    for chunk in ids.chunks(50).enumerate().collect::<Vec<_>>() {
        let (c, chunk) = chunk;
        let mut tasks = Vec::new();
        for (k, id) in chunk.iter().enumerate() {
            let i = c * 50 + k;
            let agent = agent.clone();
            let names = names.clone();
            let id = *id;
            tasks.push(tokio::spawn(async move {
                seed_node(&agent, id, i, &names, runs_per_node).await
            }));
        }
        for t in tasks {
            t.await??;
        }
    }
    let cookie = login(&m.api_url, &m.admin_token).await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut figures = Vec::new();
    let cond = format!(
        "{nodes} nodes, {jobs} jobs, {} stored runs; complete GET (request to last byte) as a signed-in admin, {count} sequential after {WARMUP} warm-up, one manager, loopback, release build",
        nodes * runs_per_node
    );
    for (name, path) in PAGES {
        let mut samples = Vec::with_capacity(count);
        let mut size = 0;
        for i in 0..WARMUP + count {
            let t = Instant::now();
            let resp = http
                .get(format!("{}{path}", m.api_url))
                .header("cookie", &cookie)
                .send()
                .await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if !status.is_success() {
                bail!("{path} answered {status}");
            }
            size = body.len();
            if i >= WARMUP {
                samples.push(ms);
            }
        }
        let cond = format!("{cond}; page size {} KiB", size / 1024);
        figures.push(Figure::new(
            &format!("console_{name}_p50"),
            percentile(&samples, 50.0),
            "ms",
            &cond,
        ));
        figures.push(Figure::new(
            &format!("console_{name}_p99"),
            percentile(&samples, 99.0),
            "ms",
            &cond,
        ));
    }
    Ok(figures)
}

/// Tries `f` a few times: a pooled connection the manager closed between two seeds is not a
/// failure of what is measured.
async fn retry<T, F, Fut>(mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, op_client::ClientError>>,
{
    let mut last = None;
    for _ in 0..5 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no attempt")))
}

async fn seed_node(
    agent: &Client,
    node_id: Uuid,
    i: usize,
    jobs: &[String],
    runs: usize,
) -> anyhow::Result<()> {
    let hostname = format!("host-{i:05}");
    let ip: std::net::IpAddr =
        format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256).parse()?;
    let register = RegisterRequest {
        api_version: API_VERSION,
        node_id,
        hostname: hostname.clone(),
        ips: vec![ip],
        labels: [("rack".to_string(), format!("r{}", i % 20))].into(),
        agent_version: "bench".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        machine_id: String::new(),
        reset: None,
        capabilities: Vec::new(),
    };
    // The shared token only enrolls; the node speaks with its own credential from then on.
    let token = retry(|| agent.register(&register))
        .await?
        .node_token
        .context("the manager issued no node credential")?;
    let agent = agent.with_token(&token);
    let beat = Heartbeat {
        node_id,
        agent_version: "bench".into(),
        load: Some(LoadInfo {
            load1: 0.5,
            load5: 0.4,
            load15: 0.3,
            cpus: 8,
            mem_total_kb: 16 << 20,
            mem_available_kb: 8 << 20,
        }),
        running: vec![],
        packages: vec![InstalledPackage {
            name: "tool.tar.gz".into(),
            version: 1,
            sha256: String::new(),
            state: PackageState::Installed,
            target_version: None,
            error: None,
            fetched: None,
        }],
        stats: Default::default(),
        degraded: None,
        sent_at: None,
        received: Vec::new(),
        facts: None,
        peer_url: None,
    };
    retry(|| agent.sync(0, 0, &beat)).await?;
    let now = chrono::Utc::now();
    let records = (0..runs)
        .map(|r| {
            // Each node runs the same few jobs again and again, as a cron fleet does.
            let job = &jobs[(i + (r % JOBS_PER_NODE) * 50) % jobs.len()];
            let failed = (i + r).is_multiple_of(5);
            let at = now - chrono::Duration::seconds((r * 300 + i) as i64);
            RunRecord {
                run_id: Uuid::now_v7(),
                job: job.clone(),
                job_revision: 1,
                node_id,
                hostname: hostname.clone(),
                ips: vec![ip],
                trigger: Trigger::Cron,
                attempt: 0,
                invocation_id: None,
                params: Default::default(),
                command: format!("echo {job}"),
                planned_at: Some(at),
                started_at: Some(at),
                ended_at: Some(at + chrono::Duration::milliseconds(40)),
                status: if failed {
                    RunStatus::Failed
                } else {
                    RunStatus::Ok
                },
                exit_code: Some(if failed { 2 } else { 0 }),
                signal: None,
                error: failed.then(|| "exit status 2".to_string()),
                output: format!("{job} on {hostname}\n"),
                output_truncated: false,
                output_bytes: 20,
                stderr_tail: String::new(),
                rusage: None,
                notes: Vec::new(),
            }
        })
        .collect();
    let batch = RunBatch {
        node_id,
        runs: records,
    };
    retry(|| agent.post_runs(&batch)).await?;
    Ok(())
}

/// Signs in like a browser: the login form's nonce cookie and CSRF field, then the form post.
/// Returns the `Cookie` header value of the session.
async fn login(url: &str, token: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let form = http.get(format!("{url}/ui/login")).send().await?;
    let nonce = set_cookie(&form, "op_login").context("no op_login cookie")?;
    let html = form.text().await?;
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .context("no csrf field on the login page")?
        .to_string();
    let resp = http
        .post(format!("{url}/ui/login"))
        .header("cookie", format!("op_login={nonce}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&next=%2Fui&token={}", encode(token)))
        .send()
        .await?;
    let session = set_cookie(&resp, "op_session")
        .with_context(|| format!("login refused ({})", resp.status()))?;
    Ok(format!("op_session={session}"))
}

fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}
