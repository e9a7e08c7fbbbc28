//! Notification delivery end to end (issue 19): real agents fail real jobs, the manager derives
//! the events, and its leader delivers them to real receivers started by each test (an HTTP
//! server, Prometheus Alertmanager, an aiosmtpd SMTP server), at least once, in order, with one
//! idempotency key per event, retried while the receiver is down, and never again once the
//! acknowledgement is committed, also across a leader's kill -9.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use op_client::{Client, EventQuery};
use op_proto::JobSpec;
use op_proto::events::{
    Channel, Event, EventKind, NotifyFilter, NotifyRule, NotifyRuleInfo, Threshold,
};
use op_testkit::{Agent, AgentOptions, Cluster, FAST_RAFT, Manager, ManagerOptions, wait_until};
use sha2::{Digest, Sha256};

use crate::support::{LONG, fleet};

/// Manager flags that keep each scenario to seconds: a fire's results are grouped for at most
/// 2 s, and a failed delivery is retried after 200 ms, then 400 ms, at most 500 ms.
const FAST: &[&str] = &[
    "--event-window",
    "2s",
    "--notify-retry-initial",
    "200ms",
    "--notify-retry-max",
    "500ms",
];

fn manager() -> Manager {
    Manager::start_with(ManagerOptions {
        args: FAST.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

/// One request a [`Hook`] received, and whether it answered 200.
#[derive(Debug, Clone)]
struct Request {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    accepted: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn event(&self) -> Event {
        serde_json::from_slice(&self.body).expect("the body is an event")
    }

    fn key(&self) -> String {
        self.header("x-op-idempotency-key")
            .expect("an idempotency key header")
            .to_string()
    }
}

/// A real HTTP/1.1 webhook receiver on 127.0.0.1 (a thread per connection): records every
/// request; answers 503 while `refusing`, 200 otherwise.
#[derive(Clone)]
struct Hook {
    url: String,
    got: Arc<Mutex<Vec<Request>>>,
    refusing: Arc<AtomicBool>,
}

impl Hook {
    fn start() -> Hook {
        Hook::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn on(listener: TcpListener) -> Hook {
        let hook = Hook {
            url: format!("http://{}/hook", listener.local_addr().unwrap()),
            got: Arc::default(),
            refusing: Arc::default(),
        };
        let h = hook.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let h = h.clone();
                std::thread::spawn(move || h.serve(stream));
            }
        });
        hook
    }

    fn serve(&self, mut stream: std::net::TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
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
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let accepted = !self.refusing.load(Ordering::SeqCst);
        self.got.lock().unwrap().push(Request {
            headers,
            body,
            accepted,
        });
        let answer: &[u8] = if accepted {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        } else {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy"
        };
        let _ = stream.write_all(answer);
    }

    fn all(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }

    /// The requests it answered 200.
    fn accepted(&self) -> Vec<Request> {
        self.all().into_iter().filter(|r| r.accepted).collect()
    }

    async fn wait_accepted(&self, n: usize, what: &str) -> Vec<Request> {
        wait_until(LONG, what, || async { self.accepted().len() >= n }).await;
        self.accepted()
    }
}

/// HMAC-SHA256 (RFC 2104) written out here, independent of the manager's code.
fn hmac_sha256(key: &[u8], body: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    format!("sha256={}", hex::encode(outer))
}

fn webhook(name: &str, url: &str, filter: NotifyFilter) -> NotifyRule {
    NotifyRule {
        name: name.into(),
        filter,
        channel: Channel::Webhook {
            url: url.into(),
            template: None,
            secret_file: None,
        },
    }
}

fn run_failed(jobs: &[&str]) -> NotifyFilter {
    NotifyFilter {
        kinds: vec![EventKind::RunFailed],
        jobs: jobs.iter().map(|j| j.to_string()).collect(),
        ..NotifyFilter::default()
    }
}

fn once_job(name: &str, command: &str) -> JobSpec {
    let mut spec = JobSpec::new(name, command);
    spec.once_job = true;
    spec
}

/// Fails with `disk full` on every host, or with `connection refused` on a host whose deploy dir
/// holds a `refuse` marker; succeeds on a host whose deploy dir holds an `ok` marker.
const FAILING: &str = "if [ -e \"$OP_DEPLOY_DIR/ok\" ]; then exit 0; fi; \
    if [ -e \"$OP_DEPLOY_DIR/refuse\" ]; then echo 'connection refused' >&2; \
    else echo 'disk full' >&2; fi; exit 1";

fn mark(agent: &Agent, marker: &str) {
    std::fs::create_dir_all(agent.deploy_dir()).unwrap();
    std::fs::write(agent.deploy_dir().join(marker), "").unwrap();
}

/// Every event the manager kept.
async fn events(c: &Client) -> Vec<Event> {
    let mut stream = c.events(&EventQuery::default()).await.expect("events");
    let mut out = Vec::new();
    while let Some(e) = stream.next().await.expect("an event") {
        out.push(e);
    }
    out
}

async fn wait_events(c: &Client, kind: &str, job: &str) -> Event {
    wait_until(LONG, &format!("a {kind} event of {job}"), || async {
        events(c)
            .await
            .iter()
            .any(|e| e.kind.as_str() == kind && e.job.as_deref() == Some(job))
    })
    .await;
    events(c)
        .await
        .into_iter()
        .find(|e| e.kind.as_str() == kind && e.job.as_deref() == Some(job))
        .unwrap()
}

async fn rule_info(c: &Client, name: &str) -> NotifyRuleInfo {
    c.notify_rules()
        .await
        .expect("notify rules")
        .into_iter()
        .find(|r| r.rule.name == name)
        .unwrap_or_else(|| panic!("no rule {name}"))
}

/// Waits until `rule`'s acknowledged position is committed at `id` or beyond.
async fn wait_acknowledged(c: &Client, rule: &str, id: u64) {
    wait_until(
        LONG,
        &format!("rule {rule} acknowledged up to {id}"),
        || async {
            c.notify_rules().await.is_ok_and(|rules| {
                rules
                    .iter()
                    .any(|r| r.rule.name == rule && r.delivery.acknowledged >= id)
            })
        },
    )
    .await;
}

fn agentcli(m: &Manager, args: &[&str]) -> String {
    let out = Command::new(op_testkit::bin("agentcli"))
        .args(args)
        .env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &m.admin_token)
        .env("HOME", "/nonexistent")
        .output()
        .expect("agentcli runs");
    assert!(
        out.status.success(),
        "agentcli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `promtool check metrics` (Debian's prometheus package) accepts the exposition, with the
/// per-rule series in it.
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (apt-get install prometheus; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}"
    );
}

#[tokio::test]
async fn a_failure_on_three_agents_is_delivered_once_signed_and_its_fix_once() {
    let m = manager();
    let _agents = fleet(&m, 3, &[]).await;
    let c = m.client();
    let hook = Hook::start();
    let files = tempfile::tempdir().unwrap();
    let key_file = files.path().join("webhook.key");
    std::fs::write(&key_file, "s3cret\n").unwrap();
    let mut rule = webhook("ops", &hook.url, run_failed(&["backup"]));
    rule.channel = Channel::Webhook {
        url: hook.url.clone(),
        template: None,
        secret_file: Some(key_file),
    };
    c.put_notify_rule(&rule).await.unwrap();
    assert_eq!(
        rule_info(&c, "ops")
            .await
            .delivery
            .health(chrono::Utc::now()),
        "never sent"
    );

    c.save_job(&once_job("backup", "echo 'disk full' >&2; exit 3"))
        .await
        .unwrap();
    let got = hook.wait_accepted(1, "the run.failed delivery").await;
    let failed = got[0].event();
    assert_eq!(failed.kind, EventKind::RunFailed);
    assert_eq!(failed.hosts, ["node-1", "node-2", "node-3"], "{failed:?}");
    assert!(failed.summary.contains("disk full"), "{failed:?}");
    // Signed with the key from the file (without its newline), keyed by rule and event.
    assert_eq!(
        got[0].header("x-op-signature"),
        Some(hmac_sha256(b"s3cret", &got[0].body).as_str())
    );
    let key = format!("op-{}-ops", failed.id);
    assert_eq!(got[0].key(), key);
    assert_eq!(got[0].json()["idempotency_key"], key.as_str());
    assert_eq!(got[0].json()["rule"], "ops");

    // The fix: one run.recovered, closing that incident.
    c.save_job(&once_job("backup", "true")).await.unwrap();
    let got = hook.wait_accepted(2, "the run.recovered delivery").await;
    let recovered = got[1].event();
    assert_eq!(recovered.kind, EventKind::RunRecovered);
    assert_eq!(recovered.incident, Some(failed.id));
    assert_eq!(got[1].key(), format!("op-{}-ops", recovered.id));

    // Both acknowledgements are committed; nothing was sent twice.
    wait_acknowledged(&c, "ops", recovered.id).await;
    let all = hook.all();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        events(&c)
            .await
            .iter()
            .filter(|e| e.kind == EventKind::RunFailed)
            .count(),
        1
    );
    let list = agentcli(&m, &["notify", "list"]);
    assert!(list.contains("ok ") && list.contains(" ago"), "{list}");
    let metrics = c.metrics().await.unwrap();
    assert!(
        metrics.contains("op_manager_notify_deliveries_total{result=\"ok\",rule=\"ops\"} 2")
            || metrics.contains("op_manager_notify_deliveries_total{rule=\"ops\",result=\"ok\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_the_events_afterwards_in_order() {
    let m = manager();
    let agents = fleet(&m, 3, &[]).await;
    let c = m.client();
    // The receiver's port, closed for now: every attempt is refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    c.put_notify_rule(&webhook("down", &url, run_failed(&[])))
        .await
        .unwrap();
    // Two incidents: two ways of failing of one job, one after the other.
    mark(&agents[2], "refuse");
    c.save_job(&once_job("first", FAILING)).await.unwrap();
    wait_events(&c, "run.failed", "first").await;
    c.save_job(&once_job("second", FAILING)).await.unwrap();
    wait_events(&c, "run.failed", "second").await;
    let want: Vec<u64> = events(&c)
        .await
        .iter()
        .filter(|e| e.kind == EventKind::RunFailed)
        .map(|e| e.id)
        .collect();
    assert_eq!(want.len(), 4, "two jobs, two ways each");

    // A few retry periods: the failures show on the manager, in notify list and in metrics.
    wait_until(LONG, "3 failed attempts committed", || async {
        rule_info(&c, "down").await.delivery.consecutive_failures >= 3
    })
    .await;
    let list = agentcli(&m, &["notify", "list"]);
    let row = list.lines().find(|l| l.starts_with("down")).unwrap();
    assert!(
        row.contains("failing (") && row.contains("onnection refused"),
        "{list}"
    );
    let metrics = c.metrics().await.unwrap();
    assert!(
        metrics.contains("op_manager_notify_failing_channels 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("op_manager_notify_pending_events{rule=\"down\"} 4")),
        "{metrics}"
    );
    promtool_accepts(&metrics);
    // And in the console's Events page.
    let page = crate::events::Console::login(&m)
        .await
        .page("/ui/events")
        .await;
    let channels = page
        .split("id=\"channels\"")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .expect("the channels table");
    assert!(
        channels.contains("<td>down</td>")
            && channels.contains("class=\"error\" data-health>failing ("),
        "{channels}"
    );

    // The receiver comes up on that port: every event arrives, in order, each once.
    let hook = Hook::on(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let got = hook.wait_accepted(4, "the 4 events after the outage").await;
    let ids: Vec<u64> = got.iter().map(|r| r.event().id).collect();
    assert_eq!(ids, want);
    let keys: Vec<String> = got.iter().map(Request::key).collect();
    let expected: Vec<String> = want.iter().map(|id| format!("op-{id}-down")).collect();
    assert_eq!(keys, expected);
    wait_acknowledged(&c, "down", want[3]).await;
    let d = rule_info(&c, "down").await.delivery;
    assert_eq!(d.consecutive_failures, 0);
    assert!(d.health(chrono::Utc::now()).starts_with("ok "), "{d:?}");
    assert_eq!(hook.all().len(), 4);
}

#[tokio::test]
async fn two_ways_of_failing_are_two_deliveries() {
    let m = manager();
    let agents = fleet(&m, 3, &[]).await;
    let c = m.client();
    let hook = Hook::start();
    c.put_notify_rule(&webhook("ops", &hook.url, run_failed(&["sync"])))
        .await
        .unwrap();
    mark(&agents[2], "refuse");
    c.save_job(&once_job("sync", FAILING)).await.unwrap();
    let got = hook.wait_accepted(2, "two run.failed deliveries").await;
    let mut seen: Vec<(Vec<String>, String)> = got
        .iter()
        .map(|r| {
            let e = r.event();
            (e.hosts, e.signature.unwrap_or_default())
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                vec!["node-1".to_string(), "node-2".to_string()],
                "disk full".to_string()
            ),
            (vec!["node-3".to_string()], "connection refused".to_string()),
        ]
    );
    let last = got.iter().map(|r| r.event().id).max().unwrap();
    wait_acknowledged(&c, "ops", last).await;
    assert_eq!(hook.all().len(), 2, "{:?}", hook.all());

    // A rule saved now starts after these events (no replay); a removed rule sends nothing more.
    let late = Hook::start();
    c.put_notify_rule(&webhook("late", &late.url, run_failed(&["sync"])))
        .await
        .unwrap();
    assert_eq!(rule_info(&c, "late").await.delivery.acknowledged, last);
    c.remove_notify_rule("ops").await.unwrap();
    c.save_job(&once_job("sync", "true")).await.unwrap();
    let got = late.wait_accepted(2, "both recoveries").await;
    for r in &got {
        assert_eq!(r.event().kind, EventKind::RunRecovered, "{:?}", r.event());
    }
    let recovered = got.iter().map(|r| r.event().id).max().unwrap();
    wait_acknowledged(&c, "late", recovered).await;
    assert_eq!(late.all().len(), 2);
    assert_eq!(
        hook.all().len(),
        2,
        "the removed rule sent {:?}",
        hook.all()
    );
}

#[tokio::test]
async fn a_half_of_the_hosts_rule_does_not_fire_for_one_host_of_three() {
    let m = manager();
    let agents = fleet(&m, 3, &[]).await;
    let c = m.client();
    let half = Hook::start();
    let every = Hook::start();
    let mut filter = run_failed(&[]);
    filter.min_hosts = Some(Threshold::Percent(50));
    c.put_notify_rule(&webhook("half", &half.url, filter))
        .await
        .unwrap();
    c.put_notify_rule(&webhook("every", &every.url, run_failed(&[])))
        .await
        .unwrap();

    // Only node-3 fails "flaky".
    mark(&agents[0], "ok");
    mark(&agents[1], "ok");
    c.save_job(&once_job("flaky", FAILING)).await.unwrap();
    let got = every.wait_accepted(1, "the rule without threshold").await;
    assert_eq!(got[0].event().hosts, ["node-3"]);
    assert_eq!(got[0].event().selected_hosts, 3);

    // The barrier: "broken" fails on all three, an event after "flaky"'s. The half rule's queue
    // is in event order, so its first delivery being "broken" proves "flaky" was not for it.
    c.save_job(&once_job("broken", "echo 'no such file' >&2; exit 2"))
        .await
        .unwrap();
    let got = half
        .wait_accepted(1, "the half rule's first delivery")
        .await;
    let first = got[0].event();
    assert_eq!(first.job.as_deref(), Some("broken"), "{first:?}");
    assert_eq!(first.hosts.len(), 3);
    wait_acknowledged(&c, "half", first.id).await;
    assert_eq!(half.all().len(), 1, "{:?}", half.all());
    let every_got = every
        .wait_accepted(2, "the rule without threshold, twice")
        .await;
    assert_eq!(every_got[1].event().id, first.id);
}

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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, pass or fail.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The active alerts Alertmanager lists for `job`.
async fn alerts(base: &str, job: &str) -> Vec<serde_json::Value> {
    let filter = format!("job=\"{job}\"");
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
async fn alertmanager_shows_the_failure_and_then_shows_it_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
    )
    .unwrap();
    let port = free_port();
    let _am = Child(
        Command::new(alertmanager_bin())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_until(LONG, "alertmanager is ready", || async {
        http.get(format!("{base}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    let m = manager();
    let _agents = fleet(&m, 3, &[]).await;
    let c = m.client();
    c.put_notify_rule(&NotifyRule {
        name: "am".into(),
        filter: run_failed(&["backup"]),
        channel: Channel::Alertmanager { url: base.clone() },
    })
    .await
    .unwrap();
    c.save_job(&once_job("backup", "echo 'disk full' >&2; exit 3"))
        .await
        .unwrap();
    wait_until(LONG, "the alert is active in alertmanager", || async {
        alerts(&base, "backup").await.len() == 1
    })
    .await;
    let alert = alerts(&base, "backup").await.remove(0);
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    assert_eq!(alert["labels"]["kind"], "run.failed", "{alert}");
    assert_eq!(
        alert["annotations"]["hosts"], "node-1, node-2, node-3",
        "{alert}"
    );

    c.save_job(&once_job("backup", "true")).await.unwrap();
    let recovered = wait_events(&c, "run.recovered", "backup").await;
    wait_acknowledged(&c, "am", recovered.id).await;
    wait_until(LONG, "the alert is resolved (no longer active)", || async {
        alerts(&base, "backup").await.is_empty()
    })
    .await;
}

/// A python3 that has aiosmtpd (Debian's python3-aiosmtpd).
fn python() -> &'static str {
    for bin in ["python3", "/usr/bin/python3"] {
        let found = Command::new(bin)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return bin;
        }
    }
    panic!("aiosmtpd is missing: apt-get install python3-aiosmtpd (.ci/run installs it)");
}

#[tokio::test]
async fn a_failure_is_mailed_through_a_real_smtp_server() {
    let out = tempfile::tempdir().unwrap();
    let port = free_port();
    // op-notify's SMTP sink: every message lands in OUT/N.eml.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../op-notify/tests/it/smtp_sink.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg(port.to_string())
        .arg(out.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the SMTP server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _smtp = Child(child);
    assert_eq!(line.trim(), "ready", "the SMTP server did not start");

    let m = manager();
    let _agents = fleet(&m, 3, &[]).await;
    let c = m.client();
    c.put_notify_rule(&NotifyRule {
        name: "mail".into(),
        filter: run_failed(&["backup"]),
        channel: Channel::Email {
            to: vec!["ops@example.com".into()],
            smtp: format!("127.0.0.1:{port}"),
            from: Some("op-agent@example.com".into()),
            user: None,
            password_file: None,
            tls: Default::default(),
            ca_file: None,
        },
    })
    .await
    .unwrap();
    c.save_job(&once_job("backup", "echo 'disk full' >&2; exit 3"))
        .await
        .unwrap();
    let eml = out.path().join("1.eml");
    wait_until(LONG, "the SMTP server has the message", || async {
        eml.exists()
    })
    .await;
    let failed = wait_events(&c, "run.failed", "backup").await;
    let message = std::fs::read_to_string(&eml).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("1.json")).unwrap()).unwrap();
    assert_eq!(meta["rcpt_tos"], serde_json::json!(["ops@example.com"]));
    assert_eq!(meta["mail_from"], "op-agent@example.com");
    let key = format!("op-{}-mail", failed.id);
    assert!(
        message.contains(&format!("X-Op-Idempotency-Key: {key}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("Message-ID: <{key}@op-agent>")),
        "{message}"
    );
    assert!(message.contains("backup"), "{message}");
    let body = message.split_once("\r\n\r\n").unwrap().1;
    for host in ["node-1", "node-2", "node-3"] {
        assert!(
            body.contains(&format!("  {host}\r\n")),
            "{host} in:\n{body}"
        );
    }
    wait_acknowledged(&c, "mail", failed.id).await;
    assert!(!out.path().join("2.eml").exists(), "sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_kill_loses_no_event_and_repeats_none_after_its_acknowledgement() {
    let mut args = FAST_RAFT.to_vec();
    args.extend_from_slice(FAST);
    let mut cluster = Cluster::start(3, &args).await;
    let leader = cluster.wait_leader(LONG).await;
    let agents: Vec<Agent> = (1..=3)
        .map(|i| {
            Agent::start(
                AgentOptions::new(&format!("node-{i}"), &format!("127.0.0.{}", i + 1))
                    .cluster(&cluster),
            )
        })
        .collect();
    let c = cluster.client(leader);
    wait_until(LONG, "every agent Ready", || async {
        c.list_nodes().await.is_ok_and(|n| {
            n.iter()
                .filter(|n| n.status == op_proto::NodeStatus::Ready)
                .count()
                == 3
        })
    })
    .await;
    let hook = Hook::start();
    hook.refusing.store(true, Ordering::SeqCst);
    c.put_notify_rule(&webhook("ops", &hook.url, run_failed(&[])))
        .await
        .unwrap();
    // Two incidents pending: the receiver refuses everything for now.
    mark(&agents[2], "refuse");
    c.save_job(&once_job("backup", FAILING)).await.unwrap();
    wait_until(LONG, "both events derived", || async {
        events(&c)
            .await
            .iter()
            .filter(|e| e.kind == EventKind::RunFailed)
            .count()
            == 2
    })
    .await;
    // The failing channel shows on a follower too: its health is replicated.
    let follower = cluster.client((leader + 2) % 3);
    wait_until(LONG, "a follower lists the failing channel", || async {
        follower.notify_rules().await.is_ok_and(|rules| {
            rules.iter().any(|r| {
                r.delivery.consecutive_failures >= 1
                    && r.delivery
                        .last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("answered 503: busy"))
            })
        })
    })
    .await;
    let want: Vec<u64> = events(&c)
        .await
        .iter()
        .filter(|e| e.kind == EventKind::RunFailed)
        .map(|e| e.id)
        .collect();

    cluster.members[leader].kill9();
    hook.refusing.store(false, Ordering::SeqCst);
    let survivor = (leader + 1) % 3;
    let s = cluster.client(survivor);
    wait_acknowledged(&s, "ops", want[1]).await;
    // Seen committed at this point: nothing from here on may carry these two events again.
    let acked = hook.all().len();
    assert_eq!(distinct(&hook.accepted()), want, "every event, in order");

    // The old leader comes back as a follower, and a third event is delivered.
    cluster.members[leader].restart();
    s.save_job(&once_job("later", "echo 'later' >&2; exit 1"))
        .await
        .unwrap();
    let later = wait_events(&s, "run.failed", "later").await;
    wait_acknowledged(&s, "ops", later.id).await;
    let all = hook.all();
    let mut expected = want.clone();
    expected.push(later.id);
    assert_eq!(distinct(&hook.accepted()), expected);
    for r in &all[acked..] {
        assert!(
            !want.contains(&r.event().id),
            "event {} was sent again after its acknowledgement was committed",
            r.event().id
        );
    }
    // A repeat (a leader change between a delivery and its commit) carries the same key, and
    // every request for one key is the same event.
    for r in &all {
        assert_eq!(r.key(), format!("op-{}-ops", r.event().id));
    }
}

/// The event ids of `requests`, each once, in the order first seen.
fn distinct(requests: &[Request]) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for r in requests {
        let id = r.event().id;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}
