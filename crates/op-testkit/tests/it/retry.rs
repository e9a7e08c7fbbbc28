//! `agentcli invocations retry ID` (issue 23 item 4) against one real manager and three real
//! agents: only the hosts that ended with the chosen statuses run again, as a new invocation that
//! names the old one; bad requests change nothing.

use std::process::Output;

use op_proto::api::{CreateTokenRequest, Scope};
use op_proto::invoke::{HostStatus, InvocationEvent, RetryRequest, Summary};
use op_testkit::{Agent, Manager};
use uuid::Uuid;

use crate::support::{agentcli_as as agentcli, fleet, text};

/// The hosts and summary of a `-o json` run, exec or retry.
fn events(out: &Output) -> (Vec<(String, HostStatus)>, Summary) {
    let mut results = Vec::new();
    let mut summary = None;
    for line in text(&out.stdout).lines() {
        match serde_json::from_str::<InvocationEvent>(line)
            .unwrap_or_else(|e| panic!("not an NDJSON event ({e}): {line}"))
        {
            InvocationEvent::Result(r) => results.push((r.host, r.status)),
            InvocationEvent::Summary(s) => summary = Some(s),
            _ => {}
        }
    }
    let summary = summary.unwrap_or_else(|| panic!("no summary: {}", text(&out.stderr)));
    results.sort_by(|a, b| a.0.cmp(&b.0));
    (results, summary)
}

fn runs_on(a: &Agent) -> usize {
    std::fs::read_to_string(a.deploy_dir().join("count"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test]
async fn retry_failed_runs_only_the_failed_host_and_links_the_old_invocation() {
    let m = Manager::start();
    let agents = fleet(&m, 3, &[]).await;
    for a in &agents {
        std::fs::create_dir_all(a.deploy_dir()).unwrap();
    }
    // Only node-2 has the file that makes the command fail.
    std::fs::write(agents[1].deploy_dir().join("broken"), "").unwrap();
    let command =
        "echo x >> $OP_DEPLOY_DIR/count; if [ -f $OP_DEPLOY_DIR/broken ]; then exit 3; fi";

    let out = agentcli(&m, None, &["exec", "--all", "-o", "json", "--", command]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let (results, first) = events(&out);
    assert_eq!(
        results,
        [
            ("node-1".to_string(), HostStatus::Ok),
            ("node-2".to_string(), HostStatus::Failed),
            ("node-3".to_string(), HostStatus::Ok),
        ]
    );
    let old = first.invocation_id.to_string();

    // Nothing unresponsive: a clear error, no invocation made.
    let c = m.client();
    let before = c.invocations(&Default::default()).await.unwrap().len();
    let out = agentcli(&m, None, &["invocations", "retry", &old, "--unresponsive"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nothing to retry"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        c.invocations(&Default::default()).await.unwrap().len(),
        before
    );

    // A viewer may not retry.
    let viewer = c
        .create_token(&CreateTokenRequest {
            name: "auditor".into(),
            scope: Scope::Viewer,
            expires_in_secs: None,
        })
        .await
        .unwrap()
        .secret;
    let out = agentcli(&m, Some(&viewer), &["invocations", "retry", &old]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("permission denied"));
    assert_eq!(runs_on(&agents[1]), 1);

    // Fixed on node-2: the retry runs there only, and succeeds.
    std::fs::remove_file(agents[1].deploy_dir().join("broken")).unwrap();
    let out = agentcli(
        &m,
        None,
        &["invocations", "retry", &old, "--failed", "-o", "json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (results, retried) = events(&out);
    assert_eq!(results, [("node-2".to_string(), HostStatus::Ok)]);
    assert_eq!((retried.total, retried.ok), (1, 1));
    assert_ne!(retried.invocation_id, first.invocation_id);
    assert_eq!(
        [
            runs_on(&agents[0]),
            runs_on(&agents[1]),
            runs_on(&agents[2])
        ],
        [1, 2, 1]
    );

    // The new invocation names the old one, same command.
    let view = c.invocation(retried.invocation_id).await.unwrap();
    assert_eq!(view.retry_of, Some(first.invocation_id));
    assert_eq!(view.command, command);
    let out = agentcli(
        &m,
        None,
        &["invocations", "get", &retried.invocation_id.to_string()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let shown = text(&out.stdout);
    let line = shown
        .lines()
        .find(|l| l.starts_with("RETRY OF"))
        .unwrap_or_else(|| panic!("no RETRY OF line:\n{shown}"));
    assert!(line.contains(&old), "{line}");
    // The old one is unchanged and links nothing.
    assert_eq!(
        c.invocation(first.invocation_id).await.unwrap().retry_of,
        None
    );

    // The retry succeeded everywhere: retrying it finds nothing (default: every host not ok).
    let out = agentcli(
        &m,
        None,
        &["invocations", "retry", &retried.invocation_id.to_string()],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("did not succeed"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn retry_refuses_unknown_running_and_nonsense() {
    let m = Manager::start();
    let agents = fleet(&m, 1, &[]).await;
    let c = m.client();

    let unknown = Uuid::now_v7().to_string();
    let out = agentcli(&m, None, &["invocations", "retry", &unknown]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("no invocation {unknown}")),
        "{}",
        text(&out.stderr)
    );
    let out = agentcli(&m, None, &["invocations", "retry", "not-an-id"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not an invocation id"));

    // Still running: 409, nothing made.
    let out = agentcli(&m, None, &["exec", "--all", "--async", "--", "sleep 30"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id: Uuid = text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .expect("the invocation id is printed");
    let err = c
        .retry_invocation(id, &RetryRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(err.to_string().contains("still running"), "{err}");
    let out = agentcli(&m, None, &["invocations", "retry", &id.to_string()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("still running"));
    // Statuses that are not a final failure are refused.
    let err = c
        .retry_invocation(
            id,
            &RetryRequest {
                statuses: vec![HostStatus::Ok],
                wait: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert_eq!(c.invocations(&Default::default()).await.unwrap().len(), 1);
    c.cancel_invocation(id).await.unwrap();
    drop(agents);
}
