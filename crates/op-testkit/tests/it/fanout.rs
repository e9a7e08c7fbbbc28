//! Run now, anywhere (issue 6): `agentcli exec` and `agentcli run` against one real manager and
//! real agents. Results stream back per host; parameters stay literal; batches go in order;
//! stop-on-failure, a stopped agent and reconnecting agents behave; a viewer cannot run anything.

use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

use op_proto::api::{CreateTokenRequest, Scope};
use op_proto::invoke::{HostResult, HostStatus, InvocationEvent, InvocationState, Summary};
use op_proto::{RunStatus, Trigger};
use op_testkit::{Agent, Manager, wait_until};
use uuid::Uuid;

use crate::support::{LONG, agentcli_as as agentcli, fleet, job, local_runs, text};

/// The `-o json` output of run or exec: the results and the summary.
fn events(out: &Output) -> (Vec<HostResult>, Summary) {
    let mut results = Vec::new();
    let mut summary = None;
    for line in text(&out.stdout).lines() {
        let event: InvocationEvent = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not an NDJSON event ({e}): {line}"));
        match event {
            InvocationEvent::Result(r) => results.push(*r),
            InvocationEvent::Summary(s) => summary = Some(s),
            InvocationEvent::Accepted(_) | InvocationEvent::Progress(_) => {}
        }
    }
    let summary = summary.unwrap_or_else(|| {
        panic!(
            "no summary; stdout:\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (results, summary)
}

fn hosts(results: &[HostResult]) -> BTreeSet<String> {
    results.iter().map(|r| r.host.clone()).collect()
}

#[tokio::test]
async fn exec_all_returns_every_hosts_own_output() {
    let m = Manager::start();
    let agents = fleet(&m, 5, &[]).await;
    for a in &agents {
        std::fs::create_dir_all(a.deploy_dir()).unwrap();
        std::fs::write(a.deploy_dir().join("whoami"), &a.options.node_name).unwrap();
    }

    let out = agentcli(&m, None, &["exec", "--all", "--", "ls", "-l", "/tmp"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for a in &agents {
        let header = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{} (", a.options.node_name)))
            .unwrap_or_else(|| panic!("no result of {}:\n{stdout}", a.options.node_name));
        assert!(header.contains("  ok  exit 0"), "{header}");
    }
    assert_eq!(stdout.matches("    total ").count(), 5, "{stdout}");
    assert!(stdout.contains("5 host(s): 5 ok"), "{stdout}");

    // Each host answers with its own output (the file in its own deploy dir).
    let out = agentcli(
        &m,
        None,
        &[
            "exec",
            "--all",
            "-o",
            "json",
            "--",
            "cat $OP_DEPLOY_DIR/whoami",
        ],
    )
    .await;
    let (results, summary) = events(&out);
    assert_eq!((summary.total, summary.ok), (5, 5));
    for r in &results {
        assert_eq!(r.output, r.host, "{r:?}");
        assert_eq!(r.exit_code, Some(0));
    }
    assert_eq!(hosts(&results).len(), 5);
    // Recorded as runs of the ad-hoc job, with the invocation id.
    let c = m.client();
    let runs = c
        .runs(&op_proto::api::RunQuery {
            invocation: Some(summary.invocation_id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 5);
    assert!(
        runs.iter()
            .all(|r| r.job == "adhoc" && r.trigger == Trigger::Adhoc)
    );
}

#[tokio::test]
async fn run_with_params_on_some_hosts_keeps_every_value_literal() {
    let m = Manager::start();
    let agents = fleet(&m, 4, &[]).await;
    let scratch = tempfile::tempdir().unwrap();
    let f = scratch.path().join("F");
    let f = f.to_str().unwrap();
    // One placeholder in each quoting context the seed's templates use.
    let c = m.client();
    c.save_job(&job(
        r#"{"JobName":"echo-params","Command":"printf '%s|%s|%s|%s|%s' '{a}' \"{b}\" {c} '{d}' \"{e}\"",
            "Params":["a","b","c","d","e"]}"#,
    ))
    .await
    .unwrap();
    let values = [
        format!("'; touch {f}; '"),
        format!("$(touch {f})"),
        format!("`touch {f}`"),
        format!("line1\nline2; touch {f}"),
        "say \"hi\" $HOME".to_string(),
    ];
    let mut args: Vec<String> = [
        "run",
        "echo-params",
        "--host",
        "node-2",
        "--host",
        "127.0.0.5",
        "-o",
        "json",
    ]
    .map(String::from)
    .to_vec();
    for (name, v) in ["a", "b", "c", "d", "e"].iter().zip(&values) {
        args.push("--param".into());
        args.push(format!("{name}={v}"));
    }
    args.push("--wait".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = agentcli(&m, None, &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (results, summary) = events(&out);
    assert_eq!(summary.ok, 2);
    assert_eq!(
        hosts(&results),
        BTreeSet::from(["node-2".to_string(), "node-4".to_string()])
    );
    for r in &results {
        assert_eq!(r.output, values.join("|"), "{r:?}");
    }
    assert!(!std::path::Path::new(f).exists(), "an injected command ran");
    // Only the selected hosts ran it.
    for a in &agents {
        let ran = !local_runs(a, "echo-params").await.is_empty();
        let selected = ["node-2", "node-4"].contains(&a.options.node_name.as_str());
        assert_eq!(ran, selected, "{}", a.options.node_name);
    }

    // A missing or undeclared parameter is refused before anything runs.
    let out = agentcli(&m, None, &["run", "echo-params", "--all", "--param", "a=1"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("has no value"),
        "{}",
        text(&out.stderr)
    );
    let out = agentcli(
        &m,
        None,
        &["run", "echo-params", "--all", "--param", "zz=1"],
    )
    .await;
    assert!(
        text(&out.stderr).contains("not declared"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        local_runs(&agents[0], "echo-params").await.len(),
        0,
        "nothing ran"
    );
}

#[tokio::test]
async fn batches_run_in_order_and_stop_on_failure_halts_after_the_failing_batch() {
    let m = Manager::start();
    let agents = fleet(&m, 5, &[]).await;
    let c = m.client();

    let out = agentcli(
        &m,
        None,
        &[
            "exec",
            "--all",
            "--batch",
            "2",
            "-o",
            "json",
            "--",
            "sleep 0.3",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (_, summary) = events(&out);
    let view = c.invocation(summary.invocation_id).await.unwrap();
    let batches: Vec<u32> = view.hosts.iter().map(|h| h.batch).collect();
    assert_eq!(batches, [0, 0, 1, 1, 2]);
    for b in 1..=2u32 {
        let of = |n: u32| view.hosts.iter().filter(move |h| h.batch == n);
        let prev_end = of(b - 1).filter_map(|h| h.ended_at).max().unwrap();
        let start = of(b).filter_map(|h| h.started_at).min().unwrap();
        assert!(
            start >= prev_end,
            "batch {b} started at {start} before batch {} ended at {prev_end}",
            b - 1
        );
    }

    // node-3 (in the second batch) fails; the third batch never starts.
    std::fs::create_dir_all(agents[2].deploy_dir()).unwrap();
    std::fs::write(agents[2].deploy_dir().join("fail"), "").unwrap();
    let out = agentcli(
        &m,
        None,
        &[
            "exec",
            "--all",
            "--batch",
            "2",
            "--max-failures",
            "1",
            "--",
            "test ! -e $OP_DEPLOY_DIR/fail",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("5 host(s): 3 ok, 1 failed, 1 cancelled"),
        "{stdout}"
    );
    assert!(stdout.contains("max_failures 1"), "{stdout}");
    assert!(stdout.contains("node-5 (127.0.0.6)  cancelled"), "{stdout}");
    let node5 = local_runs(&agents[4], "adhoc").await;
    assert_eq!(node5.len(), 1, "node-5 ran only the first exec: {node5:?}");
}

#[tokio::test]
async fn a_stopped_agent_is_unreachable_by_the_deadline_while_the_others_complete() {
    let m = Manager::start();
    let agents = fleet(&m, 3, &[]).await;
    agents[1].pause();
    let started = Instant::now();
    let out = agentcli(
        &m,
        None,
        &[
            "exec",
            "--all",
            "--deadline",
            "3",
            "-o",
            "json",
            "--",
            "echo done",
        ],
    )
    .await;
    let elapsed = started.elapsed();
    agents[1].resume();
    assert_eq!(out.status.code(), Some(1));
    let (results, summary) = events(&out);
    assert_eq!((summary.ok, summary.unreachable), (2, 1), "{results:?}");
    let stopped = results.iter().find(|r| r.host == "node-2").unwrap();
    assert_eq!(stopped.status, HostStatus::Unreachable);
    assert!(
        elapsed < Duration::from_secs(3 + 10),
        "the caller waited {elapsed:?}"
    );
    // Resumed after its deadline, the agent does not start the directive any more.
    let c = m.client();
    let id = summary.invocation_id;
    wait_until(LONG, "the resumed agent syncs again", || async {
        c.get_node("node-2")
            .await
            .is_ok_and(|n| n.last_seen > chrono::Utc::now() - chrono::Duration::seconds(2))
    })
    .await;
    // The directive usually waits in the stopped agent's socket; give it the chance to be acted
    // on (the agent logs that it refused it), then check that it did not run.
    let limit = Instant::now() + Duration::from_secs(5);
    while Instant::now() < limit && !agents[1].log().contains("after its deadline") {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(local_runs(&agents[1], "adhoc").await.is_empty());
    let view = c.invocation(id).await.unwrap();
    let node2 = view.hosts.iter().find(|h| h.host == "node-2").unwrap();
    assert!(node2.late.is_none(), "{node2:?}");
}

#[tokio::test]
async fn a_stopped_agent_is_unresponsive_within_seconds_while_an_acknowledged_slow_host_runs_on() {
    // Acknowledgement time 2 s; the deadline is the default (60 s + Timeout).
    let m = Manager::start_with(op_testkit::ManagerOptions {
        args: vec!["--directive-ack-timeout".into(), "2s".into()],
        ..Default::default()
    });
    // node-3's jobs see SLOW_HOST=1: it runs longer than the acknowledgement time and, having
    // acknowledged, is waited for.
    let agents: Vec<Agent> = (1..=3)
        .map(|i| {
            let mut o =
                op_testkit::AgentOptions::new(&format!("node-{i}"), &format!("127.0.0.{}", i + 1))
                    .manager(&m);
            if i == 3 {
                o = o.env("SLOW_HOST", "1");
            }
            Agent::start(o)
        })
        .collect();
    let c = m.client();
    wait_until(LONG, "every agent Ready", || async {
        c.list_nodes().await.is_ok_and(|nodes| {
            nodes
                .iter()
                .filter(|n| n.status == op_proto::NodeStatus::Ready)
                .count()
                == 3
        })
    })
    .await;
    // Real agents hold watches (issue 25): a stopped one keeps its socket open, and only the
    // missing acknowledgement tells the manager.
    wait_until(LONG, "three open watches", || async {
        c.metrics()
            .await
            .is_ok_and(|t| t.lines().any(|l| l == "op_manager_watches_open 3"))
    })
    .await;
    agents[1].pause();
    let started = Instant::now();
    let out = agentcli(
        &m,
        None,
        &[
            "exec",
            "--all",
            "-o",
            "json",
            "--",
            "[ \"$SLOW_HOST\" = 1 ] && sleep 4; echo done",
        ],
    )
    .await;
    let elapsed = started.elapsed();
    agents[1].resume();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let (results, summary) = events(&out);
    assert_eq!(
        (summary.ok, summary.unresponsive, summary.unreachable),
        (2, 1, 0),
        "{results:?}"
    );
    let stopped = results.iter().find(|r| r.host == "node-2").unwrap();
    assert_eq!(stopped.status, HostStatus::Unresponsive);
    assert!(
        stopped
            .error
            .as_deref()
            .is_some_and(|e| e.contains("did not acknowledge")),
        "{stopped:?}"
    );
    // Far below the 60 s deadline: the acknowledgement time, the slow host's 4 s, and slack for
    // a loaded machine.
    assert!(
        elapsed < Duration::from_secs(20),
        "the caller waited {elapsed:?}"
    );
}

/// Polls until the invocation is finished and returns its view.
async fn finished(m: &Manager, id: Uuid) -> op_proto::invoke::InvocationView {
    let c = m.client();
    wait_until(LONG, "the invocation finishes", || async {
        c.invocation(id)
            .await
            .is_ok_and(|v| v.state == InvocationState::Finished)
    })
    .await;
    c.invocation(id).await.unwrap()
}

fn count_lines(a: &Agent) -> usize {
    std::fs::read_to_string(a.deploy_dir().join("count"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test]
async fn a_directive_received_again_after_a_reconnect_runs_once() {
    let mut m = Manager::start();
    let mut agents = fleet(&m, 1, &[]).await;
    std::fs::create_dir_all(agents[0].deploy_dir()).unwrap();
    let command = "echo x >> $OP_DEPLOY_DIR/count; sleep 4";

    // The manager goes away while the run is in progress: the agent registers again and gets its
    // full state back, directive included, and does not start it a second time.
    let out = agentcli(&m, None, &["exec", "--all", "--async", "--", command]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id: Uuid = text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .expect("the invocation id is printed");
    wait_until(LONG, "the run started", || async {
        count_lines(&agents[0]) == 1
    })
    .await;
    m.kill9();
    m.restart();
    let view = finished(&m, id).await;
    assert_eq!(view.hosts[0].status, HostStatus::Ok, "{view:?}");
    assert_eq!(count_lines(&agents[0]), 1);

    // The agent is killed mid-run and restarted: the run is reported lost, never run again.
    let out = agentcli(&m, None, &["exec", "--all", "--async", "--", command]).await;
    let id: Uuid = text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .expect("the invocation id is printed");
    wait_until(LONG, "the run started", || async {
        count_lines(&agents[0]) == 2
    })
    .await;
    agents[0].kill9();
    agents[0].restart();
    let view = finished(&m, id).await;
    assert_eq!(view.hosts[0].status, HostStatus::Lost, "{view:?}");
    // Give the restarted agent's link a full cycle: a fresh sync after the result arrived.
    let c = m.client();
    let synced_after = chrono::Utc::now();
    wait_until(LONG, "the agent syncs again", || async {
        c.get_node("node-1")
            .await
            .is_ok_and(|n| n.last_seen > synced_after)
    })
    .await;
    assert_eq!(count_lines(&agents[0]), 2, "a directive ran twice");
    eprintln!(
        "redelivered after the restart: {}",
        agents[0].log().contains("received again")
    );
    let runs = local_runs(&agents[0], "adhoc").await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().any(|r| r.status == RunStatus::Lost));
}

#[tokio::test]
async fn a_viewer_cannot_run_or_exec() {
    let m = Manager::start();
    let agents = fleet(&m, 1, &[]).await;
    let c = m.client();
    c.save_job(&job(r#"{"JobName":"hello","Command":"echo hello"}"#))
        .await
        .unwrap();
    let viewer = c
        .create_token(&CreateTokenRequest {
            name: "auditor".into(),
            scope: Scope::Viewer,
            expires_in_secs: None,
        })
        .await
        .unwrap()
        .secret;
    for args in [
        &["exec", "--all", "--", "touch /tmp/never"][..],
        &["run", "hello", "--all"][..],
    ] {
        let out = agentcli(&m, Some(&viewer), args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("permission denied"),
            "{}",
            text(&out.stderr)
        );
    }
    // The same through the API: 403.
    let v = m.client_with(&viewer);
    let err = v
        .exec(&op_proto::invoke::InvokeRequest {
            command: Some("true".into()),
            all: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(local_runs(&agents[0], "adhoc").await.is_empty());
    assert!(local_runs(&agents[0], "hello").await.is_empty());
    // A viewer may still read what others ran.
    assert!(v.invocations(&Default::default()).await.unwrap().is_empty());
}

/// `run JOB --host "$H"` with an empty H used to drop the flag and run the job on its whole
/// selection; an empty `--host` or `--exclude` is refused and nothing runs, as for `upload`.
#[tokio::test]
async fn an_empty_host_flag_is_refused_and_runs_nothing() {
    let m = Manager::start();
    let agents = fleet(&m, 1, &[]).await;
    m.client()
        .save_job(&job(r#"{"JobName":"hello","Command":"echo hello"}"#))
        .await
        .unwrap();
    for args in [
        &["run", "hello", "--host", ""][..],
        &["run", "hello", "--host", " , "][..],
        &["run", "hello", "--exclude", ""][..],
        &["exec", "--all", "--exclude", "", "--", "echo hi"][..],
    ] {
        let out = agentcli(&m, None, args).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stdout)
        );
        let flag = if args.contains(&"--host") {
            "--host"
        } else {
            "--exclude"
        };
        assert!(
            text(&out.stderr).contains(&format!("{flag} needs a host")),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(
        m.client()
            .invocations(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(local_runs(&agents[0], "hello").await.is_empty());
    assert!(local_runs(&agents[0], "adhoc").await.is_empty());
}
