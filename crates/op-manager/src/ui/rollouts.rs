//! Rollouts (issue 21): every staged rollout with its state and stage, and a page per rollout
//! with its stages, the hosts per stage and their state, the failures grouped by reason, and
//! buttons for pause, resume, abort and promote (each `POST /v1/rollouts/ID/ACTION`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use op_proto::NodeStatus;
use op_proto::rollout::{RolloutAction, RolloutInfo, RolloutKind, RolloutState};

use super::Ui;
use super::html::{self, Section, esc};
use super::session::SessionView;
use super::writes::{self, CallBody};

fn what(r: &RolloutInfo) -> String {
    match r.kind {
        RolloutKind::Package => format!(
            "package <a href=\"/ui/packages/{}\">{}</a> {}",
            html::url(&r.subject),
            esc(&r.subject),
            r.version
        ),
        RolloutKind::Job => format!(
            "job <a href=\"/ui/jobs/{}\">{}</a> revision {}",
            html::url(&r.subject),
            esc(&r.subject),
            r.version
        ),
    }
}

fn state_badge(s: RolloutState) -> String {
    let class = match s {
        RolloutState::Running => "busy",
        RolloutState::Finished => "good",
        RolloutState::Halted | RolloutState::RolledBack => "bad",
        RolloutState::Paused | RolloutState::Aborted => "warn",
        RolloutState::Superseded => "muted",
    };
    format!("<span class=\"badge {class}\">{}</span>", s.as_str())
}

fn stage_text(r: &RolloutInfo) -> String {
    let stages: Vec<String> = r
        .plan
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i == r.stage {
                format!("<strong>{s}</strong>")
            } else {
                s.to_string()
            }
        })
        .collect();
    stages.join(" → ")
}

pub async fn list(State(ui): State<Arc<Ui>>, Extension(s): Extension<SessionView>) -> Response {
    let mut rollouts = match ui.app.read(|st| st.rollouts()).await {
        Ok(r) => r,
        Err(e) => return html::server_error(&s, e),
    };
    rollouts.retain(|r| s.caller.sees_rollout(r));
    let mut body = String::from(
        "<h1>Rollouts</h1><p class=\"muted\">Staged uploads and saves, newest first \
         (<code>--rollout</code>; docs/rollouts.md).</p>\
         <table class=\"list rollouts\"><thead><tr><th>Rollout</th><th>What</th><th>State</th>\
         <th>Stages</th><th>Started</th></tr></thead><tbody>",
    );
    for r in &rollouts {
        let _ = write!(
            body,
            "<tr data-rollout=\"{id}\"><td data-label=\"Rollout\"><a href=\"/ui/rollouts/{id}\"><code>{id}</code></a></td>\
             <td data-label=\"What\">{}</td><td data-label=\"State\">{}</td><td data-label=\"Stages\">{}</td>\
             <td data-label=\"Started\">{}</td></tr>",
            what(r),
            state_badge(r.state),
            stage_text(r),
            html::time(r.created_at),
            id = r.id
        );
    }
    if rollouts.is_empty() {
        body.push_str("<tr><td colspan=\"5\" class=\"muted\">No rollout yet.</td></tr>");
    }
    body.push_str("</tbody></table>");
    html::respond(
        StatusCode::OK,
        html::page("Rollouts", Section::Rollouts, Some(&s), &body),
    )
}

pub async fn show(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return html::not_found(&s, "no such rollout");
    };
    let info = match ui.app.read(move |st| st.rollout(id)).await {
        Ok(Some(r)) if s.caller.sees_rollout(&r) => r,
        Ok(_) => return html::not_found(&s, &format!("no rollout {id}")),
        Err(e) => return html::server_error(&s, e),
    };
    let mut nodes = match ui.app.read(|st| st.nodes()).await {
        Ok(n) => n,
        Err(e) => return html::server_error(&s, e),
    };
    ui.app.beats.overlay(&mut nodes);
    nodes.retain(|n| n.status != NodeStatus::Left);
    let st = match ui
        .app
        .read(move |store| crate::rollouts::status(store, info, &nodes))
        .await
    {
        Ok(st) => st,
        Err(e) => return html::server_error(&s, e),
    };
    let r = &st.rollout;
    let mut body = String::with_capacity(4096 + st.hosts.len() * 200);
    let _ = write!(
        body,
        "<h1>Rollout of {}</h1><p>{} · stage {} of {}: {} · {} of {} selected host(s) admitted · \
         {} failure(s), halts at {} (HaltOn {}) · step wait {} s{}</p>",
        what(r),
        state_badge(r.state),
        r.stage + 1,
        r.plan.stages.len(),
        stage_text(r),
        st.admitted,
        st.selected,
        st.failures,
        st.halt_at,
        r.plan.halt_on,
        r.plan.step_wait_secs,
        if r.plan.auto_rollback {
            " · auto-rollback"
        } else {
            ""
        }
    );
    if let Some(reason) = &r.reason {
        let _ = write!(body, "<p class=\"reason\">{}</p>", esc(reason));
    }
    if r.state.filters() && s.caller.scope.can_operate() {
        body.push_str("<p class=\"actions\">");
        for (action, label, confirm) in [
            (RolloutAction::Pause, "Pause", None),
            (RolloutAction::Resume, "Resume", None),
            (
                RolloutAction::Abort,
                "Abort",
                Some("Return every host to the previous version?"),
            ),
            (
                RolloutAction::Promote,
                "Promote",
                Some("Give every host the new version now?"),
            ),
        ] {
            body.push_str(&html::button_form(
                &s,
                &format!("/ui/rollouts/{}/{}", r.id, action.as_str()),
                label,
                "",
                confirm,
            ));
        }
        body.push_str("</p>");
    }
    // Failures grouped by reason.
    let mut failures: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for h in &st.hosts {
        if let Some(f) = &h.failed {
            failures.entry(f.as_str()).or_default().push(&h.hostname);
        }
    }
    if !failures.is_empty() {
        body.push_str("<h2>Failures</h2><ul class=\"failures\">");
        for (reason, hosts) in &failures {
            let _ = write!(
                body,
                "<li>{} host(s): {} — {}</li>",
                hosts.len(),
                esc(&hosts.join(", ")),
                esc(reason)
            );
        }
        body.push_str("</ul>");
    }
    body.push_str(
        "<h2>Hosts</h2><table class=\"list rollout-hosts\"><thead><tr><th>Host</th><th>Status</th>\
         <th>Stage</th><th>New version</th><th>Failure</th></tr></thead><tbody>",
    );
    for h in &st.hosts {
        let _ = write!(
            body,
            "<tr data-host=\"{}\"><td data-label=\"Host\"><a href=\"/ui/nodes/{}\">{}</a></td><td data-label=\"Status\">{}</td>\
             <td data-label=\"Stage\">{}</td><td data-label=\"New version\">{}</td><td data-label=\"Failure\">{}</td></tr>",
            esc(&h.hostname),
            h.node_id,
            esc(&h.hostname),
            esc(&h.status),
            if h.admitted { "admitted" } else { "previous" },
            match (&h.excluded, h.has_new) {
                (Some(why), false) => esc(&format!("no ({why}: not waited on)")),
                (_, true) => "yes".to_string(),
                (None, false) => "no".to_string(),
            },
            esc(h.failed.as_deref().unwrap_or(""))
        );
    }
    body.push_str("</tbody></table>");
    html::respond(
        StatusCode::OK,
        html::page("Rollout", Section::Rollouts, Some(&s), &body),
    )
}

pub async fn act(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let page = format!("/ui/rollouts/{}", html::url(&id));
    let resp = writes::call(
        &ui,
        &s,
        Method::POST,
        &format!("/v1/rollouts/{}/{}", html::url(&id), html::url(&action)),
        CallBody::Empty,
    )
    .await;
    writes::back_or_error(resp, &s, &page).await
}
