//! What each channel receives, as pure functions of the rule, the event and the idempotency key
//! (so a repeat is byte-for-byte the same message): the webhook's JSON body and its signature,
//! the alerts posted to Alertmanager, and an email's subject and text. Sending is
//! [`crate::Sender`]'s.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use op_proto::events::Event;
use serde::Serialize;
use sha2::Sha256;

/// The header carrying the HMAC-SHA256 of a webhook's body: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Op-Signature";
/// The header (HTTP and email) carrying the idempotency key.
pub const KEY_HEADER: &str = "X-Op-Idempotency-Key";

/// How long an Alertmanager alert for an incident stays firing without news: its recovery ends
/// it sooner. Alertmanager would otherwise resolve it after its `resolve_timeout` (5 minutes by
/// default), as if the job had recovered.
pub const OPEN_ALERT_TTL: chrono::Duration = chrono::Duration::days(7);

/// A webhook's JSON body, and the context a body template is rendered with: every field of the
/// event, plus the key, the rule and the hosts as one line of text.
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a> {
    pub idempotency_key: &'a str,
    pub rule: &'a str,
    /// The hosts as one line: `a, b, c` or `a, b, c and 97 more`.
    pub hosts_text: String,
    #[serde(flatten)]
    pub event: &'a Event,
}

/// The context of a body template (the same object the default JSON body is).
pub fn template_context<'a>(rule: &'a str, event: &'a Event, key: &'a str) -> WebhookBody<'a> {
    WebhookBody {
        idempotency_key: key,
        rule,
        hosts_text: hosts_text(event),
        event,
    }
}

/// The default webhook body: the event as JSON with the key and the rule's name.
pub fn webhook_json(rule: &str, event: &Event, key: &str) -> Vec<u8> {
    serde_json::to_vec(&template_context(rule, event, key)).expect("an event serializes")
}

/// `sha256=<hex HMAC-SHA256 of body under key>`, the value of [`SIGNATURE_HEADER`].
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The listed hosts on one line, with how many more there are.
pub fn hosts_text(event: &Event) -> String {
    let listed = event.hosts.join(", ");
    let more = event.total_hosts().saturating_sub(event.hosts.len() as u64);
    match (listed.is_empty(), more) {
        (true, 0) => String::new(),
        (true, n) => format!("{n} hosts"),
        (false, 0) => listed,
        (false, n) => format!("{listed} and {n} more"),
    }
}

/// One alert of Alertmanager's v2 API (`POST /api/v2/alerts` takes a list of these).
#[derive(Debug, Serialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: DateTime<Utc>,
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// The alert for `event`. Alertmanager knows an alert by its labels, so a recovery carries the
/// labels of the failure it closes (its kind and incident) and an `endsAt`: the alert then shows
/// resolved. An incident's opening alert fires until its recovery or [`OPEN_ALERT_TTL`]; an
/// event that no other event closes (`package.failed`) leaves the end to Alertmanager.
pub fn alertmanager_alert(event: &Event, key: &str) -> Alert {
    let kind = event.kind.closes().unwrap_or_else(|| event.kind.clone());
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_string(), alert_name(kind.as_str()));
    labels.insert("kind".to_string(), kind.to_string());
    labels.insert("incident".to_string(), event.incident_id().to_string());
    labels.insert("source".to_string(), "op-agent".to_string());
    if let Some(job) = &event.job {
        labels.insert("job".to_string(), job.clone());
    }
    if let Some(package) = &event.package {
        labels.insert("package".to_string(), package.clone());
    }
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_string(), event.summary.clone());
    annotations.insert("hosts".to_string(), hosts_text(event));
    annotations.insert("idempotency_key".to_string(), key.to_string());
    if !event.url.is_empty() {
        annotations.insert("url".to_string(), event.url.clone());
    }
    let (starts_at, ends_at) = if event.is_recovery() {
        (event.opened_at.unwrap_or(event.time), Some(event.time))
    } else if kind.has_recovery() {
        (event.time, Some(event.time + OPEN_ALERT_TTL))
    } else {
        (event.time, None)
    };
    Alert {
        labels,
        annotations,
        starts_at,
        ends_at,
        generator_url: (!event.url.is_empty()).then(|| event.url.clone()),
    }
}

/// `run.failed` → `OpAgentRunFailed`, the way Prometheus alerts are usually named.
fn alert_name(kind: &str) -> String {
    let mut name = String::from("OpAgent");
    for word in kind.split(['.', '_', '-']) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    name
}

/// An email's subject: the event's summary on one line, cut at a readable length.
pub fn email_subject(event: &Event) -> String {
    let line = event.summary.lines().next().unwrap_or("").trim();
    let subject = if line.is_empty() {
        format!("op-agent: {}", event.kind)
    } else {
        line.to_string()
    };
    match subject.char_indices().nth(150) {
        Some((cut, _)) => format!("{}…", &subject[..cut]),
        None => subject,
    }
}

/// An email's text: the summary, what and where, every listed host on its own line, the link.
pub fn email_text(event: &Event, key: &str) -> String {
    let mut out = String::new();
    out.push_str(&event.summary);
    out.push_str("\n\n");
    out.push_str(&format!("kind:     {}\n", event.kind));
    if let Some(job) = &event.job {
        out.push_str(&format!("job:      {job}\n"));
    }
    if let Some(package) = &event.package {
        out.push_str(&format!("package:  {package}\n"));
    }
    if let Some(signature) = &event.signature {
        out.push_str(&format!("error:    {signature}\n"));
    }
    out.push_str(&format!("time:     {}\n", event.time.to_rfc3339()));
    out.push_str(&format!("hosts ({}):\n", event.total_hosts()));
    for host in &event.hosts {
        out.push_str(&format!("  {host}\n"));
    }
    let more = event.total_hosts().saturating_sub(event.hosts.len() as u64);
    if more > 0 {
        out.push_str(&format!("  ... and {more} more\n"));
    }
    if !event.url.is_empty() {
        out.push_str(&format!("\n{}\n", event.url));
    }
    out.push_str(&format!("\nidempotency key: {key}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use op_proto::events::EventKind;

    fn event(kind: EventKind) -> Event {
        let mut e = crate::sample_event(DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        e.id = 12;
        e.kind = kind;
        e.hosts = vec!["a".into(), "b".into()];
        e.host_count = 5;
        e.url = "http://console/jobs/notify-test".into();
        e
    }

    #[test]
    fn the_signature_is_the_documented_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_webhook_body_is_the_event_with_its_key() {
        let e = event(EventKind::RunFailed);
        let body: serde_json::Value =
            serde_json::from_slice(&webhook_json("ops", &e, "k1")).unwrap();
        assert_eq!(body["idempotency_key"], "k1");
        assert_eq!(body["rule"], "ops");
        assert_eq!(body["kind"], "run.failed");
        assert_eq!(body["id"], 12);
        assert_eq!(body["hosts"], serde_json::json!(["a", "b"]));
        assert_eq!(body["hosts_text"], "a, b and 3 more");
        let decoded: Event = serde_json::from_value(body).unwrap();
        assert_eq!(decoded, e);
    }

    #[test]
    fn a_recovery_alert_has_the_labels_of_its_failure_and_an_end() {
        let failed = event(EventKind::RunFailed);
        let mut recovered = event(EventKind::RunRecovered);
        recovered.id = 20;
        recovered.incident = Some(12);
        recovered.time = failed.time + chrono::Duration::minutes(3);
        recovered.opened_at = Some(failed.time);
        let a = alertmanager_alert(&failed, "k1");
        let b = alertmanager_alert(&recovered, "k2");
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.labels["alertname"], "OpAgentRunFailed");
        assert_eq!(a.labels["incident"], "12");
        assert_eq!(a.ends_at, Some(failed.time + OPEN_ALERT_TTL));
        assert_eq!(b.starts_at, failed.time);
        assert_eq!(b.ends_at, Some(recovered.time));
        let once = alertmanager_alert(&event(EventKind::PackageFailed), "k3");
        assert_eq!(once.ends_at, None);
        assert_eq!(alert_name("node.not_ready"), "OpAgentNodeNotReady");
    }

    #[test]
    fn email_lists_every_listed_host_and_counts_the_rest() {
        let e = event(EventKind::RunFailed);
        let text = email_text(&e, "k1");
        assert!(text.contains("\n  a\n  b\n  ... and 3 more\n"), "{text}");
        assert!(text.contains("idempotency key: k1"));
        let mut long = e.clone();
        long.summary = "x".repeat(400);
        assert_eq!(email_subject(&long).chars().count(), 151);
    }
}
