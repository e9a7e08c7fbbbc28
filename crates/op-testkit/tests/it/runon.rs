//! `RunOn` jobs (issue 23) on real agents and managers: each fire of a `RunOn: one` job runs on
//! exactly one host (counted by the fire time each run carries), a stopped host's fires move to
//! another, killing the raft leader neither doubles nor drops a fire outside the election, and
//! bad `RunOn`/`Pick`/`RetryOnAnother` values are refused with nothing saved.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use op_client::Client;
use op_proto::{NodeStatus, RunRecord, Trigger};
use op_testkit::{Agent, AgentOptions, Cluster, FAST_RAFT, Manager, ManagerOptions, wait_until};

use crate::support::{LONG, fleet, runs_of};

/// The job every scenario runs: once a second, on one host.
fn solo(pick: &str) -> String {
    format!(
        r#"{{"JobName":"solo","Command":"true","CronExpr":"* * * * * * *","RunOn":"one","Pick":"{pick}"}}"#
    )
}

/// The hosts that ran each fire of `job` (its cron runs, by `planned_at`).
async fn hosts_per_fire(c: &Client, job: &str) -> BTreeMap<DateTime<Utc>, Vec<String>> {
    let runs: Vec<RunRecord> = runs_of(c, job).await;
    let mut out: BTreeMap<DateTime<Utc>, Vec<String>> = BTreeMap::new();
    for r in runs {
        assert_eq!(r.trigger, Trigger::Cron, "{r:?}");
        let planned = r.planned_at.expect("a RunOn run carries its fire time");
        out.entry(planned).or_default().push(r.hostname.clone());
    }
    out
}

/// Fires after `since` that ran, each on exactly one host (panics on a doubled fire).
fn single(fires: &BTreeMap<DateTime<Utc>, Vec<String>>) -> BTreeMap<DateTime<Utc>, String> {
    fires
        .iter()
        .map(|(at, hosts)| {
            assert_eq!(hosts.len(), 1, "fire {at} ran on {hosts:?}: {fires:#?}");
            (*at, hosts[0].clone())
        })
        .collect()
}

/// Every kept `run.missed` event of `job`.
async fn missed_events(c: &Client, job: &str) -> Vec<op_proto::events::Event> {
    crate::missed::events(c, "run.missed", job).await
}

/// A 1 Hz `RunOn: one` job on 3 agents for ~20 s: every fire runs on exactly one host, the same
/// one (`Pick: hash`), and the fire judge reports nothing missed on the two hosts not picked.
/// Stopping that host (SIGSTOP) moves the fires to another host, still one per fire, and the
/// stopped host does not run the fires it was given once it wakes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_on_one_runs_each_fire_once_and_moves_off_a_stopped_host() {
    let m = Manager::start_with(ManagerOptions {
        args: [
            "--directive-ack-timeout",
            "2s",
            "--fire-check-every",
            "1s",
            "--fire-settle",
            "2s",
        ]
        .map(String::from)
        .to_vec(),
        ..ManagerOptions::default()
    });
    let agents = fleet(&m, 3, &[]).await;
    let c = m.client();
    let saved_at = Utc::now();
    c.save_job_text("solo", &solo("hash")).await.expect("save");

    wait_until(LONG, "ten fires of solo ran", || async {
        hosts_per_fire(&c, "solo").await.len() >= 10
    })
    .await;
    let before = single(&hosts_per_fire(&c, "solo").await);
    let owners: BTreeSet<&String> = before.values().collect();
    assert_eq!(owners.len(), 1, "Pick: hash keeps one host: {before:#?}");
    let owner = owners.into_iter().next().unwrap().clone();
    // Consecutive fires, none dropped while every host was well.
    let times: Vec<&DateTime<Utc>> = before.keys().collect();
    for w in times.windows(2) {
        assert_eq!(*w[1] - *w[0], chrono::Duration::seconds(1), "{before:#?}");
    }
    assert!(*times[0] > saved_at);

    // The judge expects one host per fire: the fires judged so far (all hosts well) have no
    // missed host, in particular not the two hosts that were not picked.
    wait_until(LONG, "the judge judged some fires of solo", || async {
        c.get_job("solo")
            .await
            .is_ok_and(|j| j.last_fires.len() >= 3)
    })
    .await;
    let job = c.get_job("solo").await.unwrap();
    for f in &job.last_fires {
        assert_eq!(f.expected, 1, "judged on one host per fire: {f:#?}");
    }
    assert!(
        missed_events(&c, "solo").await.is_empty(),
        "{:#?}",
        missed_events(&c, "solo").await
    );

    // Stop the picked host: its fires move to another host.
    let stopped = agents
        .iter()
        .position(|a| a.options.node_name == owner)
        .expect("the owner is one of the agents");
    agents[stopped].pause();
    let paused_at = Utc::now();
    let paused = Instant::now();
    wait_until(
        LONG,
        "five fires after the stop ran on other hosts",
        || async {
            let fires = hosts_per_fire(&c, "solo").await;
            fires
                .iter()
                .filter(|(at, hosts)| **at > paused_at && hosts.iter().all(|h| *h != owner))
                .count()
                >= 5
        },
    )
    .await;
    // The stop lasts at least 8 s; then the host wakes up with the directives it was sent.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(paused.elapsed())).await;
    agents[stopped].resume();
    let resumed_at = Utc::now();
    wait_until(LONG, "fires after the wake-up ran", || async {
        hosts_per_fire(&c, "solo")
            .await
            .keys()
            .any(|at| *at > resumed_at + chrono::Duration::seconds(3))
    })
    .await;
    let after = single(&hosts_per_fire(&c, "solo").await);
    let moved: Vec<(&DateTime<Utc>, &String)> = after
        .iter()
        .filter(|(at, _)| **at > paused_at + chrono::Duration::seconds(1) && **at < resumed_at)
        .collect();
    assert!(moved.len() >= 5, "{after:#?}");
    for (at, host) in &moved {
        assert_ne!(**host, owner, "fire {at} ran on the stopped host");
    }
    // No fire between the stop and the wake-up was dropped: the stopped host's were replaced.
    let first = *moved[0].0;
    let last = *moved[moved.len() - 1].0;
    let mut at = first;
    while at <= last {
        assert!(after.contains_key(&at), "fire {at} did not run: {after:#?}");
        at += chrono::Duration::seconds(1);
    }
}

/// Three managers, three agents, a 1 Hz `RunOn: one` job; the raft leader is killed (kill -9)
/// twice. No fire ever runs twice; every fire outside the election windows runs once; a fire
/// inside one ran at most once (started late within its Grace, or missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_neither_doubles_nor_drops_a_fire() {
    let mut args: Vec<&str> = FAST_RAFT.to_vec();
    args.extend(["--directive-ack-timeout", "2s"]);
    let mut c = Cluster::start(3, &args).await;
    let fleet: Vec<Agent> = (1..=3)
        .map(|i| {
            Agent::start(
                AgentOptions::new(&format!("node-{i}"), &format!("127.0.0.{}", i + 1)).cluster(&c),
            )
        })
        .collect();
    let client = c.client(0);
    wait_until(LONG, "every agent Ready", || async {
        client.list_nodes().await.is_ok_and(|nodes| {
            nodes
                .iter()
                .filter(|n| n.status == NodeStatus::Ready)
                .count()
                == 3
        })
    })
    .await;
    client
        .save_job_text("solo", &solo("random"))
        .await
        .expect("save");
    wait_until(LONG, "five fires of solo ran", || async {
        hosts_per_fire(&client, "solo").await.len() >= 5
    })
    .await;

    let mut windows: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for _ in 0..2 {
        let leader = c.wait_leader(LONG).await;
        let killed_at = Utc::now();
        c.members[leader].kill9();
        let new_leader = c.wait_leader(LONG).await;
        assert_ne!(new_leader, leader);
        let reader = c.client(new_leader);
        // The new leader fires again: a fire after its election ran.
        let elected_at = Utc::now();
        wait_until(LONG, "a fire after the election ran", || async {
            hosts_per_fire(&reader, "solo")
                .await
                .keys()
                .any(|at| *at > elected_at + chrono::Duration::seconds(1))
        })
        .await;
        windows.push((
            killed_at - chrono::Duration::seconds(1),
            elected_at + chrono::Duration::seconds(1),
        ));
        c.restart(leader);
        c.wait_voters(3, Duration::from_secs(60)).await;
        // A few quiet fires between the rounds.
        let back = Utc::now();
        wait_until(LONG, "fires after the member came back", || async {
            hosts_per_fire(&reader, "solo")
                .await
                .keys()
                .filter(|at| **at > back)
                .count()
                >= 3
        })
        .await;
    }
    let end = Utc::now() - chrono::Duration::seconds(3);
    let leader = c.wait_leader(LONG).await;
    let fires = single(&hosts_per_fire(&c.client(leader), "solo").await);
    let first = *fires.keys().next().expect("fires ran");
    let in_window = |at: DateTime<Utc>| windows.iter().any(|(a, b)| at >= *a && at <= *b);
    let mut at = first;
    while at <= end {
        if !fires.contains_key(&at) {
            assert!(
                in_window(at),
                "fire {at} outside the election windows {windows:?} did not run: {fires:#?}"
            );
        }
        at += chrono::Duration::seconds(1);
    }
    // Runs were spread by the random pick, all of them cron runs of a fire.
    let hosts: BTreeSet<&String> = fires.values().collect();
    assert!(hosts.len() >= 2, "{fires:#?}");
    drop(fleet);
}

/// `RunOn: 0`, an unknown `Pick`, `RetryOnAnother` (or `Pick`) without `RunOn`, and `RunOn`
/// without a schedule: 400 with the field named, and nothing saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_run_on_fields_are_refused_and_nothing_is_saved() {
    let m = Manager::start();
    let c = m.client();
    let cron = r#""JobName":"bad","Command":"true","CronExpr":"* * * * * * *""#;
    for (extra, field) in [
        (r#","RunOn":0"#, "RunOn"),
        (r#","RunOn":"none""#, "RunOn"),
        (r#","RunOn":"one","Pick":"round_robin""#, "Pick"),
        (r#","RetryOnAnother":true"#, "RetryOnAnother"),
        (r#","Pick":"hash""#, "Pick"),
    ] {
        let text = format!("{{{cron}{extra}}}");
        let e = c.save_job_text("bad", &text).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{text}: {e}");
        assert!(e.to_string().contains(field), "{text}: {e}");
    }
    let e = c
        .save_job_text(
            "bad",
            r#"{"JobName":"bad","Command":"true","CronExpr":"","RunOn":"one"}"#,
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("CronExpr"), "{e}");
    assert!(c.list_jobs().await.unwrap().is_empty());
    assert!(c.get_job("bad").await.is_err());
    // The same fields, right: saved and shown back.
    c.save_job_text(
        "good",
        r#"{"JobName":"good","Command":"true","CronExpr":"0 3 * * *","RunOn":2,"Pick":"least_loaded","RetryOnAnother":1}"#,
    )
    .await
    .expect("save");
    let job = c.get_job("good").await.unwrap();
    assert_eq!(job.record.spec.run_on, op_proto::job::RunOn::Hosts(2));
    assert!(job.record.spec.retry_on_another);
}

/// `RetryOnAnother`: the picked host (`Pick: hash`) starts failing the job; each later fire's
/// failed run is retried once on another host, where it succeeds: one failure and one success
/// per fire, never a second retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_another_retries_a_failed_fire_once_elsewhere() {
    let m = Manager::start_with(ManagerOptions {
        args: ["--directive-ack-timeout", "2s"].map(String::from).to_vec(),
        ..ManagerOptions::default()
    });
    let agents = fleet(&m, 3, &[]).await;
    let c = m.client();
    c.save_job_text(
        "flaky",
        r#"{"JobName":"flaky","Command":"test ! -e \"$OP_DEPLOY_DIR/fail\"","CronExpr":"* * * * * * *",
            "RunOn":"one","Pick":"hash","RetryOnAnother":1}"#,
    )
    .await
    .expect("save");
    wait_until(LONG, "three fires of flaky ran", || async {
        hosts_per_fire(&c, "flaky").await.len() >= 3
    })
    .await;
    let owner = single(&hosts_per_fire(&c, "flaky").await)
        .values()
        .next()
        .unwrap()
        .clone();
    let agent = agents
        .iter()
        .find(|a| a.options.node_name == owner)
        .expect("the owner is one of the agents");
    std::fs::create_dir_all(agent.deploy_dir()).unwrap();
    std::fs::write(agent.deploy_dir().join("fail"), b"").unwrap();
    let broken_at = Utc::now() + chrono::Duration::seconds(1);

    let outcomes = || async {
        let mut per_fire: BTreeMap<DateTime<Utc>, Vec<(String, op_proto::RunStatus)>> =
            BTreeMap::new();
        for r in runs_of(&c, "flaky").await {
            if let Some(at) = r.planned_at.filter(|at| *at > broken_at) {
                per_fire.entry(at).or_default().push((r.hostname, r.status));
            }
        }
        per_fire
    };
    wait_until(
        LONG,
        "four failed fires were retried and succeeded",
        || async {
            outcomes()
                .await
                .values()
                .filter(|runs| runs.iter().any(|(_, s)| *s == op_proto::RunStatus::Ok))
                .count()
                >= 4
        },
    )
    .await;
    for (at, runs) in outcomes().await {
        assert!(runs.len() <= 2, "fire {at}: {runs:?}");
        let failed: Vec<&(String, op_proto::RunStatus)> = runs
            .iter()
            .filter(|(_, s)| *s == op_proto::RunStatus::Failed)
            .collect();
        let ok: Vec<&(String, op_proto::RunStatus)> = runs
            .iter()
            .filter(|(_, s)| *s == op_proto::RunStatus::Ok)
            .collect();
        assert!(ok.len() <= 1, "fire {at} succeeded twice: {runs:?}");
        if let Some((host, _)) = ok.first() {
            assert_ne!(*host, owner, "fire {at}: {runs:?}");
            assert_eq!(failed.len(), 1, "fire {at}: {runs:?}");
            assert_eq!(failed[0].0, owner, "fire {at}: {runs:?}");
        }
    }
}

/// A drained host and a host a pause covers are never picked for a `RunOn` fire (the leader
/// fires, not the agent, so the leader applies the holds): draining the host `Pick: hash` chose
/// moves the fires to another host, and pausing the job on every host stops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_on_never_picks_a_drained_or_paused_host() {
    let m = Manager::start_with(ManagerOptions {
        args: ["--fire-check-every", "1s", "--fire-settle", "2s"]
            .map(String::from)
            .to_vec(),
        ..ManagerOptions::default()
    });
    let _agents = fleet(&m, 2, &[]).await;
    let c = m.client();
    c.save_job_text("solo", &solo("hash")).await.expect("save");
    wait_until(LONG, "three fires of solo ran", || async {
        hosts_per_fire(&c, "solo").await.len() >= 3
    })
    .await;
    let owner = single(&hosts_per_fire(&c, "solo").await)
        .into_values()
        .next()
        .unwrap();
    let agentcli = |args: &[&str]| {
        let out = std::process::Command::new(op_testkit::bin("agentcli"))
            .args(args)
            .env("OP_MANAGER", &m.api_url)
            .env("OP_TOKEN", &m.admin_token)
            .output()
            .expect("agentcli runs");
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    agentcli(&["drain", &owner]);
    let drained_at = Utc::now() + chrono::Duration::seconds(1);
    wait_until(
        LONG,
        "three fires after the drain ran elsewhere",
        || async {
            hosts_per_fire(&c, "solo")
                .await
                .iter()
                .filter(|(at, _)| **at > drained_at)
                .count()
                >= 3
        },
    )
    .await;
    let after = single(&hosts_per_fire(&c, "solo").await);
    assert!(
        after
            .iter()
            .filter(|(at, _)| **at > drained_at)
            .all(|(_, h)| *h != owner),
        "{after:#?}"
    );

    // Paused on every host: no fire starts until resume.
    agentcli(&["pause", "--job", "solo"]);
    let paused_at = Utc::now() + chrono::Duration::seconds(1);
    agentcli(&["undrain", &owner]);
    // Barrier: a 1 Hz probe job saved after the pause ran three times, so several solo fires
    // were due meanwhile.
    c.save_job_text(
        "probe",
        r#"{"JobName":"probe","Command":"true","CronExpr":"* * * * * * *"}"#,
    )
    .await
    .expect("save probe");
    wait_until(LONG, "the probe ran three times", || async {
        runs_of(&c, "probe").await.len() >= 6
    })
    .await;
    let during = hosts_per_fire(&c, "solo").await;
    assert!(
        during.keys().all(|at| *at <= paused_at),
        "fires ran while paused: {during:#?}"
    );
    // The judge agrees while the pause holds: the fires every host was held for were not
    // expected anywhere, so nothing is missed.
    wait_until(LONG, "fires inside the pause are judged", || async {
        c.get_job("solo").await.is_ok_and(|j| {
            j.last_fires
                .iter()
                .any(|f| f.fire > paused_at + chrono::Duration::seconds(2))
        })
    })
    .await;
    let missed = missed_events(&c, "solo").await;
    assert!(missed.is_empty(), "{missed:#?}");
    agentcli(&["resume", "--job", "solo"]);
    let resumed_at = Utc::now();
    wait_until(LONG, "solo fires again after resume", || async {
        hosts_per_fire(&c, "solo")
            .await
            .keys()
            .any(|at| *at > resumed_at)
    })
    .await;
}
