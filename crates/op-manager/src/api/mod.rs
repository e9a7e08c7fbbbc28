//! The HTTP API on the api listener: the route table, and the layers every route shares
//! (version check + authentication + access policy in [`guard`], linearizable reads in
//! [`consistency`], body limits, response counting).
//! No global timeout layer: sync calls park for up to their wait, and a waiting invocation streams
//! its results for as long as its hosts' deadlines allow.

mod agent;
pub(crate) mod agent_upgrade;
pub(crate) mod audit;
mod chunks;
mod cluster;
mod consistency;
pub(crate) mod error;
mod events;
pub(crate) mod extract;
mod guard;
mod holds;
mod invoke;
mod jobs;
mod nodes;
mod notify;
pub mod output;
mod packages;
mod rollouts;
mod runs;
pub(crate) mod secrets;
mod system;
mod tokens;
mod watch;

use std::sync::Arc;

use axum::routing::{delete, get, post, put};
use axum::{Extension, Router};

pub use error::ApiError;
pub use guard::{Access, percent_decoded, required_access};

use crate::app::App;
use extract::BodyLimit;

pub fn router(app: Arc<App>) -> Router {
    let json_limit = app.config.json_body_limit;
    let runs_limit = app.config.runs_body_limit;
    let idle = app.config.header_read_timeout;
    // Run batches carry output tails and are larger than any other body.
    let runs = Router::new()
        .route("/v1/agent/runs", post(agent::runs))
        .layer(Extension(BodyLimit {
            bytes: runs_limit,
            idle,
        }))
        .layer(axum::middleware::from_fn(move |req, next| {
            extract::reject_declared_oversize(runs_limit, req, next)
        }));
    // Uploads stream to the blob store under their own size limit (checked while reading, and
    // up front from Content-Length).
    let upload_limit = usize::try_from(app.config.upload_max_bytes).unwrap_or(usize::MAX);
    let uploads = Router::new()
        .route("/v1/packages/{name}", put(packages::upload))
        .route("/v1/agents/upgrade/{name}", put(agent_upgrade::start))
        .layer(axum::middleware::from_fn(move |req, next| {
            extract::reject_declared_oversize(upload_limit, req, next)
        }));
    let rest = Router::new()
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/v1/version", get(system::version))
        .route("/v1/cluster", get(cluster::get))
        .route("/v1/cluster/members", post(cluster::add_member))
        .route("/v1/cluster/members/{id}", delete(cluster::remove_member))
        .route("/v1/cluster/leader", post(cluster::transfer_leader))
        .route("/v1/jobs", get(jobs::list))
        .route(
            "/v1/jobs/{name}",
            get(jobs::get).put(jobs::save).delete(jobs::delete),
        )
        .route("/v1/jobs/{name}/enable", post(jobs::enable))
        .route("/v1/jobs/{name}/disable", post(jobs::disable))
        .route("/v1/jobs/{name}/once", get(jobs::once))
        .route("/v1/jobs/{name}/run", post(invoke::run_job))
        .route("/v1/exec", post(invoke::exec))
        .route("/v1/invocations", get(invoke::list))
        .route("/v1/invocations/{id}", get(invoke::get))
        .route("/v1/invocations/{id}/cancel", post(invoke::cancel))
        .route("/v1/invocations/{id}/retry", post(invoke::retry))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/nodes/{key}", get(nodes::get).delete(nodes::forget))
        .route("/v1/nodes/{key}/labels", post(nodes::label))
        .route("/v1/runs", get(runs::list))
        .route("/v1/runs/{id}", get(runs::get))
        .route("/v1/runs/{id}/output", get(output::read))
        .route("/v1/agent/output", post(output::upload))
        .route("/v1/packages", get(packages::list))
        .route("/v1/packages/{name}", get(packages::versions))
        .route("/v1/packages/{name}/rollback", post(packages::rollback))
        .route(
            "/v1/packages/{name}/rollout",
            get(rollouts::get_default)
                .put(rollouts::set_default)
                .delete(rollouts::clear_default),
        )
        .route(
            "/v1/packages/{name}/{version}",
            get(packages::get).delete(packages::delete),
        )
        .route(
            "/v1/packages/{name}/{version}/content",
            get(packages::content),
        )
        .route(
            "/v1/agent/packages/{name}/{version}/chunks",
            get(chunks::manifest),
        )
        .route(
            "/v1/agent/packages/{name}/{version}/ticket",
            get(chunks::ticket),
        )
        .route("/v1/audit", get(audit::list))
        .route("/v1/events", get(events::list))
        .route("/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/v1/tokens/{id}", delete(tokens::revoke))
        .route("/v1/secrets", get(secrets::list))
        .route(
            "/v1/secrets/{*name}",
            put(secrets::put).delete(secrets::remove),
        )
        .route("/v1/cluster/secrets-key/rotate", post(secrets::rotate))
        .route("/v1/notify", get(notify::list).post(notify::create))
        .route("/v1/notify/{name}", put(notify::put).delete(notify::remove))
        .route("/v1/notify/{name}/test", post(notify::test))
        .route("/v1/pauses", get(holds::list_pauses).post(holds::pause))
        .route("/v1/pauses/resume", post(holds::resume))
        .route("/v1/windows", get(holds::list_windows))
        .route(
            "/v1/windows/{name}",
            put(holds::put_window).delete(holds::remove_window),
        )
        .route("/v1/nodes/{key}/drain", post(holds::drain))
        .route("/v1/nodes/{key}/undrain", post(holds::undrain))
        .route("/v1/rollouts", get(rollouts::list))
        .route("/v1/rollouts/defaults", get(rollouts::defaults))
        .route("/v1/rollouts/{id}", get(rollouts::get))
        .route("/v1/rollouts/{id}/{action}", post(rollouts::act))
        .route("/v1/agents/upgrade", get(agent_upgrade::status))
        .route("/v1/agents/upgrade/pins", post(agent_upgrade::pin))
        .route("/v1/agent/register", post(agent::register))
        .route("/v1/agent/sync", post(agent::sync))
        .route("/v1/agent/watch", get(watch::open))
        .layer(Extension(BodyLimit {
            bytes: json_limit,
            idle,
        }))
        .layer(axum::middleware::from_fn(move |req, next| {
            extract::reject_declared_oversize(json_limit, req, next)
        }));
    Router::new()
        .merge(runs)
        .merge(uploads)
        .merge(rest)
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        // Layers run bottom-up: count, then guard (who may ask), then the read barrier.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            consistency::linearizable,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            guard::guard,
        ))
        .with_state(app)
}
