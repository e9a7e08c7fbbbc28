//! Graceful shutdown: SIGTERM stops scheduling, lets running jobs finish within the grace, kills
//! the rest and records them.

use std::time::Duration;

use op_proto::RunStatus;
use serde_json::json;

use crate::support::{Agent, Options, processes_with_env, wait_until};

#[tokio::test]
async fn sigterm_waits_for_short_runs_and_kills_long_ones() {
    let mut agent = Agent::start_with(Options {
        extra_args: vec!["--shutdown-grace".into(), "3s".into()],
        ..Default::default()
    });
    agent.write_job(
        "short",
        &json!({"JobName": "short", "Command": "sleep 1; echo finished"}),
    );
    agent.write_job(
        "long",
        &json!({"JobName": "long", "Command": "sleep 1000", "KillGrace": 1}),
    );
    agent.wait_job("short", None).await;
    agent.wait_job("long", None).await;
    let long = agent.invoke_async("long", &json!({})).await;
    let short = agent.invoke_async("short", &json!({})).await;
    wait_until(Duration::from_secs(10), "both running", || async {
        !processes_with_env("OP_RUN_ID", &long).is_empty()
            && !processes_with_env("OP_RUN_ID", &short).is_empty()
    })
    .await;

    let code = agent.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", agent.log());
    assert!(
        processes_with_env("OP_RUN_ID", &long).is_empty(),
        "long run left behind"
    );

    agent.restart();
    let long_run = agent.run(&long).await;
    assert_eq!(long_run.status, RunStatus::Killed, "{long_run:?}");
    assert!(long_run.error.unwrap().contains("shut down"));
    let short_run = agent.run(&short).await;
    assert_eq!(short_run.status, RunStatus::Ok);
    assert_eq!(short_run.output, "finished\n");
    // Nothing was left in flight, so nothing is reported lost.
    let metrics = agent.get("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains("status=\"lost\""), "{metrics}");
}
