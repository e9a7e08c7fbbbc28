//! Measures the manager on this machine (in process, release build recommended):
//! run batches ingested per second through raft on one node, and save → sync-return latency for
//! parked agents. `cargo run --release -p op-manager --example measure -- [AGENTS] [BATCHES]`.
//! op-bench will take these over; this is the quick check the manager issue asked for.

use std::time::{Duration, Instant};

use op_client::Client;
use op_manager::config::{ConfigArgs, RawConfig};
use op_manager::{Config, Listeners};
use op_proto::agent::{Heartbeat, RegisterRequest, RunBatch};
use op_proto::{API_VERSION, RunRecord, RunStatus, Trigger};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn heartbeat(node_id: Uuid) -> Heartbeat {
    Heartbeat {
        node_id,
        agent_version: "bench".into(),
        load: None,
        running: vec![],
        packages: vec![],
        stats: Default::default(),
        degraded: None,
        sent_at: None,
        received: Vec::new(),
        facts: None,
        peer_url: None,
    }
}

fn record(node_id: Uuid, i: usize) -> RunRecord {
    let now = chrono::Utc::now();
    RunRecord {
        run_id: Uuid::now_v7(),
        job: "cycleTest.py".into(),
        job_revision: 1,
        node_id,
        hostname: "bench-1".into(),
        ips: vec!["127.0.0.2".parse().unwrap()],
        trigger: Trigger::Cron,
        attempt: 0,
        invocation_id: None,
        params: Default::default(),
        command: "python cycleTest.py".into(),
        planned_at: Some(now),
        started_at: Some(now),
        ended_at: Some(now),
        status: RunStatus::Ok,
        exit_code: Some(0),
        signal: None,
        error: None,
        output: format!("run {i}: {}\n", "x".repeat(200)),
        output_truncated: false,
        output_bytes: 210,
        stderr_tail: String::new(),
        rusage: None,
        notes: Vec::new(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let agents: usize = args.get(1).map_or(Ok(100), |s| s.parse())?;
    let batches: usize = args.get(2).map_or(Ok(200), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let cli = ConfigArgs {
        data_dir: Some(dir.path().to_path_buf()),
        listen: Some("127.0.0.1:0".parse()?),
        raft_listen: Some("127.0.0.1:0".parse()?),
        sync_wait: Some("10s".into()),
        ..ConfigArgs::default()
    };
    let config = Config::resolve(&cli, RawConfig::default())?;
    let listeners = Listeners::bind(&config)?;
    let shutdown = CancellationToken::new();
    let running = op_manager::start(config, listeners, shutdown.clone()).await?;
    let token = |f: &str| std::fs::read_to_string(dir.path().join(f)).map(|s| s.trim().to_string());
    let admin = Client::new(&running.api_url, Some(&token("admin.token")?))?;
    let agent = Client::new(&running.api_url, Some(&token("agent.token")?))?;

    // The manager stores only runs of jobs selected for their node.
    admin
        .save_job_text(
            "cycleTest.py",
            r#"{"JobName":"cycleTest.py","Command":"python cycleTest.py","CronExpr":"0 0 */6 * * * *"}"#,
        )
        .await?;
    // 1. Run ingestion: batches of 500 through raft, 4 posting concurrently.
    let node = Uuid::new_v4();
    let resp = agent
        .register(&RegisterRequest {
            api_version: API_VERSION,
            node_id: node,
            hostname: "bench-1".into(),
            ips: vec!["127.0.0.2".parse()?],
            labels: Default::default(),
            agent_version: "bench".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            machine_id: String::new(),
            reset: None,
            capabilities: Vec::new(),
        })
        .await?;
    let agent_one = agent.with_token(resp.node_token.as_deref().unwrap_or_default());
    let all: Vec<RunBatch> = (0..batches)
        .map(|_| RunBatch {
            node_id: node,
            runs: (0..500).map(|i| record(node, i)).collect(),
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in all.chunks(batches.div_ceil(4)) {
        let chunk = chunk.to_vec();
        let agent = agent_one.clone();
        tasks.push(tokio::spawn(async move {
            for b in &chunk {
                agent.post_runs(b).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let took = started.elapsed();
    let records = batches * 500;
    println!(
        "ingest: {batches} batches x 500 records = {records} in {:.2}s: {:.0} batches/s, {:.0} records/s (one node, through raft)",
        took.as_secs_f64(),
        batches as f64 / took.as_secs_f64(),
        records as f64 / took.as_secs_f64()
    );

    // 2. Save -> sync return, with `agents` parked long-polls.
    let mut ids = Vec::new();
    for i in 0..agents {
        let id = Uuid::new_v4();
        let resp = agent
            .register(&RegisterRequest {
                api_version: API_VERSION,
                node_id: id,
                hostname: format!("sim-{i}"),
                ips: vec![],
                labels: Default::default(),
                agent_version: "bench".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                machine_id: String::new(),
                reset: None,
                capabilities: Vec::new(),
            })
            .await?;
        ids.push((
            id,
            agent.with_token(resp.node_token.as_deref().unwrap_or_default()),
        ));
    }
    let mut latencies = Vec::new();
    for round in 0..20 {
        let mut parked = Vec::new();
        for (id, own) in &ids {
            let c = own.clone();
            let index = c.sync(0, 0, &heartbeat(*id)).await?.index;
            let id = *id;
            parked.push(tokio::spawn(async move {
                c.sync(index, 10, &heartbeat(id))
                    .await
                    .map(|_| Instant::now())
            }));
        }
        // Let every call park (the gauge says when).
        loop {
            let text = admin.metrics().await?;
            if text
                .lines()
                .any(|l| l == format!("op_manager_syncs_parked {agents}"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let saved = Instant::now();
        let task =
            format!(r#"{{"JobName":"j{round}","Command":"true","CronExpr":"*/10 * * * * * *"}}"#);
        admin.save_job_text(&format!("j{round}"), &task).await?;
        for p in parked {
            latencies.push(p.await??.duration_since(saved));
        }
    }
    latencies.sort();
    println!(
        "save -> sync return ({agents} parked agents x 20 saves): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    shutdown.cancel();
    running.wait().await?;
    Ok(())
}
