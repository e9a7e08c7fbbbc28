//! What the tests share: events, rules, a sender, and an HTTP sink that records what it gets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use op_notify::{Channel, Event, EventKind, NotifyFilter, NotifyRule, Rule, Sender};
use op_proto::events::LabelGroup;
use tokio::net::TcpListener;

/// Deadline for anything a test waits for; generous for a loaded 2-core machine.
pub const LONG: Duration = Duration::from_secs(30);

/// A `run.failed` of job `backup` on three hosts.
pub fn failed_event(id: u64) -> Event {
    Event {
        id,
        kind: EventKind::RunFailed,
        time: Utc::now(),
        job: Some("backup".into()),
        package: None,
        hosts: vec!["db-01".into(), "db-02".into(), "web-01".into()],
        host_count: 3,
        selected_hosts: 3,
        host_labels: vec![LabelGroup {
            labels: [("role".to_string(), "db".to_string())].into(),
            hosts: 3,
        }],
        summary: "backup failed on 3 of 3 hosts: tar: No space left on device".into(),
        url: "https://mgr-1.example.com:8090/ui/jobs/backup".into(),
        incident: Some(id),
        opened_at: None,
        signature: Some("tar: No space left on device".into()),
    }
}

pub fn rule(name: &str, channel: Channel) -> Rule {
    Rule::new(NotifyRule {
        name: name.into(),
        filter: NotifyFilter::default(),
        channel,
    })
    .expect("a valid rule")
}

pub fn webhook(url: String) -> Channel {
    Channel::Webhook {
        url,
        template: None,
        secret_file: None,
    }
}

pub fn sender() -> Sender {
    Sender::new(Duration::from_secs(10)).unwrap()
}

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the sink answered.
    pub status: StatusCode,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// A real HTTP receiver on 127.0.0.1: records every POST to `/hook`, answering 503 `busy` to
/// the first `refuse` of them and 200 `ok` afterwards.
#[derive(Clone)]
pub struct Sink {
    pub received: Arc<Mutex<Vec<Received>>>,
    refuse: Arc<AtomicUsize>,
}

impl Sink {
    /// Starts a sink on `listener`.
    pub fn serve(listener: TcpListener, refuse: usize) -> Sink {
        let sink = Sink {
            received: Arc::default(),
            refuse: Arc::new(AtomicUsize::new(refuse)),
        };
        let app = Router::new()
            .route("/hook", post(record))
            .with_state(sink.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        sink
    }

    /// A sink on a fresh port, and its `/hook` URL.
    pub async fn start(refuse: usize) -> (Sink, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = hook_url(listener.local_addr().unwrap());
        (Sink::serve(listener, refuse), url)
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

pub fn hook_url(addr: SocketAddr) -> String {
    format!("http://{addr}/hook")
}

async fn record(
    State(sink): State<Sink>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let refused = sink
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let (status, text) = if refused {
        (StatusCode::SERVICE_UNAVAILABLE, "busy")
    } else {
        (StatusCode::OK, "ok")
    };
    sink.received.lock().unwrap().push(Received {
        headers,
        body,
        status,
    });
    (status, text)
}

/// A free port on 127.0.0.1 for a program that must be told its port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, pass or fail.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
