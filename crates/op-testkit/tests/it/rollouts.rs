//! Staged rollouts (issue 21) on real agents and a real manager: a package version reaches one
//! host, then half, then all (checked on disk); a failing job revision halts its rollout and the
//! other hosts keep the previous revision (with `--auto-rollback` the first host returns to it);
//! a once-job revision runs once per host across stages; a host added during a rollout gets what
//! its rank allows; bad input is refused with nothing changed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use op_client::Client;
use op_proto::rollout::{RolloutInfo, RolloutState, RolloutStatus};
use op_proto::{NodeStatus, RunStatus, Trigger};
use op_testkit::{Agent, AgentOptions, Manager, wait_until};

use crate::support::{LONG, agentcli, fleet, runs_of, text};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "agentcli failed ({}): {}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The only rollout there is.
async fn the_rollout(c: &Client) -> RolloutInfo {
    let list = c.rollouts().await.expect("rollouts");
    assert_eq!(list.len(), 1, "{list:#?}");
    list.into_iter().next().unwrap()
}

async fn status(c: &Client, r: &RolloutInfo) -> RolloutStatus {
    c.rollout(&r.id.to_string()).await.expect("rollout status")
}

/// Each agent's deployed `tool.sh` content (None: not there yet).
fn on_disk(agents: &[Agent]) -> BTreeMap<String, Option<String>> {
    agents
        .iter()
        .map(|a| {
            (
                a.options.node_name.clone(),
                std::fs::read_to_string(a.deploy_dir().join("tool.sh")).ok(),
            )
        })
        .collect()
}

/// Every kept event of `kind`.
async fn kind_events(c: &Client, kind: &str) -> Vec<op_proto::events::Event> {
    let mut stream = c
        .events(&op_client::EventQuery {
            kinds: vec![kind.to_string()],
            ..op_client::EventQuery::default()
        })
        .await
        .expect("events");
    let mut out = Vec::new();
    while let Some(e) = stream.next().await.expect("event stream") {
        out.push(e);
    }
    out
}

fn count(files: &BTreeMap<String, Option<String>>, content: &str) -> usize {
    files
        .values()
        .filter(|c| c.as_deref() == Some(content))
        .count()
}

/// 10 agents, `tool.sh` v1 everywhere, then v2 with `--rollout 1,50%,100% --step-wait 2s`: one
/// host has v2 on disk while nine keep v1, then five and five, then all ten; a host with v2 is
/// always one the rollout admitted; the rollout finishes, with events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_reaches_one_host_then_half_then_all() {
    let m = Manager::start();
    let agents = fleet(&m, 10, &[]).await;
    let c = m.client();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("tool.sh");
    std::fs::write(&file, "v1").unwrap();
    ok(&agentcli(&m, &["upload", file.to_str().unwrap()]).await);
    wait_until(LONG, "v1 on every host", || async {
        count(&on_disk(&agents), "v1") == 10
    })
    .await;

    std::fs::write(&file, "v2").unwrap();
    let out = ok(&agentcli(
        &m,
        &[
            "upload",
            file.to_str().unwrap(),
            "--rollout",
            "1,50%,100%",
            "--step-wait",
            "2s",
        ],
    )
    .await);
    assert!(out.contains("rollout"), "{out}");
    let r = the_rollout(&c).await;
    assert_eq!(r.plan.stages_text(), "1,50%,100%");

    // Sample until every host has v2: who has v2 was admitted, and the stages show on disk.
    let mut seen_one = false;
    let mut seen_half = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let files = on_disk(&agents);
        let st = status(&c, &r).await;
        let admitted: BTreeSet<&str> = st
            .hosts
            .iter()
            .filter(|h| h.admitted)
            .map(|h| h.hostname.as_str())
            .collect();
        for (host, content) in &files {
            if content.as_deref() == Some("v2") {
                assert!(
                    admitted.contains(host.as_str()),
                    "{host} has v2 but is not admitted: {st:#?}"
                );
            }
        }
        let v2 = count(&files, "v2");
        if v2 == 1 && count(&files, "v1") == 9 {
            seen_one = true;
        }
        if v2 == 5 && count(&files, "v1") == 5 {
            seen_half = true;
        }
        if v2 == 10 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "v2 never reached every host: {files:?} {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_one, "never saw exactly one host on v2 and nine on v1");
    assert!(seen_half, "never saw five hosts on v2 and five on v1");
    wait_until(LONG, "the rollout finished", || async {
        the_rollout(&c).await.state == RolloutState::Finished
    })
    .await;
    let advanced = kind_events(&c, "rollout.advanced").await;
    assert_eq!(advanced.len(), 2, "{advanced:#?}");
    assert_eq!(kind_events(&c, "rollout.finished").await.len(), 1);
    let json = ok(&agentcli(&m, &["rollout", "status", &r.id.to_string(), "-o", "json"]).await);
    let st: RolloutStatus = serde_json::from_str(&json).unwrap();
    assert_eq!((st.admitted, st.selected), (10, 10));
    assert!(st.hosts.iter().all(|h| h.has_new), "{st:#?}");
}

const CANARY_V1: &str = r#"{"JobName":"canary","Command":"true","CronExpr":"* * * * * * *"}"#;
const CANARY_V2: &str = r#"{"JobName":"canary","Command":"false","CronExpr":"* * * * * * *"}"#;

/// The hosts with a cron run of `canary` at `revision` and `status` that started after `after`.
async fn hosts_with(
    c: &Client,
    revision: u64,
    status: RunStatus,
    after: chrono::DateTime<Utc>,
) -> BTreeSet<String> {
    runs_of(c, "canary")
        .await
        .into_iter()
        .filter(|r| r.trigger == Trigger::Cron && r.job_revision == revision && r.status == status)
        .filter(|r| r.started_at.is_some_and(|t| t > after))
        .map(|r| r.hostname)
        .collect()
}

/// Saves `canary` (true, every second) on 10 agents, then a revision that fails, staged
/// `1,100% --halt-on 1`: the rollout halts after the first host fails, only that host ever runs
/// revision 2, and the nine others keep running revision 1. With `--auto-rollback` the first host
/// runs revision 1 again too.
async fn failing_revision_halts(auto_rollback: bool) {
    let m = Manager::start();
    let _agents = fleet(&m, 10, &[]).await;
    let c = m.client();
    c.save_job_text("canary", CANARY_V1).await.expect("save v1");
    let t0 = Utc::now() - chrono::Duration::seconds(5);
    wait_until(LONG, "revision 1 ran on every host", || async {
        hosts_with(&c, 1, RunStatus::Ok, t0).await.len() == 10
    })
    .await;

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("canary.json");
    std::fs::write(&file, CANARY_V2).unwrap();
    let mut args = vec![
        "save",
        file.to_str().unwrap(),
        "--rollout",
        "1,100%",
        "--halt-on",
        "1",
        "--step-wait",
        "60s",
    ];
    if auto_rollback {
        args.push("--auto-rollback");
    }
    ok(&agentcli(&m, &args).await);
    let want = if auto_rollback {
        RolloutState::RolledBack
    } else {
        RolloutState::Halted
    };
    wait_until(LONG, "the rollout halted", || async {
        the_rollout(&c).await.state == want
    })
    .await;
    let halted_at = Utc::now();
    let r = the_rollout(&c).await;
    assert_eq!(r.stage, 0, "it never left the first stage: {r:#?}");
    assert!(
        r.reason.as_deref().unwrap_or("").contains("HaltOn 1"),
        "{r:#?}"
    );
    let failed = hosts_with(&c, 2, RunStatus::Failed, t0).await;
    assert_eq!(failed.len(), 1, "one host ran revision 2: {failed:?}");
    let first = failed.iter().next().unwrap().clone();
    let halted = kind_events(&c, "rollout.halted").await;
    assert_eq!(halted.len(), 1, "{halted:#?}");
    assert_eq!(halted[0].hosts, vec![first.clone()]);

    // The nine others keep running revision 1 after the halt.
    wait_until(LONG, "the other hosts run revision 1", || async {
        let ok1 = hosts_with(&c, 1, RunStatus::Ok, halted_at).await;
        ok1.len() >= 9
    })
    .await;
    let ok1 = hosts_with(&c, 1, RunStatus::Ok, halted_at).await;
    if auto_rollback {
        wait_until(LONG, "the first host runs revision 1 again", || async {
            hosts_with(&c, 1, RunStatus::Ok, halted_at)
                .await
                .contains(&first)
        })
        .await;
        let st = status(&c, &r).await;
        assert_eq!(st.admitted, 0, "{st:#?}");
    } else {
        assert!(
            !ok1.contains(&first),
            "{first} went back without auto-rollback"
        );
        let st = status(&c, &r).await;
        assert_eq!(st.admitted, 1, "{st:#?}");
    }
    let ran_v2: BTreeSet<String> = runs_of(&c, "canary")
        .await
        .into_iter()
        .filter(|r| r.job_revision == 2)
        .map(|r| r.hostname)
        .collect();
    assert_eq!(ran_v2, BTreeSet::from([first]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_revision_halts_and_the_others_keep_the_previous() {
    failing_revision_halts(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_revision_with_auto_rollback_returns_the_first_host() {
    failing_revision_halts(true).await;
}

/// A once-job revision staged `1,100% --step-wait 2s` on 5 agents: while the first stage holds,
/// only its host ran it; in the end every host ran it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_once_job_under_a_rollout_runs_once_per_host_across_stages() {
    let m = Manager::start();
    let _agents = fleet(&m, 5, &[]).await;
    let c = m.client();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("setup.json");
    std::fs::write(
        &file,
        r#"{"JobName":"setup","Command":"echo set up","OnceJob":1,
            "Rollout":{"Stages":["1","100%"],"StepWait":"3s"}}"#,
    )
    .unwrap();
    ok(&agentcli(&m, &["save", file.to_str().unwrap()]).await);
    let r = the_rollout(&c).await;
    assert_eq!(r.plan.step_wait_secs, 3);
    let ran = |runs: Vec<op_proto::RunRecord>| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in runs.into_iter().filter(|r| r.status == RunStatus::Ok) {
            *m.entry(r.hostname).or_default() += 1;
        }
        m
    };
    wait_until(LONG, "the first host ran it", || async {
        !ran(runs_of(&c, "setup").await).is_empty()
    })
    .await;
    let st = status(&c, &r).await;
    if st.rollout.stage == 0 {
        let early = ran(runs_of(&c, "setup").await);
        let admitted: BTreeSet<String> = st
            .hosts
            .iter()
            .filter(|h| h.admitted)
            .map(|h| h.hostname.clone())
            .collect();
        assert!(
            early.keys().all(|h| admitted.contains(h)),
            "{early:?} ran outside {admitted:?}"
        );
    }
    wait_until(LONG, "every host ran it", || async {
        ran(runs_of(&c, "setup").await).len() == 5
    })
    .await;
    wait_until(LONG, "the rollout finished", || async {
        the_rollout(&c).await.state == RolloutState::Finished
    })
    .await;
    // Nothing runs twice: judged once every agent has synced (and been answered the finished
    // job set) after the rollout ended, not after a guessed time.
    let past = chrono::Utc::now() + chrono::Duration::seconds(2);
    wait_until(LONG, "every agent synced past the end", || async {
        c.list_nodes()
            .await
            .is_ok_and(|n| n.len() == 5 && n.iter().all(|n| n.last_seen > past))
    })
    .await;
    let all = ran(runs_of(&c, "setup").await);
    assert!(all.values().all(|n| *n == 1), "{all:?}");
}

/// 4 agents on v1, v2 staged `1,100%` with a long wait; a fifth agent joins: it gets v2 exactly
/// when its rank admits it (the status says which), and after `promote` every host has v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_added_during_a_rollout_gets_what_its_rank_allows() {
    let m = Manager::start();
    let mut agents = fleet(&m, 4, &[]).await;
    let c = m.client();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("tool.sh");
    std::fs::write(&file, "v1").unwrap();
    ok(&agentcli(&m, &["upload", file.to_str().unwrap()]).await);
    wait_until(LONG, "v1 on every host", || async {
        count(&on_disk(&agents), "v1") == 4
    })
    .await;
    std::fs::write(&file, "v2").unwrap();
    ok(&agentcli(
        &m,
        &[
            "upload",
            file.to_str().unwrap(),
            "--rollout",
            "1,100%",
            "--step-wait",
            "10m",
        ],
    )
    .await);
    let r = the_rollout(&c).await;
    wait_until(LONG, "one host on v2", || async {
        count(&on_disk(&agents), "v2") == 1
    })
    .await;

    agents.push(Agent::start(
        AgentOptions::new("node-5", "127.0.0.6").manager(&m),
    ));
    wait_until(LONG, "node-5 deployed tool.sh", || async {
        on_disk(&agents)["node-5"].is_some()
    })
    .await;
    let st = status(&c, &r).await;
    let five = st
        .hosts
        .iter()
        .find(|h| h.hostname == "node-5")
        .expect("node-5 is selected");
    let want = if five.admitted { "v2" } else { "v1" };
    assert_eq!(on_disk(&agents)["node-5"].as_deref(), Some(want), "{st:#?}");
    assert_eq!(
        count(&on_disk(&agents), "v2"),
        1 + usize::from(five.admitted)
    );

    // The console's Rollouts page lists it; its page shows the hosts and the buttons.
    let list = crate::support::console_get(&m, &m.admin_token, "/ui/rollouts").await;
    assert!(list.contains(&r.id.to_string()), "{list}");
    let page =
        crate::support::console_get(&m, &m.admin_token, &format!("/ui/rollouts/{}", r.id)).await;
    for want in [
        "node-5", "admitted", "previous", "Pause", "Promote", "Abort",
    ] {
        assert!(page.contains(want), "{want} missing: {page}");
    }
    ok(&agentcli(&m, &["rollout", "promote", &r.id.to_string()]).await);
    wait_until(LONG, "v2 on every host", || async {
        count(&on_disk(&agents), "v2") == 5
    })
    .await;
    assert_eq!(the_rollout(&c).await.state, RolloutState::Finished);
}

/// Stages not increasing, 0 %, a bad HaltOn, an unknown rollout id or action: clear 4xx, and
/// nothing was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rollouts_are_refused_and_change_nothing() {
    let m = Manager::start();
    let c = m.client();
    let query = |stages: &str| vec![("rollout", stages.to_string())];
    for stages in ["10,5", "0%", "50%,10%", "0", "1,x"] {
        let e = c
            .upload_package_with(
                "tool.sh",
                None,
                Some(2),
                futures_util::stream::once(async { Ok::<_, std::io::Error>(b"v1".to_vec()) }),
                &query(stages),
            )
            .await
            .expect_err(stages);
        assert_eq!(e.status(), Some(400), "{stages}: {e}");
        assert!(e.to_string().contains("rollout"), "{e}");
    }
    let e = c
        .save_job_text_with("canary", CANARY_V1, &query("5,2"))
        .await
        .expect_err("not increasing");
    assert_eq!(e.status(), Some(400), "{e}");
    let e = c
        .save_job_text(
            "canary",
            r#"{"JobName":"canary","Command":"true","CronExpr":"* * * * * * *",
                "Rollout":{"Stages":["1"],"HaltOn":"0"}}"#,
        )
        .await
        .expect_err("HaltOn 0");
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(c.list_packages().await.unwrap().is_empty());
    assert!(c.list_jobs().await.unwrap().is_empty());
    assert!(c.rollouts().await.unwrap().is_empty());

    let unknown = uuid::Uuid::now_v7().to_string();
    let e = c.rollout(&unknown).await.expect_err("unknown");
    assert_eq!(e.status(), Some(404), "{e}");
    let e = c
        .rollout_action(&unknown, "pause")
        .await
        .expect_err("unknown");
    assert_eq!(e.status(), Some(404), "{e}");
    let e = c.rollout("not-an-id").await.expect_err("bad id");
    assert_eq!(e.status(), Some(400), "{e}");
    let out = agentcli(&m, &["rollout", "abort", &unknown]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no rollout"),
        "{}",
        text(&out.stderr)
    );
    let out = agentcli(&m, &["upload", "/etc/hostname", "--rollout", "0%"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("1% to 100%"),
        "{}",
        text(&out.stderr)
    );
}

/// Uploads `content` as `tool.sh` through `c`, staged by `query`.
async fn upload_tool(c: &Client, content: &'static str, query: &[(&str, String)]) {
    c.upload_package_with(
        "tool.sh",
        None,
        Some(content.len() as u64),
        futures_util::stream::once(
            async move { Ok::<_, std::io::Error>(content.as_bytes().to_vec()) },
        ),
        query,
    )
    .await
    .expect("upload");
}

/// Three managers, six agents, `tool.sh` v2 staged `1,50%,100% --step-wait 3s`; the raft leader
/// is killed (kill -9) while the first stage holds. The new leader carries the rollout on to
/// every host, and at no sample does a host hold v2 without being admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_rollout_continues_where_it_was() {
    let mut c = op_testkit::Cluster::start(3, op_testkit::FAST_RAFT).await;
    let agents: Vec<Agent> = (1..=6)
        .map(|i| {
            Agent::start(
                AgentOptions::new(&format!("node-{i}"), &format!("127.0.0.{}", i + 1)).cluster(&c),
            )
        })
        .collect();
    let leader = c.wait_leader(LONG).await;
    let client = c.client(leader);
    wait_until(LONG, "every agent Ready", || async {
        client.list_nodes().await.is_ok_and(|nodes| {
            nodes
                .iter()
                .filter(|n| n.status == op_proto::NodeStatus::Ready)
                .count()
                == 6
        })
    })
    .await;
    upload_tool(&client, "v1", &[]).await;
    wait_until(LONG, "v1 on every host", || async {
        count(&on_disk(&agents), "v1") == 6
    })
    .await;
    upload_tool(
        &client,
        "v2",
        &[
            ("rollout", "1,50%,100%".to_string()),
            ("step_wait", "3s".to_string()),
        ],
    )
    .await;
    let r = the_rollout(&client).await;
    wait_until(LONG, "the first host has v2", || async {
        count(&on_disk(&agents), "v2") == 1
    })
    .await;
    let before = the_rollout(&client).await;
    assert_eq!(before.stage, 0, "{before:#?}");

    c.members[leader].kill9();
    let new_leader = c.wait_leader(LONG).await;
    assert_ne!(new_leader, leader);
    let reader = c.client(new_leader);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let files = on_disk(&agents);
        if let Ok(st) = reader.rollout(&r.id.to_string()).await {
            for h in &st.hosts {
                if files[&h.hostname].as_deref() == Some("v2") {
                    assert!(
                        h.admitted,
                        "{} has v2 but is not admitted: {st:#?}",
                        h.hostname
                    );
                }
            }
            if count(&files, "v2") == 6 && st.rollout.state == RolloutState::Finished {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rollout did not finish after the election: {files:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let advanced = kind_events(&reader, "rollout.advanced").await;
    assert_eq!(advanced.len(), 2, "each stage entered once: {advanced:#?}");
    drop(agents);
}

/// A package version that cannot be deployed (an archive that is not one), staged
/// `1,100% --halt-on 1`: the first host's failed deploy halts the rollout, and no other host is
/// ever sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deploy_halts_a_package_rollout() {
    let m = Manager::start();
    let agents = fleet(&m, 4, &[]).await;
    let c = m.client();
    let body: &'static str = "this is not a gzip archive";
    c.upload_package_with(
        "broken.tar.gz",
        None,
        Some(body.len() as u64),
        futures_util::stream::once(
            async move { Ok::<_, std::io::Error>(body.as_bytes().to_vec()) },
        ),
        &[
            ("rollout", "1,100%".to_string()),
            ("halt_on", "1".to_string()),
            ("step_wait", "60s".to_string()),
        ],
    )
    .await
    .expect("upload");
    wait_until(LONG, "the rollout halted", || async {
        the_rollout(&c).await.state == RolloutState::Halted
    })
    .await;
    let r = the_rollout(&c).await;
    let st = status(&c, &r).await;
    assert_eq!((st.admitted, st.failures), (1, 1), "{st:#?}");
    let failed = st.hosts.iter().find(|h| h.failed.is_some()).unwrap();
    assert!(failed.admitted);
    // The others were never sent the package: they report nothing about it.
    for n in c.list_nodes().await.unwrap() {
        if n.hostname != failed.hostname {
            assert!(
                n.packages.iter().all(|p| p.name != "broken.tar.gz"),
                "{} was sent it: {:?}",
                n.hostname,
                n.packages
            );
        }
    }
    drop(agents);
}

/// A package's default rollout (`rollout default`): bad input refused with nothing stored; set,
/// it is shown by `get packages` and stages an upload without `--rollout` (one host of four has
/// v2 on disk while the stage waits); `--rollout 100%` reaches every host at once anyway; cleared
/// with `--none`, uploads are unstaged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_default_rollout_stages_uploads_without_rollout() {
    let m = Manager::start();
    let agents = fleet(&m, 4, &[]).await;
    let c = m.client();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("tool.sh");
    let path = file.to_str().unwrap();

    // No package yet: refused, nothing stored.
    let out = agentcli(
        &m,
        &["rollout", "default", "tool.sh", "--rollout", "1,100%"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no package named"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&file, "v1").unwrap();
    ok(&agentcli(&m, &["upload", path]).await);
    wait_until(LONG, "v1 on every host", || async {
        count(&on_disk(&agents), "v1") == 4
    })
    .await;
    // Bad plans: refused by the CLI and, sent directly, by the manager (400); nothing stored.
    let out = agentcli(
        &m,
        &["rollout", "default", "tool.sh", "--rollout", "50%,10%"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("stages must increase"),
        "{}",
        text(&out.stderr)
    );
    for stages in ["0%", "5,2", "x"] {
        let e = c
            .set_package_rollout(
                "tool.sh",
                &op_proto::rollout::RolloutRequest::from_flags(stages, None, None, false),
            )
            .await
            .expect_err(stages);
        assert_eq!(e.status(), Some(400), "{stages}: {e}");
    }
    let e = c
        .set_package_rollout(
            "tool.sh",
            &op_proto::rollout::RolloutRequest::from_flags("1", Some("soon"), None, false),
        )
        .await
        .expect_err("bad step wait");
    assert_eq!(e.status(), Some(400), "{e}");
    let e = c.clear_package_rollout("tool.sh").await.expect_err("none");
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(c.package_rollouts().await.unwrap().is_empty());

    let out = ok(&agentcli(
        &m,
        &[
            "rollout",
            "default",
            "tool.sh",
            "--rollout",
            "1,100%",
            "--step-wait",
            "1h",
            "--halt-on",
            "2",
        ],
    )
    .await);
    assert!(out.contains("1,100% step-wait 3600s halt-on 2"), "{out}");
    let listed = ok(&agentcli(&m, &["get", "packages"]).await);
    assert!(listed.contains("ROLLOUT"), "{listed}");
    assert!(listed.contains("1,100% step-wait 3600s"), "{listed}");

    // An upload without --rollout is staged by the default: one host gets v2, three keep v1.
    std::fs::write(&file, "v2").unwrap();
    let out = ok(&agentcli(&m, &["upload", path]).await);
    assert!(out.contains("default rollout"), "{out}");
    let r = the_rollout(&c).await;
    assert_eq!(r.plan.stages_text(), "1,100%");
    assert_eq!(r.plan.step_wait_secs, 3600);
    assert_eq!(r.state, RolloutState::Running);
    wait_until(LONG, "v2 on the first stage's host", || async {
        count(&on_disk(&agents), "v2") == 1
    })
    .await;
    let st = status(&c, &r).await;
    assert_eq!(st.admitted, 1, "{st:#?}");
    assert_eq!(count(&on_disk(&agents), "v1"), 3);

    // An explicit --rollout wins: 100% reaches every host at once.
    std::fs::write(&file, "v3").unwrap();
    ok(&agentcli(&m, &["upload", path, "--rollout", "100%"]).await);
    wait_until(LONG, "v3 on every host", || async {
        count(&on_disk(&agents), "v3") == 4
    })
    .await;
    let list = c.rollouts().await.unwrap();
    assert_eq!(list.len(), 2, "{list:#?}");
    assert!(
        list.iter().any(|x| x.plan.stages_text() == "100%"),
        "{list:#?}"
    );
    assert!(
        list.iter()
            .any(|x| x.id == r.id && x.state == RolloutState::Superseded),
        "{list:#?}"
    );

    // Cleared: the next upload is unstaged (no new rollout) and reaches every host.
    ok(&agentcli(&m, &["rollout", "default", "tool.sh", "--none"]).await);
    assert!(c.package_rollouts().await.unwrap().is_empty());
    let listed = ok(&agentcli(&m, &["get", "packages"]).await);
    assert!(!listed.contains("ROLLOUT"), "{listed}");
    std::fs::write(&file, "v4").unwrap();
    let out = ok(&agentcli(&m, &["upload", path]).await);
    assert!(!out.contains("rollout"), "{out}");
    wait_until(LONG, "v4 on every host", || async {
        count(&on_disk(&agents), "v4") == 4
    })
    .await;
    assert_eq!(c.rollouts().await.unwrap().len(), 2);
    // Every change is audited.
    let audit = ok(&agentcli(&m, &["audit"]).await);
    assert!(audit.contains("package.rollout"), "{audit}");
}

/// An agent release staged `1,100% --step-wait 0` over two guarded agents, one pinned on the
/// running version (`agent pin`): the pinned host never reports the new version, so the rollout
/// does not wait on it; it finishes, `rollout status` shows the host excluded, and the host
/// keeps its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_release_rollout_does_not_wait_on_pinned_hosts() {
    const OLD: &str = env!("CARGO_PKG_VERSION");
    let next_version = format!("{OLD}.1");
    let m = Manager::start();
    let _agents: Vec<Agent> = (1..=2)
        .map(|i| {
            Agent::start(
                AgentOptions::new(&format!("node-{i}"), &format!("127.0.0.{}", i + 1))
                    .manager(&m)
                    .guarded(),
            )
        })
        .collect();
    let c = m.client();
    let version_of = |host: &'static str| {
        let c = c.clone();
        async move {
            c.list_nodes()
                .await
                .ok()
                .and_then(|ns| ns.into_iter().find(|n| n.hostname == host))
                .map(|n| (n.agent_version, n.status))
        }
    };
    wait_until(LONG, "both agents Ready", || async {
        c.list_nodes()
            .await
            .is_ok_and(|ns| ns.len() == 2 && ns.iter().all(|n| n.status == NodeStatus::Ready))
    })
    .await;
    ok(&agentcli(&m, &["agent", "pin", "node-2", OLD]).await);
    let tmp = tempfile::tempdir().unwrap();
    let next = tmp.path().join("op-agent");
    std::fs::copy(op_testkit::bin("op-agent-next"), &next).unwrap();
    ok(&agentcli(
        &m,
        &[
            "agent",
            "upgrade",
            "start",
            next.to_str().unwrap(),
            "--version",
            &next_version,
            "--rollout",
            "1,100%",
            "--step-wait",
            "0",
        ],
    )
    .await);
    let r = the_rollout(&c).await;
    wait_until(
        Duration::from_secs(120),
        "the release rollout finished",
        || async {
            c.rollout(&r.id.to_string())
                .await
                .is_ok_and(|st| st.rollout.state == RolloutState::Finished)
        },
    )
    .await;
    let st = status(&c, &r).await;
    assert_eq!(st.excluded, 1, "{st:#?}");
    let pinned = st.hosts.iter().find(|h| h.hostname == "node-2").unwrap();
    assert_eq!(
        pinned.excluded.as_deref(),
        Some(format!("pinned on agent {OLD}").as_str()),
        "{st:#?}"
    );
    let upgraded = st.hosts.iter().find(|h| h.hostname == "node-1").unwrap();
    assert!(upgraded.has_new && upgraded.excluded.is_none(), "{st:#?}");
    wait_until(LONG, "node-1 Ready on the new version", || async {
        version_of("node-1").await == Some((next_version.clone(), NodeStatus::Ready))
    })
    .await;
    assert_eq!(version_of("node-2").await.unwrap().0, OLD);
    let shown = ok(&agentcli(&m, &["rollout", "status", &r.id.to_string()]).await);
    assert!(shown.contains("excluded:   1 host(s)"), "{shown}");
    assert!(shown.contains(&format!("pinned on agent {OLD}")), "{shown}");
}
