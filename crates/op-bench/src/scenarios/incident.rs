//! `incident`: what a job failing on the whole fleet at once costs the manager, and how soon the
//! operator hears of it (issue 19: "time from the last failing host's result to the webhook's
//! arrival (p50, p99), and the manager's CPU for 10,000 simulated agents failing one job at once").
//!
//! N simulated agents register and park; a cron job selecting every host is saved, and a webhook
//! rule for `run.failed` and `run.recovered` points at a receiver in this process. Each round is one
//! fire of that job: every agent reports its run of the fire at once (one record, one post, as a
//! real agent's outbox does), alternately all failing the same way (the incident opens: one
//! `run.failed`) and all succeeding (it closes: one `run.recovered`). The round's latency is from
//! the last acknowledged post to the webhook's arrival; its CPU is the manager's user+sys time from
//! the first post to the arrival.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use op_proto::agent::RunBatch;
use op_proto::events::{Channel, EventKind, NotifyFilter, NotifyRule};
use op_proto::{RunRecord, RunStatus};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::fleet::{Fleet, SimAgent, runs};
use crate::limits;
use crate::manager::ManagerProcess;
use crate::procfs::{cpu_secs, rss_kib};
use crate::report::{Figure, spread};
use crate::scenarios::propagation::ramp_limit;

/// The job every agent fails and fixes.
const JOB: &str = "bench-incident";
/// Posts in flight at once. Each needs a connection beside the agent's parked sync call, in this
/// process and in the manager: 10,000 agents all posting at the same instant would need 20,000
/// open files in each, beyond this machine's hard limit (20,000).
const POSTS_IN_FLIGHT: usize = 2000;
/// How long one round may take before the scenario gives up on its webhook.
const ROUND_LIMIT: Duration = Duration::from_secs(120);

/// One webhook request: when it arrived and the event kind its body names.
struct Arrival {
    at: Instant,
    kind: String,
}

/// A webhook receiver on 127.0.0.1:0 answering 200 to every POST; each request's arrival goes to
/// the returned channel.
async fn receiver() -> anyhow::Result<(String, mpsc::UnboundedReceiver<Arrival>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some((n, v)) = h.split_once(':')
                            && n.trim().eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let at = Instant::now();
                    let kind = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(String::from))
                        .unwrap_or_default();
                    let _ = tx.send(Arrival { at, kind });
                    if write
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok((url, rx))
}

/// `agent`'s run of the fire at `planned`: failed with the same stderr on every host, or ok.
fn fire_record(agent: &SimAgent, planned: DateTime<Utc>, failing: bool) -> RunRecord {
    let mut r = runs::record(agent, 0);
    r.job = JOB.into();
    r.planned_at = Some(planned);
    r.started_at = Some(planned);
    r.ended_at = Some(Utc::now());
    r.output = "starting backup\n".into();
    r.output_bytes = r.output.len() as u64;
    if failing {
        r.status = RunStatus::Failed;
        r.exit_code = Some(3);
        r.error = Some("exit status 3".into());
        r.stderr_tail = "pg_dump: error: connection to server failed\n".into();
    }
    r
}

pub async fn run(
    manager_bin: &Path,
    manager_args: &[String],
    agents: usize,
    rounds: usize,
) -> anyhow::Result<Vec<Figure>> {
    anyhow::ensure!(agents > 0, "--agents must be at least 1");
    anyhow::ensure!(
        rounds >= 2,
        "--rounds must be at least 2 (a failure and a recovery)"
    );
    limits::check_fleet(agents + POSTS_IN_FLIGHT.min(agents))?;
    let manager = ManagerProcess::start(manager_bin, manager_args).await?;
    let pid = manager.pid();
    let task = format!(
        r#"{{"JobName":"{JOB}","Command":"pg_dump mydb > /backup/mydb.sql","CronExpr":"0 0 3 * * * *"}}"#
    );
    manager.admin.save_job_text(JOB, &task).await?;
    let (url, mut arrivals) = receiver().await?;
    manager
        .admin
        .put_notify_rule(&NotifyRule {
            name: "bench".into(),
            filter: NotifyFilter {
                kinds: vec![EventKind::RunFailed, EventKind::RunRecovered],
                ..NotifyFilter::default()
            },
            channel: Channel::Webhook {
                url,
                template: None,
                secret_file: None,
            },
        })
        .await?;
    let fleet = Fleet::start(&manager, agents).await?;
    fleet.wait_parked(&manager, ramp_limit(agents)).await?;

    let mut latency_ms = Vec::new();
    let mut post_ms = Vec::new();
    let mut cpu_per_round = Vec::new();
    // Fires of a 03:00 job on successive days, far from today so no real schedule interferes.
    let first_fire = DateTime::parse_from_rfc3339("2030-01-01T03:00:00Z")?.with_timezone(&Utc);
    for round in 0..rounds {
        let failing = round % 2 == 0;
        let want = if failing {
            "run.failed"
        } else {
            "run.recovered"
        };
        let planned = first_fire + chrono::Duration::days(round as i64);
        let cpu_start = cpu_secs(pid)?;
        let started = Instant::now();
        let mut posts = JoinSet::new();
        let gate = Arc::new(tokio::sync::Semaphore::new(POSTS_IN_FLIGHT));
        for (i, sim) in fleet.agents.iter().enumerate() {
            let gate = gate.clone();
            let client = fleet.client_for(i).clone();
            let batch = RunBatch {
                node_id: sim.node_id,
                runs: vec![fire_record(sim, planned, failing)],
            };
            posts.spawn(async move {
                let _slot = gate.acquire_owned().await?;
                let mut failures = 0u32;
                loop {
                    match client.post_runs(&batch).await {
                        Ok(_) => return Ok(Instant::now()),
                        Err(_) if failures < 20 => {
                            failures += 1;
                            backoff(failures).await;
                        }
                        Err(e) => return Err(anyhow::anyhow!("posting a run: {e}")),
                    }
                }
            });
        }
        let mut last_ack = started;
        while let Some(done) = posts.join_next().await {
            let acked = done?.map_err(|e| {
                anyhow::anyhow!("round {round}: {e:#}\nmanager log:\n{}", manager.log_tail())
            })?;
            last_ack = last_ack.max(acked);
        }
        post_ms.push((last_ack - started).as_secs_f64() * 1e3);
        let deadline = tokio::time::Instant::now() + ROUND_LIMIT;
        let arrival = match tokio::time::timeout_at(deadline, arrivals.recv()).await {
            Ok(Some(a)) if a.kind == want => a,
            Ok(Some(a)) => {
                anyhow::bail!("round {round}: the receiver got {:?}, not {want}", a.kind)
            }
            Ok(None) => anyhow::bail!("the receiver stopped"),
            Err(_) => anyhow::bail!(
                "round {round}: no {want} webhook within {}s of the last result; manager log:\n{}",
                ROUND_LIMIT.as_secs(),
                manager.log_tail()
            ),
        };
        latency_ms.push(arrival.at.saturating_duration_since(last_ack).as_secs_f64() * 1e3);
        cpu_per_round.push(cpu_secs(pid)? - cpu_start);
    }
    // Nothing more than one event per round may arrive: wait briefly for a stray repeat.
    let extra = tokio::time::timeout(Duration::from_secs(2), arrivals.recv())
        .await
        .ok()
        .flatten();
    let (_, rss_peak) = rss_kib(pid)?;
    let errors = fleet
        .counters
        .errors
        .load(std::sync::atomic::Ordering::Relaxed);
    fleet.stop().await;
    manager.stop()?;
    anyhow::ensure!(
        extra.is_none(),
        "the receiver got an event beyond one per round: {:?}",
        extra.map(|a| a.kind)
    );

    let cond = format!(
        "{agents} simulated agents reporting one fire of one job at once, {rounds} rounds \
         alternating all-failed (run.failed) and all-ok (run.recovered), at most {POSTS_IN_FLIGHT} \
         posts in flight, webhook receiver in the bench process, single-node raft, manager {} build, {errors} sim errors",
        crate::binaries::profile(manager_bin)
    );
    let mut figures = spread(
        "incident_webhook_latency",
        &latency_ms,
        "ms",
        &format!("{cond}; last host's result acknowledged → webhook received"),
    );
    figures.extend(spread(
        "incident_post_all",
        &post_ms,
        "ms",
        &format!("{cond}; first post → every host's result acknowledged"),
    ));
    let mean_cpu = cpu_per_round.iter().sum::<f64>() / cpu_per_round.len() as f64;
    figures.extend([
        Figure::new(
            "incident_manager_cpu_per_fire",
            mean_cpu,
            "s",
            format!("{cond}; manager user+sys from the first post to the webhook, mean per round"),
        ),
        Figure::new(
            "manager_rss_peak",
            rss_peak as f64 / 1024.0,
            "MiB",
            format!("{cond}; VmHWM since start"),
        ),
    ]);
    Ok(figures)
}

/// The pause before re-posting after the `failures`-th failed post (a real agent backs off too).
async fn backoff(failures: u32) {
    tokio::time::sleep(Duration::from_millis(50 << failures.min(6))).await;
}
