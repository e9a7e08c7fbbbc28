//! Standalone mode: the schedule follows the task files in `--jobs-dir`.

use std::time::Duration;

use op_proto::RunStatus;
use serde_json::json;

use crate::support::{Agent, wait_until};

#[tokio::test]
async fn the_schedule_follows_additions_edits_and_removals() {
    let agent = Agent::start();
    // A broken file is reported and skipped; the others still load.
    std::fs::write(
        agent.jobs.join("broken.json"),
        "{\"JobName\": \"broken\", \"Comand\": \"x\"}",
    )
    .unwrap();
    agent.write_job(
        "beat",
        &json!({"JobName": "beat", "Command": "echo v1", "CronExpr": "*/1 * * * * * *"}),
    );
    wait_until(Duration::from_secs(20), "added job fires", || async {
        agent.runs("beat").await.iter().any(|r| r.output == "v1\n")
    })
    .await;
    assert!(
        agent.log().contains("Comand"),
        "the bad key is named in the log"
    );

    agent.write_job(
        "beat",
        &json!({"JobName": "beat", "Command": "echo v2", "CronExpr": "*/1 * * * * * *"}),
    );
    wait_until(
        Duration::from_secs(20),
        "edited job fires with the new revision",
        || async {
            agent
                .runs("beat")
                .await
                .iter()
                .any(|r| r.output == "v2\n" && r.job_revision == 2)
        },
    )
    .await;

    agent.remove_job("beat");
    wait_until(Duration::from_secs(20), "removed job dropped", || async {
        agent.job_revision("beat").await.is_none()
    })
    .await;
    // A run that was starting at removal finishes; that the removed job never fires again is
    // schedule.rs's, on the scheduler's clock.
    wait_until(Duration::from_secs(20), "no run in progress", || async {
        agent
            .runs("beat")
            .await
            .iter()
            .all(|r| r.status != RunStatus::Running)
    })
    .await;
}

#[tokio::test]
async fn a_replaced_jobs_dir_is_followed() {
    let agent = Agent::start();
    agent.write_job("a", &json!({"JobName": "a", "Command": "true"}));
    agent.wait_job("a", None).await;
    // Replace the whole directory, as a config-management tool might.
    let old = agent.path("jobs-old");
    std::fs::rename(&agent.jobs, &old).unwrap();
    std::fs::create_dir(&agent.jobs).unwrap();
    agent.write_job("b", &json!({"JobName": "b", "Command": "true"}));
    agent.wait_job("b", None).await;
    wait_until(
        Duration::from_secs(20),
        "job of the old directory dropped",
        || async { agent.job_revision("a").await.is_none() },
    )
    .await;
}
