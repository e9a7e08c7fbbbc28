//! Manager-set labels (issue 23 item 5): `agentcli label NODE k=v` changes which jobs a running
//! agent is given at once, survives the agent's registrations, wins over the agent's own label,
//! and bad input saves nothing.

use op_testkit::{Agent, AgentOptions, Manager, wait_until};

use crate::support::{LONG, agentcli, fleet, job, job_sets, local_runs, text};

/// Runs of the `gold` job the agent itself recorded.
async fn runs_on(a: &Agent) -> usize {
    local_runs(a, "gold").await.len()
}

#[tokio::test]
async fn a_manager_label_selects_a_running_agent_at_once_and_its_removal_deselects_it() {
    let m = Manager::start();
    let mut agents = fleet(&m, 2, &[]).await;
    // node-3 carries tier=silver in its own config: the manager's tier=gold wins over it.
    let mut o = AgentOptions::new("node-3", "127.0.0.4").manager(&m);
    o.labels = vec!["tier=silver".into()];
    agents.push(Agent::start(o));
    let c = m.client();
    wait_until(LONG, "node-3 Ready", || async {
        c.get_node("node-3")
            .await
            .is_ok_and(|n| n.status == op_proto::NodeStatus::Ready)
    })
    .await;
    c.save_job(&job(
        r#"{"JobName":"gold","Command":"echo gold","CronExpr":"*/1 * * * * * *","Labels":{"tier":"gold"}}"#,
    ))
    .await
    .unwrap();
    let started = std::time::Instant::now();

    // Bad input: clear errors, nothing saved.
    for (args, says) in [
        (&["label", "node-2", "tier"][..], "neither KEY=VALUE"),
        (&["label", "node-9", "tier=gold"][..], "no node"),
        (&["label", "node-2", "tier-"][..], "no manager-set label"),
        (&["label", "node-2", "tier=a\u{7}b"][..], "printable"),
        (
            &["label", "node-2", "tier=gold", "tier-"][..],
            "both set and removed",
        ),
    ] {
        let out = agentcli(&m, args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(
        c.get_node("node-2")
            .await
            .unwrap()
            .manager_labels
            .is_empty()
    );

    // Labelled: node-2 runs the job without its agent restarting; node-1 never does.
    let out = agentcli(&m, &["label", "node-2", "tier=gold"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "node-2: tier=gold*");
    wait_until(LONG, "the job runs on node-2", || async {
        runs_on(&agents[1]).await >= 2
    })
    .await;

    // The manager's value wins over node-3's own tier=silver, and both are shown.
    let out = agentcli(&m, &["label", "node-3", "tier=gold", "zone=eu-1"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    wait_until(LONG, "the job runs on node-3", || async {
        runs_on(&agents[2]).await >= 2
    })
    .await;
    let n3 = c.get_node("node-3").await.unwrap();
    assert_eq!(n3.labels["tier"], "silver");
    assert_eq!(n3.manager_labels["tier"], "gold");
    let out = agentcli(&m, &["get", "nodes", "-o", "wide"]).await;
    let wide = text(&out.stdout);
    let row = wide.lines().find(|l| l.starts_with("node-3")).unwrap();
    assert!(row.contains("tier=gold*,zone=eu-1*"), "{row}");

    // Removed: node-2 is given a job set without it, and runs it no more.
    let emptied = job_sets(&agents[1], 0);
    let out = agentcli(&m, &["label", "node-2", "tier-"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "node-2: no labels");
    wait_until(LONG, "node-2 is given no jobs", || async {
        job_sets(&agents[1], 0) > emptied
    })
    .await;
    let after = runs_on(&agents[1]).await;
    // A full sync later it still has not run it again (the job fires every second).
    let synced_after = chrono::Utc::now() + chrono::Duration::seconds(2);
    wait_until(LONG, "node-2 syncs again", || async {
        c.get_node("node-2")
            .await
            .is_ok_and(|n| n.last_seen > synced_after)
    })
    .await;
    assert_eq!(
        runs_on(&agents[1]).await,
        after,
        "node-2 still runs the job"
    );
    assert_eq!(runs_on(&agents[0]).await, 0, "node-1 was never selected");
    // node-3 kept running it all along.
    let before = runs_on(&agents[2]).await;
    wait_until(LONG, "node-3 still runs it", || async {
        runs_on(&agents[2]).await > before
    })
    .await;
    eprintln!("took {:?}", started.elapsed());
}
