//! Cron scheduling: fire counts and the concurrency policies.

use std::time::Duration;

use chrono::{DateTime, Utc};
use op_proto::{RunRecord, RunStatus, Trigger};
use serde_json::json;

use crate::support::{Agent, wait_until};

fn started(r: &RunRecord) -> DateTime<Utc> {
    r.started_at.expect("started")
}

#[tokio::test]
async fn every_second_for_ten_seconds_fires_nine_to_eleven_times() {
    let agent = Agent::start();
    agent.write_job(
        "tick",
        &json!({"JobName": "tick", "Command": "true", "CronExpr": "*/1 * * * * * *"}),
    );
    wait_until(Duration::from_secs(20), "first fire", || async {
        !agent.runs("tick").await.is_empty()
    })
    .await;
    let first = started(agent.runs("tick").await.last().unwrap());
    let end = first + chrono::Duration::seconds(10);
    wait_until(Duration::from_secs(30), "ten seconds of fires", || async {
        Utc::now() > end + chrono::Duration::seconds(1)
    })
    .await;
    let runs = agent.runs("tick").await;
    let in_window: Vec<_> = runs
        .iter()
        .filter(|r| r.trigger == Trigger::Cron && started(r) >= first && started(r) < end)
        .collect();
    assert!(
        (9..=11).contains(&in_window.len()),
        "{} fires in 10 s",
        in_window.len()
    );
    assert!(in_window.iter().all(|r| r.status == RunStatus::Ok));
    // Each run was planned on a whole second.
    assert!(
        in_window
            .iter()
            .all(|r| r.planned_at.unwrap().timestamp_subsec_millis() == 0)
    );
}

#[tokio::test]
async fn forbid_skips_and_counts_and_never_overlaps() {
    let agent = Agent::start();
    agent.write_job(
        "slow",
        &json!({"JobName": "slow", "Command": "sleep 3", "CronExpr": "*/1 * * * * * *"}),
    );
    wait_until(Duration::from_secs(40), "three finished runs", || async {
        agent
            .runs("slow")
            .await
            .iter()
            .filter(|r| r.status == RunStatus::Ok)
            .count()
            >= 3
    })
    .await;
    let status = agent.status().await;
    let skipped = status["stats"]["skipped_fires"].as_u64().unwrap();
    assert!(skipped >= 4, "skips counted: {skipped}");
    let metrics = agent.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("op_agent_skipped_fires_total"),
        "{metrics}"
    );

    let mut runs: Vec<RunRecord> = agent
        .runs("slow")
        .await
        .into_iter()
        .filter(|r| r.status != RunStatus::Skipped)
        .collect();
    runs.sort_by_key(started);
    for pair in runs.windows(2) {
        let end = pair[0]
            .ended_at
            .expect("earlier run ended before the next started");
        assert!(
            started(&pair[1]) >= end,
            "overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    // Skips are also visible as records (the first one per blocking run).
    assert!(
        agent
            .runs("slow")
            .await
            .iter()
            .any(|r| r.status == RunStatus::Skipped)
    );
}

#[tokio::test]
async fn replace_kills_the_old_run_first() {
    let agent = Agent::start();
    agent.write_job(
        "replacer",
        &json!({
            "JobName": "replacer",
            "Command": "sleep 1000",
            "CronExpr": "*/2 * * * * * *",
            "Concurrency": "replace",
            "KillGrace": 1,
        }),
    );
    wait_until(Duration::from_secs(30), "a replaced run", || async {
        agent
            .runs("replacer")
            .await
            .iter()
            .any(|r| r.status == RunStatus::Killed)
    })
    .await;
    let mut runs = agent.runs("replacer").await;
    runs.sort_by_key(started);
    let killed = runs
        .iter()
        .position(|r| r.status == RunStatus::Killed)
        .unwrap();
    let old = &runs[killed];
    assert!(
        old.error.as_deref().unwrap().contains("replaced"),
        "{old:?}"
    );
    let next = runs.get(killed + 1).expect("the replacing run");
    assert!(
        started(next) >= old.ended_at.unwrap(),
        "new run started before the old one ended"
    );
    // Never two alive at once.
    let running = runs
        .iter()
        .filter(|r| r.status == RunStatus::Running)
        .count();
    assert!(running <= 1);
}

#[tokio::test]
async fn failed_scheduled_runs_are_retried() {
    let agent = Agent::start();
    agent.write_job(
        "flaky",
        &json!({"JobName": "flaky", "Command": "echo try; exit 1", "OnceJob": 1, "Retries": 2, "RetryDelay": 1}),
    );
    wait_until(
        Duration::from_secs(30),
        "first run and two retries",
        || async {
            agent
                .runs("flaky")
                .await
                .iter()
                .filter(|r| r.status == RunStatus::Failed)
                .count()
                == 3
        },
    )
    .await;
    let mut runs = agent.runs("flaky").await;
    runs.sort_by_key(|r| r.attempt);
    let shape: Vec<(Trigger, u32)> = runs.iter().map(|r| (r.trigger, r.attempt)).collect();
    assert_eq!(
        shape,
        vec![(Trigger::Once, 0), (Trigger::Retry, 1), (Trigger::Retry, 2)]
    );
    // RetryDelay is honoured between attempts.
    let gap = started(&runs[1]) - runs[0].ended_at.unwrap();
    assert!(gap >= chrono::Duration::milliseconds(900), "{gap}");
    // No retry beyond Retries: schedule.rs steps the scheduler's clock a day past the last one.
}

#[tokio::test]
async fn an_edit_keeps_the_current_run_and_the_next_fire_uses_the_new_revision() {
    let agent = Agent::start();
    let job =
        |cmd: &str| json!({"JobName": "edited", "Command": cmd, "CronExpr": "*/1 * * * * * *"});
    agent.write_job("edited", &job("sleep 3; echo v1"));
    wait_until(Duration::from_secs(20), "a run in progress", || async {
        agent
            .runs("edited")
            .await
            .iter()
            .any(|r| r.status == RunStatus::Running)
    })
    .await;
    let in_progress = agent
        .runs("edited")
        .await
        .into_iter()
        .find(|r| r.status == RunStatus::Running)
        .unwrap();
    agent.write_job("edited", &job("echo v2"));
    agent.wait_job("edited", Some(2)).await;
    wait_until(
        Duration::from_secs(20),
        "a run of the new revision",
        || async {
            agent
                .runs("edited")
                .await
                .iter()
                .any(|r| r.job_revision == 2 && r.status == RunStatus::Ok)
        },
    )
    .await;
    let old = agent.run(&in_progress.run_id.to_string()).await;
    assert_eq!(
        old.status,
        RunStatus::Ok,
        "the edit must not kill the current run: {old:?}"
    );
    assert_eq!(old.output, "v1\n");
    assert_eq!(old.job_revision, 1);
    let new = agent
        .runs("edited")
        .await
        .into_iter()
        .find(|r| r.job_revision == 2 && r.status == RunStatus::Ok)
        .unwrap();
    assert_eq!(new.output, "v2\n");
}

// Fires missed while the agent was down (counted, not caught up): schedule.rs, on the scheduler's
// clock, with the agent down for an hour.
