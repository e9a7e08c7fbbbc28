//! Packages: the current version of each with how far the fleet has converged on it, a page per
//! package (its versions, the state on every host, rollback), and upload. Uploads stream the
//! browser's file straight into `PUT /v1/packages/NAME` (`console.js` sends it with the CSRF
//! header); rollbacks are `POST /v1/packages/NAME/rollback`. A host's standing with a version is
//! `op_proto::analysis::Standing`, the same judgement `agentcli analysis packages` prints.

use std::fmt::Write;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use op_proto::analysis::{Convergence, Standing, targeted};
use op_proto::package::{describe_target, is_everywhere};
use serde::Deserialize;

use super::Ui;
use super::html::{self, Section, attr, esc};
use super::nodes::package_state;
use super::session::{SessionView, form_field};
use super::writes::{self, CallBody};

/// The standing as a badge, with the text `agentcli analysis packages` prints for it.
fn badge(standing: &Standing) -> String {
    let (class, icon) = match standing {
        Standing::Current => ("good", "✓"),
        Standing::Downloading => ("busy", "↓"),
        Standing::Failed { .. } => ("bad", "✕"),
        Standing::Outdated => ("warn", "!"),
        Standing::Missing => ("muted", "?"),
    };
    format!(
        "<span class=\"badge {class}\"><span aria-hidden=\"true\">{icon}</span> {}</span>",
        esc(&standing.describe())
    )
}

fn upload_form(s: &SessionView) -> String {
    format!(
        "<section class=\"card\"><h2>Upload</h2>\
         <form id=\"upload\" class=\"upload\" method=\"post\" action=\"/ui/packages/upload\" data-upload>{}\
         <label>File <input type=\"file\" name=\"file\" id=\"upload-file\" required></label>\
         <label>Name <input name=\"name\" id=\"upload-name\" placeholder=\"the file's name\"></label>\
         <label>Deploy dir <input name=\"deploy_dir\" id=\"upload-dir\" placeholder=\"keep the last one\"></label>\
         <button class=\"primary\" id=\"upload-button\">Upload</button>\
         <p class=\"hint\">A <code>.tar.gz</code>, <code>.tgz</code>, <code>.tar.zst</code> or <code>.tar</code> is unpacked; \
          any other file is placed as it is. Every agent switches to the new version atomically.</p>\
         <p id=\"upload-status\" role=\"status\"></p></form></section>",
        html::csrf_field(s)
    )
}

pub async fn list(State(ui): State<Arc<Ui>>, Extension(s): Extension<SessionView>) -> Response {
    let read = ui.app.read(|st| Ok((st.packages()?, st.nodes()?))).await;
    let (mut packages, nodes) = match read {
        Ok((p, mut n)) => {
            ui.app.beats.overlay(&mut n);
            (p, n)
        }
        Err(e) => return html::server_error(&s, e),
    };
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    let mut body = String::with_capacity(4096 + packages.len() * 400);
    body.push_str("<h1>Packages</h1>");
    if s.can_operate() {
        body.push_str(&upload_form(&s));
    }
    body.push_str(
        "<div id=\"packages\" data-refresh=\"5000\"><table class=\"list\"><thead><tr><th>Package</th><th>Current</th><th>Size</th>\
         <th>Uploaded</th><th>Hosts current</th><th>Behind</th></tr></thead><tbody>",
    );
    for p in &packages {
        let c = Convergence::of(p, &nodes);
        let detail = if c.behind() == 0 {
            "–".to_string()
        } else {
            format!(
                "{}: {} downloading, {} failed, {} outdated, {} missing",
                c.behind(),
                c.downloading,
                c.failed,
                c.outdated,
                c.missing
            )
        };
        let _ = write!(
            body,
            "<tr data-package=\"{}\"><td data-label=\"Package\"><a href=\"/ui/packages/{}\">{}</a></td><td data-label=\"Current\">{}</td>\
             <td data-label=\"Size\">{}</td><td data-label=\"Uploaded\">{} by {}</td><td data-label=\"Current on\">{} of {}{}</td><td data-label=\"Behind\">{detail}</td></tr>",
            attr(&p.name),
            html::url(&p.name),
            esc(&p.name),
            p.version,
            html::bytes(p.size),
            html::time(p.uploaded_at),
            esc(&p.uploader),
            c.current,
            c.hosts,
            if is_everywhere(&p.target) {
                String::new()
            } else {
                format!(
                    " <span class=\"muted target\">({})</span>",
                    esc(&describe_target(&p.target))
                )
            }
        );
    }
    if packages.is_empty() {
        body.push_str("<tr><td colspan=\"6\" class=\"muted\">No package uploaded yet.</td></tr>");
    }
    body.push_str("</tbody></table></div>");
    html::respond(
        StatusCode::OK,
        html::page("Packages", Section::Packages, Some(&s), &body),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct ShowQuery {
    #[serde(default)]
    page: Option<usize>,
}

pub async fn show(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path(name): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Response {
    let n = name.clone();
    let read = ui
        .app
        .read(move |st| Ok((st.package_versions(&n)?, st.nodes()?)))
        .await;
    let (versions, nodes) = match read {
        Ok((v, mut n)) => {
            ui.app.beats.overlay(&mut n);
            (v, n)
        }
        Err(e) => return html::server_error(&s, e),
    };
    let Some(current) = versions.iter().find(|v| v.current).cloned() else {
        return html::not_found(&s, &format!("no package named {name:?}"));
    };
    // Only the hosts the current version targets (every host when it is not targeted).
    let hosts = targeted(&current, &nodes);
    let path = format!("/ui/packages/{}", html::url(&name));
    let mut body = String::with_capacity(8192);
    let _ = write!(
        body,
        "<div class=\"title-row\"><h1>{} <span class=\"muted\">version <span id=\"current-version\">{}</span></span></h1>",
        esc(&name),
        current.version
    );
    // "The previous version" is the newest one older than the current (what the API's rollback
    // without a version picks); at the oldest version there is none, so no button.
    let previous = versions
        .iter()
        .map(|v| v.version)
        .filter(|v| *v < current.version)
        .max();
    if s.can_operate()
        && let Some(previous) = previous
    {
        body.push_str("<div class=\"actions\">");
        body.push_str(&html::button_form(
            &s,
            &format!("{path}/rollback"),
            "Roll back to the previous version",
            "danger",
            Some(&format!(
                "Roll every host back to the previous version ({previous})?"
            )),
        ));
        body.push_str("</div>");
    }
    body.push_str("</div><div id=\"package\" data-refresh=\"2000\">");
    body.push_str("<section class=\"card\"><h2>Versions</h2><table class=\"list\"><thead><tr><th>Version</th><th>SHA-256</th><th>Size</th><th>Deploy dir</th><th>Target</th><th>Uploaded</th><th></th></tr></thead><tbody>");
    for v in versions.iter().rev() {
        let action = if v.current {
            "<span class=\"badge good\"><span aria-hidden=\"true\">★</span> current</span>"
                .to_string()
        } else if s.can_operate() {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"{path}/rollback\" data-confirm=\"Make version {} current on every host?\">{}\
                 <input type=\"hidden\" name=\"version\" value=\"{}\"><button>Make current</button></form>",
                v.version,
                html::csrf_field(&s),
                v.version
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr data-version=\"{}\"><td data-label=\"Version\">{}</td><td data-label=\"SHA-256\"><code title=\"{}\">{}…</code></td>\
             <td data-label=\"Size\">{}</td><td data-label=\"Deploy dir\">{}</td><td data-label=\"Target\" class=\"target\">{}</td><td data-label=\"Uploaded\">{} by {}</td><td>{action}</td></tr>",
            v.version,
            v.version,
            attr(&v.sha256),
            esc(v.sha256.get(..12).unwrap_or(&v.sha256)),
            html::bytes(v.size),
            esc(if v.deploy_dir.is_empty() {
                "(agent default)"
            } else {
                &v.deploy_dir
            }),
            esc(&describe_target(&v.target)),
            html::time(v.uploaded_at),
            esc(&v.uploader)
        );
    }
    body.push_str("</tbody></table></section>");
    let current_hosts = Convergence::of(&current, &nodes).current;
    // Packages from peers: where the hosts' bytes of the current version came from.
    let fetched_of = |n: &op_proto::NodeInfo| {
        n.packages
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| i.fetched.clone())
            .filter(|f| f.version == current.version)
    };
    let (peer_bytes, manager_bytes) = hosts
        .iter()
        .filter_map(|n| fetched_of(n))
        .fold((0u64, 0u64), |(p, m), f| {
            (p + f.from_peers, m + f.from_managers)
        });
    let spread = op_proto::package::FetchSources {
        from_peers: peer_bytes,
        from_managers: manager_bytes,
        ..Default::default()
    }
    .peer_percent()
    .map(|p| {
        format!(
            " <span id=\"from-peers\" class=\"muted\">({p:.1} % of the bytes from peers, {} from managers)</span>",
            html::bytes(manager_bytes)
        )
    })
    .unwrap_or_default();
    let _ = write!(
        body,
        "<section class=\"card\"><h2>On each host: <span id=\"converged\">{current_hosts} of {}</span> current{spread}</h2>",
        hosts.len()
    );
    let (rows, page) = html::page_of(&hosts, q.page.unwrap_or(1));
    body.push_str("<table class=\"list\"><thead><tr><th>Host</th><th>Node</th><th>Standing</th><th>Installed</th><th>Agent state</th><th>From peers</th><th>Error</th></tr></thead><tbody>");
    for n in rows {
        let held = n.packages.iter().find(|i| i.name == name);
        let standing = Standing::of(&current, n);
        let (installed, state, error) = match held {
            Some(i) => (
                format!(
                    "{}{}",
                    i.version,
                    i.target_version
                        .map(|t| format!(" → {t}"))
                        .unwrap_or_default()
                ),
                package_state(i.state),
                esc(i.error.as_deref().unwrap_or("")),
            ),
            None => ("–".into(), "–".into(), String::new()),
        };
        let from_peers = fetched_of(n)
            .and_then(|f| {
                let bad = f.bad_sources.len();
                f.peer_percent().map(|p| {
                    if bad > 0 {
                        format!(
                            "{p:.1} % ({bad} bad source{})",
                            if bad == 1 { "" } else { "s" }
                        )
                    } else {
                        format!("{p:.1} %")
                    }
                })
            })
            .unwrap_or_else(|| "–".into());
        let _ = write!(
            body,
            "<tr data-host=\"{}\" data-standing=\"{}\"><td data-label=\"Host\"><a href=\"/ui/nodes/{}\">{}</a></td>\
             <td data-label=\"Node\">{}</td><td data-label=\"Standing\">{}</td><td data-label=\"Installed\">{installed}</td>\
             <td data-label=\"State\">{state}</td><td data-label=\"From peers\">{from_peers}</td><td data-label=\"Error\">{error}</td></tr>",
            attr(&n.hostname),
            standing.word(),
            n.node_id,
            esc(&n.hostname),
            html::node_status(n.status),
            badge(&standing)
        );
    }
    body.push_str("</tbody></table>");
    body.push_str(&html::pager(&path, &[], page, hosts.len()));
    body.push_str("</section></div>");
    html::respond(
        StatusCode::OK,
        html::page(&name, Section::Packages, Some(&s), &body),
    )
}

#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    name: String,
    #[serde(default)]
    deploy_dir: String,
}

/// The upload from `console.js`: the file as the raw body, its name and deploy dir in the query.
/// Answers the API's JSON (the new version, or the error).
pub async fn upload(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Query(q): Query<UploadQuery>,
    req: Request,
) -> Response {
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut api = format!("/v1/packages/{}", html::url(q.name.trim()));
    if !q.deploy_dir.trim().is_empty() {
        api.push_str(&format!("?deploy_dir={}", html::url(q.deploy_dir.trim())));
    }
    let resp = writes::call(
        &ui,
        &s,
        Method::PUT,
        &api,
        CallBody::Stream(req.into_body(), len),
    )
    .await;
    writes::no_store(resp)
}

pub async fn rollback(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let page = format!("/ui/packages/{}", html::url(&name));
    let version = form_field(&body, "version").and_then(|v| v.trim().parse::<u64>().ok());
    let json = match version {
        Some(v) => format!("{{\"version\":{v}}}"),
        None => String::new(),
    };
    let resp = writes::call(
        &ui,
        &s,
        Method::POST,
        &format!("/v1/packages/{}/rollback", html::url(&name)),
        if json.is_empty() {
            CallBody::Empty
        } else {
            CallBody::Json(json)
        },
    )
    .await;
    writes::back_or_error(resp, &s, &page).await
}
