//! Fan-out invocations against a real manager, with the agents played by the test through the
//! agent protocol: directives ride the sync call, results come back as run batches, and the
//! caller's NDJSON stream, the rollout rules (batches, stop-on-failure, deadlines) and cancel are
//! checked at the API.

use std::collections::BTreeMap;
use std::time::Duration;

use op_client::{Client, InvocationStream, Started};
use op_proto::agent::{Directive, RunBatch, RunDirective};
use op_proto::api::{CreateTokenRequest, Scope};
use op_proto::invoke::{
    BatchSize, HostStatus, InvocationEvent, InvocationState, InvokeRequest, Summary,
};
use op_proto::{RunStatus, Trigger};
use serde_json::json;
use uuid::Uuid;

use crate::common::*;

fn all() -> InvokeRequest {
    InvokeRequest {
        all: true,
        ..InvokeRequest::default()
    }
}

fn exec_all(command: &str) -> InvokeRequest {
    InvokeRequest {
        command: Some(command.into()),
        ..all()
    }
}

/// The run directives in one sync answer.
fn runs(directives: &[Directive]) -> Vec<RunDirective> {
    directives
        .iter()
        .filter_map(|d| match d {
            Directive::Run(r) => Some((**r).clone()),
            Directive::Kill { .. } | Directive::UploadOutput { .. } => None,
        })
        .collect()
}

/// What an agent sends back for a directive.
fn record(a: &FakeAgent, d: &RunDirective, status: RunStatus, output: &str) -> RunBatch {
    let mut r = a.run(&d.spec.name, d.revision, Trigger::Adhoc, status);
    r.run_id = d.run_id;
    r.invocation_id = Some(d.invocation_id);
    r.params = d.params.clone();
    r.output = output.into();
    r.exit_code = Some(if status == RunStatus::Ok { 0 } else { 1 });
    RunBatch {
        node_id: a.node_id,
        runs: vec![r],
    }
}

/// An agent that long-polls and answers every run directive: `fails` says with which status.
fn spawn_agent(
    client: Client,
    a: FakeAgent,
    status: RunStatus,
) -> tokio::task::JoinHandle<Vec<RunDirective>> {
    tokio::spawn(async move {
        let client = a.client(&client);
        let mut index = 0;
        let mut seen: Vec<RunDirective> = Vec::new();
        loop {
            let Ok(state) = client.sync(index, 5, &a.heartbeat()).await else {
                return seen;
            };
            index = state.index;
            for d in runs(&state.directives) {
                if seen.iter().any(|s| s.run_id == d.run_id) {
                    continue;
                }
                let out = format!("{} says {}", a.hostname, d.spec.command);
                client
                    .post_runs(&record(&a, &d, status, &out))
                    .await
                    .unwrap();
                seen.push(d);
            }
        }
    })
}

/// Reads a stream to its summary; returns the result events and the summary.
async fn drain(mut s: InvocationStream) -> (Vec<op_proto::invoke::HostResult>, Summary) {
    let mut results = Vec::new();
    let first = s.next().await.unwrap().expect("an accepted line");
    assert!(matches!(first, InvocationEvent::Accepted(_)), "{first:?}");
    loop {
        match s
            .next()
            .await
            .unwrap()
            .expect("the stream ends with a summary")
        {
            InvocationEvent::Result(r) => results.push(*r),
            InvocationEvent::Progress(_) | InvocationEvent::Accepted(_) => {}
            InvocationEvent::Summary(sum) => {
                assert!(
                    s.next().await.unwrap().is_none(),
                    "nothing after the summary"
                );
                return (results, sum);
            }
        }
    }
}

fn stream(started: Started) -> InvocationStream {
    match started {
        Started::Stream(s) => s,
        Started::Accepted(a) => panic!("expected a stream, got {a:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_every_hosts_result_then_a_summary() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    let agents: Vec<FakeAgent> = (2..=4).map(FakeAgent::new).collect();
    for a in &agents {
        a.register(&agent).await;
    }
    let tasks: Vec<_> = agents
        .iter()
        .map(|a| spawn_agent(agent.clone(), a.clone(), RunStatus::Ok))
        .collect();
    let mut req = exec_all("ls -l /tmp");
    req.hosts = vec!["10.1.2.3".into()];
    req.all = false;
    req.white = vec![op_proto::HostPattern::parse("node-*").unwrap()];
    let (results, summary) = drain(stream(admin.exec(&req).await.unwrap())).await;
    assert_eq!((summary.total, summary.ok, summary.unreachable), (4, 3, 1));
    // The unknown host comes first, at once.
    assert_eq!(results[0].host, "10.1.2.3");
    assert_eq!(results[0].status, HostStatus::Unreachable);
    let mut hosts: Vec<(String, String)> = results[1..]
        .iter()
        .map(|r| (r.host.clone(), r.output.clone()))
        .collect();
    hosts.sort();
    assert_eq!(
        hosts,
        (2..=4)
            .map(|n| (format!("node-{n}"), format!("node-{n} says ls -l /tmp")))
            .collect::<Vec<_>>()
    );
    // Recorded in runs (under the shared ad-hoc job name) and in the audit log.
    let stored = admin
        .runs(&op_proto::api::RunQuery {
            invocation: Some(summary.invocation_id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|r| r.job == op_proto::invoke::ADHOC_JOB));
    let audit = admin.audit(None, Some(100)).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "exec" && e.actor == "admin" && e.detail.ends_with("ls -l /tmp")),
        "{audit:?}"
    );
    // The invocation finishes; its directives are gone from the agents' state.
    wait_until("the invocation finishes", DEADLINE, || async {
        let v = admin.invocation(summary.invocation_id).await.unwrap();
        (v.state == InvocationState::Finished).then_some(())
    })
    .await;
    assert!(agents[0].sync(&agent, 0, 0).await.directives.is_empty());
    for t in tasks {
        t.abort();
    }
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_checks_the_job_and_its_params_before_anything_is_sent() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    a.register(&agent).await;
    save(
        &admin,
        json!({"JobName": "greet", "Command": "echo '{who}'", "Params": ["who"]}),
    )
    .await;
    save(
        &admin,
        json!({"JobName": "off", "Command": "true", "Enabled": 0}),
    )
    .await;
    save(
        &admin,
        json!({"JobName": "db-only", "Command": "true", "BlackHosts": ["node-2"]}),
    )
    .await;
    let code = |r: Result<Started, op_client::ClientError>| match r {
        Ok(_) => "ok".to_string(),
        Err(e) => e.code().unwrap_or("?").to_string(),
    };
    let with = |params: &[(&str, &str)]| InvokeRequest {
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        wait: Some(false),
        ..all()
    };
    assert_eq!(
        code(admin.run_job("greet", &with(&[])).await),
        "invalid_params"
    );
    assert_eq!(
        code(
            admin
                .run_job("greet", &with(&[("who", "x"), ("extra", "y")]))
                .await
        ),
        "invalid_params"
    );
    assert_eq!(code(admin.run_job("nope", &with(&[])).await), "not_found");
    assert_eq!(code(admin.run_job("off", &with(&[])).await), "conflict");
    let named = InvokeRequest {
        hosts: vec!["node-2".into()],
        wait: Some(false),
        ..InvokeRequest::default()
    };
    assert_eq!(
        code(admin.run_job("db-only", &named).await),
        "excluded_host"
    );
    let mut bad = with(&[("who", "x")]);
    bad.command = Some("rm -rf /".into());
    assert_eq!(code(admin.run_job("greet", &bad).await), "invalid_request");
    bad = with(&[("who", "x")]);
    bad.max_failures = Some(0);
    assert_eq!(code(admin.run_job("greet", &bad).await), "invalid_options");
    // An exec must select hosts, and must have a command.
    let mut e = exec_all("true");
    e.all = false;
    assert_eq!(code(admin.exec(&e).await), "no_selection");
    assert_eq!(
        code(
            admin
                .exec(&InvokeRequest {
                    command: None,
                    ..all()
                })
                .await
        ),
        "invalid_request"
    );
    // Unknown fields are refused.
    let resp = admin
        .request(reqwest::Method::POST, "/v1/exec")
        .json(&json!({"command": "true", "all": true, "hsts": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // The name of the ad-hoc job is reserved.
    let err = admin
        .save_job_text("adhoc", r#"{"JobName":"adhoc","Command":"true"}"#)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("reserved_name"));
    // Nothing was sent to the agent.
    assert!(a.sync(&agent, 0, 0).await.directives.is_empty());

    // A viewer may read invocations but not run or exec.
    let viewer = admin
        .create_token(&CreateTokenRequest {
            name: "look".into(),
            scope: Scope::Viewer,
            expires_in_secs: None,
        })
        .await
        .unwrap();
    let viewer = m.client(&viewer.secret);
    assert_eq!(
        code(viewer.run_job("greet", &with(&[("who", "x")])).await),
        "forbidden"
    );
    assert_eq!(code(viewer.exec(&exec_all("true")).await), "forbidden");
    assert!(
        viewer
            .invocations(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );

    // A good run: async, answered at once with the id; the directive carries the params.
    let Started::Accepted(acc) = admin
        .run_job("greet", &with(&[("who", "it's $(me)")]))
        .await
        .unwrap()
    else {
        panic!("wait: false answers at once")
    };
    assert_eq!(acc.hosts, ["node-2"]);
    let d = runs(&a.sync(&agent, 0, 0).await.directives);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].params["who"], "it's $(me)");
    assert_eq!(
        (d[0].invocation_id, d[0].trigger),
        (acc.invocation_id, Trigger::Adhoc)
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_release_in_order_and_stop_on_failure_cancels_the_rest() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    let agents: Vec<FakeAgent> = (2..=6).map(FakeAgent::new).collect();
    for a in &agents {
        a.register(&agent).await;
    }
    let mut req = exec_all("deploy");
    req.batch = Some(BatchSize::Count(2));
    req.wait = Some(false);
    let Started::Accepted(acc) = admin.exec(&req).await.unwrap() else {
        panic!("async")
    };
    assert_eq!(acc.batches, 3);
    let pending = |a: &FakeAgent| {
        let (agent, a) = (agent.clone(), a.clone());
        async move { runs(&a.sync(&agent, 0, 0).await.directives) }
    };
    // Only the first batch has directives; the next appears once it reported.
    for (batch, hosts) in [(0, &agents[0..2]), (1, &agents[2..4]), (2, &agents[4..5])] {
        for a in hosts {
            let d = wait_until("the batch is released", DEADLINE, || async {
                let d = pending(a).await;
                (!d.is_empty()).then_some(d)
            })
            .await;
            for later in agents.get((batch + 1) * 2..).unwrap_or(&[]) {
                assert!(pending(later).await.is_empty(), "batch {batch}: {later:?}");
            }
            a.client(&agent)
                .post_runs(&record(a, &d[0], RunStatus::Ok, "ok"))
                .await
                .unwrap();
        }
    }
    wait_until("all ok", DEADLINE, || async {
        let v = admin.invocation(acc.invocation_id).await.unwrap();
        (v.state == InvocationState::Finished && v.summary.ok == 5).then_some(())
    })
    .await;

    // Stop on failure: batches of 1, at most 1 failure; the first host fails.
    let mut req = exec_all("deploy");
    req.batch = Some(BatchSize::Count(1));
    req.max_failures = Some(1);
    let mut s = stream(admin.exec(&req).await.unwrap());
    let first = wait_until("the first host gets it", DEADLINE, || async {
        let d = pending(&agents[0]).await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    agents[0]
        .client(&agent)
        .post_runs(&record(&agents[0], &first[0], RunStatus::Failed, "boom"))
        .await
        .unwrap();
    let mut results = Vec::new();
    let summary = loop {
        match s.next().await.unwrap().unwrap() {
            InvocationEvent::Result(r) => results.push(*r),
            InvocationEvent::Summary(sum) => break sum,
            _ => {}
        }
    };
    assert_eq!((summary.failed, summary.cancelled, summary.ok), (1, 4, 0));
    assert!(
        summary
            .stopped
            .as_deref()
            .unwrap()
            .contains("max_failures 1")
    );
    assert_eq!(results[0].output, "boom");
    for a in &agents[1..] {
        let p = pending(a).await;
        assert!(
            p.is_empty(),
            "{} never got it: {p:?} {:?}",
            a.hostname,
            admin.invocation(summary.invocation_id).await.unwrap()
        );
    }
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_host_is_unreachable_by_its_deadline_and_cancel_kills() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    let quiet = FakeAgent::new(2);
    let busy = FakeAgent::new(3);
    quiet.register(&agent).await;
    busy.register(&agent).await;
    let answers = FakeAgent::new(4);
    answers.register(&agent).await;
    let answering = spawn_agent(agent.clone(), answers, RunStatus::Ok);

    let mut req = exec_all("true");
    req.hosts = vec!["node-2".into(), "node-4".into()];
    req.all = false;
    req.deadline = Some(1);
    let started = std::time::Instant::now();
    let (results, summary) = drain(stream(admin.exec(&req).await.unwrap())).await;
    assert_eq!((summary.ok, summary.unreachable), (1, 1), "{results:?}");
    let silent = results.iter().find(|r| r.host == "node-2").unwrap();
    assert!(
        silent.error.as_deref().unwrap().contains("deadline"),
        "{silent:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    answering.abort();

    // Cancel while a host runs: its directive turns into a kill; the host reports killed.
    let mut req = exec_all("sleep 100");
    req.hosts = vec!["node-3".into()];
    req.all = false;
    req.wait = Some(false);
    let Started::Accepted(acc) = admin.exec(&req).await.unwrap() else {
        panic!("async")
    };
    let d = runs(&busy.sync(&agent, 0, 0).await.directives);
    let index = busy.sync(&agent, 0, 0).await.index;
    let view = admin.cancel_invocation(acc.invocation_id).await.unwrap();
    assert_eq!(view.hosts[0].status, HostStatus::Running);
    // The parked sync wakes with the kill.
    let state = busy.sync(&agent, index, 10).await;
    assert_eq!(
        state.directives,
        vec![Directive::Kill {
            run_id: d[0].run_id
        }]
    );
    busy.client(&agent)
        .post_runs(&record(&busy, &d[0], RunStatus::Killed, ""))
        .await
        .unwrap();
    wait_until("the cancelled invocation finishes", DEADLINE, || async {
        let v = admin.invocation(acc.invocation_id).await.unwrap();
        (v.state == InvocationState::Finished).then_some(v)
    })
    .await;
    let listed = admin.invocations(&Default::default()).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].summary.killed, 1);
    let again = admin
        .cancel_invocation(acc.invocation_id)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some("conflict"));
    let unknown = admin.invocation(Uuid::now_v7()).await.unwrap_err();
    assert_eq!(unknown.code(), Some("not_found"));
    m.stop().await;
}
