//! TLS everywhere, with real binaries: certificates from `op-manager certs init`, a manager that
//! requires client certificates, agents that verify it, an agent API on HTTPS, and a certificate
//! replaced under a live connection.

use std::path::{Path, PathBuf};
use std::process::Command;

use op_client::{Client, ClientTls};
use op_proto::{NodeStatus, RunStatus};
use op_testkit::{
    AGENT_PASSWORD, AGENT_USER, Agent, AgentOptions, Manager, ManagerOptions, bin, wait_until,
};

use crate::support::{LONG, runs_of};

/// `op-manager certs init` into `dir`, as an operator would.
fn certs_init(dir: &Path, agents: &str) {
    let out = Command::new(bin("op-manager"))
        .args(["certs", "init", "--dir"])
        .arg(dir)
        .args([
            "--hosts",
            "127.0.0.1",
            "--agents",
            agents,
            "--clients",
            "ops",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn client_tls(dir: &Path, who: &str) -> ClientTls {
    ClientTls {
        ca: Some(dir.join("ca.pem")),
        cert: Some(dir.join(format!("{who}.pem"))),
        key: Some(dir.join(format!("{who}.key"))),
    }
}

fn tls_manager(dir: &Path, require_client_cert: bool) -> Manager {
    let mut args = vec![
        "--tls-cert".to_string(),
        p(dir, "server.pem"),
        "--tls-key".into(),
        p(dir, "server.key"),
        "--client-ca".into(),
        p(dir, "ca.pem"),
    ];
    if require_client_cert {
        args.push("--require-client-cert".into());
    }
    Manager::start_with(ManagerOptions {
        args,
        client_tls: client_tls(dir, "client-ops"),
    })
}

fn tls_agent(m: &Manager, dir: &Path, name: &str, ip: &str) -> Agent {
    Agent::start(
        AgentOptions::new(name, ip)
            .manager(m)
            .arg("--ca")
            .arg(&p(dir, "ca.pem"))
            .arg("--client-cert")
            .arg(&p(dir, &format!("agent-{name}.pem")))
            .arg("--client-key")
            .arg(&p(dir, &format!("agent-{name}.key")))
            .arg("--tls-cert")
            .arg(&p(dir, "server.pem"))
            .arg("--tls-key")
            .arg(&p(dir, "server.key")),
    )
}

#[tokio::test]
async fn with_mutual_tls_the_fleet_works_and_strangers_are_refused() {
    let certs = tempfile::tempdir().unwrap();
    certs_init(certs.path(), "node-1,node-2");
    let m = tls_manager(certs.path(), true);
    assert!(m.api_url.starts_with("https://"), "{}", m.api_url);
    let agents = [
        tls_agent(&m, certs.path(), "node-1", "127.0.0.2"),
        tls_agent(&m, certs.path(), "node-2", "127.0.0.3"),
    ];
    let c = m.client();
    wait_until(LONG, "both agents Ready over TLS", || async {
        c.list_nodes()
            .await
            .map(|n| n.iter().filter(|n| n.status == NodeStatus::Ready).count() == 2)
            .unwrap_or(false)
    })
    .await;
    // Both hold watches over TLS (HTTP/1.1 upgrades; the manager offers HTTP/2 too).
    wait_until(LONG, "two watches over TLS", || async {
        c.metrics()
            .await
            .is_ok_and(|t| t.lines().any(|l| l == "op_manager_watches_open 2"))
    })
    .await;

    // The manager issue's flow: a once-job runs once on each agent, a cron job keeps running,
    // and every record arrives.
    c.save_job_text(
        "ls-l",
        r#"{"JobName":"ls-l","Command":"ls -l /tmp","OnceJob":1}"#,
    )
    .await
    .unwrap();
    c.save_job_text(
        "tick",
        r#"{"JobName":"tick","Command":"echo tick","CronExpr":"* * * * * * *"}"#,
    )
    .await
    .unwrap();
    wait_until(LONG, "the once-job ran on both", || async {
        runs_of(&c, "ls-l").await.len() == 2
    })
    .await;
    wait_until(LONG, "cron runs from both", || async {
        let runs = runs_of(&c, "tick").await;
        ["node-1", "node-2"]
            .iter()
            .all(|h| runs.iter().filter(|r| r.hostname == *h).count() >= 2)
    })
    .await;
    assert!(
        runs_of(&c, "ls-l")
            .await
            .iter()
            .all(|r| r.status == RunStatus::Ok)
    );

    // The agent's own API speaks HTTPS with the same CA.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.path().join("ca.pem")).unwrap())
        .unwrap();
    let https = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let resp = https
        .get(format!("{}/v1/runs?job=tick", agents[0].url()))
        .basic_auth(AGENT_USER, Some(AGENT_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Without a client certificate the manager refuses the connection itself.
    let anonymous = ClientTls {
        cert: None,
        key: None,
        ..client_tls(certs.path(), "client-ops")
    };
    let err = Client::with_tls(&m.api_url, Some(&m.admin_token), &anonymous)
        .unwrap()
        .list_nodes()
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "refused in the handshake: {err}");
    // Plain HTTP gets nothing either.
    let plain = m.api_url.replacen("https://", "http://", 1);
    assert!(
        Client::new(&plain, Some(&m.admin_token))
            .unwrap()
            .list_nodes()
            .await
            .is_err()
    );

    // An agent trusting another CA refuses this manager, and says why.
    let other = tempfile::tempdir().unwrap();
    certs_init(other.path(), "node-3");
    let stranger = tls_agent(&m, other.path(), "node-3", "127.0.0.4");
    wait_until(LONG, "the agent reports the bad certificate", || async {
        stranger.log().to_lowercase().contains("certificate")
    })
    .await;
    assert!(c.get_node("node-3").await.is_err(), "never registered");
}

#[tokio::test]
async fn a_replaced_certificate_is_served_without_dropping_connections() {
    let certs = tempfile::tempdir().unwrap();
    certs_init(certs.path(), "node-1");
    // The manager serves copies, so the test can replace them.
    let live = tempfile::tempdir().unwrap();
    for f in ["server.pem", "server.key"] {
        std::fs::copy(certs.path().join(f), live.path().join(f)).unwrap();
    }
    let m = Manager::start_with(ManagerOptions {
        args: vec![
            "--tls-cert".into(),
            p(live.path(), "server.pem"),
            "--tls-key".into(),
            p(live.path(), "server.key"),
            "--peer-ca".into(),
            p(certs.path(), "ca.pem"),
        ],
        client_tls: ClientTls {
            ca: Some(certs.path().join("ca.pem")),
            ..ClientTls::default()
        },
    });
    let old_ca = m.client();
    // A long request on an open connection: an enrolled node's parked sync.
    let resp = old_ca
        .with_token(&m.agent_token)
        .register(&op_proto::agent::RegisterRequest {
            api_version: op_proto::API_VERSION,
            node_id: uuid::Uuid::new_v4(),
            hostname: "parked".into(),
            ips: vec![],
            labels: Default::default(),
            agent_version: "test".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            machine_id: String::new(),
            reset: None,
            capabilities: Vec::new(),
        })
        .await
        .unwrap();
    let node = old_ca.with_token(resp.node_token.as_deref().unwrap());
    let beat = op_proto::agent::Heartbeat {
        node_id: resp.node_id,
        agent_version: "test".into(),
        load: None,
        running: vec![],
        packages: vec![],
        stats: Default::default(),
        degraded: None,
        sent_at: None,
        received: Vec::new(),
        facts: None,
        peer_url: None,
    };
    let index = node.sync(0, 0, &beat).await.unwrap().index;
    let parked = tokio::spawn({
        let node = node.clone();
        let beat = beat.clone();
        async move { node.sync(index, 6, &beat).await }
    });

    // Replace the files with a certificate from another CA.
    let next = tempfile::tempdir().unwrap();
    certs_init(next.path(), "node-1");
    for f in ["server.key", "server.pem"] {
        let tmp = live.path().join(format!("{f}.new"));
        std::fs::copy(next.path().join(f), &tmp).unwrap();
        std::fs::rename(&tmp, live.path().join(f)).unwrap();
    }
    let new_ca = Client::with_tls(
        &m.api_url,
        Some(&m.admin_token),
        &ClientTls {
            ca: Some(next.path().join("ca.pem")),
            ..ClientTls::default()
        },
    )
    .unwrap();
    wait_until(LONG, "new handshakes get the new certificate", || async {
        new_ca.list_nodes().await.is_ok()
    })
    .await;
    // The connection opened before the swap carried on to its answer.
    parked
        .await
        .unwrap()
        .expect("the parked sync was not cut off");
    // And a new connection trusting only the old CA is refused now.
    let fresh_old = Client::with_tls(
        &m.api_url,
        Some(&m.admin_token),
        &ClientTls {
            ca: Some(certs.path().join("ca.pem")),
            ..ClientTls::default()
        },
    )
    .unwrap();
    assert!(fresh_old.list_nodes().await.is_err());
}

#[test]
fn bad_tls_settings_stop_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("nope.pem");
    let data = dir.path().join("data");
    // Starts op-manager with `args`; it must refuse, and its stderr must name `expected`.
    let refused = |args: &[&std::ffi::OsStr], expected: &str| {
        let out = Command::new(bin("op-manager"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--raft-listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    };
    let (cert, key, peer_ca) = (
        "--tls-cert".as_ref(),
        "--tls-key".as_ref(),
        "--peer-ca".as_ref(),
    );
    let missing = missing.as_os_str();
    // TLS without a CA for the peers: raft would have no way to use mutual TLS.
    refused(&[cert, missing, key, missing], "peer_ca");
    refused(&[cert, missing, key, missing, peer_ca, missing], "nope.pem");
    refused(&[cert, missing], "tls_key");
}

/// With TLS on, raft peers speak mutual TLS: a cluster forms, forwards writes and agrees over it,
/// and the raft listener refuses plain HTTP and clients without a certificate.
#[tokio::test]
async fn a_cluster_over_mutual_tls_forms_and_refuses_strangers_on_the_raft_port() {
    let certs = tempfile::tempdir().unwrap();
    certs_init(certs.path(), "node-1");
    let args = [
        "--tls-cert".to_string(),
        p(certs.path(), "server.pem"),
        "--tls-key".into(),
        p(certs.path(), "server.key"),
        "--client-ca".into(),
        p(certs.path(), "ca.pem"),
    ];
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend(op_testkit::FAST_RAFT);
    let c = op_testkit::Cluster::start_tls(3, &all, client_tls(certs.path(), "client-ops")).await;
    for m in &c.members {
        assert!(m.raft_url.starts_with("https://"), "{}", m.raft_url);
    }
    // A write through every member (followers forward over the peer links); all agree.
    for i in 0..3 {
        c.client(i)
            .save_job_text(
                &format!("via-{i}"),
                &format!(r#"{{"JobName":"via-{i}","Command":"true"}}"#),
            )
            .await
            .unwrap_or_else(|e| panic!("save through member {i}: {e}"));
    }
    for i in 0..3 {
        assert_eq!(
            c.client(i).list_jobs().await.unwrap().len(),
            3,
            "member {i}"
        );
    }
    // The raft port: plain HTTP gets nothing, TLS without a client certificate is refused in the
    // handshake, even with the right CA.
    let raft = c.members[0].raft_url.clone();
    let plain = raft.replacen("https://", "http://", 1);
    assert!(reqwest::get(format!("{plain}/raft/hello")).await.is_err());
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.path().join("ca.pem")).unwrap())
        .unwrap();
    let no_cert = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let err = no_cert
        .get(format!("{raft}/raft/hello"))
        .send()
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "{err}");
}

/// Over HTTP/2 (what curl speaks with TLS), a request refused before its body was read gets its
/// status and JSON answer, not a reset stream: curl 7.88 reported "(92) Stream error in the
/// HTTP/2 framing layer" for a viewer's `PUT` of a 2 MB job (issue 17, item 2).
#[tokio::test]
async fn refusals_reach_http2_clients_as_their_status_and_body() {
    let certs = tempfile::tempdir().unwrap();
    certs_init(certs.path(), "node-1");
    let m = tls_manager(certs.path(), false);
    let viewer = m
        .client()
        .create_token(&op_proto::api::CreateTokenRequest {
            name: "look".into(),
            scope: op_proto::api::Scope::Viewer,
            expires_in_secs: None,
        })
        .await
        .unwrap()
        .secret;
    // Larger than the stream window a client may send before the server reads (64 KiB, then
    // 1 MiB) and than the manager's JSON body limit.
    let body = certs.path().join("body");
    std::fs::write(&body, vec![b'a'; 2_000_000]).unwrap();
    let curl = |method: &str, path: &str, token: Option<&str>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--http2", "--cacert"])
            .arg(certs.path().join("ca.pem"))
            .args(["-X", method, "--data-binary"])
            .arg(format!("@{}", body.display()))
            .args(["-w", "\n%{http_code} %{http_version}"])
            .arg(format!("{}{path}", m.api_url));
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = cmd
            .output()
            .expect("curl is installed (.ci/run installs it)");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "curl {method} {path}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (answer, status) = stdout.rsplit_once('\n').unwrap();
        (status.to_string(), answer.to_string())
    };
    for (method, path, token, status, code) in [
        (
            "PUT",
            "/v1/jobs/x",
            Some(viewer.as_str()),
            "403",
            "forbidden",
        ),
        (
            "PUT",
            "/v1/jobs/x",
            Some(m.agent_token.as_str()),
            "403",
            "forbidden",
        ),
        ("PUT", "/v1/packages/x", None, "401", "unauthorized"),
        // Refused by the body limit, past the guard.
        (
            "PUT",
            "/v1/jobs/x",
            Some(m.admin_token.as_str()),
            "413",
            "payload_too_large",
        ),
    ] {
        let (got, answer) = curl(method, path, token);
        assert_eq!(got, format!("{status} 2"), "{method} {path}: {answer}");
        let body: op_proto::ErrorBody = serde_json::from_str(&answer).unwrap();
        assert_eq!(body.code, code, "{answer}");
    }
    // The connection stays usable for the next request.
    assert!(m.client().list_jobs().await.unwrap().is_empty());
}

/// docs/security.md's agent example: `certs init --agents web-01` makes the certificate the agent
/// on web-01 presents to the managers AND serves its own API with; a client that trusts only the
/// CA reaches `https://web-01:PORT` (issue 17, item 11: the docs named an `agent-api.pem` that
/// certs init never made, and agent-NAME.pem was a client-only certificate without a host name).
#[tokio::test]
async fn an_agents_certificate_serves_its_own_api_as_the_docs_show() {
    let certs = tempfile::tempdir().unwrap();
    certs_init(certs.path(), "web-01");
    let m = tls_manager(certs.path(), true);
    let agent = Agent::start(
        AgentOptions::new("web-01", "127.0.0.2")
            .manager(&m)
            .arg("--ca")
            .arg(&p(certs.path(), "ca.pem"))
            .arg("--client-cert")
            .arg(&p(certs.path(), "agent-web-01.pem"))
            .arg("--client-key")
            .arg(&p(certs.path(), "agent-web-01.key"))
            .arg("--tls-cert")
            .arg(&p(certs.path(), "agent-web-01.pem"))
            .arg("--tls-key")
            .arg(&p(certs.path(), "agent-web-01.key")),
    );
    let c = m.client();
    wait_until(LONG, "the agent Ready over mutual TLS", || async {
        c.get_node("web-01")
            .await
            .is_ok_and(|n| n.status == NodeStatus::Ready)
    })
    .await;
    let addr: std::net::SocketAddr = agent.addr.parse().unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.path().join("ca.pem")).unwrap())
        .unwrap();
    let https = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve("web-01", addr)
        .build()
        .unwrap();
    let resp = https
        .get(format!("https://web-01:{}/v1/status", addr.port()))
        .basic_auth(AGENT_USER, Some(AGENT_PASSWORD))
        .send()
        .await
        .expect("the agent's API is served with a certificate valid for web-01");
    assert_eq!(resp.status(), 200);
}

/// The console's cookies carry `Secure` when the manager serves TLS (they lacked it), so a
/// browser never sends the session over plain HTTP; a plain manager's cookies work over HTTP.
#[tokio::test]
async fn console_cookies_are_secure_under_tls() {
    let certs = tempfile::tempdir().unwrap();
    certs_init(certs.path(), "node-1");
    let m = tls_manager(certs.path(), false);
    let ca = std::fs::read(certs.path().join("ca.pem")).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookies = |resp: &reqwest::Response| -> Vec<String> {
        resp.headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    let page = http
        .get(format!("{}/ui/login", m.api_url))
        .send()
        .await
        .unwrap();
    let login_cookie = cookies(&page)
        .into_iter()
        .find(|c| c.starts_with("op_login="))
        .expect("the login page sets op_login");
    assert!(login_cookie.contains("; Secure"), "{login_cookie}");
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a csrf field on the login page");
    let nonce = login_cookie.split(';').next().unwrap();
    let resp = http
        .post(format!("{}/ui/login", m.api_url))
        .header(reqwest::header::COOKIE, nonce)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(format!("token={}&csrf={csrf}&next=%2Fui", m.admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303, "{:?}", resp.text().await);
    let session = cookies(&resp)
        .into_iter()
        .find(|c| c.starts_with("op_session=") && !c.contains("Max-Age=0"))
        .expect("a signed-in session cookie");
    assert!(
        session.contains("; Secure") && session.contains("HttpOnly"),
        "{session}"
    );

    // Without TLS the cookie must not say Secure, or browsers would drop it over HTTP.
    let plain = Manager::start();
    let page = reqwest::get(format!("{}/ui/login", plain.api_url))
        .await
        .unwrap();
    assert!(
        cookies(&page).iter().all(|c| !c.contains("Secure")),
        "{:?}",
        cookies(&page)
    );
}
