//! Authentication and scopes (DESIGN section 9), and `op-manager token ...` against a live manager.

use op_client::Client;
use op_proto::api::{CreateTokenRequest, Scope};
use reqwest::Method;
use serde_json::json;

use crate::common::*;

async fn status(client: &Client, method: Method, path: &str, body: Option<&str>) -> u16 {
    let mut req = client.request(method, path);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_are_enforced_and_revoked_tokens_stop_working() {
    let m = TestManager::start().await;
    let admin = m.admin();
    let anonymous = Client::new(&m.url, None).unwrap();
    let task = seed_task("ll.json");

    assert_eq!(status(&anonymous, Method::GET, "/healthz", None).await, 200);
    assert_eq!(status(&anonymous, Method::GET, "/v1/jobs", None).await, 401);
    let err = anonymous.list_jobs().await.unwrap_err();
    assert_eq!(err.code(), Some("unauthorized"));
    let wrong = Client::new(&m.url, Some("abc.def")).unwrap();
    assert_eq!(status(&wrong, Method::GET, "/v1/jobs", None).await, 401);

    // The agent token speaks only the agent protocol.
    let agent = m.agent();
    assert_eq!(
        status(&agent, Method::PUT, "/v1/jobs/ls-l", Some(&task)).await,
        403
    );
    assert_eq!(status(&agent, Method::GET, "/v1/nodes", None).await, 403);
    assert_eq!(
        agent.save_job_text("ls-l", &task).await.unwrap_err().code(),
        Some("forbidden")
    );

    let mk = |name: &str, scope| {
        let admin = admin.clone();
        let name = name.to_string();
        async move {
            admin
                .create_token(&CreateTokenRequest {
                    name,
                    scope,
                    expires_in_secs: None,
                })
                .await
                .unwrap()
        }
    };
    let viewer = mk("viewer-1", Scope::Viewer).await;
    let operator = mk("operator-1", Scope::Operator).await;
    let v = m.client(&viewer.secret);
    let o = m.client(&operator.secret);
    assert_eq!(status(&v, Method::GET, "/v1/jobs", None).await, 200);
    assert_eq!(status(&v, Method::GET, "/metrics", None).await, 200);
    assert_eq!(
        status(&v, Method::PUT, "/v1/jobs/ls-l", Some(&task)).await,
        403
    );
    assert_eq!(status(&v, Method::GET, "/v1/tokens", None).await, 403);
    assert_eq!(
        status(&v, Method::POST, "/v1/agent/runs", Some("{}")).await,
        403
    );
    assert_eq!(
        status(&o, Method::PUT, "/v1/jobs/ls-l", Some(&task)).await,
        201
    );
    assert_eq!(status(&o, Method::GET, "/v1/tokens", None).await, 403);
    // Notification rules: any reader lists them; only an admin changes or tests them (a rule
    // makes every manager read files from its disk and send to the address it names).
    let rule = r#"{"channel":{"type":"webhook","url":"http://127.0.0.1:9/hook"}}"#;
    assert_eq!(status(&v, Method::GET, "/v1/notify", None).await, 200);
    assert_eq!(
        status(&o, Method::PUT, "/v1/notify/ops", Some(rule)).await,
        403
    );
    assert_eq!(
        status(&o, Method::POST, "/v1/notify/ops/test", None).await,
        403
    );
    assert_eq!(
        status(&o, Method::DELETE, "/v1/notify/ops", None).await,
        403
    );
    assert_eq!(
        v.get_job("ls-l").await.unwrap().record.updated_by,
        "operator-1",
        "the actor is the token name"
    );

    // Basic auth with the token as password works too (the seed's clients used it).
    let basic = reqwest::Client::new()
        .get(format!("{}/v1/jobs", m.url))
        .basic_auth("opuser", Some(&viewer.secret))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 200);

    let names: Vec<_> = admin
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["admin", "agent", "viewer-1", "operator-1"]);
    let dup = admin
        .create_token(&CreateTokenRequest {
            name: "viewer-1".into(),
            scope: Scope::Viewer,
            expires_in_secs: None,
        })
        .await
        .unwrap_err();
    assert_eq!(dup.status(), Some(409));
    let revoked = admin.revoke_token(&viewer.info.id).await.unwrap();
    assert!(revoked.revoked);
    assert_eq!(status(&v, Method::GET, "/v1/jobs", None).await, 401);
    assert_eq!(
        admin.revoke_token("nope").await.unwrap_err().status(),
        Some(404)
    );
    let audit = admin.audit(None, None).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "token.revoke" && e.target == "viewer-1")
    );
    m.stop().await;
}

/// Runs `op-manager --data-dir DIR token ARGS...` on a blocking thread.
async fn token_cli(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        #[allow(clippy::disallowed_methods)] // tests run the binary under test
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_op-manager"))
            .arg("--data-dir")
            .arg(&dir)
            .arg("token")
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_subcommand_talks_to_the_running_manager() {
    let m = TestManager::start().await;
    let dir = m.dir.path();
    let (ok, secret, err) =
        token_cli(dir, &["create", "--scope", "operator", "--name", "ci"]).await;
    assert!(ok, "{err}");
    let ci = m.client(secret.trim());
    save(&ci, json!({"JobName": "x", "Command": "true"})).await;

    let (ok, table, err) = token_cli(dir, &["list"]).await;
    assert!(ok, "{err}");
    assert!(table.starts_with("ID\tNAME\tSCOPE"), "{table}");
    let ci_id = table
        .lines()
        .find(|l| l.split('\t').nth(1) == Some("ci"))
        .and_then(|l| l.split('\t').next())
        .unwrap()
        .to_string();
    let (ok, out, err) = token_cli(dir, &["revoke", &ci_id]).await;
    assert!(ok, "{err}");
    assert!(out.contains("revoked"), "{out}");
    assert_eq!(ci.list_jobs().await.unwrap_err().status(), Some(401));
    let (ok, _, err) = token_cli(dir, &["create", "--scope", "root", "--name", "x"]).await;
    assert!(!ok && err.contains("unknown scope"), "{err}");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guessing_loop_is_blocked() {
    let m = TestManager::start().await;
    let guesser = m.client("000000000000.guess");
    let mut blocked_after = None;
    for i in 1..=op_manager::auth::MAX_AUTH_FAILURES + 5 {
        match guesser.list_jobs().await.unwrap_err().status() {
            Some(401) => {}
            Some(429) => {
                blocked_after = Some(i);
                break;
            }
            other => panic!("attempt {i}: {other:?}"),
        }
    }
    assert_eq!(blocked_after, Some(op_manager::auth::MAX_AUTH_FAILURES + 1));
    // While blocked, even the right token from that address is refused, with Retry-After.
    let resp = m
        .admin()
        .request(Method::GET, "/v1/jobs")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: op_proto::ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.code, "too_many_auth_failures");
    m.stop().await;
}
