//! Monitoring (issue 12): both `/metrics` endpoints, scraped from a real manager and a real agent
//! after real runs, pass `promtool check metrics`; the shipped alert rules pass `promtool check
//! rules` and their unit tests; and every metric the Grafana dashboard and the alerts name is one
//! the daemons really export.
//!
//! promtool comes from Debian's `prometheus` package (`.ci/run` installs it).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use op_testkit::{AGENT_PASSWORD, AGENT_USER, Agent, AgentOptions, Manager, wait_until};

use crate::support::{LONG, job, runs_of};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn promtool() -> &'static str {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "promtool is missing: apt-get install prometheus (.ci/run installs it)"
    );
    "promtool"
}

/// Runs promtool with `args`, feeding `stdin`; returns (success, stdout + stderr).
fn run_promtool(args: &[&str], dir: &Path, stdin: &str) -> (bool, String) {
    let mut child = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The sample names of an exposition (`name{labels} value` → `name`).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or("").to_string())
        .collect()
}

/// The `op_*` metric names an expression refers to.
fn referenced_metrics(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && expr[i..].starts_with("op_") {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            out.insert(expr[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

async fn scrape_agent(agent: &Agent) -> (String, String) {
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", agent.url()))
        .basic_auth(AGENT_USER, Some(AGENT_PASSWORD))
        .send()
        .await
        .expect("agent answers");
    assert!(resp.status().is_success(), "{}", resp.status());
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (ctype, resp.text().await.expect("metrics body"))
}

#[tokio::test]
async fn both_metrics_endpoints_pass_promtool_and_the_dashboard_and_alerts_name_real_metrics() {
    let m = Manager::start();
    let agent = Agent::start(AgentOptions::new("metrics-1", "127.0.0.2").manager(&m));
    let c = m.client();
    c.save_job(&job(
        r#"{"JobName":"tick","Command":"echo tick","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    c.save_job(&job(
        r#"{"JobName":"broken","Command":"exit 3","CronExpr":"*/1 * * * * * *"}"#,
    ))
    .await
    .unwrap();
    wait_until(LONG, "runs of both jobs stored", || async {
        !runs_of(&c, "tick").await.is_empty() && !runs_of(&c, "broken").await.is_empty()
    })
    .await;
    // A notification rule, so the per-rule delivery series exist (its receiver is never up).
    c.put_notify_rule(&op_proto::events::NotifyRule {
        name: "ops".into(),
        filter: Default::default(),
        channel: op_proto::events::Channel::Webhook {
            url: "http://127.0.0.1:9/hook".into(),
            template: None,
            secret_file: None,
        },
    })
    .await
    .unwrap();
    wait_until(LONG, "the rule's delivery series", || async {
        c.metrics()
            .await
            .is_ok_and(|t| t.contains("op_manager_notify_consecutive_failures{"))
    })
    .await;

    let manager_text = c.metrics().await.expect("manager metrics");
    let (agent_type, agent_text) = scrape_agent(&agent).await;
    assert!(agent_type.starts_with("text/plain"), "{agent_type}");
    let dir = repo_root();
    for (who, text) in [("manager", &manager_text), ("agent", &agent_text)] {
        let (ok, out) = run_promtool(&["check", "metrics"], &dir, text);
        assert!(
            ok && out.trim().is_empty(),
            "promtool check metrics on the {who}'s /metrics:\n{out}\n--- exposition ---\n{text}"
        );
    }

    // The figures the issue asks for are there, with the values the runs above imply.
    for needle in [
        "op_manager_raft_state{state=\"leader\"} 1",
        "op_manager_raft_has_leader 1",
        "op_manager_raft_voters 1",
        "op_manager_nodes{status=\"Ready\"} 1",
        "op_manager_job_latest_runs{job=\"tick\",status=\"ok\"} 1",
        "op_manager_job_latest_runs{job=\"broken\",status=\"failed\"} 1",
        "op_manager_run_duration_seconds_bucket{",
        "op_manager_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/v1/agent/watch\"}",
        "# TYPE op_manager_runs_stored_total counter",
        "op_manager_build_info{version=\"",
        "op_manager_agent_outbox_runs 0",
    ] {
        assert!(manager_text.contains(needle), "{needle} in\n{manager_text}");
    }
    for needle in [
        "op_agent_outbox_depth ",
        "op_agent_run_duration_seconds_bucket{le=\"+Inf\",status=\"failed\"}",
        "op_agent_sync_duration_seconds_count ",
        "op_agent_sync_requests_total{result=\"ok\"}",
        "op_agent_run_delivery_delay_seconds_count ",
        "# TYPE op_agent_runs_total counter",
        "op_agent_build_info{version=\"",
    ] {
        assert!(agent_text.contains(needle), "{needle} in\n{agent_text}");
    }
    // A route label is a template, never a path with a name or id in it.
    assert!(
        !manager_text.contains("route=\"/v1/jobs/tick"),
        "{manager_text}"
    );

    // Every metric the dashboard and the alerts use exists.
    let exported: BTreeSet<String> = sample_names(&manager_text)
        .into_iter()
        .chain(sample_names(&agent_text))
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("deploy/grafana/op-agent.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");
    let alerts = std::fs::read_to_string(dir.join("deploy/prometheus/alerts.yml")).unwrap();
    let mut used = BTreeSet::new();
    for e in exprs.iter().map(String::as_str).chain([alerts.as_str()]) {
        used.extend(referenced_metrics(e));
    }
    // Names in annotations (`op_agent_outbox_dropped_runs_total`) count too: they must be real.
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard or alerts name metrics nobody exports: {missing:?}\nexported: {exported:?}"
    );
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = repo_root().join("deploy/prometheus");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts.test.yml"][..],
        &["check", "config", "--syntax-only", "prometheus.yml"][..],
    ] {
        let (ok, out) = run_promtool(args, &dir, "");
        assert!(ok, "promtool {args:?}:\n{out}");
    }
}

#[test]
fn metric_names_are_found_in_expressions() {
    let names = referenced_metrics(
        "histogram_quantile(0.5, rate(op_agent_x_bucket[5m])) / up{job=\"op-agent\"} + top_op_y",
    );
    assert_eq!(names, BTreeSet::from(["op_agent_x_bucket".to_string()]));
}
