//! The Alertmanager channel against a real Prometheus Alertmanager (Debian's
//! `prometheus-alertmanager`): the failure shows as an active alert with our labels and
//! annotations; after the recovery it is resolved and gone from the active alerts.

use std::process::{Command, Stdio};

use chrono::Utc;
use op_notify::{Channel, EventKind};
use op_testkit::wait_until;

use crate::support::{Child, LONG, failed_event, free_port, rule, sender};

/// The Alertmanager binary; a missing one fails the test with what to install.
fn alertmanager_bin() -> &'static str {
    for bin in ["prometheus-alertmanager", "alertmanager"] {
        let found = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return bin;
        }
    }
    panic!(
        "Alertmanager is missing: apt-get install prometheus-alertmanager (.ci/run installs it)"
    );
}

/// A real Alertmanager on 127.0.0.1 with clustering off and its data in `dir`.
fn start(dir: &std::path::Path) -> (Child, String) {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(alertmanager_bin())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("alertmanager.log")).unwrap())
        .spawn()
        .expect("start alertmanager");
    (Child(child), format!("http://127.0.0.1:{port}"))
}

/// The alerts Alertmanager lists for incident `incident` (active ones, its default).
async fn alerts(base: &str, incident: u64) -> Vec<serde_json::Value> {
    let filter = format!("incident=\"{incident}\"");
    let Ok(response) = reqwest::Client::new()
        .get(format!("{base}/api/v2/alerts"))
        .query(&[("filter", filter.as_str())])
        .send()
        .await
    else {
        return Vec::new();
    };
    response.json().await.unwrap_or_default()
}

#[tokio::test]
async fn alertmanager_shows_the_alert_and_then_shows_it_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let (_am, base) = start(dir.path());
    let http = reqwest::Client::new();
    wait_until(LONG, "alertmanager is ready", || async {
        http.get(format!("{base}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    let rule = rule("am", Channel::Alertmanager { url: base.clone() });
    let mut failed = failed_event(41);
    failed.time = Utc::now() - chrono::Duration::minutes(2);
    let receipt = sender().deliver(&rule, &failed, "op-41-am").await.unwrap();
    assert_eq!(receipt.status, 200, "{receipt:?}");

    wait_until(LONG, "the alert is active in alertmanager", || async {
        alerts(&base, 41).await.len() == 1
    })
    .await;
    let alert = alerts(&base, 41).await.remove(0);
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "OpAgentRunFailed", "{alert}");
    assert_eq!(labels["kind"], "run.failed");
    assert_eq!(labels["job"], "backup");
    assert_eq!(labels["incident"], "41");
    let notes = &alert["annotations"];
    assert_eq!(notes["summary"], failed.summary.as_str());
    assert_eq!(notes["hosts"], "db-01, db-02, web-01");
    assert_eq!(notes["url"], failed.url.as_str());
    assert_eq!(alert["generatorURL"], failed.url.as_str());

    // The recovery closes the incident: the same labels, an end in the past.
    let mut recovered = failed_event(42);
    recovered.kind = EventKind::RunRecovered;
    recovered.incident = Some(41);
    recovered.opened_at = Some(failed.time);
    recovered.summary = "backup recovered on 3 hosts".into();
    let receipt = sender()
        .deliver(&rule, &recovered, "op-42-am")
        .await
        .unwrap();
    assert_eq!(receipt.status, 200, "{receipt:?}");
    wait_until(LONG, "the alert is resolved (no longer active)", || async {
        alerts(&base, 41).await.is_empty()
    })
    .await;
}
