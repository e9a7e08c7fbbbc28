//! Notification rules in a 3-manager cluster (issue 19): a rule saved through one member is
//! raft state on all of them, `notify test` delivers from whichever member is called (each
//! reading the secret file on its own disk) to a real HTTP receiver, and the rule survives the
//! leader's kill -9.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use op_proto::events::{Channel, NotifyFilter, NotifyRule};
use op_testkit::{Cluster, FAST_RAFT, wait_until};

use crate::support::LONG;

/// A real HTTP/1.1 receiver on 127.0.0.1:0 answering 200; hands each request's headers (names
/// lower-cased) to the test.
fn receiver() -> (String, mpsc::Receiver<Vec<(String, String)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some((n, v)) = h.split_once(':') {
                    headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            let _ = tx.send(headers);
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_saved_on_one_member_is_tested_from_every_member_and_survives_the_leader() {
    let mut cluster = Cluster::start(3, FAST_RAFT).await;
    let files = tempfile::tempdir().unwrap();
    let key = files.path().join("webhook.key");
    std::fs::write(&key, "s3cret\n").unwrap();
    let (url, received) = receiver();

    let leader = cluster.wait_leader(LONG).await;
    let follower = (leader + 1) % 3;
    let rule = NotifyRule {
        name: "ops".into(),
        filter: NotifyFilter::default(),
        channel: Channel::Webhook {
            url: url.clone(),
            template: None,
            secret_file: Some(key.clone()),
        },
    };
    cluster
        .client(follower)
        .put_notify_rule(&rule)
        .await
        .unwrap();

    for i in 0..3 {
        let rules = cluster.client(i).notify_rules().await.unwrap();
        assert_eq!(rules.len(), 1, "member {i}: {rules:?}");
        assert_eq!(rules[0].rule, rule, "member {i}");
        let answer = cluster.client(i).test_notify_rule("ops").await.unwrap();
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "ok"),
            "member {i}"
        );
        let headers = received.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            headers
                .iter()
                .any(|(n, v)| n == "x-op-signature" && v.starts_with("sha256=")),
            "member {i}: {headers:?}"
        );
    }

    cluster.members[leader].kill9();
    let survivor = (leader + 2) % 3;
    let c = cluster.client(survivor);
    wait_until(
        LONG,
        "the survivors list the rule under a new leader",
        || async { c.notify_rules().await.is_ok_and(|r| r.len() == 1) },
    )
    .await;
    let answer = c.test_notify_rule("ops").await.unwrap();
    assert_eq!(answer.status, 200);
    received.recv_timeout(Duration::from_secs(10)).unwrap();
}

/// A webhook URL may itself be the credential (Slack's): a failed delivery names only its
/// origin (reqwest's error names the whole URL), in the answer and in the manager's log, and a
/// viewer's `notify list` shows its path as `/***`; the admin who manages the rule sees it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_url_path_is_never_shown_to_readers_or_in_delivery_errors() {
    use op_proto::api::{CreatePolicyTokenRequest, Scope};

    let m = op_testkit::Manager::start();
    let c = m.client();
    // A port nothing listens on: the delivery fails at once with a connection error.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}/services/T0/B0/SECRETPATH");
    c.put_notify_rule(&NotifyRule {
        name: "slack".into(),
        filter: NotifyFilter::default(),
        channel: Channel::Webhook {
            url: url.clone(),
            template: None,
            secret_file: None,
        },
    })
    .await
    .unwrap();
    let err = c.test_notify_rule("slack").await.unwrap_err().to_string();
    assert!(
        err.contains(&closed.to_string()) && !err.contains("SECRETPATH"),
        "{err}"
    );
    assert!(!m.log().contains("SECRETPATH"), "{}", m.log());

    let viewer = c
        .create_policy_token(&CreatePolicyTokenRequest {
            name: "dash".into(),
            scope: Scope::Viewer,
            expires_in_secs: None,
            policy: None,
        })
        .await
        .unwrap()
        .secret;
    let shown =
        serde_json::to_string(&m.client_with(&viewer).notify_rules().await.unwrap()).unwrap();
    assert!(
        !shown.contains("SECRETPATH") && shown.contains(&format!("http://{closed}/***")),
        "{shown}"
    );
    let full = serde_json::to_string(&c.notify_rules().await.unwrap()).unwrap();
    assert!(full.contains(&url), "{full}");
}
