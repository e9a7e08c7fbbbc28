//! Manager clusters of real `op-manager` processes (op-testkit's [`Cluster`]) with the default
//! raft timings:
//! - `cluster-failover`: a client saves jobs in a loop through every member; the leader is
//!   `kill -9`ed; the figure is the time from the kill to the first acknowledged save that was
//!   sent after it. The killed member is restarted and caught up before the next round.
//! - `cluster-ingest`: simulated agents post run batches (through every member in turn) for a
//!   while; the figure is records stored per second, for a cluster of N and for one manager.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use op_client::Client;
use op_proto::agent::{RegisterRequest, RunBatch};
use op_proto::{API_VERSION, JobSpec, RunRecord, RunStatus, Trigger};
use op_testkit::Cluster;
use uuid::Uuid;

use crate::report::{Figure, percentile};

const LONG: Duration = Duration::from_secs(60);

pub async fn failover(members: usize, rounds: usize) -> anyhow::Result<Vec<Figure>> {
    let mut c = Cluster::start(members, &[]).await;
    let clients: Vec<Client> = c
        .api_urls()
        .iter()
        .map(|u| {
            Client::new(u, Some(&c.admin_token)).map(|cl| cl.with_timeout(Duration::from_secs(30)))
        })
        .collect::<Result<_, _>>()?;
    // (sent, acknowledged) of every acknowledged save.
    let acks: Arc<std::sync::Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acks, stop) = (acks.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut n, mut at) = (0u64, 0usize);
            while !stop.load(Ordering::SeqCst) {
                let spec =
                    JobSpec::from_task_json(&format!(r#"{{"JobName":"w-{n}","Command":"true"}}"#))
                        .expect("valid job");
                let sent = Instant::now();
                match clients[at % clients.len()].save_job(&spec).await {
                    Ok(_) => {
                        acks.lock().unwrap().push((sent, Instant::now()));
                        n += 1;
                    }
                    Err(_) => {
                        at += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
    };
    let mut ms = Vec::new();
    for _ in 0..rounds {
        let leader = c.wait_leader(LONG).await;
        let killed = Instant::now();
        c.members[leader].kill9();
        let deadline = killed + LONG;
        let back = loop {
            let first = acks
                .lock()
                .unwrap()
                .iter()
                .find(|(sent, _)| *sent > killed)
                .map(|(_, at)| *at);
            if let Some(at) = first {
                break at - killed;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no write accepted within {LONG:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        ms.push(back.as_secs_f64() * 1000.0);
        c.restart(leader);
        c.wait_caught_up(LONG).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await?;
    let cond = format!(
        "{members} managers, default raft timings (heartbeat 200ms, election 600-1200ms), kill -9 of the leader, {rounds} rounds: {}",
        ms.iter()
            .map(|m| format!("{m:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(vec![
        Figure::new("failover_p50", percentile(&ms, 50.0), "ms", cond.clone()),
        Figure::new("failover_max", percentile(&ms, 100.0), "ms", cond),
    ])
}

pub async fn ingest(
    members: usize,
    senders: usize,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let mut rates = Vec::new();
    for n in [members, 1] {
        let c = Cluster::start(n, &[]).await;
        let leader = c.wait_leader(LONG).await;
        let pids: Vec<i32> = c
            .members
            .iter()
            .map(|m| m.pid().map(|p| p as i32).context("a member runs"))
            .collect::<anyhow::Result<_>>()?;
        let cpu = |pid: i32| crate::procfs::cpu_secs(pid);
        let before: Vec<f64> = pids
            .iter()
            .map(|p| cpu(*p))
            .collect::<anyhow::Result<_>>()?;
        let (stored, elapsed) = ingest_on(&c, senders, batch, duration).await?;
        let after: Vec<f64> = pids
            .iter()
            .map(|p| cpu(*p))
            .collect::<anyhow::Result<_>>()?;
        let per_record = |i: usize| (after[i] - before[i]) * 1e6 / stored.max(1) as f64;
        let rate = stored as f64 / elapsed.as_secs_f64();
        rates.push(rate);
        let conditions = format!(
            "{senders} simulated agents posting batches of {batch} runs for {duration:?}, spread over {n} manager(s)"
        );
        figures.push(Figure::new(
            &format!("run_ingest_{n}_managers"),
            rate,
            "records/s",
            conditions.clone(),
        ));
        if n == 1 {
            figures.push(Figure::new(
                "ingest_cpu_per_record_single",
                per_record(0),
                "µs",
                conditions,
            ));
            continue;
        }
        let followers: Vec<usize> = (0..n).filter(|i| *i != leader).collect();
        let follower_mean =
            followers.iter().map(|i| per_record(*i)).sum::<f64>() / followers.len().max(1) as f64;
        figures.push(Figure::new(
            "ingest_cpu_per_record_leader",
            per_record(leader),
            "µs",
            conditions.clone(),
        ));
        figures.push(Figure::new(
            "ingest_cpu_per_record_follower",
            follower_mean,
            "µs",
            format!("{conditions}; the mean of {} followers", followers.len()),
        ));
        figures.push(Figure::new(
            "ingest_cpu_per_record_cluster",
            (0..n).map(per_record).sum(),
            "µs",
            conditions,
        ));
    }
    figures.push(Figure::new(
        "run_ingest_ratio",
        rates[0] / rates[1].max(f64::MIN_POSITIVE),
        "",
        format!("records/s of {members} managers over records/s of one, the same senders"),
    ));
    Ok(figures)
}

async fn ingest_on(
    c: &Cluster,
    senders: usize,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<(u64, Duration)> {
    // The manager stores only runs of jobs selected for their node: save the one they report.
    Client::new(&c.api_urls()[0], Some(&c.admin_token))?
        .save_job(&JobSpec::from_task_json(
            r#"{"JobName":"bench","Command":"true","CronExpr":"0 0 */6 * * * *"}"#,
        )?)
        .await?;
    let stored = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let url = c.api_urls()[s % c.members.len()].clone();
        let client = Client::new(&url, Some(&c.agent_token))?;
        let node_id = Uuid::new_v4();
        let hostname = format!("sim-{s}");
        let resp = client
            .register(&RegisterRequest {
                api_version: API_VERSION,
                node_id,
                hostname: hostname.clone(),
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
        let client = match resp.node_token {
            Some(t) => client.with_token(&t),
            None => client,
        };
        let stored = stored.clone();
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < duration {
                let now = chrono::Utc::now();
                let runs = (0..batch)
                    .map(|_| RunRecord {
                        run_id: Uuid::now_v7(),
                        job: "bench".into(),
                        job_revision: 1,
                        node_id,
                        hostname: hostname.clone(),
                        ips: vec![],
                        trigger: Trigger::Cron,
                        attempt: 0,
                        invocation_id: None,
                        params: Default::default(),
                        command: "true".into(),
                        planned_at: Some(now),
                        started_at: Some(now),
                        ended_at: Some(now),
                        status: RunStatus::Ok,
                        exit_code: Some(0),
                        signal: None,
                        error: None,
                        output: "ok\n".into(),
                        output_truncated: false,
                        output_bytes: 3,
                        stderr_tail: String::new(),
                        rusage: None,
                        notes: Vec::new(),
                    })
                    .collect();
                let ack = client.post_runs(&RunBatch { node_id, runs }).await?;
                stored.fetch_add(ack.accepted as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((stored.load(Ordering::Relaxed), start.elapsed()))
}
