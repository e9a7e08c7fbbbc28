//! The web console in a real headless Chromium against a real manager and real agents (issue
//! 11's scenarios): login and the overview's counts, the job editor (a bad cron is shown inline
//! and nothing is saved), run now on two hosts, a running run's output growing, an agent turning
//! NotReady, package upload / rollback / convergence, and the viewer's read-only console with
//! forged POSTs refused. Screenshots of the main pages land in `target/ui-screenshots/`.

use std::time::{Duration, Instant};

use op_client::Started;
use op_proto::NodeStatus;
use op_proto::api::{CreateTokenRequest, Scope};
use op_proto::invoke::InvokeRequest;
use op_testkit::{Manager, ManagerOptions, wait_until};
use serde_json::json;

use crate::browser::{Browser, WAIT};
use crate::support::{LONG, fleet};

/// Signs in with `token` and waits for the overview.
async fn login(b: &Browser, m: &Manager, token: &str) {
    b.goto(&format!("{}/ui", m.api_url)).await;
    // Not signed in: the console sends the browser to its login page.
    b.find("#token").await;
    assert!(b.url().await.contains("/ui/login"), "{}", b.url().await);
    b.fill("#token", token).await;
    b.click("#login").await;
    b.find("#overview").await;
    b.ready().await;
}

/// Waits until exactly `n` elements match `css`.
async fn wait_count(b: &Browser, css: &str, n: usize, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = b.find_all(css).await.len();
        if found == n {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}: {found} of {n} {css:?} on {}; the page says:\n{}",
                b.url().await,
                b.body_text().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs from the page's own script (the session cookie goes along) and returns the status.
/// `csrf`: none, or the header value to send.
async fn post_from_page(b: &Browser, path: &str, csrf: Option<&str>) -> u64 {
    let v = b
        .exec(
            "const [path, csrf, done] = arguments;
             const headers = { 'content-type': 'application/x-www-form-urlencoded' };
             if (csrf !== null) headers['x-csrf-token'] = csrf;
             fetch(path, { method: 'POST', credentials: 'same-origin', headers, body: '' })
               .then(r => done(r.status), e => done(String(e)));",
            json!([path, csrf]),
        )
        .await;
    v.as_u64().unwrap_or_else(|| panic!("fetch failed: {v}"))
}

const HELLO: &str = r#"{
"JobName": "hello",
"Command": "echo hello {who} from $(hostname)",
"Params": ["who"],
"Timeout": 60,
"Enabled": 1
}"#;

const BAD_CRON: &str = r#"{"JobName": "hello", "Command": "echo hi", "CronExpr": "61 * * * *"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn operator_console_end_to_end() {
    let m = Manager::start_with(ManagerOptions {
        args: vec!["--node-timeout".into(), "3s".into()],
        ..ManagerOptions::default()
    });
    let mut agents = fleet(&m, 2, &[]).await;
    let c = m.client();
    let b = Browser::start(1280, 900).await;
    let ui = format!("{}/ui", m.api_url);

    // Login; the overview's counts are the fleet's.
    b.goto(&format!("{ui}/login")).await;
    b.find("#token").await;
    b.screenshot("login").await;
    login(&b, &m, &m.admin_token).await;
    let cookie = b.cookie("op_session").await;
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    let ready = c
        .list_nodes()
        .await
        .unwrap()
        .iter()
        .filter(|n| n.status == NodeStatus::Ready)
        .count();
    assert_eq!(ready, 2);
    assert_eq!(b.text("#tile-nodes-ready .value").await, "2");
    assert_eq!(b.text("#tile-nodes-notready .value").await, "0");
    assert_eq!(b.text("#tile-jobs .value").await, "0");
    assert!(
        b.text("#tile-cluster-leader").await.contains("this member"),
        "{}",
        b.body_text().await
    );
    b.screenshot("overview").await;

    // The editor: a bad cron is shown inline while typing and again on save; nothing is saved.
    b.goto(&format!("{ui}/jobs/new")).await;
    b.ready().await;
    b.fill("#task", BAD_CRON).await;
    b.wait_text("#editor-errors", "the cron error, inline", |t| {
        t.contains("CronExpr")
    })
    .await;
    b.screenshot("job-editor-error").await;
    b.click("#save-job").await;
    b.wait_text("#editor-errors", "the cron error after save", |t| {
        t.contains("CronExpr")
    })
    .await;
    assert!(
        b.url().await.ends_with("/ui/jobs/save"),
        "{}",
        b.url().await
    );
    assert!(
        c.list_jobs().await.unwrap().is_empty(),
        "a bad job was saved"
    );

    // A good one is saved through the API and shown.
    b.fill("#task", HELLO).await;
    b.wait_text("#editor-fires", "the file to validate", |t| {
        t.contains("Valid")
    })
    .await;
    b.click("#save-job").await;
    b.find("#run-now").await;
    assert!(
        b.url().await.ends_with("/ui/jobs/hello"),
        "{}",
        b.url().await
    );
    let saved = c.get_job("hello").await.unwrap();
    assert_eq!(saved.record.spec.params, ["who"]);
    assert_eq!(saved.record.updated_by, "admin");

    // Run now on both hosts with a parameter; both results appear.
    b.click("input[name=host][value=node-1]").await;
    b.click("input[name=host][value=node-2]").await;
    b.fill("input[name='param.who']", "console").await;
    b.screenshot("job").await;
    b.click("#run-now-button").await;
    b.find("#invocation").await;
    assert!(
        b.url().await.contains("/ui/invocations/"),
        "{}",
        b.url().await
    );
    wait_count(&b, "#invocation tr[data-status=ok]", 2, "both hosts ok").await;
    let rows = b.text("#invocation table").await;
    assert!(rows.contains("hello console from"), "{rows}");
    b.screenshot("invocation").await;

    // A forged POST without the CSRF token is refused, even from a signed-in admin's browser.
    assert_eq!(
        post_from_page(&b, "/ui/jobs/hello/disable", None).await,
        403
    );
    assert_eq!(
        post_from_page(&b, "/ui/jobs/hello/disable", Some("not-the-token")).await,
        403
    );
    assert!(c.get_job("hello").await.unwrap().record.spec.enabled);

    // A running run's output grows on its page.
    c.save_job_text(
        "ticker",
        r#"{"JobName": "ticker", "Command": "for i in $(seq 1 120); do echo tick $i; sleep 0.1; done", "Timeout": 60}"#,
    )
    .await
    .unwrap();
    let started = c
        .run_job(
            "ticker",
            &InvokeRequest {
                hosts: vec!["node-1".into()],
                wait: Some(false),
                ..InvokeRequest::default()
            },
        )
        .await
        .unwrap();
    let Started::Accepted(accepted) = started else {
        panic!("expected an accepted invocation");
    };
    let deadline = Instant::now() + LONG;
    let run_id = loop {
        let id = c
            .invocation(accepted.invocation_id)
            .await
            .ok()
            .and_then(|v| v.hosts.first().and_then(|h| h.run_id));
        if let Some(id) = id
            && c.get_node("node-1")
                .await
                .is_ok_and(|n| n.running.iter().any(|r| r.run_id == id))
        {
            break id;
        }
        assert!(Instant::now() < deadline, "the ticker never ran on node-1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    b.goto(&format!("{ui}/runs/{run_id}")).await;
    b.ready().await;
    let first = b
        .wait_text("#output", "some output", |t| t.contains("tick"))
        .await;
    b.wait_text("#output", "the output to grow", |t| {
        t.len() > first.len() && t.starts_with(first.trim_end())
    })
    .await;
    b.screenshot("run-live").await;
    // When it ends, the page shows the stored record.
    b.wait_text("#run-status", "the run to finish", |t| t.contains("ok"))
        .await;
    assert!(b.text("#output").await.contains("tick 120"));
    b.screenshot("run").await;
    b.goto(&format!("{ui}/runs")).await;
    b.find(&format!("tr[data-run='{run_id}']")).await;
    b.screenshot("runs").await;

    // Packages: upload two versions, roll back, and watch every host converge.
    let files = tempfile::tempdir().unwrap();
    let mut versions = Vec::new();
    for content in ["v1\n", "v2\n"] {
        let path = files.path().join("tool.txt");
        std::fs::write(&path, content).unwrap();
        b.goto(&format!("{ui}/packages")).await;
        b.ready().await;
        b.fill("#upload-file", &path.to_string_lossy()).await;
        if versions.is_empty() {
            b.screenshot("packages-empty").await;
        }
        b.click("#upload-button").await;
        b.find("#converged").await;
        let current = c
            .list_packages()
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.name == "tool.txt")
            .expect("uploaded")
            .version;
        assert!(!versions.contains(&current));
        versions.push(current);
        b.wait_text("#current-version", "the new version", |t| {
            t == current.to_string()
        })
        .await;
        b.wait_text("#converged", "every host current", |t| t == "2 of 2")
            .await;
        for a in &agents {
            let got = std::fs::read_to_string(a.deploy_dir().join("tool.txt")).unwrap();
            assert_eq!(got, content);
        }
    }
    b.screenshot("package").await;
    b.click(".actions form[action$='/rollback'] button").await;
    b.accept_dialog().await;
    b.wait_text("#current-version", "the rolled-back version", |t| {
        t == versions[0].to_string()
    })
    .await;
    b.wait_text("#converged", "every host back on v1", |t| t == "2 of 2")
        .await;
    for a in &agents {
        wait_until(LONG, "v1 on disk again", || async {
            std::fs::read_to_string(a.deploy_dir().join("tool.txt")).is_ok_and(|s| s == "v1\n")
        })
        .await;
    }
    b.goto(&format!("{ui}/packages")).await;
    b.find("tr[data-package='tool.txt']").await;
    b.screenshot("packages").await;

    // The other pages, for the record.
    for (page, name) in [("jobs", "jobs"), ("cluster", "cluster"), ("audit", "audit")] {
        b.goto(&format!("{ui}/{page}")).await;
        b.ready().await;
        b.screenshot(name).await;
    }
    let audit = b.body_text().await;
    assert!(
        audit.contains("package.rollback") || audit.contains("rollback"),
        "{audit}"
    );
    let node1 = c.get_node("node-1").await.unwrap();
    b.goto(&format!("{ui}/nodes/{}", node1.node_id)).await;
    b.ready().await;
    assert!(b.body_text().await.contains("tool.txt"));
    b.screenshot("node").await;

    // Stop an agent: its row turns NotReady on the open nodes page (which refreshes itself).
    b.goto(&format!("{ui}/nodes")).await;
    b.ready().await;
    b.wait_text("tr[data-node='node-2']", "node-2 Ready", |t| {
        t.contains("Ready") && !t.contains("NotReady")
    })
    .await;
    agents[1].stop();
    b.wait_text("tr[data-node='node-2']", "node-2 NotReady", |t| {
        t.contains("NotReady")
    })
    .await;
    b.screenshot("nodes").await;
    b.goto(&ui).await;
    b.ready().await;
    assert_eq!(b.text("#tile-nodes-notready .value").await, "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn viewer_gets_a_read_only_console() {
    let m = Manager::start();
    let _agents = fleet(&m, 1, &[]).await;
    let c = m.client();
    c.save_job_text(
        "shout",
        r#"{"JobName": "shout", "Command": "echo '<b>not bold</b>' && exit 3", "Timeout": 60}"#,
    )
    .await
    .unwrap();
    // One failed run, so the failure grouping has something to show.
    let started = c
        .run_job(
            "shout",
            &InvokeRequest {
                wait: Some(false),
                ..InvokeRequest::default()
            },
        )
        .await
        .unwrap();
    let Started::Accepted(a) = started else {
        panic!("expected an accepted invocation")
    };
    wait_until(LONG, "the shout run to be stored", || async {
        c.invocation(a.invocation_id)
            .await
            .is_ok_and(|v| v.summary.failed == 1)
    })
    .await;
    let viewer = c
        .create_token(&CreateTokenRequest {
            name: "watcher".into(),
            scope: Scope::Viewer,
            expires_in_secs: None,
        })
        .await
        .unwrap()
        .secret;

    let b = Browser::start(1280, 900).await;
    let ui = format!("{}/ui", m.api_url);
    login(&b, &m, &viewer).await;
    assert_eq!(b.text("#tile-jobs .value").await, "1");
    assert_eq!(b.text("#tile-failing-jobs .value").await, "1");

    // No write controls anywhere.
    b.goto(&format!("{ui}/jobs")).await;
    b.find("tr[data-job=shout]").await;
    assert!(b.find_all("#new-job").await.is_empty());
    b.goto(&format!("{ui}/jobs/shout")).await;
    b.find("#definition").await;
    for css in [
        "#run-now",
        "#edit-job",
        "form[action$='/disable']",
        "form[action$='/delete']",
    ] {
        assert!(b.find_all(css).await.is_empty(), "a viewer sees {css}");
    }
    // Values are escaped: the command's markup shows as text.
    assert!(b.text("#definition").await.contains("<b>not bold</b>"));
    let groups = b.text("#job-live").await;
    assert!(groups.contains("exit 3 on 1 of 1 hosts"), "{groups}");
    b.screenshot("viewer-job").await;
    b.goto(&format!("{ui}/jobs/new")).await;
    b.find("#task").await;
    assert!(b.find_all("#save-job").await.is_empty());
    b.goto(&format!("{ui}/packages")).await;
    b.ready().await;
    assert!(b.find_all("#upload").await.is_empty());

    // Writes are refused whatever the request carries: with the session's own CSRF token too.
    let csrf = b
        .exec(
            "arguments[0](document.querySelector('meta[name=csrf-token]').content)",
            json!([]),
        )
        .await;
    let csrf = csrf.as_str().expect("csrf meta").to_string();
    assert_eq!(
        post_from_page(&b, "/ui/jobs/shout/disable", None).await,
        403
    );
    assert_eq!(
        post_from_page(&b, "/ui/jobs/shout/disable", Some(&csrf)).await,
        403
    );
    assert!(c.get_job("shout").await.unwrap().record.spec.enabled);

    // On a phone-sized window the pages still read.
    b.resize(390, 844).await;
    b.goto(&ui).await;
    b.ready().await;
    b.screenshot("phone-overview").await;
    b.goto(&format!("{ui}/jobs/shout")).await;
    b.ready().await;
    b.screenshot("phone-job").await;
}
