//! `agentcli notify` (issue 19) through the real binaries: rules saved through raft, listed,
//! removed, refused with a clear message when bad (nothing saved), kept across a manager
//! restart, and `notify test` delivering a sample event to a real HTTP receiver started here.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use op_testkit::Manager;

fn cli(m: &Manager) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("agentcli"));
    cmd.env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &m.admin_token)
        .env("TZ", "UTC")
        .env("HOME", "/nonexistent")
        .current_dir(std::env::temp_dir());
    cmd
}

/// Runs and returns (exit code, stdout, stderr).
fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(cmd: &mut Command) -> String {
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{cmd:?}: {err}");
    out
}

/// One request a receiver got: the request line, the headers (lower-case names) and the body.
#[derive(Debug)]
struct Received {
    line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A real HTTP/1.1 receiver on 127.0.0.1:0 answering every request with `status` and `answer`,
/// and handing each request it read to the test.
fn receiver(status: &'static str, answer: &'static str) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
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
            let _ = reader.read_exact(&mut body);
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = stream.write_all(reply.as_bytes());
            let _ = tx.send(Received {
                line: line.trim().to_string(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
    });
    (url, rx)
}

/// An address nothing listens on.
fn closed_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    drop(l);
    url
}

fn names(m: &Manager) -> Vec<String> {
    let json = ok(cli(m).args(["notify", "list", "-o", "json"]));
    let rules: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    rules
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn notify_rules_round_trip_test_a_real_receiver_and_survive_a_restart() {
    let mut m = Manager::start();
    let files = tempfile::tempdir().unwrap();
    let key = write(files.path(), "webhook.key", "s3cret\n");
    let template = write(
        files.path(),
        "slack.j2",
        r#"{"text": {{ summary|tojson }}, "key": {{ idempotency_key|tojson }}}"#,
    );
    let (url, received) = receiver("202 Accepted", "queued by the test receiver");

    let empty = ok(cli(&m).args(["notify", "list"]));
    assert_eq!(empty.lines().count(), 1, "{empty}");

    let hook = format!("{url}/hooks/T0/SECRET");
    let saved = ok(cli(&m).args([
        "notify",
        "add",
        "ops",
        "--webhook",
        &hook,
        "--kind",
        "run.failed",
        "--job",
        "backup*",
        "--label",
        "role=db",
        "--min-hosts",
        "50%",
        "--secret-file",
        &key,
        "--template",
        &template,
    ]));
    assert!(saved.contains("notify rule ops saved"), "{saved}");
    ok(cli(&m).args(["notify", "add", "down", "--webhook", &closed_url()]));
    ok(cli(&m).args([
        "notify",
        "add",
        "am",
        "--alertmanager",
        "http://alertmanager.example.com:9093",
        "--kind",
        "node.not_ready",
    ]));

    let table = ok(cli(&m).args(["notify", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    for col in ["NAME", "CHANNEL", "KINDS", "JOBS", "MIN HOSTS", "HEALTH"] {
        assert!(lines[0].contains(col), "{table}");
    }
    let ops = lines.iter().find(|l| l.starts_with("ops")).unwrap();
    for cell in [
        format!("webhook {url}"),
        "run.failed".into(),
        "backup*".into(),
        "50%".into(),
        "never sent".into(),
    ] {
        assert!(ops.contains(&cell), "{cell:?} in {ops:?}");
    }
    // The receiver is named without its path, which may hold a token.
    assert!(!table.contains("SECRET"), "{table}");
    let am = lines.iter().find(|l| l.starts_with("am")).unwrap();
    assert!(
        am.contains("alertmanager http://alertmanager.example.com:9093"),
        "{am}"
    );
    assert!(am.contains("node.not_ready"), "{am}");

    // The stored rule holds the key's path, never the key.
    let json = ok(cli(&m).args(["notify", "list", "-o", "json"]));
    assert!(json.contains(&key), "{json}");
    assert!(!json.contains("s3cret"), "{json}");

    // `notify test`: the sample event reaches the receiver through the real manager, rendered
    // with the template and signed with the key the manager read from its disk.
    let answer = ok(cli(&m).args(["notify", "test", "ops"]));
    assert!(
        answer.contains(&format!("webhook {url} answered 202")),
        "{answer}"
    );
    assert!(answer.contains("queued by the test receiver"), "{answer}");
    let got = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(got.line, "POST /hooks/T0/SECRET HTTP/1.1");
    let body: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("notify-test failed"),
        "{body}"
    );
    assert_eq!(body["key"], "op-0-ops");
    assert_eq!(got.header("x-op-idempotency-key"), Some("op-0-ops"));
    let signature = got.header("x-op-signature").unwrap();
    assert!(
        signature.starts_with("sha256=") && signature.len() == 71,
        "{signature}"
    );

    // A receiver that is down: exit 1 and the reason, naming the receiver.
    let (code, _, err) = run(cli(&m).args(["notify", "test", "down"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("delivery failed"), "{err}");
    assert!(err.contains("webhook http://127.0.0.1:"), "{err}");

    // Rules are raft state: a restarted manager still has them.
    m.stop();
    m.restart();
    assert_eq!(names(&m), ["am", "down", "ops"]);
    let answer = ok(cli(&m).args(["notify", "test", "ops"]));
    assert!(answer.contains("answered 202"), "{answer}");
    received.recv_timeout(Duration::from_secs(10)).unwrap();

    let out = ok(cli(&m).args(["notify", "remove", "down"]));
    assert!(out.contains("notify rule down removed"), "{out}");
    assert_eq!(names(&m), ["am", "ops"]);
    let (code, _, err) = run(cli(&m).args(["notify", "remove", "down"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no notification rule named \"down\""), "{err}");
    let (code, _, err) = run(cli(&m).args(["notify", "test", "down"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no notification rule named \"down\""), "{err}");
}

#[tokio::test]
async fn bad_notify_rules_are_refused_with_the_problem_and_nothing_is_saved() {
    let m = Manager::start();
    let files = tempfile::tempdir().unwrap();
    let unclosed = write(files.path(), "unclosed.j2", r#"{"text": {{ summary }"#);
    let misspelt = write(
        files.path(),
        "misspelt.j2",
        r#"{"text": {{ summry|tojson }}}"#,
    );
    let hook = "http://127.0.0.1:9/hook";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--webhook", hook, "--kind", "run.exploded"],
            "unknown event kind \"run.exploded\"",
        ),
        (
            vec!["--webhook", "ftp://example.com/x"],
            "only http:// and https://",
        ),
        (
            vec!["--webhook", "http://exa mple.com/"],
            "http://exa mple.com/",
        ),
        (vec!["--alertmanager", "http://"], "has no host"),
        (vec!["--webhook", hook, "--template", &unclosed], "template"),
        (
            vec!["--webhook", hook, "--template", &misspelt],
            "unknown variable summry",
        ),
        (vec!["--webhook", hook, "--min-hosts", "ten"], "--min-hosts"),
        (
            vec!["--webhook", hook, "--min-hosts", "0"],
            "at least 1 host",
        ),
        (
            vec!["--webhook", hook, "--min-hosts", "150%"],
            "at most 100%",
        ),
        (vec!["--webhook", hook, "--label", "role"], "KEY=VALUE"),
        (vec!["--webhook", hook, "--job", "back up"], "job glob"),
        (
            vec!["--webhook", hook, "--secret-file", "webhook.key"],
            "absolute path",
        ),
        (
            vec!["--email", "ops", "--smtp", "mail.example.com:25"],
            "email address",
        ),
        (
            vec!["--email", "ops@example.com", "--smtp", "mail.example.com"],
            "HOST:PORT",
        ),
        (
            vec![
                "--email",
                "ops@example.com",
                "--smtp",
                "mail.example.com:587",
                "--smtp-user",
                "op",
            ],
            "needs a password file",
        ),
        (
            vec!["--webhook", hook, "--template", "/nonexistent/t.j2"],
            "cannot read the template file",
        ),
    ];
    for (args, needle) in &cases {
        let (code, out, err) = run(cli(&m).args(["notify", "add", "bad"]).args(args));
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains(needle),
            "{args:?}: {err:?} should say {needle:?}"
        );
    }
    // No channel, or two: clap says so.
    let (code, _, err) = run(cli(&m).args(["notify", "add", "bad", "--kind", "run.failed"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(cli(&m).args([
        "notify",
        "add",
        "bad",
        "--webhook",
        hook,
        "--alertmanager",
        hook,
    ]));
    assert_eq!(code, 2, "{err}");

    // The API refuses what the CLI cannot send: an unknown field, a name that differs from the
    // path, and a viewer's token.
    let http = reqwest::Client::new();
    let put = async |body: &str, token: &str| {
        let resp = http
            .put(format!("{}/v1/notify/bad", m.api_url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    let (status, text) = put(
        r#"{"channel":{"type":"webhook","url":"http://127.0.0.1:9/","secret":"s3cret"}}"#,
        &m.admin_token,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("unknown field \\\"channel.secret\\\""),
        "{text}"
    );
    let (status, text) = put(
        r#"{"name":"other","channel":{"type":"webhook","url":"http://127.0.0.1:9/"}}"#,
        &m.admin_token,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let viewer = ok(cli(&m).args(["token", "create", "--name", "v", "--scope", "viewer"]));
    let (status, text) = put(
        r#"{"channel":{"type":"webhook","url":"http://127.0.0.1:9/"}}"#,
        viewer.trim(),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("an admin token"), "{text}");

    assert!(names(&m).is_empty());
    let table = ok(cli(&m).args(["notify", "list"]));
    assert_eq!(table.lines().count(), 1, "{table}");
}
