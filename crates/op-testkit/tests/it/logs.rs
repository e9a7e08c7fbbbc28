//! Daemon logs (issue 12): `--log-format json` gives one JSON object per line on both daemons,
//! every line about a run names the run id and the job, the default format is for people, and
//! no secret (API tokens, the node's own credential, the agent's password, a wrong token someone
//! presented) is ever logged.

use op_testkit::{AGENT_PASSWORD, Agent, AgentOptions, Manager, ManagerOptions, wait_until};

use crate::support::{LONG, job, runs_of};

/// The value of `key` in a JSON log line's fields or in any of its spans.
fn field<'a>(line: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    line.get("fields")
        .and_then(|f| f.get(key))
        .or_else(|| line.get("span").and_then(|s| s.get(key)))
        .or_else(|| {
            line.get("spans")
                .and_then(|s| s.as_array())
                .and_then(|spans| spans.iter().find_map(|s| s.get(key)))
        })
}

#[tokio::test]
async fn json_logs_name_every_run_and_hold_no_secret() {
    let m = Manager::start_with(ManagerOptions {
        args: vec!["--log-format".into(), "json".into()],
        ..Default::default()
    });
    let agent = Agent::start(
        AgentOptions::new("logs-1", "127.0.0.2")
            .manager(&m)
            .arg("--log-format")
            .arg("json")
            .arg("--log-level")
            .arg("debug,hyper=info,reqwest=info,h2=info,rustls=info"),
    );
    let c = m.client();
    c.save_job(&job(
        r#"{"JobName":"fails","Command":"echo out; exit 4","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    // A caller with a wrong token: refused, and its token must not be logged either.
    let wrong = "deadbeef01.0123456789abcdef0123456789abcdef";
    assert!(m.client_with(wrong).list_jobs().await.is_err());
    wait_until(LONG, "two failed runs stored", || async {
        runs_of(&c, "fails").await.len() >= 2
    })
    .await;

    let agent_log = agent.log();
    let manager_log = m.log();
    // The node's own credential, issued at enrollment.
    let node_token = std::fs::read_to_string(agent.path("state").join("node.token"))
        .expect("the agent enrolled and keeps its credential");
    for (who, log) in [("agent", &agent_log), ("manager", &manager_log)] {
        for secret in [
            m.admin_token.as_str(),
            m.agent_token.as_str(),
            node_token.trim(),
            AGENT_PASSWORD,
            wrong,
        ] {
            // The secret part of an `ID.SECRET` token is what must never appear.
            let secret_part = secret.rsplit('.').next().unwrap();
            assert!(
                !log.contains(secret_part),
                "the {who} logged a secret ({}…):\n{log}",
                &secret_part[..6]
            );
        }
    }

    let parse = |who: &str, log: &str| -> Vec<serde_json::Value> {
        log.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{who} log line is not JSON ({e}): {l}"))
            })
            .collect()
    };
    let agent_lines = parse("agent", &agent_log);
    let manager_lines = parse("manager", &manager_log);
    assert!(
        manager_lines
            .iter()
            .any(|l| l["fields"]["message"] == "op-manager serving"),
        "{manager_log}"
    );
    // A clean start (enrollment, then syncing with the node's own credential) has nothing to
    // report at error level; an early version synced once with the enrollment token.
    let errors: Vec<_> = agent_lines
        .iter()
        .filter(|l| l["level"] == "ERROR")
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let mut finished = 0;
    for line in &agent_lines {
        if let Some(run_id) = field(line, "run_id") {
            assert!(
                field(line, "job").is_some(),
                "a line about run {run_id} does not name the job: {line}"
            );
        }
        if line["fields"]["message"] == "run finished" {
            let run_id = field(line, "run_id").and_then(|v| v.as_str()).unwrap_or("");
            assert_eq!(field(line, "job").and_then(|v| v.as_str()), Some("fails"));
            assert!(!run_id.is_empty(), "{line}");
            finished += 1;
        }
    }
    assert!(finished >= 2, "{agent_log}");
    // The executor's own lines (output files, reaping) run inside the run's span.
    assert!(
        agent_lines
            .iter()
            .any(|l| l["fields"]["message"] == "run started" && field(l, "run_id").is_some()),
        "{agent_log}"
    );
}

#[tokio::test]
async fn text_logs_are_for_people() {
    let m = Manager::start();
    let agent = Agent::start(AgentOptions::new("logs-2", "127.0.0.3").manager(&m));
    let c = m.client();
    c.save_job(&job(
        r#"{"JobName":"fails","Command":"exit 4","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    wait_until(LONG, "a failed run stored", || async {
        !runs_of(&c, "fails").await.is_empty()
    })
    .await;
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("run finished"))
        .unwrap_or_else(|| panic!("no run finished line:\n{log}"));
    assert!(!line.trim_start().starts_with('{'), "{line}");
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        line.contains("job=fails") && line.contains("run_id="),
        "{line}"
    );
}
