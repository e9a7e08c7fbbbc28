//! Helpers shared by the scenarios.

use std::time::Duration;

use op_client::Client;
use op_proto::api::RunQuery;
use op_proto::{JobSpec, NodeStatus, RunRecord};
use op_testkit::{AGENT_PASSWORD, AGENT_USER, Agent, AgentOptions, Manager, wait_until};

/// Generous: these run on a loaded 2-core CI machine.
pub const LONG: Duration = Duration::from_secs(30);

/// Starts `n` agents named `node-1..` with IPs `127.0.0.2..` connected to `m`, and waits until the
/// manager lists them all Ready.
pub async fn fleet(m: &Manager, n: usize, extra: &[&str]) -> Vec<Agent> {
    let agents: Vec<Agent> = (1..=n)
        .map(|i| {
            let mut o =
                AgentOptions::new(&format!("node-{i}"), &format!("127.0.0.{}", i + 1)).manager(m);
            for a in extra {
                o = o.arg(a);
            }
            Agent::start(o)
        })
        .collect();
    let c = m.client();
    wait_until(LONG, "every agent Ready", || async {
        c.list_nodes()
            .await
            .map(|nodes| {
                nodes
                    .iter()
                    .filter(|n| n.status == NodeStatus::Ready)
                    .count()
                    == n
            })
            .unwrap_or(false)
    })
    .await;
    agents
}

pub fn job(text: &str) -> JobSpec {
    JobSpec::from_task_json(text).expect("valid task file")
}

/// Runs of `job` the manager stores, all of them.
pub async fn runs_of(c: &Client, job: &str) -> Vec<RunRecord> {
    c.runs(&RunQuery {
        job: Some(job.to_string()),
        limit: Some(10_000),
        ..RunQuery::default()
    })
    .await
    .expect("runs query")
}

/// The agent's own record of its runs of `job` (its local history).
pub async fn local_runs(agent: &Agent, job: &str) -> Vec<RunRecord> {
    reqwest::Client::new()
        .get(format!("{}/v1/runs?job={job}&limit=1000", agent.url()))
        .basic_auth(AGENT_USER, Some(AGENT_PASSWORD))
        .send()
        .await
        .expect("agent answers")
        .json()
        .await
        .expect("run list")
}
