//! The web console in a real headless Chromium against a real manager and real agents (issue
//! 11's scenarios): login and the overview's counts, the job editor (a bad cron is shown inline
//! and nothing is saved), run now on two hosts, a running run's output growing, an agent turning
//! NotReady (and the Events page following it down and back, live), package upload / rollback /
//! convergence, and the viewer's read-only console with forged POSTs refused. Screenshots of the
//! main pages land in `target/ui-screenshots/`.

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
        args: vec![
            "--node-timeout".into(),
            "3s".into(),
            "--event-window".into(),
            "1s".into(),
        ],
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

    // The Events page lists the node going down, and shows it back without a reload (the list
    // is a live region).
    b.goto(&format!("{ui}/events")).await;
    b.ready().await;
    b.wait_text(
        "tr[data-kind='node.not_ready']",
        "the node.not_ready event",
        |t| t.contains("node-2"),
    )
    .await;
    b.screenshot("events").await;
    agents[1].restart();
    b.wait_text(
        "tr[data-kind='node.ready']",
        "the node.ready event, shown live",
        |t| t.contains("node-2"),
    )
    .await;
    assert!(b.url().await.ends_with("/ui/events"), "no navigation");
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

/// Invokes `job` on `hosts` with `params` and waits until every host's run is stored.
async fn run_and_wait(m: &Manager, job: &str, hosts: &[&str], params: &[(&str, &str)]) {
    let c = m.client();
    let started = c
        .run_job(
            job,
            &InvokeRequest {
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                params: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                wait: Some(false),
                ..InvokeRequest::default()
            },
        )
        .await
        .unwrap();
    let Started::Accepted(a) = started else {
        panic!("expected an accepted invocation")
    };
    wait_until(LONG, &format!("{job} to finish on {hosts:?}"), || async {
        c.invocation(a.invocation_id)
            .await
            .is_ok_and(|v| v.finished_at.is_some())
    })
    .await;
}

/// Issue 17, item 21: the node page's recent runs say which job ran.
#[tokio::test(flavor = "multi_thread")]
async fn node_page_recent_runs_name_their_job() {
    let m = Manager::start();
    let _agents = fleet(&m, 1, &[]).await;
    let c = m.client();
    c.save_job_text(
        "nightly-report",
        r#"{"JobName": "nightly-report", "Command": "echo report", "Timeout": 60}"#,
    )
    .await
    .unwrap();
    run_and_wait(&m, "nightly-report", &["node-1"], &[]).await;
    let node = c.get_node("node-1").await.unwrap();
    let b = Browser::start(1280, 900).await;
    login(&b, &m, &m.admin_token).await;
    b.goto(&format!("{}/ui/nodes/{}", m.api_url, node.node_id))
        .await;
    b.ready().await;
    let head = b.text("table.runs thead").await;
    assert!(head.to_lowercase().contains("job"), "no Job column: {head}");
    let link = b
        .find("table.runs tbody td[data-label=Job] a[href='/ui/jobs/nightly-report']")
        .await;
    assert!(!link.is_empty());
    b.exec(
        "document.querySelector('table.runs').scrollIntoView({ block: 'center' }); arguments[0](null);",
        json!([]),
    )
    .await;
    b.screenshot("node-recent-runs").await;
}

/// Issue 17, item 22: every badge symbol on the job list is drawn, none is the font's
/// missing-glyph box. A symbol written as text is drawn on a canvas in the badge's own font and
/// compared with a character no font has (which draws that box).
#[tokio::test(flavor = "multi_thread")]
async fn job_list_badges_draw_every_symbol() {
    let m = Manager::start();
    let _agents = fleet(&m, 1, &[]).await;
    let c = m.client();
    c.save_job_text(
        "slow",
        r#"{"JobName": "slow", "Command": "sleep 30", "Timeout": 1}"#,
    )
    .await
    .unwrap();
    c.save_job_text(
        "quick",
        r#"{"JobName": "quick", "Command": "true", "Timeout": 60}"#,
    )
    .await
    .unwrap();
    run_and_wait(&m, "slow", &["node-1"], &[]).await;
    run_and_wait(&m, "quick", &["node-1"], &[]).await;
    let b = Browser::start(1280, 900).await;
    login(&b, &m, &m.admin_token).await;
    b.goto(&format!("{}/ui/jobs", m.api_url)).await;
    b.ready().await;
    b.wait_text("tr[data-job=slow]", "the timeout result", |t| {
        t.contains("timeout")
    })
    .await;
    let found = b
        .exec(
            "const done = arguments[0];
             const draw = (text, font) => {
               const c = document.createElement('canvas');
               c.width = 48; c.height = 48;
               const g = c.getContext('2d');
               g.font = font;
               g.fillText(text, 8, 32);
               return Array.from(g.getImageData(0, 0, 48, 48).data).join(',');
             };
             const out = [];
             document.querySelectorAll('.badge > span[aria-hidden]').forEach((s) => {
               const st = getComputedStyle(s);
               const font = `${st.fontWeight} ${st.fontSize} ${st.fontFamily}`;
               const text = s.textContent.trim();
               const icon = s.querySelector('svg');
               const box = icon ? icon.getBoundingClientRect() : null;
               out.push({
                 badge: s.parentElement.textContent.trim(),
                 text,
                 missing: text !== '' && draw(text, font) === draw('\\u{10FFFD}', font),
                 icon: box ? box.width > 0 && box.height > 0 : false,
               });
             });
             done(out);",
            json!([]),
        )
        .await;
    let badges = found.as_array().expect("badges").clone();
    assert!(
        badges
            .iter()
            .any(|b| b["badge"].as_str().unwrap().contains("timeout")),
        "{found}"
    );
    for badge in &badges {
        assert_eq!(
            badge["missing"], false,
            "a badge symbol is the missing-glyph box: {badge}"
        );
        assert!(
            badge["text"] != "" || badge["icon"] == true,
            "a badge without a symbol: {badge}"
        );
    }
    b.screenshot("jobs-timeout-badge").await;
}

/// Issue 17, item 23: no rollback is offered at the oldest version, and an error page (here a
/// rollback refused by a page gone stale) links back to the page the user was on.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_not_offered_at_the_oldest_version_and_errors_link_back() {
    let m = Manager::start();
    let c = m.client();
    let mut versions = Vec::new();
    for content in ["v1\n", "v2\n"] {
        versions.push(
            c.upload_package_bytes("tool.txt", None, content.as_bytes().to_vec())
                .await
                .unwrap()
                .version,
        );
    }
    let b = Browser::start(1280, 900).await;
    login(&b, &m, &m.admin_token).await;
    let page = format!("{}/ui/packages/tool.txt", m.api_url);
    b.goto(&page).await;
    b.ready().await;
    let rollback = ".actions form[action$='/rollback'] button";
    b.find(rollback).await;

    // Another operator rolls back meanwhile: the open page is stale, its button now asks for a
    // version older than the oldest.
    c.rollback_package("tool.txt", None).await.unwrap();
    b.click(rollback).await;
    b.accept_dialog().await;
    let back = b.find("a#back").await;
    assert!(!back.is_empty());
    let text = b.body_text().await;
    assert!(text.contains("no version older"), "{text}");
    b.screenshot("error-page-back-link").await;
    b.click("a#back").await;
    b.wait_text("#current-version", "the package page again", |t| {
        t == versions[0].to_string()
    })
    .await;
    assert_eq!(b.url().await, page);
    // At the oldest version there is nothing to roll back to: no button.
    assert!(
        b.find_all(rollback).await.is_empty(),
        "rollback offered at the oldest version"
    );
    // Making the newer version current again is still offered, on its row.
    b.find(&format!("tr[data-version='{}'] form button", versions[1]))
        .await;
    b.screenshot("package-at-oldest").await;

    // A page that is not there links back too (to the list it was reached from).
    b.goto(&format!("{}/ui/jobs", m.api_url)).await;
    b.ready().await;
    b.exec(
        "const done = arguments[0]; location.href = '/ui/jobs/no-such-job'; done(null);",
        json!([]),
    )
    .await;
    b.wait_text("h1", "the not-found page", |t| t == "Not Found")
        .await;
    b.click("a#back").await;
    b.find("#jobs").await;
    assert!(b.url().await.ends_with("/ui/jobs"), "{}", b.url().await);
}

/// Issue 17, item 24: an audit entry stays on one line; an exec's long command is shown whole
/// as the tooltip and when its entry is unfolded.
#[tokio::test(flavor = "multi_thread")]
async fn audit_rows_stay_on_one_line_and_show_the_whole_command() {
    let m = Manager::start();
    let _agents = fleet(&m, 1, &[]).await;
    let c = m.client();
    let command = format!(
        "for f in /var/log/app/*.log; do gzip -9 \"$f\"; done; echo {} && echo end-of-command",
        "x".repeat(60)
    );
    let started = c
        .exec(&InvokeRequest {
            all: true,
            command: Some(command.clone()),
            wait: Some(false),
            ..InvokeRequest::default()
        })
        .await
        .unwrap();
    assert!(matches!(started, Started::Accepted(_)));
    c.save_job_text(
        "short",
        r#"{"JobName": "short", "Command": "true", "Timeout": 60}"#,
    )
    .await
    .unwrap();
    let b = Browser::start(1280, 900).await;
    login(&b, &m, &m.admin_token).await;
    b.goto(&format!("{}/ui/audit", m.api_url)).await;
    b.ready().await;
    let rows = b
        .exec(
            "const done = arguments[0];
             done(Array.from(document.querySelectorAll('main table tbody tr')).map((tr) => ({
               action: tr.querySelector('[data-label=Action]').textContent,
               height: tr.getBoundingClientRect().height,
               title: (tr.querySelector('td.detail [title]') || {}).title || null,
             })));",
            json!([]),
        )
        .await;
    let rows = rows.as_array().expect("audit rows").clone();
    let row = |action: &str| {
        rows.iter()
            .find(|r| r["action"] == action)
            .unwrap_or_else(|| panic!("no {action} entry in {rows:?}"))
            .clone()
    };
    let exec = row("exec");
    let short = row("job.save");
    let (tall, one_line) = (
        exec["height"].as_f64().unwrap(),
        short["height"].as_f64().unwrap(),
    );
    assert!(
        tall < one_line * 1.3,
        "the exec entry wraps: {tall}px against {one_line}px for a one-line entry"
    );
    let title = exec["title"]
        .as_str()
        .expect("a tooltip on the exec detail");
    assert!(title.ends_with(&command), "{title}");

    // Unfolded, the whole command is on the page, not cut.
    b.click("tr[data-audit] td.detail summary").await;
    let whole = b
        .wait_text(
            "td.detail details[open] .whole",
            "the unfolded command",
            |t| t.contains("end-of-command"),
        )
        .await;
    assert!(whole.ends_with(&command), "{whole}");
    let clipped = b
        .exec(
            "const e = document.querySelector('td.detail details[open] .whole');
             arguments[0](e.scrollWidth > e.clientWidth);",
            json!([]),
        )
        .await;
    assert_eq!(clipped, false, "the unfolded command is still cut");
    b.screenshot("audit").await;
}

/// Counts the elements matching `css` that the page has now.
async fn count(b: &Browser, css: &str) -> usize {
    b.find_all(css).await.len()
}

/// Issue 17, item 25: the job page draws its recent runs (a mark per run, shaped by outcome),
/// the overview its runs and failures over time, and the node page its load over time.
#[tokio::test(flavor = "multi_thread")]
async fn charts_show_runs_failures_and_load() {
    let m = Manager::start_with(ManagerOptions {
        args: vec![
            "--node-timeout".into(),
            "3s".into(),
            "--load-sample-every".into(),
            "1s".into(),
        ],
        ..ManagerOptions::default()
    });
    let _agents = fleet(&m, 2, &[]).await;
    let c = m.client();
    c.save_job_text(
        "flaky",
        r#"{"JobName": "flaky", "Command": "exit {code}", "Params": ["code"], "Timeout": 60}"#,
    )
    .await
    .unwrap();
    run_and_wait(&m, "flaky", &["node-1", "node-2"], &[("code", "0")]).await;
    run_and_wait(&m, "flaky", &["node-1"], &[("code", "3")]).await;

    let b = Browser::start(1280, 900).await;
    login(&b, &m, &m.admin_token).await;
    let ui = format!("{}/ui", m.api_url);

    // The job page: three marks, two ok (circles) and one failed (a cross).
    b.goto(&format!("{ui}/jobs/flaky")).await;
    b.ready().await;
    let chart = "#chart-job-runs svg[role=img]";
    b.find(chart).await;
    assert_eq!(
        count(&b, &format!("{chart} g.mark[data-status=ok] circle")).await,
        2
    );
    assert_eq!(
        count(
            &b,
            &format!("{chart} g.mark[data-status=failed] path.stroke")
        )
        .await,
        1
    );
    assert_eq!(count(&b, &format!("{chart} g.mark")).await, 3);
    let caption = b.text("#chart-job-runs figcaption").await;
    assert!(caption.contains("3 runs"), "{caption}");
    assert!(caption.contains("2 ok, 1 failed"), "{caption}");
    b.exec(
        "document.querySelector('#chart-job-runs').scrollIntoView({ block: 'center' }); arguments[0](null);",
        json!([]),
    )
    .await;
    b.screenshot("job-chart").await;

    // The overview: the three runs and the one failure, in the current slice.
    b.goto(&ui).await;
    b.ready().await;
    let buckets = b
        .exec(
            "arguments[0](Array.from(document.querySelectorAll('#chart-fleet-runs g.bucket'))
               .map((g) => [Number(g.dataset.runs), Number(g.dataset.failed)]));",
            json!([]),
        )
        .await;
    assert_eq!(buckets, json!([[3, 1]]), "the overview's timeline");
    assert_eq!(
        count(&b, "#chart-fleet-runs rect.failed").await,
        2,
        "a hatched bar and its legend"
    );
    b.screenshot("overview-timeline").await;

    // The node page: a dot per load sample, a few seconds' worth.
    let node = c.get_node("node-1").await.unwrap();
    b.goto(&format!("{ui}/nodes/{}", node.node_id)).await;
    b.ready().await;
    // The dots and the caption are read at once: the region refreshes itself in place.
    let deadline = Instant::now() + LONG;
    let (samples, desc) = loop {
        let v = b
            .exec(
                "const f = document.querySelector('#chart-node-load');
                 arguments[0]([f.querySelectorAll('svg[role=img] g.mark.sample').length,
                               f.querySelector('figcaption').textContent]);",
                json!([]),
            )
            .await;
        let n = v[0].as_u64().unwrap_or(0);
        if n >= 3 {
            break (n, v[1].as_str().unwrap_or_default().to_string());
        }
        assert!(Instant::now() < deadline, "only {n} load samples drawn");
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.goto(&format!("{ui}/nodes/{}", node.node_id)).await;
    };
    assert!(desc.contains(&format!("{samples} samples")), "{desc}");
    assert_eq!(count(&b, "#chart-node-load polyline.line").await, 1);
    assert_eq!(
        count(&b, "#chart-node-load line.limit").await,
        2,
        "the cpu line and its legend"
    );
    b.screenshot("node-load").await;
}
