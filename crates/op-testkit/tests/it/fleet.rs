//! One manager and real agents: jobs reach the right hosts, runs come back exactly once, and both
//! sides survive the other going away (issue 4's scenarios).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use op_proto::api::TargetState;
use op_proto::{NodeStatus, RunStatus};
use op_testkit::{Manager, ManagerOptions, wait_until};

use crate::support::{LONG, fleet, job, local_runs, runs_of};

const LL_JSON: &str = include_str!("../../../op-proto/tests/data/seed/ll.json");

#[tokio::test]
async fn seed_once_job_runs_exactly_once_on_every_agent() {
    let m = Manager::start();
    let agents = fleet(&m, 3, &[]).await;
    let c = m.client();
    let saved = c.save_job_text("ls-l", LL_JSON).await.unwrap();
    let once = saved.once.expect("a once-job reports its selection");
    assert_eq!(once.selected.len(), 3, "{once:?}");

    wait_until(LONG, "3 runs of ls-l", || async {
        runs_of(&c, "ls-l").await.len() == 3
    })
    .await;
    let runs = runs_of(&c, "ls-l").await;
    let hosts: BTreeSet<_> = runs.iter().map(|r| r.hostname.clone()).collect();
    assert_eq!(hosts.len(), 3, "one run per host: {runs:?}");
    for r in &runs {
        assert_eq!(r.status, RunStatus::Ok, "{r:?}");
        assert!(
            r.output.starts_with("total "),
            "the /tmp listing: {:?}",
            r.output
        );
    }
    wait_until(LONG, "every once target done", || async {
        let t = c.once_targets("ls-l", None).await.unwrap();
        t.len() == 3 && t.iter().all(|t| t.state == TargetState::Done)
    })
    .await;
    // Nothing runs a second time, not even after the agents sync again. A barrier instead of a
    // pause: a later once-job runs on every agent only after it applied its job set again, with
    // ls-l in its ledger, and its run record travels behind any rerun of ls-l in the outbox.
    c.save_job(&job(
        r#"{"JobName":"once-after","Command":"echo after","OnceJob":1}"#,
    ))
    .await
    .unwrap();
    wait_until(LONG, "the later once-job ran on every agent", || async {
        let t = c.once_targets("once-after", None).await.unwrap();
        t.len() == 3 && t.iter().all(|t| t.state == TargetState::Done)
    })
    .await;
    assert_eq!(runs_of(&c, "ls-l").await.len(), 3);
    drop(agents);
}

#[tokio::test]
async fn cron_runs_flow_in_from_every_agent_and_hosts_are_selected_exactly() {
    let m = Manager::start();
    let _agents = fleet(&m, 3, &[]).await;
    let c = m.client();
    let t0 = Instant::now();
    c.save_job(&job(
        r#"{"JobName":"cycle","Command":"echo tick","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    // White 127.0.0.2 and 127.0.0.0/30 (= .2 and .3), black .3: only node-1. And never a
    // substring match: 127.0.0.2 must not select 127.0.0.20-style addresses.
    c.save_job(&job(
        r#"{"JobName":"picky","Command":"echo picked","CronExpr":"*/1 * * * * * *",
            "WhiteHosts":["127.0.0.2","127.0.0.0/30"],"BlackHosts":["127.0.0.3"]}"#,
    ))
    .await
    .unwrap();
    c.save_job(&job(
        r#"{"JobName":"by-name","Command":"echo named","CronExpr":"*/1 * * * * * *",
            "WhiteHosts":["node-3"]}"#,
    ))
    .await
    .unwrap();

    wait_until(LONG, "cycle runs from all three agents", || async {
        let hosts: BTreeSet<_> = runs_of(&c, "cycle")
            .await
            .into_iter()
            .map(|r| r.hostname)
            .collect();
        hosts.len() == 3
    })
    .await;
    // Save → first run on every agent: well under a second normally; asserted generously.
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );

    wait_until(LONG, "picky and by-name ran", || async {
        runs_of(&c, "picky").await.len() >= 3 && runs_of(&c, "by-name").await.len() >= 3
    })
    .await;
    let picky: BTreeSet<_> = runs_of(&c, "picky")
        .await
        .into_iter()
        .map(|r| r.hostname)
        .collect();
    assert_eq!(picky, BTreeSet::from(["node-1".to_string()]));
    let named: BTreeSet<_> = runs_of(&c, "by-name")
        .await
        .into_iter()
        .map(|r| r.hostname)
        .collect();
    assert_eq!(named, BTreeSet::from(["node-3".to_string()]));
}

#[tokio::test]
async fn manager_restart_keeps_everything_and_agents_reconnect() {
    let mut m = Manager::start();
    let agents = fleet(&m, 2, &[]).await;
    let c = m.client();
    c.save_job(&job(
        r#"{"JobName":"tick","Command":"echo t","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    wait_until(LONG, "runs stored", || async {
        runs_of(&c, "tick").await.len() >= 4
    })
    .await;
    let before = runs_of(&c, "tick").await;

    m.kill9();
    m.restart();
    let c = m.client();
    assert!(c.get_job("tick").await.is_ok());
    assert_eq!(c.list_nodes().await.unwrap().len(), 2);
    let after = runs_of(&c, "tick").await;
    for r in &before {
        assert!(
            after.iter().any(|a| a.run_id == r.run_id),
            "run {} lost",
            r.run_id
        );
    }
    // The agents find the manager again by themselves and keep reporting.
    let n = after.len();
    wait_until(LONG, "new runs after the restart", || async {
        runs_of(&c, "tick").await.len() >= n + 4
    })
    .await;
    wait_until(LONG, "both nodes Ready", || async {
        c.list_nodes()
            .await
            .unwrap()
            .iter()
            .all(|n| n.status == NodeStatus::Ready)
    })
    .await;
    drop(agents);
}

#[tokio::test]
async fn agent_keeps_running_while_the_manager_is_down_and_every_run_arrives_once() {
    let mut m = Manager::start();
    let agents = fleet(&m, 1, &[]).await;
    let c = m.client();
    c.save_job(&job(
        r#"{"JobName":"steady","Command":"echo s","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    wait_until(LONG, "first runs stored", || async {
        !runs_of(&c, "steady").await.is_empty()
    })
    .await;

    m.stop();
    let down_at = chrono::Utc::now();
    let before_down = local_runs(&agents[0], "steady").await.len();
    // 20 s without a manager: the agent runs the job from its cached state.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = local_runs(&agents[0], "steady").await.len() - before_down;
    assert!(
        during >= 10,
        "only {during} runs while the manager was down"
    );
    m.restart();
    let c = m.client();

    // Every run the agent made up to now reaches the manager, each exactly once.
    let local: Vec<_> = local_runs(&agents[0], "steady").await;
    wait_until(LONG, "every local run delivered", || async {
        let stored: BTreeSet<_> = runs_of(&c, "steady")
            .await
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        local.iter().all(|r| stored.contains(&r.run_id))
    })
    .await;
    let stored = runs_of(&c, "steady").await;
    let ids: BTreeSet<_> = stored.iter().map(|r| r.run_id).collect();
    assert_eq!(ids.len(), stored.len(), "a run stored twice");
    let in_gap = stored
        .iter()
        .filter(|r| {
            r.started_at
                .is_some_and(|s| s > down_at && s < down_at + chrono::Duration::seconds(20))
        })
        .count();
    assert!(in_gap >= 10, "only {in_gap} runs of the outage were stored");
}

#[tokio::test]
async fn killed_agent_goes_not_ready_and_comes_back_without_rerunning_once_jobs() {
    let m = Manager::start_with(ManagerOptions {
        args: vec!["--node-timeout".into(), "3s".into()],
        ..Default::default()
    });
    let mut agents = fleet(&m, 2, &[]).await;
    let c = m.client();
    c.save_job_text("ls-l", LL_JSON).await.unwrap();
    wait_until(LONG, "2 once runs", || async {
        runs_of(&c, "ls-l").await.len() == 2
    })
    .await;

    agents[0].kill9();
    let killed_at = Instant::now();
    wait_until(LONG, "node-1 NotReady", || async {
        c.get_node("node-1")
            .await
            .map(|n| n.status == NodeStatus::NotReady)
            .unwrap_or(false)
    })
    .await;
    // node_timeout 3 s plus the liveness check period and a margin.
    assert!(
        killed_at.elapsed() < Duration::from_secs(15),
        "{:?}",
        killed_at.elapsed()
    );

    agents[0].restart();
    wait_until(LONG, "node-1 Ready again", || async {
        c.get_node("node-1")
            .await
            .map(|n| n.status == NodeStatus::Ready)
            .unwrap_or(false)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs_of(&c, "ls-l").await.len(), 2, "the once-job ran again");
}

/// The beats a manager took in on watches, from its `/metrics`.
async fn watch_beats(c: &op_client::Client) -> u64 {
    let text = c.metrics().await.expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("op_manager_watch_beats_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no op_manager_watch_beats_total:\n{text}"))
}

/// Issue 25: a state that only changes jobs is applied without a beat in answer (a save for a
/// fleet of 50,000 costs the manager 50,000 answers, not also 50,000 beats read and written),
/// while a state with a run directive is acknowledged by a beat at once.
#[tokio::test]
async fn a_job_save_is_answered_without_a_beat_and_a_directive_with_one() {
    // A sync wait longer than the test: no periodic beat falls inside it.
    let m = Manager::start_with(ManagerOptions {
        args: ["--sync-wait", "120s", "--node-timeout", "300s"]
            .map(String::from)
            .to_vec(),
        ..ManagerOptions::default()
    });
    let agents = fleet(&m, 1, &[]).await;
    let c = m.client();
    let applied = || {
        agents[0]
            .log()
            .matches("applying the manager's job set")
            .count()
    };
    let before = watch_beats(&c).await;
    let sets = applied();
    const SAVES: usize = 8;
    for i in 1..=SAVES {
        c.save_job(&job(&format!(
            r#"{{"JobName":"quiet","Command":"echo {i}","CronExpr":"0 0 1 1 * * 2099"}}"#
        )))
        .await
        .unwrap();
        wait_until(LONG, &format!("save {i} applied"), || async {
            applied() >= sets + i
        })
        .await;
    }
    // A run directive: acknowledged by a beat at once (it comes after any beat the saves
    // caused, on the same connection).
    let out = crate::support::agentcli(&m, &["exec", "--all", "--", "true"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::text(&out.stderr)
    );
    wait_until(LONG, "the directive's acknowledgement", || async {
        watch_beats(&c).await > before
    })
    .await;
    let beats = watch_beats(&c).await - before;
    // The acknowledgement and the run's start (which may share one beat); one beat per save
    // would make it SAVES more.
    assert!(
        beats <= 3,
        "{beats} beats for {SAVES} saves and one directive"
    );
}
