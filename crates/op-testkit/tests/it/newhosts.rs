//! Once-jobs for hosts that join later (issue 23 item 2): with `NewHosts` a host that registers
//! after the save runs the once-job revision once (and not again when its agent restarts), at
//! most `NewHostsAtOnce` late hosts run it at once; without `NewHosts` a later host never gets it.

use std::collections::BTreeSet;
use std::time::Duration;

use op_client::Client;
use op_proto::api::TargetState;
use op_proto::{NodeStatus, RunStatus};
use op_testkit::{Agent, AgentOptions, Manager, wait_until};

use crate::support::{LONG, agentcli, fleet, job, local_runs, runs_of, text};

/// The state of `host`'s target of the current revision of `job`, if it has one.
async fn target(c: &Client, job: &str, host: &str) -> Option<(TargetState, bool)> {
    c.once_targets(job, None)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.hostname == host)
        .map(|t| (t.state, t.late))
}

async fn ready(c: &Client, host: &str) {
    wait_until(LONG, &format!("{host} Ready"), || async {
        c.get_node(host)
            .await
            .is_ok_and(|n| n.status == NodeStatus::Ready)
    })
    .await;
}

#[tokio::test]
async fn a_host_that_joins_later_runs_a_new_hosts_once_job_once_and_only_that_one() {
    let m = Manager::start();
    let mut agents = fleet(&m, 1, &[]).await;
    let c = m.client();
    c.save_job(&job(
        r#"{"JobName":"init","Command":"echo init","OnceJob":1,"NewHosts":true}"#,
    ))
    .await
    .unwrap();
    c.save_job(&job(
        r#"{"JobName":"plain","Command":"echo plain","OnceJob":1}"#,
    ))
    .await
    .unwrap();
    wait_until(LONG, "node-1 ran both once-jobs", || async {
        target(&c, "init", "node-1").await == Some((TargetState::Done, false))
            && target(&c, "plain", "node-1").await == Some((TargetState::Done, false))
    })
    .await;

    // node-2 is racked after the save.
    agents.push(Agent::start(
        AgentOptions::new("node-2", "127.0.0.3").manager(&m),
    ));
    wait_until(LONG, "node-2 ran init as a late host", || async {
        target(&c, "init", "node-2").await == Some((TargetState::Done, true))
    })
    .await;
    let late = local_runs(&agents[1], "init").await;
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].status, RunStatus::Ok);
    // The once-job without NewHosts keeps the hosts of its save.
    let plain = c.once_targets("plain", None).await.unwrap();
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert!(local_runs(&agents[1], "plain").await.is_empty());

    // `get jobs NAME` says which hosts joined later.
    let out = agentcli(&m, &["get", "jobs", "init"]).await;
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(shown.contains("node-2 done (joined later)"), "{shown}");
    assert!(
        shown.contains("yes, at most 10 late hosts at once"),
        "{shown}"
    );

    // Restarting node-2 (it registers again) does not run init again. Barrier: a later
    // NewHosts once-job runs on node-2 only after it applied a job set again.
    agents[1].stop();
    agents[1].restart();
    ready(&c, "node-2").await;
    c.save_job(&job(
        r#"{"JobName":"after","Command":"echo after","OnceJob":1,"NewHosts":1}"#,
    ))
    .await
    .unwrap();
    wait_until(LONG, "node-2 ran the later once-job", || async {
        target(&c, "after", "node-2").await == Some((TargetState::Done, false))
    })
    .await;
    assert_eq!(local_runs(&agents[1], "init").await.len(), 1);
    let runs = runs_of(&c, "init").await;
    let hosts: Vec<_> = runs.iter().map(|r| r.hostname.as_str()).collect();
    assert_eq!(runs.len(), 2, "one run per host: {hosts:?}");
    assert_eq!(
        target(&c, "init", "node-2").await,
        Some((TargetState::Done, true))
    );
    assert!(
        runs_of(&c, "plain")
            .await
            .iter()
            .all(|r| r.hostname == "node-1")
    );
}

#[tokio::test]
async fn ten_hosts_joining_at_once_start_at_most_new_hosts_at_once_at_a_time() {
    let m = Manager::start();
    let c = m.client();
    c.save_job(&job(
        r#"{"JobName":"heavy","Command":"sleep 3","OnceJob":1,"NewHosts":1,"NewHostsAtOnce":3}"#,
    ))
    .await
    .unwrap();
    let agents = fleet(&m, 10, &[]).await;
    let seen_waiting = std::cell::Cell::new(false);
    wait_until(Duration::from_secs(120), "all ten hosts ran heavy", || {
        let (c, seen, m) = (&c, &seen_waiting, &m);
        async move {
            let t = c.once_targets("heavy", None).await.unwrap();
            let busy = t
                .iter()
                .filter(|t| matches!(t.state, TargetState::Pending | TargetState::Running))
                .count();
            assert!(busy <= 3, "{busy} late hosts let start at once: {t:?}");
            if !seen.get() && t.iter().any(|t| t.state == TargetState::Waiting) {
                seen.set(true);
                // The console names the late hosts not done yet.
                let page = crate::support::console_get(m, &m.admin_token, "/ui/jobs/heavy").await;
                assert!(page.contains(", joined later)"), "{page}");
            }
            t.len() == 10 && t.iter().all(|t| t.state == TargetState::Done && t.late)
        }
    })
    .await;
    assert!(seen_waiting.get(), "some hosts waited for their turn");
    let page = crate::support::console_get(&m, &m.admin_token, "/ui/jobs/heavy").await;
    assert!(page.contains("<th>Waiting</th>"), "{page}");
    assert!(page.contains("<td>10 / 10</td>"), "{page}");
    let runs = runs_of(&c, "heavy").await;
    let hosts: BTreeSet<_> = runs.iter().map(|r| r.hostname.clone()).collect();
    assert_eq!((runs.len(), hosts.len()), (10, 10), "{runs:?}");
    // At no instant did more than 3 runs overlap (the agents share this machine's clock).
    let spans: Vec<_> = runs
        .iter()
        .map(|r| (r.started_at.unwrap(), r.ended_at.unwrap()))
        .collect();
    for (start, _) in &spans {
        let overlapping = spans
            .iter()
            .filter(|(s, e)| s <= start && start < e)
            .count();
        assert!(overlapping <= 3, "{overlapping} runs at {start}: {spans:?}");
    }
    for a in &agents {
        assert_eq!(
            local_runs(a, "heavy").await.len(),
            1,
            "{}",
            a.options.node_name
        );
    }
}

#[tokio::test]
async fn bad_new_hosts_input_is_refused_and_nothing_is_saved() {
    let m = Manager::start();
    let c = m.client();
    for (body, says) in [
        (
            r#"{"JobName":"bad","Command":"true","OnceJob":1,"NewHosts":1,"NewHostsAtOnce":0}"#,
            "NewHostsAtOnce",
        ),
        (
            r#"{"JobName":"bad","Command":"true","OnceJob":1,"NewHosts":1,"NewHostsAtOnce":-3}"#,
            "NewHostsAtOnce",
        ),
        (
            r#"{"JobName":"bad","Command":"true","OnceJob":1,"NewHostsAtOnce":3}"#,
            "NewHostsAtOnce",
        ),
        (
            r#"{"JobName":"bad","Command":"true","CronExpr":"* * * * *","NewHosts":1}"#,
            "NewHosts",
        ),
    ] {
        let e = c.save_job_text("bad", body).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{body}: {e}");
        assert!(e.to_string().contains(says), "{body}: {e}");
    }
    assert_eq!(c.get_job("bad").await.unwrap_err().status(), Some(404));
    // agentcli refuses the file before it reaches the manager.
    let file = m.dir.path().join("bad.json");
    std::fs::write(
        &file,
        r#"{"JobName":"bad","Command":"true","OnceJob":1,"NewHosts":1,"NewHostsAtOnce":0}"#,
    )
    .unwrap();
    let out = agentcli(&m, &["save", file.to_str().unwrap()]).await;
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("NewHostsAtOnce"), "{said}");
    assert_eq!(c.get_job("bad").await.unwrap_err().status(), Some(404));
}

/// `analysis jobs NAME VERSION` with a version the job never had is a 404 and a non-zero exit,
/// not an empty report; a version of a job that is not a once-job is refused by agentcli.
#[tokio::test]
async fn analysis_of_a_once_job_version_that_does_not_exist_is_an_error() {
    let m = Manager::start();
    let c = m.client();
    c.save_job_text(
        "once",
        r#"{"JobName":"once","Command":"true","OnceJob":1,"NewHosts":1}"#,
    )
    .await
    .unwrap();
    c.save_job_text(
        "tick",
        r#"{"JobName":"tick","Command":"true","CronExpr":"0 0 3 * * * *"}"#,
    )
    .await
    .unwrap();
    let e = c.once_targets("once", Some(999)).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    for (args, says) in [
        (
            &["analysis", "jobs", "once", "999"][..],
            "job \"once\" has no version 999; its versions are 1 to 1 (the latest)",
        ),
        (&["analysis", "jobs", "once", "0"][..], "no version 0"),
        (
            &["analysis", "jobs", "tick", "1"][..],
            "tick is not a once-job, so it has no once-job version 1",
        ),
    ] {
        let out = agentcli(&m, args).await;
        assert_ne!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = agentcli(&m, &["analysis", "jobs", "once", "1"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
