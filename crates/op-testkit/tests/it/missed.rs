//! Missed, late, skipped and overrunning fires (issue 20), judged by the leader against real
//! agents: a stopped agent's fires are missed on that host only, a hung `forbid` job's fires are
//! skipped and it is reported overrunning, a job saved a moment ago reports nothing, and
//! `agentcli analysis jobs` says what was missed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use op_client::{Client, EventQuery};
use op_proto::events::Event;
use op_testkit::{Manager, ManagerOptions, wait_until};

use crate::support::{LONG, fleet, runs_of};

/// A manager that judges fires every second, 2 s after their grace.
fn manager() -> Manager {
    Manager::start_with(ManagerOptions {
        args: ["--fire-check-every", "1s", "--fire-settle", "2s"]
            .map(String::from)
            .to_vec(),
        ..ManagerOptions::default()
    })
}

/// Every kept event of `kind` about `job`.
pub(crate) async fn events(c: &Client, kind: &str, job: &str) -> Vec<Event> {
    let mut stream = c
        .events(&EventQuery {
            kinds: vec![kind.to_string()],
            jobs: vec![job.to_string()],
            ..EventQuery::default()
        })
        .await
        .expect("events");
    let mut out = Vec::new();
    while let Some(e) = stream.next().await.expect("event stream") {
        out.push(e);
    }
    out
}

/// The hosts named by `events`.
fn hosts(events: &[Event]) -> BTreeSet<String> {
    events
        .iter()
        .flat_map(|e| e.hosts.iter().cloned())
        .collect()
}

/// The newest fire of `job` the leader judged.
async fn latest_judged(c: &Client, job: &str) -> Option<DateTime<Utc>> {
    c.get_job(job)
        .await
        .ok()
        .and_then(|j| j.last_fires.first().map(|f| f.fire))
}

fn agentcli(m: &Manager, args: &[&str]) -> std::process::Output {
    std::process::Command::new(op_testkit::bin("agentcli"))
        .args(args)
        .env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &m.admin_token)
        .output()
        .expect("agentcli runs")
}

/// A 1 Hz job on 3 agents; one is stopped (SIGSTOP) for 10 s: `run.missed` names that host and
/// only that host, and `agentcli analysis jobs` prints the missed fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agents_fires_are_missed_on_that_host_only() {
    let m = manager();
    let agents = fleet(&m, 3, &[]).await;
    let c = m.client();
    c.save_job_text(
        "tick",
        r#"{"JobName":"tick","Command":"true","CronExpr":"* * * * * * *"}"#,
    )
    .await
    .expect("save");
    wait_until(LONG, "every host ran tick a few times", || async {
        let runs = runs_of(&c, "tick").await;
        (1..=3).all(|i| {
            runs.iter()
                .filter(|r| r.hostname == format!("node-{i}"))
                .count()
                >= 3
        })
    })
    .await;

    let stopped = &agents[1];
    stopped.pause();
    let paused_at = Instant::now();
    wait_until(LONG, "run.missed names node-2", || async {
        hosts(&events(&c, "run.missed", "tick").await).contains("node-2")
    })
    .await;
    // The outage lasts 10 s whatever the machine's speed (the scenario, not a tuned wait).
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(paused_at.elapsed())).await;
    stopped.resume();
    let resumed = Utc::now();

    // Barrier: the leader judged fires after node-2 came back, so every fire of the outage and
    // of the other hosts around it has its verdict.
    wait_until(LONG, "fires after the resume are judged", || async {
        latest_judged(&c, "tick")
            .await
            .is_some_and(|f| f > resumed + chrono::Duration::seconds(2))
    })
    .await;
    let missed = events(&c, "run.missed", "tick").await;
    assert_eq!(
        hosts(&missed),
        BTreeSet::from(["node-2".to_string()]),
        "{missed:#?}"
    );
    // Several fires of the ~10 s outage, one event per fire, each naming node-2 of 3 hosts.
    assert!(missed.len() >= 3, "{missed:#?}");
    for e in &missed {
        assert_eq!((e.host_count, e.selected_hosts), (1, 3), "{e:#?}");
        assert!(e.summary.starts_with("tick missed its "), "{}", e.summary);
    }

    // The analysis names the missed fires while they are among the job's last judged fires: a
    // job whose last fires are missed on node-2 (stop it again, briefly, to be sure they are).
    stopped.pause();
    wait_until(LONG, "analysis jobs prints the missed fire", || async {
        let out = agentcli(&m, &["analysis", "jobs", "tick"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("MISSED, LATE AND SKIPPED FIRES")
            && text
                .lines()
                .any(|l| l.starts_with("tick missed its ") && l.contains(" on 1/3 hosts (1 "))
    })
    .await;
    let out = agentcli(&m, &["analysis", "jobs", "tick", "-o", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    let schedule = report["schedule"].as_array().expect("schedule section");
    // Only node-2 missed fires; another host may show a skipped fire (its previous run still
    // running on a loaded machine), which is not a miss.
    assert!(
        schedule
            .iter()
            .all(|f| f["hosts"].as_array().is_some_and(|h| {
                h.iter().all(|h| {
                    let h = h.as_str().unwrap();
                    h.starts_with("node-2 ") || h.ends_with(" (skipped)")
                })
            })),
        "{schedule:#?}"
    );
    // The console's job page shows the same per host: node-2's row has missed fires, the
    // others' rows have none.
    let page = crate::support::console_get(&m, &m.admin_token, "/ui/jobs/tick").await;
    let grid = page
        .split("id=\"fire-grid\"")
        .nth(1)
        .and_then(|g| g.split("</section>").next())
        .expect("the job page has the last-fires grid");
    let row = |host: &str| -> String {
        grid.split(&format!("<tr data-host=\"{host}\">"))
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_else(|| panic!("a row for {host}: {grid}"))
            .to_string()
    };
    assert!(row("node-2").contains("data-outcome=\"missed\""), "{grid}");
    for ok in ["node-1", "node-3"] {
        let r = row(ok);
        assert!(!r.contains("data-outcome=\"missed\""), "{ok}: {grid}");
        assert!(r.contains("data-outcome=\"ok\""), "{ok}: {grid}");
    }
    stopped.resume();
}

/// A job that hangs with `Concurrency: forbid`: its next fires are `run.skipped`, and its
/// `MaxDuration` raises `run.overrunning` once for the run, while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_forbid_job_is_skipped_and_overrunning() {
    let m = manager();
    let _agents = fleet(&m, 1, &[]).await;
    let c = m.client();
    c.save_job_text(
        "hang",
        r#"{"JobName":"hang","Command":"sleep 600","CronExpr":"*/2 * * * * * *","MaxDuration":3}"#,
    )
    .await
    .expect("save");
    wait_until(
        LONG,
        "run.skipped and run.overrunning name node-1",
        || async {
            hosts(&events(&c, "run.skipped", "hang").await).contains("node-1")
                && hosts(&events(&c, "run.overrunning", "hang").await).contains("node-1")
        },
    )
    .await;
    let skipped = events(&c, "run.skipped", "hang").await;
    assert!(
        skipped[0].summary.contains("previous run still running"),
        "{skipped:#?}"
    );
    // Announced once for the one run, however many passes see it overrunning; a barrier of
    // two more judged fires proves later passes added nothing.
    let seen = latest_judged(&c, "hang").await.expect("judged");
    wait_until(LONG, "two more fires judged", || async {
        latest_judged(&c, "hang")
            .await
            .is_some_and(|f| f >= seen + chrono::Duration::seconds(4))
    })
    .await;
    let over = events(&c, "run.overrunning", "hang").await;
    assert_eq!(over.len(), 1, "{over:#?}");
    assert!(over[0].summary.contains("MaxDuration (3 s)"), "{over:#?}");
    // Nothing is missed: the host was there, its fires were skipped.
    assert!(events(&c, "run.missed", "hang").await.is_empty());
    c.disable_job("hang").await.expect("disable");
}

/// A job with a 1-minute schedule saved a moment ago reports nothing missed: its judgement
/// starts at its save time, not at some earlier fire. A 1 Hz probe job saved after it is the
/// barrier: once the probe's fires 3 s after the save are judged, the judge has passed over the
/// minute job several times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_saved_moments_ago_reports_nothing_missed() {
    let m = manager();
    // A fire before the save, were it judged, would be on record (and missed: nothing ran it).
    let _agents = fleet(&m, 1, &[]).await;
    let c = m.client();
    c.save_job_text(
        "minutely",
        r#"{"JobName":"minutely","Command":"true","CronExpr":"0 * * * * * *"}"#,
    )
    .await
    .expect("save");
    let saved = c.get_job("minutely").await.expect("job").record.updated_at;
    c.save_job_text(
        "probe",
        r#"{"JobName":"probe","Command":"true","CronExpr":"* * * * * * *"}"#,
    )
    .await
    .expect("save probe");
    wait_until(
        LONG,
        "the probe's fires after the save are judged",
        || async {
            latest_judged(&c, "probe")
                .await
                .is_some_and(|f| f > saved + chrono::Duration::seconds(3))
        },
    )
    .await;
    let job = c.get_job("minutely").await.expect("job");
    assert!(
        job.last_fires.iter().all(|f| f.fire > saved),
        "a fire before the save was judged: {:#?}",
        job.last_fires
    );
    assert!(events(&c, "run.missed", "minutely").await.is_empty());
    assert!(events(&c, "run.missed", "probe").await.is_empty());
}

/// An agent killed (-9) and restarted 20 s later reports the fires it missed while down as
/// `missed` runs with the reason, through its outbox; none of them was run (no catching up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_after_20_s_reports_the_fires_it_missed() {
    let m = manager();
    let mut agents = fleet(&m, 1, &[]).await;
    let c = m.client();
    c.save_job_text(
        "beat",
        r#"{"JobName":"beat","Command":"true","CronExpr":"* * * * * * *"}"#,
    )
    .await
    .expect("save");
    wait_until(LONG, "beat ran a few times", || async {
        runs_of(&c, "beat").await.len() >= 3
    })
    .await;
    let agent = &mut agents[0];
    agent.kill9();
    let killed = Utc::now();
    let down = Instant::now();
    // While it is down, the leader judges its fires missed (a condition, not a sleep).
    wait_until(LONG, "run.missed names node-1", || async {
        hosts(&events(&c, "run.missed", "beat").await).contains("node-1")
    })
    .await;
    // The outage lasts 20 s, as the scenario says.
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(down.elapsed())).await;
    let restarted = Utc::now();
    agent.restart();

    wait_until(LONG, "the agent's missed records arrive", || async {
        runs_of(&c, "beat")
            .await
            .iter()
            .filter(|r| r.status == op_proto::RunStatus::Missed)
            .count()
            >= 15
    })
    .await;
    let runs = runs_of(&c, "beat").await;
    let missed: Vec<_> = runs
        .iter()
        .filter(|r| r.status == op_proto::RunStatus::Missed)
        .collect();
    for r in &missed {
        let fire = r.planned_at.expect("a missed record names its fire");
        assert!(
            fire > killed - chrono::Duration::seconds(2)
                && fire <= restarted + chrono::Duration::seconds(5),
            "{r:#?}"
        );
        assert!(r.started_at.is_none(), "{r:#?}");
        assert!(
            r.error
                .as_deref()
                .is_some_and(|e| e.starts_with("agent down")),
            "{r:#?}"
        );
        // Not caught up: no run of that fire started.
        assert!(
            !runs.iter().any(|o| o.status != op_proto::RunStatus::Missed
                && o.planned_at == Some(fire)
                && o.started_at.is_some()),
            "fire {fire} was run after all"
        );
    }
}

/// A node whose clock is 12 s ahead raises one `node.clock_skew` naming it (not the node with a
/// right clock), and no second one while its clock stays wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_wrong_clock_raises_one_clock_skew_event() {
    let m = manager();
    let _right =
        op_testkit::Agent::start(op_testkit::AgentOptions::new("node-1", "127.0.0.2").manager(&m));
    let _wrong = op_testkit::Agent::start(
        op_testkit::AgentOptions::new("node-2", "127.0.0.3")
            .manager(&m)
            .env("OP_TEST_CLOCK_OFFSET", "12"),
    );
    let c = m.client();
    let skew = || async {
        let mut stream = c
            .events(&EventQuery {
                kinds: vec!["node.clock_skew".into()],
                ..EventQuery::default()
            })
            .await
            .expect("events");
        let mut out = Vec::new();
        while let Some(e) = stream.next().await.expect("event stream") {
            out.push(e);
        }
        out
    };
    wait_until(LONG, "node.clock_skew names node-2", || async {
        hosts(&skew().await).contains("node-2")
    })
    .await;
    // Barrier: a job's fires judged twice more means the leader passed over the clocks again.
    c.save_job_text(
        "pulse",
        r#"{"JobName":"pulse","Command":"true","CronExpr":"* * * * * * *"}"#,
    )
    .await
    .expect("save");
    wait_until(LONG, "pulse judged", || async {
        latest_judged(&c, "pulse").await.is_some()
    })
    .await;
    let seen = latest_judged(&c, "pulse").await.expect("judged");
    wait_until(LONG, "pulse judged again", || async {
        latest_judged(&c, "pulse")
            .await
            .is_some_and(|f| f >= seen + chrono::Duration::seconds(2))
    })
    .await;
    let events = skew().await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].hosts, ["node-2"], "{events:#?}");
    assert!(
        events[0].summary.contains("node-2 (+12"),
        "{}",
        events[0].summary
    );
}
