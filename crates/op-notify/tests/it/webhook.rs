//! The webhook channel against a real HTTP receiver: the event JSON with its key, the HMAC
//! signature checked the way a receiver would (Python's `hmac`, as docs/notifications.md shows),
//! a template rendered into the body, and a receiver that is down for a while.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use op_notify::payload::{KEY_HEADER, SIGNATURE_HEADER};
use op_notify::{Channel, DeliveryError, DeliveryQueue, Event, RetryPolicy, attempt_due};
use tokio::net::TcpListener;

use crate::support::{LONG, Sink, failed_event, hook_url, rule, sender, webhook};

/// Checks `signature` of `body` under `key` the way docs/notifications.md tells a receiver to:
/// its Python `verify` function, run as written.
fn python_verifies(key: &str, body: &[u8], signature: &str) -> bool {
    let script = format!(
        "{}\nimport sys\nsys.exit(0 if verify(sys.argv[1].encode(), sys.stdin.buffer.read(), sys.argv[2]) else 1)\n",
        crate::docs::signature_check()
    );
    let mut child = Command::new("python3")
        .args(["-c", &script, key, signature])
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3 runs (apt-get install python3)");
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait().unwrap().success()
}

#[tokio::test]
async fn the_event_is_posted_as_json_with_its_key_and_a_signature_from_the_secret_file() {
    let (sink, url) = Sink::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook.key");
    std::fs::write(&secret, "first-key\n").unwrap();
    let rule = rule(
        "ops",
        Channel::Webhook {
            url,
            template: None,
            secret_file: Some(secret.clone()),
        },
    );
    let event = failed_event(41);
    let receipt = sender().deliver(&rule, &event, "op-41-ops").await.unwrap();
    assert_eq!((receipt.status, receipt.body.as_str()), (200, "ok"));
    assert!(
        receipt.receiver.starts_with("webhook http://127.0.0.1:"),
        "{receipt:?}"
    );

    let got = sink.all();
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body["idempotency_key"], "op-41-ops");
    assert_eq!(body["rule"], "ops");
    assert_eq!(body["hosts_text"], "db-01, db-02, web-01");
    let decoded: Event = serde_json::from_value(body).unwrap();
    assert_eq!(decoded, event);
    assert_eq!(got[0].header(KEY_HEADER), "op-41-ops");
    assert_eq!(got[0].header("content-type"), "application/json");
    let sig = got[0].header(SIGNATURE_HEADER);
    assert!(python_verifies("first-key", &got[0].body, sig), "{sig}");
    assert!(!python_verifies("another-key", &got[0].body, sig));

    // The key is read at send time: a rotated file signs the next delivery.
    std::fs::write(&secret, "second-key").unwrap();
    sender().deliver(&rule, &event, "op-41-ops").await.unwrap();
    let got = sink.all();
    let sig = got[1].header(SIGNATURE_HEADER);
    assert!(python_verifies("second-key", &got[1].body, sig), "{sig}");
    // A repeat is the same payload: receivers deduplicate by its key.
    assert_eq!(got[0].body, got[1].body);

    // A secret file that cannot be read fails the delivery, naming the receiver and the file.
    std::fs::remove_file(&secret).unwrap();
    let err = sender()
        .deliver(&rule, &event, "op-41-ops")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DeliveryError::Secret { .. }), "{text}");
    assert!(
        text.starts_with("webhook http://127.0.0.1:") && text.contains("webhook.key"),
        "{text}"
    );
    assert_eq!(sink.all().len(), 2, "nothing is sent unsigned");
}

#[tokio::test]
async fn a_template_renders_into_the_posted_body() {
    let (sink, url) = Sink::start(0).await;
    // Slack's and Mattermost's incoming webhooks take {"text": ...}.
    let template = r#"{"text": {{ ("*" ~ summary ~ "*\nhosts: " ~ hosts_text ~ "\n<" ~ url ~ ">")|tojson }}, "key": {{ idempotency_key|tojson }}}"#;
    let rule = rule(
        "slack",
        Channel::Webhook {
            url,
            template: Some(template.into()),
            secret_file: None,
        },
    );
    let mut event = failed_event(7);
    event.summary = r#"backup failed: "quotes" and \ survive"#.into();
    sender().deliver(&rule, &event, "op-7-slack").await.unwrap();
    let body = sink.all()[0].json();
    assert_eq!(
        body,
        serde_json::json!({
            "text": "*backup failed: \"quotes\" and \\ survive*\nhosts: db-01, db-02, web-01\n<https://mgr-1.example.com:8090/ui/jobs/backup>",
            "key": "op-7-slack",
        })
    );
    assert_eq!(sink.all()[0].header(KEY_HEADER), "op-7-slack");
}

#[tokio::test]
async fn a_refusal_reports_the_receivers_status_and_answer() {
    let (_sink, url) = Sink::start(1).await;
    let rule = rule("ops", webhook(url));
    let err = sender()
        .deliver(&rule, &failed_event(1), "k")
        .await
        .unwrap_err();
    assert!(
        matches!(err, DeliveryError::Refused { status: 503, .. }),
        "{err}"
    );
    assert!(err.to_string().ends_with("answered 503: busy"), "{err}");
}

/// The issue's test: a receiver that is down for a few retry periods (the backoff shortened)
/// gets the events afterwards, in order, and a repeat carries the same key.
#[tokio::test]
async fn a_receiver_down_for_a_while_gets_the_events_afterwards_in_order() {
    // The receiver's port, with nothing listening on it yet: connections are refused.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let rule = rule("ops", webhook(hook_url(addr)));
    let sender = sender();
    let policy = RetryPolicy {
        initial: Duration::from_millis(50),
        factor: 2,
        max: Duration::from_millis(200),
    };
    let mut queue = DeliveryQueue::new("ops", policy, 0);
    for id in 1..=3 {
        assert!(queue.offer(failed_event(id)));
    }

    let deadline = Instant::now() + LONG;
    let mut sink = None;
    let mut attempts = Vec::new();
    while !queue.is_empty() {
        assert!(
            Instant::now() < deadline,
            "undelivered after {LONG:?}: {attempts:?}"
        );
        if let Some(attempt) = attempt_due(&mut queue, &rule, &sender).await {
            attempts.push((attempt.event_id, attempt.key, attempt.result.is_ok()));
            if let Err(e) = &attempt.result {
                // Every failure names the receiver and why.
                let text = e.to_string();
                assert!(
                    text.starts_with(&format!("webhook http://{addr}")),
                    "{text}"
                );
            }
        }
        // Down for three failed attempts; then up, refusing its first request once more.
        if sink.is_none() && queue.health().consecutive_failures >= 3 {
            assert!(queue.health().last_error.is_some());
            assert_eq!(queue.acknowledged(), 0);
            let listener = TcpListener::bind(addr).await.unwrap();
            sink = Some(Sink::serve(listener, 1));
        }
        if let Some(at) = queue.next_attempt(Instant::now()) {
            tokio::time::sleep_until(at.into()).await;
        }
    }
    assert_eq!(queue.acknowledged(), 3);
    assert_eq!(queue.health().consecutive_failures, 0);
    assert!(queue.health().last_success.is_some());
    // Nothing but event 1 was tried while it failed.
    let first_ok = attempts.iter().position(|a| a.2).unwrap();
    assert!(first_ok >= 4, "{attempts:?}");
    assert!(
        attempts[..first_ok]
            .iter()
            .all(|a| a.0 == 1 && a.1 == "op-1-ops")
    );

    let got = sink.unwrap().all();
    let seen: Vec<(u64, String, u16)> = got
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["id"].as_u64().unwrap(),
                r.header(KEY_HEADER).to_string(),
                r.status.as_u16(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "op-1-ops".to_string(), 503),
            (1, "op-1-ops".to_string(), 200),
            (2, "op-2-ops".to_string(), 200),
            (3, "op-3-ops".to_string(), 200),
        ]
    );
    // The repeat is the same payload.
    assert_eq!(got[0].body, got[1].body);
}
