//! Pause, drain and maintenance windows (issue 23 item 3) with real agents: held fires are
//! recorded `skipped` with the reason (never run, never missed), running runs finish, and bad
//! input saves nothing.

use std::time::Duration;

use chrono::{DateTime, Datelike, SubsecRound, Timelike, Utc};
use op_proto::{RunRecord, RunStatus};
use op_testkit::{Agent, AgentOptions, Manager, bin, wait_until};

use crate::support::{LONG, agentcli, fleet, job, runs_of, text};

async fn ok(m: &Manager, args: &[&str]) -> String {
    let out = agentcli(m, args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn on<'a>(runs: &'a [RunRecord], host: &str) -> Vec<&'a RunRecord> {
    runs.iter().filter(|r| r.hostname == host).collect()
}

fn planned(r: &RunRecord) -> DateTime<Utc> {
    r.planned_at.expect("a cron run carries its fire time")
}

fn held_with(r: &RunRecord, why: &str) -> bool {
    r.status == RunStatus::Skipped && r.error.as_deref().is_some_and(|e| e.contains(why))
}

#[tokio::test]
async fn a_paused_label_runs_nothing_until_resume_and_its_fires_are_skipped_with_the_reason() {
    let m = Manager::start();
    let mut agents = Vec::new();
    for (i, role) in [(1, "db"), (2, "db"), (3, "web")] {
        let mut o =
            AgentOptions::new(&format!("node-{i}"), &format!("127.0.0.{}", i + 1)).manager(&m);
        o.labels = vec![format!("role={role}")];
        agents.push(Agent::start(o));
    }
    let c = m.client();
    wait_until(LONG, "three nodes Ready", || async {
        c.list_nodes().await.is_ok_and(|n| {
            n.iter()
                .filter(|n| n.status == op_proto::NodeStatus::Ready)
                .count()
                == 3
        })
    })
    .await;
    c.save_job(&job(
        r#"{"JobName":"tick","Command":"true","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    wait_until(LONG, "tick runs on every host", || async {
        let runs = runs_of(&c, "tick").await;
        (1..=3).all(|i| {
            on(&runs, &format!("node-{i}"))
                .iter()
                .any(|r| r.status == RunStatus::Ok)
        })
    })
    .await;

    let said = ok(&m, &["pause", "--label", "role=db"]).await;
    assert!(said.contains("paused label:role=db"), "{said}");
    let paused_at = Utc::now();
    let list = ok(&m, &["pause", "--list"]).await;
    assert!(
        list.contains("label:role=db") && list.contains("active"),
        "{list}"
    );
    // Both db hosts record held fires, several of them.
    wait_until(LONG, "the db hosts skip 3 fires each", || async {
        let runs = runs_of(&c, "tick").await;
        ["node-1", "node-2"].iter().all(|h| {
            on(&runs, h)
                .iter()
                .filter(|r| held_with(r, "paused by"))
                .count()
                >= 3
        })
    })
    .await;
    let out = ok(&m, &["resume", "--label", "role=db"]).await;
    assert!(out.contains("resumed label:role=db"), "{out}");
    let resumed_at = Utc::now();
    wait_until(LONG, "the db hosts run again", || async {
        let runs = runs_of(&c, "tick").await;
        ["node-1", "node-2"].iter().all(|h| {
            on(&runs, h)
                .iter()
                .any(|r| r.status == RunStatus::Ok && planned(r) > resumed_at)
        })
    })
    .await;

    let runs = runs_of(&c, "tick").await;
    for h in ["node-1", "node-2"] {
        let mine = on(&runs, h);
        let held: Vec<&&RunRecord> = mine.iter().filter(|r| held_with(r, "paused by")).collect();
        let first = held.iter().map(|r| planned(r)).min().unwrap();
        let last = held.iter().map(|r| planned(r)).max().unwrap();
        assert!(first >= paused_at - chrono::Duration::seconds(5), "{h}");
        // An agent hears of the resume a moment after the command returns (the state goes out
        // on its watch): a fire due in that moment may still be held, none later.
        assert!(
            last <= resumed_at + chrono::Duration::seconds(2),
            "{h}: a fire 2 s after resume was held"
        );
        // Between the first and the last held fire nothing ran: every fire there is skipped with
        // the reason, and no process started.
        for r in mine
            .iter()
            .filter(|r| planned(r) >= first && planned(r) <= last)
        {
            assert!(held_with(r, "until resumed"), "{h}: {r:?}");
            assert!(r.started_at.is_none(), "{h}: {r:?}");
        }
    }
    // The web host was never paused.
    assert!(
        on(&runs, "node-3")
            .iter()
            .all(|r| r.status == RunStatus::Ok),
        "node-3 held a fire"
    );

    // --until ends a pause by itself, on the agents' clocks.
    let out = ok(&m, &["pause", "--all", "--until", "4s"]).await;
    assert!(out.contains("paused all: until"), "{out}");
    let until_by = Utc::now() + chrono::Duration::seconds(4);
    wait_until(LONG, "node-3 runs again after --until", || async {
        on(&runs_of(&c, "tick").await, "node-3")
            .iter()
            .any(|r| r.status == RunStatus::Ok && planned(r) > until_by)
    })
    .await;
    let runs = runs_of(&c, "tick").await;
    let held: Vec<&RunRecord> = on(&runs, "node-3")
        .into_iter()
        .filter(|r| held_with(r, "paused by"))
        .collect();
    assert!(!held.is_empty(), "node-3 held nothing while all was paused");
    assert!(held.iter().all(|r| held_with(r, " until 20")), "{held:?}");
    assert!(held.iter().all(|r| planned(r) <= until_by));
    // Expired, still listed until resumed.
    let list = ok(&m, &["pause", "--list"]).await;
    assert!(list.contains("expired"), "{list}");
    ok(&m, &["resume", "--all"]).await;
    let audit = ok(&m, &["audit"]).await;
    assert!(
        audit.contains("pause") && audit.contains("resume"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_drained_node_finishes_its_running_job_and_starts_nothing_new() {
    let m = Manager::start();
    let agents = fleet(&m, 2, &[]).await;
    let c = m.client();
    // A fire every second of a run that lasts 3 s (forbid: the fires meanwhile are skipped).
    c.save_job(&job(
        r#"{"JobName":"slow","Command":"sleep 3","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    wait_until(LONG, "slow runs on node-1", || async {
        c.get_node("node-1")
            .await
            .is_ok_and(|n| n.running.iter().any(|r| r.job == "slow"))
    })
    .await;
    let running = c.get_node("node-1").await.unwrap().running[0].run_id;
    let out = ok(&m, &["drain", "node-1"]).await;
    assert_eq!(out.trim(), "node-1: Draining");
    let drained_at = Utc::now();

    // The running one finishes (succeeded), and nothing starts afterwards.
    wait_until(LONG, "the running run finished", || async {
        runs_of(&c, "slow")
            .await
            .iter()
            .any(|r| r.run_id == running && r.status == RunStatus::Ok)
    })
    .await;
    wait_until(LONG, "node-1 records fires held by the drain", || async {
        on(&runs_of(&c, "slow").await, "node-1")
            .iter()
            .filter(|r| held_with(r, "node draining"))
            .count()
            >= 3
    })
    .await;
    let runs = runs_of(&c, "slow").await;
    let started_after: Vec<&RunRecord> = on(&runs, "node-1")
        .into_iter()
        .filter(|r| {
            r.started_at
                .is_some_and(|s| s > drained_at + chrono::Duration::seconds(1))
        })
        .collect();
    assert!(
        started_after.is_empty(),
        "started while drained: {started_after:?}"
    );
    // node-2 goes on.
    wait_until(LONG, "node-2 starts runs after the drain", || async {
        on(&runs_of(&c, "slow").await, "node-2")
            .iter()
            .any(|r| r.started_at.is_some_and(|s| s > drained_at))
    })
    .await;

    // get nodes shows it, and the console's node page.
    let nodes = ok(&m, &["get", "nodes"]).await;
    let row = nodes.lines().find(|l| l.starts_with("node-1")).unwrap();
    assert!(row.contains("Draining"), "{row}");
    let row = nodes.lines().find(|l| l.starts_with("node-2")).unwrap();
    assert!(row.contains("Ready"), "{row}");
    let page = crate::support::console_get(&m, &m.admin_token, "/ui/nodes").await;
    assert!(page.contains("Draining"), "the console shows no Draining");

    // An exec on the drained node is reported not run at once, with the reason.
    let started = std::time::Instant::now();
    let out = agentcli(&m, &["exec", "--host", "node-1", "--", "true"]).await;
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains("draining"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(20), "exec waited");

    // Undrained, it runs again.
    let out = ok(&m, &["undrain", "node-1"]).await;
    assert_eq!(out.trim(), "node-1: Ready");
    let undrained_at = Utc::now();
    wait_until(LONG, "node-1 runs again", || async {
        on(&runs_of(&c, "slow").await, "node-1")
            .iter()
            .any(|r| r.started_at.is_some_and(|s| s > undrained_at))
    })
    .await;
    drop(agents);
}

/// A 7-field cron (`sec min hour day month weekday year`, UTC) that fires once, at `t`.
fn once_at(t: DateTime<Utc>) -> String {
    format!(
        "{} {} {} {} {} * {}",
        t.second(),
        t.minute(),
        t.hour(),
        t.day(),
        t.month(),
        t.year()
    )
}

#[tokio::test]
async fn a_maintenance_window_suppresses_a_1hz_job_exactly_during_the_window() {
    // A manager that judges fires every second, 2 s after their grace (as missed.rs).
    let m = Manager::start_with(op_testkit::ManagerOptions {
        args: ["--fire-check-every", "1s", "--fire-settle", "2s"]
            .map(String::from)
            .to_vec(),
        ..op_testkit::ManagerOptions::default()
    });
    let _agents = fleet(&m, 1, &[]).await;
    let c = m.client();

    // Bad input: clear errors, nothing saved.
    c.save_job(&job(
        r#"{"JobName":"tick","Command":"true","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    for (args, says) in [
        (&["pause"][..], "--all, --job J or --label k=v"),
        (&["pause", "--all", "--job", "tick"][..], "only one"),
        (&["pause", "--job", "nosuch"][..], "no job named"),
        (&["pause", "--label", "novalue"][..], "key=value"),
        (
            &["pause", "--all", "--until", "2001-01-01T00:00:00Z"][..],
            "not in the future",
        ),
        (&["pause", "--all", "--until", "soon"][..], "--until"),
        (
            &["resume", "--all"][..],
            "nothing is paused with all (see agentcli pause --list)",
        ),
        (&["pause", "--all", "--until", "0s"][..], "above 0"),
        (
            &[
                "window",
                "add",
                "w",
                "--cron",
                "0 0 0 30 2 * *",
                "--duration",
                "1h",
            ][..],
            "never",
        ),
        (
            &["window", "add", "w", "--cron", "@daily", "--duration", "0"][..],
            "more than 0",
        ),
        (
            &[
                "window",
                "add",
                "w",
                "--cron",
                "@daily",
                "--duration",
                "25h",
            ][..],
            "--duration 1d1h is not shorter than the 1d between two openings",
        ),
        (
            &["window", "add", "w", "--cron", "bad", "--duration", "1h"][..],
            "--cron",
        ),
        (
            &[
                "window",
                "add",
                "w",
                "--cron",
                "@daily",
                "--duration",
                "soon",
            ][..],
            "--duration",
        ),
        (
            &[
                "window",
                "add",
                "a b",
                "--cron",
                "@daily",
                "--duration",
                "1h",
            ][..],
            "window name",
        ),
        (&["window", "remove", "nosuch"][..], "no maintenance window"),
        (&["drain", "node-9"][..], "no node"),
    ] {
        let out = agentcli(&m, args).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(c.pauses().await.unwrap().is_empty());
    assert!(c.windows().await.unwrap().is_empty());
    // `window list` shows a duration as it is typed, not in seconds.
    ok(
        &m,
        &[
            "window",
            "add",
            "later",
            "--cron",
            "0 0 2 1 1 * *",
            "--duration",
            "90m",
        ],
    )
    .await;
    let list = ok(&m, &["window", "list"]).await;
    let row = list.lines().find(|l| l.starts_with("later")).unwrap_or("");
    assert!(row.contains("1h30m") && !row.contains("5400"), "{list}");
    ok(&m, &["window", "remove", "later"]).await;
    // A viewer may not pause.
    let viewer = c
        .create_token(&op_proto::api::CreateTokenRequest {
            name: "viewer".into(),
            scope: op_proto::api::Scope::Viewer,
            expires_in_secs: None,
        })
        .await
        .unwrap();
    let mut cmd = std::process::Command::new(bin("agentcli"));
    cmd.env_clear()
        .env("HOME", m.dir.path())
        .env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &viewer.secret)
        .args(["pause", "--all"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("operator"),
        "{}",
        text(&out.stderr)
    );
    assert!(c.pauses().await.unwrap().is_empty());

    wait_until(LONG, "tick runs", || async {
        runs_of(&c, "tick")
            .await
            .iter()
            .any(|r| r.status == RunStatus::Ok)
    })
    .await;
    // A window opening in 4 s for 8 s.
    let start = (Utc::now() + chrono::Duration::seconds(4)).trunc_subsecs(0);
    let end = start + chrono::Duration::seconds(8);
    let cron = once_at(start);
    let out = ok(
        &m,
        &[
            "window",
            "add",
            "mw",
            "--cron",
            &cron,
            "--duration",
            "8s",
            "--job",
            "tick",
        ],
    )
    .await;
    assert!(out.contains("window mw saved"), "{out}");
    let saved_at = Utc::now();
    let list = ok(&m, &["window", "list"]).await;
    assert!(list.contains("mw") && list.contains("job=tick"), "{list}");
    wait_until(LONG, "tick runs after the window", || async {
        runs_of(&c, "tick")
            .await
            .iter()
            .any(|r| r.status == RunStatus::Ok && planned(r) >= end + chrono::Duration::seconds(2))
    })
    .await;
    // The leader judges the window's fires skipped, not missed: every judged fire is collected
    // while the judge moves past the window (it keeps only the newest few per job).
    let judged = std::sync::Mutex::new(std::collections::BTreeMap::new());
    wait_until(LONG, "the window's fires are judged", || async {
        let Ok(j) = c.get_job("tick").await else {
            return false;
        };
        let mut seen = judged.lock().unwrap();
        for f in &j.last_fires {
            seen.insert(f.fire, f.counts.clone());
        }
        seen.keys().next_back().is_some_and(|f| *f >= end)
    })
    .await;
    let judged = judged.into_inner().unwrap();
    let in_window: Vec<_> = judged
        .iter()
        .filter(|(f, _)| **f >= start && **f < end)
        .collect();
    assert!(in_window.len() >= 3, "{judged:?}");
    for (fire, counts) in &in_window {
        assert_eq!(counts.get("skipped"), Some(&1), "{fire}: {counts:?}");
        assert_eq!(counts.get("missed"), None, "{fire}: {counts:?}");
    }

    let runs = runs_of(&c, "tick").await;
    let mut inside = 0;
    for r in runs.iter().filter(|r| planned(r) > saved_at) {
        let p = planned(r);
        if p >= start && p < end {
            assert!(held_with(r, "maintenance window mw"), "{r:?}");
            assert!(r.started_at.is_none());
            inside += 1;
        } else {
            assert_eq!(r.status, RunStatus::Ok, "{r:?}");
        }
    }
    assert!(inside >= 6, "only {inside} fires recorded in an 8 s window");
    ok(&m, &["window", "remove", "mw"]).await;
    assert!(c.windows().await.unwrap().is_empty());
}
