//! Once-jobs across crashes: the real binary, `kill -9`, restart.

use std::time::Duration;

use op_proto::{RunStatus, Trigger};
use serde_json::json;

use crate::support::{Agent, processes_with_env, wait_until};

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn once_runs(agent: &Agent, job: &str) -> Vec<op_proto::RunRecord> {
    agent
        .runs(job)
        .await
        .into_iter()
        .filter(|r| r.trigger == Trigger::Once)
        .collect()
}

#[tokio::test]
async fn once_job_runs_once_survives_kill9_and_reruns_on_new_revision() {
    let mut agent = Agent::start();
    let count = agent.path("count");
    let job = |word: &str| {
        json!({
            "JobName": "init",
            "Command": format!("echo {word} >> {}", count.display()),
            "OnceJob": 1,
        })
    };
    agent.write_job("init", &job("first"));
    wait_until(Duration::from_secs(20), "once-job ran", || async {
        once_runs(&agent, "init")
            .await
            .iter()
            .any(|r| r.status == RunStatus::Ok)
    })
    .await;
    assert_eq!(lines(&count), 1);

    agent.kill9();
    agent.restart();
    agent.wait_job("init", Some(1)).await;
    // That it never runs again, however long the agent runs on, is schedule.rs's (on the
    // scheduler's clock); the binary's part is that the ledger survives `kill -9`.
    assert_eq!(lines(&count), 1, "once-job ran again after restart");
    assert_eq!(once_runs(&agent, "init").await.len(), 1);

    agent.write_job("init", &job("second"));
    agent.wait_job("init", Some(2)).await;
    wait_until(Duration::from_secs(20), "new revision ran", || async {
        lines(&count) == 2
    })
    .await;
    wait_until(Duration::from_secs(10), "recorded", || async {
        once_runs(&agent, "init")
            .await
            .iter()
            .filter(|r| r.status == RunStatus::Ok)
            .count()
            == 2
    })
    .await;
    assert_eq!(lines(&count), 2);
}

#[tokio::test]
async fn kill9_during_a_once_run_reports_lost_and_never_reruns() {
    let mut agent = Agent::start();
    let started = agent.path("started");
    agent.write_job(
        "migrate",
        &json!({
            "JobName": "migrate",
            "Command": format!("echo go >> {}; echo partial output; sleep 1000", started.display()),
            "OnceJob": 1,
        }),
    );
    wait_until(Duration::from_secs(20), "once-job started", || async {
        lines(&started) == 1
    })
    .await;
    let run = once_runs(&agent, "migrate").await.pop().unwrap();
    assert_eq!(run.status, RunStatus::Running);
    let id = run.run_id.to_string();

    agent.kill9();
    // Its process survives the agent (own session)...
    assert!(!processes_with_env("OP_RUN_ID", &id).is_empty());
    agent.restart();
    // ...and the new agent reports the run lost and cleans the leftovers up.
    let lost = agent.run(&id).await;
    assert_eq!(lost.status, RunStatus::Lost, "{lost:?}");
    assert!(lost.output.contains("partial output"));
    wait_until(
        Duration::from_secs(10),
        "leftover processes killed",
        || async { processes_with_env("OP_RUN_ID", &id).is_empty() },
    )
    .await;
    agent.wait_job("migrate", Some(1)).await;
    // Never re-run later either: schedule.rs, on the scheduler's clock.
    assert_eq!(lines(&started), 1, "once-job re-ran after a crash");
    assert_eq!(once_runs(&agent, "migrate").await.len(), 1);
}

#[tokio::test]
async fn finished_runs_survive_kill9_in_the_outbox() {
    // A managed agent whose manager is unreachable runs the job set it cached last time.
    let mut agent = Agent::start_with(crate::support::Options {
        managers: vec!["http://127.0.0.1:9".into()],
        ..Default::default()
    });
    agent.kill9();
    let cached = json!({
        "version": 1, "saved_at": "2026-11-25T08:00:00Z", "source": "manager", "index": 7,
        "jobs": [{"revision": 1, "spec": {"JobName": "quick", "Command": "echo done"}}]
    });
    // The first start may have been killed before it created its state dir.
    std::fs::create_dir_all(agent.path("state")).unwrap();
    std::fs::write(agent.path("state").join("desired.json"), cached.to_string()).unwrap();
    agent.restart();
    agent.wait_job("quick", None).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(agent.invoke_sync("quick", &json!({})).await.run_id);
    }
    assert_eq!(agent.status().await["stats"]["outbox_depth"], 3);
    agent.kill9();
    agent.restart();
    let status = agent.status().await;
    assert_eq!(status["stats"]["outbox_depth"], 3);
    assert_eq!(status["mode"], "managed");
    for id in ids {
        assert_eq!(agent.run(&id.to_string()).await.status, RunStatus::Ok);
    }
}
