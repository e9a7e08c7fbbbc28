//! Jobs: the list (schedule, next fire, last result per host, enabled), a page per job (its
//! definition, next fire times, a chart of its recent runs, per-host last run, once-job progress
//! per revision, failures grouped like `agentcli analysis jobs`), the task-file editor, and the write controls: enable,
//! disable, delete and run now.
//!
//! The editor validates with the parser the API uses (`JobSpec::from_task_json_at`): as you type
//! (`/ui/jobs/validate`, called by `console.js`) and again when the form is posted, so a bad
//! file is shown with its errors inline and nothing is saved. Every change is then a call to the
//! `/v1` API as the signed-in user ([`super::writes`]).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use op_proto::api::{JobRecord, OnceTarget, RunQuery, TargetState};
use op_proto::hosts::HostPattern;
use op_proto::invoke::{InvocationAccepted, InvokeRequest};
use op_proto::{JobSpec, NodeStatus, RunRecord, RunStatus};
use serde::{Deserialize, Serialize};

use super::Ui;
use super::chart;
use super::html::{self, Section, attr, esc};
use super::session::{SessionView, form_pairs};
use super::writes::{self, CallBody};

/// Fire times shown on a job page.
const NEXT_FIRES: usize = 5;
/// The newest run.failed / run.recovered events of a job read for its incidents (enough to pair
/// the newest incidents with their recoveries).
const INCIDENT_EVENTS: u32 = 200;
/// Host checkboxes offered by the run-now form; beyond this, patterns only.
const MAX_HOST_CHOICES: usize = 200;
/// Rows of the last-fires grid on a job page.
const FIRE_GRID_HOSTS: usize = 200;
/// Runs read for the last-fires grid (every host's runs since the oldest judged fire).
const FIRE_GRID_RUNS: u32 = 20_000;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    /// `1`: only jobs whose latest run failed somewhere.
    #[serde(default)]
    failing: String,
    #[serde(default)]
    page: Option<usize>,
}

/// The schedule in a few words.
fn schedule(spec: &JobSpec) -> String {
    match spec.kind() {
        "once" => "once per revision".into(),
        "api" => "when invoked".into(),
        _ => {
            let zone = spec.time_zone.as_deref().unwrap_or("agent's zone");
            format!(
                "<code>{}</code> <span class=\"muted\">({})</span>",
                esc(&spec.cron_expr),
                esc(zone)
            )
        }
    }
}

/// "3 ✓ ok · 1 ✕ failed": a job's latest result on each host, counted.
fn results_cell(counts: Option<&Vec<(RunStatus, u64)>>) -> String {
    match counts {
        None => "<span class=\"muted\">no runs yet</span>".into(),
        Some(c) => c
            .iter()
            .map(|(st, n)| format!("{} {n}", html::run_status(*st)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

pub async fn list(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Query(q): Query<ListQuery>,
) -> Response {
    let needle = q.q.trim().to_lowercase();
    let failing_only = q.failing == "1";
    // The failing filter needs every job's results; otherwise only the shown page's are read.
    let read = ui
        .app
        .read(move |st| {
            let jobs = st.jobs()?;
            let last = if failing_only {
                st.last_results(&[])?
            } else {
                Vec::new()
            };
            Ok((jobs, last))
        })
        .await;
    let (jobs, last) = match read {
        Ok(r) => r,
        Err(e) => return html::server_error(&s, e),
    };
    let mut results: BTreeMap<String, Vec<(RunStatus, u64)>> = BTreeMap::new();
    for (job, st, n) in last {
        results.entry(job).or_default().push((st, n));
    }
    let shown: Vec<&JobRecord> = jobs
        .iter()
        .filter(|j| s.caller.sees_job(&j.spec.name))
        .filter(|j| needle.is_empty() || j.spec.name.to_lowercase().contains(&needle))
        .filter(|j| {
            !failing_only
                || results
                    .get(&j.spec.name)
                    .is_some_and(|r| r.iter().any(|(st, _)| st.is_failure()))
        })
        .collect();
    let (rows, page) = html::page_of(&shown, q.page.unwrap_or(1));
    if !failing_only && !rows.is_empty() {
        let names: Vec<String> = rows.iter().map(|j| j.spec.name.clone()).collect();
        match ui.app.read(move |st| st.last_results(&names)).await {
            Ok(last) => {
                for (job, st, n) in last {
                    results.entry(job).or_default().push((st, n));
                }
            }
            Err(e) => return html::server_error(&s, e),
        }
    }
    let now = Utc::now();
    let mut body = String::with_capacity(2048 + rows.len() * 600);
    body.push_str("<div class=\"title-row\"><h1>Jobs</h1>");
    if s.can_operate() {
        body.push_str(
            "<a class=\"button primary\" id=\"new-job\" href=\"/ui/jobs/new\">New job</a>",
        );
    }
    body.push_str("</div>");
    let _ = write!(
        body,
        "<form class=\"filters\" method=\"get\" action=\"/ui/jobs\">\
         <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"job name\" aria-label=\"filter\">\
         <label><input type=\"checkbox\" name=\"failing\" value=\"1\"{}> failing only</label>\
         <button>Filter</button></form>",
        attr(&q.q),
        if failing_only { " checked" } else { "" }
    );
    body.push_str(
        "<div id=\"jobs\" data-refresh=\"10000\"><table class=\"list\"><thead><tr><th>Job</th><th>Schedule</th><th>Next fire</th>\
         <th>Last result per host</th><th>State</th></tr></thead><tbody>",
    );
    for j in rows {
        let next = j
            .spec
            .schedule()
            .and_then(|sch| sch.next_after(now))
            .map(html::time)
            .unwrap_or_else(|| "–".into());
        let _ = write!(
            body,
            "<tr data-job=\"{}\"><td data-label=\"Job\"><a href=\"/ui/jobs/{}\">{}</a></td><td data-label=\"Schedule\">{}</td>\
             <td data-label=\"Next fire\">{next}</td><td data-label=\"Last result\">{}</td><td data-label=\"State\">{}</td></tr>",
            attr(&j.spec.name),
            html::url(&j.spec.name),
            esc(&j.spec.name),
            schedule(&j.spec),
            results_cell(results.get(&j.spec.name)),
            html::enabled(j.spec.enabled),
        );
    }
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"5\" class=\"muted\">No job matches.</td></tr>");
    }
    body.push_str("</tbody></table>");
    body.push_str(&html::pager(
        "/ui/jobs",
        &[("q", &q.q), ("failing", &q.failing)],
        page,
        shown.len(),
    ));
    body.push_str("</div>");
    html::respond(
        StatusCode::OK,
        html::page("Jobs", Section::Jobs, Some(&s), &body),
    )
}

/// Runs drawn in a job page's chart.
const CHART_RUNS: u32 = 200;

/// The chart's marks: each stored run at the time it started (or was due, for a skipped fire)
/// and its duration (none for a skipped fire: drawn at zero).
fn run_points(runs: &[RunRecord]) -> Vec<chart::RunPoint> {
    runs.iter()
        .filter_map(|r| {
            Some(chart::RunPoint {
                at: r.started_at.or(r.planned_at).or(r.ended_at)?,
                duration_ms: r.duration_ms().unwrap_or(0),
                status: r.status,
                host: r.hostname.clone(),
            })
        })
        .collect()
}

fn once_progress(targets: &[OnceTarget]) -> String {
    let mut by_rev: BTreeMap<u64, Vec<&OnceTarget>> = BTreeMap::new();
    for t in targets {
        by_rev.entry(t.revision).or_default().push(t);
    }
    if by_rev.is_empty() {
        return "<p class=\"muted\">No host was selected for any revision.</p>".into();
    }
    let mut out = String::from(
        "<table><thead><tr><th>Revision</th><th>Done</th><th>Failed</th><th>Running</th><th>Pending</th><th>Waiting</th><th>Not done yet</th></tr></thead><tbody>",
    );
    for (rev, ts) in by_rev.iter().rev() {
        let n = |st: TargetState| ts.iter().filter(|t| t.state == st).count();
        let open: Vec<String> = ts
            .iter()
            .filter(|t| t.state != TargetState::Done)
            .take(20)
            .map(|t| {
                let late = if t.late { ", joined later" } else { "" };
                format!("{} ({}{late})", esc(&t.hostname), t.state.as_str())
            })
            .collect();
        let _ = write!(
            out,
            "<tr><td>{rev}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            n(TargetState::Done),
            ts.len(),
            n(TargetState::Failed),
            n(TargetState::Running),
            n(TargetState::Pending),
            n(TargetState::Waiting),
            if open.is_empty() {
                "–".into()
            } else {
                open.join(", ")
            }
        );
    }
    out.push_str("</tbody></table>");
    out
}

pub async fn show(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path(name): Path<String>,
) -> Response {
    let n = name.clone();
    let read = ui
        .app
        .read(move |st| {
            let Some(job) = st.job(&n)? else {
                return Ok(None);
            };
            let latest = st.runs(&RunQuery {
                job: Some(n.clone()),
                per_node: Some(1),
                ..RunQuery::default()
            })?;
            let once = if job.spec.once_job {
                st.once_targets(&n, None)?
            } else {
                Vec::new()
            };
            let nodes = st.nodes()?;
            let recent = st.runs(&RunQuery {
                job: Some(n.clone()),
                limit: Some(CHART_RUNS),
                ..RunQuery::default()
            })?;
            // The job's incidents: its run.failed events and the recoveries that closed them.
            let incident_events = st.events_newest(
                &["run.failed".into(), "run.recovered".into()],
                Some(&n),
                None,
                INCIDENT_EVENTS,
            )?;
            // Which of those incidents are still open (not a copy of the whole state).
            let state: std::collections::HashSet<u64> = st.with_incidents(|s| {
                incident_events
                    .iter()
                    .filter_map(|e| e.incident)
                    .filter(|id| s.incident_open(*id))
                    .collect()
            })?;
            // The last judged fires and the runs they judged, for the per-host grid.
            let judged = st.judged_fires(Some(&n))?.remove(&n).unwrap_or_default();
            let fire_runs = match judged.iter().map(|f| f.fire).min() {
                Some(oldest) => st.runs(&RunQuery {
                    job: Some(n.clone()),
                    since: Some(oldest),
                    limit: Some(FIRE_GRID_RUNS),
                    ..RunQuery::default()
                })?,
                None => Vec::new(),
            };
            Ok(Some((
                job,
                latest,
                once,
                nodes,
                recent,
                (incident_events, state),
                (judged, fire_runs),
            )))
        })
        .await;
    let (
        mut job,
        mut latest,
        once,
        nodes,
        recent,
        (incident_events, incident_state),
        (judged, fire_runs),
    ) = match read {
        Ok(Some((j, l, o, mut n, r, i, f))) => {
            ui.app.beats.overlay(&mut n);
            (j, l, o, n, r, i, f)
        }
        Ok(None) => return html::not_found(&s, &format!("no job named {name:?}")),
        Err(e) => return html::server_error(&s, e),
    };
    latest.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    s.caller.redact_env(&mut job.spec.env);
    let spec = &job.spec;
    let mut body = String::with_capacity(16384);
    let _ = write!(
        body,
        "<div class=\"title-row\"><h1>{} {}</h1>",
        esc(&spec.name),
        html::enabled(spec.enabled)
    );
    let path = format!("/ui/jobs/{}", html::url(&spec.name));
    if s.can_operate() {
        body.push_str("<div class=\"actions\">");
        let _ = write!(
            body,
            "<a class=\"button\" id=\"edit-job\" href=\"{path}/edit\">Edit</a>"
        );
        if spec.enabled {
            body.push_str(&html::button_form(
                &s,
                &format!("{path}/disable"),
                "Disable",
                "",
                None,
            ));
        } else {
            body.push_str(&html::button_form(
                &s,
                &format!("{path}/enable"),
                "Enable",
                "",
                None,
            ));
        }
        body.push_str(&html::button_form(
            &s,
            &format!("{path}/delete"),
            "Delete",
            "danger",
            Some(&format!(
                "Delete job {}? Agents stop running it.",
                spec.name
            )),
        ));
        body.push_str("</div>");
    }
    body.push_str("</div>");

    body.push_str(
        "<div class=\"cols\"><section class=\"card\"><h2>Definition</h2><dl class=\"facts\">",
    );
    let _ = write!(
        body,
        "<dt>Schedule</dt><dd>{}</dd><dt>Revision</dt><dd>{}</dd><dt>Updated</dt><dd>{} by {}</dd>",
        schedule(spec),
        job.revision,
        html::time(job.updated_at),
        esc(&job.updated_by)
    );
    body.push_str("</dl>");
    let task = serde_json::to_string_pretty(&spec.to_task_value()).unwrap_or_default();
    let _ = write!(
        body,
        "<pre class=\"command\" id=\"definition\">{}</pre></section>",
        esc(&task)
    );

    body.push_str("<section class=\"card\"><h2>Next fires</h2>");
    let fires = spec
        .schedule()
        .map(|sch| sch.upcoming(Utc::now(), NEXT_FIRES))
        .unwrap_or_default();
    if fires.is_empty() {
        body.push_str("<p class=\"muted\">Not scheduled.</p>");
    } else {
        body.push_str("<ol class=\"fires\">");
        for f in fires {
            let _ = write!(body, "<li>{}</li>", html::time(f));
        }
        body.push_str("</ol>");
    }
    body.push_str("</section></div>");

    if s.can_operate() {
        body.push_str(&run_now_form(&s, spec, &nodes));
    }

    body.push_str("<div id=\"job-live\" data-refresh=\"5000\">");
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Recent runs ({} newest, every host)</h2>{}</section>",
        recent.len(),
        chart::runs("job-runs", &run_points(&recent), Utc::now())
    );
    // Described and grouped as `agentcli analysis jobs` does (`op_proto::analysis`).
    let groups = op_proto::analysis::group_failures(&latest);
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Failures across hosts</h2>"
    );
    if groups.is_empty() {
        body.push_str("<p class=\"muted\">No host's latest run failed.</p>");
    } else {
        body.push_str("<ul class=\"groups\">");
        for g in &groups {
            let hosts = g
                .hosts
                .iter()
                .take(10)
                .map(|h| esc(h))
                .collect::<Vec<_>>()
                .join(", ");
            let more = if g.hosts.len() > 10 {
                format!(" and {} more", g.hosts.len() - 10)
            } else {
                String::new()
            };
            let _ = write!(
                body,
                "<li><strong>{}</strong>: <code>{}</code><br><span class=\"muted\">{hosts}{more}</span></li>",
                esc(&g.headline(latest.len())),
                esc(&g.signature)
            );
        }
        body.push_str("</ul>");
    }
    body.push_str("</section>");
    body.push_str(&super::events::incidents(
        &spec.name,
        &incident_events,
        |id| incident_state.contains(&id),
    ));

    if !judged.is_empty() {
        body.push_str(&fire_grid(&judged, &latest, &fire_runs));
    }

    if spec.once_job {
        body.push_str("<section class=\"card\"><h2>Once-job progress per revision</h2>");
        body.push_str(&once_progress(&once));
        body.push_str("</section>");
    }

    let _ = write!(
        body,
        "<section class=\"card\"><h2>Last run on each host ({})</h2>",
        latest.len()
    );
    body.push_str(&super::runs::table(&latest, false));
    let _ = write!(
        body,
        "<p><a href=\"/ui/runs?job={}\">Every run of this job →</a></p></section></div>",
        html::url(&spec.name)
    );
    html::respond(
        StatusCode::OK,
        html::page(&spec.name, Section::Jobs, Some(&s), &body),
    )
}

/// The per-host grid of a job's last judged fires (issue 20): a row per host, a column per fire
/// (oldest first). A cell is the host's verdict when the fire named it (missed, late, skipped,
/// overrunning, failed; the reason on hover), else the status of the host's run of that fire,
/// else `–` (the host was not expected then, or its run is no longer on record). Hosts with a
/// problem in any of the fires come first; at most [`FIRE_GRID_HOSTS`] rows.
fn fire_grid(
    judged: &[op_proto::judged::JudgedFire],
    latest: &[RunRecord],
    runs: &[RunRecord],
) -> String {
    use std::collections::BTreeSet;
    let mut fires: Vec<&op_proto::judged::JudgedFire> = judged.iter().collect();
    fires.sort_by_key(|f| f.fire);
    let problem: BTreeSet<&str> = fires
        .iter()
        .flat_map(|f| f.hosts.iter().map(|h| h.host.as_str()))
        .collect();
    let mut hosts: Vec<&str> = problem.iter().copied().collect();
    let mut rest: BTreeSet<&str> = latest.iter().map(|r| r.hostname.as_str()).collect();
    rest.extend(runs.iter().map(|r| r.hostname.as_str()));
    hosts.extend(rest.into_iter().filter(|h| !problem.contains(h)));
    let by_fire: BTreeMap<(&str, chrono::DateTime<Utc>), RunStatus> = runs
        .iter()
        .filter_map(|r| Some(((r.hostname.as_str(), r.planned_at?), r.status)))
        .collect();
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "<section class=\"card\" id=\"fire-grid\"><h2>Last fires on each host</h2>\
         <table class=\"list fires-grid\"><thead><tr><th>Host</th>"
    );
    for f in &fires {
        let _ = write!(
            out,
            "<th title=\"{}\">{}</th>",
            attr(&f.fire.to_rfc3339()),
            esc(&f.fire_label)
        );
    }
    out.push_str("</tr></thead><tbody>");
    for host in hosts.iter().take(FIRE_GRID_HOSTS) {
        let _ = write!(
            out,
            "<tr data-host=\"{}\"><td>{}</td>",
            attr(host),
            esc(host)
        );
        for f in &fires {
            let cell = if let Some(h) = f.hosts.iter().find(|h| h.host == *host) {
                let word = html::fire_outcome(&h.outcome);
                format!(
                    "<td data-outcome=\"{}\" title=\"{}\">{word}</td>",
                    attr(&h.outcome),
                    attr(&h.reason)
                )
            } else if let Some(status) = by_fire.get(&(*host, f.fire)) {
                format!(
                    "<td data-outcome=\"{}\">{}</td>",
                    status.as_str(),
                    html::run_status(*status)
                )
            } else {
                "<td data-outcome=\"none\" class=\"muted\">–</td>".to_string()
            };
            out.push_str(&cell);
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    if hosts.len() > FIRE_GRID_HOSTS {
        let _ = write!(
            out,
            "<p class=\"muted\">{} more hosts not shown; every host with a problem is listed first.</p>",
            hosts.len() - FIRE_GRID_HOSTS
        );
    }
    out.push_str("</section>");
    out
}

/// The run-now form: a field per parameter, the hosts (checkboxes of the Ready hosts the job
/// selects, and patterns), posted to `/ui/jobs/NAME/run`.
fn run_now_form(s: &SessionView, spec: &JobSpec, nodes: &[op_proto::NodeInfo]) -> String {
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "<section class=\"card\"><h2>Run now</h2><form method=\"post\" action=\"/ui/jobs/{}/run\" id=\"run-now\">{}",
        html::url(&spec.name),
        html::csrf_field(s)
    );
    let names = if spec.params.is_empty() {
        op_proto::params::placeholders(&spec.command, &[])
    } else {
        spec.params.clone()
    };
    if !names.is_empty() {
        out.push_str("<fieldset><legend>Parameters</legend>");
        for p in &names {
            let _ = write!(
                out,
                "<label>{}<input name=\"param.{}\" data-param=\"{}\"></label>",
                esc(p),
                attr(p),
                attr(p)
            );
        }
        out.push_str("</fieldset>");
    }
    let selector = spec.selector();
    let mut hosts: Vec<&op_proto::NodeInfo> = nodes
        .iter()
        .filter(|n| n.status == NodeStatus::Ready && selector.matches(&n.identity()))
        .collect();
    hosts.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    out.push_str("<fieldset><legend>Hosts</legend><p class=\"hint\">Tick hosts, or give patterns; with neither, the job's own selection runs.</p>");
    if hosts.len() <= MAX_HOST_CHOICES {
        out.push_str("<div class=\"hosts\">");
        for n in &hosts {
            let _ = write!(
                out,
                "<label class=\"host\"><input type=\"checkbox\" name=\"host\" value=\"{}\"> {}</label>",
                attr(&n.hostname),
                esc(&n.hostname)
            );
        }
        if hosts.is_empty() {
            out.push_str("<p class=\"muted\">No Ready host matches the job's selection.</p>");
        }
        out.push_str("</div>");
    } else {
        let _ = write!(
            out,
            "<p class=\"muted\">{} Ready hosts match; choose them by pattern.</p>",
            hosts.len()
        );
    }
    out.push_str(
        "<label>Patterns <input name=\"patterns\" placeholder=\"web-*, 10.0.0.0/24\"></label>\
         </fieldset><button class=\"primary\" id=\"run-now-button\">Run now</button></form></section>",
    );
    out
}

/// The run-now form, decoded into an API request.
pub fn invoke_request(pairs: &[(String, String)]) -> Result<InvokeRequest, String> {
    let mut req = InvokeRequest {
        wait: Some(false),
        ..InvokeRequest::default()
    };
    for (k, v) in pairs {
        if k == "host" && !v.trim().is_empty() {
            req.hosts.push(v.trim().to_string());
        } else if k == "patterns" {
            for p in v
                .split([',', ' ', '\n'])
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                req.white
                    .push(HostPattern::parse(p).map_err(|e| format!("host pattern {p:?}: {e}"))?);
            }
        } else if let Some(name) = k.strip_prefix("param.") {
            // An empty field is a parameter not given (the job's default applies).
            if !v.is_empty() {
                req.params.insert(name.to_string(), v.clone());
            }
        }
    }
    Ok(req)
}

fn bad_form(s: &SessionView, lines: &[String], back: &str) -> Response {
    let items: String = lines
        .iter()
        .map(|l| format!("<li>{}</li>", esc(l)))
        .collect();
    let body = format!(
        "<h1>Not done</h1><ul class=\"error\" role=\"alert\">{items}</ul><p><a href=\"{}\">Back</a></p>",
        attr(back)
    );
    html::respond(
        StatusCode::BAD_REQUEST,
        html::page("Not done", Section::Jobs, Some(s), &body),
    )
}

pub async fn run_now(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let back = format!("/ui/jobs/{}", html::url(&name));
    let pairs = form_pairs(&body).unwrap_or_default();
    let req = match invoke_request(&pairs) {
        Ok(r) => r,
        Err(e) => return bad_form(&s, &[e], &back),
    };
    let json = serde_json::to_string(&req).unwrap_or_default();
    let resp = writes::call(
        &ui,
        &s,
        Method::POST,
        &format!("/v1/jobs/{}/run", html::url(&name)),
        CallBody::Json(json),
    )
    .await;
    let (status, text) = writes::read(resp).await;
    if !status.is_success() {
        return bad_form(&s, &writes::error_lines(status, &text), &back);
    }
    match serde_json::from_str::<InvocationAccepted>(&text) {
        Ok(a) => writes::see_other(&format!("/ui/invocations/{}", a.invocation_id)),
        Err(e) => bad_form(&s, &[format!("unexpected answer from the API: {e}")], &back),
    }
}

async fn simple_write(
    ui: &Arc<Ui>,
    s: &SessionView,
    method: Method,
    api: &str,
    back: &str,
    done: &str,
) -> Response {
    let resp = writes::call(ui, s, method, api, CallBody::Empty).await;
    let (status, text) = writes::read(resp).await;
    if status.is_success() {
        writes::see_other(done)
    } else {
        bad_form(s, &writes::error_lines(status, &text), back)
    }
}

pub async fn enable(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path(name): Path<String>,
) -> Response {
    let page = format!("/ui/jobs/{}", html::url(&name));
    let api = format!("/v1/jobs/{}/enable", html::url(&name));
    simple_write(&ui, &s, Method::POST, &api, &page, &page).await
}

pub async fn disable(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path(name): Path<String>,
) -> Response {
    let page = format!("/ui/jobs/{}", html::url(&name));
    let api = format!("/v1/jobs/{}/disable", html::url(&name));
    simple_write(&ui, &s, Method::POST, &api, &page, &page).await
}

pub async fn delete(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path(name): Path<String>,
) -> Response {
    let page = format!("/ui/jobs/{}", html::url(&name));
    let api = format!("/v1/jobs/{}", html::url(&name));
    simple_write(&ui, &s, Method::DELETE, &api, &page, "/ui/jobs").await
}

/// A new job's starting text.
const TEMPLATE: &str = r#"{
  "JobName": "my-job",
  "Command": "echo hello from $(hostname)",
  "CronExpr": "*/5 * * * *",
  "OnceJob": 0,
  "Timeout": 60,
  "SynFlag": 0,
  "Enabled": 1,
  "WhiteHosts": [],
  "BlackHosts": []
}"#;

/// The editor page. `errors` are shown inline under the text.
fn editor(s: &SessionView, original: Option<&str>, text: &str, errors: &[String]) -> String {
    let title = match original {
        Some(n) => format!("Edit {}", esc(n)),
        None => "New job".into(),
    };
    let mut body = String::with_capacity(4096 + text.len());
    let _ = write!(body, "<h1>{title}</h1>");
    if !s.can_operate() {
        body.push_str("<p class=\"muted\">A viewer token may read jobs but not save them.</p>");
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/ui/jobs/save\" id=\"editor\" class=\"editor\">{}\
         <input type=\"hidden\" name=\"original\" value=\"{}\">\
         <label for=\"task\">Task file (JSON, the seed's keys)</label>\
         <textarea id=\"task\" name=\"task\" rows=\"18\" spellcheck=\"false\" data-validate=\"/ui/jobs/validate\" \
          aria-describedby=\"editor-errors\">{}</textarea>",
        html::csrf_field(s),
        attr(original.unwrap_or("")),
        esc(text)
    );
    body.push_str(
        "<div id=\"editor-errors\" class=\"editor-errors\" role=\"alert\" aria-live=\"polite\">",
    );
    body.push_str(&error_list(errors));
    body.push_str("</div><p id=\"editor-fires\" class=\"muted\"></p>");
    if s.can_operate() {
        body.push_str("<button class=\"primary\" id=\"save-job\">Save</button>");
    }
    body.push_str(" <a href=\"/ui/jobs\">Cancel</a></form>");
    body
}

fn error_list(errors: &[String]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let items: String = errors
        .iter()
        .map(|e| format!("<li>{}</li>", esc(e)))
        .collect();
    format!("<ul class=\"error\">{items}</ul>")
}

pub async fn new_form(Extension(s): Extension<SessionView>) -> Response {
    html::respond(
        StatusCode::OK,
        html::page(
            "New job",
            Section::Jobs,
            Some(&s),
            &editor(&s, None, TEMPLATE, &[]),
        ),
    )
}

pub async fn edit_form(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path(name): Path<String>,
) -> Response {
    let n = name.clone();
    let mut job = match ui.app.read(move |st| st.job(&n)).await {
        Ok(Some(j)) => j,
        Ok(None) => return html::not_found(&s, &format!("no job named {name:?}")),
        Err(e) => return html::server_error(&s, e),
    };
    // The editor shows the whole definition: to a viewer, as the job's page does.
    s.caller.redact_env(&mut job.spec.env);
    let text = serde_json::to_string_pretty(&job.spec.to_task_value()).unwrap_or_default();
    html::respond(
        StatusCode::OK,
        html::page(
            &format!("Edit {name}"),
            Section::Jobs,
            Some(&s),
            &editor(&s, Some(&job.spec.name), &text, &[]),
        ),
    )
}

/// The answer to a validation request from the editor's script.
#[derive(Debug, Serialize)]
pub struct Validation {
    pub ok: bool,
    pub errors: Vec<String>,
    pub name: Option<String>,
    pub next_fires: Vec<chrono::DateTime<Utc>>,
}

/// Validates a task file with the API's own parser and time check.
pub fn validate_text(text: &str) -> Validation {
    match JobSpec::from_task_json_at(text, Utc::now()) {
        Ok(spec) => Validation {
            ok: true,
            errors: Vec::new(),
            next_fires: spec
                .schedule()
                .map(|sch| sch.upcoming(Utc::now(), 3))
                .unwrap_or_default(),
            name: Some(spec.name),
        },
        Err(e) => Validation {
            ok: false,
            errors: e.messages(),
            name: None,
            next_fires: Vec::new(),
        },
    }
}

pub async fn validate(body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    writes::no_store(Json(validate_text(&text)).into_response())
}

pub async fn save(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    body: Bytes,
) -> Response {
    let pairs = form_pairs(&body).unwrap_or_default();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let text = get("task");
    let original = get("original");
    let original = (!original.is_empty()).then_some(original);
    let again = |errors: Vec<String>| {
        html::respond(
            StatusCode::BAD_REQUEST,
            html::page(
                "Edit job",
                Section::Jobs,
                Some(&s),
                &editor(&s, original.as_deref(), &text, &errors),
            ),
        )
    };
    let checked = validate_text(&text);
    let Some(name) = checked.name.filter(|_| checked.ok) else {
        return again(checked.errors);
    };
    if let Some(o) = &original
        && *o != name
    {
        return again(vec![format!(
            "JobName: {name:?} differs from the job being edited ({o:?}); to copy a job, use New job"
        )]);
    }
    let resp = writes::call(
        &ui,
        &s,
        Method::PUT,
        &format!("/v1/jobs/{}", html::url(&name)),
        CallBody::Text(text.clone()),
    )
    .await;
    let (status, answer) = writes::read(resp).await;
    if !status.is_success() {
        return again(writes::error_lines(status, &answer));
    }
    writes::see_other(&format!("/ui/jobs/{}", html::url(&name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_now_form_decodes() {
        let pairs = vec![
            ("csrf".to_string(), "x".to_string()),
            ("host".to_string(), "a".to_string()),
            ("host".to_string(), "b".to_string()),
            ("patterns".to_string(), "web-*, 10.0.0.0/24".to_string()),
            ("param.who".to_string(), "me".to_string()),
            ("param.empty".to_string(), String::new()),
        ];
        let r = invoke_request(&pairs).unwrap();
        assert_eq!(r.hosts, ["a", "b"]);
        assert_eq!(r.white.len(), 2);
        assert_eq!(r.params.len(), 1);
        assert_eq!(r.wait, Some(false));
    }

    #[test]
    fn validation_names_the_bad_cron() {
        let v = validate_text(r#"{"JobName":"x","Command":"true","CronExpr":"61 * * * *"}"#);
        assert!(!v.ok);
        assert!(
            v.errors.iter().any(|e| e.contains("CronExpr")),
            "{:?}",
            v.errors
        );
        assert!(validate_text(TEMPLATE).ok);
    }
}
