//! Events from a real manager and a real agent (issue 19): a job run that fails (with a hostile
//! error text) gives `run.failed` and `invocation.finished`, a package version the agent refuses
//! to deploy gives `package.failed`, all in `GET /v1/events`; the console's Events page lists
//! them (escaped), filters by kind and job, refuses a request without a session, and the job page
//! shows the job's incident.

use op_client::{Client, EventQuery};
use op_proto::events::{Event, EventKind};
use op_proto::invoke::InvokeRequest;
use op_testkit::{Manager, ManagerOptions, bin, wait_until};

use crate::support::{LONG, fleet, job};

/// Every kept event, oldest first.
async fn all_events(c: &Client) -> Vec<Event> {
    let mut stream = c.events(&EventQuery::default()).await.unwrap();
    let mut out = Vec::new();
    while let Some(e) = stream.next().await.unwrap() {
        out.push(e);
    }
    out
}

/// Waits until an event matching `pred` is kept; returns it.
async fn wait_event(c: &Client, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    wait_until(LONG, what, || async {
        all_events(c).await.iter().any(&pred)
    })
    .await;
    all_events(c).await.into_iter().find(pred).unwrap()
}

/// A console session over plain HTTP: the login form's nonce cookie and CSRF field, then the
/// session cookie.
pub(crate) struct Console {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

fn cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_string)
        .collect()
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

impl Console {
    pub(crate) async fn login(m: &Manager) -> Console {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = m.api_url.trim_end_matches('/').to_string();
        let form = http.get(format!("{base}/ui/login")).send().await.unwrap();
        let nonce = cookies(&form).join("; ");
        let page = form.text().await.unwrap();
        let csrf = between(&page, "name=\"csrf\" value=\"", "\"").expect("the login form's csrf");
        let body = format!("token={}&csrf={csrf}&next=%2Fui", m.admin_token);
        let resp = http
            .post(format!("{base}/ui/login"))
            .header(reqwest::header::COOKIE, nonce)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_redirection(), "login: {}", resp.status());
        let cookie = cookies(&resp)
            .into_iter()
            .find(|c| c.starts_with("op_session="))
            .expect("a session cookie");
        Console { http, base, cookie }
    }

    /// GETs `path` with the session: its status and body.
    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    pub(crate) async fn page(&self, path: &str) -> String {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }
}

/// The kinds of the rows of an events page, in order.
fn row_kinds(page: &str) -> Vec<String> {
    page.split("<tr data-event=")
        .skip(1)
        .filter_map(|row| between(row, "data-kind=\"", "\""))
        .map(str::to_string)
        .collect()
}

/// A tar.gz the agent refuses: one member with an absolute path.
fn refused_archive() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let name = b"/tmp/op-events-evil";
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut e, &tar).unwrap();
    e.finish().unwrap()
}

const HOSTILE: &str = r#"{
"JobName": "hostile",
"Command": "echo '<b onmouseover=alert(1)>boom</b>' >&2; exit 3",
"Timeout": 60,
"Enabled": 1
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_packages_and_invocations_are_events_in_the_api_and_the_console() {
    let m = Manager::start_with(ManagerOptions {
        args: vec!["--event-window".into(), "1s".into()],
        ..ManagerOptions::default()
    });
    let _agents = fleet(&m, 1, &[]).await;
    let c = m.client();

    // A job that fails on the agent, run through the manager: one fire, closed when its one
    // host reported.
    c.save_job(&job(HOSTILE)).await.unwrap();
    c.run_job(
        "hostile",
        &InvokeRequest {
            all: true,
            wait: Some(false),
            ..InvokeRequest::default()
        },
    )
    .await
    .unwrap();
    let finished = wait_event(&c, "invocation.finished for hostile", |e| {
        e.kind == EventKind::InvocationFinished && e.job.as_deref() == Some("hostile")
    })
    .await;
    assert_eq!(finished.hosts, ["node-1"], "{finished:?}");
    assert!(
        finished.summary.contains("1 failed"),
        "{}",
        finished.summary
    );
    assert!(finished.url.starts_with("/ui/invocations/"), "{finished:?}");
    let failed = wait_event(&c, "run.failed for hostile", |e| {
        e.kind == EventKind::RunFailed && e.job.as_deref() == Some("hostile")
    })
    .await;
    assert_eq!(failed.hosts, ["node-1"]);
    assert!(
        failed.summary.contains("<b onmouseover"),
        "{}",
        failed.summary
    );

    // A package version the agent refuses to deploy.
    let work = tempfile::tempdir().unwrap();
    let deploy = tempfile::tempdir().unwrap();
    let archive = work.path().join("proj.tar.gz");
    std::fs::write(&archive, refused_archive()).unwrap();
    let out = std::process::Command::new(bin("agentcli"))
        .args([
            "upload",
            archive.to_str().unwrap(),
            deploy.path().to_str().unwrap(),
        ])
        .env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &m.admin_token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "upload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let package = wait_event(&c, "package.failed for proj.tar.gz", |e| {
        e.kind == EventKind::PackageFailed
    })
    .await;
    assert_eq!(package.hosts, ["node-1"]);
    assert!(
        package
            .package
            .as_deref()
            .is_some_and(|p| p.starts_with("proj.tar.gz@")),
        "{package:?}"
    );
    assert!(
        package
            .signature
            .as_deref()
            .is_some_and(|s| s.starts_with("archive refused:")),
        "{package:?}"
    );
    assert_eq!(package.url, "/ui/packages/proj.tar.gz");
    // Grouped once: the agent's retries of the same failure add no event.
    let kept = all_events(&c).await;
    assert_eq!(
        kept.iter()
            .filter(|e| e.kind == EventKind::PackageFailed)
            .count(),
        1,
        "{kept:?}"
    );

    // The console's Events page.
    let ui = Console::login(&m).await;
    let page = ui.page("/ui/events").await;
    assert!(
        page.contains("href=\"/ui/events\" aria-current=\"page\""),
        "the nav names it"
    );
    assert!(
        page.contains("id=\"events-live\" data-refresh="),
        "the list is live"
    );
    let kinds = row_kinds(&page);
    for k in ["run.failed", "invocation.finished", "package.failed"] {
        assert!(kinds.iter().any(|x| x == k), "{k} listed: {kinds:?}");
    }
    assert!(
        !page.contains("<b onmouseover"),
        "the hostile error text is escaped"
    );
    assert!(page.contains("&lt;b onmouseover=alert(1)&gt;"));
    assert!(page.contains(&format!("href=\"{}\"", package.url)));
    assert!(page.contains(&format!("href=\"{}\"", finished.url)));

    let only_packages = row_kinds(&ui.page("/ui/events?kind=package.failed").await);
    assert_eq!(only_packages, ["package.failed"]);
    let only_hostile = row_kinds(&ui.page("/ui/events?job=hostile").await);
    assert!(
        !only_hostile.is_empty() && !only_hostile.iter().any(|k| k == "package.failed"),
        "{only_hostile:?}"
    );
    let both = row_kinds(&ui.page("/ui/events?kind=run.failed&job=hostile").await);
    assert_eq!(both, ["run.failed"]);
    let none = ui.page("/ui/events?job=%3Cscript%3Enope").await;
    assert!(row_kinds(&none).is_empty());
    assert!(!none.contains("<script>nope"), "the job filter is escaped");
    assert!(none.contains("value=\"&lt;script&gt;nope\""));
    let (status, body) = ui.get("/ui/events?kind=bogus").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown event kind"), "{body}");

    // The job page shows the incident, still open.
    let job_page = ui.page("/ui/jobs/hostile").await;
    let incidents = between(&job_page, "id=\"incidents\"", "</section>").expect("incidents");
    assert!(
        incidents.contains(&format!("data-incident=\"{}\"", failed.id)),
        "{incidents}"
    );
    assert!(incidents.contains("open"), "{incidents}");
    assert!(!incidents.contains("<b onmouseover"), "{incidents}");

    // Fixed: the next run succeeds, the incident closes with one run.recovered, and the job
    // page says so.
    c.save_job(&job(&HOSTILE.replace("exit 3", "exit 0")))
        .await
        .unwrap();
    c.run_job(
        "hostile",
        &InvokeRequest {
            all: true,
            wait: Some(false),
            ..InvokeRequest::default()
        },
    )
    .await
    .unwrap();
    let recovered = wait_event(&c, "run.recovered for hostile", |e| {
        e.kind == EventKind::RunRecovered && e.job.as_deref() == Some("hostile")
    })
    .await;
    assert_eq!(recovered.incident, Some(failed.id));
    let job_page = ui.page("/ui/jobs/hostile").await;
    let incidents = between(&job_page, "id=\"incidents\"", "</section>").expect("incidents");
    assert!(incidents.contains("recovered"), "{incidents}");

    // Without a session: sent to sign in, no event shown.
    let anon = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/ui/events", ui.base))
        .send()
        .await
        .unwrap();
    assert!(anon.status().is_redirection(), "{}", anon.status());
    assert!(
        anon.headers()[reqwest::header::LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/ui/login"),
    );
    assert!(!anon.text().await.unwrap().contains("data-event="));
}
