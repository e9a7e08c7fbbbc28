//! The web console at `/ui`: server-rendered pages over the manager's own state, a little
//! vanilla JavaScript (`assets/console.js`, embedded) for local times, live regions, the job
//! editor's validation, run-now results and uploads, and no external fetch of any kind.
//!
//! Reads go straight to this member's replicated store (so every cluster member serves the
//! console); writes go through the `/v1` API as the signed-in user ([`writes`]). Sessions, CSRF
//! and the viewer's read-only console are in [`session`]; escaping and the page frame in
//! [`html`]; the charts, drawn on the server as SVG, in [`chart`]. This module holds only the
//! route table.

mod assets;
mod audit;
mod chart;
mod cluster;
mod events;
mod html;
mod invocations;
mod jobs;
mod nodes;
mod overview;
mod packages;
mod rollouts;
mod runs;
mod session;
mod session_view;
mod writes;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use session::{SESSION_COOKIE, Sessions};

use crate::app::App;

/// What every console handler shares.
pub struct Ui {
    pub app: Arc<App>,
    /// The `/v1` router, called in process for writes.
    pub api: Router,
    pub sessions: Sessions,
    /// For forwarding writes to the leader from a follower.
    pub http: reqwest::Client,
    /// The overview timeline's finished slices, counted at most once a minute.
    pub timeline: overview::TimelineCache,
}

/// The console's routes, to be merged beside the API router (`api` is that router, which the
/// console calls for every change).
/// `http` is the peer client: it trusts the managers' CA when TLS is on.
pub fn router(app: Arc<App>, api: Router, http: reqwest::Client) -> Router {
    let ui = Arc::new(Ui {
        app,
        api,
        sessions: Sessions::new(),
        http,
        timeline: Default::default(),
    });
    Router::new()
        .route("/ui", get(overview::page))
        .route("/ui/", get(overview::page))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/static/{file}", get(assets::serve))
        .route("/ui/nodes", get(nodes::list))
        .route("/ui/nodes/{id}", get(nodes::show))
        .route("/ui/jobs", get(jobs::list))
        .route("/ui/jobs/new", get(jobs::new_form))
        .route("/ui/jobs/validate", post(jobs::validate))
        .route("/ui/jobs/save", post(jobs::save))
        .route("/ui/jobs/{name}", get(jobs::show))
        .route("/ui/jobs/{name}/edit", get(jobs::edit_form))
        .route("/ui/jobs/{name}/enable", post(jobs::enable))
        .route("/ui/jobs/{name}/disable", post(jobs::disable))
        .route("/ui/jobs/{name}/delete", post(jobs::delete))
        .route("/ui/jobs/{name}/run", post(jobs::run_now))
        .route("/ui/invocations/{id}", get(invocations::show))
        .route("/ui/runs", get(runs::list))
        .route("/ui/runs/{id}", get(runs::show))
        .route("/ui/runs/{id}/live", get(runs::live))
        .route("/ui/packages", get(packages::list))
        .route("/ui/packages/upload", post(packages::upload))
        .route("/ui/packages/{name}", get(packages::show))
        .route("/ui/packages/{name}/rollback", post(packages::rollback))
        .route("/ui/rollouts", get(rollouts::list))
        .route("/ui/rollouts/{id}", get(rollouts::show))
        .route("/ui/rollouts/{id}/{action}", post(rollouts::act))
        .route("/ui/cluster", get(cluster::page))
        .route("/ui/audit", get(audit::page))
        .route("/ui/events", get(events::list))
        .layer(axum::middleware::from_fn_with_state(
            ui.clone(),
            session::guard,
        ))
        .with_state(ui)
}
