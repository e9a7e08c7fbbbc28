//! The seed's cgroup fields, applied for real where the host lets the agent (this test's host
//! decides which branch runs; both outcomes are checked, neither is skipped silently).

use std::time::Duration;

use op_agent::executor::cgroup::{Hierarchy, hierarchy};
use op_proto::RunStatus;
use serde_json::json;

use crate::support::{Agent, processes_with_env, wait_until};

fn v1_memory_writable() -> bool {
    match hierarchy() {
        Hierarchy::V1 {
            memory: Some(dir), ..
        } => {
            // Writable when we may create a child group (as root in most containers).
            let probe = dir.join(format!("op-agent-probe-{}", std::process::id()));
            let ok = std::fs::create_dir(&probe).is_ok();
            let _ = std::fs::remove_dir(&probe);
            ok
        }
        _ => false,
    }
}

#[tokio::test]
async fn memory_limit_kills_a_job_that_exceeds_it_or_says_why_not() {
    let agent = Agent::start();
    agent.write_job(
        "hog",
        &json!({
            "JobName": "hog",
            "Command": "grep -E 'memory|^0::' /proc/self/cgroup; python3 -c 'x = bytearray(300 * 1024 * 1024); print(len(x))'",
            "MemoryLimit": 64 * 1024 * 1024,
            "MemorySwLimit": 64 * 1024 * 1024,
        }),
    );
    agent.wait_job("hog", None).await;
    let run = agent.invoke_sync("hog", &json!({})).await;
    if v1_memory_writable() {
        assert_eq!(run.status, RunStatus::Failed, "{run:?}");
        assert!(
            run.output.contains(&format!("op-agent/{}", run.run_id)),
            "the job ran inside its own cgroup: {}",
            run.output
        );
        assert!(
            !run.output.contains("314572800"),
            "the allocation must not succeed: {}",
            run.output
        );
        assert!(
            run.notes
                .iter()
                .any(|n| n.starts_with("cgroup limits applied: memory.limit_in_bytes=67108864")),
            "{:?}",
            run.notes
        );
        // The run's cgroup is removed afterwards.
        if let Hierarchy::V1 {
            memory: Some(dir), ..
        } = hierarchy()
        {
            assert!(!dir.join("op-agent").join(run.run_id.to_string()).exists());
        }
    } else {
        assert!(
            run.notes
                .iter()
                .any(|n| n.starts_with("cgroup limits not applied")),
            "a limit that cannot be applied is reported: {:?}",
            run.notes
        );
    }
}

#[tokio::test]
async fn processes_that_escape_the_group_with_setsid_die_with_the_run() {
    if !matches!(hierarchy(), Hierarchy::V1 { cpu: Some(_), .. }) || !v1_memory_writable() {
        // Without a cgroup only the process group can be killed; the executor tests cover that.
        let agent = Agent::start();
        agent.write_job(
            "esc",
            &json!({"JobName": "esc", "Command": "true", "CPUShares": 512}),
        );
        agent.wait_job("esc", None).await;
        let run = agent.invoke_sync("esc", &json!({})).await;
        assert!(
            run.notes.iter().any(|n| n.contains("cgroup")),
            "{:?}",
            run.notes
        );
        return;
    }
    let agent = Agent::start();
    agent.write_job(
        "esc",
        &json!({
            "JobName": "esc",
            "Command": "setsid sleep 1000 & sleep 0.2; echo started",
            "CPUShares": 512,
        }),
    );
    agent.wait_job("esc", None).await;
    let run = agent.invoke_sync("esc", &json!({})).await;
    assert_eq!(run.status, RunStatus::Ok, "{run:?}");
    assert_eq!(
        run.notes,
        vec!["cgroup limits applied: cpu.shares=512".to_string()]
    );
    let id = run.run_id.to_string();
    wait_until(
        Duration::from_secs(20),
        "the escaped sleep is gone",
        || async { processes_with_env("OP_RUN_ID", &id).is_empty() },
    )
    .await;
}
