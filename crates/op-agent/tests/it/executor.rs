//! The executor contract: process trees die on timeout and on disable, output is captured and
//! bounded, start failures are recorded.

use std::time::Duration;

use chrono::Utc;
use op_proto::RunStatus;
use serde_json::json;

use crate::support::{Agent, Options, processes_with_env, wait_until};

/// Waits (until `started + limit`) for every process of the run to be gone; returns how long
/// after the start it happened.
async fn tree_gone_within(agent: &Agent, run_id: &str, limit: Duration) {
    let run = agent.run(run_id).await;
    let started = run.started_at.expect("started");
    let deadline = started + chrono::Duration::from_std(limit).unwrap();
    loop {
        let left = processes_with_env("OP_RUN_ID", run_id);
        if left.is_empty() {
            return;
        }
        if Utc::now() > deadline {
            panic!("processes {left:?} of run {run_id} still alive {limit:?} after its start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn timeout_kills_background_grandchildren() {
    let agent = Agent::start();
    let pids = agent.path("pids");
    agent.write_job(
        "tree",
        &json!({
            "JobName": "tree",
            "Command": format!("sleep 1000 & echo $! >> {p}; (sleep 1000 & echo $! >> {p}; wait) & sleep 1000", p = pids.display()),
            "Timeout": 2,
            "KillGrace": 2,
        }),
    );
    agent.wait_job("tree", None).await;
    let id = agent.invoke_async("tree", &json!({})).await;
    wait_until(Duration::from_secs(10), "grandchildren started", || async {
        std::fs::read_to_string(&pids)
            .map(|s| s.lines().count() == 2)
            .unwrap_or(false)
    })
    .await;
    // Timeout 2 + KillGrace 2 + 1 s.
    tree_gone_within(&agent, &id, Duration::from_secs(5)).await;
    for pid in std::fs::read_to_string(&pids).unwrap().lines() {
        let pid: i32 = pid.trim().parse().unwrap();
        // Reaped, not just dead: no zombie is left behind either.
        wait_until(Duration::from_secs(5), "grandchild reaped", || async {
            !crate::support::pid_exists(pid)
        })
        .await;
    }
    wait_until(Duration::from_secs(10), "run recorded", || async {
        agent.run(&id).await.status != RunStatus::Running
    })
    .await;
    let run = agent.run(&id).await;
    assert_eq!(run.status, RunStatus::Timeout, "{run:?}");
    assert!(run.error.unwrap().contains("timed out after 2s"));
    assert!(run.rusage.is_some());
}

#[tokio::test]
async fn timeout_kills_processes_that_left_the_group_with_setsid() {
    // No cgroup limits: the run gets no cgroup, so only the agent's own tracking can find them.
    let agent = Agent::start();
    let pids = agent.path("pids");
    agent.write_job(
        "escape",
        &json!({
            "JobName": "escape",
            "Command": format!(
                "setsid sleep 1001 & echo $! >> {p}; \
                 nohup setsid bash -c 'echo $$ >> {p}; sleep 1002' >/dev/null 2>&1 & \
                 sleep 1000",
                p = pids.display()
            ),
            "Timeout": 2,
            "KillGrace": 1,
        }),
    );
    agent.wait_job("escape", None).await;
    let id = agent.invoke_async("escape", &json!({})).await;
    wait_until(Duration::from_secs(10), "escapers started", || async {
        std::fs::read_to_string(&pids).is_ok_and(|s| s.lines().count() == 2)
    })
    .await;
    let escapers: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    for pid in &escapers {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // They really left the run's process group: each leads a session of its own.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        assert_eq!(fields[2], pid.to_string(), "{stat}");
    }
    // Timeout 2 + KillGrace 1 + 2 s.
    tree_gone_within(&agent, &id, Duration::from_secs(5)).await;
    for pid in escapers {
        wait_until(
            Duration::from_secs(5),
            "escaper gone and reaped",
            || async { !crate::support::pid_exists(pid) },
        )
        .await;
    }
    wait_until(Duration::from_secs(10), "run recorded", || async {
        agent.run(&id).await.status != RunStatus::Running
    })
    .await;
    assert_eq!(agent.run(&id).await.status, RunStatus::Timeout);
}

#[tokio::test]
async fn timeout_kills_a_tree_that_ignores_sigterm() {
    let agent = Agent::start();
    let term = agent.path("term");
    // Every process ignores SIGTERM; the job's own shell notes that it came and waits on.
    agent.write_job(
        "stubborn",
        &json!({
            "JobName": "stubborn",
            "Command": format!(
                "trap 'echo term >> {t}' TERM; bash -c \"trap '' TERM; sleep 1000\" & \
                 (trap '' TERM; exec sleep 1000) & wait; wait",
                t = term.display()
            ),
            "Timeout": 2,
            "KillGrace": 2,
        }),
    );
    agent.wait_job("stubborn", None).await;
    let id = agent.invoke_async("stubborn", &json!({})).await;
    wait_until(Duration::from_secs(10), "tree started", || async {
        processes_with_env("OP_RUN_ID", &id).len() >= 3
    })
    .await;
    // SIGTERM is ignored, so the tree lives through KillGrace, then SIGKILL ends it. Checked
    // when the SIGTERM has come, and only while we are surely inside the grace (a loaded machine
    // may see it late).
    wait_until(
        Duration::from_secs(10),
        "SIGTERM at the timeout",
        || async { std::fs::read_to_string(&term).is_ok_and(|s| s.contains("term")) },
    )
    .await;
    let since_start = Utc::now() - agent.run(&id).await.started_at.unwrap();
    assert!(
        since_start > chrono::Duration::milliseconds(3500)
            || !processes_with_env("OP_RUN_ID", &id).is_empty(),
        "SIGTERM-ignoring tree should outlive the timeout until KillGrace"
    );
    tree_gone_within(&agent, &id, Duration::from_secs(5)).await;
    wait_until(Duration::from_secs(10), "run recorded", || async {
        agent.run(&id).await.status == RunStatus::Timeout
    })
    .await;
}

#[tokio::test]
async fn disabling_a_running_job_kills_its_tree() {
    let agent = Agent::start();
    let job = json!({
        "JobName": "longcron",
        "Command": "sleep 1000 & sleep 1000",
        "CronExpr": "*/1 * * * * * *",
        "KillGrace": 1,
    });
    agent.write_job("longcron", &job);
    wait_until(Duration::from_secs(20), "cron run started", || async {
        agent
            .runs("longcron")
            .await
            .iter()
            .any(|r| r.status == RunStatus::Running)
    })
    .await;
    let running = agent
        .runs("longcron")
        .await
        .into_iter()
        .find(|r| r.status == RunStatus::Running)
        .unwrap();
    let id = running.run_id.to_string();
    wait_until(Duration::from_secs(10), "processes visible", || async {
        processes_with_env("OP_RUN_ID", &id).len() >= 2
    })
    .await;
    let mut disabled = job.clone();
    disabled["Enabled"] = json!(0);
    agent.write_job("longcron", &disabled);
    wait_until(Duration::from_secs(15), "tree killed", || async {
        processes_with_env("OP_RUN_ID", &id).is_empty()
    })
    .await;
    wait_until(Duration::from_secs(10), "run recorded killed", || async {
        agent.run(&id).await.status == RunStatus::Killed
    })
    .await;
    let run = agent.run(&id).await;
    assert!(run.error.unwrap().contains("Enabled: 0"));
}

/// A shell function, `drained FD`, that waits until the agent has read everything the job wrote
/// on FD (a pipe: FIONREAD counts its unread bytes from either end). stdout and stderr are two
/// pipes, so writes to both within one read cycle are merged in the order the reader picks them
/// up (executor/output.rs); a job that waits for the reader before switching streams gets its
/// exact order.
const DRAINED: &str = "drained() { python3 -c 'import fcntl, struct, sys, termios, time
while struct.unpack(\"i\", fcntl.ioctl(int(sys.argv[1]), termios.FIONREAD, bytes(4)))[0]:
    time.sleep(0.01)' \"$1\"; };";

/// stderr is kept apart in the record (the failure signature comes from it), while the merged
/// output and the log file still hold both streams.
#[tokio::test]
async fn stderr_has_its_own_tail_beside_the_merged_output() {
    let agent = Agent::start();
    agent.write_job(
        "etl",
        &json!({
            "JobName": "etl",
            "Command": "echo start; echo 'boom: no such table' >&2; echo fine; exit 3",
        }),
    );
    agent.write_job(
        "noisy",
        &json!({
            "JobName": "noisy",
            "Command": "for i in $(seq 1 5000); do echo \"err $i\" >&2; done; echo out",
        }),
    );
    // A Python traceback on stderr ends with the exception, whatever went to stdout.
    agent.write_job(
        "py",
        &json!({
            "JobName": "py",
            "Command": "python3 -c \"print('rows: 0'); {}['id']\"",
        }),
    );
    agent.wait_job("etl", None).await;
    agent.wait_job("noisy", None).await;
    agent.wait_job("py", None).await;
    let run = agent.invoke_sync("py", &json!({})).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.stderr_tail
            .starts_with("Traceback (most recent call last):"),
        "{run:?}"
    );
    assert_eq!(op_proto::analysis::signature(&run), "KeyError: 'id'");
    // With PYTHONUNBUFFERED set (as on CI), print() writes "rows: 0" and "\n" apart, and the
    // reader may take the traceback from the other pipe in between: only the text is certain.
    assert!(run.output.contains("rows: 0"), "{run:?}");
    assert!(!run.stderr_tail.contains("rows"), "{run:?}");

    let run = agent.invoke_sync("etl", &json!({})).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_code, Some(3));
    assert_eq!(run.stderr_tail, "boom: no such table\n");
    assert_eq!(op_proto::analysis::signature(&run), "boom: no such table");
    // Both streams are in the merged output and the log file (their relative order is the
    // reader's: these writes come microseconds apart).
    let full = agent
        .get(&format!("/v1/runs/{}/output", run.run_id))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(full, run.output);
    let mut lines: Vec<&str> = run.output.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["boom: no such table", "fine", "start"]);
    assert!(run.output.find("start") < run.output.find("fine"));

    // A flood on stderr keeps only the last few KiB, cut at a line's middle at worst.
    let run = agent.invoke_sync("noisy", &json!({})).await;
    assert_eq!(run.status, RunStatus::Ok);
    assert!(run.stderr_tail.len() <= op_proto::run::STDERR_TAIL);
    assert!(run.stderr_tail.len() > op_proto::run::STDERR_TAIL - 16);
    assert!(run.stderr_tail.ends_with("err 4999\nerr 5000\n"));
    assert!(!run.stderr_tail.contains("out"));
    assert!(run.output.contains("out\n"));
    assert_eq!(run.output_bytes, run.output.len() as u64);
}

#[tokio::test]
async fn output_over_the_tail_limit_is_truncated_and_the_file_holds_all() {
    let agent = Agent::start_with(Options {
        extra_args: vec!["--output-tail".into(), "1KiB".into()],
        ..Default::default()
    });
    agent.write_job(
        "loud",
        &json!({
            "JobName": "loud",
            "Command": format!("{DRAINED} for i in $(seq 1 20000); do echo \"line $i\"; done; drained 1; echo ERR >&2; drained 2; echo END"),
        }),
    );
    agent.wait_job("loud", None).await;
    let run = agent.invoke_sync("loud", &json!({})).await;
    assert_eq!(run.status, RunStatus::Ok);
    assert!(run.output_truncated);
    assert!(run.output.len() <= 1024);
    // stderr and stdout arrive merged, in order (each switch of stream waits until the reader
    // has what came before it: see DRAINED).
    assert!(
        run.output.ends_with("line 20000\nERR\nEND\n"),
        "{:?}",
        &run.output[run.output.len() - 40..]
    );
    let full = agent
        .get(&format!("/v1/runs/{}/output", run.run_id))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(full.len() as u64, run.output_bytes);
    assert!(full.starts_with("line 1\nline 2\n"));
    assert_eq!(full.lines().count(), 20002);
}

#[tokio::test]
async fn output_over_the_file_cap_keeps_its_head_and_tail() {
    let agent = Agent::start_with(Options {
        extra_args: vec!["--log-keep-bytes".into(), "256KiB".into()],
        ..Default::default()
    });
    agent.write_job(
        "huge",
        &json!({
            "JobName": "huge",
            "Command": "echo FIRST-LINE; head -c 100000000 /dev/zero | tr '\\0' x; echo; echo LAST-LINE",
        }),
    );
    agent.wait_job("huge", None).await;
    let run = agent.invoke_sync("huge", &json!({})).await;
    assert_eq!(run.status, RunStatus::Ok, "{run:?}");
    assert!(run.output_bytes > 100_000_000);
    // The run is over and its job's retention applied: the file is still there, within the cap.
    let path = agent
        .path("state")
        .join("logs/huge")
        .join(format!("{}.log", run.run_id));
    let file =
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), agent.log()));
    assert!(file.len() <= 256 * 1024, "{} bytes", file.len());
    let text = String::from_utf8(file).unwrap();
    assert!(text.starts_with("FIRST-LINE\nxxx"), "{}", &text[..40]);
    assert!(text.ends_with("xxx\nLAST-LINE\n"));
    let (head, rest) = text.split_once("\n[op-agent: ").unwrap();
    let (marker, tail) = rest.split_once('\n').unwrap();
    let cut = run.output_bytes - head.len() as u64 - tail.len() as u64;
    assert!(
        marker.starts_with(&format!("{cut} bytes of output cut here")),
        "{marker}"
    );
    // The API serves the same file.
    let served = agent
        .get(&format!("/v1/runs/{}/output", run.run_id))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(served, text);
}

#[tokio::test]
async fn start_failures_are_failed_runs_not_crashes() {
    let agent = Agent::start();
    agent.write_job(
        "nowhere",
        &json!({"JobName": "nowhere", "Command": "true", "WorkDir": "/no/such/dir"}),
    );
    agent.write_job(
        "nobody",
        &json!({"JobName": "nobody", "Command": "true", "RunAs": "no-such-user-xyz"}),
    );
    agent.wait_job("nowhere", None).await;
    agent.wait_job("nobody", None).await;
    let run = agent.invoke_sync("nowhere", &json!({})).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.unwrap().contains("/no/such/dir"));
    let run = agent.invoke_sync("nobody", &json!({})).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.unwrap().contains("no-such-user-xyz"));
    assert_eq!(agent.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn jobs_get_their_environment_and_run_as() {
    let agent = Agent::start();
    // Switching users needs root (CI runs as root); otherwise the job runs as we do.
    let root = nix::unistd::geteuid().is_root();
    let user = if root {
        "nobody".to_string()
    } else {
        std::env::var("USER").unwrap_or_default()
    };
    agent.write_job(
        "envy",
        &json!({
            "JobName": "envy",
            "Command": "yes | head -1 > /dev/null; echo \"$OP_JOB_NAME $OP_TRIGGER $GREETING $(id -un) ${OP_TOKEN:-hidden} $(pwd)\"; echo \"run=$OP_RUN_ID deploy=$OP_DEPLOY_DIR\"",
            "Env": {"GREETING": "hello"},
            "RunAs": if root { json!("nobody") } else { json!(null) },
            "WorkDir": "/tmp",
        }),
    );
    agent.wait_job("envy", None).await;
    let run = agent.invoke_sync("envy", &json!({})).await;
    assert_eq!(run.status, RunStatus::Ok, "{run:?}");
    let mut lines = run.output.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("envy api hello {user} hidden /tmp")
    );
    let second = lines.next().unwrap();
    assert!(
        second.starts_with(&format!("run={} deploy=", run.run_id)),
        "{second}"
    );
    assert!(second.ends_with("/deploy"));
}

#[tokio::test]
async fn processes_left_behind_by_a_leader_that_exited_die_with_the_run() {
    // The leader exits at once; what it left (in its group, and outside it with setsid) must not
    // outlive the run. No cgroup: only the agent's own tracking finds them.
    let agent = Agent::start();
    let pids = agent.path("pids");
    agent.write_job(
        "leaver",
        &json!({
            "JobName": "leaver",
            "Command": format!(
                "sleep 1003 & echo $! >> {p}; setsid sleep 1004 & echo $! >> {p}; exit 0",
                p = pids.display()
            ),
            "KillGrace": 1,
        }),
    );
    agent.wait_job("leaver", None).await;
    let id = agent.invoke_async("leaver", &json!({})).await;
    wait_until(Duration::from_secs(10), "run recorded", || async {
        agent.run(&id).await.status != RunStatus::Running
    })
    .await;
    assert_eq!(agent.run(&id).await.status, RunStatus::Ok);
    // The record is stored once they are stopped, so none is left by now.
    assert_eq!(processes_with_env("OP_RUN_ID", &id), Vec::<i32>::new());
    for pid in std::fs::read_to_string(&pids).unwrap().lines() {
        let pid: i32 = pid.trim().parse().unwrap();
        wait_until(
            Duration::from_secs(5),
            "left-behind process reaped",
            || async { !crate::support::pid_exists(pid) },
        )
        .await;
    }
    // A run that leaves nothing behind ends as quickly as ever, and still ok.
    agent.write_job("plain", &json!({"JobName": "plain", "Command": "true"}));
    agent.wait_job("plain", None).await;
    let id = agent.invoke_async("plain", &json!({})).await;
    wait_until(Duration::from_secs(10), "plain run recorded", || async {
        agent.run(&id).await.status != RunStatus::Running
    })
    .await;
    assert_eq!(agent.run(&id).await.status, RunStatus::Ok);
}

#[tokio::test]
async fn a_run_without_output_has_no_file_and_reads_as_empty() {
    let agent = Agent::start();
    agent.write_job("quiet", &json!({"JobName": "quiet", "Command": "true"}));
    agent.write_job("talky", &json!({"JobName": "talky", "Command": "echo hi"}));
    agent.wait_job("quiet", None).await;
    agent.wait_job("talky", None).await;
    let quiet = agent.invoke_sync("quiet", &json!({})).await;
    assert_eq!((quiet.status, quiet.output_bytes), (RunStatus::Ok, 0));
    // No file was created for it: its output reads as empty, not as gone.
    let file = agent
        .path("state")
        .join(format!("logs/quiet/{}.log", quiet.run_id));
    assert!(!file.exists(), "{}", file.display());
    let resp = agent
        .get(&format!("/v1/runs/{}/output", quiet.run_id))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "");
    // A run that wrote something has its file, and retention still applies to it.
    let talky = agent.invoke_sync("talky", &json!({})).await;
    let file = agent
        .path("state")
        .join(format!("logs/talky/{}.log", talky.run_id));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hi\n");
    let resp = agent
        .get(&format!("/v1/runs/{}/output", talky.run_id))
        .await;
    assert_eq!(resp.text().await.unwrap(), "hi\n");
}
